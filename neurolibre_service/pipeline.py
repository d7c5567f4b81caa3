"""One preprint build: check -> environment -> data -> book, then the author's email.

Each stage has its own live log (the check and the summary go to the build's main log), its
state is stored on the Build row as it changes, and a failure names the stage that failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import select

from . import checks, sources
from .books import BookError, BookRunner, find_book
from .datasets import DataError, DatasetStore, parse_requirement
from .db import Build, Database, Dataset, Job, JobStatus, Preprint
from .environments.manager import EnvironmentManager
from .jobs import JobContext, JobFailed
from .notify import Attachment, Mailer
from .preprints import JOB_KIND, LOGGED_STAGES, PreprintManager, stage_log_key
from .safefiles import UnsafeFile, read_text_confined

log = logging.getLogger("neurolibre.pipeline")
DATA_REQUIREMENT = ("binder/data_requirement.json", "data_requirement.json")


class Pipeline:
    def __init__(self, db: Database, preprints: PreprintManager, environments: EnvironmentManager,
                 datasets: DatasetStore, books: BookRunner, mailer: Mailer, *,
                 public_url: str, base_url: str):  # fmt: skip
        self.db = db
        self.preprints = preprints
        self.environments = environments
        self.datasets = datasets
        self.books = books
        self.mailer = mailer
        self.public_url = public_url.rstrip("/")
        self.base_url = base_url
        self.queue = preprints.queue
        self.queue.runners[JOB_KIND] = self.run

    # -- bookkeeping -----------------------------------------------------------------------

    async def _build(self, job_id: int) -> tuple[Build, Preprint]:
        async with self.db.session() as s:
            b = await s.scalar(select(Build).where(Build.job_id == job_id))
            if b is None:
                raise JobFailed("This build was deleted.")
            return b, await s.get(Preprint, b.preprint_id)

    async def _set(self, build_id: int, **values) -> None:
        async with self.db.session() as s:
            b = await s.get(Build, build_id)
            stages = values.pop("stages", None)
            if stages:
                b.stages = {**b.stages, **stages}
            for k, v in values.items():
                setattr(b, k, v)
            await s.commit()

    @asynccontextmanager
    async def stage(self, ctx: JobContext, build_id: int, name: str) -> AsyncIterator[JobContext]:
        """Run a stage: its state on the Build row, its own log, and a failure that names it."""
        channel = (
            self.queue.logs.channel(stage_log_key(ctx.job_id, name)) if name in LOGGED_STAGES
            else ctx.log
        )  # fmt: skip
        if channel is not ctx.log:
            channel.reopen()
        await self._set(build_id, stages={name: "running"})
        await ctx.stage(name)
        sctx = ctx.with_log(channel)
        state = "failed"
        try:
            yield sctx
            state = "succeeded"
        except asyncio.CancelledError:
            state = "cancelled"
            raise
        except JobFailed as e:
            if channel is not ctx.log:
                channel.write(f"!! {e}")
            raise
        finally:
            if state != "succeeded":
                await asyncio.shield(self._set(build_id, stages={name: state}, failed_stage=name))
            else:
                await self._set(build_id, stages={name: state})
            if channel is not ctx.log:
                channel.close(state)

    # -- the job ---------------------------------------------------------------------------

    async def run(self, ctx: JobContext) -> None:
        build, preprint = await self._build(ctx.job_id)
        ctx.data["on_finish"] = lambda status: self.finished(ctx.job_id, status)
        # what a builder may record about the first use of a runtime (image labels)
        ctx.data["origin"] = {"repository": preprint.repo_url, "commit": ctx.params["commit"],
                              "preprint-id": preprint.id, "build-id": build.id}  # fmt: skip
        what = f"{build.ref} = commit {ctx.params['commit']}" if ctx.params["commit"] else build.ref
        ctx.say(f"Preprint {preprint.id}, build {build.id}: {preprint.repo_url} {what}")
        # a re-queued build (service restart) starts its stages again
        await self._set(build.id, stages={n: "pending" for n in ("check", *LOGGED_STAGES)},
                        failed_stage=None)  # fmt: skip
        checkout = self.preprints.checkouts_dir / f"build-{build.id}"
        out_dir = self.preprints.builds_dir / str(build.id)
        await asyncio.to_thread(shutil.rmtree, checkout, True)
        await asyncio.to_thread(shutil.rmtree, out_dir, True)
        try:
            async with self.stage(ctx, build.id, "check") as sctx:
                await self.check(sctx, build, preprint, checkout)
            async with self.stage(ctx, build.id, "environment") as sctx:
                key = await self.environment(sctx, build.id, checkout)
            runtime = await self.environments.runtime(key)
            # a src that is Python code runs in the service's data environment, on any backend
            async with self.stage(ctx, build.id, "data") as sctx:
                data = await self.data(sctx, build.id, checkout)
            async with self.stage(ctx, build.id, "book") as sctx:
                await self.book(sctx, build.id, preprint.id, checkout, runtime.location, key,
                                data, out_dir)  # fmt: skip
            if not ctx.params.get("working_tree"):
                ctx.say(f"The preview is at {self.preview_url(preprint.id)}")
        finally:
            await asyncio.to_thread(shutil.rmtree, checkout, True)
            await asyncio.shield(self._close_unstarted(ctx.job_id, build.id))

    async def _close_unstarted(self, job_id: int, build_id: int) -> None:
        """Stages the build never reached: their logs end (followers stop) as skipped."""
        build, _p = await self._build(job_id)
        skipped = {n: "skipped" for n, state in build.stages.items() if state == "pending"}
        if skipped:
            await self._set(build_id, stages=skipped)
        for name in skipped:
            if name in LOGGED_STAGES:
                self.queue.logs.channel(stage_log_key(job_id, name)).close("skipped")

    async def check(self, ctx: JobContext, build: Build, preprint: Preprint,
                    checkout: Path) -> None:  # fmt: skip
        local = ctx.params.get("working_tree")
        if local:  # `neurolibre build PATH`: the author's files as they are, committed or not
            ctx.say(f"Copying the working tree {local}")
            try:  # links are copied as links: the check finds those that leave the tree
                await asyncio.to_thread(shutil.copytree, local, checkout, symlinks=True,
                                        ignore=_not_sources, copy_function=_copy_regular)  # fmt: skip
                await asyncio.to_thread(_owner_writable, checkout)
            except OSError as e:
                raise JobFailed(_copy_failed(local, e)) from None
        else:
            try:
                await sources.checkout(preprint.repo_url, ctx.params["commit"], checkout,
                                       self.preprints.policy)  # fmt: skip
            except sources.SourceError as e:
                raise JobFailed(str(e)) from None
        # confined, in a child process, with a time limit (the repository is hostile);
        # a working tree has no submitted URL to compare repository.url with
        result = await self.preprints.checker.run(checkout, None if local else preprint.repo_url)
        findings, title = result.findings, result.title
        await self._set(build.id, findings=[asdict(f) for f in findings])
        if title:
            async with self.db.session() as s:
                p = await s.get(Preprint, preprint.id)
                p.title = title
                await s.commit()
        for f in findings:
            ctx.say(str(f))
        errors = [f for f in findings if f.level == checks.ERROR]
        ctx.say(f"Layout check: {len(errors)} error(s), {len(findings) - len(errors)} warning(s)")
        if errors:
            first = errors[0]
            raise JobFailed(
                f"The layout check found {len(errors)} error(s); nothing was installed. "
                f"First: {first.file or 'repository'}: {first.message} Fix: {first.fix}"
            )

    async def environment(self, ctx: JobContext, build_id: int, checkout: Path) -> str:
        async def attach(key: str) -> None:
            await self._set(build_id, runtime_key=key)

        return await self.environments.ensure_runtime(ctx, checkout, attach)

    async def data(self, ctx: JobContext, build_id: int,
                   checkout: Path) -> list[tuple[str, Path]]:  # fmt: skip
        rel = next((r for r in DATA_REQUIREMENT if (checkout / r).is_file()), None)
        if rel is None:
            ctx.say("No data_requirement.json: this preprint needs no data.")
            return []
        try:
            specs = parse_requirement(read_text_confined(checkout / rel, checkout, 1 << 20), rel)
        except (DataError, UnsafeFile) as e:
            raise JobFailed(str(e)) from None
        mounts: list[tuple[str, Path]] = []
        for spec in specs:
            ds = await self.datasets.ensure(ctx, spec)
            # linked at once: an admin cannot delete a dataset a running build uses
            async with self.db.session() as s:
                b = await s.get(Build, build_id)
                if ds.key not in {d.key for d in b.datasets}:
                    b.datasets.append(await s.get(Dataset, ds.key))
                await s.commit()
            mounts.append((spec.project_name, self.datasets.path(ds.key, ds.project_name)))
        return mounts

    async def _previous_cache(self, preprint_id: int, build_id: int, runtime_key: str,
                              data_keys: set[str]) -> Path | None:  # fmt: skip
        """The execution cache of the latest build that ran its book on the same environment
        and data. A failed book build counts: its cache holds only notebooks that ran to the end,
        so fixing one broken notebook does not re-run the others."""
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(Build).where(Build.preprint_id == preprint_id, Build.id < build_id)
                    .order_by(Build.id.desc()).limit(20)
                )
            ).unique().all()  # fmt: skip
        for b in rows:
            if b.stages.get("book") not in ("succeeded", "failed"):
                continue  # stopped before its book: nothing executed
            if b.runtime_key != runtime_key or {d.key for d in b.datasets} != data_keys:
                return None  # the environment or data changed since: execute everything
            cache = self.preprints.builds_dir / str(b.id) / "exec-cache"
            if cache.is_dir():
                return cache
        return None

    async def book(self, ctx: JobContext, build_id: int, preprint_id: int, checkout: Path,
                   environment: str, runtime_key: str, data: list[tuple[str, Path]],
                   out_dir: Path) -> None:  # fmt: skip
        try:
            source = find_book(checkout)
        except BookError as e:
            raise JobFailed(str(e)) from None
        await self._set(build_id, book_engine=source.engine)
        data_keys = {p.parent.name for _, p in data}
        cache_in = await self._previous_cache(preprint_id, build_id, runtime_key, data_keys)
        if cache_in:
            ctx.say(f"Reusing the execution cache of an earlier build ({cache_in.parent.name}).")
        else:
            ctx.say("No earlier execution cache for this environment and data: "
                    "every notebook runs.")  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        result = await self.books.build(ctx, checkout=checkout, environment=environment,
                                        datasets=data, cache_in=cache_in, out_dir=out_dir)  # fmt: skip
        await self._set(build_id, executed=result.executed, cached=result.cached)

    # -- the author's email ----------------------------------------------------------------

    def preview_url(self, preprint_id: int) -> str:
        return f"{self.public_url}{self.base_url}preprints/{preprint_id}/preview/"

    def page_url(self, preprint_id: int) -> str:
        return f"{self.public_url}{self.base_url}preprints/{preprint_id}"

    async def finished(self, job_id: int, status: JobStatus) -> None:
        try:
            await self._notify(job_id, status)
        except Exception:
            log.exception("notifying the author of job %s failed", job_id)

    async def _notify(self, job_id: int, status: JobStatus) -> None:
        build, preprint = await self._build(job_id)
        if not preprint.email:
            return
        if not self.mailer.enabled:
            await self._set(build.id, notified="not sent: SMTP is not configured")
            return
        title = preprint.title or preprint.repo_url
        short = (build.commit_sha or "")[:10]
        attachments: list[Attachment] = []
        if status == JobStatus.succeeded:
            subject = f"NeuroLibre: your preprint built ({title})"
            body = (
                f"Your preprint {title!r} ({preprint.repo_url}, commit {short}) built "
                f"successfully.\n\nPreview: {self.preview_url(preprint.id)}\n"
                f"Build details and logs: {self.page_url(preprint.id)}\n\n"
                f"Notebooks: {build.executed or 0} executed, {build.cached or 0} reused from the "
                "execution cache.\n"
            )
            warnings = [f for f in build.findings or [] if f["level"] == checks.WARNING]
            if warnings:
                body += "\nWarnings from the layout check:\n" + "".join(
                    f"- {w['file'] or 'repository'}: {w['message']} Fix: {w['fix']}\n"
                    for w in warnings
                )
        else:
            stage = build.failed_stage or "unknown"
            async with self.db.session() as s:
                job = await s.get(Job, job_id)
            subject = f"NeuroLibre: your preprint build {status.value} ({title})"
            body = (
                f"The build of {title!r} ({preprint.repo_url}, commit {short}) {status.value} "
                f"at the {stage} stage.\n\nWhy: {job.error}\n\n"
                "The environment log and the book log are attached (their last lines, when "
                "they are long).\n"
                f"Build details and live logs: {self.page_url(preprint.id)}\n"
            )
            for stage_name in ("environment", "book"):
                # only the log's end is read and attached: a build may print gigabytes
                path = self.queue.logs.path(stage_log_key(job_id, stage_name))
                link = f"{self.page_url(preprint.id)} (build {build.id}, {stage_name} log)"
                a = self.mailer.log_attachment(f"{stage_name}.log", path, link)
                if not a.content.strip():
                    text = f"(The {stage_name} stage did not run: the build stopped before it.)\n"
                    a = Attachment(a.filename, text.encode())
                attachments.append(a)
        msg = self.mailer.message(preprint.email, subject, body, attachments)
        try:
            await self.mailer.send(msg)
            note = f"sent to {preprint.email}"
        except Exception as e:  # the SMTP server's own words, for the operator
            note = f"not sent: {type(e).__name__}: {e}"
            log.warning("email for build %s %s", build.id, note)
        await self._set(build.id, notified=note)


def _copy_regular(src: str, dst: str) -> str:
    """shutil.copy2 for regular files only: reading a FIFO blocks, a device never ends."""
    if not stat.S_ISREG(os.lstat(src).st_mode):
        raise shutil.SpecialFileError(f"{src} is not a regular file")
    return shutil.copy2(src, dst)


def _owner_writable(top: Path) -> None:
    """The copy's modes as a git checkout's: an author's read-only folders (a clone kept
    read-only, a tree unpacked from an archive) must not stop the book writing its _build."""
    for root, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, stat.S_IMODE(mode) | (0o700 if stat.S_ISDIR(mode) else 0o600))
    os.chmod(top, stat.S_IMODE(os.lstat(top).st_mode) | 0o700)


def _copy_failed(local: str, e: OSError) -> str:
    if isinstance(e, shutil.Error):
        names = [os.path.relpath(src, local) for src, _dst, _why in e.args[0]]
    else:
        names = [os.path.relpath(e.filename, local) if e.filename else str(e)]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return (
        f"The working tree could not be copied: {', '.join(names[:5])}{more} (not regular "
        "files, or not readable). Remove them (Git cannot commit a named pipe, a socket or a "
        "device) and build again."
    )


def _not_sources(directory: str, names: list[str]) -> set[str]:
    """What a working-tree copy leaves out: Git's files, earlier builds, fetched data."""
    skip = {".git", "_build", ".ipynb_checkpoints", "__pycache__"} & set(names)
    if "binder" in names and "data" in names:
        skip.add("data")  # the repository root: datasets are mounted there
    return skip
