"""An author's book is re-executed in its environment, with its data, through the cache.

Real parts: a uv virtual environment with Jupyter Book 1 and a kernel, bubblewrap, the job
queue on SQLite, real notebook execution.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from uv import find_uv_bin

from neurolibre_service.books import BookError, BookResult, LocalBookRunner, find_book, venv_info
from neurolibre_service.environments.local import seal_environment
from neurolibre_service.sandbox import Sandbox

from .conftest import need
from .support.mystthemes import site_theme, write_tree
from .support.pkgindex import PackageIndex, book_wheels, cache_dir, server_wheels
from .test_environments import marker_processes, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def notebook(title: str, *cells: str) -> str:
    md = {"cell_type": "markdown", "id": "title", "metadata": {}, "source": f"# {title}"}
    code = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
             "outputs": [], "source": src} for i, src in enumerate(cells)]  # fmt: skip
    return json.dumps({
        "cells": [md, *code],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }, indent=1)  # fmt: skip


def book(pages: dict[str, str], *, config: str = "title: A living preprint\n") -> dict[str, str]:
    """A repository's files: content/ with intro.md first, then `pages` in the toc."""
    chapters = "".join(f"  - file: {Path(n).stem}\n" for n in pages)
    return {
        "content/_config.yml": config,
        "content/_toc.yml": f"format: jb-book\nroot: intro\nchapters:\n{chapters}",
        "content/intro.md": "# A living preprint\n\nThe first version of the prose.\n",
        **{f"content/{n}": text for n, text in pages.items()},
    }


TWO_NOTEBOOKS = {
    "one.ipynb": notebook("One", "print('the answer is', 6 * 7)"),
    "two.ipynb": notebook("Two", "print('two sums to', sum(range(5)))"),
}


def make_env(tmp_path_factory, name: str, wheels: list[Path], *requirements: str) -> Path:
    """A virtual environment as the local builder makes it, from the local package index."""
    need("bubblewrap", bool(shutil.which("bwrap")))
    index = PackageIndex(wheels)
    prefix = tmp_path_factory.mktemp("envs") / name
    env = dict(os.environ, UV_DEFAULT_INDEX=index.url, UV_CACHE_DIR=str(cache_dir() / "uv"),
               UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")  # fmt: skip
    try:
        uv = find_uv_bin()
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(prefix)], env=env,
                       check=True)  # fmt: skip
        subprocess.run([uv, "pip", "install", "-q", "--python", str(prefix / "bin" / "python"),
                        *requirements], env=env, check=True)  # fmt: skip
    finally:
        index.close()
    # the service's record of the interpreter, as the local builder writes it
    seal_environment(prefix, Path(sys.executable).resolve(), name)
    return prefix


@pytest.fixture(scope="module")
def book_env(tmp_path_factory) -> Path:
    """Jupyter Book 1 and a kernel."""
    wheels = [server_wheels(cache_dir()), book_wheels(cache_dir())]
    return make_env(tmp_path_factory, "book", wheels, "jupyter-book==1.0.4.post1", "ipykernel",
                    "matplotlib")  # fmt: skip


@dataclass
class Outcome:
    status: str
    error: str | None
    result: BookResult | None
    log: str
    out_dir: Path
    checkout: Path


@pytest.fixture(scope="module")
async def books(book_queue, book_env):
    """build(files, ...) -> Outcome: one Jupyter Book 1 build."""

    async def build(files: dict[str, str], **kwargs) -> Outcome:
        return await book_queue(files, env_prefix=book_env, **kwargs)

    return build


@pytest.fixture(scope="module")
async def book_queue(tmp_path_factory):
    """build(files, env_prefix=, ...) -> Outcome: one book build as a job of a real queue."""
    from neurolibre_service.db import Database, Job
    from neurolibre_service.jobs import JobQueue
    from neurolibre_service.logs import LogStore, Redactor

    root = tmp_path_factory.mktemp("books")
    db = Database(f"sqlite:///{root / 'db.sqlite'}")
    await db.upgrade()
    logs = LogStore(root / "logs", Redactor())
    calls: dict[int, dict] = {}

    async def run_book(ctx):
        call = calls[ctx.params["call"]]
        ctx.data["on_finish"] = call["finished"]
        call["result"] = await call["runner"].build(
            ctx, checkout=call["checkout"], environment=str(call["env"]),
            datasets=call["datasets"], cache_in=call["cache_in"], out_dir=call["out_dir"])  # fmt: skip

    queue = JobQueue(db, logs, {"book": run_book}, concurrency=2)
    await queue.start()
    count = iter(range(1, 10**6))

    async def build(files: dict[str, str], *, env_prefix: Path, cache_in: Path | None = None,
                    datasets: list[tuple[str, Path]] = (), time_limit: float = 600,
                    sandbox: Sandbox | None = None, **traits) -> Outcome:  # fmt: skip
        n = next(count)
        checkout = root / f"checkout-{n}"
        for name, text in files.items():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_text(text)
        runner = LocalBookRunner(sandbox=sandbox or Sandbox("bwrap"), time_limit=time_limit,
                                 **traits)  # fmt: skip
        finished = asyncio.get_running_loop().create_future()

        async def on_finish(status):
            finished.set_result(status)

        calls[n] = {"runner": runner, "checkout": checkout, "datasets": list(datasets),
                    "cache_in": cache_in, "out_dir": root / f"build-{n}", "finished": on_finish,
                    "result": None, "env": env_prefix}  # fmt: skip
        job = await queue.submit("book", "alice", {"call": n})
        queue.wake()
        status = await asyncio.wait_for(finished, 300)
        async with db.session() as s:
            row = await s.get(Job, job.id)
        log = logs.path(queue.log_key(job.id)).read_text()
        return Outcome(status.value, row.error, calls[n]["result"], log, root / f"build-{n}",
                       checkout)  # fmt: skip

    yield build
    await queue.stop()
    await db.close()


def page(outcome: Outcome, name: str) -> str:
    return (outcome.result.html_dir / name).read_text()


