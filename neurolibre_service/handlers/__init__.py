"""Thin Tornado handlers; the routes of the public contract (see README)."""

from __future__ import annotations

from jupyterhub.services.auth import HubOAuthCallbackHandler

from .environments import EnvironmentActionAPI, EnvironmentAPI, EnvironmentsAPI, EnvironmentsPage
from .logs import EnvironmentLogAPI
from .misc import HealthAPI, MetricsHandler, OpenAPIHandler, RootRedirect
from .servers import ServerAPI, ServersAPI, ServersPage, SpawnerAPI


def routes(prefix: str) -> list[tuple[str, type]]:
    table = [
        (r"", RootRedirect),
        (r"oauth_callback", HubOAuthCallbackHandler),
        (r"environments", EnvironmentsPage),
        (r"api/health", HealthAPI),
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
    ]
    return [(prefix + path, handler) for path, handler in table]
