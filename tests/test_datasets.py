"""An author's binder/data_requirement.json: datasets fetched once by repo2data, confined.

Real parts throughout: a SQLite database with the migrations, the durable job queue, bubblewrap,
repo2data in its own process, and an HTTP server on 127.0.0.1 that counts its requests.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from neurolibre_service.datasets import DataError, DatasetStore, human_size, parse_requirement
from neurolibre_service.db import Build, Database, Dataset, Job, JobStatus, Preprint
from neurolibre_service.environments.local import seal_environment
from neurolibre_service.errors import Conflict, NotFound
from neurolibre_service.jobs import JobQueue
from neurolibre_service.logs import LogStore, Redactor
from neurolibre_service.sandbox import Sandbox

from .conftest import need
from .support.dataserver import DataServer, tar_gz_bytes, zip_bytes


class Site:
    """The service's data side: a store, a job queue whose jobs fetch a requirement file."""

    def __init__(self, root: Path, db: Database, **limits):
        self.root = root
        self.db = db
        self.store = DatasetStore(db, root / "datasets", Sandbox("bwrap"), **limits)
        self.logs = LogStore(root / "logs", Redactor())
        self.queue = JobQueue(db, self.logs, {"data": self._runner}, concurrency=2)
        self.finished: dict[int, asyncio.Event] = {}

    async def _runner(self, ctx) -> None:
        event = self.finished[ctx.job_id]

        async def on_finish(_status) -> None:
            event.set()

        ctx.data["on_finish"] = on_finish
        prefix = ctx.params.get("env_prefix")
        for spec in parse_requirement(ctx.params["requirement"]):
            await self.store.ensure(ctx, spec, env_prefix=Path(prefix) if prefix else None)

    async def submit(self, requirement: dict, env_prefix: Path | None = None) -> int:
        params = {"requirement": json.dumps(requirement),
                  "env_prefix": str(env_prefix) if env_prefix else None}  # fmt: skip
        job = await self.queue.submit("data", "alice", params)
        self.finished[job.id] = asyncio.Event()
        self.queue.wake()
        return job.id

    async def result(self, job_id: int) -> tuple[Job, str]:
        await asyncio.wait_for(self.finished[job_id].wait(), 60)
        async with self.db.session() as s:
            job = await s.get(Job, job_id)
        return job, (self.root / "logs" / f"job-{job_id}.log").read_text()

    async def build(self, requirement: dict, env_prefix: Path | None = None) -> tuple[Job, str]:
        return await self.result(await self.submit(requirement, env_prefix))

    async def row(self, key: str) -> Dataset | None:
        async with self.db.session() as s:
            return await s.get(Dataset, key)

    def store_entries(self) -> list[str]:
        """What the store holds: dataset directories, and anything left in staging."""
        root = self.store.root
        names = sorted(p.name for p in root.iterdir() if p.name != ".staging")
        staging = root / ".staging"
        leftovers = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
        return names + [f".staging/{n}" for n in leftovers]


@pytest.fixture(scope="module")
def data_server():
    server = DataServer()
    yield server
    server.close()


@pytest.fixture
async def site(tmp_path):
    need("bubblewrap", bool(shutil.which("bwrap")))
    need("prlimit (util-linux)", bool(shutil.which("prlimit")))
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await db.upgrade()
    made: list[Site] = []

    async def make(**limits) -> Site:
        s = Site(tmp_path / f"site{len(made)}", db, **limits)
        await s.queue.start()
        made.append(s)
        return s

    yield make
    for s in made:
        await s.queue.stop()
    await db.close()


