"""Machine profiles and CPU/memory limits chosen when adding an environment."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"cpu_limit": "lots"}, "CPU limit 'lots' is not a number."),
        ({"cpu_limit": -1}, "CPU limit must be above 0"),
        ({"mem_limit": "a lot"}, "Memory limit 'a lot' is not a size such as 512M or 2G."),
        ({"profile": "huge"}, "Unknown machine profile 'huge'"),
    ],
)
async def test_bad_limits_are_refused(hub, alice, new_repo, limits, message):
    repo, _ = new_repo({"binder/apt.txt": "x\n"})
    r = await alice.post("environments", json={"name": "limited", "repository": str(repo),
                                                **limits})  # fmt: skip
    assert r.status_code == 400
    assert message in r.json()["message"]


async def test_limits_are_recorded(hub, alice, new_repo):
    repo, _ = new_repo({"binder/apt.txt": "x\n"})
    r = await alice.post("environments", json={"name": "with-limits", "repository": str(repo),
                                                "cpu_limit": "1.5", "mem_limit": "2G"})  # fmt: skip
    assert r.status_code == 201
    assert (r.json()["cpu_limit"], r.json()["mem_limit"]) == (1.5, "2G")


async def test_with_machine_profiles_users_pick_one(start_hub, new_repo):
    hub = start_hub("profiles", machine_profiles=[
        {"name": "small", "label": "1 CPU, 2 GB", "cpu": 1, "memory": "2G"},
        {"name": "large", "label": "2 CPU, 8 GB", "cpu": 2, "memory": "8G"}])  # fmt: skip
    repo, _ = new_repo({"binder/apt.txt": "x\n"})
    async with hub.token_client("alice") as alice:
        r = await alice.post("environments", json={"name": "free", "repository": str(repo),
                                                    "cpu_limit": 64})  # fmt: skip
        assert r.status_code == 400
        assert r.json()["message"] == "Choose a machine profile: small, large."
        r = await alice.post("environments", json={"name": "big", "repository": str(repo),
                                                    "profile": "large"})  # fmt: skip
        assert r.status_code == 201
        env = r.json()
    assert (env["profile"], env["cpu_limit"], env["mem_limit"]) == ("large", 2, "8G")
    session = await hub.browser_client("alice")
    try:
        assert "2 CPU, 8 GB" in session.landing.text
    finally:
        await session.aclose()
