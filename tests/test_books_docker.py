"""An author's book is re-executed in a container of its environment's image.

Real parts: Debian's dockerd (private, started by scripts/docker-engine.sh), an image built
FROM the debootstrap base with Jupyter Book 1 and a kernel installed by pip from a package
index on 127.0.0.1, the job queue on SQLite, real notebook execution in the container.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from neurolibre_service import docker_engine as de
from neurolibre_service.books import DockerBookRunner

from .conftest import need
from .support.mystthemes import site_theme, write_tree
from .support.pkgindex import (
    PackageIndex,
    book_wheels,
    bookworm_wheels,
    cache_dir,
    server_wheels,
)
from .test_books import (
    FIGURES,
    TWO_NOTEBOOKS,
    Outcome,
    book,
    figures,
    myst_book,
    notebook,
    page,
)
from .test_environments import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")
BOOK_IMAGE = "nl-test-book:jb1"
MYST_IMAGE = "nl-test-book:myst"


@pytest.fixture(scope="module")
def index():
    cache = cache_dir()
    idx = PackageIndex([server_wheels(cache), book_wheels(cache), bookworm_wheels(cache)])
    yield idx
    idx.close()


def build_image(engine, index_url: str, context: Path, name: str, requirements: str,
                before: str = "") -> str:  # fmt: skip
    """An environment image as an author's binder/Dockerfile would make it: a virtual
    environment with `requirements` from the test index, and the user 1000 of repo2docker's
    images."""
    (context / "Dockerfile").write_text(
        "FROM neurolibre-test-base:bookworm\n"
        + before
        + "RUN useradd -m -u 1000 jovyan && python3 -m venv /opt/env && /opt/env/bin/pip "
        f"install --no-cache-dir -q --index-url {index_url} {requirements}\n"
        "ENV PATH=/opt/env/bin:$PATH\n"
        "USER jovyan\n"
        "WORKDIR /home/jovyan\n"
    )
    # the legacy builder: Debian's engine has no buildx; host network reaches the index
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    done = subprocess.run(["docker", "-H", engine.host, "build", "--network", "host", "-q",
                           "-t", name, str(context)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return name


@pytest.fixture(scope="module")
def book_image(engine, index, tmp_path_factory) -> str:
    """Jupyter Book 1, a kernel and matplotlib."""
    context = tmp_path_factory.mktemp("book-image")
    return build_image(
        engine, index.url, context, BOOK_IMAGE, "jupyter-book==1.0.4.post1 ipykernel matplotlib"
    )


@pytest.fixture(scope="module")
def myst_image(engine, index, tmp_path_factory) -> str:
    """An image as NeuroLibre's are for a MyST book: a kernel, a Jupyter server and the
    author's libraries; no node, no mystmd (the service's are lent to the container)."""
    context = tmp_path_factory.mktemp("myst-image")
    return build_image(engine, index.url, context, MYST_IMAGE,
                       "ipykernel jupyter-server matplotlib")  # fmt: skip


@dataclass
class Started:
    job_id: int
    finished: asyncio.Future
    call: dict


@pytest.fixture(scope="module")
async def book_queue(tmp_path_factory, engine):
    """start(files, environment=, ...) -> Started; outcome(started) -> Outcome: book builds
    on the docker runner, as jobs of a real queue."""
    from neurolibre_service.db import Database, Job
    from neurolibre_service.jobs import JobQueue
    from neurolibre_service.logs import LogStore, Redactor

    root = tmp_path_factory.mktemp("docker-books")
    db = Database(f"sqlite:///{root / 'db.sqlite'}")
    await db.upgrade()
    logs = LogStore(root / "logs", Redactor())
    calls: dict[int, dict] = {}

    async def run_book(ctx):
        call = calls[ctx.params["call"]]
        ctx.data["on_finish"] = call["on_finish"]
        call["result"] = await call["runner"].build(
            ctx, checkout=call["checkout"], environment=call["environment"],
            datasets=call["datasets"], cache_in=call["cache_in"], out_dir=call["out_dir"])  # fmt: skip

    queue = JobQueue(db, logs, {"book": run_book}, concurrency=2)
    await queue.start()
    count = itertools.count(1)

    async def start(files: dict[str, str], *, environment: str,
                    datasets: list[tuple[str, Path]] = (), cache_in: Path | None = None,
                    **traits) -> Started:  # fmt: skip
        n = next(count)
        checkout = root / f"checkout-{n}"
        for name, text in files.items():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_text(text)
        runner = DockerBookRunner(docker_host=engine.host, **traits)
        finished = asyncio.get_running_loop().create_future()

        async def on_finish(status):
            finished.set_result(status)

        call = {"runner": runner, "checkout": checkout, "datasets": list(datasets),
                "cache_in": cache_in, "out_dir": root / f"build-{n}", "on_finish": on_finish,
                "result": None, "environment": environment}  # fmt: skip
        calls[n] = call
        job = await queue.submit("book", "alice", {"call": n})
        queue.wake()
        return Started(job.id, finished, call)

    async def outcome(started: Started) -> Outcome:
        status = await asyncio.wait_for(started.finished, 300)
        async with db.session() as s:
            row = await s.get(Job, started.job_id)
        log = logs.path(queue.log_key(started.job_id)).read_text()
        call = started.call
        return Outcome(status.value, row.error, call["result"], log, call["out_dir"],
                       call["checkout"])  # fmt: skip

    async def build(files: dict[str, str], **kwargs) -> Outcome:
        return await outcome(await start(files, **kwargs))

    def log_of(started: Started) -> str:
        path = logs.path(queue.log_key(started.job_id))
        return path.read_text() if path.exists() else ""

    build.start, build.outcome, build.queue, build.log_of = start, outcome, queue, log_of
    yield build
    await queue.stop()
    await db.close()


@pytest.fixture(scope="module")
async def books(book_queue, book_image):
    async def build(files: dict[str, str], **kwargs) -> Outcome:
        return await book_queue(files, environment=book_image, **kwargs)

    return build


async def book_containers(engine, job_id: int | None = None) -> list[str]:
    """The ids of the book containers on the engine (of one job), running or not."""
    label = f"org.neurolibre.job={job_id}" if job_id else "org.neurolibre.role=book"
    async with de.engine(engine.host) as client:
        found = await client.containers.list(all="1", filters=json.dumps({"label": [label]}))
    return [c.id for c in found]


@pytest.fixture(scope="module")
async def first_build(books) -> Outcome:
    return await books(book(TWO_NOTEBOOKS))


async def test_a_book_builds_in_its_image_and_its_pages_come_back_to_the_service(
    first_build, engine
):
    out = first_build
    assert out.status == "succeeded", out.log
    assert "The book runs in a container of nl-test-book:jb1 (user 1000:1000, no network" in (
        out.log
    )
    assert "Jupyter Book 1.0.4.post1" in out.log
    assert (out.result.executed, out.result.cached) == (2, 0)
    # the container's log streamed into the job's, line by line, without terminal colours
    assert any("Executed notebook in" in line and "one.ipynb" in line
               for line in out.log.splitlines())  # fmt: skip
    assert "\x1b[" not in out.log
    assert "the answer is 42" in page(out, "one.html")
    assert "two sums to 10" in page(out, "two.html")
    assert out.result.cache_dir == out.out_dir / "exec-cache"
    # what the build wrote (as the container's user) belongs to the service again
    for path in [out.result.html_dir, *out.result.html_dir.rglob("*"), out.checkout,
                 *out.checkout.rglob("*")]:  # fmt: skip
        assert path.lstat().st_uid == os.geteuid(), path
    assert await book_containers(engine) == []


async def test_a_commit_that_only_edits_prose_executes_no_notebook_in_the_container(
    books, first_build
):
    files = book(TWO_NOTEBOOKS)
    files["content/intro.md"] = "# A living preprint\n\nThe second version of the prose.\n"
    out = await books(files, cache_in=first_build.result.cache_dir)

    assert out.status == "succeeded", out.log
    assert (out.result.executed, out.result.cached) == (0, 2)
    assert "2 notebooks: 0 executed, 2 from the cache" in out.log
    assert "The second version of the prose." in page(out, "intro.html")
    assert "the answer is 42" in page(out, "one.html")


async def test_a_books_figures_reach_its_page_from_the_container(books):
    """matplotlib's inline backend in the image's kernel, headless, as the image's user."""
    out = await books(book({"figures.ipynb": FIGURES}))

    assert out.status == "succeeded", out.log
    shown = figures(out.result.html_dir, "figures.html")
    assert [len(shown[cell]) for cell in ("pyplot", "returned", "image")] == [1, 1, 1]
    assert 'id="nl-plotly-like"' in page(out, "figures.html")
    assert "outside the kernel: agg 0" in page(out, "figures.html")


