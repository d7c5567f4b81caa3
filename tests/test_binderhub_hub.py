"""With `builder = binderhub`: a preprint's image comes from a BinderHub, and its book and a
reader's server run on that image, pulled from the BinderHub's registry.

Real parts: JupyterHub, with the fake BinderHub registered as its service "binder" (so the
service reaches it through the hub's proxy at /services/binder/, with its own hub token,
checked by the fake against the hub as BinderHub does), a Git HTTP server on 127.0.0.1 the
fake clones from, a private dockerd the fake builds on, a registry with a login the fake
pushes to (and then removes its local copy, so the book runner and DockerSpawner must pull
with credentials), repo2data, Jupyter Book in a container of the image, and a kernel.
"""

from __future__ import annotations

import json

import httpx
import pytest

from neurolibre_service import docker_engine as de

from .conftest import follow_log
from .support.dataserver import DataServer, tar_gz_bytes
from .support.docker import Registry
from .support.fake_binderhub import FakeBinderHub
from .support.gitserver import GitServer
from .support.hub import SERVICE
from .support.kernel import run_in_kernel
from .support.pkgindex import add_wheels, bookworm_wheels, cache_dir
from .support.preprints import notebook, preprint
from .support.repos import make_repo
from .test_docker_hub import DOCKERFILE, SPAWNER
from .test_servers import wait_ready

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]
REGISTRY_USER, REGISTRY_PASSWORD = "binderhub", "registry-secret-for-tests"

BINDER_SERVICE = """
c.JupyterHub.services.append({{"name": "binder", "url": {url!r}}})
# the NeuroLibre service may use the BinderHub (BinderHub checks this scope on its token)
c.JupyterHub.load_roles.append({{"name": "neurolibre-binder",
                                "scopes": ["access:services!service=binder"],
                                "services": ["neurolibre"]}})
c.NeuroLibreDockerSpawner.registry_username = {user!r}
# the service's BinderHub is reached through this hub's proxy, as in a deployment
c.JupyterHub.services[0]["command"].append(
    f"--BinderHubBuilder.binderhub_url=http://127.0.0.1:{{c.JupyterHub.port}}/services/binder/")
"""


