"""An author checks a preprint repository's layout and learns exactly what to fix."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from neurolibre_service.checks import check
from neurolibre_service.checks_runner import CheckRunner
from neurolibre_service.sandbox import Sandbox

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


# -- a hostile repository: the check never leaves it, never hangs, never reads without bound ---


@pytest.fixture
def canary(tmp_path) -> Path:
    """A file outside the repository: its text must never reach a finding (or be read at all).

    It reads as a requirement line and as a BibTeX key, so a check that followed a link to it
    would quote it (unpinned package, unknown citation)."""
    path = tmp_path / "canary.txt"
    path.write_text(f"canary{secrets.token_hex(8)}\n")
    return path


def service_runner(**kw) -> CheckRunner:
    """What the service runs: a child process, confined by bubblewrap when it is installed."""
    return CheckRunner(Sandbox("bwrap") if shutil.which("bwrap") else None, **kw)


def run_check(mode: str, repo: Path) -> list:
    if mode == "cli":  # `neurolibre check PATH`: in-process, on the author's own machine
        return check(repo)
    return asyncio.run(service_runner().run(repo)).findings


def link(repo: Path, rel: str, target: str | Path) -> None:
    path = repo / rel
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def toc(repo: Path, entry: str) -> None:
    edit(repo, "content/_toc.yml", "file: analysis", f"file: analysis\n  - file: {entry!r}")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

ATTACKS = {
    # issue 11: /dev/zero grew the service to 2.9 GB
    "content/zero.md -> /dev/zero": (
        lambda r, c: link(r, "content/zero.md", "/dev/zero"),
        "content/zero.md", "is a symbolic link to '/dev/zero', outside the repository",
    ),
    # issue 11: walking /usr blocked the service for 7 s; / walked /proc
    "content -> /usr": (
        lambda r, c: link(r, "content", "/usr"), "content", "outside the repository"),
    "content -> /": (lambda r, c: link(r, "content", "/"), "content", "outside the repository"),
    "paper.md -> canary": (lambda r, c: link(r, "paper.md", c), "paper.md", "outside the repository"),
    "paper.bib -> canary": (lambda r, c: link(r, "paper.bib", c), "paper.bib", "outside the repository"),
    "binder -> canary's folder": (
        lambda r, c: link(r, "binder", c.parent), "binder", "outside the repository"),
    "requirements.txt -> canary": (
        lambda r, c: link(r, "binder/requirements.txt", c),
        "binder/requirements.txt", "outside the repository",
    ),
    "bibliography: /canary": (
        lambda r, c: edit(r, "paper.md", "bibliography: paper.bib", f"bibliography: {c}"),
        None, "is not a path inside the repository",
    ),
    "data_requirement.json -> /dev/urandom": (
        lambda r, c: link(r, "binder/data_requirement.json", "/dev/urandom"),
        "binder/data_requirement.json", "outside the repository",
    ),
    # issue 11 item 4: a link in content/ published /etc/shadow
    "content/_static/x.txt -> canary": (
        lambda r, c: link(r, "content/_static/x.txt", c),
        "content/_static/x.txt", "outside the repository",
    ),
    "a FIFO in content/": (
        lambda r, c: os.mkfifo(r / "content" / "pipe.md"), "content/pipe.md", "named pipe (FIFO)"),
    "a FIFO as paper.md": (
        lambda r, c: ((r / "paper.md").unlink(), os.mkfifo(r / "paper.md")),
        "paper.md", "named pipe (FIFO)",
    ),
    "a 50 MB paper.md": (
        lambda r, c: os.truncate(r / "paper.md", 50 << 20),
        "paper.md", "paper.md is 50.0 MB; the check reads files up to 5.0 MB",
    ),
    # issue 11: ../../../../etc/passwd "existed" because the host has it
    "ToC ../../../../etc/passwd": (
        lambda r, c: toc(r, "../../../../etc/passwd"),
        "content/_toc.yml", "'../../../../etc/passwd' in the table of contents points outside content/",
    ),
    "ToC /etc/passwd": (
        lambda r, c: toc(r, "/etc/passwd"), "content/_toc.yml", "is an absolute path"),
    "ToC entry that is a link out": (
        lambda r, c: (link(r, "content/evil.md", c), toc(r, "evil")),
        "content/_toc.yml", "'evil' in the table of contents leads outside the repository",
    ),
    "ToC: a billion laughs": (
        lambda r, c: (r / "content/_toc.yml").write_text(BOMB + "root: intro\n"),
        "content/_toc.yml", "expands to more than",
    ),
    "ToC: a recursive alias": (
        lambda r, c: (r / "content/_toc.yml").write_text("root: intro\nparts: &p [*p]\n"),
        "content/_toc.yml", "expands to more than",
    ),
    "data_requirement.json nested 10^5 deep": (
        lambda r, c: (r / "binder/data_requirement.json").write_text("[" * 100_000),
        "binder/data_requirement.json", "nested too deeply",
    ),
}  # fmt: skip


@pytest.mark.parametrize("mode", ["cli", "service"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_a_hostile_repository_gets_a_finding_and_nothing_outside_it_is_read(
    preprint, canary, mode, attack
):
    setup, file, message = ATTACKS[attack]
    setup(preprint, canary)
    started = time.monotonic()
    findings = run_check(mode, preprint)
    assert time.monotonic() - started < 10
    found = [f for f in findings if message in f.message]
    assert found, [str(f) for f in findings]
    assert found[0].level == "error" and found[0].fix
    assert found[0].file == file or file is None
    assert canary.read_text().strip() not in json.dumps([asdict(f) for f in findings])


def test_links_inside_the_repository_are_fine(preprint):
    link(preprint, "content/loop", ".")  # a walk that followed it would never end
    link(preprint, "content/copy.ipynb", "analysis.ipynb")
    link(preprint, "content/more", "../binder")
    assert check(preprint) == []


def test_a_repository_with_too_many_files_is_looked_at_up_to_a_bound(preprint):
    many = preprint / "content" / "many"
    many.mkdir()
    for i in range(300):
        (many / f"{i}.txt").touch()
    found = check(preprint, max_entries=100)
    assert [f.message for f in found] == [
        "The repository has more than 100 files and folders; the check looked at the first 100."
    ]
    assert check(preprint) == []


def test_a_notebook_over_the_cap_is_a_warning_not_a_failure(preprint):
    nb = preprint / "content" / "analysis.ipynb"
    nb.write_text(nb.read_text() + " " * (300 << 10))
    (warning,) = check(preprint, max_file_size=50 << 10)
    assert warning.level == "warning" and warning.file == "content/analysis.ipynb"
    assert "the check reads files up to 250.0 KB, so it was not checked" in warning.message


def test_the_service_checks_in_a_child_and_reports_the_title(preprint):
    result = asyncio.run(service_runner().run(preprint, "https://github.com/someone/else"))
    assert result.title == "A living preprint: sine waves"
    assert [f.message for f in result.findings] == [
        "repository.url https://github.com/neurolibre/sample-preprint is not the submitted "
        "repository https://github.com/someone/else."
    ]


def test_the_checkout_is_not_on_the_childs_import_path(preprint):
    # `python -m` in the checkout would import the repository's yaml.py instead of PyYAML
    (preprint / "yaml.py").write_text("raise SystemExit('the repository ran code in the check')\n")
    assert asyncio.run(service_runner().run(preprint)).findings == []


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_check_past_its_time_limit_is_stopped_with_a_finding_and_leaves_no_process(preprint):
    started = time.monotonic()
    result = asyncio.run(service_runner(time_limit=0.001).run(preprint))
    assert time.monotonic() - started < 5
    (finding,) = result.findings
    assert finding.level == "error"
    assert (
        finding.message
        == "The layout check did not finish within 0.001 seconds, so it was stopped."
    )
    assert "data_requirement.json" in finding.fix
    deadline = time.monotonic() + 5
    while _processes_mentioning(str(preprint)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(str(preprint)) == []


def test_a_child_that_prints_too_much_is_stopped(preprint, caplog):
    result = asyncio.run(service_runner(output_limit=20).run(preprint))
    (finding,) = result.findings
    assert finding.message.startswith("The layout check stopped unexpectedly")
    assert "more than 20 bytes of output" in caplog.text


def test_neurolibre_build_stops_a_hostile_working_tree_at_the_check(preprint, canary, tmp_path):
    def build() -> subprocess.CompletedProcess:
        neurolibre = Path(sys.executable).parent / "neurolibre"
        return subprocess.run([neurolibre, "build", preprint, "--data-dir", tmp_path / "cache"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    link(preprint, "paper.md", canary)
    link(preprint, "content/zero.md", "/dev/zero")
    run = build()
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED at the check stage" in run.stderr
    assert "paper.md is a symbolic link to" in run.stdout
    assert "content/zero.md is a symbolic link to '/dev/zero'" in run.stdout
    assert canary.read_text().strip() not in run.stdout + run.stderr
    # a FIFO is not even copied (a read of it never ends): the author is told which file
    os.mkfifo(preprint / "content" / "pipe.md")
    run = build()
    assert run.returncode == 1
    assert "The working tree could not be copied: content/pipe.md" in run.stderr
    assert "Internal error" not in run.stdout + run.stderr
