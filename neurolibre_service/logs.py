"""Job logs: append-only files plus live fan-out to subscribers (no database polling).

Each log line gets an id (its 1-based line number in the file). Server-sent event clients
reconnect with `Last-Event-ID` and continue from the next line: a subscriber registers for
live lines *before* reading the file, and drops any live line it has already read, so there
are neither gaps nor duplicates.

A build's output is the author's to choose, so a log is bounded: one line keeps at most
LINE_LIMIT characters, and a file keeps its first half-limit of lines; past that, a line says
lines are being dropped, the last lines wait in a bounded ring, and when the job ends a line
says how many were dropped and the ring is written after it. Ids stay line numbers of the file.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]+(:[^/\s@]*)?@")
_KEY_VALUE = re.compile(
    r"(?i)\b(?P<key>[A-Z0-9_]*(?:token|password|passwd|secret|api_key|apikey))"
    r"(?P<sep>\s*[=:]\s*)(?P<value>[^\s'\"&]+)"
)
REDACTED = "[secret]"
# words _KEY_VALUE needs, to skip its (slow) scan on the many lines that have none
_KEY_WORDS = ("token", "passw", "secret", "api_key", "apikey")

LINE_LIMIT = 64 * 1024  # characters of one line that are kept (bytes, when read from a pipe)
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024
MIN_SIZE_LIMIT = 4 * LINE_LIMIT  # the kept tail must hold the longest line
_NOTES = 1024  # bytes kept free under the limit for the two lines about dropped lines
_TAIL_MAX_LINES = 100_000  # bounds the ring's per-line overhead when lines are short
_READ_BATCH_BYTES = 256 * 1024


def human_size(n: float) -> str:
    """1536 -> "1.5 KB" (powers of 1024, as limits are configured)."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1024
        if n < 1024 or unit == "TB":
            break
    return f"{n:.1f}".removesuffix(".0") + f" {unit}"


_CUT_END = " of this line were cut]"


def cut_note(extra: int, unit: str = "characters") -> str:
    """What ends a line that was cut (the redactor looks for it: a secret may be cut too)."""
    return f" [... {extra:,} more {unit}{_CUT_END}"


class Redactor:
    """Removes known secret values and secret-looking patterns from a line."""

    def __init__(self, secrets: Iterable[str] = ()):
        # short values would blank out ordinary words; real secrets are long
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 6 and secret not in self.secrets:
            self.secrets.append(secret)
            self.secrets.sort(key=len, reverse=True)

    @property
    def longest(self) -> int:
        return len(self.secrets[0]) if self.secrets else 0

    def cut_end(self, line: str) -> str:
        """Redact what may be the start of a secret at the end of a line that was cut."""
        for s in self.secrets:
            for k in range(len(s) - 1, 2, -1):
                if line.endswith(s[:k]):
                    return line[:-k] + REDACTED
        # a URL cut before the "@" of its user:password@
        start = line.rfind("://") + 3
        rest = line[start:]
        if start > 2 and rest and not any(c in "/@" or c.isspace() for c in rest):
            return line[:start] + REDACTED
        return line

    def __call__(self, line: str) -> str:
        for s in self.secrets:
            if s in line:
                line = line.replace(s, REDACTED)
        if "@" in line:
            line = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", line)
        lower = line.lower()
        if any(w in lower for w in _KEY_WORDS):
            line = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}", line)
        return line


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
    def __init__(self, path: Path, redact: Redactor, size_limit: int = DEFAULT_SIZE_LIMIT):
        self.path = path
        self.redact = redact
        self.size_limit = max(size_limit, MIN_SIZE_LIMIT)
        self.subscribers: set[asyncio.Queue] = set()
        self.closed: LogEnd | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.count = _count_lines(path)
        self._fd: int | None = None
        try:
            self.size = path.stat().st_size
        except FileNotFoundError:
            self.size = 0
        # while lines are dropped: the last ones (not yet redacted), their size, what went
        self._tail: deque[str] | None = None
        self._tail_size = 0
        self._dropped = 0
        self._dropped_size = 0

    @property
    def head_limit(self) -> int:
        """Bytes of the file written as lines come; later lines go through the tail ring."""
        return self.size_limit // 2

    @property
    def tail_limit(self) -> int:
        return self.size_limit - self.head_limit - _NOTES

    @property
    def dropping(self) -> bool:
        return self._tail is not None

    def write(self, text: str) -> LogLine | None:
        """Append one line (redacted first); a line never spans two ids.

        Returns None when the log is past its limit and the line went to the tail ring (it is
        written, or dropped, when the channel closes).
        """
        text = text.rstrip("\r\n").replace("\n", " ")
        if len(text) > LINE_LIMIT + 100:  # pipes cut lines already, with a note (~60 chars)
            # redact a little more than is kept, so a secret across the cut is still found
            extra = len(text) - LINE_LIMIT
            text = self.redact(text[: LINE_LIMIT + self.redact.longest + 1024])[:LINE_LIMIT]
            text += cut_note(extra)
        if self._tail is not None:
            self._keep_in_tail(text)  # redacted if it is ever written: most lines never are
            return None
        text = self._redact(text)
        data = (text + "\n").encode("utf-8", "replace")
        if self.size + len(data) > self.head_limit:
            self._append(
                f"!! This log is too long (over {human_size(self.head_limit)}): the lines "
                f"after this one are dropped, except the last {human_size(self.tail_limit)}, "
                "written when the job ends."
            )
            self._tail = deque()
            self._keep_in_tail(text)
            return None
        return self._append(text, data)

    def _redact(self, text: str) -> str:
        if text.endswith(_CUT_END):  # cut where a secret may have begun
            body, sep, note = text.rpartition(" [... ")
            return self.redact.cut_end(self.redact(body)) + sep + note
        return self.redact(text)

    def _append(self, text: str, data: bytes | None = None) -> LogLine:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        data = data if data is not None else (text + "\n").encode("utf-8", "replace")
        os.write(self._fd, data)
        self.size += len(data)
        self.count += 1
        line = LogLine(self.count, text)
        self._publish(line)
        return line

    def _keep_in_tail(self, text: str) -> None:
        assert self._tail is not None
        self._tail.append(text)
        self._tail_size += len(text) + 1
        while self._tail_size > self.tail_limit or len(self._tail) > _TAIL_MAX_LINES:
            gone = self._tail.popleft()
            self._tail_size -= len(gone) + 1
            self._dropped += 1
            self._dropped_size += len(gone) + 1

    def _flush_tail(self) -> None:
        """Write the line about what was dropped, then the ring's lines (redacted now)."""
        tail, self._tail = self._tail, None
        if tail is None:
            return
        kept: list[bytes] = []
        size = 0
        dropped, dropped_size = self._dropped, self._dropped_size
        # newest first: redaction may lengthen a line, so the ring is measured again in bytes
        while tail:
            data = (self._redact(tail[-1]) + "\n").encode("utf-8", "replace")
            if size + len(data) > self.tail_limit:
                break
            tail.pop()
            kept.append(data)
            size += len(data)
        dropped += len(tail)
        dropped_size += sum(len(text) + 1 for text in tail)
        kept.reverse()
        self._tail_size = self._dropped = self._dropped_size = 0
        self._append(
            f"!! {dropped:,} lines ({human_size(dropped_size)}) were dropped here: this log "
            f"keeps its first and last lines within {human_size(self.size_limit)}. "
            f"The last {len(kept):,} lines follow."
        )
        for data in kept:
            self._append(data[:-1].decode("utf-8", "replace"), data)

    def status(self, data: dict) -> None:
        self._publish(LogStatus(data))

    def close(self, status: str) -> None:
        self._flush_tail()
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