@pytest.fixture(scope="module")
def preprint_env(tmp_path_factory) -> Path:
    """A preprint's environment: a venv with a library that downloads its data."""
    env = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    seal_environment(env, Path(sys.executable).resolve(), "venv")  # as the local builder does
    site_packages = next((env / "lib").glob("python3*/site-packages"))
    (site_packages / "brainfetch.py").write_text(
        textwrap.dedent("""
        import json, os, sys, time


        def attempt(path):
            try:
                with open(path, "w") as f:
                    f.write("escaped")
                return "written"
            except OSError as e:
                return type(e).__name__


        def fetch(dst, escapes=()):
            os.makedirs(dst, exist_ok=True)
            report = {"prefix": sys.prefix, "escapes": {p: attempt(p) for p in escapes}}
            with open(os.path.join(dst, "report.json"), "w") as f:
                json.dump(report, f)
            with open(os.path.join(dst, "atlas.csv"), "w") as f:
                f.write("region,volume\\nhippocampus,4200\\n")
    """)
    )
    return env


def one(src: str, name: str, **extra) -> dict:
    return {"src": src, "dst": "./data", "projectName": name, **extra}


# -- fetching ------------------------------------------------------------------------------


async def test_a_dataset_is_fetched_into_the_store_and_its_size_recorded(site, data_server):
    url = data_server.add("/single/table.csv", b"subject,age\n" + b"s01,31\n" * 1000)
    s = await site()
    req = one(url, "ages", dataLayout="neurolibre", recursive=True, version="1.0")
    job, log = await s.build(req)

    assert job.status == JobStatus.succeeded, log
    (spec,) = parse_requirement(json.dumps(req))
    data = s.store.path(spec.key, "ages")
    assert data == s.store.root / spec.key / "ages"
    assert (data / "table.csv").read_bytes().startswith(b"subject,age\ns01,31\n")
    row = await s.row(spec.key)
    assert row.status == "ready" and row.project_name == "ages"
    assert row.requirement == req
    assert row.size_bytes >= 12 + 7 * 1000
    assert row.fetched_at is not None and row.last_used_at is not None
    assert "==> data: ages" in log
    assert "repo2data runs confined (bubblewrap)" in log
    assert f"Dataset ages ready: {human_size(row.size_bytes)}." in log
    # the store holds the dataset and nothing else: no staging leftovers
    assert s.store_entries() == [spec.key]
    listed = await s.store.list()
    assert [(d["key"], d["status"], d["size_bytes"], d["in_use"]) for d in listed] == [
        (spec.key, "ready", row.size_bytes, False)
    ]
    assert listed[0]["size"] == human_size(row.size_bytes)


async def test_several_datasets_and_archives_are_unpacked(site, data_server):
    zipped = data_server.add("/multi/atlas.zip", zip_bytes({"atlas/labels.txt": b"1 ctx\n"}))
    tarred = data_server.add(
        "/multi/scans.tar.gz", tar_gz_bytes({"sub-01/anat.txt": b"T1w\n", "README": b"scans\n"})
    )
    s = await site()
    req = {"atlas": one(zipped, "atlas"), "scans": one(tarred, "scans")}
    job, log = await s.build(req)

    assert job.status == JobStatus.succeeded, log
    specs = {sp.entry: sp for sp in parse_requirement(json.dumps(req))}
    atlas = s.store.path(specs["atlas"].key, "atlas")
    scans = s.store.path(specs["scans"].key, "scans")
    assert (atlas / "atlas" / "labels.txt").read_text() == "1 ctx\n"
    assert (scans / "sub-01" / "anat.txt").read_text() == "T1w\n"
    assert (scans / "README").read_text() == "scans\n"
    # the archives themselves are gone once unpacked
    assert not (atlas / "atlas.zip").exists() and not (scans / "scans.tar.gz").exists()
    assert "==> data: atlas" in log and "==> data: scans" in log
    assert sorted(s.store_entries()) == sorted([specs["atlas"].key, specs["scans"].key])


