"""Durable jobs: stored in SQL, run by a bounded worker pool, with time limits and cancel.

The database holds every job's state; the in-memory part (running tasks, wake-ups) can be
lost at any time. After a restart, jobs left "running" are re-queued once (their process is
killed first if it survived) and failed after that, with a reason in their log.

Recovery kills processes and re-queues what looks abandoned, so only one service may run on a
data directory: an InstanceLock held for the process's lifetime. A second service waits a
little for it (the one of a killed hub stops by itself) and then gives up with a message.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from .db import Database, Job, JobStatus
from .db.models import utcnow
from .logs import LogChannel, LogStore
from .metrics import Metrics
from .processes import kill_tree, run_streaming
from .units import aware, duration

log = logging.getLogger("neurolibre.jobs")


class JobFailed(Exception):
    """The job ends as failed; the message is shown to its owner."""


class InstanceLocked(RuntimeError):
    """Another live process uses the data directory; the message names it."""


class InstanceLock:
    """One service per data directory: an exclusive flock on DATA/service.lock.

    The kernel drops it when the process ends, however it ends (SIGKILL included), so a stale
    lock file never blocks a start. The descriptor is not inherited by child processes.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / "service.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    async def acquire(self, wait: float = 10.0) -> None:
        """Take the lock, waiting up to `wait` seconds for its holder to end."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise InstanceLocked(
                            f"Another NeuroLibre process (pid {self.holder()}) uses the data "
                            f"directory {self.directory}; it did not stop within {wait:g} s. "
                            "Not starting a second one on the same files: stop that one first."
                        ) from None
                    await asyncio.sleep(0.2)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


@dataclass
class JobContext:
    """What a job's code sees: its log, its stage, and a way to run confined processes."""

    job_id: int
    kind: str
    owner: str
    params: dict
    environment_id: int | None
    log: LogChannel
    queue: JobQueue
    data: dict[str, Any] = field(default_factory=dict)

    def with_log(self, channel: LogChannel) -> JobContext:
        """The same job writing to another log (a pipeline stage's own log)."""
        return replace(self, log=channel)

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.log.write(line)

    async def stage(self, stage: str) -> None:
        self.say(f"==> {stage}")
        await self.queue._update(self.job_id, stage=stage)
        self.log.status({"status": "running", "stage": stage})

    async def run(self, argv: Sequence[str], *, cwd: Path | None = None,
                  env: Mapping[str, str] | None = None) -> int:  # fmt: skip
        async def remember(pid: int, start: int | None) -> None:
            await self.queue._update(self.job_id, pid=pid, pid_start=start)

        try:
            return await run_streaming(argv, on_line=self.log.write, cwd=cwd, env=env,
                                       on_start=remember)  # fmt: skip
        finally:
            await self.queue._update(self.job_id, pid=None, pid_start=None)


Runner = Callable[[JobContext], Awaitable[None]]


