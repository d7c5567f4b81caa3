"""Who may do what: hub roles and scopes, ownership, anonymous access, XSRF."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .conftest import build
from .support.hub import SERVICE

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def bobs_env(hub, repos_root):
    from .support.repos import make_repo

    repo = repos_root / "bobs-repo"
    if not repo.exists():
        make_repo(repo, {"binder/environment.yml": "dependencies: []\n"})
    async with hub.token_client("bob") as bob:
        env, _ = await build(bob, "bobs-env", repo)
    return env


def anonymous(hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub.api, timeout=30)


ENDPOINTS = [
    ("GET", "environments/{id}"),
    ("DELETE", "environments/{id}"),
    ("POST", "environments/{id}/rebuild"),
    ("POST", "environments/{id}/cancel"),
    ("GET", "environments/{id}/log"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_another_users_environment_is_invisible(hub, alice, bobs_env, method, path):
    r = await alice.request(method, path.format(id=bobs_env["id"]))
    assert r.status_code == 404
    assert r.json()["message"] == f"No environment {bobs_env['id']}."


@pytest.mark.parametrize(("method", "path"), [*ENDPOINTS, ("GET", "environments"),
                                              ("POST", "environments"), ("GET", "../metrics")])  # fmt: skip
async def test_anonymous_and_unscoped_users_are_refused(hub, bobs_env, method, path):
    path = path.format(id=bobs_env["id"])
    async with anonymous(hub) as anon:
        r = await anon.request(method, path)
    assert r.status_code == 403
    assert "Authentication required" in r.json()["message"]
    # carol is a hub user without access:services!service=neurolibre
    async with hub.token_client("carol") as carol:
        r = await carol.request(method, path)
    assert r.status_code == 403


async def test_users_list_their_own_and_admins_list_all(hub, alice, bobs_env):
    mine = (await alice.get("environments")).json()
    assert all(e["owner"] == "alice" for e in mine)
    assert bobs_env["id"] not in [e["id"] for e in mine]
    async with hub.token_client("admin") as admin:
        everyone = (await admin.get("environments")).json()
        assert bobs_env["id"] in [e["id"] for e in everyone]
        r = await admin.get(f"environments/{bobs_env['id']}/log")
        assert r.status_code == 200 and "environment.yml" in r.text
        r = await admin.get("../metrics")
        assert r.status_code == 200 and "neurolibre_jobs_finished" in r.text
    r = await alice.get("../metrics")
    assert r.status_code == 403
    assert "custom:neurolibre:admin" in r.json()["message"]


async def test_an_admin_may_act_on_anyones_environment(hub, repos_root):
    from .support.repos import make_repo

    repo = repos_root / "daves-repo"
    make_repo(repo, {"binder/Dockerfile": "FROM scratch\n"})
    async with hub.token_client("dave") as dave, hub.token_client("admin") as admin:
        env, _ = await build(dave, "daves-env", repo)
        r = await admin.delete(f"environments/{env['id']}")
        assert r.status_code == 200
        assert r.json() == {"id": env["id"], "deleted": True, "servers_stopped": [],
                            "servers_not_stopped": []}  # fmt: skip
        assert (await dave.get(f"environments/{env['id']}")).status_code == 404


async def test_public_endpoints_need_no_login(hub):
    async with anonymous(hub) as anon:
        health = await anon.get("health")
        spec = await anon.get("openapi.json")
    assert health.status_code == 200
    assert health.json()["database"] is True
    assert health.json()["builder"] == "local"
    assert spec.json()["openapi"].startswith("3.")


async def test_pages_send_anonymous_users_to_the_hub_login_and_refuse_unscoped_ones(hub):
    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as anon:
        r = await anon.get(f"{SERVICE}environments")
    assert r.status_code == 302
    assert (
        "/hub/api/oauth2/authorize" in r.headers["location"]
        or "/hub/login" in r.headers["location"]
    )
    carol = await hub.browser_client("carol")
    try:
        assert carol.landing.status_code == 403
    finally:
        await carol.aclose()


async def test_browser_writes_need_the_xsrf_token(hub, new_repo):
    repo, _ = new_repo({"binder/apt.txt": "x\n"})
    session = await hub.browser_client("alice")
    try:
        assert session.landing.status_code == 200
        assert "Add an environment" in session.landing.text
        body = {"name": "xsrf-check", "repository": str(repo), "ref": "main"}
        forged = await session.request("POST", "api/environments", json=body, xsrf=False)
        assert forged.status_code == 403
        wrong = await session.request("POST", "api/environments", json=body, xsrf=False,
                                      headers={"X-XSRFToken": "forged"})  # fmt: skip
        assert wrong.status_code == 403
        listed = await session.request("GET", "api/environments")
        assert "xsrf-check" not in [e["name"] for e in listed.json()]
        ok = await session.request("POST", "api/environments", json=body)
        assert ok.status_code == 201, ok.text
        assert ok.json()["owner"] == "alice"
    finally:
        await session.aclose()


async def test_api_tokens_need_no_xsrf_token(hub, alice, new_repo):
    repo, _ = new_repo({"binder/apt.txt": "x\n"})
    r = await alice.post("environments", json={"name": "by-token", "repository": str(repo)})
    assert r.status_code == 201
    assert r.headers["location"].endswith(f"/api/environments/{r.json()['id']}")


async def test_long_lists_come_in_pages(hub, new_repo):
    repo, _ = new_repo({"binder/apt.txt": "x\n"})
    async with hub.token_client("dave") as dave:
        for i in range(3):
            r = await dave.post("environments", json={"name": f"page-{i}", "repository": str(repo)})
            assert r.status_code == 201
        first = await dave.get("environments", params={"limit": 2})
        total = int(first.headers["x-total-count"])
        assert len(first.json()) == 2
        assert [e["name"] for e in first.json()][:2] == ["page-2", "page-1"]  # newest first
        assert 'rel="next"' in first.headers["link"]
        rest = await dave.get("environments", params={"limit": 2, "offset": 2})
        assert len(first.json()) + len(rest.json()) == min(total, 4)
        bad = await dave.get("environments", params={"limit": 0})
        assert bad.status_code == 400


@pytest.fixture(scope="module")
async def bobs_preprint(hub, repos_root):
    """A preprint of bob's whose build stops at the layout check (nothing is installed)."""
    from .support.repos import make_repo

    repo = repos_root / "bobs-preprint"
    if not repo.exists():
        make_repo(repo, {"README.md": "not a preprint\n"})
    async with hub.token_client("bob") as bob:
        r = await bob.post("preprints", json={"repository": str(repo), "ref": "main"})
        assert r.status_code == 201, r.text
        p = r.json()
        for _ in range(300):
            build = (await bob.get(f"builds/{p['latest_build']['id']}")).json()
            if build["status"] in ("failed", "succeeded"):
                break
            await asyncio.sleep(0.2)
    return p


