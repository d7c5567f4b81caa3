"""Published preprints, for everyone: the gallery, landing pages, books, logs and their JSON.

No login and no hub look-up (`public = True`): these pages answer anyone, set no cookie, and
can be cached by browsers and shared caches. A version's URLs (`p/{slug}/v{N}/...`) never change
what they serve, so their files are cached for a year (`immutable`); the unversioned aliases
(`p/{slug}/`, `p/{slug}/book/`) follow the latest version and are revalidated (ETag).

Everything shown comes from a hostile repository (titles, names, ORCIDs, the book itself): the
pages are autoescaped templates, JSON-LD goes through `tojson` (no `</script>` breakout), links
are only made of checked values (an ORCID iD, an http(s) repository), and the book is served as
the preview is: a sandboxing CSP (an opaque origin), confined to its directory.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

from tornado import web

from ..errors import Conflict, UserError
from ..publishing import PublishedVersion
from ..safefiles import UnsafeFile, read_confined
from ..servers import check_path
from .base import APIHandler, BaseHandler, _message, page_args, row_id
from .preview import PREVIEW_CSP

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, no-cache"
SHORT = "public, max-age=300"
GALLERY_PAGE = 20
MAX_QUERY = 200
RUNTIME_SHOWN = 64 * 1024  # bytes of each runtime file shown on a landing page
LOG_LIMIT = 64 << 20


def version_number(raw: str | None) -> int | None:
    return None if raw is None else row_id(raw, "version")


def site(handler: web.RequestHandler) -> str:
    """The public origin for citations: NeuroLibre.public_url, else the request's own."""
    configured = handler.settings["neurolibre"].public_url.rstrip("/")
    return configured or f"{handler.request.protocol}://{handler.request.host}"


class PublicPage(BaseHandler):
    public = True

    def render_public(self, name: str, cache: str, **ns: Any) -> None:
        """A page without the reader: no user, no XSRF cookie, cacheable."""
        ns.update(base_url=self.nl.base_url, static_url=self.static_url, hub_url=self.nl.hub_prefix)
        self.set_header("Cache-Control", cache)
        self.finish(self.nl.templates.get_template(name).render(**ns))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_allow(status_code)
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.render_public("p_error.html", "no-store", status_code=status_code,
                           message=_message(status_code, exc))  # fmt: skip


