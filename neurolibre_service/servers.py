"""Users' hub servers on environments, and the direct launch links that start or reopen them."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from .db import Environment, Publication, PublishedVersion
from .environments.manager import EnvironmentManager
from .errors import Conflict, NotFound, UserError
from .hubapi import HubAPI, HubAPIError

READERS_GROUP = "neurolibre-readers"  # temporary readers (launch.py)

log = logging.getLogger("neurolibre.servers")
SERVER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_server_name(name: str) -> str:
    if not SERVER_NAME_RE.fullmatch(name or ""):
        raise UserError("A server name is 1-63 letters, digits, '.', '_' or '-'.")
    return name


def check_path(path: str) -> str:
    """A notebook path inside the server: relative, without '..'."""
    path = (path or "").strip().lstrip("/")
    if any(part in ("..", "") for part in path.split("/")) and path:
        raise UserError("The path must be relative to the server's root, without '..'.")
    return path


class Servers:
    def __init__(self, hub: HubAPI, environments: EnvironmentManager, hub_base_url: str,
                 answer_wait: float = 1.0):  # fmt: skip
        self.hub = hub
        self.answer_wait = answer_wait
        self._starting: set[asyncio.Future] = set()
        self.environments = environments
        self.base = hub_base_url.rstrip("/") + "/"

    def _started(self, start: asyncio.Future) -> None:
        self._starting.discard(start)
        if not start.cancelled() and start.exception() is not None:
            # the user is on the hub's progress page by now, which shows the failure
            log.warning("starting a server failed after the link answered: %s", start.exception())

    def server_url(self, user: str, name: str, path: str = "") -> str:
        url = f"{self.base}user/{quote(user, safe='')}/"
        url += f"{quote(name, safe='')}/" if name else ""  # "": the default server
        return url + (f"lab/tree/{quote(path)}" if path else "")

    def pending_url(self, user: str, name: str, next_url: str) -> str:
        return (f"{self.base}hub/spawn-pending/{quote(user, safe='')}/{quote(name, safe='')}?"
                + urlencode({"next": next_url}))  # fmt: skip

    async def list(self, user: str) -> list[dict]:
        model = await self.hub.user(user)
        out = []
        for name, s in sorted((model.get("servers") or {}).items()):
            out.append({
                "name": name,
                "ready": bool(s.get("ready")),
                "pending": s.get("pending"),
                "url": s.get("url"),
                "environment": (s.get("user_options") or {}).get("environment"),
                "started": s.get("started"),
                "last_activity": s.get("last_activity"),
            })  # fmt: skip
        return out

    async def ready_environments(self, user: str) -> list[dict]:
        """The user's environments that can run a server now (for forms and the spawner)."""
        envs, _ = await self.environments.list(user, admin=False, limit=1000)
        return [e for e in envs if e["status"] == "ready"]

    async def ready_environment(self, env_id: int, user: str,
                                admin: bool = False) -> tuple[Environment, dict]:  # fmt: skip
        """The user's own environment (anyone's with admin: a published version's), if it is
        ready to run a server; else a clear error."""
        env, job = await self.environments.get(env_id, user, admin=admin)
        info = self.environments.to_dict(env, job)
        if info["status"] != "ready" or env.runtime is None:
            detail = f": {info['error']}" if info["error"] else ""
            raise Conflict(f"Environment {env_id} ({env.name}) is {info['status']}{detail}; "
                           "only a ready environment can run a server.")  # fmt: skip
        return env, info

    async def published_version(self, version_id: int) -> tuple[Publication, PublishedVersion]:
        async with self.environments.db.session() as s:
            v = await s.get(PublishedVersion, version_id)
            pub = await s.get(Publication, v.publication_id) if v is not None else None
        if v is None or pub is None:
            raise NotFound(f"No published version {version_id}.")
        return pub, v

    async def is_reader(self, user: str) -> bool:
        """Whether the user is a temporary reader the service created (its hub group)."""
        try:
            model = await self.hub.user(user)
        except (HubAPIError, httpx.HTTPError):
            return False
        return READERS_GROUP in (model.get("groups") or [])

    async def start(self, user: str, name: str, env_id: int) -> int:
        check_server_name(name)
        await self.ready_environment(env_id, user)
        try:
            return await self.hub.start_server(user, name, {"environment": env_id})
        except HubAPIError as e:
            raise UserError(f"The hub refused to start {name!r}: {e}", e.status) from None

    async def stop(self, user: str, name: str, remove: bool) -> None:
        check_server_name(name)
        try:
            await self.hub.stop_server(user, name, remove)
        except HubAPIError as e:
            if e.status == 404:
                raise NotFound(f"You have no server named {name!r}.") from None
            raise UserError(f"The hub refused: {e}", e.status) from None

    async def stop_on_environment(self, env: Environment) -> dict[str, Any]:
        """Stop and remove the owner's servers on an environment being deleted: its runtime may
        be removed next, and no server may keep pointing at an environment that is gone.

        Only the owner's servers can run on it (the spawner asks for the owner's environment).
        """
        stopped: list[str] = []
        not_stopped: list[dict[str, str]] = []
        try:
            # stopped ones too: they would start again on an environment that is gone
            servers = (await self.hub.user(env.owner, include_stopped=True)).get("servers") or {}
        except (HubAPIError, httpx.HTTPError) as e:
            not_stopped.append({"name": "*", "reason": f"The hub could not list them: {e}"})
            servers = {}
        for name, s in sorted(servers.items()):
            if str((s.get("user_options") or {}).get("environment")) != str(env.id):
                continue
            try:
                await self.hub.stop_server(env.owner, name, remove=True)
            except (HubAPIError, httpx.HTTPError) as e:
                log.warning("server %r of %s on deleted environment %d: %s",
                            name, env.owner, env.id, e)  # fmt: skip
                not_stopped.append({"name": name, "reason": str(e) or type(e).__name__})
            else:
                stopped.append(name)
        return {"servers_stopped": stopped, "servers_not_stopped": not_stopped}

    async def launch(self, user: str, name: str, env_id: int, path: str = "",
                     version: int | None = None) -> str:  # fmt: skip
        """Where a direct link sends the user: the running server, or its progress page.
        With a published version's id: its environment (anyone's) and files."""
        check_server_name(name)
        path = check_path(path)
        await self.ready_environment(env_id, user, admin=version is not None)
        options: dict[str, int] = {"environment": env_id}
        if version is not None:
            options["version"] = version
        target = self.server_url(user, name, path)
        servers = (await self.hub.user(user)).get("servers") or {}
        current = servers.get(name)
        if current and (current.get("ready") or current.get("pending")):
            on = (current.get("user_options") or {}).get("environment")
            on_version = (current.get("user_options") or {}).get("version")
            if str(on) != str(env_id) or on_version != version:
                raise Conflict(
                    f"Your server {name!r} is running on "
                    + (f"environment {on}" if on else "the default environment")
                    + f", not {env_id}. Stop it on the servers page, or use another name."
                )
            if current.get("ready"):
                return target
            return self.pending_url(user, name, target)
        # The hub answers a start only when the server is up (or after 10 s): wait just long
        # enough for it to refuse bad options, then show the progress page while it starts.
        start = asyncio.ensure_future(self.hub.start_server(user, name, options))
        self._starting.add(start)
        start.add_done_callback(self._started)
        try:
            await asyncio.wait_for(asyncio.shield(start), self.answer_wait)
        except TimeoutError:
            pass
        except HubAPIError as e:
            raise UserError(f"The hub could not start {name!r}: {e}", e.status) from None
        return self.pending_url(user, name, target)
