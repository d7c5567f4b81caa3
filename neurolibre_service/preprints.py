"""Preprints and their builds: submit, list, get, rebuild, cancel (the pipeline runs them)."""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from . import checks, sources
from .checks_runner import CheckRunner
from .db import Build, Database, Job, Preprint
from .errors import Conflict, NotFound, UserError
from .jobs import JobQueue
from .units import iso_utc

JOB_KIND = "preprint"
STAGES = ("check", "environment", "data", "book")
# stages with their own log; the check and the summary go to the job's main log
LOGGED_STAGES = ("environment", "data", "book")
EMAIL_RE = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")


def stage_log_key(job_id: int, stage: str | None) -> str:
    return f"job-{job_id}" if stage in (None, "main", "check") else f"job-{job_id}-{stage}"


class PreprintManager:
    def __init__(self, db: Database, queue: JobQueue, *, policy: sources.RepoPolicy,
                 checkouts_dir: Path, builds_dir: Path, datasets_root: Path,
                 checker: CheckRunner | None = None):  # fmt: skip
        self.db = db
        # the layout check runs in a child process (confined, time-limited), never in the loop
        self.checker = checker or CheckRunner()
        self.queue = queue
        self.policy = policy
        self.checkouts_dir = checkouts_dir
        self.builds_dir = builds_dir
        self.datasets_root = datasets_root

    # -- checks without a build ------------------------------------------------------------

    async def check(self, repository: str, ref: str = "HEAD") -> dict:
        """The layout checks of a repository at a ref (what `neurolibre check URL` prints)."""
        try:
            url = sources.validate_url(repository, self.policy)
            ref = sources.validate_ref(ref or "HEAD")
            commit = await sources.resolve_ref(url, ref, self.policy)
            with tempfile.TemporaryDirectory(dir=self.checkouts_dir) as tmp:
                await sources.checkout(url, commit, Path(tmp) / "repo", self.policy)
                findings = (await self.checker.run(Path(tmp) / "repo", url)).findings
        except sources.SourceError as e:
            raise UserError(str(e)) from None
        return {
            "repository": url,
            "ref": ref,
            "commit": commit,
            "errors": sum(f.level == checks.ERROR for f in findings),
            "findings": [asdict(f) for f in findings],
        }

    # -- queries ---------------------------------------------------------------------------

    async def list(self, user: str, admin: bool, *, limit: int = 100,
                   offset: int = 0) -> tuple[list[dict], int]:  # fmt: skip
        mine = [] if admin else [Preprint.owner == user]
        latest = (
            select(func.max(Build.id))
            .where(Build.preprint_id == Preprint.id)
            .correlate(Preprint)
            .scalar_subquery()
        )
        stmt = (
            select(Preprint, Build)
            .outerjoin(Build, Build.id == latest)
            .where(*mine)
            .order_by(Preprint.id.desc())
        )
        async with self.db.session() as s:
            total = await s.scalar(select(func.count(Preprint.id)).where(*mine))
            rows = (await s.execute(stmt.limit(limit).offset(offset))).unique().all()
        return [self.to_dict(p, b) for p, b in rows], total or 0

    async def get(self, preprint_id: int, user: str, admin: bool) -> tuple[Preprint, list[Build]]:
        async with self.db.session() as s:
            p = await s.get(Preprint, preprint_id)
            if p is None or (not admin and p.owner != user):
                raise NotFound(f"No preprint {preprint_id}.")
            builds = (
                (
                    await s.scalars(
                        select(Build).where(Build.preprint_id == p.id).order_by(Build.id.desc())
                    )
                )
                .unique()
                .all()
            )
        return p, list(builds)

    async def get_build(self, build_id: int, user: str, admin: bool) -> tuple[Preprint, Build]:
        async with self.db.session() as s:
            b = await s.get(Build, build_id)
            p = await s.get(Preprint, b.preprint_id) if b else None
        if b is None or p is None or (not admin and p.owner != user):
            raise NotFound(f"No build {build_id}.")
        return p, b

    async def latest_preview(self, preprint_id: int, user: str, admin: bool) -> Build:
        _p, builds = await self.get(preprint_id, user, admin)
        for b in builds:
            if b.job.status.value == "succeeded" and self.html_dir(b.id).is_dir():
                return b
        raise NotFound("This preprint has no successful build to preview yet.")

    async def datasets_for(self, env) -> list[dict]:
        """The datasets a server on this environment gets (read-only): those of the owner's
        latest good build of the same repository on the same runtime."""
        async with self.db.session() as s:
            builds = (
                await s.scalars(
                    select(Build).join(Preprint, Preprint.id == Build.preprint_id)
                    .join(Job, Job.id == Build.job_id)
                    .where(Preprint.owner == env.owner, Preprint.repo_url == env.repo_url,
                           Build.runtime_key == env.runtime_key, Job.status == "succeeded")
                    .order_by(Build.id.desc()).limit(1)
                )
            ).unique().all()  # fmt: skip
        if not builds:
            return []
        return [{"project_name": d.project_name, "path": str(self.datasets_root / d.key /
                                                            d.project_name)}
                for d in builds[0].datasets if d.status == "ready"]  # fmt: skip

    def html_dir(self, build_id: int) -> Path:
        return self.builds_dir / str(build_id) / "html"

    def to_dict(self, p: Preprint, latest: Build | None = None,
                builds: list[Build] | None = None) -> dict[str, Any]:  # fmt: skip
        d: dict[str, Any] = {
            "id": p.id,
            "owner": p.owner,
            "repository": p.repo_url,
            "ref": p.ref,
            "title": p.title,
            "email": p.email,
            "created_at": iso_utc(p.created_at),
        }
        if builds is not None:
            d["builds"] = [self.build_dict(b, p) for b in builds]
            latest = builds[0] if builds else None
        d["latest_build"] = self.build_dict(latest, p) if latest else None
        preview = next((b for b in builds or [latest] if b and b.job.status.value == "succeeded"),
                       None)  # fmt: skip
        d["preview_url"] = f"preprints/{p.id}/preview/" if preview else None
        return d

    def build_dict(self, b: Build, p: Preprint) -> dict[str, Any]:
        job = b.job
        return {
            "id": b.id,
            "preprint": p.id,
            "ref": b.ref,
            "commit": b.commit_sha,
            "status": job.status.value,
            "stage": job.stage,
            "error": job.error,
            "stages": {name: b.stages.get(name, "pending") for name in STAGES},
            "failed_stage": b.failed_stage,
            "findings": b.findings,
            "runtime_key": b.runtime_key,
            "datasets": [
                {"key": d.key, "project_name": d.project_name, "size_bytes": d.size_bytes}
                for d in b.datasets
            ],
            "book_engine": b.book_engine,
            "executed": b.executed,
            "cached": b.cached,
            "notified": b.notified,
            "created_at": iso_utc(b.created_at),
            "started_at": iso_utc(job.started_at),
            "finished_at": iso_utc(job.finished_at),
            "preview_url": f"builds/{b.id}/preview/" if job.status.value == "succeeded" else None,
            "logs": {
                stage: f"api/builds/{b.id}/logs/{stage}" for stage in ("main", *LOGGED_STAGES)
            },
        }

    # -- changes ---------------------------------------------------------------------------

    async def submit(self, owner: str, *, repository: str, ref: str = "HEAD",
                     email: str | None = None) -> tuple[Preprint, Build]:  # fmt: skip
        """Start a build of a repository; the same author's repository is the same preprint."""
        email = (email or "").strip() or None
        if email and (len(email) > 320 or not EMAIL_RE.fullmatch(email)):
            raise UserError(f"{email!r} is not an email address.")
        try:
            url = sources.validate_url(repository, self.policy)
            ref = sources.validate_ref(ref or "HEAD")
            commit = await sources.resolve_ref(url, ref, self.policy)
        except sources.SourceError as e:
            raise UserError(str(e)) from None
        async with self.db.session() as s:
            p = await s.scalar(
                select(Preprint).where(Preprint.owner == owner, Preprint.repo_url == url)
            )
            if p is None:
                p = Preprint(owner=owner, repo_url=url, ref=ref, email=email)
                s.add(p)
                await s.flush()
            else:
                busy = await s.scalar(
                    select(Build.id).join(Job, Job.id == Build.job_id)
                    .where(Build.preprint_id == p.id, Job.status.in_(("queued", "running")))
                )  # fmt: skip
                if busy:
                    raise Conflict(f"Build {busy} of this preprint is still running; "
                                   "cancel it or wait for it to finish.")  # fmt: skip
                p.ref = ref
                if email:
                    p.email = email
            job = await self.queue.submit(JOB_KIND, owner, {"commit": commit}, session=s)
            b = Build(preprint_id=p.id, job_id=job.id, ref=ref, commit_sha=commit,
                      stages={name: "pending" for name in STAGES})  # fmt: skip
            s.add(b)
            await s.commit()
            build_id = b.id
        self.queue.wake()
        return await self.get_build(build_id, owner, True)

    async def submit_working_tree(self, owner: str, path: Path) -> tuple[Preprint, Build]:
        """A build of a local directory as it is (for `neurolibre build PATH`)."""
        path = path.resolve()
        if not path.is_dir():
            raise UserError(f"{path} is not a directory.")
        async with self.db.session() as s:
            url = str(path)
            p = await s.scalar(
                select(Preprint).where(Preprint.owner == owner, Preprint.repo_url == url)
            )
            if p is None:
                p = Preprint(owner=owner, repo_url=url, ref="working tree")
                s.add(p)
                await s.flush()
            job = await self.queue.submit(JOB_KIND, owner, {"commit": None, "working_tree": url},
                                          session=s)  # fmt: skip
            b = Build(preprint_id=p.id, job_id=job.id, ref="working tree",
                      stages={name: "pending" for name in STAGES})  # fmt: skip
            s.add(b)
            await s.commit()
            build_id = b.id
        self.queue.wake()
        return await self.get_build(build_id, owner, True)

    async def rebuild(self, preprint_id: int, user: str, admin: bool) -> tuple[Preprint, Build]:
        p, _ = await self.get(preprint_id, user, admin)
        return await self.submit(p.owner, repository=p.repo_url, ref=p.ref)

    async def cancel(self, build_id: int, user: str, admin: bool) -> None:
        _p, b = await self.get_build(build_id, user, admin)
        if b.job.status.finished or not await self.queue.cancel(b.job_id, by=user):
            raise Conflict(f"Build {build_id} has already finished.")

    async def delete(self, preprint_id: int, user: str, admin: bool) -> None:
        _p, builds = await self.get(preprint_id, user, admin)
        for b in builds:
            if not b.job.status.finished:
                await self.queue.cancel(b.job_id, by=user)
        async with self.db.session() as s:
            await s.delete(await s.get(Preprint, preprint_id))
            for b in builds:
                await s.delete(await s.get(Job, b.job_id))
            await s.commit()
        for b in builds:
            for stage in ("main", *LOGGED_STAGES):
                self.queue.logs.remove(stage_log_key(b.job_id, stage))
            shutil.rmtree(self.builds_dir / str(b.id), ignore_errors=True)
