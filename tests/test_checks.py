"""An author checks a preprint repository's layout and learns exactly what to fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neurolibre_service.checks import check

SAMPLE = Path(__file__).resolve().parents[1] / "example" / "sample-preprint"


@pytest.fixture
def preprint(tmp_path) -> Path:
    repo = tmp_path / "preprint"
    shutil.copytree(SAMPLE, repo)
    return repo


def edit(repo: Path, rel: str, old: str, new: str) -> None:
    p = repo / rel
    text = p.read_text()
    assert old in text, (rel, old)
    p.write_text(text.replace(old, new))


def errors(repo: Path, url: str | None = None) -> list:
    return [f for f in check(repo, url) if f.level == "error"]


def test_the_sample_preprint_passes():
    assert check(SAMPLE) == []


@pytest.mark.parametrize(
    ("change", "level", "file", "message"),
    [
        (lambda r: (r / "paper.bib").unlink(), "error", "paper.bib", "bibliography paper.bib is missing"),
        (lambda r: edit(r, "paper.md", "[@harris2020array]", "[@nobody2021]"), "error", "paper.md",
         "Citation @nobody2021 is not in paper.bib"),
        (lambda r: edit(r, "paper.md", "affiliation: 1", "affiliation: \"1, 3\""), "error", "paper.md",
         "has affiliation 3, which is not in affiliations"),
        (lambda r: edit(r, "paper.md", "date: 21 November 2026\n", ""), "error", "paper.md",
         "The front matter has no date"),
        (lambda r: edit(r, "content/_toc.yml", "file: analysis", "file: missing-chapter"), "error",
         "content/_toc.yml", "'missing-chapter' is in the table of contents"),
        (lambda r: (r / "content/analysis.ipynb").unlink(), "error", "content/",
         "No executable content"),
        (lambda r: edit(r, "binder/requirements.txt", "jupyter-book==1.0.4.post1\n", ""), "error",
         "binder/requirements.txt", "jupyter-book is not in the runtime"),
        (lambda r: edit(r, "binder/data_requirement.json", '"sample-preprint"', '"../escape"'), "error",
         "binder/data_requirement.json", "projectName '../escape' is missing or unsafe"),
        (lambda r: edit(r, "binder/data_requirement.json", '"src"', '"scr"'), "error",
         "binder/data_requirement.json", "has no src"),
        (lambda r: edit(r, "binder/data_requirement.json", "{", "{,"), "error",
         "binder/data_requirement.json", "Not valid JSON"),
        (lambda r: edit(r, "binder/requirements.txt", "numpy==2.4.6", "numpy"), "warning",
         "binder/requirements.txt", "'numpy' is not pinned"),
        (lambda r: edit(r, "content/_config.yml", "sine waves", "cosine waves"), "warning",
         "content/_config.yml", "differs from paper.md's"),
        (lambda r: edit(r, "content/analysis.ipynb", "import numpy as np",
                        "import numpy as np\\\\nopen('data\\\\\\\\sample\\\\\\\\x.csv')"), "warning",
         "content/analysis.ipynb", "Windows-style path"),
    ],
)  # fmt: skip
def test_each_problem_is_reported_with_where_and_how_to_fix(preprint, change, level, file, message):
    change(preprint)
    found = [f for f in check(preprint) if message in f.message]
    assert found, [str(f) for f in check(preprint)]
    assert (found[0].level, found[0].file) == (level, file)
    assert found[0].fix


def test_the_citation_finding_points_at_its_line(preprint):
    edit(preprint, "paper.md", "[@harris2020array]", "[@nobody2021]")
    (finding,) = errors(preprint)
    lines = (preprint / "paper.md").read_text().splitlines()
    assert "@nobody2021" in lines[finding.line - 1]


def test_the_repository_url_must_match_the_submitted_one(preprint):
    found = check(preprint, "https://github.com/someone/else")
    assert any("is not the submitted repository" in f.message for f in found)
    assert check(preprint, "https://github.com/neurolibre/sample-preprint.git") == []


def test_what_repo2data_and_myst_accept_is_not_an_error(preprint):
    # several datasets with the extra keys real repositories use, and a MyST book at the root
    (preprint / "binder/data_requirement.json").write_text(json.dumps({
        "atlas": {"src": "https://example.org/a.zip", "projectName": "atlas", "dst": "./data",
                  "dataLayout": "bids", "recursive": True, "version": "1.0"},
        "scans": {"src": "osf://xyz", "projectName": "scans"},
    }))  # fmt: skip
    for name in ("_toc.yml", "_config.yml"):
        (preprint / "content" / name).unlink()
    (preprint / "myst.yml").write_text("version: 1\nproject:\n  title: A living preprint\n")
    found = check(preprint)
    assert [f for f in found if f.level == "error"] == []
    assert any("myst.yml is at the repository root" in f.message for f in found)


def test_the_cli_exits_1_on_errors_and_speaks_json(preprint):
    run = [sys.executable, "-m", "neurolibre_service.cli", "check"]
    ok = subprocess.run([*run, str(SAMPLE)], capture_output=True, text=True)
    assert ok.returncode == 0 and "0 error(s), 0 warning(s)" in ok.stdout
    (preprint / "paper.md").unlink()
    bad = subprocess.run([*run, str(preprint), "--json"], capture_output=True, text=True)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["errors"] >= 1
    assert report["findings"][0]["file"] == "paper.md"
    url = subprocess.run([*run, "file:///etc"], capture_output=True, text=True)
    assert url.returncode == 2 and "https://" in url.stderr
