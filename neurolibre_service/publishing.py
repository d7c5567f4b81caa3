"""Submit, screen, review, publish: the editorial workflow and the immutable published versions.

The handbook's workflow: an author tests (the preview) then submits a preprint whose latest build
succeeded; editors (the hub scope custom:neurolibre:review, or admins) screen it, assign reviewers
(hub users), request changes, accept or reject; reviewers read the submitted build's preview and
comment; authors answer and push new builds (and submit again to put a new build under review);
authors may withdraw. Every transition and comment is a ReviewEvent row (who, when, from -> to,
what was said) and an email to those concerned: the author's address, the reviewers' (given at
assignment: the hub keeps none) and the operator's editorial address (c.NeuroLibre.editors_email).

    (none) --submit--> submitted --screen--> in_review --accept--> published
                          |  ^                  |   ^                  |
                          |  +--request_changes-+   +--submit----------+ (a new version:
                          |       changes_requested --submit--> in_review   through the editor)
    submitted / in_review / changes_requested --reject--> rejected, --withdraw--> withdrawn
    withdrawn --submit--> submitted

Accepting publishes: version N of the preprint's publication (slug stable, never reused) pins the
build's commit, runtime (key, backend, location), datasets (keys and a SHA-256 of each one's
files), the book's HTML (copied to DATA/published/<slug>/v<N>/, read-only), the repository's
files at the commit (source/), the runtime files, the build's logs and the metadata (metadata.py, from the layout check's reading of paper.md and
myst.yml). Nothing updates or deletes a version: there is no code path for it, and migration
0004's triggers refuse it in SQL. A launch needs an environment: publishing adds one (the
author's, named <slug>-v<N>) on the build's runtime; deleting it, the runtime or a dataset a
version holds is refused (environments/manager.py, datasets.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from . import sources
from .checks import MAX_ENTRIES, MAX_FILE_SIZE
from .checks_runner import CheckRunner
from .datasets import DatasetStore
from .db import (
    Build,
    Database,
    Environment,
    Job,
    JobStatus,
    Preprint,
    Publication,
    PublishedVersion,
    Review,
    ReviewAssignment,
    ReviewEvent,
    Runtime,
    published_datasets,
)
from .environments.runtime import RuntimeError_, find_runtime
from .errors import Conflict, NotFound, UserError
from .notify import Mailer
from .preprints import EMAIL_RE, LOGGED_STAGES, PreprintManager, stage_log_key
from .processes import _die_with_parent, kill_tree
from .sandbox import Sandbox
from .units import aware, iso_utc

log = logging.getLogger("neurolibre.publishing")

SUBMITTED, IN_REVIEW, CHANGES, PUBLISHED = (
    "submitted",
    "in_review",
    "changes_requested",
    "published",
)
REJECTED, WITHDRAWN = "rejected", "withdrawn"
STATUSES = (SUBMITTED, IN_REVIEW, CHANGES, PUBLISHED, REJECTED, WITHDRAWN)
ACTIVE = (SUBMITTED, IN_REVIEW, CHANGES)  # an editor's queue
# decision -> (the states it may be taken in, the state it leads to)
DECISIONS: dict[str, tuple[frozenset[str], str]] = {
    "screen": (frozenset({SUBMITTED}), IN_REVIEW),
    "request_changes": (frozenset({SUBMITTED, IN_REVIEW}), CHANGES),
    "accept": (frozenset({SUBMITTED, IN_REVIEW}), PUBLISHED),
    "reject": (frozenset({SUBMITTED, IN_REVIEW, CHANGES}), REJECTED),
}
NEEDS_REASON = frozenset({"request_changes", "reject"})
WITHDRAWABLE = frozenset(ACTIVE)
MAX_COMMENT = 10_000  # characters in one comment
MAX_REVIEWERS = 20
MAX_EVENTS_SHOWN = 500
USER_NAME_RE = re.compile(r"[^\s/\x00-\x1f\x7f]{1,255}")
SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
STAGE_LOGS = ("main", *LOGGED_STAGES)
# what a version's pages say an event did
VERBS = {
    "submit": "submitted it for review", "screen": "screened it: the review started",
    "request_changes": "asked for changes", "accept": "accepted it", "reject": "rejected it",
    "withdraw": "withdrew it", "comment": "commented", "assign": "assigned a reviewer",
    "unassign": "removed a reviewer",
}  # fmt: skip


class Forbidden(UserError):
    status = 403


@dataclass(frozen=True)
class Actor:
    """Who asks: a hub user, and whether they hold the review scope or the admin scope."""

    name: str
    editor: bool = False
    admin: bool = False

    @property
    def privileged(self) -> bool:
        """Sees every submission: editors and admins."""
        return self.editor or self.admin


# -- files: the book copy, checksums -----------------------------------------------------------


class BookTooLarge(Exception):
    pass


def copy_book(
    src: Path, dest: Path, limit: int, skip: frozenset[str] = frozenset()
) -> tuple[int, int]:
    """The regular files and directories of a built book (written by a confined build: hostile)
    or a checkout into dest, read-only. A link is copied as the file it names only when that
    file is inside src; links out, links to directories, FIFOs, sockets and devices are left
    out, and so are the top-level entries named in `skip` (.git). Returns (files, bytes);
    raises BookTooLarge past `limit` bytes."""
    root = os.path.realpath(src)
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out = dest if rel == "." else dest / rel
        out.mkdir(parents=True, exist_ok=True)
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))
                             and not (rel == "." and d in skip))  # fmt: skip
        if rel == ".":
            filenames = [f for f in filenames if f not in skip]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if not real.startswith(root + os.sep):
                continue  # a link out of the book
            try:
                fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                target = out / name
                with open(target, "xb") as w:
                    while chunk := f.read(1 << 20):
                        total += len(chunk)
                        if total > limit:
                            raise BookTooLarge(total)
                        w.write(chunk)
            os.chmod(target, 0o444)
            files += 1
    return files, total


def tree_digest(top: Path) -> tuple[str, int, int]:
    """(SHA-256, files, bytes) of a directory tree: the SHA-256 of its `sha256sum`-style
    manifest ("<sha256>  <relative path>" lines, sorted by path). Links are not followed: a link
    counts as the text it points to. The same files give the same digest anywhere."""
    lines: list[tuple[str, str]] = []
    files = size = 0
    top = Path(top)
    if not top.is_dir() or top.is_symlink():
        return hashlib.sha256(b"").hexdigest(), 0, 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(
            filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        ):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                digest = hashlib.sha256(b"link:" + os.fsencode(os.readlink(path))).hexdigest()
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        continue
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                        size += len(chunk)
                digest = h.hexdigest()
            else:
                continue
            files += 1
            lines.append((rel, digest))
    manifest = "".join(f"{d}  {rel}\n" for rel, d in sorted(lines))
    return hashlib.sha256(manifest.encode("utf-8", "surrogateescape")).hexdigest(), files, size


def make_slug(title: str | None, number: int) -> str:
    """URL-safe, from the title's words (ASCII), ending with the preprint's number: unique,
    since preprint numbers are never reused. "A <b>test</b> preprint" -> "a-b-test-b-preprint-7"."""
    text = unicodedata.normalize("NFKD", title or "").encode("ascii", "ignore").decode().lower()
    base = ""
    for word in re.findall(r"[a-z0-9]+", text):
        if base and len(base) + 1 + len(word) > 48:
            break
        base = f"{base}-{word}"[:48].strip("-") if base else word[:48]
    return f"{base or 'preprint'}-{number}"


def commit_url(repository: str, commit: str) -> str | None:
    """The web page of a repository at a commit, for the forges whose URL scheme is known."""
    u = urlparse(repository)
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    path = u.path.removesuffix("/").removesuffix(".git")
    if u.hostname in ("github.com", "codeberg.org") or u.hostname.startswith("gitea."):
        return f"https://{u.hostname}{path}/tree/{commit}"
    if u.hostname == "gitlab.com" or u.hostname.startswith("gitlab."):
        return f"https://{u.hostname}{path}/-/tree/{commit}"
    return None


def web_url(repository: str) -> str | None:
    """The repository's address when a browser can open it (http or https), else None."""
    u = urlparse(repository)
    return repository if u.scheme in ("http", "https") and u.hostname else None


