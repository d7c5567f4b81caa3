"""An author's binder/data_requirement.json: datasets fetched once by repo2data, confined.

Real parts throughout: a SQLite database with the migrations, the durable job queue, bubblewrap,
repo2data in its own process, and an HTTP server on 127.0.0.1 that counts its requests. A src
that is Python code runs in the service's data environment, built here once per module from
the local package index (repo2data, nilearn, and a package an operator added).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from neurolibre_service.datasets import (
    DEFAULT_DATA_PACKAGES,
    DataError,
    DatasetStore,
    data_packages,
    human_size,
    parse_requirement,
    requirement_key,
)
from neurolibre_service.db import Build, Database, Dataset, Job, JobStatus, Preprint
from neurolibre_service.environments.service_envs import ServiceEnvironment, ServiceEnvironments
from neurolibre_service.errors import Conflict, NotFound
from neurolibre_service.jobs import JobQueue
from neurolibre_service.logs import LogStore, Redactor
from neurolibre_service.sandbox import Sandbox

from .conftest import need
from .support.dataenv import serve_data_wheels
from .support.dataserver import DataServer, tar_gz_bytes, zip_bytes
from .support.pkgindex import PackageIndex

# a package the operator adds to the data environment (c.NeuroLibre.data_packages)
DATAFETCH = """
import os, sys


def fetch(dst):
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "made-by.txt"), "w") as f:
        f.write(f"datafetch CLEAN from {__file__} in {sys.prefix}")
"""


class Site:
    """The service's data side: a store, a job queue whose jobs fetch a requirement file."""

    def __init__(self, root: Path, db: Database, envs: ServiceEnvironments, packages, **limits):
        self.root = root
        self.db = db
        self.store = DatasetStore(db, root / "datasets", Sandbox("bwrap"), environments=envs,
                                  packages=packages, **limits)  # fmt: skip
        self.logs = LogStore(root / "logs", Redactor())
        self.queue = JobQueue(db, self.logs, {"data": self._runner}, concurrency=2)
        self.finished: dict[int, asyncio.Event] = {}

    async def _runner(self, ctx) -> None:
        event = self.finished[ctx.job_id]

        async def on_finish(_status) -> None:
            event.set()

        ctx.data["on_finish"] = on_finish
        for spec in parse_requirement(ctx.params["requirement"]):
            await self.store.ensure(ctx, spec)

    async def submit(self, requirement: dict) -> int:
        job = await self.queue.submit("data", "alice", {"requirement": json.dumps(requirement)})
        self.finished[job.id] = asyncio.Event()
        self.queue.wake()
        return job.id

    async def result(self, job_id: int) -> tuple[Job, str]:
        await asyncio.wait_for(self.finished[job_id].wait(), 60)
        async with self.db.session() as s:
            job = await s.get(Job, job_id)
        return job, (self.root / "logs" / f"job-{job_id}.log").read_text()

    async def build(self, requirement: dict) -> tuple[Job, str]:
        return await self.result(await self.submit(requirement))

    def key(self, requirement: dict) -> str:
        """The store key of a one-dataset requirement."""
        (spec,) = parse_requirement(json.dumps(requirement))
        return self.store.keyed(spec).key

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


@pytest.fixture(scope="module")
def operator_package(pkg_index: PackageIndex) -> str:
    return pkg_index.add_sdist(pkg_index.sdists, "nl-datafetch", "1.0", "",
                               modules={"datafetch": DATAFETCH})  # fmt: skip


@pytest.fixture(scope="module")
def packages(operator_package) -> tuple[str, ...]:
    """The data environment's packages: the defaults and one the operator added."""
    return data_packages([operator_package])


@pytest.fixture(scope="module")
def data_envs(tmp_path_factory, pkg_index) -> ServiceEnvironments:
    """The service's environments, built from the local index (never the internet)."""
    sandbox = Sandbox("bwrap", extra_env={"UV_DEFAULT_INDEX": pkg_index.url})
    return ServiceEnvironments(tmp_path_factory.mktemp("service-environments"), sandbox)


@pytest.fixture(scope="module")
async def data_env(data_envs, pkg_index, packages) -> ServiceEnvironment:
    """The data environment, built once for the module (the store would build it on the
    first code src; building it here keeps each test's log and time its own)."""
    need("bubblewrap", bool(shutil.which("bwrap")))
    serve_data_wheels(pkg_index)
    return await data_envs.ensure("data", packages)


@pytest.fixture
async def site(tmp_path, data_envs, packages):
    need("bubblewrap", bool(shutil.which("bwrap")))
    need("prlimit (util-linux)", bool(shutil.which("prlimit")))
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await db.upgrade()
    made: list[Site] = []

    async def make(**limits) -> Site:
        s = Site(tmp_path / f"site{len(made)}", db, data_envs, packages, **limits)
        await s.queue.start()
        made.append(s)
        return s

    yield make
    for s in made:
        await s.queue.stop()
    await db.close()


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


# -- Python code as src: the service's data environment ---------------------------------------

