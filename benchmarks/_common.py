"""Shared parts of the benchmarks: a real hub with the service (the test helpers), SSE reading,
percentiles, and a small table printer. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.conftest import hub_args  # noqa: E402
from tests.support.hub import Hub  # noqa: E402
from tests.support.pkgindex import PackageIndex, book_wheels, cache_dir, server_wheels  # noqa: E402
from tests.support.repos import make_repo  # noqa: E402

__all__ = ["REPO", "Hub", "PackageIndex", "hub_args", "make_repo"]


def require_tools() -> None:
    missing = [t for t in ("bwrap", "configurable-http-proxy", "git") if not shutil.which(t)]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (see scripts/install.sh)")


@contextlib.contextmanager
def workspace(keep: bool = False) -> Iterator[Path]:
    """A temporary directory for hubs, repositories and sdists; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="nl-bench-"))
    try:
        yield root
    finally:
        if keep:
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def package_index(root: Path) -> Iterator[PackageIndex]:
    index = PackageIndex([server_wheels(cache_dir()), book_wheels(cache_dir())])
    index.sdists = root / "sdists"
    try:
        yield index
    finally:
        index.close()


@contextlib.contextmanager
def running_hub(root: Path, index: PackageIndex, repos: Path, name: str = "hub",
                **traits) -> Iterator[Hub]:  # fmt: skip
    hub = Hub(root, name=name, service_args=hub_args(index, repos, **traits))
    try:
        hub.start(timeout=120)
        yield hub
    finally:
        hub.stop()


def service_url(hub: Hub) -> str:
    """The service's own address (behind the hub's proxy), read from its environment."""
    pid = hub.service_pid()
    if pid is None:
        raise RuntimeError("service process not found")
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in env:
        if item.startswith(b"JUPYTERHUB_SERVICE_URL="):
            return item.split(b"=", 1)[1].decode().rstrip("/")
    raise RuntimeError("JUPYTERHUB_SERVICE_URL not in the service's environment")


async def sse_events(client: httpx.AsyncClient, url: str, *, timeout: float = 600,
                     headers: dict | None = None) -> AsyncIterator[tuple[str, str, str | None]]:  # fmt: skip
    """Yield (event, data, id) of a server-sent event stream, as each event completes."""
    hdrs = {"Accept": "text/event-stream", **(headers or {})}
    event: dict[str, str] = {}
    async with client.stream("GET", url, headers=hdrs, timeout=timeout) as r:
        if r.status_code != 200:
            raise RuntimeError(f"GET {url}: {r.status_code} {await r.aread()!r}")
        async for raw in r.aiter_lines():
            if raw:
                key, _, value = raw.partition(":")
                event[key] = value[1:] if value.startswith(" ") else value
                continue
            if "data" in event:
                yield event.get("event", "message"), event["data"], event.get("id")
            event = {}


SANDBOXES = ("bwrap", "none")


def sandbox_order(choice: str, rep: int) -> list[str]:
    """The sandboxes one repetition runs: one, or both alternating which goes first (so a
    drift in the machine's load does not always favour the same one)."""
    if choice != "both":
        return [choice]
    return list(SANDBOXES) if rep % 2 == 0 else list(reversed(SANDBOXES))


def load() -> str:
    """The load averages (1, 5, 15 min) and the number of CPUs, for the report."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return f"load {one} {five} {fifteen} on {os.cpu_count()} CPUs"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def compare_rows(metrics: list[tuple[str, list[float], list[float]]]) -> list[list]:
    """Rows of a bwrap / none table: each metric with its per-repetition values under each
    sandbox (index i of both lists from the same repetition, run back to back)."""
    rows = []
    for name, confined, bare in metrics:
        pairs = [p for c, b in zip(confined, bare, strict=True) if (p := ratio(c, b)) == p]
        rows.append([name, len(pairs), median(confined), median(bare),
                     ratio(median(confined), median(bare)), median(pairs),
                     ", ".join(f"{p:.2f}" for p in pairs)])  # fmt: skip
    return rows


COMPARE_HEADERS = ["what", "pairs", "bwrap median s", "none median s", "bwrap/none (medians)",
                   "bwrap/none (median of pairs)", "per pair"]  # fmt: skip


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def populate(db_path: Path, n_envs: int, user_envs: int, users: int = 500,
             runtimes: int = 50) -> None:  # fmt: skip
    """Insert environments, each with one finished build job, into the service's SQLite DB.

    `user_envs` of them belong to alice, the rest to `users` other users; they share
    `runtimes` runtimes. Ids continue after the rows already there.
    """
    from sqlalchemy import create_engine, func, insert, select

    from neurolibre_service.db.models import Environment, Job, JobStatus, Runtime

    engine = create_engine(f"sqlite:///{db_path}")
    with engine.connect() as conn:
        first = 1 + max(conn.scalar(select(func.max(Environment.id))) or 0,
                        conn.scalar(select(func.max(Job.id))) or 0)  # fmt: skip
    now = datetime.now(UTC)
    rt_rows = [
        {"key": f"{first:032x}{i:032x}", "backend": "local", "location": f"/nonexistent/env{i}",
         "python_version": "3.11", "size_bytes": 400_000_000 + i, "created_at": now}
        for i in range(runtimes)
    ]  # fmt: skip
    env_rows, job_rows = [], []
    for i in range(first, first + n_envs):
        owner = "alice" if i < first + user_envs else f"user{i % users:04d}"
        created = now - timedelta(minutes=first + n_envs - i)
        env_rows.append({
            "id": i, "name": f"paper-{i}", "owner": owner,
            "repo_url": f"https://github.com/example-lab/paper-{i}.git", "ref": "main",
            "commit_sha": f"{i:040x}", "profile": None, "cpu_limit": 2.0, "mem_limit": "4G",
            "runtime_key": rt_rows[i % runtimes]["key"], "created_at": created,
        })  # fmt: skip
        job_rows.append({
            "id": i, "kind": "environment", "owner": owner, "status": JobStatus.succeeded,
            "environment_id": i, "stage": None, "error": None, "params": {"commit": f"{i:040x}"},
            "attempts": 1, "pid": None, "pid_start": None, "created_at": created,
            "started_at": created + timedelta(seconds=1),
            "finished_at": created + timedelta(seconds=90),
        })  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(Runtime), rt_rows)
        conn.execute(insert(Environment), env_rows)
        conn.execute(insert(Job), job_rows)
    engine.dispose()
