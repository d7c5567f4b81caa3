"""launch/{slug}[?version=N&path=...]: one-click launch of a published version, for anyone.

A signed-in reader gets a named server of their own on the version (`<slug>-v<N>`). A reader
without an account gets a temporary hub user and a token for this launch (launch.py): the page
shows the server starting and reloads itself until it answers, then sends the browser to the
server with the token in the URL (the server takes it once and sets its own cookie). The
browser keeps which temporary user is its own in a signed cookie, so a reload does not start
another server.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from ..errors import Conflict
from ..launch import READER_RE, LimitReached
from ..servers import check_path
from .public import PublicPage, version_number

COOKIE = "neurolibre-launch"


class LaunchHandler(PublicPage):
    async def get(self, slug: str) -> None:
        number = version_number(self.get_argument("version", None))
        path = check_path(self.get_argument("path", ""))
        p, v, _versions = await self.nl.publishing.version(slug, number)
        if v.environment_id is None:
            raise Conflict(f"{p.slug} v{v.version} has no environment to launch.")
        user = await self.hub_auth.get_user(self, sync=False)
        if user:
            url = await self.nl.servers.launch(user["name"], f"{p.slug[:50]}-v{v.version}",
                                               v.environment_id, path, version=v.id)  # fmt: skip
            self.redirect(url)
            return
        mine = self._mine(v.id)
        state = await self.nl.readers.state(mine["user"]) if mine else None
        if state is None or state["version"] != v.id:
            try:
                name, token = await self.nl.readers.start(v)
            except LimitReached as e:
                self.set_status(e.status)
                self.render_public("launch.html", "no-store", title=v.title, slug=p.slug,
                                   version=v.version, limit=str(e), ready=False, status=None,
                                   refresh=None)  # fmt: skip
                return
            mine = {"user": name, "token": token, "version": v.id}
            self._remember(mine)
            state = {"ready": False, "pending": "spawn"}
        if state["ready"]:
            url = self.nl.servers.server_url(mine["user"], "", path)
            sep = "&" if "?" in url else "?"
            self.set_header("Cache-Control", "no-store")
            self.redirect(f"{url}{sep}{urlencode({'token': mine['token']})}")
            return
        query = {"version": v.version, **({"path": path} if path else {})}
        self.render_public("launch.html", "no-store", title=v.title, slug=p.slug,
                           version=v.version, limit=None, ready=False,
                           status=state.get("pending") or "starting",
                           refresh=f"{self.nl.base_url}launch/{quote(p.slug)}?{urlencode(query)}")  # fmt: skip

    def _mine(self, version_id: int) -> dict | None:
        raw = self.get_signed_cookie(COOKIE, max_age_days=1)
        try:
            launches = json.loads(raw or b"{}")
        except ValueError:
            return None
        mine = launches.get(str(version_id)) if isinstance(launches, dict) else None
        if not isinstance(mine, dict) or not READER_RE.fullmatch(str(mine.get("user", ""))):
            return None
        return mine

    def _remember(self, mine: dict) -> None:
        # one launch per version in this browser (the last one)
        self.set_signed_cookie(COOKIE, json.dumps({str(mine["version"]): mine}),
                               expires_days=1, httponly=True, samesite="Lax",
                               path=self.nl.base_url)  # fmt: skip
