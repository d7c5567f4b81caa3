"""The hub's REST API, called with the service's own token (scopes: read:users, admin:servers)."""

from __future__ import annotations

import os
from urllib.parse import quote

import httpx


class HubAPIError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HubAPI:
    def __init__(self, api_url: str | None = None, token: str | None = None):
        self.api_url = (api_url or os.environ.get("JUPYTERHUB_API_URL", "")).rstrip("/")
        self._token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.client = httpx.AsyncClient(
            timeout=30, headers={"Authorization": f"token {self._token}"}
        )

    async def _request(self, method: str, path: str, **kw) -> httpx.Response:
        r = await self.client.request(method, f"{self.api_url}/{path}", **kw)
        if r.status_code >= 400:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise HubAPIError(r.status_code, message)
        return r

    async def user(self, name: str, include_stopped: bool = False) -> dict:
        """The hub's user model; its `servers` are the running and pending ones, and with
        include_stopped the named servers that exist but are stopped too."""
        params = {"include_stopped_servers": "1"} if include_stopped else None
        return (await self._request("GET", f"users/{quote(name, safe='')}", params=params)).json()

    async def start_server(self, user: str, server: str, options: dict) -> int:
        r = await self._request("POST", f"users/{quote(user, safe='')}/servers/{quote(server, safe='')}",
                                json=options)  # fmt: skip
        return r.status_code

    async def stop_server(self, user: str, server: str, remove: bool = False) -> int:
        if not server:  # the default server has its own path, and cannot be removed
            r = await self._request("DELETE", f"users/{quote(user, safe='')}/server")
            return r.status_code
        r = await self._request("DELETE", f"users/{quote(user, safe='')}/servers/{quote(server, safe='')}",
                                json={"remove": remove})  # fmt: skip
        return r.status_code

    async def close(self) -> None:
        await self.client.aclose()