PREPRINT_ENDPOINTS = [
    ("GET", "preprints/{id}"),
    ("DELETE", "preprints/{id}"),
    ("POST", "preprints/{id}/builds"),
    ("GET", "builds/{build}"),
    ("POST", "builds/{build}/cancel"),
    ("GET", "builds/{build}/logs/main"),
    ("GET", "builds/{build}/logs/book"),
]


@pytest.mark.parametrize(("method", "path"), PREPRINT_ENDPOINTS)
async def test_another_users_preprint_is_invisible(hub, alice, bobs_preprint, method, path):
    p = bobs_preprint
    r = await alice.request(method, path.format(id=p["id"], build=p["latest_build"]["id"]))
    assert r.status_code == 404


@pytest.mark.parametrize(("method", "path"), [*PREPRINT_ENDPOINTS, ("GET", "preprints"),
                                              ("POST", "preprints"), ("POST", "check"),
                                              ("GET", "datasets")])  # fmt: skip
async def test_anonymous_and_unscoped_users_cannot_touch_preprints(hub, bobs_preprint, method,
                                                                   path):  # fmt: skip
    p = bobs_preprint
    path = path.format(id=p["id"], build=p["latest_build"]["id"])
    async with anonymous(hub) as anon:
        assert (await anon.request(method, path)).status_code == 403
    async with hub.token_client("carol") as carol:
        assert (await carol.request(method, path)).status_code == 403


async def test_admins_see_every_preprint_and_only_admins_see_datasets(hub, alice, bobs_preprint):
    async with hub.token_client("admin") as admin:
        everyone = (await admin.get("preprints")).json()
        assert bobs_preprint["id"] in [p["id"] for p in everyone]
        build = (await admin.get(f"builds/{bobs_preprint['latest_build']['id']}")).json()
        assert build["failed_stage"] == "check"
        assert (await admin.get("datasets")).status_code == 200
    assert bobs_preprint["id"] not in [p["id"] for p in (await alice.get("preprints")).json()]
    assert (await alice.get("datasets")).status_code == 403
    assert (await alice.delete("datasets/" + "0" * 64)).status_code == 403


async def test_cookie_writes_to_preprints_need_the_xsrf_token(hub, repos_root):
    session = await hub.browser_client("alice")
    try:
        r = await session.request("POST", "api/preprints", xsrf=False,
                                  json={"repository": str(repos_root / "x"), "ref": "main"})  # fmt: skip
        assert r.status_code == 403
        r = await session.request("POST", "api/check", xsrf=False, json={"repository": "x"})
        assert r.status_code == 403
    finally:
        await session.aclose()
