"""Datasets: repo2data requirements, cache keys, a confined fetch with limits, and sizes.

Each dataset of binder/data_requirement.json is keyed by its requirement (canonical JSON
without "dst"), so the same requirement from any build or repository is fetched once and
shared; a changed requirement gets a new key and is fetched anew next to the old data.

repo2data never runs in the service: a small driver runs it in a separate process, confined
(bubblewrap) so it can write only to a staging directory. The fetch has a time limit and a size
limit: each file is capped by RLIMIT_FSIZE and the staging directory is measured while it
runs, so an archive that expands past the limit is stopped. Only a complete fetch is renamed
into the store (`root/<key>/<projectName>`); a failure leaves nothing there.

Which repo2data runs, and with what on PATH:
- a `src` that is Python code runs as NeuroLibre runs it, with the service's own fetchers, not
  the preprint's packages: the driver runs with the python of the service's data environment
  (environments/service_envs.py: repo2data at the service's version, nilearn, and what the
  operator adds with c.NeuroLibre.data_packages), whose `python3` is first on PATH. That
  environment is built once, belongs to the service and is read-only to fetches (bound
  read-only, owned by the service), so no fetch can change what the next one imports. Such a
  dataset's key includes the environment's identity (its packages and Python).
- any other src (a URL, a DOI, a Git, OSF, Google Drive or S3 link) runs with the service's
  own repo2data and the tools installed with it (datalad, zenodo_get, osf, gdown, aws), as
  before; nothing of the preprint's environment is on PATH.
The data lands where repo2data puts it in server mode, `<data dir>/<projectName>`, and the book
sees it at `data/<projectName>`: where repo2data's `"dataLayout": "neurolibre"` puts it on an
author's machine (next to binder/), so a notebook's own `Repo2Data(...).install()` finds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import shutil
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from sqlalchemy import delete as sql_delete
from sqlalchemy import func, or_, select

from .checks import PROJECT_NAME_RE
from .db import Build, Database, Dataset, Job, JobStatus
from .db.models import build_datasets, utcnow
from .environments.service_envs import ServiceEnvironmentError, ServiceEnvironments
from .errors import Conflict, NotFound
from .jobs import JobFailed
from .safefiles import UnsafeFile, read_confined
from .units import aware, du, duration, iso_utc

if TYPE_CHECKING:
    from .environments.service_envs import ServiceEnvironment
    from .jobs import JobContext
    from .sandbox import Sandbox

KEY_RE = re.compile(r"[0-9a-f]{64}")
STAGING = ".staging"
# how often the staging directory is measured while a fetch runs
POLL_SECONDS = 0.25
STAGE_LENGTH = 64  # jobs.stage is a String(64)

# The data environment's packages: repo2data as the service drives it (the driver below relies
# on its internals) and the fetchers NeuroLibre's templates call in src (nilearn.datasets).
# Pinned: a dataset made by code is keyed by these, so they must name what is installed.
DEFAULT_DATA_PACKAGES = (f"repo2data=={version('repo2data')}", "nilearn==0.14.1")

# repo2data's own dispatch (Repo2DataChild._scan_dl_type), to refuse a src it would ignore
_HTTP = re.compile(r".*?(https?://).*?")
_GIT = re.compile(r".*?\.git$")
_GDRIVE = re.compile(r".*?(drive\.google\.com).*?")
_OSF = re.compile(r".*?(https://osf\.io).*?")
_CODE = re.compile(r".*?(import.*?;).*?")
_S3 = re.compile(r".*?(s3://).*?")
_ZENODO = re.compile(r".*?(10\.\d{4}/zenodo).*?")


class DataError(Exception):
    """A data requirement that cannot be used; the message says where and how to fix it."""


@dataclass(frozen=True)
class DatasetSpec:
    entry: str | None  # the key in a several-dataset file, None for a single one
    project_name: str
    requirement: dict  # the entry as written
    key: str  # sha256 of the canonical JSON of the entry without "dst"

    @property
    def label(self) -> str:
        return self.project_name if self.entry is None else f"{self.entry} ({self.project_name})"

    @property
    def is_code(self) -> bool:
        """Whether repo2data runs src as Python code (`python3 -c src`)."""
        return source_kind(self.requirement["src"]) == "python"


def data_packages(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The data environment's packages: the defaults and the operator's (which replace a
    default of the same name, e.g. another nilearn), or ValueError naming a bad line."""
    chosen: dict[str, str] = {}
    for line in (*DEFAULT_DATA_PACKAGES, *extra):
        try:
            name = canonicalize_name(Requirement(line).name)
        except InvalidRequirement as e:
            raise ValueError(f"c.NeuroLibre.data_packages: {line!r} is not a requirement "
                             f"({e}); write it as in requirements.txt, e.g. 'mylib==1.2'.") from None  # fmt: skip
        chosen[name] = line
    return tuple(chosen.values())


