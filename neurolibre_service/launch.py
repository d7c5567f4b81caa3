"""Servers on preprints: each server's own copy of the files, confinement, and readers' launches.

A server started on an environment gets a working directory the service owns and lends to
that server alone: DATA/servers/<user>/<server>/, a copy of a published version's files (or
empty on a bare environment), with each dataset bound read-only at data/<projectName>. On the
local spawner the server runs confined like builds (bubblewrap, the unprivileged build user):
it writes only its copy and reads the service's server stack, the author's environment and
their Pythons; the service's data directory (other copies, the database, tokens) is hidden.

A reader without an account launches a published version on a temporary hub user (a member
of the hub group `neurolibre-readers`, created here), with a token for that launch, within the
operator's limits; the service removes those users and their copies once their server is gone
or too old.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select

from .books import with_ro_binds
from .db import PublishedVersion
from .environments.local import base_prefixes
from .errors import UserError
from .hubapi import HubAPI, HubAPIError
from .sandbox import Limits, Sandbox
from .servers import READERS_GROUP

log = logging.getLogger("neurolibre.launch")
READER_RE = re.compile(r"reader-[0-9a-f]{12}")


class LimitReached(UserError):
    pass


def _dir_name(value: str) -> str:
    """A hub name as one safe path component (names may hold any character)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", value)[:40]
    return f"{safe}-{hashlib.sha256(value.encode()).hexdigest()[:12]}"


def _copy_tree(source: Path | None, target: Path) -> None:
    """The reader's copy: the version's files (links kept as links, never followed), writable."""
    if source is not None and source.is_dir():
        shutil.copytree(source, target, symlinks=True)
        for root, dirs, files in os.walk(target):
            for name in [*dirs, *files]:
                p = os.path.join(root, name)
                if not os.path.islink(p):
                    os.chmod(p, os.lstat(p).st_mode | 0o600 | (0o100 if name in dirs else 0))
        os.chmod(target, 0o700)
    else:
        target.mkdir(mode=0o700)


def _data_dirs(workdir: Path, datasets: Sequence[tuple[str, Path]], link: bool) -> None:
    """workdir/data/<name> as plain directories (mount points), or links to the datasets when
    servers run unconfined: whatever the repository put there (a link, a file) is replaced, so
    a mount cannot be aimed elsewhere."""
    data = workdir / "data"
    if data.is_symlink() or (data.exists() and not data.is_dir()):
        data.unlink()
    data.mkdir(exist_ok=True)
    for name, path in datasets:
        target = data / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir() and (link or any(target.iterdir())):
            shutil.rmtree(target)
        if link:
            target.symlink_to(Path(path).resolve(), target_is_directory=True)
        else:
            target.mkdir(exist_ok=True)


class ServerFiles:
    """Per-server working directories, and the confined command a local server runs in."""

    def __init__(self, root: Path, sandbox: Sandbox):
        self.root = root
        self.sandbox = sandbox

    def workdir(self, user: str, server: str) -> Path:
        return self.root / _dir_name(user) / _dir_name(server or "default")

    async def prepare(self, user: str, server: str, source: Path | None,
                      datasets: Sequence[tuple[str, Path]]) -> Path:  # fmt: skip
        """The server's directory (made once: a restarted server keeps its reader's edits)."""
        target = self.workdir(user, server)

        def make() -> None:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not target.exists():
                staging = target.with_name(f".{target.name}-{secrets.token_hex(4)}")
                _copy_tree(source, staging)
                staging.rename(target)
            _data_dirs(target, datasets, link=not self.sandbox.confined)
            self.sandbox.lend(target)

        await asyncio.to_thread(make)
        return target

    async def remove_user(self, user: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / _dir_name(user), True)

    def confine(self, workdir: Path, readable: Sequence[Path],
                datasets: Sequence[tuple[str, Path]], memory: int | None) -> list[str]:  # fmt: skip
        """The command prefix a local server runs under: writes only workdir, reads the given
        environments, datasets read-only at workdir/data/<name>; loopback network (it talks to
        the hub). No CPU-time limit (a server lives long), memory as the environment says."""
        if not self.sandbox.confined:
            return []
        prefix = self.sandbox.wrap(
            [], writable=[workdir], readable=[r for r in dict.fromkeys(readable) if r.is_dir()],
            cwd=workdir, network=True,
            limits=Limits(memory=memory, cpu_seconds=None, processes=None),
        )  # fmt: skip
        return with_ro_binds(prefix, [(p.resolve(), workdir / "data" / n) for n, p in datasets])


def environment_readable(location: Path, server_prefix: Path, server_base: Path) -> list[Path]:
    return [server_prefix, server_base, location, *base_prefixes(location)]


