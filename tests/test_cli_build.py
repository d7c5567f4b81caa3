"""An author runs `neurolibre build PATH` on their own machine before submitting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support.preprints import notebook, preprint
from .support.repos import make_repo

pytestmark = pytest.mark.timeout(600)


def neurolibre_build(path: Path, data_dir: Path, index_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UV_DEFAULT_INDEX": index_url}
    return subprocess.run(
        [str(Path(sys.executable).parent / "neurolibre"), "build", str(path),
         "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, timeout=550,
    )  # fmt: skip


def test_an_author_builds_the_working_tree_and_opens_the_book(tmp_path, pkg_index):
    repo = tmp_path / "my-preprint"
    make_repo(repo, preprint({"analysis": notebook("print('answer', 6 * 7)")}))
    # uncommitted work is what gets built
    (repo / "content" / "intro.md").write_text("# Introduction\n\nNot committed yet.")
    run = neurolibre_build(repo, tmp_path / "cache", pkg_index.url)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "[environment] " in run.stdout and "[book] " in run.stdout
    assert "Layout check: 0 error(s)" in run.stdout
    built = run.stdout.strip().splitlines()
    index = next(line for line in built if line.startswith("Built: file://"))
    html = Path(index.removeprefix("Built: file://")).parent
    assert "answer 42" in (html / "analysis.html").read_text()
    assert "Not committed yet." in (html / "intro.html").read_text()
    assert "Notebooks: 1 executed, 0 from the cache." in run.stdout

    # a failing notebook: exit 1, the stage and the notebook named
    (repo / "content" / "analysis.ipynb").write_text(notebook("raise ValueError('bad input')"))
    run = neurolibre_build(repo, tmp_path / "cache", pkg_index.url)
    assert run.returncode == 1
    assert "FAILED at the book stage" in run.stderr
    assert "analysis" in run.stderr and "ValueError" in run.stdout
    # the environment was reused, not rebuilt
    assert "Reusing the environment" in run.stdout


def test_layout_errors_fail_before_anything_is_installed(tmp_path, pkg_index):
    files = preprint()
    del files["paper.md"]
    repo = tmp_path / "broken"
    make_repo(repo, files)
    run = neurolibre_build(repo, tmp_path / "cache", pkg_index.url)
    assert run.returncode == 1
    assert "FAILED at the check stage" in run.stderr
    assert "paper.md is missing" in run.stdout
    assert "[environment]" not in run.stdout
