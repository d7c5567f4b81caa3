"""NeuroLibre's two official author templates build as authors wrote them.

`../shared/real-preprints/` holds them unchanged: the Jupyter Book template (Python-3.8,
jupyter-book 0.14, plotly 5.14, a data `src` that runs nilearn) and the MyST article
(myst.yml at the root, article-theme, no book tool in its runtime). The only change made here
is their dataset, which lives on the internet: it is served on 127.0.0.1 instead (for the MyST
article, the notebook that downloads the same file directly gets the same local URL).

Their requirements are resolved for their own Python from the machine's package index once
(tests/support/wheelhouse.py) and served by the local index, as PyPI would serve them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import CI, follow_log, offline_myst_themes
from .support.dataserver import DataServer, tar_gz_bytes
from .support.pkgindex import cache_dir
from .support.repos import git
from .support.wheelhouse import resolved_distributions, serve

pytestmark = pytest.mark.timeout(900)

TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "real-preprints"
TEMPLATE = TEMPLATES / "template"
ARTICLE = TEMPLATES / "mystical-article"
# the MyST article's dataset (and what its first notebook downloads itself): a CSV on GitHub
ARTICLE_DATA_URL = (
    "https://raw.githubusercontent.com/plotly/datasets/master/hobbs-pearson-trials.csv"
)
ARTICLE_PYTHON = "3.10"
# what the Jupyter Book template's runtime resolves to, for its Python (3.8); ipykernel is the
# kernel every environment gets
TEMPLATE_PYTHON = "3.8"


def _templates_present() -> None:
    if TEMPLATE.is_dir():
        return
    if CI:
        pytest.fail(f"{TEMPLATES} is missing: CI clones the repository beside ../shared")
    pytest.skip(f"{TEMPLATES} is not on this machine")


@pytest.fixture(scope="module")
def data_server():
    server = DataServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def template_index(pkg_index):
    """The local index, also serving the template's own pins for Python 3.8."""
    _templates_present()
    reqs = (TEMPLATE / "binder" / "requirements.txt").read_text().split()
    serve(
        pkg_index,
        resolved_distributions(cache_dir(), [*reqs, "ipykernel", "nbformat"], TEMPLATE_PYTHON),
    )
    return pkg_index


def trials_csv() -> bytes:
    """Polar trials with the columns the MyST article's first figure plots."""
    head = ",".join(f"trial_{i}_{c}" for i in range(1, 7) for c in ("r", "theta"))
    rows = [",".join(f"{(i * 7 + k) % 10 + 0.5},{(k * 37 + i * 11) % 360}" for i in range(1, 7))
            for k in range(40)]  # fmt: skip
    return ("\n".join([head, *rows]) + "\n").encode()


def copy_template(src: Path, dest: Path, data_server: DataServer) -> tuple[Path, str]:
    """The template as its author's clone, its dataset swapped for one on 127.0.0.1."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".git"))
    requirement = json.loads((dest / "binder" / "data_requirement.json").read_text())
    name = requirement["projectName"]
    if requirement["src"] == ARTICLE_DATA_URL:
        url = data_server.add(f"/{name}/hobbs-pearson-trials.csv", trials_csv())
        # its notebook reads the same file from the internet itself; books run without network
        # (DESIGN.md), so it reads the dataset where the service mounts it, as the layout
        # check tells the author to (the one change besides the dataset's address)
        nb = dest / "content" / "figure_1.ipynb"
        nb.chmod(0o644)
        local = f"../data/{name}/hobbs-pearson-trials.csv"
        nb.write_text(nb.read_text().replace(ARTICLE_DATA_URL, local))
    else:
        url = data_server.add(f"/{name}.tar.gz",
                              tar_gz_bytes({"README.txt": b"The template's dataset, locally.\n"}))  # fmt: skip
    requirement["src"] = url
    (dest / "binder").chmod(0o755)
    (dest / "binder" / "data_requirement.json").chmod(0o644)
    (dest / "binder" / "data_requirement.json").write_text(json.dumps(requirement, indent=1))
    subprocess.run(["git", "init", "-q", "-b", "main", str(dest)], check=True)
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "The official template, dataset served locally")
    return dest, git(dest, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def article_index(pkg_index):
    """The local index, also serving the MyST article's runtime for Python 3.10."""
    _templates_present()
    reqs = (ARTICLE / "binder" / "requirements.txt").read_text().split()
    serve(
        pkg_index,
        resolved_distributions(cache_dir(), [*reqs, "ipykernel", "nbformat"], ARTICLE_PYTHON),
    )
    return pkg_index