@pytest.fixture(scope="module")
async def first_build(books) -> Outcome:
    return await books(book(TWO_NOTEBOOKS))


async def test_a_book_of_two_notebooks_builds_and_shows_their_computed_output(first_build):
    out = first_build
    assert out.status == "succeeded", out.log
    assert (out.result.executed, out.result.cached) == (2, 0)
    assert "2 notebooks: 2 executed, 0 from the cache" in out.log
    assert out.result.html_dir == out.out_dir / "html"
    assert (out.result.html_dir / "index.html").is_file()
    assert "the answer is 42" in page(out, "one.html")
    assert "two sums to 10" in page(out, "two.html")
    # the cache the next build of this repository gets, out of the (throwaway) checkout
    assert out.result.cache_dir == out.out_dir / "exec-cache"
    assert out.result.cache_dir.is_dir()
    # the log is plain text: no terminal colours
    assert "\x1b[" not in out.log


# A notebook as authors plot: pyplot and plt.show(), a figure as a cell's last expression
# (object-oriented, not pyplot's), an interactive plot's HTML (plotly writes a div and its
# script), an image displayed with IPython. Each cell is named by a comment the page shows.
FIGURES = notebook(
    "Figures",
    "# cell: pyplot\n"
    "import matplotlib.pyplot as plt\n"
    "plt.plot([0, 1, 2, 3], [0, 1, 4, 9])\n"
    "plt.title('squares')\n"
    "plt.show()",
    "# cell: returned\n"
    "from matplotlib.figure import Figure\n"
    "fig = Figure()\n"
    "fig.subplots().bar(['a', 'b'], [3, 5])\n"
    "fig",
    "# cell: html\n"
    "from IPython.display import HTML\n"
    'HTML(\'<div id="nl-plotly-like" class="plotly-graph-div">an interactive plot</div>\')',
    "# cell: image\n"
    "import io\n"
    "from IPython.display import Image, display\n"
    "buffer = io.BytesIO()\n"
    "plt.figure(figsize=(2, 2)).savefig(buffer, format='png')\n"
    "plt.close('all')\n"
    "display(Image(data=buffer.getvalue()))\n"
    "print('image of', len(buffer.getvalue()), 'bytes')",
    # matplotlib outside a kernel (the kernel's children inherit its inline backend, the
    # book's own programs do not): headless, so Agg, and show() does not wait for a window
    "# cell: script\n"
    "import os, subprocess, sys\n"
    "plot = 'import matplotlib.pyplot as p; p.plot([1, 2]); p.show(); print(p.get_backend())'\n"
    "env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}\n"
    "done = subprocess.run([sys.executable, '-c', plot], env=env, capture_output=True,\n"
    "                      text=True, timeout=60)\n"
    "print('outside the kernel:', done.stdout.strip(), done.returncode)",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Cells(HTMLParser):
    """The images a reader sees under each code cell, by the `# cell: NAME` comment in it."""

    def __init__(self):
        super().__init__()
        self.cell, self.images = "", {}

    def handle_data(self, data: str) -> None:
        if named := re.search(r"# cell: (\w+)", data):
            self.cell = named[1]
            self.images.setdefault(self.cell, [])

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "img" and self.cell:
            self.images[self.cell].append(dict(attrs)["src"])


def figures(html_dir: Path, name: str) -> dict[str, list[Path]]:
    """{cell: [image file]} of a built page; each image is a real PNG in the built site."""
    parser = _Cells()
    parser.feed((html_dir / name).read_text())
    found = {}
    for cell, sources in parser.images.items():
        found[cell] = []
        for src in sources:
            assert "://" not in src and not src.startswith("data:"), src
            # a site-absolute address (MyST's) is from the site's root, others from the page
            base = html_dir if src.startswith("/") else (html_dir / name).parent
            path = (base / src.lstrip("/")).resolve()
            assert path.is_relative_to(html_dir.resolve()), f"{src} is outside the site"
            assert path.is_file() and path.stat().st_size > 0, f"{src}: no such image file"
            assert path.read_bytes().startswith(PNG_MAGIC), f"{src} is not a PNG"
            found[cell].append(path)
    return found


async def test_a_books_figures_and_rich_outputs_reach_its_page(books):
    """The reader sees each figure as an image of the built site: matplotlib's inline backend
    works without a display (no MPLBACKEND=Agg, which turned it off and dropped every plot
    while the build succeeded) and writes its settings in the sandbox's HOME."""
    out = await books(book({"figures.ipynb": FIGURES}))

    assert out.status == "succeeded", out.log
    html = page(out, "figures.html")
    shown = figures(out.result.html_dir, "figures.html")
    assert len(shown["pyplot"]) == 1
    assert len(shown["returned"]) == 1
    assert len(shown["image"]) == 1
    assert shown["html"] == []
    assert '<div id="nl-plotly-like" class="plotly-graph-div">an interactive plot</div>' in html
    assert "image of" in html
    assert "outside the kernel: agg 0" in html
    # what Agg left in the page instead of a figure
    assert "&lt;Figure size" not in html and "<Figure size" not in html


async def test_a_commit_that_only_edits_prose_executes_no_notebook(books, first_build):
    files = book(TWO_NOTEBOOKS)
    files["content/intro.md"] = "# A living preprint\n\nThe second version of the prose.\n"
    out = await books(files, cache_in=first_build.result.cache_dir)

    assert out.status == "succeeded", out.log
    assert (out.result.executed, out.result.cached) == (0, 2)
    assert "2 notebooks: 0 executed, 2 from the cache" in out.log
    assert "The second version of the prose." in page(out, "intro.html")
    assert "the answer is 42" in page(out, "one.html")


async def test_a_commit_that_changes_one_notebook_executes_only_that_one(books, first_build):
    changed = dict(TWO_NOTEBOOKS, **{"two.ipynb": notebook("Two", "print('two sums to', 7 * 3)")})
    # the author's settings would skip execution: re-executing is the service's rule, not theirs
    config = "title: A living preprint\nexecute:\n  execute_notebooks: 'off'\n  timeout: 100\n"
    out = await books(book(changed, config=config), cache_in=first_build.result.cache_dir)

    assert out.status == "succeeded", out.log
    assert "execute_notebooks: off; NeuroLibre runs 'cache' instead" in out.log
    assert (out.result.executed, out.result.cached) == (1, 1)
    assert "2 notebooks: 1 executed, 1 from the cache" in out.log
    executed = [line for line in out.log.splitlines() if "Executed notebook" in line]
    assert len(executed) == 1 and "two.ipynb" in executed[0]
    assert "two sums to 21" in page(out, "two.html")
    assert "the answer is 42" in page(out, "one.html")
    # the outputs of the notebook's old version leave the cache: it does not grow with commits
    assert "Execution cache for the next build: 2 kept, 1 outdated dropped." in out.log


async def test_a_notebook_reads_its_dataset_and_cannot_write_to_it(books, tmp_path):
    dataset = tmp_path / "data-store" / "key-1234"
    dataset.mkdir(parents=True)
    (dataset / "x.txt").write_text("hello from the dataset")
    reader = notebook(
        "Data",
        "print('read:', open('../data/my-project/x.txt').read())",
        "try:\n"
        "    open('../data/my-project/new.txt', 'w').write('overwritten')\n"
        "    print('write: allowed')\n"
        "except OSError as e:\n"
        "    print('write: refused,', e.strerror)",
    )
    out = await books(book({"data.ipynb": reader}), datasets=[("my-project", dataset)])

    assert out.status == "succeeded", out.log
    html = page(out, "data.html")
    assert "read: hello from the dataset" in html
    assert "write: refused, Read-only file system" in html
    assert sorted(p.name for p in dataset.iterdir()) == ["x.txt"]


async def test_a_notebook_that_raises_fails_the_build_naming_it(books):
    bad = notebook("Bad", "import json", "raise ValueError('the data is not where I thought')")
    out = await books(book({"good.ipynb": TWO_NOTEBOOKS["one.ipynb"], "bad.ipynb": bad}))

    assert out.status == "failed"
    assert "content/bad.ipynb failed when re-executed" in out.error
    assert "ValueError: the data is not where I thought" in out.error
    assert "open the book log" in out.error
    lines = out.log.splitlines()
    at = lines.index("--- content/bad.ipynb: what failed ---")
    assert any("raise ValueError('the data is not where I thought')" in x for x in lines[at:])
    # the notebook that did run is kept for the next build
    assert (out.out_dir / "exec-cache").is_dir()


async def test_a_notebook_that_never_ends_is_stopped_by_the_time_limit(books):
    marker = f"nl-book-forever-{time.time_ns()}"
    code = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', 'import time; time.sleep(3600)', {marker!r}])"
    )
    forever = notebook("Forever", code)
    out = await books(book({"forever.ipynb": forever}), time_limit=20)

    assert out.status == "failed"
    assert out.error.startswith(
        "The book build was stopped while executing content/forever.ipynb: it exceeded the "
        "time limit of 20 seconds (c.LocalBookRunner.time_limit)."
    )
    await wait_for(lambda: not marker_processes(marker), timeout=10)


