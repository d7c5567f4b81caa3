"""Processes seen from the host: a confined server reports pids of its own pid namespace."""

from __future__ import annotations

from pathlib import Path


def host_pid(ns_pid: int, environ_has: str) -> int:
    """The host's pid of the process that is `ns_pid` in its namespace (the last NSpid field)
    and has `environ_has` (NAME=value) in its environment."""
    wanted = environ_has.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            nspid = next(line.split()[1:] for line in status.splitlines()
                         if line.startswith("NSpid:"))  # fmt: skip
            if int(nspid[-1]) != ns_pid:
                continue
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, StopIteration, ValueError):
            continue
    raise LookupError(f"no process {ns_pid} with {environ_has}")
