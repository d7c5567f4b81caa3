"""Launch is real, for everyone: a server on a published version opens on its files, at the
built commit, with its data read-only; a reader without an account launches it in one click.

Real parts: the session's hub and service, a preprint built with uv and Jupyter Book and
published by the hub's editor, repo2data fetching from 127.0.0.1, servers started by the
embedded local spawner (confined: bubblewrap, the unprivileged build user).

Attacks, each next to its feature (confinement mutation-checked: without the bubblewrap prefix
the reader's server reads the other reader's copy and the service's data, and the test fails):
- a reader's kernel reads another reader's copy, the service's data directory, writes the dataset;
- a reader's edits reach another reader or the published files;
- `path=` with `..`;
- more readers than the per-preprint limit.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from .support.dataserver import DataServer, tar_gz_bytes
from .support.kernel import run_in_kernel
from .support.preprints import notebook, preprint
from .support.publish import anonymous, publish
from .test_environments import wait_for
from .test_servers import wait_ready

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]

NOTEBOOK = notebook(
    "from pathlib import Path\n"
    "print('signal', Path('../data/launchsig/signal.txt').read_text().split())"
)


@pytest.fixture(scope="module")
async def published(hub, repos_root):
    from .support.repos import make_repo

    server = DataServer()
    url = server.add("/launch/signal.tar.gz", tar_gz_bytes({"signal.txt": b"3\n4\n"}))
    repo = repos_root / f"launch-{time.time_ns()}"
    sha = make_repo(repo, preprint({"analysis": NOTEBOOK},
                                  data={"src": url, "dst": "./data", "projectName": "launchsig"}))  # fmt: skip
    async with hub.token_client("alice") as alice:
        out = await publish(hub, alice, repo)
    out.update(repo=repo, commit=sha)
    yield out
    server.close()


async def anonymous_launch(hub, slug: str, path: str = "content/analysis.ipynb",
                           timeout: float = 120) -> tuple[httpx.AsyncClient, str, str, str]:  # fmt: skip
    """Follow launch/{slug} as a browser without an account would (the page reloads itself
    until the server answers): (client, server URL, user, token)."""
    client = anonymous(hub)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await client.get(f"launch/{slug}", params={"path": path})
        if r.status_code == 302:
            break
        assert r.status_code == 200, r.text
        assert 'id="launch-status"' in r.text and 'http-equiv="refresh"' in r.text
        assert loop.time() < deadline, "the reader's server did not start"
        await asyncio.sleep(0.5)
    location = r.headers["location"]
    m = re.fullmatch(r"/user/(reader-[0-9a-f]{12})/lab/tree/(.*)\?token=(\w+)", location)
    assert m, location
    assert m.group(2) == path
    # the browser follows: the server takes the token once and sets its own cookie
    r2 = await client.get(hub.url + location, follow_redirects=True)
    assert r2.status_code == 200, r2.text[:300]
    return client, f"{hub.url}/user/{m.group(1)}/", m.group(1), m.group(3)


async def test_the_author_launches_the_version_on_its_files_and_data(hub, published):
    slug = published["slug"]
    async with hub.token_client("alice") as alice:
        r = await alice.get(f"{hub.url}/services/neurolibre/launch/{slug}",
                            params={"path": "content/analysis.ipynb"}, follow_redirects=False)  # fmt: skip
    assert r.status_code == 302, r.text
    name = f"{slug[:50]}-v1"
    assert r.headers["location"].startswith(f"/hub/spawn-pending/alice/{name}?next=")
    server = await wait_ready(hub, "alice", name)
    assert server["user_options"]["version"] > 0
    url, token = f"{hub.url}/user/alice/{name}/", hub.api_token("alice")
    async with httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=30) as c:
        r = await c.get(f"{url}api/contents/content/analysis.ipynb")
    assert r.status_code == 200, r.text
    # the notebook as committed at the built commit
    committed = (published["repo"] / "content" / "analysis.ipynb").read_text()
    assert r.json()["content"]["cells"][0]["source"] == json.loads(committed)["cells"][0]["source"]
    out = await run_in_kernel(url, token, (
        "import os, pathlib\n"
        "os.chdir('content')\n"
        "print(pathlib.Path('../data/launchsig/signal.txt').read_text().split())\n"
        "try:\n"
        "    open('../data/launchsig/mine.txt', 'w')\n"
        "    print('WROTE')\n"
        "except OSError as e:\n"
        "    print('refused', type(e).__name__)\n"
        "print('uid', os.getuid())\n"
    ))  # fmt: skip
    assert "['3', '4']" in out
    assert "refused" in out and "WROTE" not in out
    assert "uid 0" not in out  # confined: the build user, not the hub's root
    with hub.admin_api() as c:
        c.delete(f"users/alice/servers/{name}", params={"remove": "true"})


async def test_path_with_dot_dot_is_refused(hub, published):
    async with anonymous(hub) as c:
        r = await c.get(f"launch/{published['slug']}", params={"path": "../../etc/passwd"})
    assert r.status_code == 400
    assert "without &#39;..&#39;" in r.text


async def test_anonymous_readers_launch_in_one_click_on_their_own_copies(hub, published):
    slug = published["slug"]
    a, a_url, a_user, a_token = await anonymous_launch(hub, slug)
    b, b_url, b_user, b_token = await anonymous_launch(hub, slug)
    try:
        assert a_user != b_user
        # the reader reads the notebook through the server (the cookie the token set)
        r = await a.get(f"{a_url}api/contents/content/analysis.ipynb")
        assert r.status_code == 200, r.text
        # a reload of the launch page goes back to the same server, it starts no other
        r = await a.get(f"launch/{slug}", params={"path": "content/analysis.ipynb"})
        assert r.status_code == 302 and f"/user/{a_user}/" in r.headers["location"]

        # reader A edits the notebook: B does not see it, nor do the published files
        headers = {"Authorization": f"token {a_token}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as c:
            r = await c.put(f"{a_url}api/contents/content/analysis.ipynb",
                            json={"type": "file", "format": "text", "content": "A WAS HERE"})  # fmt: skip
            assert r.status_code in (200, 201), r.text
        async with httpx.AsyncClient(headers={"Authorization": f"token {b_token}"},
                                     timeout=30) as c:  # fmt: skip
            r = await c.get(f"{b_url}api/contents/content/analysis.ipynb")
        assert "A WAS HERE" not in r.text
        source = hub.service_data / "published" / slug / "v1" / "source" / "content"
        assert "A WAS HERE" not in (source / "analysis.ipynb").read_text()

        # the attack: A's kernel looks for B's copy and the service's data, writes the dataset
        copies = hub.service_data / "servers"
        b_copy = next(p for p in copies.iterdir() if p.name.startswith(b_user))
        out = await run_in_kernel(a_url, a_token, (
            "import os\n"
            f"for p in [{str(b_copy)!r}, {str(hub.service_data)!r}, {str(hub.data)!r}]:\n"
            "    try:\n"
            "        print(p, 'SEES', os.listdir(p))\n"
            "    except OSError as e:\n"
            "        print(p, 'hidden', type(e).__name__)\n"
            "try:\n"
            "    open('data/launchsig/signal.txt', 'a').write('5')\n"
            "    print('DATA WRITTEN')\n"
            "except OSError as e:\n"
            "    print('data refused', type(e).__name__)\n"
        ))  # fmt: skip
        # B's copy is not there at all; of the data directories, only the empty skeleton
        # that leads to A's own mounts (no database, secret, token, dataset, other copy)
        assert f"{b_copy} hidden" in out, out
        for secret in ("jupyterhub.sqlite", "cookie_secret", "service-token", "published",
                       "datasets", "neurolibre.sqlite", "logs"):  # fmt: skip
            assert secret not in out, out
        assert "DATA WRITTEN" not in out and "data refused" in out, out

        # past the per-preprint limit (two in the tests' hub): a clear page, no server
        async with anonymous(hub) as c:
            r = await c.get(f"launch/{slug}")
        assert r.status_code == 429, r.text
        assert "reader servers running, the most allowed at once" in r.text
    finally:
        await a.aclose()
        await b.aclose()

    # the server stops (culled, or the reader is done): the temporary user and copy go
    with hub.admin_api() as c:
        assert c.delete(f"users/{a_user}/server").status_code in (202, 204)

    async def gone():
        with hub.admin_api() as c:
            user_gone = c.get(f"users/{a_user}").status_code == 404
        return (user_gone and not any(p.name.startswith(a_user) for p in copies.iterdir())) or None

    await wait_for(gone, timeout=60, interval=1)
    with hub.admin_api() as c:
        c.delete(f"users/{b_user}")


async def test_the_idle_culler_runs_as_a_hub_service(hub):
    """The embedded default runs jupyterhub-idle-culler against its hub (NEUROLIBRE_IDLE_TIMEOUT)."""
    hub_api = f"127.0.0.1:{hub.ports[0]}"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"jupyterhub_idle_culler" in cmd and any(
            e.startswith(b"JUPYTERHUB_API_URL=") and hub_api.encode() in e for e in env
        ):
            found.append([c.decode() for c in cmd])
    assert found, "no idle culler runs for this hub"
    assert "--timeout=3600" in found[0]
