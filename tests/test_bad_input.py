"""Bad input gets a 4xx with a clear message, never a 500: on every route of the handler table.

Attacks, as tried against the running service: a 30-digit id (OverflowError in SQLite: 500 on
17 of 18 routes), ids past PostgreSQL's `integer`, non-ASCII digits that `\\d` matches, `%00` in a
preview path (ValueError from the file system: 500), NUL in JSON bodies (PostgreSQL text cannot
hold it), a huge `offset`, a non-numeric Last-Event-ID, TRACE/PROPFIND/PATCH (405 without Allow),
an anonymous `builds/N/preview/` (a TypeError in the log), and times without a zone in the API.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import httpx
import pytest

from neurolibre_service.handlers import SLUG, routes
from neurolibre_service.handlers.base import MAX_ID, row_id

from .conftest import follow_log
from .support.hub import SERVICE
from .support.preprints import preprint

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Every route of the handler table: where to try it ({id} where it takes one), the methods it
# has (a 405 lists them in Allow), and what an anonymous request gets there today.
ROUTES = {
    r"": ("", "GET", 302),
    r"oauth_callback": ("oauth_callback", "GET", 400),
    r"environments": ("environments", "GET", 302),
    r"api/health": ("api/health", "GET", 200),
    r"api/builder": ("api/builder", "GET", 403),
    r"api/openapi.json": ("api/openapi.json", "GET", 200),
    r"metrics": ("metrics", "GET", 403),
    r"api/environments": ("api/environments", "GET POST", 403),
    r"api/environments/(\d+)": ("api/environments/{id}", "GET DELETE", 403),
    r"api/environments/(\d+)/(rebuild|cancel)": ("api/environments/{id}/cancel", "POST", 403),
    r"api/environments/(\d+)/log": ("api/environments/{id}/log", "GET", 403),
    r"servers": ("servers", "GET", 302),
    r"api/servers": ("api/servers", "GET POST", 403),
    r"api/servers/([A-Za-z0-9._-]+)": ("api/servers/x", "DELETE", 403),
    r"api/spawner/environments": ("api/spawner/environments?user=alice", "GET", 403),
    r"api/spawner/environments/(\d+)": ("api/spawner/environments/{id}?user=alice", "GET", 403),
    r"preprints": ("preprints", "GET", 302),
    r"preprints/new": ("preprints/new", "GET", 302),
    r"preprints/(\d+)": ("preprints/{id}", "GET", 302),
    r"(preprints|builds)/(\d+)/preview/(?:~([A-Za-z0-9_.=-]+)/)?(.*)": (
        "builds/{id}/preview/index.html", "GET HEAD", 302),
    r"(preprints|builds)/(\d+)/preview": ("preprints/{id}/preview", "GET", 301),
    r"api/preprints": ("api/preprints", "GET POST", 403),
    r"api/preprints/(\d+)": ("api/preprints/{id}", "GET DELETE", 403),
    r"api/preprints/(\d+)/builds": ("api/preprints/{id}/builds", "POST", 403),
    r"api/builds/(\d+)": ("api/builds/{id}", "GET", 403),
    r"api/builds/(\d+)/cancel": ("api/builds/{id}/cancel", "POST", 403),
    r"api/builds/(\d+)/logs/(main|environment|data|book)": ("api/builds/{id}/logs/main", "GET", 403),
    r"api/check": ("api/check", "POST", 403),
    r"datasets": ("datasets", "GET", 302),
    r"api/datasets": ("api/datasets", "GET", 403),
    r"api/datasets/([0-9a-f]{64})": ("api/datasets/" + "0" * 64, "DELETE", 403),
    r"reviews": ("reviews", "GET", 302),
    r"api/reviews": ("api/reviews", "GET", 403),
    r"api/preprints/(\d+)/review": ("api/preprints/{id}/review", "GET", 403),
    r"api/preprints/(\d+)/submit": ("api/preprints/{id}/submit", "POST", 403),
    r"api/preprints/(\d+)/withdraw": ("api/preprints/{id}/withdraw", "POST", 403),
    r"api/preprints/(\d+)/reviewers": ("api/preprints/{id}/reviewers", "POST", 403),
    r"api/preprints/(\d+)/reviewers/([^/]+)": ("api/preprints/{id}/reviewers/bob", "DELETE", 403),
    r"api/preprints/(\d+)/decision": ("api/preprints/{id}/decision", "POST", 403),
    r"api/preprints/(\d+)/comments": ("api/preprints/{id}/comments", "POST", 403),
    # published preprints: public (an unknown slug is a 404 for everyone)
    r"p": ("p", "GET", 301),
    r"p/": ("p/", "GET", 200),
    rf"p/{SLUG}": ("p/nothing-1", "GET", 301),
    rf"p/{SLUG}/": ("p/nothing-1/", "GET", 404),
    rf"p/{SLUG}/v(\d+)": ("p/nothing-1/v{id}", "GET", 301),
    rf"p/{SLUG}/v(\d+)/": ("p/nothing-1/v{id}/", "GET", 404),
    rf"p/{SLUG}/(?:v(\d+)/)?book": ("p/nothing-1/book", "GET", 301),
    rf"p/{SLUG}/(?:v(\d+)/)?book/(.*)": ("p/nothing-1/v{id}/book/index.html", "GET HEAD", 404),
    rf"p/{SLUG}/v(\d+)/logs/(main|environment|data|book)\.log": (
        "p/nothing-1/v{id}/logs/main.log", "GET", 404),
    r"api/published": ("api/published", "GET", 200),
    rf"api/published/{SLUG}": ("api/published/nothing-1", "GET", 404),
    rf"launch/{SLUG}": ("launch/nothing-1", "GET", 404),
}  # fmt: skip
WITH_ID = [p for p, (path, _, _) in ROUTES.items() if "{id}" in path]
# ids no row can have: past SQLite's 64 bits, and past PostgreSQL's integer
BAD_IDS = ["1" * 30, str(2**63), str(MAX_ID + 1)]


async def test_every_route_of_the_handler_table_is_tried():
    assert set(ROUTES) == {pattern for pattern, _ in routes("")}


def service_token(hub) -> str:
    return (hub.data / "neurolibre-service-token").read_text().strip()


def client(hub, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"token {token}"} if token else {}
    return httpx.AsyncClient(base_url=hub.url + SERVICE, headers=headers, timeout=30)


def who_for(hub, pattern: str, user_token: str) -> str:
    # the spawner's routes answer the service's own token only
    return service_token(hub) if "spawner" in pattern else user_token


@pytest.mark.parametrize("pattern", WITH_ID)
async def test_ids_no_row_can_have_are_not_found(hub, pattern):
    path, methods, anonymous = ROUTES[pattern]
    expected = 301 if anonymous == 301 else 404  # the add-a-slash redirect looks at nothing
    async with client(hub, who_for(hub, pattern, hub.api_token("alice"))) as c, client(hub) as anon:
        for ident in BAD_IDS:
            url = path.format(id=ident)
            for method in methods.split():
                r = await c.request(method, url)
                assert r.status_code == expected, (method, url, r.text[:300])
                if url.startswith("api/") and method != "HEAD":
                    assert r.json()["status"] == 404, r.text
                # anonymous callers get what they always got: a login or a 403, never a 500
                r = await anon.request(method, url)
                assert r.status_code == (anonymous if "spawner" not in pattern else 403), url


async def test_anonymous_callers_get_what_they_always_got(hub):
    """The login page for pages, 403 for the API, answers for the public routes."""
    async with client(hub) as anon:
        for path, methods, expected in ROUTES.values():
            for method in methods.split():
                r = await anon.request(method, path.format(id=1))
                assert r.status_code == expected, (method, path, r.status_code)


@pytest.mark.parametrize("pattern", list(ROUTES))
async def test_unknown_methods_are_405_with_allow(hub, pattern):
    path, methods, _ = ROUTES[pattern]
    token = service_token(hub) if "spawner" in pattern else None
    async with client(hub, token) as c:
        for method in ("TRACE", "PROPFIND", "PATCH"):
            r = await c.request(method, path.format(id=1))
            assert r.status_code == 405, (method, path, r.status_code)
            assert set(r.headers["allow"].split(", ")) == set(methods.split()), (method, path)


async def test_unknown_paths_are_404_in_the_api_s_format(hub):
    async with client(hub, hub.api_token("alice")) as c:
        for method in ("GET", "POST", "DELETE"):
            r = await c.request(method, "api/nothing/here")
            assert r.status_code == 404
            assert "api/openapi.json" in r.json()["message"]
        # not numbers the route takes (an Arabic-Indic three is not \d in a URL: it is encoded)
        for path in ("api/environments/-1", "api/environments/%D9%A3", "api/builds/1e3"):
            r = await c.get(path)
            assert r.status_code == 404 and r.json()["status"] == 404
        page = await c.get("nothing-here")
        assert page.status_code == 404 and "<html" in page.text


async def test_an_id_the_api_accepts_is_one_postgresql_can_look_up(postgres):
    """The bound on ids is PostgreSQL's `integer` (asyncpg refuses a larger parameter: 500)."""
    from sqlalchemy import select
    from sqlalchemy.exc import DBAPIError

    from neurolibre_service.db import Environment
    from neurolibre_service.db.engine import make_engine, upgrade
    from neurolibre_service.errors import NotFound

    url = postgres.create_database(f"nl_max_id_{time.time_ns()}")
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            largest = select(Environment.id).where(Environment.id == row_id(str(MAX_ID), "x"))
            assert (await conn.execute(largest)).all() == []
        with pytest.raises(NotFound, match=f"No environment {MAX_ID + 1}."):
            row_id(str(MAX_ID + 1), "environment")
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError, match="out of int32 range"):
                await conn.execute(select(Environment.id).where(Environment.id == MAX_ID + 1))
    finally:
        await engine.dispose()