class ReaderLaunches:
    """Temporary hub users for readers without an account, within the operator's limits."""

    def __init__(self, hub: HubAPI, files: ServerFiles, db, *, max_total: int,
                 max_per_preprint: int, max_age: float, answer_wait: float = 1.0):  # fmt: skip
        self.hub = hub
        self.files = files
        self.db = db
        self.max_total = max_total
        self.max_per_preprint = max_per_preprint
        self.max_age = max_age
        self.answer_wait = answer_wait
        self._group_ready = False
        self._tasks: set[asyncio.Future] = set()
        self._lock = asyncio.Lock()
        # temporary users just created: {name: (publication id, loop time)}
        self._recent: dict[str, tuple[int, float]] = {}

    async def _group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.hub._request("POST", f"groups/{READERS_GROUP}")
        except HubAPIError as e:
            if e.status != 409:  # 409: it exists
                raise
        self._group_ready = True

    async def readers(self) -> list[dict]:
        """The temporary users (the group's members), with their servers."""
        await self._group()
        group = (await self.hub._request("GET", f"groups/{READERS_GROUP}")).json()
        out = []
        for name in group.get("users") or []:
            try:
                out.append(await self.hub.user(name))
            except HubAPIError as e:
                if e.status != 404:
                    raise
        return out

    async def _publication_of(self, version_ids: set[int]) -> dict[int, int]:
        if not version_ids:
            return {}
        async with self.db.session() as s:
            rows = await s.execute(select(PublishedVersion.id, PublishedVersion.publication_id)
                                   .where(PublishedVersion.id.in_(version_ids)))  # fmt: skip
            return dict(rows.all())

    async def _check_limits(self, publication_id: int) -> None:
        readers = await self.readers()
        if len(readers) >= self.max_total:
            raise LimitReached(f"All {self.max_total} reader servers are in use. Try again in "
                               "a few minutes, or sign in to launch on your own account.",
                               503)  # fmt: skip
        versions: dict[str, int] = {}
        for u in readers:
            for s in (u.get("servers") or {}).values():
                v = (s.get("user_options") or {}).get("version")
                if isinstance(v, int):
                    versions[u["name"]] = v
        of = await self._publication_of(set(versions.values()))
        here = sum(1 for v in versions.values() if of.get(v) == publication_id)
        # launches of the last seconds whose server the hub does not list yet count too
        now = asyncio.get_running_loop().time()
        self._recent = {n: (pub, t) for n, (pub, t) in self._recent.items()
                        if now - t < 60 and n not in versions}  # fmt: skip
        here += sum(1 for pub, _t in self._recent.values() if pub == publication_id)
        if here >= self.max_per_preprint:
            raise LimitReached(f"This preprint already has {here} reader servers running, the "
                               "most allowed at once. Try again in a few minutes.", 429)  # fmt: skip

    async def start(self, v: PublishedVersion) -> tuple[str, str]:
        """A new temporary user with a token and its server starting on version v."""
        async with self._lock:  # limits are counted and taken at once
            await self._check_limits(v.publication_id)
            name = f"reader-{secrets.token_hex(6)}"
            await self.hub._request("POST", f"users/{name}")
            self._recent[name] = (v.publication_id, asyncio.get_running_loop().time())
            await self.hub._request("POST", f"groups/{READERS_GROUP}/users", json={"users": [name]})
        r = await self.hub._request("POST", f"users/{name}/tokens", json={
            "note": "NeuroLibre reader launch", "expires_in": int(self.max_age) + 600,
            "scopes": [f"access:servers!user={name}"],
        })  # fmt: skip
        token = r.json()["token"]
        start = asyncio.ensure_future(self.hub._request(
            "POST", f"users/{name}/server",
            json={"environment": v.environment_id, "version": v.id}))  # fmt: skip
        self._tasks.add(start)
        start.add_done_callback(self._started)
        try:
            await asyncio.wait_for(asyncio.shield(start), self.answer_wait)
        except TimeoutError:
            pass
        except HubAPIError as e:
            await self.remove(name)
            raise UserError(f"The server could not start: {e}", 503) from None
        return name, token

    def _started(self, start: asyncio.Future) -> None:
        self._tasks.discard(start)
        if not start.cancelled() and start.exception() is not None:
            log.warning("a reader's server failed to start: %s", start.exception())

    async def state(self, name: str) -> dict | None:
        """The reader's default server: {ready, pending, version}, or None when it is gone."""
        if not READER_RE.fullmatch(name):
            return None
        try:
            model = await self.hub.user(name)
        except HubAPIError:
            return None
        s = (model.get("servers") or {}).get("")
        if not s:
            return None
        return {"ready": bool(s.get("ready")), "pending": s.get("pending"),
                "version": (s.get("user_options") or {}).get("version")}  # fmt: skip

    async def remove(self, name: str) -> None:
        try:
            await self.hub._request("DELETE", f"users/{quote(name, safe='')}")
        except HubAPIError as e:
            if e.status != 404:
                raise
        await self.files.remove_user(name)
        log.info("removed the temporary reader %s and its files", name)

    async def sweep(self, grace: float = 15) -> list[str]:
        """Remove readers whose server is gone (stopped, culled, failed) or older than
        max_age. Returns the names removed."""
        now = datetime.now(UTC)
        removed = []
        for u in await self.readers():
            name = u["name"]
            s = (u.get("servers") or {}).get("")
            created = _time(u.get("created")) or now
            started = _time((s or {}).get("started")) or created
            gone = s is None and (now - created).total_seconds() > grace
            old = (now - started).total_seconds() > self.max_age
            if gone or old:
                try:
                    await self.remove(name)
                    removed.append(name)
                except (HubAPIError, httpx.HTTPError) as e:
                    log.warning("removing the temporary reader %s: %s", name, e)
        return removed

    async def sweep_forever(self, every: float = 60) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping temporary readers")


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
