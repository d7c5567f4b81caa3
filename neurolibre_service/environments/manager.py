"""Environments for users: create, list, rebuild, cancel, delete, and the build job itself."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from .. import sources
from ..db import (
    Build,
    Database,
    Environment,
    Job,
    JobStatus,
    PublishedVersion,
    Runtime,
)
from ..db.published import first_version_using
from ..errors import Conflict, NotFound, UserError
from ..jobs import JobContext, JobFailed, JobQueue
from ..units import iso_utc
from .base import Builder
from .runtime import RuntimeError_, find_runtime

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MEM_RE = re.compile(r"\d+(\.\d+)?[KMGT]?", re.IGNORECASE)
JOB_KIND = "environment"
# what a page shows for the latest build job's state
DISPLAY_STATUS = {
    JobStatus.queued: "queued",
    JobStatus.running: "building",
    JobStatus.succeeded: "ready",
    JobStatus.failed: "failed",
    JobStatus.cancelled: "cancelled",
}


def _status(job: Job | None, runtime: Runtime | None) -> str:
    if job is None:
        return "new"
    if job.status == JobStatus.succeeded and runtime is None:
        return "missing"
    return DISPLAY_STATUS[job.status]


class EnvironmentManager:
    def __init__(self, db: Database, queue: JobQueue, builder: Builder, *,
                 policy: sources.RepoPolicy, checkouts_dir: Path,
                 machine_profiles: Sequence[dict], default_cpu: float | None,
                 default_memory: str | None, max_cpu: float | None = None):  # fmt: skip
        self.db = db
        self.queue = queue
        self.builder = builder
        self.policy = policy
        self.checkouts_dir = checkouts_dir
        self.profiles = {p["name"]: p for p in machine_profiles}
        self.default_cpu = default_cpu
        self.default_memory = default_memory
        self.max_cpu = max_cpu
        self._key_locks: dict[str, asyncio.Lock] = {}
        queue.runners[JOB_KIND] = self.run_build

    # -- queries -------------------------------------------------------------------------

    def _listing(self):
        latest = (
            select(func.max(Job.id))
            .where(Job.environment_id == Environment.id)
            .correlate(Environment)
            .scalar_subquery()
        )
        return select(Environment, Job).outerjoin(Job, Job.id == latest)

    async def list(self, user: str, admin: bool, *, limit: int = 100,
                   offset: int = 0) -> tuple[list[dict], int]:  # fmt: skip
        """One page of environments, newest first, and how many there are in all."""
        mine = [] if admin else [Environment.owner == user]
        stmt = self._listing().where(*mine).order_by(Environment.id.desc())
        async with self.db.session() as s:
            total = await s.scalar(select(func.count(Environment.id)).where(*mine))
            rows = (await s.execute(stmt.limit(limit).offset(offset))).all()
        return [self.to_dict(env, job) for env, job in rows], total or 0

    async def get(self, env_id: int, user: str, admin: bool) -> tuple[Environment, Job | None]:
        """The environment and its latest job; someone else's is reported as not found."""
        async with self.db.session() as s:
            row = (await s.execute(self._listing().where(Environment.id == env_id))).first()
        if row is None or (not admin and row[0].owner != user):
            raise NotFound(f"No environment {env_id}.")
        return row[0], row[1]

    def to_dict(self, env: Environment, job: Job | None) -> dict[str, Any]:
        rt = env.runtime
        return {
            "id": env.id,
            "name": env.name,
            "owner": env.owner,
            "repository": env.repo_url,
            "ref": env.ref,
            "commit": env.commit_sha,
            "status": _status(job, rt),
            "stage": job.stage if job else None,
            "error": (job.error if job else None) if _status(job, rt) != "missing" else (
                "Its built runtime is gone (the image or virtual environment was removed "
                "outside NeuroLibre); rebuild it."),
            "profile": env.profile,
            "cpu_limit": env.cpu_limit,
            "mem_limit": env.mem_limit,
            "created_at": iso_utc(env.created_at),
            "runtime": None if rt is None else {
                "key": rt.key, "backend": rt.backend, "python_version": rt.python_version,
                "size_bytes": rt.size_bytes,
            },
            "job": None if job is None else {
                "id": job.id, "status": job.status.value, "attempts": job.attempts,
                "created_at": iso_utc(job.created_at),
                "started_at": iso_utc(job.started_at),
                "finished_at": iso_utc(job.finished_at),
            },
        }  # fmt: skip

    # -- changes -------------------------------------------------------------------------

    def _limits(
        self, profile: str | None, cpu: Any, memory: Any
    ) -> tuple[float | None, str | None]:
        if profile:
            if profile not in self.profiles:
                names = ", ".join(self.profiles) or "none are configured"
                raise UserError(f"Unknown machine profile {profile!r} (choose one of: {names}).")
            p = self.profiles[profile]
            return p.get("cpu"), p.get("memory")
        if self.profiles:
            raise UserError("Choose a machine profile: " + ", ".join(self.profiles) + ".")
        try:
            cpu = float(cpu) if cpu not in (None, "") else self.default_cpu
        except (TypeError, ValueError):
            raise UserError(f"CPU limit {cpu!r} is not a number.") from None
        if cpu is not None and (cpu <= 0 or (self.max_cpu and cpu > self.max_cpu)):
            raise UserError(f"CPU limit must be above 0 and at most {self.max_cpu or 'the host'}.")
        memory = str(memory).strip() if memory not in (None, "") else self.default_memory
        if memory is not None and not MEM_RE.fullmatch(memory):
            raise UserError(f"Memory limit {memory!r} is not a size such as 512M or 2G.")
        return cpu, memory

    async def create(self, owner: str, *, name: str, repository: str, ref: str = "HEAD",
                     profile: str | None = None, cpu_limit: Any = None,
                     mem_limit: Any = None) -> dict:  # fmt: skip
        name = (name or "").strip()
        if not NAME_RE.fullmatch(name):
            raise UserError(
                "The name must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit."
            )
        try:
            url = sources.validate_url(repository, self.policy)
            ref = sources.validate_ref(ref)
            cpu, mem = self._limits(profile, cpu_limit, mem_limit)
            commit = await sources.resolve_ref(url, ref, self.policy)
        except sources.SourceError as e:
            raise UserError(str(e)) from None
        async with self.db.session() as s:
            taken = await s.scalar(
                select(Environment.id).where(Environment.owner == owner, Environment.name == name)
            )
            if taken:
                raise Conflict(f"You already have an environment named {name!r}.")
            env = Environment(name=name, owner=owner, repo_url=url, ref=ref, commit_sha=commit,
                              profile=profile or None, cpu_limit=cpu, mem_limit=mem)  # fmt: skip
            s.add(env)
            await s.flush()
            await self.queue.submit(JOB_KIND, owner, {"commit": commit}, env.id, session=s)
            await s.commit()
        self.queue.wake()
        return self.to_dict(*await self.get(env.id, owner, True))

    async def rebuild(self, env_id: int, user: str, admin: bool) -> dict:
        env, job = await self.get(env_id, user, admin)
        await self._refuse_if_published(env, "rebuilt")
        if job and not job.status.finished:
            raise Conflict("This environment is already being built; cancel it first.")
        try:
            commit = await sources.resolve_ref(env.repo_url, env.ref, self.policy)
        except sources.SourceError as e:
            raise UserError(str(e)) from None
        async with self.db.session() as s:
            env = await s.get(Environment, env_id)
            env.commit_sha = commit
            job = await self.queue.submit(JOB_KIND, user, {"commit": commit}, env.id, session=s)
            await s.commit()
        self.queue.wake()
        return self.to_dict(*await self.get(env_id, user, admin))

    async def cancel(self, env_id: int, user: str, admin: bool) -> dict:
        _env, job = await self.get(env_id, user, admin)
        if job is None or job.status.finished:
            raise Conflict("This environment has no build to cancel.")
        await self.queue.cancel(job.id, by=user)
        return self.to_dict(*await self.get(env_id, user, admin))

    async def delete(self, env_id: int, user: str, admin: bool,
                     stop_servers: Callable[[Environment], Awaitable[Any]] | None = None) -> Any:  # fmt: skip
        """Delete an environment, its builds' logs, and its runtime if nothing else uses it.

        `stop_servers(env)` runs once the row is gone (the spawner can no longer start a server
        on it) and before the runtime is removed (under servers still running on it); what it
        returns is returned.
        """
        env, job = await self.get(env_id, user, admin)
        await self._refuse_if_published(env, "deleted")
        if job and not job.status.finished:
            await self.queue.cancel(job.id, by=user)
        async with self.db.session() as s:
            job_ids = (await s.scalars(select(Job.id).where(Job.environment_id == env_id))).all()
            row = await s.get(Environment, env_id)
            if row is None:  # deleted meanwhile by another request
                raise NotFound(f"No environment {env_id}.")
            await s.delete(row)
            await s.commit()
        outcome = await stop_servers(env) if stop_servers is not None else None
        for jid in job_ids:
            self.queue.logs.remove(self.queue.log_key(jid))
        if env.runtime_key:
            await self._collect(env.runtime_key)
        return outcome

    async def _refuse_if_published(self, env: Environment, what: str) -> None:
        """A published version launches on its environment: it stays as it is (publishing.py)."""
        async with self.db.session() as s:
            found = await first_version_using(s, environment_id=env.id)
        if found is not None:
            slug, version = found
            raise Conflict(
                f"Environment {env.id} ({env.name}) is the environment of published version "
                f"{slug} v{version} (p/{slug}/v{version}/): a published version never changes, "
                f"so it cannot be {what}."
            )

    async def _collect(self, key: str) -> None:
        """Remove a runtime no environment uses any more."""
        async with self._key_lock(key), self.db.session() as s:
            used = await s.scalar(select(func.count()).where(Environment.runtime_key == key))
            used = used or await s.scalar(select(func.count()).where(Build.runtime_key == key))
            # a published version keeps its runtime (publishing.py)
            used = used or await s.scalar(
                select(func.count()).where(PublishedVersion.runtime_key == key)
            )
            rt = await s.get(Runtime, key)
            if used or rt is None:
                return
            await self.builder.remove(rt.location)
            await s.delete(rt)
            await s.commit()

    async def reconcile(self) -> list[str]:
        """At start: forget runtimes whose image or directory disappeared behind our back.

        Their environments then show as "missing" (rebuild them) instead of failing at launch.
        """
        async with self.db.session() as s:
            runtimes = (await s.scalars(select(Runtime))).all()
        gone = []
        for rt in runtimes:
            if rt.backend != self.builder.backend:
                continue  # built by another backend: not ours to judge
            async with self._key_lock(rt.key):
                if await self.builder.exists(rt.location):
                    continue
                async with self.db.session() as s:
                    row = await s.get(Runtime, rt.key)
                    if row is not None:
                        await s.delete(row)
                        await s.commit()
                gone.append(rt.location)
        return gone

    def _key_lock(self, key: str) -> asyncio.Lock:
        return self._key_locks.setdefault(key, asyncio.Lock())

    # -- the build job -------------------------------------------------------------------

    async def run_build(self, ctx: JobContext) -> None:
        async with self.db.session() as s:
            env = await s.get(Environment, ctx.environment_id)
        if env is None:
            raise JobFailed("The environment was deleted.")
        commit = ctx.params["commit"]
        ctx.say(f"Repository {env.repo_url}, {env.ref} = commit {commit}")
        # what a builder may record about the first use of the runtime (image labels)
        ctx.data["origin"] = {"repository": env.repo_url, "commit": commit,
                              "environment-id": env.id, "environment-name": env.name,
                              "cpu-limit": env.cpu_limit, "memory-limit": env.mem_limit}  # fmt: skip
        dest = self.checkouts_dir / f"job-{ctx.job_id}"
        shutil.rmtree(dest, ignore_errors=True)
        try:
            await ctx.stage("cloning")
            try:
                await sources.checkout(env.repo_url, commit, dest, self.policy)
            except sources.SourceError as e:
                raise JobFailed(str(e)) from None
            old = None

            async def attach(key: str) -> None:
                nonlocal old
                async with self.db.session() as s:
                    env = await s.get(Environment, ctx.environment_id)
                    if env is None:
                        raise JobFailed("The environment was deleted during its build.")
                    old, env.runtime_key = env.runtime_key, key
                    await s.commit()

            key = await self.ensure_runtime(ctx, dest, attach)
            if old and old != key:
                await self._collect(old)
        finally:
            await asyncio.to_thread(shutil.rmtree, dest, True)

    async def ensure_runtime(self, ctx: JobContext, checkout: Path,
                             attach: Callable[[str], Awaitable[None]]) -> str:  # fmt: skip
        """The runtime key of a checkout's runtime files, built now unless built before.

        Shared by environment builds and preprint builds, so an unchanged runtime is never
        rebuilt, whichever asked first. `attach(key)` records the user of the runtime while
        the key's lock is held, so a concurrent clean-up cannot remove it in between.
        """
        try:
            runtime = find_runtime(checkout)
            ctx.say(f"Runtime files ({runtime.label}): "
                    + (", ".join(sorted(runtime.files)) or "none, a default environment"))  # fmt: skip
            recipe = await self.builder.recipe(runtime)
            if self.builder.per_owner:
                recipe = {**recipe, "owner": ctx.owner}
        except RuntimeError_ as e:
            raise JobFailed(str(e)) from None
        key = runtime.digest(recipe)
        ctx.say(f"Runtime key {key[:16]} ({self.builder.backend} builder)")
        async with self._key_lock(key):
            async with self.db.session() as s:
                rt = await s.get(Runtime, key)
            if rt is not None and await self.builder.exists(rt.location):
                ctx.say(f"Reusing the environment built earlier from identical runtime files "
                        f"({rt.location}); nothing to build.")  # fmt: skip
            else:
                built = await self.builder.build(ctx, runtime, key)
                async with self.db.session() as s:
                    rt = await s.get(Runtime, key) or Runtime(key=key)
                    rt.backend, rt.location = self.builder.backend, built.location
                    rt.python_version, rt.size_bytes = built.python_version, built.size_bytes
                    s.add(rt)
                    await s.commit()
            await attach(key)
        return key

    async def runtime(self, key: str) -> Runtime | None:
        async with self.db.session() as s:
            return await s.get(Runtime, key)