async def test_a_notebook_reads_its_dataset_in_the_container_and_cannot_write_to_it(
    books, tmp_path
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
    out = await books(book({"data.ipynb": reader}), datasets=[("my-project", dataset)])

    assert out.status == "succeeded", out.log
    html = page(out, "data.html")
    assert "read: hello from the dataset" in html
    assert "write: refused, Read-only file system" in html
    assert sorted(p.name for p in dataset.iterdir()) == ["x.txt"]
    # the dataset was lent, not given: still the service's
    assert (dataset / "x.txt").stat().st_uid == os.geteuid()


async def test_a_notebook_cannot_reach_the_network_nor_the_docker_engine(books, index, engine):
    port = urlsplit(index.url).port
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the service reaches it
    engine_socket = urlsplit(engine.host).path
    assert Path(engine_socket).exists()
    probe = notebook(
        "Confined",
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "    print('index: reached')\n"
        "except OSError as e:\n"
        "    print('index: unreachable,', type(e).__name__)",
        "import os\n"
        f"for path in ('/var/run/docker.sock', '/run/docker.sock', {engine_socket!r}):\n"
        "    print('socket', path, 'visible' if os.path.exists(path) else 'absent')",
        "import os\n"
        "print('uid', os.getuid(), 'gid', os.getgid())\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print('NoNewPrivs', status['NoNewPrivs'].strip(), 'CapEff', status['CapEff'].strip())",
        "open('../set-uid', 'w').write('#!/bin/sh\\n')\nos.chmod('../set-uid', 0o4755)",
    )
    out = await books(book({"confined.ipynb": probe}), mem_limit="1G", cpu_limit=1.5)

    assert out.status == "succeeded", out.log
    html = page(out, "confined.html")
    assert "index: unreachable, ConnectionRefusedError" in html
    assert "socket /var/run/docker.sock absent" in html
    assert "socket /run/docker.sock absent" in html
    assert f"socket {engine_socket} absent" in html
    assert "uid 1000 gid 1000" in html
    assert "NoNewPrivs 1 CapEff 0000000000000000" in html
    # what it leaves in the checkout comes back to the service, without set-user-ID bits
    left = (out.checkout / "set-uid").stat()
    assert left.st_uid == os.geteuid() and not left.st_mode & 0o6000


async def test_the_container_runs_under_the_configured_limits(books, engine):
    """What the engine was told (the kernel's cgroup files differ between machines)."""
    seen: list[dict] = []

    async def watch():
        while not seen:
            for cid in await book_containers(engine):
                async with de.engine(engine.host) as client:
                    info = await client.containers.container(cid).show()
                if info["Config"]["Labels"].get("org.neurolibre.role") == "book" and (
                    "build" in info["Config"]["Cmd"]
                ):
                    seen.append(info)
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        out = await books(book(TWO_NOTEBOOKS), mem_limit="1G", cpu_limit=1.5, pids_limit=300)
    finally:
        watcher.cancel()
    assert out.status == "succeeded", out.log
    host = seen[0]["HostConfig"]
    assert (host["Memory"], host["MemorySwap"]) == (2**30, 2**30)
    assert host["NanoCpus"] == 1_500_000_000
    assert host["PidsLimit"] == 300
    assert host["NetworkMode"] == "none"
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["CapDrop"] == ["ALL"]
    assert not host["Privileged"]
    assert seen[0]["Config"]["User"] == "1000:1000"
    mounts = {m["Destination"]: m for m in seen[0]["Mounts"]}
    assert mounts[str(out.checkout)]["RW"] is True
    assert all("docker.sock" not in m["Source"] for m in seen[0]["Mounts"])


async def test_a_notebook_that_never_ends_is_stopped_by_the_time_limit_and_its_container_goes(
    book_queue, book_image, engine
):
    forever = notebook("Forever", "import time\nwhile True:\n    time.sleep(1)")
    started = await book_queue.start(book({"forever.ipynb": forever}), environment=book_image,
                                     time_limit=20)  # fmt: skip
    await wait_for(lambda: book_containers(engine, started.job_id), timeout=60)
    out = await book_queue.outcome(started)

    assert out.status == "failed"
    assert out.error.startswith(
        "The book build was stopped while executing content/forever.ipynb: it exceeded the "
        "time limit of 20 seconds (c.DockerBookRunner.time_limit)."
    )
    assert await book_containers(engine, started.job_id) == []


async def test_a_cancelled_book_build_leaves_no_container(book_queue, book_image, engine):
    forever = notebook("Forever", "import time\nwhile True:\n    time.sleep(1)")
    started = await book_queue.start(book({"forever.ipynb": forever}), environment=book_image)
    await wait_for(lambda: "Executing notebook" in book_queue.log_of(started), timeout=120)
    assert await book_containers(engine, started.job_id)

    await book_queue.queue.cancel(started.job_id, "alice")
    out = await book_queue.outcome(started)
    assert out.status == "cancelled"
    assert await book_containers(engine, started.job_id) == []
    # the checkout is the service's again, so it can be deleted
    assert out.checkout.stat().st_uid == os.geteuid()


async def test_an_environment_whose_image_is_gone_is_told_to_be_rebuilt(book_queue, engine):
    out = await book_queue(book(TWO_NOTEBOOKS), environment="nl-test-gone:latest")

    assert out.status == "failed"
    assert out.error == (
        f"The Docker engine at {engine.host} has no image nl-test-gone:latest: the environment "
        "must be built again."
    )
    assert await book_containers(engine) == []


async def test_book_containers_left_by_an_earlier_run_are_removed_at_start(book_image, engine):
    engine.docker("create", "--label", "org.neurolibre.role=book", "--label",
                  "org.neurolibre.job=999", book_image, "sleep", "1000")  # fmt: skip
    assert len(await book_containers(engine, 999)) == 1

    await DockerBookRunner(docker_host=engine.host).recover()
    assert await book_containers(engine) == []


@pytest.fixture(scope="module")
def myst_themes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("myst-themes")
    for name in ("article-theme", "book-theme"):
        write_tree(root / name, site_theme(name))
    return root


async def test_a_myst_book_builds_in_its_image_with_the_services_mystmd_and_theme(
    book_queue, myst_image, myst_themes, engine
):
    need("node (the service's, lent to the container)", bool(shutil.which("node")))
    theme_files = sorted(p.name for p in (myst_themes / "article-theme").iterdir())
    files = myst_book({**TWO_NOTEBOOKS, "figures.ipynb": FIGURES}, where="content/")
    files["content/myst.yml"] += "site:\n  template: article-theme\n"
    out = await book_queue(files, environment=myst_image, myst_themes_dir=str(myst_themes),
                           myst_theme_download=False)  # fmt: skip

    assert out.status == "succeeded", out.log
    assert "MyST 1.11.0 (mystmd, the service's), theme article-theme" in out.log
    assert f"MyST's Jupyter server is python -m jupyter_server of the image {myst_image}" in out.log
    assert (out.result.engine, out.result.executed, out.result.cached) == ("myst", 3, 0)
    assert "the answer is 42" in page(out, "one.html")
    assert "two sums to 10" in page(out, "two.html")
    assert '<meta name="theme" content="article-theme">' in page(out, "one.html")
    assert len(figures(out.result.html_dir, "figures.html")["pyplot"]) == 1
    assert len(list(out.result.cache_dir.glob("*.ipynb"))) == 3
    # its Jupyter server ran as the image's user: nothing had to allow root
    assert not (
        out.checkout / ".neurolibre-myst" / "jupyter" / "jupyter_server_config.json"
    ).exists()
    # the theme was lent read-only
    assert sorted(p.name for p in (myst_themes / "article-theme").iterdir()) == theme_files
    assert await book_containers(engine) == []
