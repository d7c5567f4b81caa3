"""Durable jobs: time limits, service restarts mid-build, and PostgreSQL as the store."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import build, follow
from .test_environments import marker_processes, slow_package, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_build_past_the_time_limit_is_stopped_with_its_processes(
    start_hub, new_repo, pkg_index
):
    hub = start_hub("limited", build_time_limit=6)
    marker = f"nl-timeout-marker-{time.time_ns()}"
    req = slow_package(pkg_index, f"nl-forever-{time.time_ns()}", 900, marker)
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})
    async with hub.token_client("alice") as alice:
        env, log = await build(alice, "forever", repo)

    assert env["status"] == "failed"
    assert env["error"] == "Stopped: the time limit of 6 seconds was exceeded."
    assert log[-2] == "!! Stopped: the time limit of 6 seconds was exceeded."
    await wait_for(lambda: not marker_processes(marker), timeout=10)


async def test_a_service_restart_mid_build_requeues_the_job_and_leaves_no_orphan(
    start_hub, new_repo, pkg_index
):
    hub = start_hub("restarted")
    marker = f"nl-restart-marker-{time.time_ns()}"
    req = slow_package(pkg_index, f"nl-restart-{time.time_ns()}", 8, marker)
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})
    async with hub.token_client("alice") as alice:
        env = (await alice.post("environments", json={"name": "survivor",
                                                      "repository": str(repo)})).json()  # fmt: skip
        await wait_for(lambda: marker_processes(marker))
        pid = hub.service_pid()
        os.kill(pid, signal.SIGKILL)  # a crash: no chance to clean up

        # the kernel kills the build with its parent, so nothing is left behind ...
        await wait_for(lambda: not marker_processes(marker), timeout=10)
        # ... and the hub starts the service again (it polls its services every 30 s)
        await wait_for(lambda: hub.service_pid() not in (None, pid), timeout=90)
        hub.wait_healthy(60)
        lines, status = await follow(alice, env["id"])
        env = (await alice.get(f"environments/{env['id']}")).json()

    text = [t for _, t in lines]
    assert status == "succeeded"
    assert env["status"] == "ready"
    assert env["job"]["attempts"] == 2
    assert "!! The service restarted during this job; it was re-queued." in text
    assert text.count("==> cloning") == 2
    # the finished build's namespace took its leftover child process with it
    assert not marker_processes(marker)


async def test_a_job_interrupted_too_often_fails_with_a_reason(tmp_path):
    """Recovery straight on the store: a job already tried max_attempts times is not retried."""
    from neurolibre_service.db import Database, Job, JobStatus
    from neurolibre_service.jobs import JobQueue
    from neurolibre_service.logs import LogStore, Redactor

    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await db.upgrade()
    async with db.session() as s:
        s.add_all([Job(kind="environment", owner="a", status=JobStatus.running, attempts=1,
                       pid=2**22 + 7, pid_start=1),
                   Job(kind="environment", owner="a", status=JobStatus.running, attempts=2)])  # fmt: skip
        await s.commit()
    logs = LogStore(tmp_path / "logs", Redactor())
    queue = JobQueue(db, logs, {"environment": None}, max_attempts=2)
    await queue.recover()
    async with db.session() as s:
        first, second = (await s.get(Job, 1)), (await s.get(Job, 2))
    assert first.status == JobStatus.queued and first.pid is None
    assert second.status == JobStatus.failed
    assert second.error.startswith("Interrupted by a service restart 2 times")
    assert "re-queued" in (tmp_path / "logs" / "job-1.log").read_text()
    await db.close()


async def test_the_service_runs_on_postgresql(start_hub, postgres, new_repo, pkg_index):
    url = postgres.create_database(f"nl_{time.time_ns()}")
    hub = start_hub("pg", db_url=url)
    req = pkg_index.add_sdist(pkg_index.sdists, f"nl-pg-{time.time_ns()}", "1.0", "")
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})
    async with hub.token_client("alice") as alice:
        env, _ = await build(alice, "on-postgres", repo)
        assert env["status"] == "ready"
        r = await alice.get("health")
        assert r.json()["database"] is True
    # the service's data directory has no SQLite database: the rows are in PostgreSQL
    assert not (hub.service_data / "neurolibre.sqlite").exists()
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        names = [r["name"] for r in await conn.fetch("SELECT name FROM environments")]
        status = await conn.fetchval("SELECT status FROM jobs WHERE environment_id = $1",
                                     env["id"])  # fmt: skip
    finally:
        await conn.close()
    assert names == ["on-postgres"]
    assert status == "succeeded"
