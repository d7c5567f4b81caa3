"""Thin Tornado handlers; the routes of the public contract (see README)."""

from __future__ import annotations

from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web

from .base import AllowOn405
from .environments import (
    BuilderAPI,
    EnvironmentActionAPI,
    EnvironmentAPI,
    EnvironmentsAPI,
    EnvironmentsPage,
)
from .logs import BuildLogAPI, EnvironmentLogAPI
from .misc import HealthAPI, MetricsHandler, OpenAPIHandler, RootRedirect
from .preprints import (
    BuildAPI,
    BuildCancelAPI,
    CheckAPI,
    DatasetAPI,
    DatasetsAPI,
    DatasetsPage,
    NewPreprintPage,
    PreprintAPI,
    PreprintBuildsAPI,
    PreprintPage,
    PreprintsAPI,
    PreprintsPage,
)
from .preview import PreviewHandler
from .servers import ServerAPI, ServersAPI, ServersPage, SpawnerAPI


class AddSlash(AllowOn405, web.RequestHandler):
    @web.addslash
    def get(self, *args) -> None:
        pass


class OAuthCallback(AllowOn405, HubOAuthCallbackHandler):
    pass


def routes(prefix: str) -> list[tuple[str, type]]:
    table = [
        (r"", RootRedirect),
        (r"oauth_callback", OAuthCallback),
        (r"environments", EnvironmentsPage),
        (r"api/health", HealthAPI),
        (r"api/builder", BuilderAPI),
        (r"api/openapi.json", OpenAPIHandler),
        (r"metrics", MetricsHandler),
        (r"api/environments", EnvironmentsAPI),
        (r"api/environments/(\d+)", EnvironmentAPI),
        (r"api/environments/(\d+)/(rebuild|cancel)", EnvironmentActionAPI),
        (r"api/environments/(\d+)/log", EnvironmentLogAPI),
        (r"servers", ServersPage),
        (r"api/servers", ServersAPI),
        (r"api/servers/([A-Za-z0-9._-]+)", ServerAPI),
        (r"api/spawner/environments", SpawnerAPI),
        (r"api/spawner/environments/(\d+)", SpawnerAPI),
        (r"preprints", PreprintsPage),
        (r"preprints/new", NewPreprintPage),
        (r"preprints/(\d+)", PreprintPage),
        (r"(preprints|builds)/(\d+)/preview/(?:~([A-Za-z0-9_.=-]+)/)?(.*)", PreviewHandler),
        (r"(preprints|builds)/(\d+)/preview", AddSlash),
        (r"api/preprints", PreprintsAPI),
        (r"api/preprints/(\d+)", PreprintAPI),
        (r"api/preprints/(\d+)/builds", PreprintBuildsAPI),
        (r"api/builds/(\d+)", BuildAPI),
        (r"api/builds/(\d+)/cancel", BuildCancelAPI),
        (r"api/builds/(\d+)/logs/(main|environment|data|book)", BuildLogAPI),
        (r"api/check", CheckAPI),
        (r"datasets", DatasetsPage),
        (r"api/datasets", DatasetsAPI),
        (r"api/datasets/([0-9a-f]{64})", DatasetAPI),
    ]
    return [(prefix + path, handler) for path, handler in table]
