"""With `builder = docker`, a reader's direct link opens a server in a container on the image.

Real parts: JupyterHub with NeuroLibreDockerSpawner (dockerspawner) on a private dockerd with
host networking only, the service building the image with repo2docker, and the server's
kernel answering from inside the container.
"""

from __future__ import annotations

import json

import pytest

from .conftest import build
from .support.hub import SERVICE
from .support.kernel import run_in_kernel
from .support.pkgindex import add_wheels, bookworm_wheels, cache_dir
from .test_servers import wait_ready

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]

DOCKERFILE = """FROM neurolibre-test-base:bookworm
RUN useradd -m -u 1000 jovyan && python3 -m venv /srv/venv \\
 && /srv/venv/bin/pip install --no-cache-dir --index-url {index} \\
      jupyterhub=={hub} jupyterlab ipykernel
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


async def test_a_direct_link_opens_a_server_in_a_container_on_the_image(
    engine,
    start_hub,
    new_repo,
    pkg_index,
):
    import jupyterhub

    add_wheels(pkg_index, bookworm_wheels(cache_dir()))
    host = engine.host
    hub = start_hub(
        "docker-hub",
        builder="docker",
        DockerBuilder__docker_host=host,
        DockerBuilder__build_network="host",
        extra_config=SPAWNER.format(host=host),
    )
    repo, _ = new_repo({"binder/Dockerfile": DOCKERFILE.format(index=pkg_index.url,
                                                                hub=jupyterhub.__version__)})  # fmt: skip
    async with hub.token_client("alice") as alice:
        env, log = await build(alice, "in-a-container", repo)
    assert env["status"] == "ready", "\n".join(log[-40:])
    image = env["runtime"]["key"]
    assert env["runtime"]["backend"] == "docker"

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
        ps = engine.docker("ps", "--format", "{{json .}}").stdout.splitlines()
        running = json.loads(ps[0])
        assert image[:32] in running["Image"]
        await session.request("DELETE", "api/servers/boxed", params={"remove": "true"})
    finally:
        await session.aclose()
