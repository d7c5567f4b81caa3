"""Preprints: the test form, the preprint page, the JSON API, checks and datasets."""

from __future__ import annotations

from tornado import web

from .base import APIHandler, BaseHandler, page_args, row_id


class PreprintsPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        limit, offset = page_args(self)
        items, total = await self.nl.preprints.list(self.user_name, self.is_admin,
                                                    limit=limit, offset=offset)  # fmt: skip
        self.render_template("preprints.html", preprints=items, total=total, offset=offset,
                             limit=limit)  # fmt: skip


class NewPreprintPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        self.render_template(
            "preprint_new.html",
            repository=self.get_argument("repository", ""),
            ref=self.get_argument("ref", ""),
            email_enabled=self.nl.mailer.enabled,
        )


class PreprintPage(BaseHandler):
    @web.authenticated
    async def get(self, preprint_id: str) -> None:
        pm = self.nl.preprints
        p, builds = await pm.get(row_id(preprint_id, "preprint"), self.user_name, self.is_admin)
        self.render_template("preprint.html", preprint=pm.to_dict(p, builds=builds))


class PreprintsAPI(APIHandler):
    async def get(self) -> None:
        user = self.require_user()
        limit, offset = page_args(self)
        items, total = await self.nl.preprints.list(user["name"], self.is_admin,
                                                    limit=limit, offset=offset)  # fmt: skip
        self.write_page(items, total, limit, offset, "api/preprints")

    async def post(self) -> None:
        """Submit a repository: a new preprint (or a new build of it), checked and built."""
        user = self.require_user()
        body = self.body()
        pm = self.nl.preprints
        p, b = await pm.submit(
            user["name"],
            repository=str(body.get("repository", "")).strip(),
            ref=str(body.get("ref") or "HEAD").strip(),
            email=str(body.get("email") or ""),
        )
        self.set_header("Location", f"{self.nl.base_url}api/preprints/{p.id}")
        data = pm.to_dict(p, b)
        self.write_json(data, status=201)


class PreprintAPI(APIHandler):
    async def get(self, preprint_id: str) -> None:
        user = self.require_user()
        pm = self.nl.preprints
        p, builds = await pm.get(row_id(preprint_id, "preprint"), user["name"], self.is_admin)
        self.write_json(pm.to_dict(p, builds=builds))

    async def delete(self, preprint_id: str) -> None:
        user = self.require_user()
        ident = row_id(preprint_id, "preprint")
        await self.nl.preprints.delete(ident, user["name"], self.is_admin)
        self.set_status(204)
        self.finish()


class PreprintBuildsAPI(APIHandler):
    async def post(self, preprint_id: str) -> None:
        """A new build of the preprint's repository at its ref (resolved again)."""
        user = self.require_user()
        pm = self.nl.preprints
        p, b = await pm.rebuild(row_id(preprint_id, "preprint"), user["name"], self.is_admin)
        self.set_header("Location", f"{self.nl.base_url}api/builds/{b.id}")
        self.write_json(pm.build_dict(b, p), status=201)


class BuildAPI(APIHandler):
    async def get(self, build_id: str) -> None:
        user = self.require_user()
        pm = self.nl.preprints
        p, b = await pm.get_build(row_id(build_id, "build"), user["name"], self.is_admin)
        self.write_json(pm.build_dict(b, p))


class BuildCancelAPI(APIHandler):
    async def post(self, build_id: str) -> None:
        user = self.require_user()
        pm = self.nl.preprints
        ident = row_id(build_id, "build")
        await pm.cancel(ident, user["name"], self.is_admin)
        p, b = await pm.get_build(ident, user["name"], self.is_admin)
        self.write_json(pm.build_dict(b, p))


class CheckAPI(APIHandler):
    async def post(self) -> None:
        """The layout checks of a repository, without building it (same code as the CLI)."""
        self.require_user()
        body = self.body()
        result = await self.nl.preprints.check(
            str(body.get("repository", "")).strip(), str(body.get("ref") or "HEAD").strip()
        )
        self.write_json(result)


class DatasetsPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        if not self.is_admin:
            raise web.HTTPError(403, "Datasets are managed by administrators.")
        self.render_template("datasets.html", datasets=await self.nl.datasets.list())


class DatasetsAPI(APIHandler):
    async def get(self) -> None:
        self.require_admin()
        self.write_json(await self.nl.datasets.list())


class DatasetAPI(APIHandler):
    async def delete(self, key: str) -> None:
        self.require_admin()
        await self.nl.datasets.delete(key)
        self.set_status(204)
        self.finish()
