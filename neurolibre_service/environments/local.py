"""The embedded default backend: a uv virtual environment per runtime, built without Docker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from traitlets import Instance, List, Unicode, default, validate
from uv import find_uv_bin

from ..sandbox import Sandbox
from ..units import du
from .base import Builder, BuiltRuntime
from .requirements import Requirements, check_allowed_indexes, parse_requirements
from .runtime import RuntimeError_, RuntimeFiles

if TYPE_CHECKING:
    from ..jobs import JobContext

# runtime files that need conda, apt, R, Julia or a Dockerfile: not something a venv can be
UNSUPPORTED = {
    "environment.yml": "a conda environment",
    "environment.yaml": "a conda environment",
    "Dockerfile": "a Dockerfile",
    "apt.txt": "system packages (apt.txt)",
    "postBuild": "a postBuild script",
    "start": "a start script",
    "install.R": "R packages (install.R)",
    "DESCRIPTION": "an R package (DESCRIPTION)",
    "Project.toml": "a Julia environment (Project.toml)",
    "REQUIRE": "a Julia environment (REQUIRE)",
    "Pipfile": "a Pipfile",
    "Pipfile.lock": "a Pipfile",
    "setup.py": "installing the repository itself (setup.py)",
}
RUNTIME_TXT = re.compile(r"python-(\d+\.\d+)(\.\d+)?")
MARKER = ".neurolibre-complete"


class LocalBuilder(Builder):
    backend = "local"
    per_owner = True

    environments_dir = Unicode(help="Where the virtual environments live (set by the service).")
    uv_cache_dir = Unicode(help="uv's package cache, shared by builds (set by the service).")
    sandbox = Instance(Sandbox, help="How build steps are confined (set by the service).")
    hub_version = Unicode(help="The hub's version: environments get a matching singleuser server.")

    default_python = Unicode(
        help="Python version (X.Y) for repositories without runtime.txt. Default: the service's."
    ).tag(config=True)

    @default("default_python")
    def _default_python(self) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"

    server_packages = List(
        Unicode(),
        help="""Packages every environment gets so a hub server can run in it.
        `{hub_version}` is replaced by the hub's version.""",
    ).tag(config=True)

    @default("server_packages")
    def _default_server_packages(self) -> list[str]:
        return ["jupyterhub=={hub_version}", "ipykernel", "jupyterlab"]

    allowed_index_urls = List(
        Unicode(),
        help="""https package indexes binder/requirements.txt may name with --index-url or
        --extra-index-url (default: none, only the operator's own index). An extra index is
        searched before the default one, so it can supply any package: list only trusted ones.""",
    ).tag(config=True)

    @validate("allowed_index_urls")
    def _valid_indexes(self, proposal) -> list[str]:
        return check_allowed_indexes(proposal["value"])

    @property
    def uv(self) -> str:
        return find_uv_bin()

    def _packages(self) -> list[str]:
        return [p.format(hub_version=self.hub_version) for p in self.server_packages]

    def _python(self, runtime: RuntimeFiles) -> str:
        text = runtime.text("runtime.txt")
        if text is None:
            return self.default_python
        value = text.strip()
        m = RUNTIME_TXT.fullmatch(value)
        if not m:
            raise RuntimeError_(
                f"runtime.txt says {value!r}: the local builder understands only python-X.Y "
                "(e.g. python-3.11). Other runtimes need the docker or binderhub backend."
            )
        return m.group(1)

    async def recipe(self, runtime: RuntimeFiles) -> dict:
        where = "binder/" if runtime.label == "binder" else ""
        for name, what in UNSUPPORTED.items():
            if name in runtime.files:
                raise RuntimeError_(
                    f"{where}{name} asks for {what}, which the local builder cannot provide "
                    "(it makes Python virtual environments from requirements.txt only). Ask "
                    "the operator to build with the docker backend (repo2docker) or a BinderHub "
                    "(c.NeuroLibre.builder = 'docker' or 'binderhub'), or use requirements.txt."
                )
        reqs = self._requirements(runtime)
        if not reqs.ok:
            raise RuntimeError_(
                f"{where}requirements.txt cannot be installed as written:\n{reqs.message()}"
            )
        python = self._python(runtime)
        found = await self._find_python(python)
        if found is None:
            raise RuntimeError_(
                f"runtime.txt asks for Python {python}, which this machine does not have "
                f"(the service runs {self.default_python}). Use python-{self.default_python}, "
                "or ask the operator to install it or to use the docker or binderhub backend."
            )
        return {"backend": self.backend, "recipe": 1, "python": python,
                "server_packages": self._packages()}  # fmt: skip

    def _requirements(self, runtime: RuntimeFiles) -> Requirements:
        where = "binder/" if runtime.label == "binder" else ""
        return parse_requirements(runtime.files, runtime.directory, prefix=where,
                                  allowed_indexes=self.allowed_index_urls)  # fmt: skip

    async def _find_python(self, version: str) -> str | None:
        proc = await asyncio.create_subprocess_exec(
            self.uv, "python", "find", "--no-project", version,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", ""), "UV_PYTHON_DOWNLOADS": "never",
                 "HOME": os.environ.get("HOME", "/tmp")},
        )  # fmt: skip
        out, _ = await proc.communicate()
        return out.decode().strip() or None if proc.returncode == 0 else None

    def location(self, key: str) -> Path:
        return Path(self.environments_dir) / key

    def cache_dir(self, owner: str) -> Path:
        """uv's cache for one owner's builds: a build can write the cache it uses, so caches
        (and environments, see per_owner) are never shared across owners."""
        return Path(self.uv_cache_dir) / hashlib.sha256(owner.encode()).hexdigest()[:16]

    async def exists(self, location: str) -> bool:
        return (Path(location) / MARKER).is_file() and trusted_record(Path(location)) is not None

    async def remove(self, location: str) -> None:
        await asyncio.to_thread(_record_path(Path(location)).unlink, True)
        await asyncio.to_thread(shutil.rmtree, location, True)

    async def build(self, ctx: JobContext, runtime: RuntimeFiles, key: str) -> BuiltRuntime:
        from ..jobs import JobFailed

        recipe = await self.recipe(runtime)
        python = await self._find_python(recipe["python"])
        if python is None:
            raise JobFailed(f"Python {recipe['python']} is no longer on this machine.")
        # what later stages may run and read is decided now, by the service, from the
        # interpreter it found; never from files the build could rewrite (pyvenv.cfg, bin/)
        interpreter = Path(python).resolve()
        env_dir = self.location(key)
        if env_dir.exists() or _record_path(env_dir).exists():
            ctx.say(f"Removing an unfinished environment at {env_dir}")
            await self.remove(str(env_dir))
        cache = self.cache_dir(ctx.owner)
        work = Path(self.environments_dir) / ".requirements" / key
        await asyncio.to_thread(_prepare_dirs, self.sandbox, env_dir, cache)
        env = self.sandbox.env(
            extra={
                "UV_CACHE_DIR": str(cache),
                "UV_PYTHON_DOWNLOADS": "never",
                "UV_NO_PROGRESS": "1",
                # the repository's uv.toml / pyproject.toml must not choose indexes or sources
                "UV_NO_CONFIG": "1",
                # copies, not hard links: an environment must not share inodes with the
                # cache that later (untrusted) builds can write to
                "UV_LINK_MODE": "copy",
                # compile now, so a server's first start does not (it would write into a
                # runtime other environments share)
                "UV_COMPILE_BYTECODE": "1",
                "NO_COLOR": "1",
            }
        )
        # the sandbox's private /tmp would hide an installation under /tmp: keep the tools visible
        tools = {Path(sys.prefix), Path(sys.base_prefix), Path(self.uv).resolve().parent,
                 interpreter.parent.parent}  # fmt: skip
        readable = [runtime.directory, *sorted(t for t in tools if t != Path("/"))]
        sandbox_args = {"writable": [env_dir, cache], "readable": readable,
                        "cwd": runtime.directory}  # fmt: skip
        if self.sandbox.confined:
            who = (f"as the unprivileged user {self.sandbox.build_user}"
                   if self.sandbox.switches_user else "without capabilities")  # fmt: skip
            ctx.say(f"Build steps run confined (bubblewrap): {who}, with resource limits, "
                    "read-only system, writes only to the environment and the package cache.")  # fmt: skip
        else:
            ctx.say("!! Build steps run unconfined (sandbox = 'none').")

        try:
            await ctx.stage("creating environment")
            argv = [self.uv, "venv", "--no-project", "--no-config", "--python", str(interpreter),
                    str(env_dir)]  # fmt: skip
            wrapped = self.sandbox.wrap(argv, network=False, **sandbox_args)
            if await ctx.run(wrapped, cwd=runtime.directory, env=env):
                raise JobFailed(f"Creating the virtual environment with Python {python} failed.")

            await ctx.stage("installing packages")
            # the service's own copy of what requirements.txt asks, validated; never the file
            reqs = self._requirements(runtime)
            for note in reqs.notes:
                ctx.say(note)
            argv = [self.uv, "pip", "install", "--python", str(env_dir / "bin" / "python"),
                    *await asyncio.to_thread(_write_requirements, reqs, work),
                    *self._packages()]  # fmt: skip
            # the install needs only the service's copy, not the repository
            tools_only = [t for t in readable if t != runtime.directory]
            install_args = {**sandbox_args, "readable": [*tools_only, work], "cwd": work}
            if await ctx.run(self.sandbox.wrap(argv, **install_args), cwd=work, env=env):
                raise JobFailed(
                    "Installing packages failed: see the log above for the package that did not "
                    "install or resolve, and fix requirements.txt."
                )
        finally:
            # from here on the environment is the service's: nothing confined can change it
            await asyncio.to_thread(self.sandbox.reclaim, env_dir)
            await asyncio.to_thread(shutil.rmtree, work, True)
        await asyncio.to_thread(seal_environment, env_dir, interpreter, key)
        if not (env_dir / "bin" / "jupyterhub-singleuser").is_file():
            raise JobFailed("The environment has no jupyterhub-singleuser after installing.")
        size = await asyncio.to_thread(du, env_dir)
        ctx.say(f"Environment ready: {env_dir} ({size / 1e6:.0f} MB)")
        return BuiltRuntime(str(env_dir), recipe["python"], size)