async def test_a_book_for_jupyter_book_1_in_an_environment_with_jupyter_book_2_is_refused(
    tmp_path,
):
    """Checked before anything runs (an environment here is only what it has installed)."""
    from neurolibre_service.books import _JupyterBook1

    env = tmp_path / "env"
    (env / "lib" / "python3.11" / "site-packages" / "jupyter_book-2.0.2.dist-info").mkdir(
        parents=True
    )
    (env / "bin").mkdir()
    (env / "bin" / "jupyter-book").write_text("")
    checkout = tmp_path / "checkout"
    for name, text in book(TWO_NOTEBOOKS).items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(text)
    engine = _JupyterBook1(LocalBookRunner(sandbox=Sandbox("bwrap")))
    with pytest.raises(BookError, match=r"has jupyter-book 2\.0\.2 .* Pin jupyter-book<2"):
        await engine.prepare(None, find_book(checkout), checkout, venv_info(env), None,
                             tmp_path / "out")  # fmt: skip


async def test_a_repository_without_a_book_is_told_what_is_missing(books, tmp_path):
    (tmp_path / "paper.md").write_text("# A paper\n")
    with pytest.raises(BookError, match="No book to build"):
        find_book(tmp_path)

    out = await books({"content/notes.md": "# Notes\n"})
    assert out.status == "failed"
    assert out.error.startswith("No book to build: add content/_config.yml and content/_toc.yml")


async def test_the_book_kind_is_found_where_authors_put_it(tmp_path):
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "_toc.yml").write_text("root: intro\n")
    assert find_book(tmp_path).engine == "jupyter-book"
    assert find_book(tmp_path).root == tmp_path / "content"
    (tmp_path / "content" / "_toc.yml").unlink()
    (tmp_path / "myst.yml").write_text("version: 1\n")
    assert (find_book(tmp_path).engine, find_book(tmp_path).root) == ("myst", tmp_path)
    (tmp_path / "content" / "_config.yml").write_text("title: T\n")
    with pytest.raises(BookError, match=r"content/_toc\.yml is not"):
        find_book(tmp_path)


