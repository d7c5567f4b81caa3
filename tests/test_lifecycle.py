"""A service that dies with its hub, and one service per data directory.

The attack (here an accident, as likely in production): JupyterHub is SIGKILLed. Its managed
service kept running with parent 1; each restarted hub's service then failed with "Address
already in use", and each attempt's recovery killed the old instance's running builds, whose
logs then blamed the author's files. The defences: the service notices that its parent is
gone and stops as on SIGTERM (its running jobs stay "running" with a line saying why); an
instance lock on the data directory, taken before anything recovers, so a second service
waits, then gives up with a message, never touching the jobs of a live one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from neurolibre_service.db import Database, Job, JobStatus
from neurolibre_service.jobs import InstanceLock, InstanceLocked, JobQueue
from neurolibre_service.logs import LogStore, Redactor
from neurolibre_service.processes import start_time

from .conftest import follow
from .support.hub import free_port
from .test_environments import marker_processes, slow_package, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

# stands in for JupyterHub: starts the service as the hub does (Popen, a new session, the
# managed service's environment), then waits to be killed
FAKE_HUB = """
import subprocess, sys, time
log = open(sys.argv[1], "ab")
p = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print(p.pid, flush=True)
time.sleep(3600)
"""


def service_argv(data: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "neurolibre_service", f"--NeuroLibre.data_dir={data}",
            f"--NeuroLibre.port={port}", "--NeuroLibre.ip=127.0.0.1", "--NeuroLibre.sandbox=none",
            "--NeuroLibre.config_file=", "--NeuroLibre.instance_wait=1"]  # fmt: skip


def service_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def healthy(port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/services/neurolibre/api/health"
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def test_a_second_process_on_a_data_directory_waits_then_gives_up_and_recovery_needs_the_lock(
    tmp_path,
):
    first, second = InstanceLock(tmp_path), InstanceLock(tmp_path)
    await first.acquire()
    with pytest.raises(InstanceLocked) as e:
        await second.acquire(wait=0.5)
    assert str(e.value) == (
        f"Another NeuroLibre process (pid {os.getpid()}) uses the data directory {tmp_path}; "
        "it did not stop within 0.5 s. Not starting a second one on the same files: stop that "
        "one first."
    )
    # a queue given a lock it does not hold refuses to recover (it would kill others' jobs)
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await db.upgrade()
    queue = JobQueue(db, LogStore(tmp_path / "logs", Redactor()), {}, instance_lock=second)
    with pytest.raises(RuntimeError, match="instance lock"):
        await queue.recover()
    # the holder ends (here: lets go): the waiting one gets it
    first.release()
    await second.acquire(wait=0.5)
    await queue.recover()
    second.release()
    await db.close()


async def test_a_service_whose_hub_dies_stops_and_a_second_one_never_touches_a_live_ones_jobs(
    tmp_path,
):
    data, port = tmp_path / "data", free_port()
    env = service_env()
    hub = subprocess.Popen([sys.executable, "-c", FAKE_HUB, str(tmp_path / "first.log"),
                            *service_argv(data, port)], stdout=subprocess.PIPE,
                           env={**env, "JUPYTERHUB_SERVICE_NAME": "neurolibre"})  # fmt: skip
    build = subprocess.Popen(["sleep", "300"])  # stands in for the first service's build
    service = None
    try:
        service = int(hub.stdout.readline())
        await wait_for(lambda: healthy(port), timeout=120)
        # the first service is running a job (its process: `build`)
        db = Database(f"sqlite:///{data / 'neurolibre.sqlite'}")
        async with db.session() as s:
            job = Job(kind="environment", owner="alice", status=JobStatus.running, attempts=1,
                      pid=build.pid, pid_start=start_time(build.pid))  # fmt: skip
            s.add(job)
            await s.commit()
            job_id = job.id

        # a second service on the same data directory (a restarted hub's) waits, then gives up
        second = subprocess.run(service_argv(data, port), env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 1, second.stderr
        assert (
            f"Another NeuroLibre process (pid {service}) uses the data directory {data}; "
            "it did not stop within 1 s."
        ) in second.stderr
        # ... without recovering anything: the live service's job and its process are intact
        assert build.poll() is None
        async with db.session() as s:
            assert (await s.get(Job, job_id)).status == JobStatus.running
        assert "Address already in use" not in second.stderr

        # the hub is killed: its service notices and stops by itself
        hub.kill()
        hub.wait()
        await wait_for(lambda: not alive(service), timeout=15)
        first_log = (tmp_path / "first.log").read_text()
        assert f"The process that started this service (pid {hub.pid}, its hub) exited" in first_log
        assert "Traceback" not in first_log

        # the next service starts at once on the same port; now that no service is live,
        # its recovery takes the job back (and ends the process it had left)
        third = subprocess.Popen(service_argv(data, port), env=env, cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            await wait_for(lambda: healthy(port), timeout=120)
            await wait_for(lambda: build.poll() is not None, timeout=10)
            log = (data / "logs" / f"job-{job_id}.log").read_text()
            assert "!! The service restarted during this job; it was re-queued." in log
        finally:
            third.terminate()
            _out, err = third.communicate(timeout=60)
        assert "Address already in use" not in err
        assert third.returncode == 0, err
        await db.close()
    finally:
        for p in (hub, build):
            if p.poll() is None:
                p.kill()
                p.wait()
        if service and alive(service):
            os.kill(service, signal.SIGKILL)


def end_what_a_killed_hub_left(hub) -> None:
    """When the test fails: its service and mail sink (by data directory), and its proxy."""
    pids = marker_processes(f"--NeuroLibre.data_dir={hub.service_data}")
    pids += marker_processes(str(hub.data / "mail"))
    try:
        pids.append(int((hub.data / "jupyterhub-proxy.pid").read_text()))
    except (OSError, ValueError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_a_hub_killed_mid_build_takes_its_service_along_and_the_next_hub_runs_the_build_again(
    start_hub, new_repo, pkg_index
):
    hub = start_hub("killed")
    marker = f"nl-hubkill-marker-{time.time_ns()}"
    req = slow_package(pkg_index, f"nl-hubkill-{time.time_ns()}", 8, marker)
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})
    async with hub.token_client("alice") as alice:
        r = await alice.post("environments", json={"name": "outlives-its-hub",
                                                   "repository": str(repo)})  # fmt: skip
        env = r.json()
        await wait_for(lambda: marker_processes(marker))
    service = hub.service_pid()
    seen = hub.log_path.stat().st_size
    hub_pid = hub.proc.pid

    hub.kill(signal.SIGKILL)
    try:
        # the service stops by itself, as on SIGTERM: its build's processes go with it
        await wait_for(lambda: hub.service_pid() is None, timeout=15)
        await wait_for(lambda: not marker_processes(marker), timeout=10)
    except BaseException:
        end_what_a_killed_hub_left(hub)
        raise
    # (the embedded default's other managed service, the aiosmtpd mail sink, does not watch
    # its parent: end the one the killed hub left, or the next hub's fails to bind its port)
    for pid in marker_processes(str(hub.data / "mail")):
        os.kill(pid, signal.SIGKILL)

    hub.start()  # the same data directory and ports
    assert hub.service_pid() not in (None, service)
    async with hub.token_client("alice") as alice:
        lines, status = await follow(alice, env["id"])
        env = (await alice.get(f"environments/{env['id']}")).json()

    text = [t for _, t in lines]
    assert status == "succeeded", text[-20:]
    assert env["status"] == "ready"
    assert env["job"]["attempts"] == 2
    # a true account of what happened, once; nothing blames the author's files
    assert text.count("!! The service stopped while this job ran: its hub exited.") == 1
    assert text.count("!! The service restarted during this job; it was re-queued.") == 1
    assert text.count("==> cloning") == 2
    after = hub.log_path.read_bytes()[seen:].decode(errors="replace")
    assert "Address already in use" not in after
    assert "killed orphan process" not in after
    assert f"The process that started this service (pid {hub_pid}, its hub) exited" in after
