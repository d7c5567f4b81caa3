"""Child processes: line-by-line output, whole-tree kill, and no orphans if we die."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from .logs import LINE_LIMIT, cut_note

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # if the service dies (even SIGKILL), the kernel kills this child
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start_time(pid: int) -> int | None:
    """Process start time in clock ticks since boot; with the pid it identifies a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def kill_tree(pid: int, expected_start: int | None = None) -> bool:
    """SIGKILL a process, its process group and every descendant.

    With `expected_start`, only if the pid still names the process we started (pids are reused).
    Returns whether anything was killed.
    """
    if expected_start is not None and start_time(pid) != expected_start:
        return False
    children = _children_map()
    victims, stack = [], [pid]
    while stack:
        p = stack.pop()
        victims.append(p)
        stack.extend(children.get(p, []))
    killed = False
    try:
        os.killpg(pid, signal.SIGKILL)
        killed = True
    except (ProcessLookupError, PermissionError):
        pass
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
            killed = True
        except (ProcessLookupError, PermissionError):
            pass
    return killed


async def _spawn(argv: Sequence[str], cwd: str | os.PathLike | None,
                 env: Mapping[str, str] | None, *, stderr: int) -> asyncio.subprocess.Process:  # fmt: skip
    """A child in its own session (its whole tree can be killed) that dies with the service."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


class LineCutter:
    """Splits a stream (bytes or str chunks) into lines for on_line. A line keeps its first
    LINE_LIMIT units (bytes, or characters) and a note of how many were cut, so one huge line
    costs neither memory nor time."""

    def __init__(self, on_line: Callable[[str], None], unit: str = "bytes") -> None:
        self.on_line, self.unit = on_line, unit
        self.buf: bytes | str | None = None  # the current line's start (at most LINE_LIMIT)
        self.cut = 0  # units of the current line dropped

    def feed(self, chunk: bytes | str) -> None:
        *lines, rest = chunk.split(b"\n") if isinstance(chunk, bytes) else chunk.split("\n")
        for part in lines:
            self._add(part, ends=True)
        self._add(rest, ends=False)

    def close(self) -> None:
        if self.buf or self.cut:
            self._emit()

    def _add(self, part, *, ends: bool) -> None:
        buf = part[:0] if self.buf is None else self.buf
        room = LINE_LIMIT - len(buf)
        if len(part) > room:
            self.cut += len(part) - room
            part = part[:room]
        self.buf = buf + part
        if ends:
            self._emit()

    def _emit(self) -> None:
        buf = self.buf or ""
        text = buf.decode("utf-8", "replace") if isinstance(buf, bytes) else buf
        self.on_line(text + (cut_note(self.cut, self.unit) if self.cut else ""))
        self.buf, self.cut = None, 0


async def run_streaming(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[int, int | None], Awaitable[None]] | None = None,
) -> int:
    """Run argv, feeding each output line (stdout and stderr merged) to on_line.

    A line keeps its first LINE_LIMIT bytes and a note of how many were cut, so one huge
    line costs neither memory nor time. Cancelling the awaiting task kills the whole process
    tree before re-raising.
    """
    proc = await _spawn(argv, cwd, env, stderr=asyncio.subprocess.STDOUT)
    try:
        if on_start is not None:
            await on_start(proc.pid, start_time(proc.pid))
        lines = LineCutter(on_line)
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            lines.feed(chunk)
        lines.close()
        return await proc.wait()
    except BaseException:
        if proc.returncode is None:
            kill_tree(proc.pid)
            await proc.wait()
        raise


async def run_captured(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run argv to its end: (exit code, stdout, stderr).

    The process gets its own session, so past `timeout` seconds (or when the awaiting task is
    cancelled) everything it started goes with it (git's remote helpers, say), and
    TimeoutError is raised.
    """
    proc = await _spawn(argv, cwd, env, stderr=asyncio.subprocess.PIPE)
    started = start_time(proc.pid)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException:
        # the group first: the process itself may have exited (and its pid been reaped)
        # while a helper it started still holds the pipes
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        kill_tree(proc.pid, started)
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err
