"""The Builder interface: one per backend (local uv venvs, repo2docker, BinderHub).

Backends only build; checkout, runtime detection, keys, reuse, locking, logging and SQL are
shared (environments/manager.py), so no backend repeats another's bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from traitlets.config import LoggingConfigurable

from .runtime import RuntimeFiles

if TYPE_CHECKING:
    from ..jobs import JobContext


@dataclass(frozen=True)
class BuiltRuntime:
    location: str  # venv path, or image name
    python_version: str | None = None
    size_bytes: int | None = None


class Builder(LoggingConfigurable):
    backend = "base"
    # whether builds of one owner share state a build can write (a package cache): then a
    # runtime built for one owner is never reused for another (it is part of the key)
    per_owner = False

    def recipe(self, runtime: RuntimeFiles) -> dict:
        """Everything besides the runtime files that changes the result (hashed into the key).

        Raises RuntimeError_ for runtimes this backend cannot build, before anything runs.
        """
        raise NotImplementedError

    async def build(self, ctx: JobContext, runtime: RuntimeFiles, key: str) -> BuiltRuntime:
        raise NotImplementedError

    async def exists(self, location: str) -> bool:
        """Is a previously built runtime still usable (e.g. not deleted from disk)?"""
        raise NotImplementedError

    async def remove(self, location: str) -> None:
        raise NotImplementedError

    async def health(self) -> dict[str, Any] | None:
        """The state of what this backend depends on (an engine, a BinderHub), for admins;
        None when it depends on nothing outside this machine."""
        return None

    def registry_auth(self) -> dict[str, str] | None:
        """Credentials for pulling this builder's images where they run (books, servers)."""
        return None

    def secrets(self) -> list[str]:
        """Values (registry passwords, tokens) the service must redact from every log."""
        return []