def neurolibre(*args: str, index_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UV_DEFAULT_INDEX": index_url}
    return subprocess.run([str(Path(sys.executable).parent / "neurolibre"), *args], env=env,
                          capture_output=True, text=True, timeout=850)  # fmt: skip


def test_the_jupyter_book_template_checks_clean_and_builds_with_its_figure(
    tmp_path, template_index, data_server
):
    repo, _sha = copy_template(TEMPLATE, tmp_path / "template", data_server)
    # as ../shared holds it: read-only (the build's copy must still be writable for the book)
    subprocess.run(["chmod", "-R", "a-w", str(repo / "content"), str(repo / "binder")], check=True)
    run = neurolibre("build", str(repo), "--data-dir", str(tmp_path / "nl"),
                     index_url=template_index.url)  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    assert "Layout check: 0 error(s)" in run.stdout
    # the Python it asked for (Python-3.8, capital P), and the jupyter-book it pinned
    assert "Python 3.8." in run.stdout
    assert "Jupyter Book 0.14.0" in run.stdout
    index = next(ln for ln in run.stdout.splitlines() if ln.startswith("Built: file://"))
    html = Path(index.removeprefix("Built: file://")).parent
    page = (html / "01-simple_notebook.html").read_text()
    # what a reader sees: the plotly figure itself (its div and data), not only printed text
    assert 'class="plotly-graph-div"' in page
    assert "gdpPercap" in page
    assert "This code cell will be hidden" in page


async def test_the_jupyter_book_template_builds_through_the_service(
    hub, alice, repos_root, template_index, data_server
):
    repo, sha = copy_template(TEMPLATE, repos_root / "official-template", data_server)
    r = await alice.post("preprints", json={"repository": str(repo), "ref": "main", "email": ""})
    assert r.status_code == 201, r.text
    p = r.json()
    lines, status = await follow_log(alice, f"builds/{p['latest_build']['id']}/logs/main",
                                     timeout=850)  # fmt: skip
    build = (await alice.get(f"builds/{p['latest_build']['id']}")).json()
    assert status == "succeeded" and build["status"] == "succeeded", [t for _, t in lines][-40:]
    assert build["commit"] == sha
    assert [d["project_name"] for d in build["datasets"]] == ["agah_template"]
    # the author's preview: the template's plotly figure, drawn by the notebook
    base = hub.url + "/services/neurolibre/"
    async with httpx.AsyncClient(headers=alice.headers, timeout=60, follow_redirects=True) as c:
        page = await c.get(base + f"preprints/{p['id']}/preview/01-simple_notebook.html")
    assert page.status_code == 200
    assert 'class="plotly-graph-div"' in page.text and "gdpPercap" in page.text


def assert_article_page(page: str) -> None:
    """What a reader of the MyST article sees: drawn by the article-theme, its metadata from
    myst.yml's project:, and both figures, made by the notebooks, embedded in the article."""
    assert '<meta name="theme" content="article-theme">' in page
    assert "Demystifying MyST" in page and "Agah Karakuzu" in page
    assert "NeuroPoly Lab, Polytechnique Montreal" in page
    figures = page.count('class="plotly-graph-div"')
    assert figures >= 2, page[:3000]
    assert "Trial 1" in page  # the first figure's traces, from the dataset


def test_the_myst_article_checks_clean_and_builds_with_its_figures(
    tmp_path, article_index, data_server
):
    repo, _sha = copy_template(ARTICLE, tmp_path / "article", data_server)
    run = neurolibre("build", str(repo), "--data-dir", str(tmp_path / "nl"),
                     "--myst-themes", str(offline_myst_themes()), index_url=article_index.url)  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "Layout check: 0 error(s)" in run.stdout
    assert "Python 3.10." in run.stdout
    index = next(ln for ln in run.stdout.splitlines() if ln.startswith("Built: file://"))
    assert_article_page(Path(index.removeprefix("Built: file://")).read_text())


async def test_the_myst_article_builds_through_the_service(
    hub, repos_root, article_index, data_server
):
    repo, sha = copy_template(ARTICLE, repos_root / "official-article", data_server)
    async with hub.token_client("alice") as alice:
        r = await alice.post("preprints", json={"repository": str(repo), "ref": "main"})
        assert r.status_code == 201, r.text
        p = r.json()
        lines, status = await follow_log(alice, f"builds/{p['latest_build']['id']}/logs/main",
                                         timeout=850)  # fmt: skip
        build = (await alice.get(f"builds/{p['latest_build']['id']}")).json()
        assert status == "succeeded", [t for _, t in lines][-40:]
        assert build["commit"] == sha
        base = hub.url + "/services/neurolibre/"
        async with httpx.AsyncClient(headers=alice.headers, timeout=60,
                                     follow_redirects=True) as c:  # fmt: skip
            page = await c.get(base + f"preprints/{p['id']}/preview/index.html")
    assert page.status_code == 200
    assert_article_page(page.text)
