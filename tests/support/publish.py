"""Publishing a preprint through the real service, for tests that need a published version."""

from __future__ import annotations

import httpx

from ..conftest import follow_log
from .hub import SERVICE


def anonymous(hub, **kw) -> httpx.AsyncClient:
    """A reader without an account (no token, no cookie)."""
    return httpx.AsyncClient(base_url=hub.url + SERVICE, timeout=30, **kw)


async def finish(client: httpx.AsyncClient, build_id: int) -> dict:
    _lines, status = await follow_log(client, f"builds/{build_id}/logs/main", timeout=800)
    assert status is not None
    return (await client.get(f"builds/{build_id}")).json()


async def publish(hub, author: httpx.AsyncClient, repo) -> dict:
    """Build the repository as the author's preprint, submit it, and have the hub's editor
    screen and accept it: {preprint, build, slug, review}."""
    r = await author.post("preprints", json={"repository": str(repo), "ref": "main"})
    assert r.status_code == 201, r.text
    p = r.json()
    build = await finish(author, p["latest_build"]["id"])
    assert build["status"] == "succeeded", build.get("error")
    r = await author.post(f"preprints/{p['id']}/submit", json={})
    assert r.status_code == 200, r.text
    async with hub.token_client("editor") as editor:
        r = await editor.post(f"preprints/{p['id']}/decision", json={"decision": "screen"})
        assert r.status_code == 200, r.text
        r = await editor.post(f"preprints/{p['id']}/decision", json={"decision": "accept"})
        assert r.status_code == 200, r.text
    review = r.json()
    return {"preprint": p["id"], "build": build["id"], "slug": review["publication"]["slug"],
            "review": review}  # fmt: skip