# -- metadata: the check's parse, in a confined child --------------------------------------------


class MetadataRunner:
    """Runs `python -I -m neurolibre_service.metadata CHECKOUT` confined like the layout check
    (CheckRunner: the checkout read-only, no network, a time limit, bounded output)."""

    def __init__(self, checker: CheckRunner):
        self.sandbox: Sandbox | None = checker.sandbox
        self.time_limit = checker.time_limit
        self.max_file_size = getattr(checker, "max_file_size", MAX_FILE_SIZE)
        self.max_entries = getattr(checker, "max_entries", MAX_ENTRIES)
        self.output_limit = 1 << 20
        self._checker = checker

    def argv(self, checkout: Path) -> list[str]:
        argv = [sys.executable, "-I", "-m", "neurolibre_service.metadata", str(checkout),
                f"--max-file-size={self.max_file_size}", f"--max-entries={self.max_entries}"]  # fmt: skip
        if self.sandbox is not None:
            code = {Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parent}
            argv = self.sandbox.wrap(argv, readable=[checkout, *sorted(code)], cwd=checkout,
                                     network=False)  # fmt: skip
        return argv

    async def run(self, checkout: Path) -> dict:
        checkout = checkout.resolve()
        proc = await asyncio.create_subprocess_exec(
            *self.argv(checkout), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=checkout,
            env=(self.sandbox or Sandbox("none")).env(), start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        stderr = bytearray()
        try:
            out = await asyncio.wait_for(self._checker._collect(proc, stderr), self.time_limit)
        except TimeoutError:
            raise Conflict("Reading the preprint's metadata (paper.md, myst.yml) took longer "
                           f"than {self.time_limit:g} seconds; nothing was published.") from None  # fmt: skip
        finally:
            if proc.returncode is None:
                kill_tree(proc.pid)
        try:
            if out is None or proc.returncode != 0:
                raise ValueError(f"exit status {proc.returncode}")
            meta = json.loads(out)["metadata"]
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (ValueError, KeyError, TypeError) as e:
            log.warning("metadata of %s: %s: %s", checkout, e, stderr.decode(errors="replace"))
            raise Conflict("The preprint's metadata could not be read; nothing was published. "
                           "The service's log says why.") from None  # fmt: skip
        return meta


# -- the workflow --------------------------------------------------------------------------------


class Publishing:
    def __init__(self, db: Database, preprints: PreprintManager, datasets: DatasetStore,
                 mailer: Mailer, *, root: Path, hub_api: Any = None, public_url: str = "",
                 base_url: str = "/", editors_email: Sequence[str] = (),
                 book_size_limit: int = 4 << 30):  # fmt: skip
        self.db = db
        self.preprints = preprints
        self.datasets = datasets
        self.mailer = mailer
        self.root = Path(root)  # DATA/published
        self.hub_api = hub_api
        self.public_url = public_url.rstrip("/")
        self.base_url = base_url
        self.editors_email = [e for e in editors_email if e]
        self.book_size_limit = book_size_limit
        self.meta_runner = MetadataRunner(preprints.checker)
        self._locks: dict[int, asyncio.Lock] = {}
        self._mails: set[asyncio.Task] = set()

    # -- who may see and do what ---------------------------------------------------------

    async def _reviewers(self, s, preprint_id: int) -> list[ReviewAssignment]:
        rows = await s.scalars(select(ReviewAssignment)
                               .where(ReviewAssignment.preprint_id == preprint_id)
                               .order_by(ReviewAssignment.created_at))  # fmt: skip
        return list(rows.all())

    async def role(self, p: Preprint, actor: Actor) -> str | None:
        """author, editor, admin or reviewer (the strongest that applies), or None."""
        if p.owner == actor.name:
            return "author"
        if actor.editor:
            return "editor"
        if actor.admin:
            return "admin"
        async with self.db.session() as s:
            assigned = await s.get(ReviewAssignment, (p.id, actor.name))
        return "reviewer" if assigned else None

    async def may_view(self, p: Preprint, user: str, privileged: bool) -> bool:
        """The author, editors and admins, and the preprint's assigned reviewers see its page
        and its previews; nobody else."""
        return await self.role(p, Actor(user, editor=privileged)) is not None

    async def _load(self, preprint_id: int, actor: Actor) -> tuple[Preprint, str]:
        async with self.db.session() as s:
            p = await s.get(Preprint, preprint_id)
        role = await self.role(p, actor) if p is not None else None
        if p is None or role is None:
            raise NotFound(f"No preprint {preprint_id}.")
        return p, role

    def _lock(self, preprint_id: int) -> asyncio.Lock:
        return self._locks.setdefault(preprint_id, asyncio.Lock())

    # -- reading -------------------------------------------------------------------------

    async def review(self, preprint_id: int, actor: Actor) -> dict:
        """A preprint's review as its author, an editor or one of its reviewers sees it."""
        p, role = await self._load(preprint_id, actor)
        return await self._review_dict(p, role, actor)

    async def _review_dict(self, p: Preprint, role: str, actor: Actor) -> dict:
        async with self.db.session() as s:
            r = await s.get(Review, p.id)
            reviewers = await self._reviewers(s, p.id)
            events = (await s.scalars(
                select(ReviewEvent).where(ReviewEvent.preprint_id == p.id)
                .order_by(ReviewEvent.id.desc()).limit(MAX_EVENTS_SHOWN)
            )).all()  # fmt: skip
            pub = await s.scalar(select(Publication).where(Publication.preprint_id == p.id))
            versions = [] if pub is None else (await s.scalars(
                select(PublishedVersion).where(PublishedVersion.publication_id == pub.id)
                .order_by(PublishedVersion.version.desc())
            )).all()  # fmt: skip
        status = r.status if r else None
        editor = self._handles(role, actor)
        blocked = None
        if role == "author" or actor.admin:
            blocked = await self._submit_blocker(p, status)
        can = {
            "submit": (role == "author" or actor.admin) and blocked is None,
            "withdraw": (role == "author" or actor.admin) and status in WITHDRAWABLE,
            "comment": status is not None,
            "assign": editor and status in ACTIVE,
            "decide": sorted(d for d, (when, _) in DECISIONS.items() if editor and status in when),
        }
        return {
            "preprint": p.id,
            "title": p.title or p.repo_url,
            "owner": p.owner,
            "repository": p.repo_url,
            "status": status,
            "role": role,
            "build": r.build_id if r else None,
            "preview_url": f"builds/{r.build_id}/preview/" if r and r.build_id else None,
            "submitted_at": iso_utc(r.submitted_at) if r else None,
            "updated_at": iso_utc(r.updated_at) if r else None,
            "reviewers": [
                {
                    "name": a.reviewer,
                    "assigned_by": a.assigned_by,
                    "assigned_at": iso_utc(a.created_at),
                    # reviewers' addresses are the editors' business
                    **({"email": a.email} if editor else {}),
                }
                for a in reviewers
            ],
            "events": [self._event_dict(e) for e in events],
            "can": can,
            "submit_blocked": blocked,
            "publication": None
            if pub is None
            else {
                "slug": pub.slug,
                "url": f"p/{pub.slug}/",
                "versions": [
                    {
                        "version": v.version,
                        "url": f"p/{pub.slug}/v{v.version}/",
                        "commit": v.commit_sha,
                        "published_at": iso_utc(v.published_at),
                    }
                    for v in versions
                ],
            },
        }

    @staticmethod
    def _event_dict(e: ReviewEvent) -> dict:
        return {
            "id": e.id, "actor": e.actor, "role": e.role, "kind": e.kind,
            "from": e.from_status, "to": e.to_status, "build": e.build_id, "version": e.version,
            "reply_to": e.reply_to, "comment": e.comment, "created_at": iso_utc(e.created_at),
        }  # fmt: skip

    async def queue(self, actor: Actor, status: str | None = None, *, limit: int = 100,
                    offset: int = 0) -> tuple[list[dict], int]:  # fmt: skip
        """Submissions the actor has a part in: every one for editors; the ones assigned to
        them for reviewers; their own for authors. `status`: one state, "all", or the active
        ones (submitted, in review, changes requested) by default."""
        if status not in (None, "", "all", *STATUSES):
            raise UserError(f"status must be one of: all, {', '.join(STATUSES)}.")
        where = []
        if status in (None, ""):
            where.append(Review.status.in_(ACTIVE))
        elif status != "all":
            where.append(Review.status == status)
        if not actor.privileged:
            assigned = select(ReviewAssignment.preprint_id).where(
                ReviewAssignment.reviewer == actor.name
            )
            where.append(or_(Preprint.owner == actor.name, Preprint.id.in_(assigned)))
        stmt = (
            select(Review, Preprint).join(Preprint, Preprint.id == Review.preprint_id).where(*where)
        )
        async with self.db.session() as s:
            total = await s.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = (await s.execute(stmt.order_by(Review.updated_at.desc(), Review.preprint_id.desc())
                                    .limit(limit).offset(offset))).all()  # fmt: skip
            ids = [p.id for _r, p in rows]
            names: dict[int, list[str]] = {i: [] for i in ids}
            for a in (await s.scalars(select(ReviewAssignment)
                                      .where(ReviewAssignment.preprint_id.in_(ids)))).all():  # fmt: skip
                names[a.preprint_id].append(a.reviewer)
        out = []
        for r, p in rows:
            role = ("author" if p.owner == actor.name else "editor" if actor.editor
                    else "admin" if actor.admin else "reviewer")  # fmt: skip
            out.append({
                "preprint": p.id, "title": p.title or p.repo_url, "owner": p.owner,
                "repository": p.repo_url, "status": r.status, "build": r.build_id,
                "preview_url": f"builds/{r.build_id}/preview/" if r.build_id else None,
                "submitted_at": iso_utc(r.submitted_at), "updated_at": iso_utc(r.updated_at),
                "reviewers": sorted(names[p.id]), "role": role,
            })  # fmt: skip
        return out, total or 0

    # -- the author's moves --------------------------------------------------------------

    async def _latest_build(self, preprint_id: int) -> Build | None:
        async with self.db.session() as s:
            return await s.scalar(select(Build).where(Build.preprint_id == preprint_id)
                                  .order_by(Build.id.desc()).limit(1))  # fmt: skip

    async def _submit_blocker(self, p: Preprint, status: str | None) -> str | None:
        """Why the preprint cannot be submitted now (None: it can)."""
        if status == REJECTED:
            return ("The editors rejected this preprint; it cannot be submitted again. Write to "
                    "the editors if you think this is a mistake.")  # fmt: skip
        b = await self._latest_build(p.id)
        if b is None:
            return ("This preprint has no build: build it (a successful build is a prerequisite "
                    "for submission).")  # fmt: skip
        job = b.job.status
        if job in (JobStatus.queued, JobStatus.running):
            return f"Build {b.id} is still running; submit once it has succeeded."
        if job != JobStatus.succeeded:
            where = f" at the {b.failed_stage} stage" if b.failed_stage else ""
            why = f": {b.job.error}" if b.job.error else ""
            return (f"The latest build ({b.id}) {job.value}{where}{why}. A successful build is "
                    "a prerequisite for submission: fix it and build again.")  # fmt: skip
        if not self.preprints.html_dir(b.id).is_dir():
            return f"Build {b.id} has no book to review; build again."
        async with self.db.session() as s:
            r = await s.get(Review, p.id)
            if r is not None and r.build_id == b.id and status in (SUBMITTED, IN_REVIEW):
                return f"Build {b.id} is the one under review already."
            pub = await s.scalar(select(Publication).where(Publication.preprint_id == p.id))
            if pub is not None:
                last = await s.scalar(
                    select(PublishedVersion).where(PublishedVersion.publication_id == pub.id)
                    .order_by(PublishedVersion.version.desc()).limit(1)
                )  # fmt: skip
                if last is not None and last.commit_sha == b.commit_sha:
                    return (f"Build {b.id} is of commit {b.commit_sha[:10]}, which is already "
                            f"published as version {last.version}: push a new commit and build "
                            "it first.")  # fmt: skip
        return None

    async def submit(self, preprint_id: int, actor: Actor, comment: str | None = None) -> dict:
        """Put the preprint's latest (successful) build under review."""
        comment = self._comment(comment, required=False)
        async with self._lock(preprint_id):
            p, role = await self._load(preprint_id, actor)
            if role != "author" and not actor.admin:
                raise Forbidden("Only the preprint's author submits it.")
            async with self.db.session() as s:
                r = await s.get(Review, p.id)
            before = r.status if r else None
            blocked = await self._submit_blocker(p, before)
            if blocked:
                raise Conflict(blocked)
            b = await self._latest_build(p.id)
            after = IN_REVIEW if before in (IN_REVIEW, CHANGES) else SUBMITTED
            async with self.db.session() as s:
                r = await s.get(Review, p.id)
                now = datetime.now(UTC)
                if r is None:
                    r = Review(preprint_id=p.id, status=after, build_id=b.id, submitted_at=now,
                               updated_at=now)  # fmt: skip
                    s.add(r)
                else:
                    r.status, r.build_id, r.updated_at = after, b.id, now
                    if before in (None, WITHDRAWN, PUBLISHED):
                        r.submitted_at = now
                e = self._event(p, actor, role, "submit", before, after, comment, build_id=b.id)
                s.add(e)
                await s.commit()
        await self._notify(p, e)
        return await self.review(preprint_id, actor)

    async def withdraw(self, preprint_id: int, actor: Actor, comment: str | None = None) -> dict:
        comment = self._comment(comment, required=False)
        async with self._lock(preprint_id):
            p, role = await self._load(preprint_id, actor)
            if role != "author" and not actor.admin:
                raise Forbidden("Only the preprint's author withdraws it.")
            e = await self._transition(p, actor, role, "withdraw", WITHDRAWABLE, WITHDRAWN,
                                       comment)  # fmt: skip
        await self._notify(p, e)
        return await self.review(preprint_id, actor)

    # -- the editors' moves ----------------------------------------------------------------

    @staticmethod
    def _handles(role: str, actor: Actor) -> bool:
        """Whether the actor acts as an editor here: editors and admins, but an editor never
        on their own preprint (an admin, who may do everything, may)."""
        return role in ("editor", "admin") or (role == "author" and actor.admin)

    def _editor(self, role: str, actor: Actor) -> None:
        if role == "author" and actor.editor and not actor.admin:
            raise Forbidden("An editor cannot handle their own preprint; another editor must.")
        if not self._handles(role, actor):
            raise Forbidden("This needs an editor (the custom:neurolibre:review scope).")

    async def assign(self, preprint_id: int, actor: Actor, reviewer: str,
                     email: str | None = None) -> dict:  # fmt: skip
        reviewer = (reviewer or "").strip()
        if not USER_NAME_RE.fullmatch(reviewer):
            raise UserError("Give the reviewer's hub user name (1-255 characters, no spaces).")
        email = (email or "").strip() or None
        if email and (len(email) > 320 or not EMAIL_RE.fullmatch(email)):
            raise UserError(f"{email!r} is not an email address.")
        async with self._lock(preprint_id):
            p, role = await self._load(preprint_id, actor)
            self._editor(role, actor)
            if reviewer == p.owner:
                raise UserError(f"{reviewer} is the preprint's author, who cannot review it.")
            async with self.db.session() as s:
                r = await s.get(Review, p.id)
                if r is None or r.status not in ACTIVE:
                    raise Conflict("Reviewers are assigned to a submission under way "
                                   f"(this one is {r.status if r else 'not submitted'}).")  # fmt: skip
                if await s.get(ReviewAssignment, (p.id, reviewer)):
                    raise Conflict(f"{reviewer} already reviews this preprint.")
                if len(await self._reviewers(s, p.id)) >= MAX_REVIEWERS:
                    raise Conflict(f"A preprint has at most {MAX_REVIEWERS} reviewers.")
            await self._hub_user(reviewer)
            async with self.db.session() as s:
                s.add(ReviewAssignment(preprint_id=p.id, reviewer=reviewer, email=email,
                                       assigned_by=actor.name))  # fmt: skip
                r = await s.get(Review, p.id)
                r.updated_at = datetime.now(UTC)
                e = self._event(
                    p, actor, role, "assign", r.status, r.status, f"Reviewer: {reviewer}"
                )
                s.add(e)
                await s.commit()
        await self._notify(p, e)
        return await self.review(preprint_id, actor)

    async def _hub_user(self, name: str) -> None:
        if self.hub_api is None:
            return
        from .hubapi import HubAPIError

        try:
            await self.hub_api.user(name)
        except HubAPIError as e:
            if e.status == 404:
                raise UserError(f"There is no hub user named {name!r}.") from None
            raise UserError(f"The hub could not say whether {name!r} exists: {e}", 502) from None

    async def unassign(self, preprint_id: int, actor: Actor, reviewer: str) -> dict:
        async with self._lock(preprint_id):
            p, role = await self._load(preprint_id, actor)
            self._editor(role, actor)
            async with self.db.session() as s:
                a = await s.get(ReviewAssignment, (p.id, reviewer))
                if a is None:
                    raise NotFound(f"{reviewer} does not review preprint {p.id}.")
                gone = a.email
                await s.delete(a)
                r = await s.get(Review, p.id)
                e = self._event(p, actor, role, "unassign", r.status if r else None,
                                r.status if r else None, f"Reviewer: {reviewer}")  # fmt: skip
                s.add(e)
                await s.commit()
        await self._notify(p, e, extra=[gone] if gone else [])
        return await self.review(preprint_id, actor)

    async def decide(self, preprint_id: int, actor: Actor, decision: str,
                     comment: str | None = None) -> dict:  # fmt: skip
        if decision not in DECISIONS:
            raise UserError(f"decision must be one of: {', '.join(DECISIONS)}.")
        comment = self._comment(comment, required=decision in NEEDS_REASON)
        when, after = DECISIONS[decision]
        async with self._lock(preprint_id):
            p, role = await self._load(preprint_id, actor)
            self._editor(role, actor)
            if decision == "accept":
                e = await self._accept(p, actor, role, comment)
            else:
                e = await self._transition(p, actor, role, decision, when, after, comment)
        await self._notify(p, e)
        return await self.review(preprint_id, actor)

    async def comment(self, preprint_id: int, actor: Actor, text: str | None,
                      reply_to: Any = None) -> dict:  # fmt: skip
        text = self._comment(text, required=True)
        async with self._lock(preprint_id):
            p, role = await self._load(preprint_id, actor)
            async with self.db.session() as s:
                r = await s.get(Review, p.id)
                if r is None:
                    raise Conflict("Comments belong to a review: submit the preprint first.")
                answered = None
                if reply_to not in (None, ""):
                    digits = str(reply_to)
                    if not (digits.isascii() and digits.isdigit()) or int(digits) > 2**31 - 1:
                        raise UserError("reply_to must be the number of a comment.")
                    answered = await s.get(ReviewEvent, int(digits))
                    if answered is None or answered.preprint_id != p.id:
                        raise UserError(f"There is no comment {reply_to} on this preprint.")
                e = self._event(p, actor, role, "comment", r.status, r.status, text,
                                build_id=r.build_id, reply_to=answered.id if answered else None)  # fmt: skip
                r.updated_at = datetime.now(UTC)
                s.add(e)
                await s.commit()
        await self._notify(p, e)
        return await self.review(preprint_id, actor)

    # -- transitions -------------------------------------------------------------------------

    @staticmethod
    def _comment(text: Any, *, required: bool) -> str | None:
        text = "" if text is None else str(text)
        text = text.replace("\r\n", "\n").strip()
        if len(text) > MAX_COMMENT:
            raise UserError(f"A comment has at most {MAX_COMMENT} characters ({len(text)} given).")
        if required and not text:
            raise UserError("Say why in a comment (it goes to the author and the reviewers).")
        return text or None

    @staticmethod
    def _event(p: Preprint, actor: Actor, role: str, kind: str, before: str | None,
               after: str | None, comment: str | None, **kw) -> ReviewEvent:  # fmt: skip
        return ReviewEvent(preprint_id=p.id, actor=actor.name, role=role, kind=kind,
                           from_status=before, to_status=after, comment=comment,
                           created_at=datetime.now(UTC), **kw)  # fmt: skip

    async def _transition(self, p: Preprint, actor: Actor, role: str, kind: str,
                          when: frozenset[str], after: str, comment: str | None) -> ReviewEvent:  # fmt: skip
        async with self.db.session() as s:
            r = await s.get(Review, p.id)
            before = r.status if r else None
            if r is None or before not in when:
                now = before.replace("_", " ") if before else "not submitted"
                raise Conflict(f"This preprint is {now}: it cannot be {_past(kind)} now "
                               f"(only when {', '.join(sorted(w.replace('_', ' ') for w in when))}).")  # fmt: skip
            r.status, r.updated_at = after, datetime.now(UTC)
            e = self._event(p, actor, role, kind, before, after, comment, build_id=r.build_id)
            s.add(e)
            await s.commit()
        return e

    async def _accept(self, p: Preprint, actor: Actor, role: str,
                      comment: str | None) -> ReviewEvent:  # fmt: skip
        when, _after = DECISIONS["accept"]
        async with self.db.session() as s:
            r = await s.get(Review, p.id)
        if r is None or r.status not in when:
            now = r.status.replace("_", " ") if r else "not submitted"
            raise Conflict(f"This preprint is {now}: it can be accepted only when submitted or "
                           "in review.")  # fmt: skip
        if r.build_id is None:
            raise Conflict("The build under review was deleted; the author must submit again.")
        return await self._publish(p, r.build_id, actor, role, comment)

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, p: Preprint, build_id: int, actor: Actor, role: str,
                       comment: str | None) -> ReviewEvent:  # fmt: skip
        pm = self.preprints
        async with self.db.session() as s:
            b = await s.get(Build, build_id)
            if b is None or b.job.status != JobStatus.succeeded or not b.commit_sha:
                raise Conflict(f"Build {build_id} did not succeed; nothing was published.")
            rt = await s.get(Runtime, b.runtime_key) if b.runtime_key else None
            if rt is None:
                raise Conflict(f"The environment of build {build_id} is gone (its runtime was "
                               "removed); the author must build again and submit.")  # fmt: skip
            data = [(d.key, d.project_name, d.requirement, d.size_bytes) for d in b.datasets]
            pub = await s.scalar(select(Publication).where(Publication.preprint_id == p.id))
            last = 0 if pub is None else await s.scalar(
                select(func.max(PublishedVersion.version))
                .where(PublishedVersion.publication_id == pub.id)) or 0  # fmt: skip
        html = pm.html_dir(build_id)
        if not html.is_dir():
            raise Conflict(f"Build {build_id}'s book is gone; the author must build again.")
        version = last + 1
        work = pm.checkouts_dir / f"publish-{build_id}-{secrets.token_hex(4)}"
        try:
            try:
                await sources.checkout(p.repo_url, b.commit_sha, work, pm.policy)
            except sources.SourceError as e:
                raise Conflict(f"The repository could not be read at commit {b.commit_sha[:10]} "
                               f"({e}); nothing was published.") from None  # fmt: skip
            meta = await self.meta_runner.run(work)
            try:
                runtime = await asyncio.to_thread(find_runtime, work)
            except RuntimeError_ as e:
                raise Conflict(f"{e} Nothing was published.") from None
            slug = pub.slug if pub else make_slug(meta.get("title") or p.title, p.id)
            target = self.root / slug / f"v{version}"
            staging = self.root / slug / f".staging-v{version}-{secrets.token_hex(4)}"
            published_at = datetime.now(UTC)
            try:
                files = await asyncio.to_thread(
                    self._assemble, staging, html, work, b.job_id, runtime.files, data
                )
            except BookTooLarge:
                await asyncio.to_thread(shutil.rmtree, staging, True)
                raise Conflict(f"The book and the repository's files are larger than "
                               f"{self.book_size_limit >> 20} MB, the most a published version "
                               "may hold; nothing was published.") from None  # fmt: skip
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, staging, True)
                raise
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        book_sha, book_files, book_bytes, runtime_files, datasets = files
        title = meta.get("title") or p.title or p.repo_url
        names = " ".join(a.get("name", "") for a in meta.get("authors") or [])
        search = " ".join([title, names, *(meta.get("keywords") or [])]).lower()
        row = dict(
            version=version, build_id=build_id, commit_sha=b.commit_sha, runtime_key=rt.key,
            runtime_backend=rt.backend, runtime_location=rt.location,
            python_version=rt.python_version, book_engine=b.book_engine, book_sha256=book_sha,
            book_files=book_files, book_bytes=book_bytes, datasets=datasets,
            runtime_files=runtime_files, meta=meta, title=title[:1000], search_text=search[:20000],
            published_by=actor.name, published_at=published_at,
        )  # fmt: skip
        # a directory without a row is what a crash between the two leaves: never published
        await asyncio.to_thread(_replace_dir, staging, target)
        try:
            async with self.db.session() as s:
                if pub is None:
                    pub = Publication(slug=slug, preprint_id=p.id, owner=p.owner,
                                      repo_url=p.repo_url, created_at=published_at)  # fmt: skip
                    s.add(pub)
                    await s.flush()
                else:
                    pub = await s.get(Publication, pub.id)
                env_id, env_job = await self._launch_environment(s, p, pub.slug, version, b, rt)
                v = PublishedVersion(publication_id=pub.id, environment_id=env_id, **row)
                s.add(v)
                await s.flush()
                for d in datasets:
                    await s.execute(published_datasets.insert().values(version_id=v.id,
                                                                       dataset_key=d["key"]))  # fmt: skip
                r = await s.get(Review, p.id)
                before = r.status
                r.status, r.updated_at = PUBLISHED, published_at
                e = self._event(p, actor, role, "accept", before, PUBLISHED, comment,
                                build_id=build_id, version=version)  # fmt: skip
                s.add(e)
                await s.commit()
        except IntegrityError as exc:
            await asyncio.to_thread(shutil.rmtree, target, True)
            log.warning("publishing preprint %s v%s: %s", p.id, version, exc)
            raise Conflict("Another publication of this preprint happened at the same time; "
                           "reload and check its versions.") from None  # fmt: skip
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, target, True)
            raise
        await asyncio.to_thread(_point_latest, self.root / slug, version)
        log.info("published preprint %s as %s v%s (build %s, commit %s)", p.id, slug, version,
                 build_id, b.commit_sha)  # fmt: skip
        if env_id is not None:
            channel = pm.queue.logs.channel(stage_log_key(env_job, None))
            channel.write(f"Environment of published version {slug} v{version}: the runtime "
                          f"{rt.key[:16]} of build {build_id} (commit {b.commit_sha[:10]}); "
                          "nothing was built.")  # fmt: skip
            channel.close("succeeded")
        return e

    def _assemble(self, staging: Path, html: Path, checkout: Path, job_id: int,
                  runtime: dict[str, bytes],
                  data: list[tuple[str, str, dict, int | None]]) -> tuple:  # fmt: skip
        """A version's files in `staging` (made read-only): book/, source/ (the repository at
        the commit, without .git: a version outlives its repository, and a launch needs its
        files), runtime/, logs/. Returns (book sha256, files, bytes, runtime files
        [{name, size_bytes, sha256}], datasets)."""
        staging.mkdir(parents=True)
        book_files, book_bytes = copy_book(html, staging / "book", self.book_size_limit)
        book_sha, _n, _size = tree_digest(staging / "book")
        copy_book(checkout, staging / "source", self.book_size_limit - book_bytes,
                  skip=frozenset({".git"}))  # fmt: skip
        runtime_files = []
        for name in sorted(runtime):
            dest = (staging / "runtime" / name).resolve()
            if not dest.is_relative_to((staging / "runtime").resolve()):
                continue  # (find_runtime gives relative names; keep it so)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(runtime[name])
            runtime_files.append({"name": name, "size_bytes": len(runtime[name]),
                                  "sha256": hashlib.sha256(runtime[name]).hexdigest()})  # fmt: skip
        (staging / "logs").mkdir()
        for stage in STAGE_LOGS:
            src = self.preprints.queue.logs.path(stage_log_key(job_id, stage))
            dest = staging / "logs" / f"{stage}.log"
            if src.is_file():
                shutil.copyfile(src, dest)
            else:
                dest.write_bytes(b"")
        datasets = []
        for key, project, requirement, size in data:
            sha, files, nbytes = tree_digest(self.datasets.path(key, project))
            src = (requirement or {}).get("src")
            datasets.append({
                "key": key, "project_name": project,
                "source": str(src)[:500] if src is not None else None,
                "size_bytes": size if size is not None else nbytes,
                "files": files, "sha256": sha,
            })  # fmt: skip
        _read_only(staging)
        return book_sha, book_files, book_bytes, runtime_files, datasets

    async def _launch_environment(self, s, p: Preprint, slug: str, version: int, b: Build,
                                  rt: Runtime) -> tuple[int | None, int | None]:  # fmt: skip
        """The author's environment on the version's runtime, ready at once (the runtime is
        built): what `launch/{slug}` opens. Named <slug>-v<N> (a suffix if the name is taken)."""
        base = f"{slug[:52]}-v{version}"
        taken = set((await s.scalars(select(Environment.name).where(
            Environment.owner == p.owner, Environment.name.like(f"{base}%")))).all())  # fmt: skip
        name = next((n for n in [base, *(f"{base}-{i}" for i in range(2, 100))]
                     if n not in taken), None)  # fmt: skip
        if name is None:
            return None, None
        now = datetime.now(UTC)
        env = Environment(name=name, owner=p.owner, repo_url=p.repo_url, ref=b.commit_sha,
                          commit_sha=b.commit_sha, runtime_key=rt.key, created_at=now)  # fmt: skip
        s.add(env)
        await s.flush()
        job = Job(kind="environment", owner=p.owner, status=JobStatus.succeeded,
                  environment_id=env.id, attempts=0, created_at=now, started_at=now,
                  finished_at=now,
                  params={"commit": b.commit_sha, "published": f"{slug} v{version}"})  # fmt: skip
        s.add(job)
        await s.flush()
        return env.id, job.id

    # -- emails ----------------------------------------------------------------------------

    def _page(self, path: str) -> str:
        return f"{self.public_url}{self.base_url}{path}"

    async def _notify(self, p: Preprint, e: ReviewEvent, extra: Sequence[str] = ()) -> None:
        """Email the event to those concerned: the author's address, the reviewers' and the
        editors' (c.NeuroLibre.editors_email). Sent in the background: a slow SMTP server
        does not hold the request."""
        if not self.mailer.enabled:
            return
        async with self.db.session() as s:
            reviewers = await self._reviewers(s, p.id)
            pub = await s.scalar(select(Publication).where(Publication.preprint_id == p.id))
        to = [p.email, *(a.email for a in reviewers), *self.editors_email, *extra]
        to = list(dict.fromkeys(a for a in to if a))
        if not to:
            return
        title = " ".join((p.title or p.repo_url).split())[:150]
        what = VERBS.get(e.kind, e.kind)
        subject = {
            "submit": "submitted for review", "screen": "review started",
            "request_changes": "changes requested", "accept": f"published as version {e.version}",
            "reject": "rejected", "withdraw": "withdrawn", "comment": f"comment from {e.actor}",
            "assign": "reviewer assigned", "unassign": "reviewer removed",
        }.get(e.kind, e.kind)  # fmt: skip
        lines = [
            f"{title}", f"Preprint {p.id} by {p.owner} ({p.repo_url})", "",
            f"{e.actor} ({e.role}) {what} on {aware(e.created_at):%Y-%m-%d at %H:%M UTC}.",
        ]  # fmt: skip
        if e.from_status != e.to_status:
            lines.append(f"Status: {_label(e.from_status)} -> {_label(e.to_status)}")
        elif e.to_status:
            lines.append(f"Status: {_label(e.to_status)}")
        if e.build_id and e.kind == "submit":
            lines.append(f"Build under review: {e.build_id}; its preview: "
                         f"{self._page(f'builds/{e.build_id}/preview/')}")  # fmt: skip
        if e.comment:
            lines += ["", "Comment:", e.comment]
        if e.kind == "accept" and pub is not None:
            lines += ["", f"Published: {self._page(f'p/{pub.slug}/v{e.version}/')}"]
        lines += ["", f"The preprint's page (review, comments): {self._page(f'preprints/{p.id}')}"]
        body = "\n".join(lines) + "\n"
        for address in to:
            msg = self.mailer.message(address, f"NeuroLibre: {title}: {subject}", body)
            task = asyncio.create_task(self._send(msg, address, e.id))
            self._mails.add(task)
            task.add_done_callback(self._mails.discard)

    async def _send(self, msg: EmailMessage, address: str, event_id: int) -> None:
        try:
            await self.mailer.send(msg)
        except Exception as exc:  # the SMTP server's own words, for the operator
            log.warning("email of review event %s to %s not sent: %s: %s", event_id, address,
                        type(exc).__name__, exc)  # fmt: skip

    # -- the public side ---------------------------------------------------------------------

    def version_dir(self, slug: str, version: int) -> Path:
        if not SLUG_RE.fullmatch(slug):
            raise NotFound(f"No published preprint {slug!r}.")
        return self.root / slug / f"v{version}"

    async def gallery(self, query: str = "", *, limit: int = 20,
                      offset: int = 0) -> tuple[list[tuple[Publication, PublishedVersion]], int]:  # fmt: skip
        """Published preprints (their latest version), newest first; `query` matches words of
        titles, authors and keywords (every word must match)."""
        terms = (query or "").lower().split()[:10]
        latest = (select(PublishedVersion.publication_id,
                         func.max(PublishedVersion.version).label("v"))
                  .group_by(PublishedVersion.publication_id).subquery())  # fmt: skip
        where = [PublishedVersion.search_text.like(f"%{_like(t)}%", escape="\\") for t in terms]
        stmt = (
            select(Publication, PublishedVersion)
            .join(latest, latest.c.publication_id == Publication.id)
            .join(PublishedVersion, and_(PublishedVersion.publication_id == Publication.id,
                                         PublishedVersion.version == latest.c.v))
            .where(*where)
        )  # fmt: skip
        async with self.db.session() as s:
            total = await s.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = (await s.execute(
                stmt.order_by(PublishedVersion.published_at.desc(), PublishedVersion.id.desc())
                .limit(limit).offset(offset))).all()  # fmt: skip
        return [(pub, v) for pub, v in rows], total or 0

    async def publication(self, slug: str) -> tuple[Publication, list[PublishedVersion]]:
        """A publication and its versions, newest first."""
        if not SLUG_RE.fullmatch(slug or ""):
            raise NotFound(f"No published preprint {slug!r}.")
        async with self.db.session() as s:
            pub = await s.scalar(select(Publication).where(Publication.slug == slug))
            versions = [] if pub is None else list((await s.scalars(
                select(PublishedVersion).where(PublishedVersion.publication_id == pub.id)
                .order_by(PublishedVersion.version.desc()))).all())  # fmt: skip
        if pub is None or not versions:
            raise NotFound(f"No published preprint {slug!r}.")
        return pub, versions

    async def version(self, slug: str, number: int | None
                      ) -> tuple[Publication, PublishedVersion, list[PublishedVersion]]:  # fmt: skip
        pub, versions = await self.publication(slug)
        if number is None:
            return pub, versions[0], versions
        for v in versions:
            if v.version == number:
                return pub, v, versions
        raise NotFound(f"{slug} has no version {number} (its latest is {versions[0].version}).")

    def version_dict(self, pub: Publication, v: PublishedVersion, site: str = "") -> dict:
        """What readers and tools get: api/published/{slug} and the landing pages."""
        meta = v.meta or {}
        url = f"p/{pub.slug}/v{v.version}/"
        d = {
            "slug": pub.slug, "version": v.version, "url": url,
            "book_url": f"{url}book/", "launch_url": f"launch/{pub.slug}?version={v.version}",
            "title": v.title, "subtitle": meta.get("subtitle"),
            "authors": meta.get("authors") or [], "affiliations": meta.get("affiliations") or [],
            "summary": meta.get("summary"), "keywords": meta.get("keywords") or [],
            "date": meta.get("date"), "license": meta.get("license"),
            "code_license": meta.get("code_license"),
            "published_at": iso_utc(v.published_at),
            "repository": pub.repo_url, "repository_url": web_url(pub.repo_url),
            "commit": v.commit_sha, "commit_url": commit_url(pub.repo_url, v.commit_sha),
            "environment": {
                "runtime_key": v.runtime_key, "backend": v.runtime_backend,
                "python_version": v.python_version, "environment_id": v.environment_id,
                # an image name is public; a local virtual environment's path is the server's
                "image": v.runtime_location if v.runtime_backend != "local" else None,
            },
            "runtime_files": v.runtime_files or [],
            "datasets": v.datasets or [],
            "book": {"engine": v.book_engine, "sha256": v.book_sha256, "files": v.book_files,
                     "size_bytes": v.book_bytes},
            "logs": {stage: f"{url}logs/{stage}.log" for stage in STAGE_LOGS},
        }  # fmt: skip
        d["citation"] = citation(d, site + self.base_url)
        return d