async def test_the_same_requirement_elsewhere_is_reused_and_a_changed_one_fetched_anew(
    site, data_server
):
    v1 = data_server.add("/reuse/v1/roi.csv", b"roi,1\n")
    s = await site()
    first, log = await s.build(one(v1, "rois"))
    assert first.status == JobStatus.succeeded, log
    assert data_server.count("/reuse/v1/roi.csv") == 1

    # another repository asks for the same data, as one of several datasets, elsewhere
    other_repo = {"shared": {"src": v1, "projectName": "rois", "dst": "../elsewhere"}}
    again, log = await s.build(other_repo)
    assert again.status == JobStatus.succeeded, log
    assert data_server.count("/reuse/v1/roi.csv") == 1
    assert "reusing it, nothing to download" in log
    assert "Fetching dataset" not in log

    # the author publishes a new version: a new dataset, the old one stays for its users
    v2 = data_server.add("/reuse/v2/roi.csv", b"roi,2\n")
    changed, log = await s.build(one(v2, "rois"))
    assert changed.status == JobStatus.succeeded, log
    (old,) = parse_requirement(json.dumps(one(v1, "rois")))
    (new,) = parse_requirement(json.dumps(one(v2, "rois")))
    assert old.key != new.key
    assert (s.store.path(old.key, "rois") / "roi.csv").read_text() == "roi,1\n"
    assert (s.store.path(new.key, "rois") / "roi.csv").read_text() == "roi,2\n"
    assert data_server.count("/reuse/v2/roi.csv") == 1


async def test_two_builds_asking_at_once_download_once(site, data_server):
    url = data_server.add("/together/slow.csv", b"a,b\n", delay=1.0)
    s = await site()
    jobs = [await s.submit(one(url, "slow")), await s.submit(one(url, "slow"))]
    results = [await s.result(j) for j in jobs]
    assert [j.status for j, _ in results] == [JobStatus.succeeded] * 2
    assert data_server.count("/together/slow.csv") == 1
    assert sum("reusing it" in log for _, log in results) == 1


async def test_data_missing_after_a_crash_is_fetched_again(site, data_server):
    url = data_server.add("/crash/file.csv", b"x\n")
    s = await site()
    job, log = await s.build(one(url, "crashy"))
    assert job.status == JobStatus.succeeded, log
    (spec,) = parse_requirement(json.dumps(one(url, "crashy")))
    # the row says "ready" but the directory is gone (a disk restored from an older backup)
    shutil.rmtree(s.store.root / spec.key)
    job, log = await s.build(one(url, "crashy"))
    assert job.status == JobStatus.succeeded, log
    assert "its data is missing from the store; fetching it again" in log
    assert data_server.count("/crash/file.csv") == 2
    assert (s.store.path(spec.key, "crashy") / "file.csv").read_text() == "x\n"


# -- limits and failures ---------------------------------------------------------------------


async def test_an_archive_expanding_past_the_size_limit_is_stopped_and_nothing_kept(
    site, data_server
):
    bomb = zip_bytes({"huge.bin": b"\0" * (8 << 20)})
    assert len(bomb) < 64 << 10
    url = data_server.add("/limits/bomb.zip", bomb)
    s = await site(size_limit=256 << 10)
    job, log = await s.build(one(url, "bomb"))

    assert job.status == JobStatus.failed, log
    assert f"!! {job.error}" in log
    assert job.error.startswith(
        "Dataset bomb grew past the size limit of 256 KB (c.NeuroLibre.data_size_limit)"
    )
    (spec,) = parse_requirement(json.dumps(one(url, "bomb")))
    row = await s.row(spec.key)
    assert row.status == "failed" and row.error == job.error
    assert s.store_entries() == []


async def test_a_single_file_past_the_size_limit_is_stopped(site, data_server):
    url = data_server.add("/limits/big.bin", b"\1" * (1 << 20))
    s = await site(size_limit=100 << 10)
    job, log = await s.build(one(url, "big"))
    assert job.status == JobStatus.failed, log
    assert "grew past the size limit of 100 KB" in job.error
    assert s.store_entries() == []


