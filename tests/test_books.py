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
from .support.pkgindex import PackageIndex, book_wheels, cache_dir, myst_wheels, server_wheels
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
                    sandbox: Sandbox | None = None, myst_theme: str = "") -> Outcome:  # fmt: skip
        n = next(count)
        checkout = root / f"checkout-{n}"
        for name, text in files.items():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_text(text)
        runner = LocalBookRunner(sandbox=sandbox or Sandbox("bwrap"), time_limit=time_limit,
                                 myst_theme=myst_theme)  # fmt: skip
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

    out = await books({"myst.yml": "version: 1\n", "intro.md": "# Intro\n"})
    assert out.status == "failed"
    assert out.error == (
        "This repository's book is a MyST project (myst.yml), but the environment has nothing "
        "to build it with (its jupyter-book 1.0.4.post1 builds only Jupyter Book 1 books): add "
        "mystmd (or jupyter-book>=2) to binder/requirements.txt."
    )


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


# --- MyST (myst.yml), built by mystmd ---

# A site template of MyST's that renders itself (template.yml `build.render`: MyST then serves
# the built pages as JSON at $CONTENT_CDN and runs the command, which writes $BUILD_DIRECTORY).
# The real book-theme needs the internet once (git clone, npm ci); this one needs nothing.
PLAIN_THEME = {
    "template.yml": "myst: v1\nkind: site\ntitle: Plain pages\nbuild:\n  render: python render.py\n",
    "render.py": """\
import html, json, os, urllib.request
from pathlib import Path

cdn, out = os.environ["CONTENT_CDN"], Path(os.environ["BUILD_DIRECTORY"])


def get(path):
    with urllib.request.urlopen(f"{cdn}/{path}") as response:
        return json.load(response)


def image(path):
    # an output's image, as MyST's content server serves it, copied into the site's build/
    with urllib.request.urlopen(f"{cdn}{path}") as response:
        (out / "build").mkdir(exist_ok=True)
        (out / "build" / Path(path).name).write_bytes(response.read())
    return f'<img src="build/{html.escape(Path(path).name)}">'


def parts(node):
    if isinstance(node, dict):
        if isinstance(node.get("value"), str):
            yield f"<p>{html.escape(node['value'])}</p>"
        output = node.get("jupyter_data") or {}
        if isinstance(output.get("text"), str):
            yield f"<p>{html.escape(output['text'])}</p>"
        data = output.get("data") or {}
        if "image/png" in data:
            yield image(data["image/png"]["path"])
        elif "text/html" in data:  # as themes show HTML outputs: as HTML
            yield data["text/html"]["content"]
        for value in node.values():
            yield from parts(value)
    elif isinstance(node, list):
        for value in node:
            yield from parts(value)


for project in get("config.json")["projects"]:
    for slug in [project["index"], *(p["slug"] for p in project["pages"] if "slug" in p)]:
        page = get(f"content/{slug}.json")
        body = "\\n".join(parts(page["mdast"]))
        name = "index.html" if slug == project["index"] else f"{slug}.html"
        (out / name).write_text(f"<!doctype html><title>{slug}</title>\\n{body}\\n")
""",
}


def myst_book(pages: dict[str, str], *, where: str = "") -> dict[str, str]:
    """A MyST project: myst.yml, intro.md first, then `pages`, in `where` (e.g. "content/")."""
    toc = "".join(f"    - file: {n}\n" for n in pages)
    return {
        f"{where}myst.yml": "version: 1\nproject:\n  title: A living preprint\n  toc:\n"
        f"    - file: intro.md\n{toc}",
        f"{where}intro.md": "# A living preprint\n\nThe first version of the prose.\n",
        **{f"{where}{n}": text for n, text in pages.items()},
    }


@pytest.fixture(scope="module")
def myst_env(tmp_path_factory) -> Path:
    """mystmd (on the machine's node), a kernel, a Jupyter server and matplotlib."""
    need("node", bool(shutil.which("node")))
    wheels = [server_wheels(cache_dir()), myst_wheels(cache_dir()), book_wheels(cache_dir())]
    return make_env(tmp_path_factory, "myst", wheels, "mystmd", "ipykernel", "jupyter-server",
                    "matplotlib")  # fmt: skip


