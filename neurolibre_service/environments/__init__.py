"""Environments: the software a preprint runs on, built by one of several backends."""

from .base import Builder, BuiltRuntime
from .docker import DockerBuilder
from .local import LocalBuilder
from .runtime import RuntimeFiles, find_runtime

BUILDERS: dict[str, type[Builder]] = {"local": LocalBuilder, "docker": DockerBuilder}

__all__ = [
    "BUILDERS",
    "Builder",
    "BuiltRuntime",
    "DockerBuilder",
    "LocalBuilder",
    "RuntimeFiles",
    "find_runtime",
]
