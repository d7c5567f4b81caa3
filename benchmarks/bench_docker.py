"""The Docker backend: image reuse across preprints, and launch latency in containers.

On a private dockerd (host networking, the tests' Debian base image) and one hub with
`builder = docker` and NeuroLibreDockerSpawner, next to a hub on the embedded default (local
builder, local processes), in the same run:

  image reuse   preprint A is built (repo2docker builds its image), then preprint B, another
                repository with the same binder/ files: its environment stage finds the image
                (environment stage time, A against B)
  launch        a direct link to a stopped server until its api/status answers 200, on each
                hub (--launches times; servers stopped and removed in between)

Usage: python benchmarks/bench_docker.py [--launches 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    make_repo,
    median,
    package_index,
    require_tools,
    running_hub,
    table,
    workspace,
)
from bench_launch import stop_and_remove, timed_link
from bench_preprint import timed_build

sys.path.insert(0, str(REPO))
import jupyterhub

from tests.conftest import hub_args
from tests.support.docker import DockerDaemon, ensure_base_image
from tests.support.hub import Hub
from tests.support.pkgindex import add_wheels, bookworm_wheels, cache_dir
from tests.support.preprints import notebook, preprint
from tests.test_docker_hub import DOCKERFILE, SPAWNER

REQUIREMENTS = "jupyter-book==1.0.4.post1\n"


async def launches(hub, env_id: int, n: int) -> list[float]:
    session = await hub.browser_client("alice")
    out = []
    try:
        token = {"Authorization": f"token {hub.api_token('alice')}"}
        admin_token = {"Authorization": f"token {hub.token}"}
        async with httpx.AsyncClient(base_url=hub.url, timeout=30, headers=token) as status, \
                httpx.AsyncClient(base_url=f"{hub.url}/hub/api/", timeout=30,
                                  headers=admin_token) as admin:  # fmt: skip
            for i in range(n):
                t = await timed_link(session, status, f"b{i}", env_id, "cold", 120)
                out.append(t["total"])
                await stop_and_remove(session, admin, f"b{i}", 60)
    finally:
        await session.aclose()
    return out


async def wait_ready(client: httpx.AsyncClient, env_id: int) -> None:
    for _ in range(1200):
        if (await client.get(f"environments/{env_id}")).json()["status"] == "ready":
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"environment {env_id} not ready")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launches", type=int, default=5)
    args = ap.parse_args()
    require_tools()
    engine = DockerDaemon()
    engine.start()
    try:
        ensure_base_image(engine)
        with workspace() as root, package_index(root) as index:
            add_wheels(index, bookworm_wheels(cache_dir()))
            repos = root / "repos"
            dockerfile = DOCKERFILE.format(index=index.url, hub=jupyterhub.__version__)
            nb = notebook("print('ok')")
            a, b = repos / "a", repos / "b"
            make_repo(a, preprint({"nb": nb}, extra={"binder/Dockerfile": dockerfile}))
            make_repo(b, preprint({"other": nb}, intro="# Another preprint",
                                  extra={"binder/Dockerfile": dockerfile}))  # fmt: skip
            local_repo = repos / "local"
            make_repo(local_repo, {"binder/requirements.txt": REQUIREMENTS})
            dhub = Hub(root, name="docker", extra_config=SPAWNER.format(host=engine.host),
                       service_args=hub_args(index, repos, builder="docker",
                                             DockerBuilder__docker_host=engine.host,
                                             DockerBuilder__build_network="host"))  # fmt: skip
            dhub.start(timeout=120)
            try:
                async with dhub.token_client("alice") as c:
                    first = await timed_build(
                        c, "POST", "preprints", {"repository": str(a), "ref": "main"}
                    )
                    second = await timed_build(
                        c, "POST", "preprints", {"repository": str(b), "ref": "main"}
                    )
                    r = await c.post(
                        "environments", json={"name": "env", "repository": str(a), "ref": "main"}
                    )
                    denv = r.json()["id"]
                    await wait_ready(c, denv)
                docker_launch = await launches(dhub, denv, args.launches)
            finally:
                dhub.stop()
            with running_hub(root, index, repos, name="local") as lhub:
                async with lhub.token_client("alice") as c:
                    r = await c.post(
                        "environments",
                        json={"name": "env", "repository": str(local_repo), "ref": "main"},
                    )
                    lenv = r.json()["id"]
                    await wait_ready(c, lenv)
                local_launch = await launches(lhub, lenv, args.launches)
    finally:
        engine.stop()
    print(table(["preprint", "total s", "environment s", "book s"],
                [["A (image built)", f"{first['total']:.1f}", f"{first['environment']:.1f}", f"{first['book']:.1f}"],
                 ["B (same runtime)", f"{second['total']:.1f}", f"{second['environment']:.1f}", f"{second['book']:.1f}"]]))  # fmt: skip
    print(f"environment stage: A/B = {first['environment'] / second['environment']:.0f}x")
    print(table(["launch (cold)", "n", "median s", "min s", "max s"],
                [["DockerSpawner", len(docker_launch), f"{median(docker_launch):.2f}", f"{min(docker_launch):.2f}", f"{max(docker_launch):.2f}"],
                 ["local process", len(local_launch), f"{median(local_launch):.2f}", f"{min(local_launch):.2f}", f"{max(local_launch):.2f}"]]))  # fmt: skip
    print(f"docker/local launch = {median(docker_launch) / median(local_launch):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
