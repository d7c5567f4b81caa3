"""The docker backend: repo2docker builds an image per runtime, on a Docker engine.

repo2docker runs as a child process of the job (its log streams into the job log line by
line; cancel and the time limit kill it), and builds on the engine at `docker_host`. The
service itself talks to the engine with aiodocker (docker_engine.py).

- The image is built from the runtime files alone (binder/, or the known files at the root):
  exactly what the runtime key hashes. The repository's content is not in the image; runners
  mount the checkout. So one image serves every commit whose runtime files are the same.
- Its name comes from the key (`{image_prefix}{key[:32]}:latest`, under `registry/` when a
  registry is set), so an image the engine already has is reused without a build, even
  when the service's database does not know it.
- repo2docker builds under a temporary tag (`:build-{job id}`); the final name is tagged only
  after a successful build (and push), so a failed, cancelled or timed-out build never leaves
  an image under the final name. Its build containers are removed when it is stopped.
- Labels on the image (org.neurolibre.*) say which runtime key it holds and what it was first
  built for (owner, repository, commit, environment), so the images on an engine can be
  matched with the database again.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from traitlets import Dict, Instance, Int, Unicode, default, validate

from .. import docker_engine as de
from ..sandbox import Sandbox
from .base import Builder, BuiltRuntime
from .runtime import RuntimeError_, RuntimeFiles

if TYPE_CHECKING:
    from ..jobs import JobContext

RUNNING_IN = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})\s*$")
DOCKER_ERROR = re.compile(r"^The command .* returned a non-zero code: \d+$")
MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", re.IGNORECASE)
IMAGE_PREFIX = re.compile(r"[a-z0-9][a-z0-9._/-]*")
LABEL_KEY = re.compile(r"[a-z0-9][a-z0-9-]*")
TEMP_TAG = "build-"
# what an environment job may set in ctx.data["origin"] to label the image it builds
ORIGIN_KEYS = ("environment-id", "environment-name", "preprint-id", "build-id", "repository",
               "commit", "cpu-limit", "memory-limit")  # fmt: skip


def repo2docker_version() -> str:
    return importlib.metadata.version("jupyter-repo2docker")


def memory_bytes(value: str) -> int:
    """'512M', '2G', '2GiB', '1073741824' -> bytes."""
    m = MEMORY.fullmatch(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a size such as 512M or 4G")
    power = " KMGT".index((m.group(2) or " ").upper())
    return int(float(m.group(1)) * 1024**power)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=host))
    return url


class _Watch:
    """A job log that also remembers what repo2docker says: its build containers, its error."""

    def __init__(self, log: Any):
        self._log = log
        self.containers: list[str] = []
        self.error: str | None = None
        self.last: str | None = None

    def write(self, text: str):
        line = text.rstrip("\r\n")
        if line.startswith('{"aux": ') and "}}" in line:
            # the engine's image id, printed by repo2docker without a line break
            line = text = line.split("}}", 1)[1]
        m = RUNNING_IN.match(line)
        if m:
            self.containers.append(m.group(1))
        if DOCKER_ERROR.match(line):
            self.error = line
        if line.strip() and not line.startswith(("Successfully", "Removing intermediate")):
            self.last = line.strip()
        return self._log.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


class DockerBuilder(Builder):
    backend = "docker"

    # given to every builder by the service; this one needs none but a scratch directory
    environments_dir = Unicode(help="Scratch space for build contexts (set by the service).")
    uv_cache_dir = Unicode(help="Unused by this builder (set by the service).")
    sandbox = Instance(
        Sandbox, allow_none=True, help="Unused: build steps run in the engine's containers."
    )
    hub_version = Unicode(help="The hub's version (set by the service).")

    docker_host = Unicode(
        help="""The Docker engine: unix:///path/to/docker.sock or tcp://host:port.
        Default: DOCKER_HOST, or unix:///var/run/docker.sock.""",
    ).tag(config=True)

    @default("docker_host")
    def _default_docker_host(self) -> str:
        return de.default_host()

    image_prefix = Unicode(
        "neurolibre-env-",
        help="""Start of image names: an environment's image is {image_prefix}{key[:32]}:latest
        (after registry/ when a registry is set). Lower-case letters, digits, '.', '_', '-', '/'.""",
    ).tag(config=True)

    @validate("image_prefix")
    def _valid_prefix(self, proposal) -> str:
        value = proposal["value"]
        if not IMAGE_PREFIX.fullmatch(value):
            raise ValueError(f"image_prefix {value!r}: use lower-case letters, digits, . _ - /")
        return value

    registry = Unicode(
        "",
        help="""Registry (and namespace) to push images to, e.g. registry.example.org/neurolibre.
        Empty: images stay on the engine that built them.""",
    ).tag(config=True)
    registry_username = Unicode("", help="Login for the registry; empty: push without login.").tag(
        config=True
    )
    registry_password = Unicode(
        help="""Password or token for the registry. Default: the NEUROLIBRE_REGISTRY_PASSWORD
        environment variable (better than a config file). Sent to the engine in a request
        header, never on a command line, in a log or in a label.""",
    ).tag(config=True)

    @default("registry_password")
    def _default_registry_password(self) -> str:
        return os.environ.get("NEUROLIBRE_REGISTRY_PASSWORD", "")

    base_image = Unicode(
        "",
        help="""Base image of repo2docker's buildpacks (not of a repository's own Dockerfile).
        Empty: repo2docker's default (buildpack-deps). Changing it rebuilds environments.""",
    ).tag(config=True)
    user_id = Int(1000, help="User id of the image's user (repo2docker's --user-id).").tag(
        config=True
    )
    user_name = Unicode("jovyan", help="Name of the image's user (repo2docker's --user-name).").tag(
        config=True
    )
    build_args = Dict(
        value_trait=Unicode(),
        help="""Extra build arguments (ARG values) for every build. They stay in the image's
        history: no secrets.""",
    ).tag(config=True)
    appendix = Unicode(
        "",
        help="Dockerfile lines repo2docker appends to every build (e.g. a site-wide package).",
    ).tag(config=True)
    repo2docker_config = Dict(
        help="""More repo2docker settings, as {"Class": {"trait": value}}, e.g.
        {"Repo2Docker": {"target_repo_dir": "/srv/repo"}}. Part of the runtime key.""",
    ).tag(config=True)
    build_network = Unicode(
        "default",
        help="""Network of build steps: 'default' (the engine's bridge), 'host', 'none' or a
        network's name. An engine without a bridge (--bridge=none, as scripts/docker-engine.sh
        starts it) needs 'host'; builds then reach services on the host's loopback too, so
        keep those behind authentication.""",
    ).tag(config=True)
    build_memory_limit = Unicode(
        "", help="Memory limit of build steps (e.g. 4G); empty: none. Swap is not allowed past it."
    ).tag(config=True)
    build_cpuset = Unicode(
        "", help="CPUs build steps may use (e.g. '0-1'); empty: all of them."
    ).tag(config=True)

    @validate("build_memory_limit")
    def _valid_memory(self, proposal) -> str:
        if proposal["value"]:
            memory_bytes(proposal["value"])
        return proposal["value"]

    # -- names ---------------------------------------------------------------------------

    def repository(self, key: str) -> str:
        name = f"{self.image_prefix}{key[:32]}"
        return f"{self.registry.rstrip('/')}/{name}" if self.registry else name

    def image_name(self, key: str) -> str:
        return f"{self.repository(key)}:latest"

    def secrets(self) -> list[str]:
        """Values the service must redact from logs."""
        return [self.registry_password] if self.registry_password else []

    def registry_auth(self) -> dict[str, str] | None:
        if not (self.registry and self.registry_username):
            return None
        return {"username": self.registry_username, "password": self.registry_password}

    # -- the Builder interface -----------------------------------------------------------

    async def recipe(self, runtime: RuntimeFiles) -> dict:
        if self.user_id == 0:
            raise RuntimeError_("The docker builder's user_id must not be 0 (root).")
        return {"backend": self.backend, "recipe": 1, "repo2docker": repo2docker_version(),
                "base_image": self.base_image, "user_id": self.user_id,
                "user_name": self.user_name, "build_args": dict(self.build_args),
                "appendix": self.appendix, "config": self.repo2docker_config}  # fmt: skip

    async def health(self) -> dict[str, Any]:
        try:
            async with de.engine(self.docker_host) as client:
                version = (await client.version()).get("Version")
            return {"ok": True, "url": self.docker_host, "version": version}
        except de.EngineUnavailable as e:
            return {"ok": False, "url": self.docker_host, "error": str(e)}

    async def exists(self, location: str) -> bool:
        try:
            async with de.engine(self.docker_host) as client:
                return await de.inspect_image(client, location) is not None
        except (de.EngineUnavailable, de.DockerError) as e:
            self.log.warning("Cannot look up image %s: %s", location, e)
            return False

    async def remove(self, location: str) -> None:
        async with de.engine(self.docker_host) as client:
            if await de.remove_image(client, location):
                self.log.info("Removed image %s", location)

    async def images(self) -> list[dict[str, Any]]:
        """The environment images on the engine: name, runtime key, labels, size."""
        async with de.engine(self.docker_host) as client:
            found = await de.labelled_images(client)
        out = []
        for info in found:
            labels = info.get("Labels") or {}
            for tag in info.get("RepoTags") or []:
                if not tag.rsplit(":", 1)[-1].startswith(TEMP_TAG):
                    out.append({"name": tag, "key": labels.get(de.RUNTIME_KEY_LABEL),
                                "labels": labels, "size_bytes": info.get("Size")})  # fmt: skip
        return out

    async def build(self, ctx: JobContext, runtime: RuntimeFiles, key: str) -> BuiltRuntime:
        from ..jobs import JobFailed

        recipe = await self.recipe(runtime)
        name, repo = self.image_name(key), self.repository(key)
        temp = f"{repo}:{TEMP_TAG}{ctx.job_id}"
        try:
            async with de.engine(self.docker_host) as client:
                info = await de.inspect_image(client, name)
                if info is not None and de.image_labels(info).get(de.RUNTIME_KEY_LABEL) == key:
                    ctx.say(f"The Docker engine already has image {name} for these runtime "
                            "files; nothing to build.")  # fmt: skip
                    return BuiltRuntime(name, None, info.get("Size"))
                await self._remove_temp_tags(client, repo)
        except de.EngineUnavailable as e:
            raise JobFailed(f"{e} Ask the operator to start it.") from None

        scratch = Path(tempfile.mkdtemp(prefix="neurolibre-docker-",
                                        dir=self.environments_dir or None))  # fmt: skip
        watch = _Watch(ctx.log)
        built = False
        try:
            context = scratch / "repository"
            await asyncio.to_thread(_write_context, runtime, context)
            config = scratch / "repo2docker_config.py"
            config.write_text(self._config(ctx, key, recipe))
            (scratch / "home").mkdir()
            argv = [sys.executable, "-m", "repo2docker", "--config", str(config), "--no-run",
                    "--image-name", temp, "--user-id", str(self.user_id),
                    "--user-name", self.user_name, str(context)]  # fmt: skip
            env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin",
                                            "/usr/bin", "/bin"]),
                   "HOME": str(scratch / "home"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
                   "DOCKER_HOST": self.docker_host}  # fmt: skip
            for k in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
                if k in os.environ:
                    env[k] = os.environ[k]
            await ctx.stage("building image")
            ctx.say(f"repo2docker {recipe['repo2docker']} builds {name} on {self.docker_host} "
                    f"(build network: {self.build_network})")  # fmt: skip
            started = time.monotonic()
            code = await ctx.with_log(watch).run(argv, cwd=scratch, env=env)
            if code:
                why = (watch.error or watch.last or f"repo2docker exited {code}").rstrip(".")
                raise JobFailed(f"Building the image failed: {why}. The build log above "
                                "shows the step that failed.")  # fmt: skip
            async with de.engine(self.docker_host) as client:
                info = await de.inspect_image(client, temp)
                if info is None:
                    raise JobFailed(f"repo2docker finished, but the engine has no image {temp}.")
                if self.registry:
                    await ctx.stage("pushing image")
                # tag, push, and only then untag the temporary name
                await client.images.tag(temp, repo, tag="latest")
                try:
                    if self.registry:
                        await self._push(ctx, client, repo)
                except BaseException:
                    await asyncio.shield(de.remove_image(client, name, force=True, prune=False))
                    raise
                await de.remove_image(client, temp, force=False, prune=False)
            built = True
            size = info.get("Size")
            ctx.say(f"Image ready: {name} ({(size or 0) / 1e6:.0f} MB, "
                    f"{time.monotonic() - started:.0f} s)")  # fmt: skip
            return BuiltRuntime(name, None, size)
        finally:
            if not built:
                await asyncio.shield(self._clean_up(watch.containers, temp))
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    # -- details -------------------------------------------------------------------------

    def _labels(self, ctx: JobContext, key: str) -> dict[str, str]:
        p = de.LABEL_PREFIX
        labels = {p + "runtime-key": key, p + "backend": self.backend, p + "owner": ctx.owner,
                  p + "build-job": str(ctx.job_id)}  # fmt: skip
        origin: dict[str, Any] = {}
        if ctx.environment_id is not None:
            origin["environment-id"] = ctx.environment_id
        if ctx.params.get("commit"):
            origin["commit"] = ctx.params["commit"]
        origin.update(ctx.data.get("origin") or {})
        for k, v in origin.items():
            if k in ORIGIN_KEYS and v not in (None, ""):
                v = str(v)
                labels[p + k] = _without_credentials(v) if k == "repository" else v
        return labels

    def _config(self, ctx: JobContext, key: str, recipe: dict) -> str:
        """repo2docker's config file: python assignments of plain literals."""
        limits: dict[str, Any] = {}
        if self.build_memory_limit:
            mem = memory_bytes(self.build_memory_limit)
            limits.update(memory=mem, memswap=mem)
        if self.build_cpuset:
            limits["cpusetcpus"] = self.build_cpuset
        settings: dict[str, dict[str, Any]] = {
            "Repo2Docker": {
                "extra_build_kwargs": {
                    "network_mode": self.build_network,
                    "container_limits": limits,
                },
                "labels": self._labels(ctx, key),
                "extra_build_args": dict(self.build_args),
            }
        }
        if self.base_image:
            settings["Repo2Docker"]["base_image"] = self.base_image
        if self.appendix:
            settings["Repo2Docker"]["appendix"] = self.appendix
        for cls, values in self.repo2docker_config.items():
            settings.setdefault(cls, {}).update(values)
        lines = [f"c.{cls}.{name} = {value!r}"
                 for cls, values in settings.items() for name, value in values.items()]  # fmt: skip
        return "\n".join(lines) + "\n"

    async def _push(self, ctx: JobContext, client: de.aiodocker.Docker, repo: str) -> None:
        from ..jobs import JobFailed

        auth = None
        if self.registry_username:
            auth = {"username": self.registry_username, "password": self.registry_password}
        ctx.say(f"Pushing {repo}:latest to {self.registry}"
                + (f" as {self.registry_username}" if auth else ""))  # fmt: skip
        try:
            async for event in client.images.push(repo, tag="latest", auth=auth, stream=True):
                if "error" in event:
                    raise JobFailed(f"Pushing the image failed: {event['error']}")
                status = event.get("status", "")
                if status in ("Pushed", "Layer already exists") or "digest:" in status:
                    ctx.say(f"{event.get('id', '')} {status}".strip())
        except de.DockerError as e:
            raise JobFailed(f"Pushing the image failed: {e.message}") from None

    async def _remove_temp_tags(self, client: de.aiodocker.Docker, repo: str) -> None:
        """Temporary tags of earlier builds of this key that were stopped (or the engine tagged
        after we stopped them): builds of one key never overlap, so none is in use."""
        for info in await client.images.list(filters={"reference": [repo]}):
            for tag in info.get("RepoTags") or []:
                if tag.startswith(f"{repo}:{TEMP_TAG}"):
                    await de.remove_image(client, tag, force=False, prune=False)

    async def _clean_up(self, containers: list[str], temp: str) -> None:
        """After a failed or stopped build: its containers and its temporary tag go."""
        try:
            async with de.engine(self.docker_host, check=False) as client:
                for cid in containers:
                    if await de.remove_container(client, cid):
                        self.log.info("Removed build container %s", cid)
                # the engine may still be removing them itself: wait until they are gone
                for cid in containers:
                    for _ in range(100):
                        if not await de.container_exists(client, cid):
                            break
                        await asyncio.sleep(0.2)
                await de.remove_image(client, temp, force=True, prune=False)
        except (de.DockerError, OSError) as e:
            self.log.warning("Cleaning up after build %s failed: %s", temp, e)


def _write_context(runtime: RuntimeFiles, dest: Path) -> None:
    """The runtime files, where repo2docker looks for them (binder/ or the root)."""
    base = dest / runtime.directory.name if runtime.label != "root" else dest
    base.mkdir(parents=True)
    for rel, data in runtime.files.items():
        target = base / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        try:
            mode = (runtime.directory / rel).stat().st_mode & 0o777
        except OSError:
            mode = 0o644
        target.chmod(mode | 0o444)