def _record_path(env_dir: Path) -> Path:
    return env_dir.with_name(env_dir.name + ".json")


def trusted_record(env_dir: Path) -> dict | None:
    """The service's own record of a local environment (written after its build, outside it):
    the interpreter it was made with and that interpreter's installation prefix."""
    try:
        data = json.loads(_record_path(Path(env_dir)).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "python" in data else None


def base_prefixes(env_dir: Path) -> list[Path]:
    """The Python installation a local environment runs on, from the service's record."""
    record = trusted_record(env_dir)
    if record is None:
        return []
    prefix = Path(record["base_prefix"])
    return [prefix] if prefix != Path("/") and prefix.is_dir() else []


def _write_requirements(reqs: Requirements, work: Path) -> list[str]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o755)
    return reqs.write(work)


def _prepare_dirs(sandbox: Sandbox, env_dir: Path, cache: Path) -> None:
    env_dir.mkdir(parents=True)
    sandbox.lend(env_dir)
    if not cache.is_dir():
        cache.mkdir(parents=True)
        sandbox.lend(cache)
    elif sandbox.switches_user and cache.stat().st_uid != sandbox.ids()[0]:
        sandbox.lend(cache)  # a cache made before builds ran unprivileged


def seal_environment(env_dir: Path, interpreter: Path, key: str) -> None:
    """Point the environment at the interpreter the service chose (a build may have relinked
    bin/python or rewritten pyvenv.cfg), then record it outside the environment."""
    bin_dir = env_dir / "bin"
    version = ".".join(interpreter.name.removeprefix("python").split(".")[:2])
    for name in ("python", "python3", f"python{version}" if version else "python3"):
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink()
        link.symlink_to(interpreter)
    cfg = env_dir / "pyvenv.cfg"
    lines = []
    if cfg.is_file() and not cfg.is_symlink():
        lines = [ln for ln in cfg.read_text("utf-8", "replace").splitlines()[:50]
                 if ln.partition("=")[0].strip() not in ("home", "executable", "command")]  # fmt: skip
    cfg.unlink(missing_ok=True)
    cfg.write_text("\n".join([f"home = {interpreter.parent}", *lines]) + "\n")
    base = interpreter.parent.parent
    (env_dir / MARKER).unlink(missing_ok=True)
    (env_dir / MARKER).write_text(key + "\n")
    record = {"python": str(interpreter), "base_prefix": str(base), "key": key}
    _record_path(env_dir).write_text(json.dumps(record) + "\n")
