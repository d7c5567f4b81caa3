"""Where templates, static files and migrations live: in the checkout, or inside the wheel."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def share_path(name: str) -> Path:
    """Installed wheels carry them under _share/; an editable checkout has them at the top."""
    packaged = _PKG / "_share" / name
    if packaged.exists():
        return packaged
    return _PKG.parent / name