class GalleryPage(PublicPage):
    async def get(self) -> None:
        query = self.get_argument("q", "").strip()[:MAX_QUERY]
        raw = self.get_argument("page", "1")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100_000:
            raise UserError("page must be a number from 1 to 100000.")
        page = int(raw)
        pub = self.nl.publishing
        rows, total = await pub.gallery(query, limit=GALLERY_PAGE, offset=(page - 1) * GALLERY_PAGE)
        items = [pub.version_dict(p, v, site(self)) for p, v in rows]
        pages = max(1, -(-total // GALLERY_PAGE))
        self.render_public("p_gallery.html", REVALIDATE, items=items, total=total, page=page,
                           pages=pages, q=query)  # fmt: skip


class LandingPage(PublicPage):
    async def get(self, slug: str, version: str | None = None) -> None:
        number = version_number(version)
        pub = self.nl.publishing
        p, v, versions = await pub.version(slug, number)
        d = pub.version_dict(p, v, site(self))
        self.render_public(
            "p_landing.html", SHORT if number is not None else REVALIDATE,
            v=d, pinned=number is not None, latest=versions[0].version,
            versions=[{"version": o.version, "url": f"p/{p.slug}/v{o.version}/",
                       "published_at": o.published_at.strftime("%Y-%m-%d"),
                       "commit": o.commit_sha} for o in versions],
            runtime_texts=self._runtime_texts(p.slug, v), jsonld=json_ld(d),
        )  # fmt: skip

    def _runtime_texts(self, slug: str, v: PublishedVersion) -> dict[str, str]:
        root = self.nl.publishing.version_dir(slug, v.version) / "runtime"
        texts = {}
        for f in v.runtime_files or []:
            try:
                data = read_confined(root / f["name"], root, limit=1 << 20)
            except UnsafeFile:
                continue
            text = data[:RUNTIME_SHOWN].decode("utf-8", "replace")
            if len(data) > RUNTIME_SHOWN:
                text += f"\n[... {len(data) - RUNTIME_SHOWN} more bytes]"
            texts[f["name"]] = text
        return texts


def json_ld(d: dict) -> dict:
    """schema.org ScholarlyArticle, as Google Scholar and Zotero read it."""
    affiliations = d["affiliations"]
    authors = []
    for a in d["authors"]:
        person: dict[str, Any] = {"@type": "Person", "name": a["name"]}
        if a.get("orcid"):
            person["identifier"] = person["sameAs"] = f"https://orcid.org/{a['orcid']}"
        orgs = [affiliations[i - 1] for i in a.get("affiliations") or []
                if 0 < i <= len(affiliations)]  # fmt: skip
        if orgs:
            person["affiliation"] = [{"@type": "Organization", "name": o} for o in orgs]
        authors.append(person)
    doc: dict[str, Any] = {
        "@context": "https://schema.org", "@type": "ScholarlyArticle",
        "headline": d["title"][:110], "name": d["title"], "author": authors,
        "datePublished": (d["published_at"] or "")[:10], "version": str(d["version"]),
        "url": d["citation"]["url"], "publisher": {"@type": "Organization", "name": "NeuroLibre"},
        "isBasedOn": {"@type": "SoftwareSourceCode", "codeRepository": d["repository"],
                      "version": d["commit"]},
    }  # fmt: skip
    if d.get("date"):
        doc["dateCreated"] = d["date"]
    if d.get("summary"):
        doc["abstract"] = d["summary"]
    if d.get("keywords"):
        doc["keywords"] = d["keywords"]
    if d.get("license"):
        doc["license"] = d["license"]
    return doc


class PublishedBook(PublicPage, web.StaticFileHandler):
    """p/{slug}/v{N}/book/PATH (immutable) and p/{slug}/book/PATH (the latest version)."""

    def initialize(self, **kwargs) -> None:
        web.StaticFileHandler.initialize(self, path="/nonexistent", default_filename="index.html")

    async def get(self, slug: str, version: str | None, path: str,
                  include_body: bool = True) -> None:  # fmt: skip
        number = version_number(version)
        pub = self.nl.publishing
        p, v, _versions = await pub.version(slug, number)
        self.root = os.path.realpath(pub.version_dir(p.slug, v.version) / "book")
        self._cache = IMMUTABLE if number is not None else REVALIDATE
        await web.StaticFileHandler.get(self, path, include_body)

    async def head(self, slug: str, version: str | None, path: str) -> None:
        await self.get(slug, version, path, include_body=False)

    def get_cache_time(self, path: str, modified, mime_type: str) -> int:
        return 0  # ours is set below, whatever ?v= says

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
        PublicPage.write_error(self, status_code, **kwargs)


class PublishedLog(PublicPage):
    """A published version's build log (a copy: it does not change)."""

    async def get(self, slug: str, version: str, stage: str) -> None:
        pub = self.nl.publishing
        p, v, _versions = await pub.version(slug, version_number(version))
        logs = pub.version_dir(p.slug, v.version) / "logs"
        try:
            data = read_confined(logs / f"{stage}.log", logs, LOG_LIMIT)
        except UnsafeFile:
            data = b""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "sandbox")
        self.set_header("Cache-Control", IMMUTABLE)
        self.finish(data)


class PublishedAPI(APIHandler):
    """api/published: the gallery as JSON (each publication's latest version)."""

    public = True

    async def get(self) -> None:
        limit, offset = page_args(self)
        query = self.get_argument("q", "").strip()[:MAX_QUERY]
        pub = self.nl.publishing
        rows, total = await pub.gallery(query, limit=limit, offset=offset)
        self.set_header("Cache-Control", "public, max-age=60")
        self.write_page([pub.version_dict(p, v, site(self)) for p, v in rows], total, limit,
                        offset, "api/published")  # fmt: skip


class PublicationAPI(APIHandler):
    """api/published/{slug}: every version of a publication, newest first."""

    public = True

    async def get(self, slug: str) -> None:
        pub = self.nl.publishing
        p, versions = await pub.publication(slug)
        self.set_header("Cache-Control", "public, max-age=60")
        self.write_json({
            "slug": p.slug, "url": f"p/{p.slug}/", "latest": versions[0].version,
            "versions": [pub.version_dict(p, v, site(self)) for v in versions],
        })  # fmt: skip


class LaunchHandler(BaseHandler):
    """launch/{slug}[?version=N&path=...]: for now, a logged-in reader goes to the direct link
    of the version's environment (`servers?name=...&environment=ID`); a reader without an
    account goes to the hub's login first. Launching for anyone is issue 14's second half."""

    async def get(self, slug: str) -> None:
        if not self.require_login():
            return
        number = version_number(self.get_argument("version", None))
        path = check_path(self.get_argument("path", ""))
        p, v, _versions = await self.nl.publishing.version(slug, number)
        if v.environment_id is None:
            raise Conflict(f"{p.slug} v{v.version} has no environment to launch.")
        query = {"name": f"{p.slug[:50]}-v{v.version}", "environment": v.environment_id}
        if path:
            query["path"] = path
        self.redirect(f"{self.nl.base_url}servers?{urlencode(query)}")