async def test_numbers_in_forms_bodies_and_queries_are_bounded(hub, alice):
    huge = "1" * 30
    r = await alice.post("servers", json={"name": "x", "environment": int(huge)})
    assert r.status_code == 404 and r.json()["message"] == f"No environment {huge}."
    r = await alice.post("servers", json={"name": "x", "environment": "1e3"})
    assert r.status_code == 400 and "environment's number" in r.json()["message"]
    for listing in ("environments", "preprints"):
        for offset in (huge, str(MAX_ID + 1), "-1"):
            r = await alice.get(listing, params={"offset": offset})
            assert r.status_code == 400, (listing, offset)
            assert "offset 0-" in r.json()["message"]
    async with httpx.AsyncClient(base_url=hub.url, headers=alice.headers, timeout=30) as c:
        r = await c.get(f"{SERVICE}servers", params={"name": "x", "environment": huge})
        assert r.status_code == 404 and f"No environment {huge}." in r.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("environments", {"name": "nul", "repository": "{root}/a\u0000b"}),
        ("environments", {"name": "nul", "repository": "{root}/r", "ref": "ma\u0000in"}),
        ("preprints", {"repository": "{root}/r", "email": "a\u0000@example.org"}),
        ("check", {"repository": "{root}/r\u0000"}),
        ("servers", {"name": "x", "environment": 1, "extra": ["\u0000"]}),
    ],
)
async def test_nul_in_a_json_body_is_refused(alice, repos_root, path, body):
    # local paths: with the defence removed, nothing is fetched from the network
    body = {k: v.format(root=repos_root) if k == "repository" else v for k, v in body.items()}
    r = await alice.post(path, json=body)
    assert r.status_code == 400
    assert "NUL character" in r.json()["message"]


