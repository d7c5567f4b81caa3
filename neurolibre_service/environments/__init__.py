"""Environments: the software a preprint runs on, built by one of several backends."""

from .base import Builder, BuiltRuntime
from .local import LocalBuilder
from .runtime import RuntimeFiles, find_runtime

BUILDERS: dict[str, type[Builder]] = {"local": LocalBuilder}

__all__ = ["BUILDERS", "Builder", "BuiltRuntime", "LocalBuilder", "RuntimeFiles", "find_runtime"]
