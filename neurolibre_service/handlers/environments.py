"""Environments: the page and the JSON API (list, create, get, delete, rebuild, cancel)."""

from __future__ import annotations

import asyncio
from typing import Any

from tornado import web

from .base import APIHandler, BaseHandler, page_args, row_id


async def builder_health(handler: BaseHandler) -> dict[str, Any]:
    """The builder backend and what it depends on (its engine, its BinderHub), for admins."""
    builder = handler.nl.builder_impl
    try:
        async with asyncio.timeout(15):
            health = await builder.health()
    except TimeoutError:
        health = {"ok": False, "error": "No answer within 15 s."}
    return {"backend": builder.backend, "health": health}


class EnvironmentsPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        limit, offset = page_args(self)
        envs, total = await self.nl.environments.list(self.user_name, self.is_admin,
                                                      limit=limit, offset=offset)  # fmt: skip
        self.render_template(
            "environments.html",
            environments=envs,
            total=total,
            offset=offset,
            limit=limit,
            builder=await builder_health(self) if self.is_admin else None,
            profiles=self.nl.machine_profiles,
            default_cpu=self.nl.default_cpu_limit,
            default_memory=self.nl.default_memory_limit,
        )


class EnvironmentsAPI(APIHandler):
    async def get(self) -> None:
        user = self.require_user()
        limit, offset = page_args(self)
        envs, total = await self.nl.environments.list(user["name"], self.is_admin,
                                                      limit=limit, offset=offset)  # fmt: skip
        self.write_page(envs, total, limit, offset, "api/environments")

    async def post(self) -> None:
        user = self.require_user()
        body = self.body()
        env = await self.nl.environments.create(
            user["name"],
            name=str(body.get("name", "")),
            repository=str(body.get("repository", "")),
            ref=str(body.get("ref") or "HEAD"),
            profile=body.get("profile") or None,
            cpu_limit=body.get("cpu_limit"),
            mem_limit=body.get("mem_limit"),
        )
        self.set_header("Location", f"{self.nl.base_url}api/environments/{env['id']}")
        self.write_json(env, status=201)


class EnvironmentAPI(APIHandler):
    async def get(self, env_id: str) -> None:
        user = self.require_user()
        ident = row_id(env_id, "environment")
        env, job = await self.nl.environments.get(ident, user["name"], self.is_admin)
        self.write_json(self.nl.environments.to_dict(env, job))

    async def delete(self, env_id: str) -> None:
        """Delete it, and stop (and remove) the servers running on it; the answer names them."""
        user = self.require_user()
        ident = row_id(env_id, "environment")
        servers = await self.nl.environments.delete(
            ident, user["name"], self.is_admin, stop_servers=self.nl.servers.stop_on_environment
        )
        self.write_json({"id": ident, "deleted": True, **servers})


class EnvironmentActionAPI(APIHandler):
    async def post(self, env_id: str, action: str) -> None:
        user = self.require_user()
        envs = self.nl.environments
        ident = row_id(env_id, "environment")
        if action == "rebuild":
            self.write_json(await envs.rebuild(ident, user["name"], self.is_admin), 202)
        else:
            self.write_json(await envs.cancel(ident, user["name"], self.is_admin))


class BuilderAPI(APIHandler):
    """The builder backend's health (e.g. its BinderHub's /health): admins only."""

    async def get(self) -> None:
        self.require_admin()
        body = await builder_health(self)
        health = body["health"]
        self.write_json(body, 200 if health is None or health.get("ok") else 503)