@pytest.fixture(scope="module")
async def book(hub, repos_root):
    """alice's preprint with a good build, and its preview."""
    from .support.repos import make_repo

    repo = repos_root / f"bad-input-book-{time.time_ns()}"
    make_repo(repo, preprint())
    async with hub.token_client("alice") as alice:
        r = await alice.post("preprints", json={"repository": str(repo), "ref": "main"})
        assert r.status_code == 201, r.text
        p = r.json()
        _, status = await follow_log(alice, f"builds/{p['latest_build']['id']}/logs/main",
                                     timeout=800)  # fmt: skip
        assert status == "succeeded"
        return (await alice.get(f"preprints/{p['id']}")).json()


async def test_nul_in_a_preview_path_is_a_400(hub, alice, book):
    build = book["latest_build"]["id"]
    async with httpx.AsyncClient(base_url=hub.url + SERVICE, headers=alice.headers,
                                 timeout=30) as c:  # fmt: skip
        r = await c.get(f"builds/{build}/preview/index.html")
        assert r.status_code == 302
        signed = hub.url + r.headers["location"].removesuffix("index.html")
        assert "/preview/~" in signed
        assert (await c.get(signed + "index.html")).status_code == 200
        for url in (f"builds/{build}/preview/%00", f"preprints/{book['id']}/preview/a%00b.html",
                    signed + "%00", signed + "_static/%00/x.css"):  # fmt: skip
            r = await c.get(url)
            assert r.status_code == 400, (url, r.status_code)
            assert "NUL character" in r.text


