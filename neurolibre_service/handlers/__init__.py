"""Thin Tornado handlers; the routes of the public contract (see README)."""

from __future__ import annotations

from jupyterhub.services.auth import HubOAuthCallbackHandler

from .environments import EnvironmentActionAPI, EnvironmentAPI, EnvironmentsAPI, EnvironmentsPage
from .logs import EnvironmentLogAPI
from .misc import HealthAPI, MetricsHandler, OpenAPIHandler, RootRedirect


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
    ]
    return [(prefix + path, handler) for path, handler in table]
