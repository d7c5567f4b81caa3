"""With `builder = docker`: a preprint goes through the whole pipeline in containers, and a
reader's direct link opens a server in a container on the same image.

Real parts: JupyterHub with NeuroLibreDockerSpawner (dockerspawner) on a private dockerd with
host networking only, the service building the image with repo2docker, repo2data fetching from
127.0.0.1, Jupyter Book executing in a container of the image, and the server's kernel
answering from inside its container.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import build, follow_log
from .support.dataserver import DataServer, tar_gz_bytes
from .support.hub import SERVICE
from .support.kernel import run_in_kernel
from .support.pkgindex import add_wheels, bookworm_wheels, cache_dir
from .support.preprints import notebook, preprint
from .test_servers import wait_ready

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]

DOCKERFILE = """FROM neurolibre-test-base:bookworm
RUN useradd -m -u 1000 jovyan && python3 -m venv /srv/venv \\
 && /srv/venv/bin/pip install --no-cache-dir --index-url {index} \\
      jupyterhub=={hub} jupyterlab ipykernel jupyter-book==1.0.4.post1
RUN echo "VALUE = 'from-the-image'" > /srv/venv/lib/python3.11/site-packages/nl_image_only.py
ENV PATH=/srv/venv/bin:$PATH
USER jovyan
WORKDIR /home/jovyan
CMD ["jupyterhub-singleuser"]
"""

SPAWNER = """
c.JupyterHub.spawner_class = "neurolibre_service.spawner.NeuroLibreDockerSpawner"
c.DockerSpawner.network_name = "host"
c.DockerSpawner.remove = True
c.DockerSpawner.client_kwargs = {{"base_url": {host!r}}}
c.Spawner.args = []
"""


async def test_a_preprint_builds_in_containers_and_a_direct_link_opens_a_server_on_its_image(
    engine,
    start_hub,
    new_repo,
    pkg_index,
):
    import jupyterhub

    add_wheels(pkg_index, bookworm_wheels(cache_dir()))
    data = DataServer()
    url = data.add("/values.tar.gz", tar_gz_bytes({"values.txt": b"3 4 5\n"}))
    host = engine.host
    hub = start_hub(
        "docker-hub",
        builder="docker",
        DockerBuilder__docker_host=host,
        DockerBuilder__build_network="host",
        extra_config=SPAWNER.format(host=host),
    )
    nb = notebook("from pathlib import Path\n"
                  "print('sum of values', sum(map(int, Path('../data/vals/values.txt')"
                  ".read_text().split())))")  # fmt: skip
    files = preprint({"analysis": nb}, data={"src": url, "dst": "./data", "projectName": "vals"},
                     extra={"binder/Dockerfile": DOCKERFILE.format(index=pkg_index.url,
                                                                   hub=jupyterhub.__version__)})  # fmt: skip
    repo, _ = new_repo(files)
    try:
        async with hub.token_client("alice") as alice:
            # 1. the author's preprint: image built by repo2docker, data fetched, book
            # executed in a container of that image, preview served
            r = await alice.post("preprints", json={"repository": str(repo), "ref": "main"})
            assert r.status_code == 201, r.text
            build_id = r.json()["latest_build"]["id"]
            _lines, status = await follow_log(alice, f"builds/{build_id}/logs/main", timeout=800)
            built = (await alice.get(f"builds/{build_id}")).json()
            book_log = (await alice.get(f"builds/{build_id}/logs/book")).text
            assert status == "succeeded", (built["error"], book_log[-3000:])
            assert built["stages"]["book"] == "succeeded" and built["executed"] == 1
            async with httpx.AsyncClient(headers=alice.headers, timeout=30,
                                         follow_redirects=True) as c:  # fmt: skip
                page = await c.get(f"{hub.url}{SERVICE}builds/{build_id}/preview/analysis.html")
            assert "sum of values 12" in page.text
            # 2. a reader's environment from the same repository reuses the image
            env, log = await build(alice, "in-a-container", repo)
        assert env["status"] == "ready", "\n".join(log[-40:])
        assert env["runtime"]["backend"] == "docker"
        assert env["runtime"]["key"] == built["runtime_key"]
        assert any("Reusing" in line for line in log)
    finally:
        data.close()

    # 3. the direct link opens a server in a container on that image
    session = await hub.browser_client("alice")
    try:
        r = await session.client.get(f"{SERVICE}servers?name=boxed&environment={env['id']}",
                                     follow_redirects=False)  # fmt: skip
        assert r.status_code == 302 and "/hub/spawn-pending/alice/boxed" in r.headers["location"]
        await wait_ready(hub, "alice", "boxed")
        out = await run_in_kernel(f"{hub.url}/user/alice/boxed/", hub.api_token("alice"),
                                  "import nl_image_only, os, sys\n"
                                  "print(nl_image_only.VALUE, os.getuid(), sys.prefix)")  # fmt: skip
        assert out.split() == ["from-the-image", "1000", "/srv/venv"]
        # the preprint's dataset is there, read-only, where its notebooks look for it
        out = await run_in_kernel(
            f"{hub.url}/user/alice/boxed/", hub.api_token("alice"),
            "from pathlib import Path\n"
            "p = Path('/home/jovyan/data/vals/values.txt')\n"
            "try:\n    p.write_text('changed')\n    w = 'writable'\n"
            "except OSError as e:\n    w = type(e).__name__\n"
            "print(p.read_text().strip().replace(' ', ','), w)",
        )  # fmt: skip
        assert out.split() == ["3,4,5", "OSError"]
        ps = engine.docker("ps", "--format", "{{json .}}").stdout.splitlines()
        running = json.loads(ps[0])
        assert env["runtime"]["key"][:32] in running["Image"]
        await session.request("DELETE", "api/servers/boxed", params={"remove": "true"})
    finally:
        await session.aclose()
