"""Readers and authors open hub servers on built environments, by page, API or direct link."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import build
from .support.hub import SERVICE
from .support.kernel import run_in_kernel
from .test_environments import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def ready_env(hub, pkg_index, repos_root):
    """alice's environment with a module only it has, and limits."""
    from .support.repos import make_repo

    marker = f"{time.time_ns()}"
    req = pkg_index.add_sdist(pkg_index.sdists, "nl-only-here", marker, "",
                              modules={"nl_only_here": f"VALUE = {marker!r}\n"})  # fmt: skip
    repo = repos_root / f"server-repo-{marker}"
    make_repo(repo, {"binder/requirements.txt": f"{req}\n", "analysis.ipynb": "{}"})
    async with hub.token_client("alice") as alice:
        env, log = await build(alice, f"lab-{marker}", repo, cpu_limit=1.5, mem_limit="1G")
    assert env["status"] == "ready", log
    env["marker"] = marker
    return env


async def server_state(hub, user: str, name: str) -> dict | None:
    with hub.admin_api() as c:
        return (c.get(f"users/{user}").json().get("servers") or {}).get(name)


async def wait_ready(hub, user: str, name: str) -> dict:
    async def ready():
        s = await server_state(hub, user, name)
        return s if s and s.get("ready") else None

    return await wait_for(ready, timeout=120, interval=0.5)


async def test_a_direct_link_starts_reopens_and_restarts_a_server_on_its_environment(
    hub, ready_env
):
    env_id = ready_env["id"]
    session = await hub.browser_client("alice")
    client = session.client
    link = f"{SERVICE}servers?name=paper&environment={env_id}&path=analysis.ipynb"
    try:
        # 1. not running: the service starts it and sends the browser to the progress page
        r = await client.get(link, follow_redirects=False)
        assert r.status_code == 302
        assert r.headers["location"].startswith("/hub/spawn-pending/alice/paper?next=")
        server = await wait_ready(hub, "alice", "paper")
        assert server["user_options"] == {"environment": env_id}

        # the server runs the environment: its kernel imports what only that environment has,
        # and the limits reached the spawner
        token = hub.api_token("alice")
        out = await run_in_kernel(f"{hub.url}/user/alice/paper/", token,
                                  "import nl_only_here, os, sys\n"
                                  "print(nl_only_here.VALUE, os.environ['MEM_LIMIT'],"
                                  " os.environ['CPU_LIMIT'], sys.prefix)")  # fmt: skip
        value, mem, cpu, prefix = out.split()
        assert value == ready_env["marker"]
        assert (mem, cpu) == (str(1024**3), "1.5")
        assert prefix.endswith(ready_env["runtime"]["key"])

        # 2. running: the link reopens it, at the notebook
        r = await client.get(link, follow_redirects=False)
        assert r.headers["location"] == "/user/alice/paper/lab/tree/analysis.ipynb"

        # 3. stopped: the link starts it again, on the same environment
        r = await session.request("DELETE", "api/servers/paper")
        assert r.status_code == 204
        r = await client.get(link, follow_redirects=False)
        assert "/hub/spawn-pending/alice/paper" in r.headers["location"]
        server = await wait_ready(hub, "alice", "paper")
        assert server["user_options"] == {"environment": env_id}

        # the servers page lists it, with its environment
        page = await client.get(f"{SERVICE}servers")
        assert 'data-name="paper"' in page.text and "running" in page.text
        listed = (await session.request("GET", "api/servers")).json()
        assert {"name": "paper", "environment": env_id}.items() <= next(
            s for s in listed if s["name"] == "paper"
        ).items()
        await session.request("DELETE", "api/servers/paper", params={"remove": "true"})
    finally:
        await session.aclose()


