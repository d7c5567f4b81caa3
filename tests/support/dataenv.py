"""The service's data environment in tests: its default packages served from the local index.

The wheels (repo2data at the service's version, nilearn, and their dependencies) are downloaded
once from PyPI by the test setup, like any dependency, and served on 127.0.0.1 by PackageIndex.
"""

from __future__ import annotations

from pathlib import Path

from neurolibre_service.datasets import DEFAULT_DATA_PACKAGES

from .pkgindex import PackageIndex, _wheels, add_wheels, cache_dir


def data_wheels(cache: Path) -> Path:
    """Wheels for the data environment's default packages."""
    return _wheels(cache, list(DEFAULT_DATA_PACKAGES))


def serve_data_wheels(index: PackageIndex) -> None:
    """Let index serve what the data environment installs."""
    add_wheels(index, data_wheels(cache_dir()))