async def test_a_preprint_builds_on_a_binderhub_image_and_a_direct_link_opens_a_server_on_it(
    engine, start_hub, tmp_path, pkg_index, monkeypatch
):
    import jupyterhub

    add_wheels(pkg_index, bookworm_wheels(cache_dir()))
    registry = Registry(REGISTRY_USER, REGISTRY_PASSWORD)
    registry.start()
    git = GitServer()
    data = DataServer()
    fake = None
    try:
        # the engine pulls from a plain-HTTP registry on loopback (Docker trusts 127.0.0.0/8)
        fake = FakeBinderHub(docker=engine, registry=registry).start()
        monkeypatch.setenv("NEUROLIBRE_REGISTRY_PASSWORD", REGISTRY_PASSWORD)
        url = data.add("/values.tar.gz", tar_gz_bytes({"values.txt": b"3 4 5\n"}))
        host = engine.host
        extra = SPAWNER.format(host=host) + BINDER_SERVICE.format(
            url=fake.url.removesuffix("/services/binder/"), user=REGISTRY_USER
        )
        hub = start_hub("binderhub-hub", builder="binderhub",
                        allowed_url_schemes=["https", "http"],
                        BinderHubBuilder__docker_host=host,
                        BinderHubBuilder__registry_username=REGISTRY_USER,
                        extra_config=extra)  # fmt: skip
        fake.hub_api_url = f"{hub.url}/hub/api/"
        # the service's BinderHub URL goes through the hub's proxy, as in a deployment
        binder_url = f"{hub.url}/services/binder/"
        nb = notebook("from pathlib import Path\n"
                      "print('sum of values', sum(map(int, Path('../data/vals/values.txt')"
                      ".read_text().split())))")  # fmt: skip
        files = preprint({"analysis": nb},
                         data={"src": url, "dst": "./data", "projectName": "vals"},
                         extra={"binder/Dockerfile": DOCKERFILE.format(
                             index=pkg_index.url, hub=jupyterhub.__version__)})  # fmt: skip
        path = tmp_path / "paper"
        sha = make_repo(path, files)
        repo = git.publish(path)

        async with hub.token_client("alice") as alice:
            # 1. the author's preprint: BinderHub builds the image, the book stage pulls it
            r = await alice.post("preprints", json={"repository": repo, "ref": "main"})
            assert r.status_code == 201, r.text
            build_id = r.json()["latest_build"]["id"]
            _lines, status = await follow_log(alice, f"builds/{build_id}/logs/main", timeout=800)
            built = (await alice.get(f"builds/{build_id}")).json()
            env_log = (await alice.get(f"builds/{build_id}/logs/environment")).text
            book_log = (await alice.get(f"builds/{build_id}/logs/book")).text
            assert status == "succeeded", (built["error"], env_log[-3000:], book_log[-3000:])
            # the build went through the hub's proxy, with the service's own token
            request = fake.requests[0]
            assert request.provider == "git" and request.spec.endswith(f"/{sha}")
            assert request.headers["Authorization"].startswith("Bearer ")
            image = request.events[-1]["imageName"]
            assert image.startswith(registry.address + "/")
            assert f"Image built by BinderHub: {image}" in env_log
            # BinderHub's log streamed into the environment log; the token never did
            assert "Step 1/" in env_log or "FROM neurolibre-test-base" in env_log
            assert "" not in env_log.splitlines()  # Docker's lone "\n" events are dropped
            assert request.headers["Authorization"].removeprefix("Bearer ") not in env_log
            # the engine did not have the image: the book runner pulled it with the login
            assert f"Pulling {image} from its registry as {REGISTRY_USER}" in book_log
            assert REGISTRY_PASSWORD not in book_log + env_log
            assert built["stages"]["book"] == "succeeded" and built["executed"] == 1
            async with httpx.AsyncClient(headers=alice.headers, timeout=30,
                                         follow_redirects=True) as c:  # fmt: skip
                page = await c.get(f"{hub.url}{SERVICE}builds/{build_id}/preview/analysis.html")
            assert "sum of values 12" in page.text

            # 2. an environment from the same repository reuses the runtime: no second build
            r = await alice.post("environments", json={"name": "from-binder",
                                                       "repository": repo, "ref": "main"})  # fmt: skip
            assert r.status_code == 201, r.text
            env_id = r.json()["id"]
            _lines, status = await follow_log(alice, f"environments/{env_id}/log", timeout=300)
            env = (await alice.get(f"environments/{env_id}")).json()
            assert env["status"] == "ready" and env["runtime"]["backend"] == "binderhub"
            assert env["runtime"]["key"] == built["runtime_key"]
            assert len(fake.requests) == 1

        # 3. an admin sees the BinderHub's health on the environments page and the API
        admin = await hub.browser_client("admin")
        try:
            page = await admin.client.get(f"{SERVICE}environments")
            assert "Builder: binderhub" in page.text and binder_url in page.text
            assert "healthy" in page.text and "Docker registry" in page.text
            r = await admin.client.get(f"{SERVICE}api/builder")
            assert r.status_code == 200 and r.json()["health"]["version"] == "fake-1.0"
            fake.healthy = False
            r = await admin.client.get(f"{SERVICE}api/builder")
            assert r.status_code == 503 and r.json()["health"]["ok"] is False
        finally:
            await admin.aclose()
        async with hub.token_client("alice") as alice:
            assert (await alice.get("builder")).status_code == 403

        # 4. the direct link: DockerSpawner pulls the image (gone from the engine) with the
        # login, and the server runs on it with the dataset read-only
        engine.docker("rmi", "-f", image)
        # what the real engine says when the registry wants a login (support/fake_engine.py
        # answers the same in test_binderhub.py): not "absent", not "engine down"
        async with de.engine(host) as client:
            with pytest.raises(de.RegistryAuthError, match="needs a login, and none is set"):
                await de.in_registry(client, image, None)
            wrong = {"username": REGISTRY_USER, "password": "not-the-password"}
            with pytest.raises(de.RegistryAuthError, match=f"refused the login as {REGISTRY_USER}"):
                await de.in_registry(client, image, wrong)
            right = {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}
            assert await de.in_registry(client, image, right)
            assert not await de.in_registry(client, image.rpartition(":")[0] + ":nope", right)
        async with hub.token_client("alice") as alice:
            # the registry still has it (the engine asks it, with the login): still reused
            r = await alice.post(f"environments/{env_id}/rebuild")
            assert r.status_code == 202, r.text
            lines, status = await follow_log(alice, f"environments/{env_id}/log", timeout=300)
            assert status == "succeeded" and any("Reusing" in line for _, line in lines), lines
            assert len(fake.requests) == 1
        session = await hub.browser_client("alice")
        try:
            r = await session.client.get(f"{SERVICE}servers?name=binder&environment={env_id}",
                                         follow_redirects=False)  # fmt: skip
            assert r.status_code == 302, r.text
            await wait_ready(hub, "alice", "binder")
            out = await run_in_kernel(
                f"{hub.url}/user/alice/binder/", hub.api_token("alice"),
                "import nl_image_only, os\n"
                "from pathlib import Path\n"
                "print(nl_image_only.VALUE, os.getuid(),"
                " Path('/home/jovyan/data/vals/values.txt').read_text().strip()"
                ".replace(' ', ','))",
            )  # fmt: skip
            assert out.split() == ["from-the-image", "1000", "3,4,5"]
            running = json.loads(engine.docker("ps", "--format", "{{json .}}")
                                 .stdout.splitlines()[0])  # fmt: skip
            assert running["Image"] == image
            await session.request("DELETE", "api/servers/binder", params={"remove": "true"})
        finally:
            await session.aclose()
    finally:
        data.close()
        git.close()
        if fake:
            fake.close()
        registry.stop()