async def test_direct_links_explain_what_is_wrong(hub, ready_env, new_repo, pkg_index):
    broken, _ = new_repo({"binder/environment.yml": "dependencies: []\n"})
    req = pkg_index.add_sdist(pkg_index.sdists, f"nl-other-{time.time_ns()}", "1.0", "")
    other_repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})
    async with hub.token_client("alice") as alice:
        failed, _ = await build(alice, "cannot-run", broken)
        other, _ = await build(alice, "other-env", other_repo)
    assert other["status"] == "ready"
    session = await hub.browser_client("alice")
    try:
        # a server named "busy" runs on the other environment
        r = await session.client.get(f"{SERVICE}servers?name=busy&environment={other['id']}",
                                     follow_redirects=False)  # fmt: skip
        assert r.status_code == 302
        await wait_ready(hub, "alice", "busy")
        cases = [
            ("name=x&environment=999999", 404, "No environment 999999."),
            ("name=x&environment=abc", 400, "Unknown environment"),
            (f"name=x&environment={failed['id']}", 409, "is failed"),
            (f"name=busy&environment={ready_env['id']}", 409,
             f"Your server &#39;busy&#39; is running on environment {other['id']}"),
            (f"name=-bad&environment={ready_env['id']}", 400, "A server name is"),
            (f"name=x&environment={ready_env['id']}&path=../../etc/passwd", 400, "without &#39;..&#39;"),
        ]  # fmt: skip
        for query, status, message in cases:
            r = await session.client.get(f"{SERVICE}servers?{query}", follow_redirects=False)
            assert r.status_code == status, (query, r.text)
            assert message in r.text, (query, r.text[-600:])
    finally:
        await session.request("DELETE", "api/servers/busy", params={"remove": "true"})
        await session.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image": "evil/image:latest"}, "Unsupported server options: image"),
        ({"cmd": ["/bin/sh", "-c", "id"]}, "Unsupported server options: cmd"),
        ({"environment": 1, "path": "/"}, "Unsupported server options: path"),
        ({"environment": "../../bin"}, "Unknown environment"),
        ({"environment": 999999}, "No environment 999999."),
        ({}, "Choose a NeuroLibre environment for this server."),
    ],
)
async def test_forged_user_options_do_not_start_anything(hub, options, message):
    # a new name each time: the hub reuses a server's last options when given none
    name = f"forged-{time.time_ns()}"
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(f"{hub.url}/hub/api/users/alice/servers/{name}",
                         headers={"Authorization": f"token {hub.api_token('alice')}"},
                         json=options)  # fmt: skip
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert await server_state(hub, "alice", name) is None


async def test_another_users_environment_cannot_be_launched(hub, ready_env):
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(f"{hub.url}/hub/api/users/bob/servers/stolen",
                         headers={"Authorization": f"token {hub.api_token('bob')}"},
                         json={"environment": ready_env["id"]})  # fmt: skip
    assert r.status_code == 400
    assert r.json()["message"] == f"No environment {ready_env['id']}."
    session = await hub.browser_client("bob")
    try:
        r = await session.client.get(f"{SERVICE}servers?name=x&environment={ready_env['id']}",
                                     follow_redirects=False)  # fmt: skip
        assert r.status_code == 404
    finally:
        await session.aclose()


async def test_the_hub_spawn_page_lists_the_users_environments(hub, ready_env):
    session = await hub.browser_client("alice")
    try:
        r = await session.client.get("/hub/spawn/alice/from-form")
        assert r.status_code == 200
        assert f'<option value="{ready_env["id"]}">{ready_env["name"]}' in r.text
    finally:
        await session.aclose()


async def test_only_the_hubs_spawner_may_ask_for_spawn_specs(hub, ready_env, alice):
    r = await alice.get(f"spawner/environments/{ready_env['id']}", params={"user": "alice"})
    assert r.status_code == 403
    async with httpx.AsyncClient(timeout=30) as anon:
        r = await anon.get(f"{hub.api}spawner/environments", params={"user": "alice"})
    assert r.status_code == 403
    assert "Only the hub's spawner" in r.json()["message"]