# -- helpers -------------------------------------------------------------------------------------


def _past(kind: str) -> str:
    return {"withdraw": "withdrawn", "screen": "screened", "request_changes": "sent back for "
            "changes", "reject": "rejected", "accept": "accepted"}.get(kind, kind)  # fmt: skip


def _label(status: str | None) -> str:
    return status.replace("_", " ") if status else "not submitted"


def _like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _read_only(top: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)  # noqa: S103 (public files, inside the 0700 data directory)


def _replace_dir(staging: Path, target: Path) -> None:
    """staging becomes target; a target already there has no SQL row (a crash between the
    rename and the commit), so it was never published: it goes."""
    if target.exists():
        _make_writable(target)
        shutil.rmtree(target)
    staging.rename(target)


def _make_writable(top: Path) -> None:
    for dirpath, _dirnames, _filenames in os.walk(top):
        os.chmod(dirpath, 0o755)  # noqa: S103 (only to delete it)


def _point_latest(pub_dir: Path, version: int) -> None:
    """DATA/published/<slug>/latest -> v<N>, replaced at once (for a web server serving the
    unversioned book straight from disk)."""
    tmp = pub_dir / f".latest-{secrets.token_hex(4)}"
    tmp.symlink_to(f"v{version}")
    os.replace(tmp, pub_dir / "latest")


