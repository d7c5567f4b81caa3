"""Servers: the page with direct launch links, the JSON API, and the spawner's questions."""

from __future__ import annotations

import asyncio
import hmac
import os
from pathlib import Path

from tornado import web

from ..environments.docker import memory_bytes
from ..environments.local import ensure_kernelspec
from ..environments.service_envs import ServiceEnvironmentError
from ..errors import UserError
from ..launch import environment_readable
from ..sandbox import chown_tree
from .base import APIHandler, BaseHandler, row_id


def _env_id(raw: str | None) -> int:
    """An environment's number from a form, a link or a JSON body."""
    digits = (raw or "").strip()
    if not (digits.isascii() and digits.isdigit()):
        raise UserError(f"Unknown environment {raw!r}: give an environment's number.")
    return row_id(digits, "environment")


class ServersPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        user = self.user_name
        env = self.get_argument("environment", None)
        if env is not None:
            # a direct link: start, reopen or restart the named server on this environment
            name = self.get_argument("name", "")
            url = await self.nl.servers.launch(user, name, _env_id(env),
                                               self.get_argument("path", ""))  # fmt: skip
            self.redirect(url)
            return
        self.render_template(
            "servers.html",
            servers=await self.nl.servers.list(user),
            environments=await self.nl.servers.ready_environments(user),
            server_url=self.nl.servers.server_url,
        )


class ServersAPI(APIHandler):
    async def get(self) -> None:
        user = self.require_user()
        self.write_json(await self.nl.servers.list(user["name"]))

    async def post(self) -> None:
        user = self.require_user()
        body = self.body()
        name = str(body.get("name", ""))
        code = await self.nl.servers.start(
            user["name"], name, _env_id(str(body.get("environment")))
        )
        self.write_json({"name": name, "started": code == 201,
                         "url": self.nl.servers.server_url(user["name"], name)}, 202)  # fmt: skip


class ServerAPI(APIHandler):
    async def delete(self, name: str) -> None:
        user = self.require_user()
        remove = self.get_argument("remove", "false").lower() in ("1", "true", "yes")
        await self.nl.servers.stop(user["name"], name, remove)
        self.set_status(204)
        self.finish()


class SpawnerAPI(APIHandler):
    """Answers the hub's spawner, which authenticates with this service's own API token."""

    public = True

    async def prepare(self) -> None:
        await super().prepare()
        expected = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        auth = self.request.headers.get("Authorization", "")
        token = auth.split(None, 1)[1] if " " in auth else ""
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            raise web.HTTPError(403, "Only the hub's spawner may ask this.")

    async def get(self, env_id: str | None = None) -> None:
        user = self.get_argument("user")
        if env_id is None:
            self.write_json(await self.nl.servers.ready_environments(user))
            return
        number = row_id(env_id, "environment")
        server_name = self.get_argument("server", "")
        raw_version = self.get_argument("version", None)
        source: Path | None = None
        if raw_version is not None:
            # a published version: anyone may run it, on the version's own environment
            pub, v = await self.nl.servers.published_version(row_id(raw_version, "version"))
            if v.environment_id != number:
                raise UserError(f"Version {v.id} does not run on environment {number}.")
            env, info = await self.nl.servers.ready_environment(number, user, admin=True)
            source = self.nl.publishing.version_dir(pub.slug, v.version) / "source"
            datasets = [{"project_name": d["project_name"],
                         "path": str(self.nl.datasets.path(d["key"], d["project_name"]))}
                        for d in v.datasets or []]  # fmt: skip
        else:
            env, info = await self.nl.servers.ready_environment(number, user)
            datasets = await self.nl.preprints.datasets_for(env)
        spec = {
            "id": env.id, "name": env.name, "owner": env.owner,
            "backend": env.runtime.backend, "location": env.runtime.location,
            "python_version": env.runtime.python_version,
            "cpu_limit": info["cpu_limit"], "mem_limit": info["mem_limit"],
            "datasets": datasets,
        }  # fmt: skip
        # the server's own directory: the version's files, the datasets' mount points. An
        # image's plain server keeps the image's own home (its files are the image's)
        image = env.runtime.backend != "local"
        if not image or raw_version is not None:
            workdir = await self.nl.server_files.prepare(
                user, server_name, source, [(d["project_name"], Path(d["path"])) for d in datasets]
            )
            if image:  # the container's user writes it (repo2docker's --user-id)
                uid = int(getattr(self.nl.builder_impl, "user_id", 1000))
                await asyncio.to_thread(chown_tree, workdir, uid, uid)
            spec["workdir"] = str(workdir)
        # temporary readers open their server with the launch's token in the URL, once
        spec["token_in_url"] = await self.nl.servers.is_reader(user)
        if env.runtime.backend == "local":
            # two environments per server: the service's server stack runs the author's kernel
            try:
                server = await self.nl.server_environment()
            except ServiceEnvironmentError as e:
                # its first line: the rest (the installer's output) is in the service's log
                message = str(e).splitlines()[0].rstrip(":.") + "."
                if "service's log" not in message:
                    message += " The operator can see why in the service's log."
                raise UserError(f"{message} No server can start until it is built.",
                                503) from None  # fmt: skip
            spec["server"] = str(server.prefix)
            # environments built before the service wrote their kernelspec get it now
            await asyncio.to_thread(ensure_kernelspec, Path(env.runtime.location))
            # the server runs confined, as builds do (empty when the operator chose none)
            location = Path(env.runtime.location)
            spec["confine"] = self.nl.server_files.confine(
                workdir,
                environment_readable(location, server.prefix, server.base_prefix),
                [(d["project_name"], Path(d["path"])) for d in datasets],
                memory_bytes(info["mem_limit"]) if info["mem_limit"] else None,
            )
        self.write_json(spec)