async def test_a_missing_file_fails_at_once_with_the_http_answer(site, data_server):
    s = await site()
    started = time.monotonic()
    job, log = await s.build(one(data_server.url("/nowhere/data.zip"), "lost"))
    assert job.status == JobStatus.failed, log
    assert "Retrying" not in log
    assert "answered HTTP 404 Not Found" in job.error
    assert job.error.startswith("Fetching dataset lost failed: the download failed:")
    # no 3 x 5 s retries for an answer that will not change
    assert time.monotonic() - started < 5
    assert data_server.count("/nowhere/data.zip") == 1
    assert s.store_entries() == []
    # a failed dataset is listed for admins with its error, and can be deleted
    (listed,) = await s.store.list()
    assert listed["status"] == "failed" and "404" in listed["error"]
    await s.store.delete(listed["key"])
    assert await s.store.list() == []


async def test_python_code_runs_with_the_environment_and_writes_only_its_data(
    site, preprint_env, tmp_path
):
    outside = tmp_path / "escaped.txt"
    system = Path(f"/var/tmp/nl-escape-{time.time_ns()}")
    in_env = preprint_env / "escaped.txt"
    escapes = [str(outside), str(system), str(in_env)]
    src = f"import brainfetch; brainfetch.fetch(_dst, {escapes!r})"
    s = await site()
    try:
        job, log = await s.build(one(src, "atlas"), env_prefix=preprint_env)
    finally:
        system.unlink(missing_ok=True)
    assert job.status == JobStatus.succeeded, log
    (spec,) = parse_requirement(json.dumps(one(src, "atlas")))
    data = s.store.path(spec.key, "atlas")
    report = json.loads((data / "report.json").read_text())
    assert report["prefix"] == str(preprint_env)
    assert (data / "atlas.csv").read_text().startswith("region,volume")
    # the system and the environment are read-only; /tmp is private to the fetch
    assert report["escapes"][str(system)] == "OSError"
    assert report["escapes"][str(in_env)] == "OSError"
    assert not outside.exists() and not in_env.exists()
    assert f"with repo2data with {preprint_env / 'bin' / 'python3'}" in log


async def test_python_code_past_the_time_limit_is_stopped_with_its_processes(site, preprint_env):
    marker = f"nl-data-sleep-{time.time_ns()}"
    src = f"import time; time.sleep(60); print({marker!r})"
    s = await site(time_limit=1.5)
    job, log = await s.build(one(src, "sleepy"), env_prefix=preprint_env)
    assert job.status == JobStatus.failed, log
    assert job.error == (
        "Fetching dataset sleepy took longer than the time limit of 1.5 seconds "
        "(c.NeuroLibre.data_time_limit) and was stopped."
    )
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _has(p, marker)]
    assert s.store_entries() == []


async def test_python_code_without_an_environment_is_refused(site):
    s = await site()
    job, _ = await s.build(one("import os; os.makedirs(_dst)", "nowhere"))
    assert job.status == JobStatus.failed
    assert "src is Python code, which runs in the preprint's own environment" in job.error


def _has(proc: Path, marker: str) -> bool:
    try:
        return marker.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


# -- administration -------------------------------------------------------------------------


async def test_admins_delete_only_datasets_no_preprint_uses(site, data_server):
    url = data_server.add("/admin/a.csv", b"a\n")
    s = await site()
    job, log = await s.build(one(url, "shared-data"))
    assert job.status == JobStatus.succeeded, log
    (spec,) = parse_requirement(json.dumps(one(url, "shared-data")))

    async with s.db.session() as db:
        ds = await db.get(Dataset, spec.key)
        running = Job(kind="preprint", owner="alice", status=JobStatus.running)
        preprint = Preprint(owner="alice", repo_url="https://example.org/a.git", ref="main")
        db.add_all([running, preprint])
        await db.flush()
        build = Build(preprint_id=preprint.id, job_id=running.id, ref="main", datasets=[ds])
        db.add(build)
        await db.commit()
        preprint_id = preprint.id

    (listed,) = await s.store.list()
    assert listed["in_use"] is True
    with pytest.raises(Conflict, match=f"in use by preprint {preprint_id} "):
        await s.store.delete(spec.key)

    # finished, it is still the preprint's latest build: the preprint page shows this data
    async with s.db.session() as db:
        (await db.get(Job, running.id)).status = JobStatus.succeeded
        await db.commit()
    with pytest.raises(Conflict):
        await s.store.delete(spec.key)

    # a newer build without the dataset: nothing uses it anymore
    async with s.db.session() as db:
        newer_job = Job(kind="preprint", owner="alice", status=JobStatus.succeeded)
        db.add(newer_job)
        await db.flush()
        db.add(Build(preprint_id=preprint_id, job_id=newer_job.id, ref="main"))
        await db.commit()
    (listed,) = await s.store.list()
    assert listed["in_use"] is False
    await s.store.delete(spec.key)
    assert await s.store.list() == []
    assert s.store_entries() == []
    with pytest.raises(NotFound):
        await s.store.delete(spec.key)
    with pytest.raises(NotFound):
        await s.store.delete("../../etc")