def requirement_key(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "dst"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def source_kind(src: str) -> str | None:
    """What repo2data does with src: the same order as its dispatch; None if it ignores it."""
    if _HTTP.match(src) and not _GIT.match(src) and not _GDRIVE.match(src) and not _OSF.match(src):
        return "url"
    if _GIT.match(src):
        return "datalad"
    if _GDRIVE.match(src):
        return "gdrive"
    if _CODE.match(src):
        return "python"
    if _S3.match(src):
        return "s3"
    if _ZENODO.match(src):
        return "zenodo"
    if _OSF.match(src):
        return "osf"
    return None


def parse_requirement(text: str, file: str = "binder/data_requirement.json") -> list[DatasetSpec]:
    """The datasets a requirement file asks for, or DataError saying what to fix."""
    try:
        data = json.loads(text)
    except ValueError as e:
        where = f" (line {e.lineno}, column {e.colno})" if hasattr(e, "lineno") else ""
        raise DataError(
            f"{file} is not valid JSON{where}: {getattr(e, 'msg', e)}. "
            "Fix the JSON syntax (double quotes, commas, braces)."
        ) from None
    if not isinstance(data, dict) or not data:
        raise DataError(
            f"{file} must be a JSON object describing a dataset, e.g. "
            '{"src": "https://.../data.zip", "projectName": "my-data"}, or an object of such '
            "objects for several datasets."
        )
    # the same rule as the layout check: several datasets are an object of objects
    several = all(isinstance(v, dict) for v in data.values())
    entries: dict[str | None, dict] = dict(data) if several else {None: data}
    specs: list[DatasetSpec] = []
    seen: dict[str, str | None] = {}
    for entry, req in entries.items():
        where = f"{file}, dataset {entry!r}" if entry is not None else file
        src = req.get("src")
        if not isinstance(src, str) or not src.strip():
            raise DataError(
                f"{where}: src is missing. Give src: a URL of a file or archive, a Git (DataLad) "
                "URL, a Zenodo DOI, an OSF or Google Drive link, or Python code that downloads "
                'the data into _dst (e.g. "import mylib; mylib.fetch(_dst)").'
            )
        if source_kind(src) is None:
            raise DataError(
                f"{where}: repo2data does not know how to fetch src {src!r}. Use an http(s) "
                "URL, a Git URL ending in .git, s3://..., a Zenodo DOI (10.5281/zenodo.N), an "
                "OSF or Google Drive link, or Python code with an import statement ending in ';'."
            )
        if source_kind(src) == "url" and _CODE.match(src) and not _HTTP.match(src.split()[0]):
            raise DataError(
                f"{where}: src is Python code with a URL in it, and repo2data takes any src "
                "containing http:// or https:// for a URL to download (it would fetch the code "
                "as an address and fail). Keep the scheme and the host apart in the code, e.g. "
                "url = 'https:' + '//example.org/data.zip'."
            )
        name = req.get("projectName")
        if not isinstance(name, str) or not PROJECT_NAME_RE.fullmatch(name) or ".." in name:
            raise DataError(
                f"{where}: projectName {name!r} is missing or unsafe. Use letters, digits, "
                "'.', '_' or '-' (the data goes to data/<projectName>)."
            )
        if name in seen:
            other = seen[name]
            raise DataError(
                f"{where}: projectName {name!r} is also used by dataset {other!r}; both would "
                "go to data/" + name + ". Give each dataset its own projectName."
            )
        seen[name] = entry
        specs.append(DatasetSpec(entry, name, req, requirement_key(req)))
    return specs


# The driver runs in the confined process, with the service's Python (where repo2data is
# installed). argv: requirement file (this entry only), destination folder, result file.
DRIVER = r"""
import errno, json, os, subprocess, sys, traceback, types

req_path, data_dir, result_path = sys.argv[1:4]
with open(req_path) as f:
    requirement = json.load(f)
dst = os.path.join(data_dir, requirement["projectName"])


def finish(error=None, too_large=False):
    with open(result_path, "w") as f:
        json.dump({"error": error, "too_large": too_large}, f)
    sys.stdout.flush()
    os._exit(1 if error else 0)


import requests
import repo2data.repo2data as r2d

answers = []


class Permanent(Exception):
    pass


def get(url, *args, **kwargs):
    # repo2data retries any answer but 200 three times with 5 s sleeps and then carries on
    # as if it had succeeded: a permanent client error stops at once, every answer is noted
    kwargs.setdefault("timeout", 300)
    r = requests.get(url, *args, **kwargs)
    answers.append(f"HTTP {r.status_code} {r.reason or ''}".strip())
    if 400 <= r.status_code < 500 and r.status_code not in (408, 425, 429):
        raise Permanent(f"{url} answered {answers[-1]}")
    return r


r2d.requests = types.SimpleNamespace(get=get)
try:
    fetcher = r2d.Repo2Data(req_path, server=True)
    fetcher.set_server_dst_folder(data_dir)
    fetcher.install()
except Permanent as e:
    finish(f"the download failed: {e}")
except subprocess.CalledProcessError as e:
    if e.cmd[:2] == ["python3", "-c"]:
        finish(f"the Python code in src failed (exit status {e.returncode}); its output is above")
    finish(f"{e.cmd[0]} failed (exit status {e.returncode}); its output is above")
except FileNotFoundError as e:
    if e.filename and not os.path.isabs(str(e.filename)):
        finish(f"this src needs the program {e.filename!r}, which is not installed in the "
               "environment or on the server")
    traceback.print_exc()
    finish(f"repo2data failed: {e}")
except OSError as e:
    traceback.print_exc()
    finish(f"repo2data failed: {e}", too_large=e.errno == errno.EFBIG)
except Exception as e:
    traceback.print_exc()
    finish(f"repo2data failed: {type(e).__name__}: {e}")

if os.path.islink(dst) or not os.path.isdir(dst):
    finish("repo2data left no data directory")
if not [n for n in os.listdir(dst) if not n.endswith("repo2data_cache_record.json")]:
    if answers:
        said = ", ".join(dict.fromkeys(answers))
        tries = f" ({len(answers)} attempts)" if len(answers) > 1 else ""
        finish(f"no data arrived: {requirement['src']} answered {said}{tries}")
    finish("repo2data fetched nothing: check src")
finish()
"""


class DatasetStore:
    """The shared data store: one directory per requirement key, one row per dataset."""

    def __init__(
        self,
        db: Database,
        root: Path,
        sandbox: Sandbox,
        *,
        environments: ServiceEnvironments | None = None,
        packages: Sequence[str] = DEFAULT_DATA_PACKAGES,
        size_limit: int = 1 << 30,
        time_limit: float = 1800.0,
        python: str = sys.executable,
    ):
        self.db = db
        self.root = Path(root)
        self.sandbox = sandbox
        # where src code runs: the service's data environment, built on first use (by default
        # with the service's other environments, data_dir/service-environments)
        self.environments = environments or ServiceEnvironments(
            self.root.parent / "service-environments", sandbox
        )
        self.packages = tuple(packages)
        self.size_limit = size_limit
        self.time_limit = time_limit
        self.python = python  # the service's: its repo2data fetches every other src
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def keyed(self, spec: DatasetSpec) -> DatasetSpec:
        """spec with its store key: a dataset made by code also depends on the environment
        it ran in, the service's data environment (its packages and Python), never on the
        preprint's: the same src text from any preprint, run with the same fetchers, is the
        same dataset. Changing the packages gives new keys; datasets under the old keys stay
        (listed for admins, deletable once unused)."""
        if not spec.is_code:
            return spec
        ident = self.environments.spec("data", self.packages).prefix.name
        key = hashlib.sha256(f"{spec.key}:{ident}".encode()).hexdigest()
        return replace(spec, key=key)

    # -- paths ---------------------------------------------------------------------------

    def path(self, key: str, project_name: str) -> Path:
        """Where a ready dataset's data is: root/key/project_name."""
        if not KEY_RE.fullmatch(key):
            raise ValueError(f"not a dataset key: {key!r}")
        if not PROJECT_NAME_RE.fullmatch(project_name) or ".." in project_name:
            raise ValueError(f"not a project name: {project_name!r}")
        return self.root / key / project_name

    def _present(self, key: str, project_name: str) -> bool:
        p = self.path(key, project_name)
        return p.is_dir() and not p.is_symlink()

    # -- fetching ------------------------------------------------------------------------

    async def ensure(self, ctx: JobContext, spec: DatasetSpec) -> Dataset:
        """The ready dataset for spec: reused if already fetched, otherwise fetched now."""
        spec = self.keyed(spec)
        async with self._locks[spec.key]:
            await ctx.stage(f"data: {spec.project_name}"[:STAGE_LENGTH])
            async with self.db.session() as s:
                ds = await s.get(Dataset, spec.key)
                if ds is not None and ds.status == "ready":
                    if self._present(spec.key, spec.project_name):
                        ds.last_used_at = utcnow()
                        await s.commit()
                        ctx.say(
                            f"Dataset {spec.label}: the same requirement was fetched "
                            f"{_when(ds.fetched_at)} "
                            f"({human_size(ds.size_bytes or 0)}); reusing it, nothing to download."
                        )
                        return ds
                    ctx.say(f"Dataset {spec.label}: its data is missing from the store; "
                            "fetching it again.")  # fmt: skip
                if ds is None:
                    ds = Dataset(key=spec.key, project_name=spec.project_name,
                                 requirement=spec.requirement)  # fmt: skip
                    s.add(ds)
                ds.status, ds.error, ds.size_bytes, ds.fetched_at = "fetching", None, None, None
                await s.commit()
            try:
                size = await self._fetch(ctx, spec)
            except JobFailed as e:
                await self._set(spec.key, status="failed", error=str(e))
                raise
            except Exception as e:
                await self._set(spec.key, status="failed", error=f"{type(e).__name__}: {e}")
                raise
            now = utcnow()
            await self._set(spec.key, status="ready", size_bytes=size, fetched_at=now,
                            last_used_at=now, error=None)  # fmt: skip
            ctx.say(f"Dataset {spec.label} ready: {human_size(size)}.")
            async with self.db.session() as s:
                return await s.get(Dataset, spec.key, populate_existing=True)

    async def _set(self, key: str, **values) -> None:
        async with self.db.session() as s:
            ds = await s.get(Dataset, key)
            if ds is not None:
                for k, v in values.items():
                    setattr(ds, k, v)
                await s.commit()

    async def _fetch(self, ctx: JobContext, spec: DatasetSpec) -> int:
        name = spec.project_name
        env = await self._data_environment(ctx) if spec.is_code else None
        staging = self.root / STAGING / f"{spec.key}-{secrets.token_hex(4)}"
        data_dir = staging / "data"
        await asyncio.to_thread(data_dir.mkdir, parents=True)
        req_file = staging / "requirement.json"
        req_file.write_text(json.dumps(spec.requirement, indent=1) + "\n")
        result_file = staging / "result.json"
        try:
            code = await self._run(ctx, spec, env, staging,
                                   [str(req_file), str(data_dir), str(result_file)])  # fmt: skip
            # the service's from now on: read-only to the build user and everyone else
            await asyncio.to_thread(self.sandbox.reclaim, staging)
            size = await asyncio.to_thread(du, staging)
            result = _read_result(result_file, staging)
            if result.get("too_large") or size > self.size_limit:
                raise JobFailed(self._too_large(spec))
            if code != 0 or result.get("error"):
                why = result.get("error") or f"repo2data exited with status {code}"
                where = ""
                if env is not None:
                    where = (" src runs with the service's data environment, not the preprint's: "
                             f"it can import {', '.join(env.packages)} and their dependencies "
                             "(the operator adds packages with c.NeuroLibre.data_packages).")  # fmt: skip
                raise JobFailed(f"Fetching dataset {spec.label} failed: {why}. "
                                f"See the data log for details.{where}")  # fmt: skip
            src = data_dir / name
            if src.is_symlink() or not src.is_dir():
                raise JobFailed(f"Fetching dataset {spec.label} failed: repo2data left no "
                                "data directory.")  # fmt: skip
            # only the dataset's own directory goes to the store, by two renames on one disk
            ready = staging / "ready"
            ready.mkdir()
            src.rename(ready / name)
            target = self.root / spec.key
            if target.exists() or target.is_symlink():
                # leftovers of a fetch interrupted before its row said "ready"
                old = staging / "old"
                target.rename(old)
            ready.rename(target)
            return await asyncio.to_thread(du, target)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    def _too_large(self, spec: DatasetSpec) -> str:
        return (
            f"Dataset {spec.label} grew past the size limit of {human_size(self.size_limit)} "
            "(c.NeuroLibre.data_size_limit) and was stopped; nothing was kept. Publish a "
            "smaller dataset, or ask the operator to raise the limit."
        )

    async def _data_environment(self, ctx: JobContext) -> ServiceEnvironment:
        """The service's data environment, built now if this is its first use (once)."""
        try:
            return await self.environments.ensure("data", self.packages, say=ctx.say)
        except ServiceEnvironmentError as e:
            raise JobFailed(f"{e}\nA src that is Python code cannot run until it is built; a "
                            "URL, DOI or repository as src does not need it.") from None  # fmt: skip

    async def _run(self, ctx: JobContext, spec: DatasetSpec, env: ServiceEnvironment | None,
                   staging: Path, args: list[str]) -> int:  # fmt: skip
        if env is None:  # the service's repo2data, and the tools installed with it
            python = Path(self.python)
            tools = {Path(sys.prefix), Path(sys.base_prefix), python.resolve().parent.parent}
        else:  # the data environment's repo2data, python3 and fetchers; read-only
            python = env.bin("python")
            tools = {env.prefix, env.base_prefix}
        readable = sorted(t for t in tools if t != Path("/") and t.exists())
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise JobFailed("The server cannot limit dataset sizes: prlimit (util-linux) is not "
                            "installed. Ask the operator to install util-linux.")  # fmt: skip
        # one file larger than the limit fails at once (EFBIG, or SIGXFSZ for tar and unzip)
        argv = [prlimit, f"--fsize={self.size_limit + 1}", "--",
                str(python), "-I", "-u", "-c", DRIVER, *args]  # fmt: skip
        await asyncio.to_thread(self.sandbox.lend, staging)
        wrapped = self.sandbox.wrap(argv, writable=[staging], readable=readable, cwd=staging)
        environ = self.sandbox.env(
            path_prefix=[str(python.parent)],
            extra={"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"},
        )
        where = (f" in the service's data environment ({env.prefix.name}: "
                 f"{', '.join(env.packages)}), with {env.bin('python3')}") if env else ""  # fmt: skip
        ctx.say(
            f"Fetching dataset {spec.label} with repo2data{where} (size limit "
            f"{human_size(self.size_limit)}, time limit {duration(self.time_limit)})."
        )
        if self.sandbox.confined:
            who = (f"as the unprivileged user {self.sandbox.build_user}"
                   if self.sandbox.switches_user else "without capabilities")  # fmt: skip
            ctx.say(f"repo2data runs confined (bubblewrap): {who}, with resource limits, it "
                    "may write only to its staging directory.")  # fmt: skip
        else:
            ctx.say("!! repo2data runs unconfined (sandbox = 'none').")

        run = asyncio.ensure_future(ctx.run(wrapped, cwd=staging, env=environ))
        too_large = False
        try:
            async with asyncio.timeout(self.time_limit):
                while True:
                    done, _ = await asyncio.wait({run}, timeout=POLL_SECONDS)
                    if done:
                        break
                    if await asyncio.to_thread(du, staging) > self.size_limit:
                        too_large = True
                        break
        except TimeoutError:
            raise JobFailed(
                f"Fetching dataset {spec.label} took longer than the time limit of "
                f"{duration(self.time_limit)} (c.NeuroLibre.data_time_limit) and was stopped."
            ) from None
        finally:
            if not run.done():
                run.cancel()  # kills the process tree
                await asyncio.gather(run, return_exceptions=True)
        if too_large:
            raise JobFailed(self._too_large(spec))
        return run.result()

    # -- administration ------------------------------------------------------------------

    async def recover(self) -> None:
        """At start: drop staging leftovers and mark fetches cut short by a restart failed."""
        await asyncio.to_thread(shutil.rmtree, self.root / STAGING, True)
        async with self.db.session() as s:
            for ds in (await s.scalars(select(Dataset).where(Dataset.status == "fetching"))).all():
                ds.status = "failed"
                ds.error = "Interrupted by a service restart; fetched again when next needed."
            await s.commit()

    async def _users(self, keys: list[str] | None = None) -> dict[str, set[int]]:
        """Dataset key -> preprints using it (a build in progress, or a preprint's latest)."""
        latest = select(func.max(Build.id)).group_by(Build.preprint_id)
        q = (
            select(build_datasets.c.dataset_key, Build.preprint_id)
            .join(Build, Build.id == build_datasets.c.build_id)
            .join(Job, Job.id == Build.job_id)
            .where(or_(Job.status.in_([JobStatus.queued, JobStatus.running]), Build.id.in_(latest)))
        )
        if keys is not None:
            q = q.where(build_datasets.c.dataset_key.in_(keys))
        users: dict[str, set[int]] = defaultdict(set)
        async with self.db.session() as s:
            for key, preprint_id in (await s.execute(q)).all():
                users[key].add(preprint_id)
        return users

    async def list(self) -> list[dict]:
        """Every dataset, most recently used first, with its size, status and use."""
        async with self.db.session() as s:
            rows = (await s.scalars(select(Dataset))).all()
        users = await self._users()
        rows = sorted(rows, key=lambda d: aware(d.last_used_at or d.created_at), reverse=True)
        return [self.to_dict(d, bool(users.get(d.key))) for d in rows]

    async def delete(self, key: str) -> None:
        """Remove an unused dataset's data and row."""
        if not KEY_RE.fullmatch(key):
            raise NotFound(f"No dataset {key!r}.")
        lock = self._locks[key]
        if lock.locked():
            raise Conflict("This dataset is being fetched by a build; try again when it ends.")
        async with lock:
            async with self.db.session() as s:
                ds = await s.get(Dataset, key)
                if ds is None:
                    raise NotFound(f"No dataset {key!r}.")
                await _refuse_if_published(s, ds)
                users = (await self._users([key])).get(key)
                if users:
                    which = ", ".join(str(i) for i in sorted(users))
                    noun = "preprint" if len(users) == 1 else "preprints"
                    raise Conflict(
                        f"Dataset {ds.project_name} is in use by {noun} {which} (by a build in "
                        "progress or a preprint's latest build); it can be deleted once no "
                        "preprint's latest build uses it."
                    )
                # out of the store first (one rename), then the row, then the bytes
                target = self.root / key
                trash = self.root / STAGING / f"deleted-{key}-{secrets.token_hex(4)}"
                if target.exists() or target.is_symlink():
                    trash.parent.mkdir(parents=True, exist_ok=True)
                    target.rename(trash)
                await s.execute(sql_delete(Dataset).where(Dataset.key == key))
                await s.commit()
            await asyncio.to_thread(_remove, trash)

    def to_dict(self, ds: Dataset, in_use: bool) -> dict:
        return {
            "key": ds.key,
            "project_name": ds.project_name,
            "requirement": ds.requirement,
            "status": ds.status,
            "size_bytes": ds.size_bytes,
            "size": human_size(ds.size_bytes) if ds.size_bytes is not None else None,
            "error": ds.error,
            "in_use": in_use,
            "created_at": iso_utc(ds.created_at),
            "fetched_at": iso_utc(ds.fetched_at),
            "last_used_at": iso_utc(ds.last_used_at),
        }


async def _refuse_if_published(s, ds: Dataset) -> None:
    """A published version keeps its data (publishing.py): deleting it is refused."""
    from .db.published import first_version_using

    found = await first_version_using(s, dataset_key=ds.key)
    if found is not None:
        slug, version = found
        raise Conflict(
            f"Dataset {ds.project_name} is part of published version {slug} v{version} "
            f"(p/{slug}/v{version}/): a published version never changes, so its data cannot "
            "be deleted."
        )


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def human_size(n: int) -> str:
    """1073741824 -> "1 GB" (powers of 1024, as the limits are configured)."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _read_result(path: Path, staging: Path) -> dict:
    try:
        data = json.loads(read_confined(path, staging, 1 << 20))
    except (UnsafeFile, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _when(dt: datetime | None) -> str:
    return aware(dt).strftime("on %Y-%m-%d at %H:%M UTC") if dt is not None else "earlier"


__all__ = [
    "DEFAULT_DATA_PACKAGES",
    "DataError",
    "DatasetSpec",
    "DatasetStore",
    "data_packages",
    "human_size",
    "parse_requirement",
    "requirement_key",
    "source_kind",
]
