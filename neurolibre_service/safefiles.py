"""Reading files a build or a repository could have written, as the service.

The service reads some of them itself (a repository's settings, a build's reports). Such a file
may be a symbolic link out of its tree (to /etc/shadow), a FIFO (a read never ends), a device
(/dev/zero never ends) or simply huge: read_confined refuses all of these before reading.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_LIMIT = 5 << 20


class UnsafeFile(ValueError):
    """A file the service will not read; the message names it relative to its root."""


def read_confined(path: Path, root: Path, limit: int = DEFAULT_LIMIT) -> bytes:
    """The bytes of a regular file inside root (links are followed only within root)."""
    root = Path(root).resolve()
    path = Path(path)
    shown = _shown(path, root)
    real = path.resolve()
    if real != root and root not in real.parents:
        raise UnsafeFile(f"{shown} is a link that points outside the repository.")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnsafeFile(f"{shown} does not exist.") from None
    except OSError as e:
        raise UnsafeFile(f"{shown} cannot be read ({e.strerror}).") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{shown} is not a regular file.")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFile(f"{shown} is larger than {limit} bytes.")
    return data


def read_text_confined(path: Path, root: Path, limit: int = DEFAULT_LIMIT) -> str:
    return read_confined(path, root, limit).decode("utf-8", "replace")


def _shown(path: Path, root: Path) -> str:
    try:
        return path.absolute().relative_to(root).as_posix()
    except ValueError:
        return path.name


def remove_special_files(top: Path) -> int:
    """Delete FIFOs, sockets and devices under top (a build's output): nothing serves them."""
    removed = 0
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            try:
                mode = os.lstat(p).st_mode
            except FileNotFoundError:
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                os.unlink(p)
                removed += 1
    return removed