async def test_a_book_whose_settings_link_out_of_the_repository_is_refused(tmp_path):
    service_file = tmp_path / "service" / "settings.yml"
    service_file.parent.mkdir()
    service_file.write_text("secret: 1\n")
    repo = tmp_path / "repo"
    (repo / "content").mkdir(parents=True)
    (repo / "content" / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (repo / "content" / "_config.yml").symlink_to(service_file)
    with pytest.raises(
        BookError, match=r"content/_config\.yml is a symbolic link that leads out of"
    ):
        find_book(repo)
    (repo / "content" / "_config.yml").unlink()
    (repo / "content" / "_config.yml").symlink_to("../book-settings.yml")  # inside: fine
    assert find_book(repo).engine == "jupyter-book"


# --- Where the book is: as the layout check finds it (booklayout) ---

# (files, the book found: its engine, its folder, whether it is one page)
LAYOUTS = {
    "content/'s Jupyter Book": ({"content/_config.yml": "title: T\n",
                                 "content/_toc.yml": "format: jb-book\nroot: intro\n"},
                                ("jupyter-book", "content", False)),
    "a Jupyter Book at the root": ({"_config.yml": "title: T\n",
                                    "_toc.yml": "format: jb-book\nroot: intro\n"},
                                   ("jupyter-book", ".", False)),
    "MyST at the root (the official article template)": (
        {"myst.yml": "version: 1\n", "_toc.yml": "format: jb-book\nroot: paper\n"},
        ("myst", ".", False)),
    "MyST in content/": ({"content/myst.yml": "version: 1\n", "myst.yml": "version: 1\n"},
                         ("myst", "content", False)),
    # content/_neurolibre.yml's traditional layout: one page, no table of contents
    "a single page": ({"content/_config.yml": "title: T\n", "content/index.ipynb": "{}",
                       "content/_neurolibre.yml": "book_layout: traditional\n"
                                                  "single_page: index.ipynb\n"},
                      ("jupyter-book", "content", True)),
    # build_myst: NeuroLibre built the MyST project, not content/'s Jupyter Book
    "build_myst with a myst.yml": (
        {"content/_config.yml": "title: T\n", "content/_toc.yml": "format: jb-book\nroot: a\n",
         "content/_neurolibre.yml": "build_myst: true\n", "myst.yml": "version: 1\n"},
        ("myst", ".", False)),
    "build_myst without one": (
        {"content/_config.yml": "title: T\n", "content/_toc.yml": "format: jb-book\nroot: a\n",
         "content/_neurolibre.yml": "build_myst: true\n"},
        ("jupyter-book", "content", False)),
}  # fmt: skip


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_the_builder_finds_the_book_where_the_layout_check_finds_it(tmp_path, layout):
    from neurolibre_service.checks import Checker

    files, (engine, folder, one_page) = LAYOUTS[layout]
    write_tree(tmp_path, files)
    built = find_book(tmp_path)
    assert (built.engine, built.root, built.traditional) == (engine, tmp_path / folder, one_page)
    checked = Checker(tmp_path).find_book()
    assert (checked.engine, tmp_path / checked.base) == (built.engine, built.root)


async def test_a_jupyter_book_at_the_repository_root_builds_there(books):
    files = {"_config.yml": "title: A living preprint\n",
             "_toc.yml": "format: jb-book\nroot: intro\nchapters:\n  - file: one\n",
             "intro.md": "# A living preprint\n\nProse at the root.\n",
             "one.ipynb": TWO_NOTEBOOKS["one.ipynb"],
             "binder/requirements.txt": "jupyter-book==1.0.4.post1\n"}  # fmt: skip
    out = await books(files)

    assert out.status == "succeeded", out.log
    assert "Building the book (jupyter-book, in the root)" in out.log
    assert (out.result.executed, out.result.cached) == (1, 0)
    assert "Prose at the root." in page(out, "intro.html")
    assert "the answer is 42" in page(out, "one.html")
    # the service's folders in the repository (the execution cache) are not pages of the book
    built = {p.relative_to(out.result.html_dir).as_posix() for p in out.result.html_dir.rglob("*")}
    assert not any(".neurolibre" in p or p.startswith("binder") for p in built), sorted(built)


async def test_a_single_page_preprint_of_content_neurolibre_yml_builds_as_one_page(books):
    """NeuroLibre's older layout (three published preprints): content/_config.yml and
    _neurolibre.yml, no _toc.yml; the page is the preprint, built as a single HTML page."""
    files = {"content/_config.yml": "title: A living preprint\n",
             "content/_neurolibre.yml": "book_layout: traditional\nsingle_page: paper.ipynb\n",
             "content/paper.ipynb": FIGURES,
             "content/other.ipynb": notebook("Not a page", "raise ValueError('never run')")}  # fmt: skip
    out = await books(files)

    assert out.status == "succeeded", out.log
    assert "the preprint is the single page content/paper.ipynb" in out.log
    assert (out.result.executed, out.result.cached) == (1, 0)
    html = page(out, "index.html")
    assert "image of" in html and "never run" not in html
    assert len(figures(out.result.html_dir, "index.html")["pyplot"]) == 1


async def test_a_single_page_outside_content_is_refused(books, tmp_path):
    outside = tmp_path / "elsewhere.ipynb"
    outside.write_text(notebook("Elsewhere", "print('ran outside content')"))
    files = {"content/_config.yml": "title: T\n",
             "content/_neurolibre.yml": "book_layout: traditional\n"
                                        f"single_page: ../../../{outside.name}\n",
             "content/index.ipynb": TWO_NOTEBOOKS["one.ipynb"]}  # fmt: skip
    out = await books(files)

    assert out.status == "failed"
    assert out.error.startswith("content/_neurolibre.yml: single_page '../../../elsewhere.ipynb' "
                                "is not a page inside content/.")  # fmt: skip
    assert "ran outside content" not in out.log


# --- MyST (myst.yml), built by the service's pinned mystmd ---

# the tests' offline MyST site theme (tests/support/mystthemes.py), named as MyST's are
PLAIN_THEME = site_theme("plain")


def myst_book(pages: dict[str, str], *, where: str = "") -> dict[str, str]:
    """A MyST project: myst.yml, intro.md first, then `pages`, in `where` (e.g. "content/")."""
    toc = "".join(f"    - file: {n}\n" for n in pages)
    return {
        f"{where}myst.yml": "version: 1\nproject:\n  title: A living preprint\n  toc:\n"
        f"    - file: intro.md\n{toc}",
        f"{where}intro.md": "# A living preprint\n\nThe first version of the prose.\n",
        **{f"{where}{n}": text for n, text in pages.items()},
    }


# what NeuroLibre's MyST article template's runtime has: its plotting libraries, no book tool,
# no Jupyter server; with what every local environment gets beside a kernel
# (c.LocalBuilder.kernel_packages): nbformat, without which plotly's mimetype renderer (the
# template's `pio.renderers.default = "plotly_mimetype"`) refuses to draw
ARTICLE_REQUIREMENTS = ["plotly==6.5.2", "nbformat"]


@pytest.fixture(scope="module")
def myst_env(tmp_path_factory) -> Path:
    """An author's environment for MyST books: a kernel and plotting libraries, nothing to
    build a book with (mystmd and the Jupyter server are the service's)."""
    from .support.pkgindex import _wheels

    wheels = [server_wheels(cache_dir()), book_wheels(cache_dir()),
              _wheels(cache_dir(), ARTICLE_REQUIREMENTS)]  # fmt: skip
    prefix = make_env(tmp_path_factory, "myst", wheels, "ipykernel", "matplotlib",
                      *ARTICLE_REQUIREMENTS)  # fmt: skip
    versions = venv_info(prefix).versions
    assert "mystmd" not in versions and "jupyter_server" not in versions, versions
    return prefix


@pytest.fixture(scope="module")
def server_env():
    """The service's Jupyter server environment (jupyterhub matching ours, JupyterLab), built
    by ServiceEnvironments from the local index, once per machine (its folder is keyed by its
    packages and Python)."""
    import jupyterhub

    from neurolibre_service.environments.service_envs import ServiceEnvironments

    need("bubblewrap", bool(shutil.which("bwrap")))
    index = PackageIndex([server_wheels(cache_dir())])
    try:
        store = ServiceEnvironments(cache_dir() / "service-environments",
                                    Sandbox("bwrap", extra_env={"UV_DEFAULT_INDEX": index.url}))  # fmt: skip
        packages = [f"jupyterhub=={jupyterhub.__version__}", "jupyterlab"]
        env = asyncio.run(store.ensure("server", packages))
    finally:
        index.close()
    return env


@pytest.fixture(scope="module")
def myst_themes(tmp_path_factory) -> Path:
    """The operator's folder of themes: article-theme and book-theme (the test template)."""
    root = tmp_path_factory.mktemp("myst-themes")
    for name in ("article-theme", "book-theme"):
        write_tree(root / name, site_theme(name))
    return root


@pytest.fixture(scope="module")
async def myst_books(book_queue, myst_env, server_env, myst_themes):
    async def build(files: dict[str, str], **traits) -> Outcome:
        traits.setdefault("myst_themes_dir", str(myst_themes))
        traits.setdefault("myst_theme_download", False)
        traits.setdefault("server_environment", server_env)
        return await book_queue(files, env_prefix=myst_env, **traits)

    return build


@pytest.fixture(scope="module")
async def first_myst_build(myst_books) -> Outcome:
    return await myst_books(myst_book(TWO_NOTEBOOKS))


def theme_of(outcome: Outcome, name: str) -> str:
    found = re.search(r'<meta name="theme" content="([^"]+)">', page(outcome, name))
    return found[1] if found else ""


async def test_a_myst_book_at_the_root_executes_its_notebooks(first_myst_build, server_env):
    out = first_myst_build
    assert out.status == "succeeded", out.log
    assert "Building the book (myst, in the root)" in out.log
    assert "MyST 1.11.0 (mystmd, the service's), theme book-theme" in out.log
    assert (out.result.engine, out.result.executed, out.result.cached) == ("myst", 2, 0)
    assert "2 notebooks: 2 executed, 0 from the cache" in out.log
    assert out.result.html_dir == out.out_dir / "html"
    assert "The first version of the prose." in page(out, "index.html")
    assert "the answer is 42" in page(out, "one.html")
    assert "two sums to 10" in page(out, "two.html")
    # no theme named: MyST's default, the book-theme
    assert theme_of(out, "index.html") == "book-theme"
    assert out.result.cache_dir == out.out_dir / "exec-cache"
    assert len(list(out.result.cache_dir.glob("*.ipynb"))) == 2
    assert "\x1b[" not in out.log
    # the Jupyter server's token stays out of the log
    assert "Jupyter server started" in out.log
    assert re.search(r"token=(?!\[secret\])", out.log) is None


async def test_a_myst_notebook_runs_on_the_authors_kernel_under_the_services_server(
    myst_books, myst_env, server_env
):
    """The book's environment has a kernel and no Jupyter server: the server MyST starts is
    the service's, the kernel (and what a notebook runs) the author's."""
    where = notebook("Where", "import os, shutil, sys\n"
                              "print('kernel:', sys.prefix)\n"
                              "print('python:', shutil.which('python'))\n"
                              "server = open(f'/proc/{os.getppid()}/cmdline').read().split(chr(0))\n"
                              "print('server:', ' '.join(server[:3]))")  # fmt: skip
    out = await myst_books(myst_book({"where.ipynb": where}))

    assert out.status == "succeeded", out.log
    html = page(out, "where.html")
    assert f"kernel: {myst_env}" in html
    assert f"python: {myst_env}/bin/python" in html
    assert f"server: {server_env.prefix}/bin/python -m jupyter_server" in html
    assert f"the service's server environment {server_env.prefix}" in out.log


async def test_a_myst_books_figures_and_rich_outputs_reach_its_page(myst_books):
    """MyST keeps each image output in its site's files (its content server serves them to
    the theme, which copies them into the site): the kernel it starts must make them."""
    out = await myst_books(myst_book({"figures.ipynb": FIGURES}))

    assert out.status == "succeeded", out.log
    html = page(out, "figures.html")
    shown = figures(out.result.html_dir, "figures.html")
    assert len(shown["pyplot"]) == 1
    assert len(shown["returned"]) == 1
    assert len(shown["image"]) == 1
    assert shown["html"] == []
    assert 'id="nl-plotly-like"' in html
    assert "image of" in html
    assert "outside the kernel: agg 0" in html


async def test_a_myst_commit_that_only_edits_prose_executes_no_notebook(
    myst_books, first_myst_build
):
    files = myst_book(TWO_NOTEBOOKS)
    files["intro.md"] = "# A living preprint\n\nThe second version of the prose.\n"
    out = await myst_books(files, cache_in=first_myst_build.result.cache_dir)

    assert out.status == "succeeded", out.log
    assert (out.result.executed, out.result.cached) == (0, 2)
    assert "2 notebooks: 0 executed, 2 from the cache" in out.log
    assert "The second version of the prose." in page(out, "index.html")
    assert "the answer is 42" in page(out, "one.html")
    assert "Execution cache for the next build: 2 kept, 0 outdated dropped." in out.log


async def test_a_myst_commit_that_changes_one_notebook_executes_only_that_one(
    myst_books, first_myst_build
):
    changed = dict(TWO_NOTEBOOKS, **{"two.ipynb": notebook("Two", "print('two sums to', 7 * 3)")})
    out = await myst_books(myst_book(changed), cache_in=first_myst_build.result.cache_dir)

    assert out.status == "succeeded", out.log
    assert (out.result.executed, out.result.cached) == (1, 1)
    executing = [line for line in out.log.splitlines() if "Executing notebook" in line]
    assert len(executing) == 1 and "two.ipynb" in executing[0]
    assert "two sums to 21" in page(out, "two.html")
    assert "the answer is 42" in page(out, "one.html")
    # the outputs of the notebook's old version leave the cache
    assert "Execution cache for the next build: 2 kept, 1 outdated dropped." in out.log
    assert len(list(out.result.cache_dir.glob("*.ipynb"))) == 2


async def test_a_myst_book_in_content_reads_its_dataset_drawn_with_the_theme_it_names(
    myst_books, myst_themes, tmp_path
):
    dataset = tmp_path / "data-store" / "key-1234"
    dataset.mkdir(parents=True)
    (dataset / "x.txt").write_text("hello from the dataset")
    reader = notebook(
        "Data",
        "print('read:', open('../data/my-project/x.txt').read())",
        "try:\n"
        "    open('../data/my-project/new.txt', 'w').write('overwritten')\n"
        "    print('write: allowed')\n"
        "except OSError as e:\n"
        "    print('write: refused,', e.strerror)",
    )
    files = myst_book({"data.ipynb": reader}, where="content/")
    files["content/myst.yml"] += "site:\n  template: article-theme\n  title: Kept\n"
    theme_files = sorted(p.name for p in (myst_themes / "article-theme").iterdir())
    out = await myst_books(files, datasets=[("my-project", dataset)])

    assert out.status == "succeeded", out.log
    assert "Building the book (myst, in content)" in out.log
    assert "theme article-theme" in out.log
    html = page(out, "data.html")
    assert theme_of(out, "data.html") == "article-theme"
    assert "read: hello from the dataset" in html
    assert "write: refused, Read-only file system" in html
    assert sorted(p.name for p in dataset.iterdir()) == ["x.txt"]
    # the checkout's myst.yml uses the operator's copy and keeps the author's settings
    import yaml

    config = yaml.safe_load((out.checkout / "content" / "myst.yml").read_text())
    assert config["site"] == {"template": str(myst_themes / "article-theme"), "title": "Kept"}
    assert config["project"]["title"] == "A living preprint"
    # the theme was lent read-only
    assert sorted(p.name for p in (myst_themes / "article-theme").iterdir()) == theme_files


async def test_a_myst_notebook_that_raises_fails_the_build_naming_it(myst_books):
    bad = notebook("Bad", "import json", "raise ValueError('the data is not where I thought')")
    files = myst_book({"good.ipynb": TWO_NOTEBOOKS["one.ipynb"], "bad.ipynb": bad},
                      where="content/")  # fmt: skip
    out = await myst_books(files)

    assert out.status == "failed"
    assert out.error.startswith(
        "content/bad.ipynb failed when re-executed (ValueError: the data is not where I "
        "thought): open the book log;"
    )
    lines = out.log.splitlines()
    at = lines.index("--- content/bad.ipynb: what failed ---")
    assert any("raise ValueError('the data is not where I thought')" in x for x in lines[at:])
    # the notebook that did run is kept for the next build, the failed one is not
    assert len(list((out.out_dir / "exec-cache").glob("*.ipynb"))) == 1


async def test_a_myst_book_whose_environment_has_no_kernel_is_told_what_to_add(tmp_path):
    from neurolibre_service.books import _Myst

    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    checkout = write_tree(tmp_path / "checkout", myst_book(TWO_NOTEBOOKS))
    engine = _Myst(LocalBookRunner(sandbox=Sandbox("bwrap")))
    with pytest.raises(BookError, match=r"has no ipykernel: add ipykernel to binder/requirem"):
        await engine.prepare(None, find_book(checkout), checkout, venv_info(env), None,
                             tmp_path / "out")  # fmt: skip


async def test_the_myst_book_is_found_at_the_root_or_in_content(tmp_path):
    (tmp_path / "myst.yml").write_text("version: 1\n")
    assert (find_book(tmp_path).engine, find_book(tmp_path).root) == ("myst", tmp_path)
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "myst.yml").write_text("version: 1\n")
    assert find_book(tmp_path).root == tmp_path / "content"