class LogReader:
    """A log file's lines after a given id, read in batches bounded in lines and bytes.

    Lines longer than LINE_LIMIT bytes (written before logs had a limit) are cut; skipping to
    `after` counts newlines in blocks rather than decoding lines.
    """

    def __init__(self, path: Path, after: int = 0):
        self.after = after
        self.n = 0  # complete lines read or skipped
        try:
            self._f = path.open("rb")
        except FileNotFoundError:
            self._f = None
        self._skipped = False

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _skip(self) -> None:
        self._skipped = True
        f = self._f
        while self.n < self.after:
            pos = f.tell()
            block = f.read(1 << 16)
            if not block:
                return
            need = self.after - self.n
            have = block.count(b"\n")
            if have < need:
                self.n += have
                continue
            end = -1
            for _ in range(need):
                end = block.index(b"\n", end + 1)
            f.seek(pos + end + 1)
            self.n += need

    def batch(self, max_lines: int = 1000, max_bytes: int = _READ_BATCH_BYTES) -> list[LogLine]:
        """The next lines (an empty list at the end of the file, for now)."""
        if self._f is None:
            return []
        if not self._skipped:
            self._skip()
        out: list[LogLine] = []
        size = 0
        while len(out) < max_lines and size < max_bytes:
            raw = self._f.readline(LINE_LIMIT)
            if not raw:
                break
            size += len(raw)
            note = ""
            if len(raw) == LINE_LIMIT and not raw.endswith(b"\n"):
                extra = 0
                while rest := self._f.readline(1 << 20):
                    if rest.endswith(b"\n"):
                        extra += len(rest) - 1
                        break
                    extra += len(rest)
                note = cut_note(extra, "bytes") if extra else ""
            self.n += 1
            if self.n > self.after:
                text = raw.rstrip(b"\n").decode("utf-8", "replace") + note
                out.append(LogLine(self.n, text))
        return out


def read_lines(path: Path, after: int = 0) -> Iterable[LogLine]:
    with LogReader(path, after) as reader:
        while batch := reader.batch():
            yield from batch


class LogStore:
    """All job logs of a service, under one directory."""

    def __init__(self, root: Path, redact: Redactor, keep_closed: int = 1000,
                 size_limit: int = DEFAULT_SIZE_LIMIT):  # fmt: skip
        self.root = root
        self.redact = redact
        self.size_limit = size_limit
        self._channels: OrderedDict[str, LogChannel] = OrderedDict()
        self._keep_closed = keep_closed

    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[a-z0-9-]+(/[a-z0-9-]+)?", key):
            raise ValueError(f"bad log key {key!r}")
        return self.root / f"{key}.log"

    def channel(self, key: str) -> LogChannel:
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = LogChannel(self.path(key), self.redact, self.size_limit)
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

        A batch holds what is available without waiting (at most `chunk` lines and about
        256 KB from the file), so a burst of lines costs one write to the client, not one per
        line. The file is read in a thread: a long log never holds up the event loop.
        `finished` is the job's final status when the caller learned from the database that
        it already ended (perhaps before this process started): the stream ends once the
        file is read. Otherwise the channel's close ends it.
        """
        ch = self.channel(key)
        q: asyncio.Queue = asyncio.Queue()
        ch.subscribers.add(q)
        reader = LogReader(ch.path, after)
        try:
            last = after
            while batch := await asyncio.to_thread(reader.batch, chunk):
                last = batch[-1].id
                yield batch
            reader.close()
            end = ch.closed or (LogEnd(finished) if finished else None)
            if end is not None:
                yield [end]
                return
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
            reader.close()
            ch.subscribers.discard(q)
