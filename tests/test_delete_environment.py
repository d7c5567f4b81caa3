"""Deleting an environment stops and removes the servers on it, and its id is never given again.

The attack it answers: alice's servers kept running after she deleted their environment, and
SQLite gave the deleted id to admin's next environment, so her servers pointed at admin's.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .conftest import build
from .support.preprints import BOOK_REQUIREMENTS
from .test_environments import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def servers_of(hub, user: str) -> dict:
    """The hub's own view: every server of the user, stopped ones included."""
    with hub.admin_api() as c:
        r = c.get(f"users/{user}", params={"include_stopped_servers": "1"})
        r.raise_for_status()
        return r.json().get("servers") or {}


async def start(hub, alice, name: str, env_id: int) -> None:
    r = await alice.post("servers", json={"name": name, "environment": env_id})
    assert r.status_code == 202, r.text

    def ready():
        return (servers_of(hub, "alice").get(name) or {}).get("ready")

    await wait_for(ready, timeout=120, interval=0.3)


async def test_deleting_an_environment_stops_its_servers_and_its_id_is_never_reused(
    hub, alice, new_repo
):
    marker = time.time_ns()
    # a preprint's runtime: the suite's earlier preprints of alice's built it already
    repo, _ = new_repo({"binder/requirements.txt": BOOK_REQUIREMENTS, "README.md": f"{marker}\n"})
    doomed, log = await build(alice, f"doomed-{marker}", repo)
    assert doomed["status"] == "ready", log[-20:]
    # the same runtime files: built once, shared by both
    kept, _ = await build(alice, f"kept-{marker}", repo)
    assert kept["status"] == "ready" and kept["runtime"] == doomed["runtime"]

    names = {"running": f"on-doomed-{marker}", "stopped": f"parked-{marker}",
             "other": f"on-kept-{marker}"}  # fmt: skip
    await asyncio.gather(
        start(hub, alice, names["running"], doomed["id"]),
        start(hub, alice, names["stopped"], doomed["id"]),
        start(hub, alice, names["other"], kept["id"]),
    )
    r = await alice.delete(f"servers/{names['stopped']}")  # stopped, not removed
    assert r.status_code == 204
    assert servers_of(hub, "alice")[names["stopped"]]["ready"] is False

    r = await alice.delete(f"environments/{doomed['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": doomed["id"],
        "deleted": True,
        "servers_stopped": sorted([names["running"], names["stopped"]]),
        "servers_not_stopped": [],
    }

    def gone():
        left = servers_of(hub, "alice")
        return names["running"] not in left and names["stopped"] not in left

    await wait_for(gone, timeout=60, interval=0.3)
    # the server on the other environment (same runtime) runs on, untouched
    other = servers_of(hub, "alice")[names["other"]]
    assert other["ready"] and other["user_options"] == {"environment": kept["id"]}
    listed = [s["name"] for s in (await alice.get("servers")).json()]
    assert names["other"] in listed and names["running"] not in listed

    # the newest environment goes too: the next one, admin's, gets a new id, not kept's
    r = await alice.delete(f"environments/{kept['id']}")
    assert r.status_code == 200 and r.json()["servers_stopped"] == [names["other"]]
    async with hub.token_client("admin") as admin:
        r = await admin.post("environments", json={"name": f"admins-{marker}",
                                                    "repository": str(repo)})  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["id"] > kept["id"] > doomed["id"]
        assert (await admin.delete(f"environments/{r.json()['id']}")).status_code == 200
    await wait_for(lambda: names["other"] not in servers_of(hub, "alice"), timeout=60)