# --- NeuroLibre's MyST article, as its official template has it ---

ARTICLE_DATA = "trial,r,theta\n1,1.0,0\n1,2.0,90\n2,1.5,45\n2,2.5,180\n"


def figure_1(rows: str) -> str:
    """The template's first figure: a plotly polar plot of two trials, labelled for paper.md
    (`rows`: how the notebook reads its data, as csv.DictReader rows)."""
    return notebook(
        "Figure 1",
        "#| label: fig1cell\n"
        "import csv, io\n"
        "import plotly.graph_objects as go\n"
        "import plotly.io as pio\n"
        "pio.renderers.default = 'plotly_mimetype'\n"
        f"rows = {rows}\n"
        "fig = go.Figure()\n"
        "for trial in ('1', '2'):\n"
        "    mine = [r for r in rows if r['trial'] == trial]\n"
        "    fig.add_trace(go.Scatterpolar(r=[float(r['r']) for r in mine],\n"
        "                                  theta=[float(r['theta']) for r in mine],\n"
        "                                  name=f'Trial {trial}'))\n"
        "fig",
    )


ARTICLE = {
    "myst.yml": """\
version: 1
project:
  title: 'Demystifying MyST: a living preprint'
  subtitle: A template for reproducible preprints
  authors:
    - name: Ada Lovelace
      orcid: 0000-0001-7283-271X
      affiliations: polymtl
      corresponding: true
      email: ada@example.org
    - name: Robo Neuro
      affiliations: polymtl
  affiliations:
    - id: polymtl
      institution: NeuroPoly Lab, Polytechnique Montreal
      city: Montreal
  keywords:
    - reproducible publishing
  license:
    content: CC-BY-4.0
  bibliography:
    - paper.bib
site:
  template: article-theme # Or book-theme
  options:
    twitter: neurolibre
""",
    "_toc.yml": "format: jb-book\nroot: paper.md\nchapters:\n"
                "  - file: content/figure_1.ipynb\n  - file: content/figure_2.md\n",
    "paper.md": """\
---
numbering:
  heading_2: false
---

## Articles from code

Figures come from notebooks [@Boudreau2023]; this is the first version of the prose.

:::{figure} #fig1cell
:label: fig1

A polar plot made by content/figure_1.ipynb.
:::

:::{figure} #fig2cell
:label: fig2

A matplotlib figure made by content/figure_2.md.
:::
""",
    "paper.bib": "@article{Boudreau2023,\n  title = {Repeat it without me},\n"
                 "  author = {Boudreau, Mathieu},\n  year = {2023},\n}\n",
    "binder/requirements.txt": "plotly\nmatplotlib\n",
    "binder/runtime.txt": "python-3.11\n",
    "binder/data_requirement.json": '{"src": "https://example.org/trials.csv", "dst": "../data",'
                                    ' "projectName": "neurolibre-demo-dataset"}\n',
    "content/figure_1.ipynb": figure_1(
        "list(csv.DictReader(open('../data/neurolibre-demo-dataset/trials.csv')))"
    ),
    "content/figure_2.md": """\
---
kernelspec:
  name: python3
  display_name: 'Python 3'
---

# Figure 2

```{code-cell} python
:tags: remove-input
import matplotlib.pyplot as plt
```

```{code-cell} python
#| label: fig2cell
plt.plot([0, 1, 2, 3], [0, 1, 4, 9])
plt.title('squares')
plt.show()
```
""",
}  # fmt: skip