def _bib(value: Any) -> str:
    text = " ".join(str(value or "").split())
    text = text.replace("\\", "").replace("{", "").replace("}", "")
    return re.sub(r"([&%$#_])", r"\\\1", text)


def _initials(name: str) -> str:
    """ "Ada M. Researcher" -> "Researcher, A. M."; "Researcher, Ada" -> "Researcher, A."."""
    if "," in name:
        family, _, given = name.partition(",")
    else:
        parts = name.split()
        family, given = (parts[-1], " ".join(parts[:-1])) if len(parts) > 1 else (name, "")
    initials = " ".join(f"{g[0]}." for g in given.replace("-", " ").split() if g)
    return f"{family.strip()}, {initials}" if initials else family.strip()


def citation(d: dict, site_base: str) -> dict:
    """BibTeX and a formatted reference (APA-like) of a published version."""
    year = (d.get("published_at") or "")[:4]
    url = f"{site_base}{d['url']}"
    names = [a["name"] for a in d["authors"]]
    key = f"neurolibre-{d['slug']}-v{d['version']}"
    fields = [
        ("title", "{" + _bib(d["title"]) + "}"),
        ("author", " and ".join(_bib(n) for n in names) or "NeuroLibre"),
        ("year", year),
        ("version", str(d["version"])),
        ("publisher", "NeuroLibre"),
        ("howpublished", "Living preprint"),
        ("url", url),
        ("note", f"Commit {d['commit'][:12]}"),
    ]
    bibtex = f"@misc{{{key},\n" + "".join(f"  {k} = {{{v}}},\n" for k, v in fields) + "}\n"
    people = [_initials(n) for n in names]
    if len(people) > 1:
        who = ", ".join(people[:-1]) + ", & " + people[-1]
    else:
        who = people[0] if people else "NeuroLibre"
    text = f"{who} ({year}). {d['title']} (Version {d['version']}) [Living preprint]. NeuroLibre. {url}"
    return {"bibtex": bibtex, "text": text, "url": url}
