"""A built book's files: the preview of a build, and the stable preview of a preprint.

The book's HTML and scripts come from the author, so they are served with a sandboxing CSP: an
opaque origin, whose scripts cannot read the hub's cookies or call it as the reader. Requests
from an opaque origin carry no cookies either, so a preview is reached through a signed URL:
`.../preview/PATH` checks the reader's login and sends them to `.../preview/~TOKEN/PATH`, where
the token (HMAC of what, who and until when) authorises the book's own relative requests.

Tornado's StaticFileHandler gives content types, ETags, conditional and range requests; we add
the access check and confinement that resolves symlinks (a book may hold links pointing out).

Who sees a preview: the preprint's author, editors and admins, and the reviewers assigned to it
(publishing.Publishing.may_view); anyone else gets "No preprint N", as if it did not exist. The
token's flag says whether its holder was an editor or admin when it was signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from urllib.parse import quote

from tornado import web

from ..db import Build
from ..errors import NotFound
from .base import BaseHandler, row_id
from .review import is_editor

# an opaque origin: scripts run, but cannot read the hub's cookies or call it as the reader
PREVIEW_CSP = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-forms"
TOKEN_SECONDS = 12 * 3600


class PreviewSigner:
    def __init__(self, secret: bytes):
        self.secret = secret

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def sign(self, kind: str, ident: int, user: str, admin: bool) -> str:
        expires = int(time.time()) + TOKEN_SECONDS
        who = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
        payload = f"{who}.{int(admin)}.{expires}"
        return f"{payload}.{self._mac(f'{kind}/{ident}/{payload}')}"

    def verify(self, kind: str, ident: int, token: str) -> tuple[str, bool] | None:
        """(user, admin) the token was issued to, or None if forged, for another book, or old."""
        try:
            who, admin, expires, mac = token.split(".")
            payload = f"{who}.{admin}.{expires}"
            if not hmac.compare_digest(mac, self._mac(f"{kind}/{ident}/{payload}")):
                return None
            if int(expires) < time.time():
                return None
            user = base64.urlsafe_b64decode(who + "=" * (-len(who) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return user, admin == "1"


class PreviewHandler(BaseHandler, web.StaticFileHandler):
    def initialize(self, **kwargs) -> None:
        web.StaticFileHandler.initialize(self, path="/nonexistent", default_filename="index.html")

    async def prepare(self) -> None:
        if self.path_args[2] is None:
            await BaseHandler.prepare(self)
        else:
            self.check_path_args()
            self._forbidden = None  # the signed URL is the authorisation, no cookie involved
            self._hub_auth_user_cache = None

    async def get(self, kind: str, ident: str, token: str | None, path: str,
                  include_body: bool = True) -> None:  # fmt: skip
        signer: PreviewSigner = self.nl.preview_signer
        what = kind.removesuffix("s")  # "preprint" or "build"
        if token is None:
            if self.require_login():  # anonymous readers go to the login page, as for any page
                await self._sign_and_redirect(kind, row_id(ident, what), path)
            return
        number = row_id(ident, what)
        who = signer.verify(kind, number, token)
        if who is None:
            # forged or expired: start again from the unsigned URL, which checks the login
            self.redirect(f"{self.nl.base_url}{kind}/{ident}/preview/{quote(path)}")
            return
        user, privileged = who
        pm = self.nl.preprints
        b = await self._visible(kind, number, user, privileged)
        if b is None:
            b = await pm.latest_preview(number, user, True)
        elif b.job.status.value != "succeeded":
            raise NotFound(f"Build {b.id} has no preview: it {b.job.status.value}.")
        self.root = os.path.realpath(pm.html_dir(b.id))
        # the stable URL changes with each build: revalidate; a build's own files never change
        self._cache = "private, no-cache" if kind == "preprints" else "private, max-age=3600"
        await web.StaticFileHandler.get(self, path, include_body)

    async def _visible(self, kind: str, ident: int, user: str, privileged: bool) -> Build | None:
        """NotFound unless the user may see this preprint's previews; the build for a build's
        preview (None for the preprint's stable one)."""
        pm = self.nl.preprints
        if kind == "builds":
            p, b = await pm.get_build(ident, user, True)
        else:
            (p, _builds), b = await pm.get(ident, user, True), None
        if not await self.nl.publishing.may_view(p, user, privileged):
            raise NotFound(f"No {kind.removesuffix('s')} {ident}.")
        return b

    async def _sign_and_redirect(self, kind: str, ident: int, path: str) -> None:
        # the reader must be allowed to see it now; NotFound otherwise
        privileged = self.is_admin or is_editor(self)
        await self._visible(kind, ident, self.user_name, privileged)
        token = self.nl.preview_signer.sign(kind, ident, self.user_name, privileged)
        query = f"?{self.request.query}" if self.request.query else ""
        self.redirect(f"{self.nl.base_url}{kind}/{ident}/preview/~{token}/{quote(path)}{query}")

    async def head(self, kind: str, ident: str, token: str | None, path: str) -> None:
        await self.get(kind, ident, token, path, include_body=False)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        real = os.path.realpath(absolute_path)
        if real != root and not real.startswith(root + os.sep):
            raise web.HTTPError(404)
        if os.path.isdir(real) and not self.request.path.endswith("/"):
            # StaticFileHandler's own redirect would drop the token: keep the request's path
            self.redirect(self.request.path + "/", permanent=False)
            return None
        return super().validate_absolute_path(root, real)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", self._cache)
        self.set_header("Content-Security-Policy", PREVIEW_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        # the signed URL must not leak to sites the book links to
        self.set_header("Referrer-Policy", "no-referrer")

    def write_error(self, status_code: int, **kwargs) -> None:
        BaseHandler.write_error(self, status_code, **kwargs)