async def test_a_restart_mid_fetch_leaves_no_staging_and_no_fetching_row(site):
    s = await site()
    (spec,) = parse_requirement('{"src": "https://x.org/d.zip", "projectName": "cut"}')
    async with s.db.session() as db:
        db.add(Dataset(key=spec.key, project_name="cut", requirement=spec.requirement,
                       status="fetching"))  # fmt: skip
        await db.commit()
    half = s.store.root / ".staging" / f"{spec.key}-0000" / "data" / "cut"
    half.mkdir(parents=True)
    (half / "part.bin").write_bytes(b"half")

    await s.store.recover()
    row = await s.row(spec.key)
    assert row.status == "failed" and "service restart" in row.error
    assert s.store_entries() == []


# -- the requirement file --------------------------------------------------------------------


def test_a_requirement_is_keyed_by_what_it_fetches_not_where_it_goes():
    (a,) = parse_requirement('{"src": "https://x.org/d.zip", "dst": "./data", "projectName": "d"}')
    (b,) = parse_requirement('{"projectName": "d", "src": "https://x.org/d.zip", "dst": "/mnt"}')
    (c,) = parse_requirement('{"src": "https://x.org/d2.zip", "projectName": "d"}')
    assert a.entry is None and a.project_name == "d" and len(a.key) == 64
    assert a.key == b.key != c.key
    assert a.requirement == {"src": "https://x.org/d.zip", "dst": "./data", "projectName": "d"}
    several = parse_requirement(
        json.dumps({"one": {"src": "https://x.org/d.zip", "projectName": "d"},
                    "two": {"src": "10.5281/zenodo.123", "projectName": "z",
                            "version": "2", "recursive": False}})
    )  # fmt: skip
    assert [(x.entry, x.project_name) for x in several] == [("one", "d"), ("two", "z")]
    assert several[0].key == a.key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"src": "https://x.org/d.zip",', "is not valid JSON (line 1"),
        ("[]", "must be a JSON object"),
        ("{}", "must be a JSON object"),
        ('{"projectName": "d"}', "src is missing"),
        ('{"src": "somewhere", "projectName": "d"}', "does not know how to fetch src 'somewhere'"),
        ('{"src": "https://x.org/d.zip"}', "projectName None is missing or unsafe"),
        ('{"src": "https://x.org/d.zip", "projectName": "../up"}', "'../up' is missing or unsafe"),
        (
            '{"a": {"src": "https://x.org/1", "projectName": "d"},'
            ' "b": {"src": "https://x.org/2", "projectName": "d"}}',
            "dataset 'b': projectName 'd' is also used by dataset 'a'",
        ),
        ('{"a": {"src": "https://x.org/1"}}', "binder/data_requirement.json, dataset 'a': "),
    ],
)
def test_a_bad_requirement_says_what_to_fix(text, message):
    with pytest.raises(DataError, match=None) as e:
        parse_requirement(text)
    assert message in str(e.value)
    assert str(e.value).startswith("binder/data_requirement.json")
