"""Job logs: append-only files plus live fan-out to subscribers (no database polling).

Each log line gets an id (its 1-based line number in the file). Server-sent event clients
reconnect with `Last-Event-ID` and continue from the next line: a subscriber registers for
live lines *before* reading the file, and drops any live line it has already read, so there
are neither gaps nor duplicates.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]+(:[^/\s@]*)?@")
_KEY_VALUE = re.compile(
    r"(?i)\b(?P<key>[A-Z0-9_]*(?:token|password|passwd|secret|api_key|apikey))"
    r"(?P<sep>\s*[=:]\s*)(?P<value>[^\s'\"&]+)"
)
REDACTED = "[secret]"


class Redactor:
    """Removes known secret values and secret-looking patterns from a line."""

    def __init__(self, secrets: Iterable[str] = ()):
        # short values would blank out ordinary words; real secrets are long
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 6 and secret not in self.secrets:
            self.secrets.append(secret)
            self.secrets.sort(key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for s in self.secrets:
            if s in line:
                line = line.replace(s, REDACTED)
        line = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", line)
        return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}", line)


@dataclass(frozen=True)
class LogLine:
    id: int
    text: str


@dataclass(frozen=True)
class LogEnd:
    """Sent to subscribers when the log will get no more lines."""

    status: str


@dataclass(frozen=True)
class LogStatus:
    """Progress of the job writing this log (stage changes), for live pages."""

    data: dict


class LogChannel:
    def __init__(self, path: Path, redact: Redactor):
        self.path = path
        self.redact = redact
        self.subscribers: set[asyncio.Queue] = set()
        self.closed: LogEnd | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.count = _count_lines(path)
        self._fd: int | None = None

    def write(self, text: str) -> LogLine:
        """Append one line (redacted first); a line never spans two ids."""
        text = self.redact(text.rstrip("\r\n")).replace("\n", " ")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.write(self._fd, (text + "\n").encode("utf-8", "replace"))
        self.count += 1
        line = LogLine(self.count, text)
        self._publish(line)
        return line

    def status(self, data: dict) -> None:
        self._publish(LogStatus(data))

    def close(self, status: str) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.closed = LogEnd(status)
        self._publish(self.closed)

    def reopen(self) -> None:
        """A finished job runs again (re-queued after a restart): accept lines again."""
        self.closed = None

    def _publish(self, item) -> None:
        for q in list(self.subscribers):
            q.put_nowait(item)


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def read_lines(path: Path, after: int = 0) -> Iterable[LogLine]:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            for n, text in enumerate(f, start=1):
                if n > after:
                    yield LogLine(n, text.rstrip("\n"))
    except FileNotFoundError:
        return


class LogStore:
    """All job logs of a service, under one directory."""

    def __init__(self, root: Path, redact: Redactor, keep_closed: int = 1000):
        self.root = root
        self.redact = redact
        self._channels: OrderedDict[str, LogChannel] = OrderedDict()
        self._keep_closed = keep_closed

    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[a-z0-9-]+(/[a-z0-9-]+)?", key):
            raise ValueError(f"bad log key {key!r}")
        return self.root / f"{key}.log"

    def channel(self, key: str) -> LogChannel:
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = LogChannel(self.path(key), self.redact)
            self._evict()
        return ch

    def _evict(self) -> None:
        closed = [k for k, c in self._channels.items() if c.closed and not c.subscribers]
        for k in closed[: max(0, len(closed) - self._keep_closed)]:
            del self._channels[k]

    def remove(self, key: str) -> None:
        self._channels.pop(key, None)
        self.path(key).unlink(missing_ok=True)

    async def follow(
        self, key: str, after: int, finished: str | None = None, chunk: int = 1000
    ) -> AsyncIterator[list[LogLine | LogStatus | LogEnd]]:
        """Batches of lines after `after`, then of live lines, until the log ends.

        A batch holds what is available without waiting, so a burst of lines costs one write
        to the client, not one per line. `finished` is the job's final status when the caller
        learned from the database that it already ended (perhaps before this process started):
        the stream ends once the file is read. Otherwise the channel's close ends it.
        """
        ch = self.channel(key)
        q: asyncio.Queue = asyncio.Queue()
        ch.subscribers.add(q)
        try:
            last = after
            batch: list = []
            for line in read_lines(ch.path, after):
                last = line.id
                batch.append(line)
                if len(batch) >= chunk:
                    yield batch
                    batch = []
            end = ch.closed or (LogEnd(finished) if finished else None)
            if end is not None:
                yield [*batch, end]
                return
            if batch:
                yield batch
            while True:
                items = [await q.get()]
                while not q.empty() and len(items) < chunk:
                    items.append(q.get_nowait())
                batch = []
                for item in items:
                    if isinstance(item, LogLine):
                        if item.id <= last:
                            continue  # already read from the file
                        if item.id > last + 1:
                            # should not happen; fill from the file rather than skip
                            batch += [x for x in read_lines(ch.path, last) if x.id < item.id]
                        last = item.id
                    batch.append(item)
                    if isinstance(item, LogEnd):
                        yield batch
                        return
                if batch:
                    yield batch
        finally:
            ch.subscribers.discard(q)
