"""Health, the OpenAPI document, Prometheus metrics, and the root redirect."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from .. import __version__, openapi  # the module: openapi.py imports handlers.base
from .base import APIHandler, BaseHandler


class RootRedirect(BaseHandler):
    public = True

    def get(self) -> None:
        self.redirect(f"{self.nl.base_url}environments")


class HealthAPI(APIHandler):
    public = True

    async def get(self) -> None:
        try:
            async with self.nl.db.session() as s:
                await s.execute(text("SELECT 1"))
            db_ok = True
        except Exception:
            db_ok = False
        body = {
            "status": "ok" if db_ok else "degraded",
            "version": __version__,
            "database": db_ok,
            "builder": self.nl.builder,
            "jobs_running": self.nl.queue.running,
        }
        self.write_json(body, 200 if db_ok else 503)


class OpenAPIHandler(APIHandler):
    public = True

    def get(self) -> None:
        self.write_json(openapi.openapi_document(self.nl.base_url))


class MetricsHandler(APIHandler):
    async def get(self) -> None:
        if self.nl.authenticate_metrics:
            self.require_admin()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.nl.metrics.registry))
