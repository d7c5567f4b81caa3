"""Environments: the software a preprint runs on, built by one of several backends."""

from .base import Builder, BuiltRuntime
from .binderhub import BinderHubBuilder
from .docker import DockerBuilder
from .local import LocalBuilder
from .runtime import RuntimeFiles, find_runtime

BUILDERS: dict[str, type[Builder]] = {
    "local": LocalBuilder,
    "docker": DockerBuilder,
    "binderhub": BinderHubBuilder,
}

__all__ = [
    "BUILDERS",
    "BinderHubBuilder",
    "Builder",
    "BuiltRuntime",
    "DockerBuilder",
    "LocalBuilder",
    "RuntimeFiles",
    "find_runtime",
]
