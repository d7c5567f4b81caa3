"""A built book's files: the preview of a build, and the stable preview of a preprint.

Tornado's StaticFileHandler gives content types, ETags, conditional and range requests; we add
the owner's access check, confinement that resolves symlinks (a book may contain links that
point outside its folder), and a sandboxing CSP: the book's HTML and scripts come from the
author and must not act on the hub's origin with the reader's cookies.
"""

from __future__ import annotations

import os

from tornado import web

from .base import BaseHandler

# an opaque origin: scripts run, but cannot read the hub's cookies or call it as the reader
PREVIEW_CSP = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-forms"


class PreviewHandler(BaseHandler, web.StaticFileHandler):
    def initialize(self, **kwargs) -> None:
        web.StaticFileHandler.initialize(self, path="/nonexistent", default_filename="index.html")

    @web.authenticated
    async def get(self, kind: str, ident: str, path: str, include_body: bool = True) -> None:
        pm = self.nl.preprints
        if kind == "builds":
            _p, b = await pm.get_build(int(ident), self.user_name, self.is_admin)
            if b.job.status.value != "succeeded":
                raise web.HTTPError(404, f"Build {b.id} has no preview: it {b.job.status.value}.")
        else:
            b = await pm.latest_preview(int(ident), self.user_name, self.is_admin)
        self.root = os.path.realpath(pm.html_dir(b.id))
        # the stable URL changes with each build: revalidate; a build's own files never change
        self._cache = "private, no-cache" if kind == "preprints" else "private, max-age=3600"
        await web.StaticFileHandler.get(self, path, include_body)

    async def head(self, kind: str, ident: str, path: str) -> None:
        await self.get(kind, ident, path, include_body=False)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        real = os.path.realpath(absolute_path)
        if real != root and not real.startswith(root + os.sep):
            raise web.HTTPError(404)
        return super().validate_absolute_path(root, real)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", self._cache)
        self.set_header("Content-Security-Policy", PREVIEW_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs) -> None:
        BaseHandler.write_error(self, status_code, **kwargs)
