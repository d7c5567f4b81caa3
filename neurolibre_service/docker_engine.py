"""The Docker engine, as the service talks to it (aiodocker): one address, a few small calls.

Builders and runners share these, so "is this image there", "remove it" and "the engine is not
answering" read and behave the same everywhere.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

LABEL_PREFIX = "org.neurolibre."
RUNTIME_KEY_LABEL = LABEL_PREFIX + "runtime-key"


class EngineUnavailable(RuntimeError):
    """The Docker engine does not answer; the message says where it was looked for."""


class RegistryAuthError(RuntimeError):
    """The engine answers, but the image's registry wants a login it was not given (or
    refused the one it was): whether the image is there cannot be told."""


# how an engine passes on a registry's refusal: 401 "unauthorized: authentication required"
# for a wrong login, a 500 "... no basic auth credentials" for none, "denied" from some
_REGISTRY_REFUSED = re.compile(
    r"no basic auth credentials|unauthori[sz]ed|authentication required|denied", re.IGNORECASE
)


def default_host() -> str:
    """DOCKER_HOST if set, else the engine's usual socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@asynccontextmanager
async def engine(url: str, *, check: bool = True) -> AsyncIterator[aiodocker.Docker]:
    """A client for the engine at `url`; with `check`, fails clearly if it does not answer."""
    try:
        client = aiodocker.Docker(url=url)
    except (DockerError, ValueError, OSError) as e:
        raise EngineUnavailable(f"Cannot use the Docker engine at {url}: {e}") from None
    try:
        if check:
            try:
                async with asyncio.timeout(15):
                    await client.version()
            except (DockerError, OSError, TimeoutError) as e:
                raise EngineUnavailable(
                    f"The Docker engine at {url} does not answer ({type(e).__name__}: {e})."
                ) from None
        yield client
    finally:
        await client.close()


async def inspect_image(client: aiodocker.Docker, name: str) -> dict[str, Any] | None:
    """The image's inspect data, or None if the engine has no such image."""
    try:
        return await client.images.inspect(name)
    except DockerError as e:
        if e.status == 404:
            return None
        raise


async def remove_image(client: aiodocker.Docker, name: str, *, force: bool = True,
                       prune: bool = True) -> bool:  # fmt: skip
    """Remove (or untag) an image; False if there was none. `prune=False` keeps untagged parents
    (the layers a retried build takes from the cache)."""
    try:
        await client.images.delete(name, force=force, noprune=not prune)
        return True
    except DockerError as e:
        if e.status == 404:
            return False
        raise


async def remove_container(client: aiodocker.Docker, container_id: str) -> bool:
    """Kill and remove a container; False if it was already gone."""
    try:
        await client.containers.container(container_id).delete(force=True)
        return True
    except DockerError as e:
        # 404: gone; 409: the engine is removing it already
        if e.status in (404, 409):
            return False
        raise


async def container_exists(client: aiodocker.Docker, container_id: str) -> bool:
    try:
        await client.containers.container(container_id).show()
        return True
    except DockerError as e:
        if e.status == 404:
            return False
        raise


async def labelled_images(client: aiodocker.Docker, label: str = RUNTIME_KEY_LABEL) -> list[dict]:
    """Every image carrying `label` (by default: every environment image the service built)."""
    return await client.images.list(filters={"label": [label]})


def image_labels(info: dict[str, Any]) -> dict[str, str]:
    return dict((info.get("Config") or {}).get("Labels") or {})


def registry_host(name: str) -> str | None:
    """The registry an image name points at (`host[:port]/...`); None for a bare name such
    as `neurolibre-env-abc:latest`, which only ever lives on an engine (or Docker Hub)."""
    first, slash, _ = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def _auth_header(name: str, auth: dict[str, str] | None) -> dict[str, str]:
    """X-Registry-Auth for the registry host at the start of an image name."""
    if not auth:
        return {}
    registry = registry_host(name) or "docker.io"
    return {"X-Registry-Auth": aiodocker.utils.compose_auth_header(auth, registry)}


async def in_registry(client: aiodocker.Docker, name: str, auth: dict[str, str] | None) -> bool:
    """Does the image's registry have it? (The engine asks the registry: no pull.)

    RegistryAuthError when the registry wants a login (none given, or refused): that is not
    "absent", and not an engine that is down (EngineUnavailable); other DockerErrors (e.g.
    the registry does not answer the engine) are raised as they are."""
    host = registry_host(name)
    if host is None:
        return False  # a bare name: on an engine or nowhere (never looked for on Docker Hub)
    # aiodocker has no call for the engine's /distribution endpoint: its generic query
    try:
        await client._query_json(f"distribution/{name}/json", headers=_auth_header(name, auth))
        return True
    except DockerError as e:
        if e.status == 404:
            return False
        if e.status in (401, 403) or _REGISTRY_REFUSED.search(str(e.message)):
            user = (auth or {}).get("username")
            how = f"refused the login as {user}" if user else "needs a login, and none is set"
            raise RegistryAuthError(
                f"The registry {host} {how}, so whether it has {name} cannot be told "
                f"(the engine said: {e.message})."
            ) from None
        raise


async def pull_image(client: aiodocker.Docker, name: str, auth: dict[str, str] | None,
                     say: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """Pull `name`, with the credentials when its name has a registry host; DockerError
    (with the registry's reason) when it cannot be had."""
    shown: set[str] = set()
    auth = (auth or None) if registry_host(name) else None
    async for event in client.images.pull(name, auth=auth, stream=True):
        if "error" in event:  # older aiodocker versions pass errors on as events
            raise DockerError(500, {"message": event["error"]})
        status = event.get("status", "")
        if say and status.startswith(("Pulling from", "Digest", "Status")) and status not in shown:
            shown.add(status)
            say(status)
