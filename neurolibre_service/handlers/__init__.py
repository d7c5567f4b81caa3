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
from .launch import LaunchHandler
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
    PreprintsAPI,
    PreprintsPage,
)
from .preview import PreviewHandler
from .public import (
    GalleryPage,
    LandingPage,
    PublicationAPI,
    PublishedAPI,
    PublishedBook,
    PublishedLog,
)
from .review import (
    CommentsAPI,
    DecisionAPI,
    PreprintPage,
    ReviewAPI,
    ReviewerAPI,
    ReviewersAPI,
    ReviewsAPI,
    ReviewsPage,
    SubmitAPI,
    WithdrawAPI,
)
from .servers import ServerAPI, ServersAPI, ServersPage, SpawnerAPI


class AddSlash(AllowOn405, web.RequestHandler):
    @web.addslash
    def get(self, *args) -> None:
        pass


class OAuthCallback(AllowOn405, HubOAuthCallbackHandler):
    pass


SLUG = r"([a-z0-9][a-z0-9-]{0,99})"


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
        # submit, screen, review (handlers/review.py; preprints/{id} above is its PreprintPage)
        (r"reviews", ReviewsPage),
        (r"api/reviews", ReviewsAPI),
        (r"api/preprints/(\d+)/review", ReviewAPI),
        (r"api/preprints/(\d+)/submit", SubmitAPI),
        (r"api/preprints/(\d+)/withdraw", WithdrawAPI),
        (r"api/preprints/(\d+)/reviewers", ReviewersAPI),
        (r"api/preprints/(\d+)/reviewers/([^/]+)", ReviewerAPI),
        (r"api/preprints/(\d+)/decision", DecisionAPI),
        (r"api/preprints/(\d+)/comments", CommentsAPI),
        # published preprints, public (handlers/public.py)
        (r"p", AddSlash),
        (r"p/", GalleryPage),
        (rf"p/{SLUG}", AddSlash),
        (rf"p/{SLUG}/", LandingPage),
        (rf"p/{SLUG}/v(\d+)", AddSlash),
        (rf"p/{SLUG}/v(\d+)/", LandingPage),
        (rf"p/{SLUG}/(?:v(\d+)/)?book", AddSlash),
        (rf"p/{SLUG}/(?:v(\d+)/)?book/(.*)", PublishedBook),
        (rf"p/{SLUG}/v(\d+)/logs/(main|environment|data|book)\.log", PublishedLog),
        (r"api/published", PublishedAPI),
        (rf"api/published/{SLUG}", PublicationAPI),
        (rf"launch/{SLUG}", LaunchHandler),
    ]
    return [(prefix + path, handler) for path, handler in table]