async def test_an_anonymous_preview_goes_to_the_login_without_an_error_logged(hub, book):
    before = hub.log_path.stat().st_size
    async with httpx.AsyncClient(base_url=hub.url + SERVICE, timeout=30) as anon:
        for url in (f"builds/{book['latest_build']['id']}/preview/",
                    f"preprints/{book['id']}/preview/index.html", "builds/1/preview/"):  # fmt: skip
            r = await anon.get(url)
            assert r.status_code == 302, url
            assert "/hub/api/oauth2/authorize" in r.headers["location"]
        r = await anon.head(f"builds/{book['latest_build']['id']}/preview/index.html")
        assert r.status_code == 302
    await asyncio.sleep(0.5)  # the service's log reaches the hub's through a pipe
    with hub.log_path.open("rb") as f:
        f.seek(before)
        logged = f.read().decode(errors="replace")
    assert "Traceback" not in logged and "TypeError" not in logged, logged[-2000:]


def assert_utc(value: str | None, what: str) -> None:
    assert value is not None, what
    when = datetime.fromisoformat(value)
    assert when.utcoffset() == timedelta(0), f"{what} = {value!r} has no UTC offset"
    assert value.endswith("+00:00"), value


async def test_api_times_are_utc_with_an_offset(hub, alice, book, new_repo):
    assert_utc(book["created_at"], "preprint created_at")
    for b in book["builds"]:
        for key in ("created_at", "started_at", "finished_at"):
            assert_utc(b[key], f"build {key}")
    listed = (await alice.get("preprints")).json()
    assert_utc(listed[0]["latest_build"]["created_at"], "listed build created_at")
    repo, _ = new_repo({"binder/environment.yml": "dependencies: []\n"})
    r = await alice.post("environments", json={"name": "times", "repository": str(repo)})
    assert r.status_code == 201, r.text
    env = r.json()
    assert_utc(env["created_at"], "environment created_at")
    assert_utc(env["job"]["created_at"], "job created_at")
    await follow_log(alice, f"environments/{env['id']}/log")
    env = (await alice.get(f"environments/{env['id']}")).json()
    for key in ("started_at", "finished_at"):
        assert_utc(env["job"][key], f"job {key}")
    assert (await alice.delete(f"environments/{env['id']}")).status_code == 200


async def test_a_bad_last_event_id_is_a_400(alice, book):
    log = f"builds/{book['latest_build']['id']}/logs/main"
    sse = {"Accept": "text/event-stream"}
    for bad in ("abc", "-1", "1.5", "\u0663"):
        for accept in (sse, {}):  # server-sent events, or text (where it means nothing)
            r = await alice.get(log, headers={**accept, "Last-Event-ID": bad.encode()})
            assert r.status_code == 400, bad
            assert "Last-Event-ID must be a line number" in r.json()["message"]
    lines, status = await follow_log(alice, log, last_event_id=2)
    assert status == "succeeded" and lines[0][0] == 3