@pytest.fixture(scope="module")
def article_data(tmp_path_factory) -> Path:
    dataset = tmp_path_factory.mktemp("data-store") / "demo-key"
    dataset.mkdir()
    (dataset / "trials.csv").write_text(ARTICLE_DATA)
    return dataset


@pytest.fixture(scope="module")
async def first_article_build(myst_books, article_data) -> Outcome:
    return await myst_books(ARTICLE, datasets=[("neurolibre-demo-dataset", article_data)])


def images(html_dir: Path, name: str) -> list[Path]:
    """The images a reader sees on a page: files of the built site, non-empty PNGs."""
    found = []
    for src in re.findall(r'<img src="([^"]+)"', (html_dir / name).read_text()):
        path = (html_dir / src.lstrip("/")).resolve()
        assert path.is_relative_to(html_dir.resolve()) and path.is_file(), src
        assert path.stat().st_size > 0 and path.read_bytes().startswith(PNG_MAGIC), src
        found.append(path)
    return found


async def test_the_official_myst_article_builds_with_its_figures_and_metadata(
    first_article_build,
):
    """NeuroLibre's MyST template as authors have it: myst.yml at the root with the metadata
    under project:, article-theme, a _toc.yml with paper.md first, notebooks in content/ that
    plot with plotly and matplotlib, a runtime with no book tool."""
    out = first_article_build
    assert out.status == "succeeded", out.log
    assert "Building the book (myst, in the root)" in out.log
    assert (out.result.executed, out.result.cached) == (2, 0)
    html = page(out, "index.html")
    # drawn with the theme the author named, with the metadata of myst.yml's project:
    assert theme_of(out, "index.html") == "article-theme"
    assert '<p class="project">Demystifying MyST: a living preprint</p>' in html
    assert '<p class="authors">Ada Lovelace, Robo Neuro</p>' in html
    assert '<p class="affiliations">NeuroPoly Lab, Polytechnique Montreal</p>' in html
    assert '<h1 class="title">Articles from code</h1>' in html  # paper.md's first heading
    assert "this is the first version of the prose." in html
    # the figures, embedded from the notebooks by their labels: plotly's div with both
    # traces, and matplotlib's image as a file of the site
    assert '<div class="plotly-graph-div" data-traces="2">Trial 1, Trial 2</div>' in html
    assert len(images(out.result.html_dir, "index.html")) == 1