# what a src can try from inside its fetch: each attempt reports what happened, never raises
ATTEMPT = """
def attempt(path, text, mode="w"):
    try:
        with open(path, mode) as f:
            f.write(text)
        return "written"
    except OSError as e:
        return type(e).__name__
"""


def site_packages(env: ServiceEnvironment) -> Path:
    return next((env.prefix / "lib").glob("python3*/site-packages"))


async def test_code_runs_nilearn_from_the_data_environment_and_lands_where_repo2data_puts_it(
    site, data_env, data_server, tmp_path
):
    # the service itself has no nilearn: the fetcher can only come from the data environment
    assert importlib.util.find_spec("nilearn") is None
    atlas = b"\x1f\x8b smith 2009 rsn10"
    url = data_server.add("/smith/PNAS_Smith09_rsn10.nii.gz", atlas)
    # repo2data takes a src with "http://" in it for a URL: the code keeps the scheme apart
    host = data_server.url("/smith/").removeprefix("http:")
    # the official template's requirement, with a nilearn fetcher whose URL can be given
    req = {
        "src": "from nilearn import datasets; import json, os, sys, nilearn; "
        f"datasets.fetch_atlas_smith_2009(data_dir=_dst, url='http:' + {host!r}, dimension=10); "
        "json.dump({'prefix': sys.prefix, 'nilearn': nilearn.__file__, "
        "'version': nilearn.__version__}, open(os.path.join(_dst, 'report.json'), 'w'));",
        "dataLayout": "neurolibre",
        "projectName": "agah_template",
    }
    s = await site()
    job, log = await s.build(req)

    assert job.status == JobStatus.succeeded, log
    data = s.store.path(s.key(req), "agah_template")
    assert (data / "smith_2009" / "PNAS_Smith09_rsn10.nii.gz").read_bytes() == atlas
    report = json.loads((data / "report.json").read_text())
    assert report["prefix"] == str(data_env.prefix)
    assert Path(report["nilearn"]).is_relative_to(site_packages(data_env))
    assert "nilearn==" + report["version"] in data_env.packages
    assert data_server.count(url.removeprefix(data_server.base)) == 1
    assert (
        f"Fetching dataset agah_template with repo2data in the service's data environment "
        f"({data_env.prefix.name}: {', '.join(data_env.packages)}), with "
        f"{data_env.bin('python3')}" in log
    )
    assert "[fetch_atlas_smith_2009] Downloading data from " + url in log

    # the book sees it at data/<projectName>, where "dataLayout": "neurolibre" puts it: a
    # notebook's own repo2data (the template lists it) finds it there, downloaded already
    checkout = tmp_path / "checkout"
    (checkout / "binder").mkdir(parents=True)
    (checkout / "binder" / "data_requirement.json").write_text(json.dumps(req))
    (checkout / "data").mkdir()
    (checkout / "data" / "agah_template").symlink_to(data)
    run = subprocess.run(
        [sys.executable, "-c", "from repo2data.repo2data import Repo2Data; "
         "print('PATH', Repo2Data('binder/data_requirement.json').install()[0])"],
        cwd=checkout, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert f"Info : {checkout / 'data' / 'agah_template'} already downloaded" in run.stdout
    assert f"PATH {checkout / 'data' / 'agah_template'}" in run.stdout
    assert data_server.count(url.removeprefix(data_server.base)) == 1


async def test_an_operator_package_serves_src_and_no_fetch_can_change_the_data_environment(
    site, data_env, tmp_path
):
    sp = site_packages(data_env)
    targets = {
        "module": sp / "datafetch.py",  # replace the package the next fetch imports
        "pth": sp / "nl-evil.pth",  # code every later python of the environment runs
        "nilearn": sp / "nilearn" / "__init__.py",
        "outside": tmp_path / "escaped.txt",
        "system": Path(f"/var/tmp/nl-escape-{time.time_ns()}"),
    }
    poison = {
        "module": "def fetch(d):\n    import os; os.makedirs(d, exist_ok=True); "
        "open(os.path.join(d, 'made-by.txt'), 'w').write('POISONED')\n",
        "pth": "import sys; sys.stderr.write('POISONED by a .pth\\n')\n",
        "nilearn": "\nraise SystemExit('POISONED nilearn')\n",
        "outside": "escaped",
        "system": "escaped",
    }
    before = {k: p.read_bytes() for k, p in targets.items() if p.exists()}
    attack = (
        "import json, os;\n" + ATTEMPT
        + "os.makedirs(_dst, exist_ok=True)\n"
        + f"targets = {({k: str(p) for k, p in targets.items()})!r}\n"
        + f"poison = {poison!r}\n"
        + "report = {k: attempt(p, poison[k], 'a' if k == 'nilearn' else 'w') "
        "for k, p in targets.items()}\n"
        + "json.dump(report, open(os.path.join(_dst, 'report.json'), 'w'))\n"
    )  # fmt: skip
    s = await site()
    try:
        job, log = await s.build(one(attack, "attack"))
    finally:
        targets["system"].unlink(missing_ok=True)
    assert job.status == JobStatus.succeeded, log
    report = json.loads((s.store.path(s.key(one(attack, "attack")), "attack") /
                         "report.json").read_text())  # fmt: skip
    # the data environment is read-only to fetches (and the system; /tmp is private)
    assert set(report) == set(targets) and "written" not in report.values(), report
    assert {k: p.read_bytes() for k, p in targets.items() if p.exists()} == before
    assert (sp / "datafetch.py").read_text() == DATAFETCH

    # the next fetch, another preprint's, imports the operator's package as it was built
    job, log = await s.build(one("import datafetch; datafetch.fetch(_dst)", "honest"))
    assert job.status == JobStatus.succeeded, log
    made = (s.store.path(s.key(one("import datafetch; datafetch.fetch(_dst)", "honest")),
                         "honest") / "made-by.txt").read_text()  # fmt: skip
    assert made == f"datafetch CLEAN from {sp / 'datafetch.py'} in {data_env.prefix}"
    assert "POISONED" not in log


async def test_code_importing_the_preprints_own_package_says_where_src_runs(site, data_env):
    s = await site()
    job, log = await s.build(one("import brainfetch; brainfetch.fetch(_dst)", "atlas"))
    assert job.status == JobStatus.failed, log
    assert "ModuleNotFoundError: No module named 'brainfetch'" in log
    assert job.error == (
        "Fetching dataset atlas failed: the Python code in src failed (exit status 1); its "
        "output is above. See the data log for details. src runs with the service's data "
        f"environment, not the preprint's: it can import {', '.join(data_env.packages)} and "
        "their dependencies (the operator adds packages with c.NeuroLibre.data_packages)."
    )
    assert s.store_entries() == []


async def test_python_code_past_the_time_limit_is_stopped_with_its_processes(site, data_env):
    marker = f"nl-data-sleep-{time.time_ns()}"
    src = f"import time; time.sleep(60); print({marker!r})"
    s = await site(time_limit=1.5)
    job, log = await s.build(one(src, "sleepy"))
    assert job.status == JobStatus.failed, log
    assert job.error == (
        "Fetching dataset sleepy took longer than the time limit of 1.5 seconds "
        "(c.NeuroLibre.data_time_limit) and was stopped."
    )
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _has(p, marker)]
    assert s.store_entries() == []


