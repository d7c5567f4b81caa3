"""Job logs over HTTP: plain text, or server-sent events resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from tornado.iostream import StreamClosedError

from ..errors import NotFound, UserError
from ..logs import LogEnd, LogLine, LogStatus
from ..preprints import stage_log_key
from .base import APIHandler, row_id

KEEPALIVE_SECONDS = 15.0
TEXT_CHUNK = 256 * 1024


class LogAPI(APIHandler):
    """A job log as text or server-sent events; subclasses find the log and check access."""

    async def send_log(self, key: str, finished: str | None) -> None:
        accept = self.request.headers.get("Accept", "")
        if "text/event-stream" not in accept:
            self._last_event_id()  # unused here, but a bad one is refused the same
            await self.send_text(self.nl.logs.path(key))
            return
        await self.stream(key, finished)

    async def send_text(self, path: Path) -> None:
        """The file as it is now, in chunks read in a thread, each sent before the next is read:
        a long log costs one chunk of memory and never holds up other requests."""
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        try:
            f = path.open("rb")
        except FileNotFoundError:
            self.finish()
            return
        try:
            left = os.fstat(f.fileno()).st_size  # a running job's later lines are not waited for
            while left > 0 and not getattr(self, "_closed", False):
                chunk = await asyncio.to_thread(f.read, min(TEXT_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            return
        finally:
            f.close()
        if not getattr(self, "_closed", False):
            self.finish()

    def _last_event_id(self) -> int:
        raw = self.request.headers.get("Last-Event-ID")
        if raw is None:  # EventSource sends it only when it has one: an empty one is bad too
            raw = self.get_argument("last_event_id", "0")
        raw = raw.strip()
        if not (raw.isascii() and raw.isdigit()):
            raise UserError(f"Last-Event-ID must be a line number, not {raw[:40]!r}.")
        return int(raw)

    def on_connection_close(self) -> None:
        self._closed = True
        pending = getattr(self, "_pending", None)
        if pending is not None:
            pending.cancel()

    async def stream(self, key: str, finished: str | None) -> None:
        self._closed = False
        after = self._last_event_id()  # a 400 for a bad one, before anything is counted or sent
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        gauge = self.nl.metrics.log_subscribers
        gauge.inc()
        events = self.nl.logs.follow(key, after, finished)
        try:
            # tell the client how soon to reconnect if the connection drops
            self.write("retry: 2000\n\n")
            await self.flush()
            while not self._closed:
                self._pending = asyncio.ensure_future(anext(events))
                while True:
                    done, _ = await asyncio.wait({self._pending}, timeout=KEEPALIVE_SECONDS)
                    if done:
                        break
                    self.write(": keep-alive\n\n")
                    await self.flush()
                try:
                    batch = self._pending.result()
                except (StopAsyncIteration, asyncio.CancelledError):
                    break
                ended = False
                for item in batch:
                    if isinstance(item, LogLine):
                        self.write(f"id: {item.id}\ndata: {item.text}\n\n")
                    elif isinstance(item, LogStatus):
                        self.write(f"event: status\ndata: {json.dumps(item.data)}\n\n")
                    elif isinstance(item, LogEnd):
                        self.write(f"event: end\ndata: {json.dumps({'status': item.status})}\n\n")
                        ended = True
                await self.flush()
                if ended:
                    break
        except StreamClosedError:
            pass
        finally:
            gauge.dec()
            await events.aclose()
        if not self._closed:
            self.finish()


class EnvironmentLogAPI(LogAPI):
    async def get(self, env_id: str) -> None:
        user = self.require_user()
        ident = row_id(env_id, "environment")
        _env, job = await self.nl.environments.get(ident, user["name"], self.is_admin)
        if job is None:
            raise NotFound("This environment has no build yet.")
        await self.send_log(self.nl.queue.log_key(job.id),
                            job.status.value if job.status.finished else None)  # fmt: skip


class BuildLogAPI(LogAPI):
    """A preprint build's logs: main (check and summary), environment, data, book."""

    async def get(self, build_id: str, stage: str) -> None:
        user = self.require_user()
        ident = row_id(build_id, "build")
        _p, b = await self.nl.preprints.get_build(ident, user["name"], self.is_admin)
        state = b.stages.get(stage, "pending") if stage != "main" else None
        finished = None
        if b.job.status.finished:
            finished = b.job.status.value if stage == "main" else state
            if finished in ("pending", "running"):
                finished = "skipped"
        elif state not in (None, "pending", "running"):
            finished = state
        await self.send_log(stage_log_key(b.job_id, stage), finished)
