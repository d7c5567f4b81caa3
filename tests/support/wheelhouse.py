"""Distributions for another Python than the tests', as an author's runtime would resolve them.

Real preprints pin old packages for old Pythons (the official template: Python 3.8 and
jupyter-book 0.14), and some of their dependencies exist only as sdists (repo2data needs
`wget`). The test setup resolves such requirements once for the target Python with uv, then
downloads exactly those pins (wheels when there are, sdists otherwise) from the machine's
package index into a cache, which the local index (pkgindex.PackageIndex) then serves.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from uv import find_uv_bin

from .pkgindex import PackageIndex


def resolved_distributions(cache: Path, reqs: list[str], python_version: str) -> Path:
    key = hashlib.sha256(f"{python_version} {' '.join(reqs)}".encode()).hexdigest()[:16]
    target = cache / f"dists-py{python_version}-{key}"
    stamp = target / ".complete"
    if stamp.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    pins = subprocess.run(
        [find_uv_bin(), "pip", "compile", "--no-config", "-", "--python-version", python_version,
         "--python-platform", "x86_64-manylinux_2_17", "--no-header", "--no-annotate", "-q"],
        input="\n".join(reqs), capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    # --no-deps: the pins are the whole set; sdists are allowed for what has no wheel (and
    # setuptools and wheel are there to build them: uv builds sdists in isolation)
    pins += ["setuptools<76", "wheel"]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--prefer-binary",
         "--python-version", python_version, "--implementation", "cp",
         "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
         "--platform", "manylinux_2_28_x86_64", "--platform", "any", "-d", str(target), *pins],
        check=True,
    )  # fmt: skip
    stamp.write_text("\n".join(pins) + "\n")
    return target


def serve(index: PackageIndex, directory: Path) -> None:
    """Add a directory's wheels and sdists to the local index."""
    for f in directory.iterdir():
        if f.name.endswith((".whl", ".tar.gz", ".zip")):
            index.files[f.name] = f
