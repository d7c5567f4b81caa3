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


def test_an_author_builds_a_myst_article_with_the_theme_it_names(tmp_path, pkg_index):
    """NeuroLibre's MyST article (myst.yml at the root, article-theme, a runtime with no book
    tool): `neurolibre build --myst-themes DIR` draws it with DIR/article-theme; MyST, its
    Jupyter server and the theme are the service's, the notebooks run on the author's kernel."""
    from .support.mystthemes import site_theme, write_tree
    from .support.pkgindex import _wheels, add_wheels, cache_dir
    from .test_books import ARTICLE, ARTICLE_DATA, ARTICLE_REQUIREMENTS, figure_1

    add_wheels(pkg_index, _wheels(cache_dir(), ARTICLE_REQUIREMENTS))
    themes = tmp_path / "themes"
    for name in ("article-theme", "book-theme"):
        write_tree(themes / name, site_theme(name))
    files = {k: v for k, v in ARTICLE.items() if k != "binder/data_requirement.json"}
    files["binder/requirements.txt"] = "\n".join([*ARTICLE_REQUIREMENTS, "matplotlib"]) + "\n"
    # its data in the notebook (the data stage has tests of its own)
    files["content/figure_1.ipynb"] = figure_1(
        f"list(csv.DictReader(io.StringIO({ARTICLE_DATA!r})))"
    )
    repo = tmp_path / "mystical-article"
    make_repo(repo, files)
    env = {**os.environ, "UV_DEFAULT_INDEX": pkg_index.url}
    run = subprocess.run(
        [str(Path(sys.executable).parent / "neurolibre"), "build", str(repo),
         "--data-dir", str(tmp_path / "cache"), "--myst-themes", str(themes)],
        env=env, capture_output=True, text=True, timeout=550,
    )  # fmt: skip

    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    assert "Layout check: 0 error(s)" in run.stdout
    assert f"theme article-theme ({themes / 'article-theme'})" in run.stdout
    index = next(ln for ln in run.stdout.splitlines() if ln.startswith("Built: file://"))
    page = Path(index.removeprefix("Built: file://")).read_text()
    assert '<meta name="theme" content="article-theme">' in page
    assert '<p class="project">Demystifying MyST: a living preprint</p>' in page
    assert '<div class="plotly-graph-div" data-traces="2">Trial 1, Trial 2</div>' in page
    assert "Notebooks: 2 executed, 0 from the cache." in run.stdout
