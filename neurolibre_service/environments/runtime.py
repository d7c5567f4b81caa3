"""A repository's runtime files (repo2docker's conventions) and the key they hash to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..safefiles import UnsafeFile, read_confined

# the files repo2docker acts on; any of them changes what an environment is
RUNTIME_FILES = (
    "requirements.txt",
    "runtime.txt",
    "environment.yml",
    "environment.yaml",
    "Dockerfile",
    "apt.txt",
    "postBuild",
    "start",
    "install.R",
    "DESCRIPTION",
    "Project.toml",
    "REQUIRE",
    "Pipfile",
    "Pipfile.lock",
    "setup.py",
)
# data, not software: fetched by repo2data, never part of the environment's identity
NOT_RUNTIME = frozenset({"data_requirement.json"})


class RuntimeError_(ValueError):
    """The runtime files cannot be built by this backend; the message says what to do."""


@dataclass(frozen=True)
class RuntimeFiles:
    directory: Path  # binder/ (or .binder/, or the repository root)
    files: dict[str, bytes]  # relative name -> content

    @property
    def label(self) -> str:
        return self.directory.name if self.directory.name in ("binder", ".binder") else "root"

    def text(self, name: str) -> str | None:
        data = self.files.get(name)
        return None if data is None else data.decode("utf-8", "replace")

    def digest(self, recipe: dict) -> str:
        """Same files + same recipe (backend, Python, server packages) -> same key."""
        h = hashlib.sha256()
        h.update(json.dumps(recipe, sort_keys=True).encode())
        for name in sorted(self.files):
            h.update(b"\0" + name.encode() + b"\0")
            h.update(hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()


def find_runtime(checkout: Path, max_bytes: int = 1 << 20) -> RuntimeFiles:
    """binder/ or .binder/ (all their files but data), else the known files at the root."""
    root = checkout.resolve()
    for name in ("binder", ".binder"):
        d = root / name
        if d.is_dir() and not d.is_symlink():
            return RuntimeFiles(d, _read_dir(d, root, max_bytes))
    files = {}
    for name in RUNTIME_FILES:
        p = root / name
        if p.is_file():
            files[name] = _read_confined(p, root, max_bytes)
    return RuntimeFiles(root, files)


MAX_FILES = 1000  # a runtime directory holds a handful of files


def _read_dir(d: Path, root: Path, max_bytes: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for n, p in enumerate(sorted(d.rglob("*"))):
        if n >= MAX_FILES:
            raise RuntimeError_(f"{d.name}/ holds more than {MAX_FILES} files; keep only the "
                                "runtime files there (requirements.txt, runtime.txt, ...).")  # fmt: skip
        rel = p.relative_to(d).as_posix()
        if p.is_dir() or rel in NOT_RUNTIME or rel.startswith(".git"):
            continue
        files[rel] = _read_confined(p, root, max_bytes)
    return files


def _read_confined(p: Path, root: Path, max_bytes: int) -> bytes:
    try:
        return read_confined(p, root, max_bytes)
    except UnsafeFile as e:
        raise RuntimeError_(str(e)) from None