async def test_a_prose_only_commit_to_the_article_executes_no_notebook(
    myst_books, first_article_build, article_data
):
    files = dict(ARTICLE)
    files["paper.md"] = files["paper.md"].replace("the first version", "the second version")
    out = await myst_books(files, datasets=[("neurolibre-demo-dataset", article_data)],
                           cache_in=first_article_build.result.cache_dir)  # fmt: skip

    assert out.status == "succeeded", out.log
    assert (out.result.executed, out.result.cached) == (0, 2)
    html = page(out, "index.html")
    assert "this is the second version of the prose." in html
    assert "Trial 1, Trial 2" in html
    assert len(images(out.result.html_dir, "index.html")) == 1


# --- Themes: the author names one, the operator provides it ---


class _ThemeServer:
    """A web server on 127.0.0.1 serving theme archives as GitHub does; counts requests."""

    def __init__(self, archives: dict[str, bytes]):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                body = archives.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def theme_zip(name: str, version: str, files: dict[str, str]) -> bytes:
    """A theme's archive as GitHub makes it: one folder <repository>-<commit> at the top."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for rel, text in files.items():
            zf.writestr(f"{name}-{version}/{rel}", text)
    return buffer.getvalue()


async def test_a_theme_the_service_lacks_is_downloaded_once_at_its_pinned_version(
    myst_books, tmp_path
):
    version = "0123456789abcdef0123456789abcdef01234567"
    files = {**site_theme("article-theme"),
             # a theme's server packages: installed confined, with npm, no package scripts
             "package.json": '{"name": "article-theme", "version": "1.0.0", "private": true}\n'}  # fmt: skip
    server = _ThemeServer({f"/article-theme/{version}.zip": theme_zip("article-theme", version,
                                                                      files)})  # fmt: skip
    themes = tmp_path / "data" / "myst-themes"
    try:
        traits = {"myst_themes_dir": str(themes), "myst_theme_download": True,
                  "myst_theme_versions": {"article-theme": version},
                  "myst_theme_url": server.url + "/{name}/{version}.zip"}  # fmt: skip
        article = myst_book({"one.ipynb": TWO_NOTEBOOKS["one.ipynb"]})
        article["myst.yml"] += "site:\n  template: article-theme\n"
        first = await myst_books(article, **traits)
        second = await myst_books(article, **traits)
    finally:
        server.close()

    assert first.status == "succeeded", first.log
    assert (
        f"Downloading the MyST theme article-theme (once, for every later build): {server.url}"
        in first.log
    )
    assert theme_of(first, "index.html") == "article-theme"
    assert (themes / "article-theme" / "template.yml").is_file()
    assert (themes / "article-theme" / "package-lock.json").is_file()  # npm ran
    assert second.status == "succeeded", second.log
    assert "Downloading" not in second.log
    assert theme_of(second, "one.html") == "article-theme"
    assert server.requests == [f"/article-theme/{version}.zip"]


async def test_offline_a_missing_theme_names_itself_and_what_the_operator_does(
    myst_books, tmp_path
):
    import socket

    with socket.socket() as s:  # a port nothing listens on: the download cannot happen
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    themes = tmp_path / "myst-themes"
    article = myst_book({"one.ipynb": TWO_NOTEBOOKS["one.ipynb"]})
    article["myst.yml"] += "site:\n  template: article-theme\n"
    out = await myst_books(article, myst_themes_dir=str(themes), myst_theme_download=True,
                           myst_theme_url=f"http://127.0.0.1:{port}/{{name}}/{{version}}.zip")  # fmt: skip

    assert out.status == "failed"
    assert out.error.startswith(
        "The MyST theme article-theme is not on this server, and downloading it failed ("
    )
    assert out.error.endswith(
        f"The operator must provide it: on a machine with internet access, download "
        f"http://127.0.0.1:{port}/article-theme/75058e55fdb4c3287fb6258fc0aabf47e3620bbc.zip "
        "(the version this service pins), unzip it, run `npm ci --ignore-scripts` in the "
        f"folder it holds, and copy that folder to {themes}/article-theme "
        "(c.LocalBookRunner.myst_themes_dir; `neurolibre build --myst-themes DIR` takes such "
        "a folder of themes)."
    )
    assert not themes.joinpath("article-theme").exists()


async def test_the_operators_single_myst_theme_is_its_book_theme(myst_books, tmp_path):
    """c.BookRunner.myst_theme (one folder, as before themes had names): MyST's default theme,
    for books that name none or book-theme; an article asks for another."""
    plain = write_tree(tmp_path / "plain", PLAIN_THEME)
    out = await myst_books(myst_book(TWO_NOTEBOOKS), myst_themes_dir="", myst_theme=str(plain))
    assert out.status == "succeeded", out.log
    assert theme_of(out, "one.html") == "plain"

    article = myst_book(TWO_NOTEBOOKS)
    article["myst.yml"] += "site:\n  template: article-theme\n"
    out = await myst_books(article, myst_themes_dir="", myst_theme=str(plain))
    assert out.status == "failed"
    assert out.error.startswith("The MyST theme article-theme is not on this server, and this "
                                "runner has no myst_themes_dir. The operator must provide it")  # fmt: skip


async def test_a_theme_the_service_does_not_know_is_refused_with_the_ones_it_has(myst_books):
    article = myst_book({"one.ipynb": TWO_NOTEBOOKS["one.ipynb"]})
    article["myst.yml"] += "site:\n  template: fancy-theme\n"
    out = await myst_books(article)

    assert out.status == "failed"
    assert out.error == (
        "myst.yml asks for the site theme 'fancy-theme', which this service does not have. "
        "Use one of: article-theme, book-theme (site: template: article-theme)."
    )


@pytest.mark.parametrize(
    "template",
    [
        "../book-theme",  # out of the operator's folder of themes
        "./my-theme",  # the repository's own theme (it would draw the page as it likes)
        "my-theme/template.yml",
        "{abs}/my-theme",  # a path of this machine
        "http://127.0.0.1:{port}/theme.zip",  # an address MyST would download from
        "https://github.com/someone/theme.git",
    ],
)  # fmt: skip
async def test_a_theme_from_a_path_or_an_address_is_never_used_or_fetched(
    myst_books, template, tmp_path
):
    server = _ThemeServer({"/theme.zip": theme_zip("theme", "x", site_theme("evil"))})
    write_tree(tmp_path / "my-theme", site_theme("this machine's"))
    try:
        article = myst_book({"one.ipynb": TWO_NOTEBOOKS["one.ipynb"]})
        article.update({f"my-theme/{k}": v for k, v in site_theme("the repository's").items()})
        theme = template.format(abs=tmp_path, port=server.url.rsplit(":", 1)[1])
        article["myst.yml"] += f"site:\n  template: '{theme}'\n"
        out = await myst_books(article)
    finally:
        server.close()

    assert out.status == "failed"
    assert out.error.startswith(f"myst.yml sets site.template: {theme!r}; ")
    assert out.error.endswith(
        "this service draws preprints with the MyST themes it provides, named, never with a "
        "theme from a path or an address. Write `template: article-theme` (or book-theme) "
        "under site:."
    )
    assert server.requests == []
    assert not (out.out_dir / "html").exists()