@pytest.fixture(scope="module")
def plain_theme(tmp_path_factory) -> Path:
    theme = tmp_path_factory.mktemp("themes") / "plain"
    theme.mkdir()
    for name, text in PLAIN_THEME.items():
        (theme / name).write_text(text)
    return theme


@pytest.fixture(scope="module")
async def myst_books(book_queue, myst_env, plain_theme):
    async def build(files: dict[str, str], **kwargs) -> Outcome:
        kwargs.setdefault("myst_theme", str(plain_theme))
        return await book_queue(files, env_prefix=myst_env, **kwargs)

    return build


@pytest.fixture(scope="module")
async def first_myst_build(myst_books) -> Outcome:
    return await myst_books(myst_book(TWO_NOTEBOOKS))


def _online(host: str) -> bool:
    import socket

    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


async def test_a_myst_book_without_a_local_theme_offline_tells_the_operator_what_to_do(
    myst_books,
):
    if _online("api.mystmd.org"):
        pytest.skip("this machine reaches api.mystmd.org: MyST would download its theme")
    out = await myst_books(myst_book(TWO_NOTEBOOKS), myst_theme="")

    assert out.status == "failed"
    assert "Querying template metadata from https://api.mystmd.org" in out.log
    assert out.error == (
        "The book build failed: MyST downloads its site theme (the book-theme) from the "
        "internet, and this server cannot reach it. The operator must provide the theme "
        "locally: on a machine with internet access, clone "
        "https://github.com/myst-templates/book-theme, run `npm ci --ignore-scripts` in it, "
        "copy that folder to this server and set c.LocalBookRunner.myst_theme to its path. "
        "(A server with internet access needs no setting.)"
    )


async def test_a_myst_book_at_the_root_executes_its_notebooks(first_myst_build):
    out = first_myst_build
    assert out.status == "succeeded", out.log
    assert "Building the book (myst, in the root)" in out.log
    assert "MyST 1.11.0 (mystmd)" in out.log
    assert (out.result.engine, out.result.executed, out.result.cached) == ("myst", 2, 0)
    assert "2 notebooks: 2 executed, 0 from the cache" in out.log
    assert out.result.html_dir == out.out_dir / "html"
    assert "The first version of the prose." in page(out, "index.html")
    assert "the answer is 42" in page(out, "one.html")
    assert "two sums to 10" in page(out, "two.html")
    assert out.result.cache_dir == out.out_dir / "exec-cache"
    assert len(list(out.result.cache_dir.glob("*.ipynb"))) == 2
    assert "\x1b[" not in out.log


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


async def test_a_myst_book_in_content_reads_its_dataset_with_the_operators_theme(
    myst_books, plain_theme, tmp_path
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
    out = await myst_books(files, datasets=[("my-project", dataset)])

    assert out.status == "succeeded", out.log
    assert "Building the book (myst, in content)" in out.log
    assert "content/myst.yml sets site.template: article-theme" in out.log
    html = page(out, "data.html")
    assert "read: hello from the dataset" in html
    assert "write: refused, Read-only file system" in html
    assert sorted(p.name for p in dataset.iterdir()) == ["x.txt"]
    # the checkout's myst.yml uses the operator's theme and keeps the author's settings
    import yaml

    config = yaml.safe_load((out.checkout / "content" / "myst.yml").read_text())
    assert config["site"] == {"template": str(plain_theme), "title": "Kept"}
    assert config["project"]["title"] == "A living preprint"


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


async def test_a_myst_book_in_an_environment_without_mystmd_is_told_what_to_add(tmp_path):
    from neurolibre_service.books import _Myst

    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    checkout = tmp_path / "checkout"
    for name, text in myst_book(TWO_NOTEBOOKS).items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(text)
    engine = _Myst(LocalBookRunner(sandbox=Sandbox("bwrap")))
    with pytest.raises(BookError, match=r"add mystmd \(or jupyter-book>=2\) to binder/requi"):
        await engine.prepare(None, find_book(checkout), checkout, venv_info(env), None,
                             tmp_path / "out")  # fmt: skip


async def test_the_myst_book_is_found_at_the_root_or_in_content(tmp_path):
    (tmp_path / "myst.yml").write_text("version: 1\n")
    assert (find_book(tmp_path).engine, find_book(tmp_path).root) == ("myst", tmp_path)
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "myst.yml").write_text("version: 1\n")
    assert find_book(tmp_path).root == tmp_path / "content"
