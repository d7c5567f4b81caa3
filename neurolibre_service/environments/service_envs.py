"""The service's own virtual environments: the Jupyter server stack, the data fetchers.

Authors' environments hold the authors' packages (plus a kernel); what the service runs next to
them (jupyterhub-singleuser and JupyterLab, repo2data and its fetchers) lives in environments
of its own, built once from packages the operator chose, shared by every preprint, and
pre-compiled so no server or fetch writes into them. Their pins never meet an author's pins.

Each is identified by its packages and its Python: changing either gives a new directory under
`root`, built on first use; a finished one is never changed again.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from uv import find_uv_bin

from ..processes import run_streaming
from ..sandbox import Sandbox

MARKER = ".neurolibre-service-env"


class ServiceEnvironmentError(RuntimeError):
    """A service environment could not be built; the message says which and why."""


@dataclass(frozen=True)
class ServiceEnvironment:
    name: str  # what it is for: "server", "data"
    prefix: Path
    packages: tuple[str, ...]
    python: Path  # the interpreter it is made with (the service's by default)

    def bin(self, command: str) -> Path:
        return self.prefix / "bin" / command

    @property
    def ready(self) -> bool:
        return (self.prefix / MARKER).is_file()

    @property
    def base_prefix(self) -> Path:
        """The Python installation it runs on (a sandbox must expose it)."""
        return self.python.parent.parent


class ServiceEnvironments:
    """Builds and finds the service's environments under `root` (in the data directory)."""

    def __init__(self, root: Path, sandbox: Sandbox, *, uv_cache: Path | None = None) -> None:
        self.root = Path(root)
        self.sandbox = sandbox
        self.uv_cache = uv_cache or self.root / ".uv-cache"
        self._locks: dict[Path, asyncio.Lock] = {}

    def spec(self, name: str, packages: Sequence[str], python: Path | None = None) -> ServiceEnvironment:  # fmt: skip
        interpreter = Path(python or sys.executable).resolve()
        ident = json.dumps({"packages": sorted(packages), "python": str(interpreter)})
        digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
        return ServiceEnvironment(
            name, self.root / f"{name}-{digest}", tuple(packages), interpreter
        )

    async def ensure(self, name: str, packages: Sequence[str], *, python: Path | None = None,
                     say: Callable[[str], None] | None = None) -> ServiceEnvironment:  # fmt: skip
        """The environment, built now if it is not yet (once: concurrent callers wait)."""
        env = self.spec(name, packages, python)
        if env.ready:
            return env
        # one build at a time per uv cache: builds share it, and each lends it to the build user
        # and takes it back when it ends (a concurrent build would lose write access mid-install)
        lock = self._locks.setdefault(self.uv_cache, asyncio.Lock())
        async with lock:
            if env.ready:
                return env
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(self.uv_cache.parent.mkdir, parents=True, exist_ok=True)
            # ... and across instances and processes on the same data directory (the service's
            # environments for servers and for data, `neurolibre build`)
            with open(f"{self.uv_cache}.lock", "w") as fh:  # noqa: ASYNC230 (tiny, local)
                await asyncio.to_thread(fcntl.flock, fh, fcntl.LOCK_EX)
                try:
                    if not env.ready:
                        await self._build(env, say or (lambda line: None))
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        return env

    async def _build(self, env: ServiceEnvironment, say: Callable[[str], None]) -> None:
        say(f"Building the service's {env.name} environment (once): {' '.join(env.packages)}")
        await asyncio.to_thread(shutil.rmtree, env.prefix, True)
        await asyncio.to_thread(_prepare, self.sandbox, env.prefix, self.uv_cache)
        uv = find_uv_bin()
        # confined like any install: a package's build scripts are code from the internet
        tools = {
            Path(sys.prefix),
            Path(sys.base_prefix),
            Path(uv).resolve().parent,
            env.base_prefix,
        }
        readable = sorted(t for t in tools if t != Path("/"))
        environ = self.sandbox.env(extra={
            "UV_CACHE_DIR": str(self.uv_cache), "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1", "UV_LINK_MODE": "copy", "UV_COMPILE_BYTECODE": "1",
            "NO_COLOR": "1",
        })  # fmt: skip
        steps = [
            [uv, "venv", "--no-project", "--no-config", "--python", str(env.python), str(env.prefix)],
            [uv, "pip", "install", "--no-config", "--python", str(env.bin("python")), *env.packages],
        ]  # fmt: skip
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            del lines[:-40]
            say(line)

        try:
            for argv in steps:
                wrapped = self.sandbox.wrap(argv, writable=[env.prefix, self.uv_cache],
                                            readable=readable, cwd=Path("/"))  # fmt: skip
                if await run_streaming(wrapped, on_line=keep, cwd="/", env=environ):
                    raise ServiceEnvironmentError(
                        f"The service's {env.name} environment ({' '.join(env.packages)}) could "
                        "not be built; the operator can see why in the service's log:\n"
                        + "\n".join(lines[-10:])
                    )
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, env.prefix, True)
            raise
        finally:
            await asyncio.to_thread(self.sandbox.reclaim, self.uv_cache)
        await asyncio.to_thread(self.sandbox.reclaim, env.prefix)
        (env.prefix / MARKER).write_text(json.dumps({"packages": list(env.packages)}) + "\n")
        say(f"The service's {env.name} environment is ready: {env.prefix}")


def _prepare(sandbox: Sandbox, prefix: Path, cache: Path) -> None:
    prefix.mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    sandbox.lend(prefix, cache)