async def test_code_datasets_are_keyed_by_the_data_environment_and_old_keys_stay(
    site, data_env, data_envs, tmp_path
):
    code = one("import os; os.makedirs(_dst, exist_ok=True); open(os.path.join(_dst, 'v'), 'w').write('1')",
               "made")  # fmt: skip
    url = one("https://x.org/d.zip", "d")
    s = await site()
    # a URL's key is its requirement's; code's also names the data environment
    assert s.key(url) == requirement_key(url)
    assert s.key(code) != requirement_key(code)
    other = DatasetStore(s.db, tmp_path / "other", Sandbox("bwrap"), environments=data_envs,
                         packages=data_packages(["nilearn==0.13.0"]))  # fmt: skip
    (code_spec,) = parse_requirement(json.dumps(code))
    (url_spec,) = parse_requirement(json.dumps(url))
    assert other.keyed(code_spec).key not in (s.key(code), code_spec.key)
    assert other.keyed(url_spec).key == s.key(url)

    # a dataset made before (keyed by the preprint's environment): untouched, still listed,
    # deletable once unused; the same src now makes the data environment's dataset
    old = hashlib.sha256(f"{code_spec.key}:some-runtime".encode()).hexdigest()
    async with s.db.session() as db:
        db.add(Dataset(key=old, project_name="made", requirement=code, status="ready",
                       size_bytes=1))  # fmt: skip
        await db.commit()
    (s.store.root / old / "made").mkdir(parents=True)
    job, log = await s.build(code)
    assert job.status == JobStatus.succeeded, log
    assert "Fetching dataset made" in log
    assert sorted(s.store_entries()) == sorted([old, s.key(code)])
    assert {d["key"] for d in await s.store.list()} == {old, s.key(code)}
    await s.store.delete(old)
    assert s.store_entries() == [s.key(code)]


def test_the_operator_adds_data_packages_or_replaces_a_default_pin():
    assert data_packages() == DEFAULT_DATA_PACKAGES
    assert DEFAULT_DATA_PACKAGES[0] == f"repo2data=={version('repo2data')}"
    assert data_packages(["datalad-osf", "Nilearn==0.13.0"]) == (
        DEFAULT_DATA_PACKAGES[0],
        "Nilearn==0.13.0",
        "datalad-osf",
    )
    with pytest.raises(ValueError, match=r"c.NeuroLibre.data_packages: 'nilearn=>1' is not a "):
        data_packages(["nilearn=>1"])


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
        (
            '{"src": "import lib; lib.get(\'https://x.org/d.zip\', _dst)", "projectName": "d"}',
            "src is Python code with a URL in it, and repo2data takes any src containing "
            "http:// or https:// for a URL",
        ),
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