class JobQueue:
    def __init__(
        self,
        db: Database,
        logs: LogStore,
        runners: Mapping[str, Runner],
        *,
        concurrency: int = 2,
        time_limit: float = 1800.0,
        max_attempts: int = 2,
        metrics: Metrics | None = None,
        instance_lock: InstanceLock | None = None,
    ):
        self.db = db
        self.logs = logs
        self.runners = dict(runners)
        self.concurrency = concurrency
        self.time_limit = time_limit
        self.max_attempts = max_attempts
        self.metrics = metrics
        # with a lock, recovery refuses to run without it (it would kill another's jobs)
        self.instance_lock = instance_lock
        self._tasks: dict[int, asyncio.Task] = {}
        self._cancelled_by: dict[int, str] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._stopping = False

    @staticmethod
    def log_key(job_id: int) -> str:
        return f"job-{job_id}"

    def channel(self, job_id: int) -> LogChannel:
        return self.logs.channel(self.log_key(job_id))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")
        self._wake.set()

    async def stop(self, reason: str | None = None) -> None:
        """Stop workers; their jobs stay "running" in SQL and are recovered at next start.

        `reason` (why the service stops) goes into the log of each running job, so the log
        tells its owner what happened rather than leaving a cut-off build to be guessed at.
        """
        self._stopping = True
        if self._dispatcher:
            self._dispatcher.cancel()
        if reason:
            for job_id in self._tasks:
                self.channel(job_id).write(f"!! The service stopped while this job ran: {reason}.")
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def recover(self) -> None:
        if self.instance_lock is not None and not self.instance_lock.held:
            raise RuntimeError("job recovery needs the instance lock (another service may be live)")
        async with self.db.session() as s:
            stale = (await s.scalars(select(Job).where(Job.status == JobStatus.running))).all()
            for job in stale:
                if job.pid and kill_tree(job.pid, job.pid_start):
                    log.warning("killed orphan process %s of job %s", job.pid, job.id)
                ch = self.channel(job.id)
                ch.reopen()
                job.pid = job.pid_start = None
                if job.attempts < self.max_attempts:
                    ch.write("!! The service restarted during this job; it was re-queued.")
                    job.status, job.stage, job.started_at = JobStatus.queued, None, None
                else:
                    job.status, job.finished_at = JobStatus.failed, utcnow()
                    job.error = (
                        f"Interrupted by a service restart {job.attempts} times; "
                        "not retried again. Start a new build."
                    )
                    ch.write(f"!! {job.error}")
                    ch.close(job.status.value)
            await s.commit()

    # -- public API ----------------------------------------------------------------------

    async def submit(self, kind: str, owner: str, params: dict | None = None,
                     environment_id: int | None = None, session=None) -> Job:  # fmt: skip
        if kind not in self.runners:
            raise ValueError(f"no runner for job kind {kind!r}")
        job = Job(kind=kind, owner=owner, params=params or {}, environment_id=environment_id,
                  status=JobStatus.queued, attempts=0)  # fmt: skip
        if session is not None:
            session.add(job)
            await session.flush()
        else:
            async with self.db.session() as s:
                s.add(job)
                await s.commit()
        return job

    @property
    def running(self) -> int:
        """How many jobs this process is running now."""
        return len(self._tasks)

    def wake(self) -> None:
        self._wake.set()

    async def cancel(self, job_id: int, by: str) -> bool:
        """Cancel a queued or running job. Returns False if it had already finished."""
        async with self.db.session() as s:
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued)
                .values(status=JobStatus.cancelled, finished_at=utcnow(),
                        error=f"Cancelled by {by} before it started.")
            )  # fmt: skip
            await s.commit()
        if res.rowcount:
            ch = self.channel(job_id)
            ch.write(f"!! Cancelled by {by} before it started.")
            ch.close(JobStatus.cancelled.value)
            self._count(None, JobStatus.cancelled)
            return True
        task = self._tasks.get(job_id)
        if task is None:
            return False
        self._cancelled_by[job_id] = by
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return True

    # -- internals -----------------------------------------------------------------------

    async def _update(self, job_id: int, **values) -> None:
        async with self.db.session() as s:
            await s.execute(update(Job).where(Job.id == job_id).values(**values))
            await s.commit()

    async def _claim(self) -> Job | None:
        async with self.db.session() as s:
            job_id = await s.scalar(
                select(Job.id).where(Job.status == JobStatus.queued).order_by(Job.id).limit(1)
            )
            if job_id is None:
                return None
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued)
                .values(status=JobStatus.running, started_at=utcnow(), stage="starting",
                        attempts=Job.attempts + 1, error=None)
            )  # fmt: skip
            await s.commit()
            if not res.rowcount:
                return None  # taken by someone else
            return await s.get(Job, job_id, populate_existing=True)

    async def _dispatch(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while len(self._tasks) < self.concurrency:
                try:
                    job = await self._claim()
                except Exception:
                    log.exception("cannot claim a job")
                    await asyncio.sleep(1)
                    self._wake.set()
                    break
                if job is None:
                    break
                task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
                self._tasks[job.id] = task
                task.add_done_callback(lambda _t, jid=job.id: self._done(jid))

    def _done(self, job_id: int) -> None:
        self._tasks.pop(job_id, None)
        self._cancelled_by.pop(job_id, None)
        self._wake.set()

    def _count(self, kind: str | None, status: JobStatus, started: datetime | None = None) -> None:
        if self.metrics:
            self.metrics.jobs.labels(kind=kind or "any", status=status.value).inc()
            if started is not None:
                self.metrics.job_seconds.labels(kind=kind or "any").observe(
                    (utcnow() - aware(started)).total_seconds()
                )

    async def _execute(self, job: Job) -> None:
        ch = self.channel(job.id)
        ch.reopen()
        ctx = JobContext(job.id, job.kind, job.owner, dict(job.params), job.environment_id,
                         ch, self)  # fmt: skip
        ch.status({"status": "running", "stage": "starting"})
        ch.write(f"==> job {job.id} ({job.kind}) started, attempt {job.attempts}")
        started = time.monotonic()
        error: str | None = None
        try:
            async with asyncio.timeout(self.time_limit):
                await self.runners[job.kind](ctx)
            status = JobStatus.succeeded
        except JobFailed as e:
            status, error = JobStatus.failed, str(e)
        except TimeoutError:
            status = JobStatus.failed
            error = f"Stopped: the time limit of {duration(self.time_limit)} was exceeded."
        except asyncio.CancelledError:
            by = self._cancelled_by.get(job.id)
            if by is None:
                raise  # service shutting down: left "running" for recovery
            status, error = JobStatus.cancelled, f"Cancelled by {by}."
        except Exception as e:  # a bug of ours, not the user's: say so
            log.exception("job %s crashed", job.id)
            status, error = JobStatus.failed, f"Internal error: {type(e).__name__}: {e}"
        elapsed = time.monotonic() - started
        if error:
            ch.write(f"!! {error}")
        ch.write(f"==> {status.value} after {elapsed:.1f} s")
        await self._update(job.id, status=status, error=error, finished_at=utcnow(),
                           stage=None, pid=None, pid_start=None)  # fmt: skip
        ch.close(status.value)
        self._count(job.kind, status, job.started_at)
        finish = ctx.data.get("on_finish")
        if finish is not None:
            await finish(status)
