"""Bounded output: what a build prints cannot fill the disk, the service's memory or an author's
mailbox, nor hold up other requests while its log is read.

The attack (issue 11, item 6): a notebook printed 10^7 lines; its log was 219 MB, reading it as
text took 52 s while a health probe waited 50 s (1.8 GB resident), and the author's email with
the logs attached was 296 MB.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

import httpx

from neurolibre_service.logs import LINE_LIMIT, LogEnd, LogLine, LogStore, Redactor
from neurolibre_service.notify import Attachment, Mailer, SMTPSettings
from neurolibre_service.processes import run_streaming

from .conftest import build, follow

MB = 1024 * 1024
SECRET = "nl-secret-token-0123456789abcdef"

# prints argv[1] numbered lines of argv[2] bytes each, then argv[3] (if given) unnumbered
PRINT_LINES = r"""
import sys
n, width = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
block = []
for i in range(n):
    block.append(b"%07d " % i + b"x" * (width - 9) + b"\n")
    if len(block) == 10000:
        out.write(b"".join(block))
        block = []
out.write(b"".join(block))
for extra in sys.argv[3:]:
    out.write(extra.encode() + b"\n")
"""


async def _collect(store: LogStore, key: str, after: int = 0, finished: str | None = None):
    return [item async for batch in store.follow(key, after, finished) for item in batch]


def _dropped(lines: list[str]) -> tuple[int, int]:
    """(index of the line that says how many lines were dropped, that number)."""
    for i, text in enumerate(lines):
        m = re.match(r"!! ([\d,]+) lines \(.+\) were dropped here", text)
        if m:
            return i, int(m.group(1).replace(",", ""))
    raise AssertionError("no line says how many lines were dropped")


async def test_a_job_printing_200_mb_keeps_its_start_the_count_of_dropped_lines_and_its_end(
    tmp_path,
):
    # attack: a build prints 10^6 lines of 200 bytes (200 MB), one with a secret near the end
    store = LogStore(tmp_path, Redactor([SECRET]))  # the default limit: 10 MB a log
    ch = store.channel("job-1")
    live = asyncio.create_task(_collect(store, "job-1"))
    await asyncio.sleep(0)
    n = 1_000_000
    argv = [sys.executable, "-c", PRINT_LINES, str(n), "200", f"token {SECRET}",
            "the last line of the build"]  # fmt: skip
    code = await asyncio.wait_for(run_streaming(argv, on_line=ch.write), 120)
    assert code == 0
    ch.write("!! Your notebook failed.")  # what the service says last is kept too
    ch.close("failed")

    path = tmp_path / "job-1.log"
    assert path.stat().st_size <= 10 * MB
    lines = path.read_text().splitlines()
    # the start, as printed
    assert lines[0].startswith("0000000 xxx")
    notice = next(i for i, t in enumerate(lines) if t.startswith("!! This log is too long"))
    assert [int(t[:7]) for t in lines[:notice]] == list(range(notice))
    assert notice > 20_000  # about 5 MB of 200-byte lines
    # one line says how much was dropped; every line is kept or counted
    at, dropped = _dropped(lines)
    assert at == notice + 1
    tail = lines[at + 1 :]
    assert tail[-3:] == ["token [secret]", "the last line of the build", "!! Your notebook failed."]
    assert [int(t[:7]) for t in tail[:-3]] == list(range(n - len(tail) + 3, n))
    assert notice + dropped + len(tail) == n + 3
    assert len(tail) > 20_000
    assert SECRET not in path.read_text()

    # a live reader got the same lines with the file's line numbers as ids, then the end
    got = await asyncio.wait_for(live, 30)
    assert got[-1] == LogEnd("failed")
    assert [(x.id, x.text) for x in got[:-1]] == list(enumerate(lines, start=1))

    # resuming after the "too long" line (a reader that reconnects) gives the rest; after a
    # restart too, from the file alone
    rest = await _collect(store, "job-1", after=notice + 1)
    assert [x.text for x in rest if isinstance(x, LogLine)] == lines[notice + 1 :]
    again = await _collect(LogStore(tmp_path, Redactor()), "job-1", len(lines) - 2, "failed")
    assert again == [LogLine(len(lines) - 1, lines[-2]), LogLine(len(lines), lines[-1]),
                     LogEnd("failed")]  # fmt: skip


async def test_a_reader_following_a_log_past_its_limit_is_told_lines_are_dropped(tmp_path):
    store = LogStore(tmp_path, Redactor(), size_limit=256 * 1024)
    ch = store.channel("job-2")
    got: list = []

    async def reader():
        async for batch in store.follow("job-2", 0):
            got.extend(batch)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    for i in range(10_000):
        ch.write(f"line {i:05d} " + "y" * 90)
    await asyncio.sleep(0.05)
    # while the job runs: the start, then one line saying lines are dropped, and no more
    texts = [x.text for x in got]
    assert texts[-1].startswith("!! This log is too long")
    assert len(texts) < 1500
    ch.close("succeeded")
    await asyncio.wait_for(task, 5)
    assert got[-2] == LogLine(got[-2].id, f"line 09999 {'y' * 90}")
    assert got[-1] == LogEnd("succeeded")
    assert [x.id for x in got[:-1]] == list(range(1, len(got)))
    assert (tmp_path / "job-2.log").stat().st_size <= 256 * 1024


async def test_one_endless_line_is_cut_with_a_note_and_no_secret_is_cut_in_half(tmp_path):
    # attack: one 200 MB line (no newline), then a line whose cut falls inside a secret
    script = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "for _ in range(200):\n"
        "    out.write(b'y' * (1 << 20))\n"
        f"out.write(b'\\n' + b'z' * ({LINE_LIMIT} - 10) + b'{SECRET}' + b'w' * 100000 + b'\\n')\n"
        "out.write(b'after\\n')\n"
    )
    store = LogStore(tmp_path, Redactor([SECRET]))
    ch = store.channel("job-3")
    started = time.monotonic()
    code = await asyncio.wait_for(
        run_streaming([sys.executable, "-c", script], on_line=ch.write), 60
    )
    assert code == 0
    assert time.monotonic() - started < 30
    ch.close("succeeded")

    lines = (tmp_path / "job-3.log").read_text().splitlines()
    assert len(lines) == 3
    assert (
        lines[0]
        == "y" * LINE_LIMIT + f" [... {200 * MB - LINE_LIMIT:,} more bytes of this line were cut]"
    )
    assert lines[1].startswith("z" * (LINE_LIMIT - 10) + "[secret] [... ")
    assert SECRET[:10] not in lines[1]
    assert lines[2] == "after"
    # a line that did not come through a pipe (the service's own, a Docker stream) is cut too
    ch.reopen()
    assert len(ch.write("v" * (5 * MB)).text) < LINE_LIMIT + 100


def _legacy_log(path: Path, lines: int, line: bytes) -> bytes:
    """A log written before logs had a limit: `lines` copies of `line`, then a last line."""
    last = b"the very last line"
    block = line * 100_000
    with path.open("wb") as f:
        for _ in range(lines // 100_000):
            f.write(block)
        f.write(last + b"\n")
    return last


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


async def test_a_huge_log_is_streamed_while_the_service_answers_other_requests(
    hub, alice, new_repo
):
    # a build that fails at once, then the log a 10^7-line build left before logs had a limit
    repo, _ = new_repo({"binder/runtime.txt": "r-4.1-2022-01-01\n"})
    env, _ = await build(alice, "huge-log", repo)
    assert env["status"] == "failed"
    path = hub.service_data / "logs" / f"job-{env['job']['id']}.log"
    last = _legacy_log(path, 10**7, b"an old log line 0000\n")
    size = path.stat().st_size
    assert size > 200 * MB

    pid = hub.service_pid()
    base = _rss(pid)
    peak = base
    slowest = 0.0
    stop = asyncio.Event()

    async def watch():
        nonlocal peak, slowest
        async with httpx.AsyncClient(timeout=60) as c:
            while not stop.is_set():
                peak = max(peak, _rss(pid))
                t = time.monotonic()
                assert (await c.get(f"{hub.api}health")).status_code == 200
                slowest = max(slowest, time.monotonic() - t)
                await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        received, end, chunks = 0, b"", 0
        async with alice.stream("GET", f"environments/{env['id']}/log") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            async for chunk in r.aiter_raw():
                received += len(chunk)
                end = (end + chunk)[-100:]
                chunks += 1
                if chunks == 10:
                    await asyncio.sleep(1)  # a slow reader: the service must wait, not buffer
        # resuming near the end of a log of 10^8 tiny lines (server-sent events)
        _legacy_log(path, 10**8, b".\n")
        lines, status = await follow(alice, env["id"], last_event_id=10**8 - 1, timeout=60)
    finally:
        stop.set()
        await watcher

    assert received == size
    assert end.endswith(last + b"\n")
    assert lines == [(10**8, "."), (10**8 + 1, last.decode())]
    assert status == "failed"
    assert slowest < 2.0, f"a health probe waited {slowest:.1f} s"
    assert peak - base < 64 * MB, f"the service grew by {(peak - base) // MB} MB"


def _mailer() -> Mailer:
    return Mailer(SMTPSettings(host="127.0.0.1", sender="neurolibre@example.org"))


def test_a_failed_builds_email_attaches_the_end_of_a_huge_log_and_where_the_rest_is(tmp_path):
    # attack: a book log of 10^6 lines (over 200 MB) attached to the author's email
    book = tmp_path / "book.log"
    with book.open("wb") as f:
        for i in range(0, 1_000_000, 10_000):
            f.write(b"".join(b"book line %07d " % j + b"b" * 200 + b"\n"
                             for j in range(i, i + 10_000)))  # fmt: skip
        f.write(b"!! The notebook analysis.ipynb failed: ValueError\n")
    assert book.stat().st_size > 200 * MB
    short = tmp_path / "environment.log"
    short.write_text("==> installing packages\nInstalled 3 packages\n")
    link = "https://hub.example.org/services/neurolibre/preprints/7 (build 9, book log)"

    mailer = _mailer()
    attachments = [mailer.log_attachment("environment.log", short, link),
                   mailer.log_attachment("book.log", book, link)]  # fmt: skip
    msg = mailer.message("author@example.org", "NeuroLibre: your preprint build failed",
                         "Why: a notebook failed.\n" + "x" * (10 * MB), attachments)  # fmt: skip
    raw = msg.as_bytes()

    assert len(raw) < 1 * MB
    got = message_from_bytes(raw, policy=policy.default)
    files = {a.get_filename(): a.get_content() for a in got.iter_attachments()}
    files = {k: v.decode() if isinstance(v, bytes) else v for k, v in files.items()}
    assert files["environment.log"] == "==> installing packages\nInstalled 3 packages\n"
    lines = files["book.log"].splitlines()
    assert lines[0].startswith("[This is the end of the log: its last 200 lines")
    assert link in lines[0]
    assert lines[-1] == "!! The notebook analysis.ipynb failed: ValueError"
    assert lines[-2].startswith("book line 0999999 ")
    assert len(lines) == 201
    assert "the rest of this message was cut" in got.get_body(("plain",)).get_content()


def test_an_attachment_made_elsewhere_is_cut_to_its_end_too():
    mailer = _mailer()
    big = b"".join(b"line %d\n" % i for i in range(2_000_000))
    msg = mailer.message("author@example.org", "s", "b", [Attachment("other.log", big)])
    assert len(msg.as_bytes()) < 1 * MB
    (a,) = msg.iter_attachments()
    assert a.get_content().endswith("line 1999999\n")
