"""A fake BinderHub for the tests: a test double of BinderHub's build API, not of our code.

It answers as a real BinderHub (jupyterhub/binderhub b9fad99) did when recorded: the
transcripts in support/binderhub-transcripts/ (their README lists what they show) win over
/work/shared/BINDERHUB_PROTOCOL.md where the two differ. Its awkward parts, kept:

- every answer is HTTP 200 with an event stream, errors included (BinderHub's send_error);
- a refusal before a build (a missing Accept, POST, 403, 429, an unknown provider, a ref that
  does not resolve, build_only without API-only mode) is ONE `failed` event, then the stream
  closes; a cache hit is ONE `ready` event ("Done! Found built image"), then it closes;
- a build is `waiting`, then repo2docker's events (some without a phase; Docker's "Step N/M"
  lines without a newline, each followed by a `"\\n"` event; each written with an extra blank
  line), then `ready` ("Done! Image built"), then the stream closes;
- a failed build is repo2docker's `failed` event with the reason and no newline, `failed_delay`
  later a bare `{"phase": "failed"}`, then keep-alives until the client hangs up;
- keep-alives every `keepalive_interval` from the stream's start (BinderHub: 25 s), whatever
  else is sent;
- without auth (no `token`, no `hub_api_url`) a per-address rate limit (`rate_limit` requests
  per `rate_period`, counting cache hits; 0: none), which a token does not lift;
- image names end in a 6-hex-digit hash of the repository URL;
- behind a JupyterHub (a base URL under /services/), a path outside the BinderHub is a 302 to
  /hub/... (JupyterHub's prefix redirect); otherwise a 404.

Each build request takes the next of `scenarios` (else `default_scenario`): "build" (resolve the
ref with git and clone; with `docker`, `docker build` binder/Dockerfile, push to `registry` and
remove the local image; without, the Dockerfile's steps are logged as Docker would), "failure",
"quiet", "drop", "html", "odd", or "replay:FILE": a recorded transcript's body served byte for
byte (its timing sped up `replay_speed` times), closed or kept open as the real one was. A client
that hangs up stops the build here; a new request starts a new build, as with BinderHub's local
executor (on Kubernetes the running build would be re-attached).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import string
import tempfile
import threading
import time
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from dataclasses import dataclass, field
from http.client import responses
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

if TYPE_CHECKING:
    from .docker import DockerDaemon, Registry

TRANSCRIPTS = Path(__file__).parent / "binderhub-transcripts"
PROVIDERS = {"gh": "GitHub", "gl": "GitLab", "git": "Git repository"}
SHA1 = re.compile(r"[0-9a-f]{40}")
AUTH = re.compile(r"(?:token|bearer)\s+(.+)", re.IGNORECASE)  # as JupyterHub reads it
API_ONLY = ("Building but not launching is not permitted when the API only mode was not enabled "
            "by setting `enable_api_only_mode` to True. ")  # fmt: skip
LOGIN_PAGE = ('<!DOCTYPE html>\n<html><head><title>JupyterHub</title></head><body>\n'
              '<form action="/hub/login?next=" method="post" role="form">\n'
              '<input id="username_input" name="username"><input type="password" name="password">'
              '\n<button type="submit">Sign in</button></form></body></html>\n')  # fmt: skip
SCOPES = ("access:services!service=binder", "access:services")  # BinderHub's hub_scopes
WAITING = {"phase": "waiting", "message": "Waiting for build to start...\n"}
GIT_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "http"}
STAMP = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) ")  # the recorder's time of each line
NOT_REPLAYED = {"server", "date", "content-length", "transfer-encoding", "etag", "connection"}


@dataclass
class Transcript:
    """A recorded answer: status, headers, and the body's lines as received (with the time
    each arrived, when recorded) and whether the server closed the stream."""

    status: int
    headers: list[tuple[str, str]]
    lines: list[tuple[float | None, bytes]]
    closed: bool

    @property
    def body(self) -> bytes:
        return b"".join(line for _, line in self.lines)

    @property
    def events(self) -> list[dict]:
        return [json.loads(line[6:]) for _, line in self.lines if line.startswith(b"data: ")]


def transcript(name: str) -> Transcript:
    """Read support/binderhub-transcripts/NAME: `curl -N -i` output, each line optionally
    prefixed with the time it arrived; a last `curl: (28) ...` line means the server never
    closed the stream (curl gave up)."""
    lines = (TRANSCRIPTS / name).read_bytes().decode().split("\n")
    if lines[-1] == "":
        lines.pop()  # the file's last newline ends the last line
    entries: list[tuple[float | None, str]] = []
    for line in lines:
        m = STAMP.match(line)
        when = None
        if m:
            h, mi, s, ms = map(int, m.groups())
            when, line = h * 3600 + mi * 60 + s + ms / 1000, line[m.end() :]
        entries.append((when, line))
    end = next(i for i, (_, text) in enumerate(entries) if text in ("", "\r"))
    head = [text.rstrip("\r") for _, text in entries[:end]]
    body = entries[end + 1 :]
    closed = not (body and body[-1][1].startswith("curl: "))
    if not closed:
        body = body[:-1]
    headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in head[1:])]
    return Transcript(int(head[0].split()[1]), headers,
                      [(when, (text + "\n").encode()) for when, text in body], closed)  # fmt: skip


@dataclass
class BuildRequest:
    path: str  # provider_prefix/spec as requested (still quoted)
    provider: str
    spec: str
    query: dict[str, str]
    headers: dict[str, str]
    method: str = "GET"
    scenario: str = ""  # "bad-accept" when refused before one was taken
    events: list[dict] = field(default_factory=list)  # every event sent, in order
    keepalives: int = 0
    hung_up: threading.Event = field(default_factory=threading.Event)  # or the server finished
    closed_by_server: bool = False


class _Close(Exception):
    """The answer is complete: the server closes the stream."""


class _Failed(Exception):
    """A build failed: from now on only keep-alives, until the client hangs up."""


def repo_and_ref(provider: str, spec: str) -> tuple[str, str]:
    """The clone URL and the unresolved ref a spec names (ValueError if malformed)."""
    if provider == "gh":
        user, repo, ref = spec.split("/", 2)
        return f"https://github.com/{user}/{repo}", ref
    quoted, sep, ref = spec.partition("/")
    if not sep or not quoted or not ref:
        raise ValueError(spec)
    url = unquote(quoted)
    return (url if provider == "git" else f"https://gitlab.com/{url}"), unquote(ref)


class BuildHandler(tornado.web.RequestHandler):
    def initialize(self, hub: FakeBinderHub) -> None:
        self.hub = hub
        self.rec: BuildRequest | None = None
        self.work: asyncio.Future | None = None
        self.keepalive: asyncio.Future | None = None
        self.lock = asyncio.Lock()  # one flush at a time: Tornado loses concurrent ones
        self.dropped = self.stopping = False

    def set_default_headers(self) -> None:
        # BinderHub's EventStreamHandler: every answer, errors included, is an event stream
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Access-Control-Allow-Headers", "cache-control")

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        """As BinderHub: an event stream cannot carry an HTTP error, so a `failed` event on 200."""
        exc = (kwargs.get("exc_info") or (None, None))[1]
        message = ""
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args
        event = {"phase": "failed", "status_code": status_code,
                 "message": (message or responses.get(status_code, "Unknown HTTP Error")) + "\n"}  # fmt: skip
        if self.rec is not None:
            self.rec.events.append(event)
        self.write(f"data: {json.dumps(event)}\n\n")
        self.finish()

    def prepare(self) -> None:
        hub = self.hub
        # Tornado unquotes path arguments; like BinderHub, read the spec from the raw path
        path = self.request.path[len(hub.base_url + "build/") :]
        provider, _, spec = path.partition("/")
        query = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        self.rec = BuildRequest(path, provider, spec, query, dict(self.request.headers),
                                self.request.method or "GET")  # fmt: skip
        hub.requests.append(self.rec)
        # BinderHub splits Accept on ";" (so "text/event-stream, */*" is refused)
        accept = {s.strip().lower() for s in self.request.headers.get("Accept", "").split(";")}
        if "text/event-stream" not in accept:
            self.rec.scenario = "bad-accept"
            raise tornado.web.HTTPError(400, "Missing Accept header: text/event-stream")

    def on_finish(self) -> None:
        if self.work is None and self.rec is not None:  # answered without a stream of its own
            self.rec.closed_by_server = True
            self.rec.hung_up.set()

    async def get(self, _provider: str, _spec: str) -> None:
        hub, rec = self.hub, self.rec
        assert rec is not None
        rec.scenario = scenario = hub.scenarios.pop(0) if hub.scenarios else hub.default_scenario
        if scenario == "html":  # e.g. JupyterHub's login page instead of BinderHub
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            self.finish(LOGIN_PAGE)
            return
        hub._handlers.add(self)
        self.work = asyncio.ensure_future(self._serve(rec.provider, rec.spec, scenario))
        try:
            await self.work
        except (asyncio.CancelledError, StreamClosedError):
            pass
        finally:
            if self.keepalive is not None:
                self.keepalive.cancel()
                await asyncio.gather(self.keepalive, return_exceptions=True)
            hub._handlers.discard(self)
            if not self.dropped and not self.request.connection.stream.closed():
                rec.closed_by_server = True
                try:
                    await self.finish()
                except StreamClosedError:
                    pass
            rec.hung_up.set()

    def on_connection_close(self) -> None:
        if not self.dropped:
            self.stop()

    def stop(self) -> None:
        """End this request's work, once (a second cancel would interrupt its clean-up)."""
        if self.work and not self.stopping:
            self.stopping = True
            self.work.cancel()

    async def send(self, event: dict | None, *, r2d: bool = False) -> None:
        """Send one event (None: a keep-alive comment) and flush it. repo2docker's events
        carry their own newline, so they end with an extra blank line."""
        assert self.rec is not None
        if event is None:
            self.rec.keepalives += 1
            chunk = ":keepalive\n\n"
        else:
            self.rec.events.append(event)
            chunk = f"data: {json.dumps(event)}{chr(10) if r2d else ''}\n\n"
        await self._write(chunk.encode())

    async def _write(self, chunk: bytes) -> None:
        async with self.lock:
            try:
                self.write(chunk)
                await self.flush()
            except (StreamClosedError, RuntimeError):
                self.stop()
                raise asyncio.CancelledError from None

    async def close_with(self, event: dict) -> None:
        """BinderHub's `fail()` (or a last `ready`): one event, then the stream closes."""
        await self.send(event)
        raise _Close

    async def refuse(self, status: int, message: str = "") -> None:
        """BinderHub's send_error: one `failed` event with a status code, then it closes."""
        await self.close_with({"phase": "failed", "status_code": status,
                               "message": (message or responses[status]) + "\n"})  # fmt: skip

    async def fail_build(self, reason: str) -> None:
        """repo2docker's `failed`, then BinderHub's bare one; the stream stays open."""
        await self.send({"message": reason, "phase": "failed"}, r2d=True)
        await asyncio.sleep(self.hub.failed_delay)
        await self.send({"phase": "failed"})
        raise _Failed

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.hub.keepalive_interval)
            await self.send(None)

    async def _serve(self, provider: str, spec: str, scenario: str) -> None:
        hub = self.hub
        try:
            if scenario.startswith("replay:"):
                await self._replay(scenario.removeprefix("replay:"))
            if hub.auth_enabled:
                await self._authenticate()
            elif hub.rate_limit:  # BinderHub limits anonymous requests only (a token is ignored)
                await self._check_rate_limit()
            if provider not in PROVIDERS:
                await self.close_with({"phase": "failed",
                                       "message": f"No provider found for prefix {provider}\n"})  # fmt: skip
            self.keepalive = asyncio.ensure_future(self._keepalive())
            run = {"build": self._build, "failure": self._failure, "quiet": self._quiet,
                   "drop": self._drop, "odd": self._odd}.get(scenario)  # fmt: skip
            if run is None:  # a typo in a test shows in the stream
                await self.close_with({"phase": "failed",
                                       "message": f"Unknown scenario {scenario!r}\n"})  # fmt: skip
            await run(provider, spec)
        except _Close:
            pass
        except _Failed:
            if self.keepalive is None:
                self.keepalive = asyncio.ensure_future(self._keepalive())
            await asyncio.Event().wait()  # keep-alives only, until the client hangs up

    async def _replay(self, name: str) -> None:
        recorded = transcript(name)
        self.set_status(recorded.status)
        for key, value in recorded.headers:
            if key.lower() not in NOT_REPLAYED:
                self.set_header(key, value)
        previous = None
        for when, line in recorded.lines:
            if when is not None and previous is not None:
                await asyncio.sleep(min(max(when - previous, 0.0) / self.hub.replay_speed, 2.0))
            previous = when
            if line.startswith(b"data: "):
                self.rec.events.append(json.loads(line[6:]))
            elif line.startswith(b":"):
                self.rec.keepalives += 1
            await self._write(line)
        raise _Close if recorded.closed else _Failed

    async def _authenticate(self) -> None:
        """BinderHub with auth: no token, or one the hub does not know, is "Forbidden" (its
        login redirect becomes a 403); a known token without the scope is JupyterHub's
        "{kind} {name} is not allowed."."""
        m = AUTH.match(self.request.headers.get("Authorization", ""))
        if not m:
            await self.refuse(403)
        token = m.group(1).strip()
        if not self.hub.hub_api_url:
            if not hmac.compare_digest(token, self.hub.token or ""):
                await self.refuse(403)
            return
        import httpx

        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(self.hub.hub_api_url + "user",
                                 headers={"Authorization": f"token {token}"})  # fmt: skip
        if r.status_code != 200:
            await self.refuse(403)
        model = r.json()
        if not set(SCOPES) & set(model.get("scopes") or []):
            await self.refuse(
                403, f"{model.get('kind', 'user')} {model.get('name')} is not allowed."
            )

    async def _check_rate_limit(self) -> None:
        hub, now = self.hub, time.time()
        ip = self.request.remote_ip or ""
        count, reset = hub._rates.get(ip, (0, 0.0))
        if now >= reset:
            count, reset = 0, now + hub.rate_period
        count += 1
        hub._rates[ip] = (count, reset)
        if count > hub.rate_limit:  # BinderHub names the whole period, not what is left of it
            await self.refuse(429, f"Rate limit exceeded. Try again in {hub.rate_period} seconds.")
        self.set_header("X-Ratelimit-Remaining", str(hub.rate_limit - count))
        self.set_header("X-Ratelimit-Reset", str(int(reset)))
        self.set_header("X-Ratelimit-Limit", str(hub.rate_limit))

    async def _build(self, provider: str, spec: str) -> None:
        hub, key = self.hub, f"{provider}:{spec.rstrip('/')}"
        unresolved = {"phase": "failed", "message": f"Could not resolve ref for {key}. Double "
                      "check your URL and that your repo is public.\n"}  # fmt: skip
        try:
            repo, ref = repo_and_ref(provider, spec)
        except ValueError:
            await self.close_with(unresolved)
        if provider != "git" or urlsplit(repo).hostname not in ("127.0.0.1", "localhost"):
            # offline: GitHub, GitLab and other hosts cannot be reached from here
            await self.close_with(unresolved)
        if not SHA1.fullmatch(ref):
            rc, out = await self._exec("git", "ls-remote", "--", repo, ref, env=GIT_ENV)
            if rc:
                await self.close_with({"phase": "failed", "message": f"Error resolving ref for "
                                       f"{key}: Unable to run git ls-remote to get the "
                                       "`resolved_ref`: " + "\n".join(out) + "\n"})  # fmt: skip
            shas = [line.split()[0] for line in out if SHA1.match(line)]
            if not shas:
                await self.close_with(unresolved)
            ref = shas[0]
        image = hub.image_name(repo, ref)
        # BinderHub looks the image up first, and only then refuses build_only (a cache hit too)
        if self.rec.query.get("build_only", "").lower() == "true":
            if not hub.api_only:
                await self.refuse(400, API_ONLY)
        else:
            await self.close_with({"phase": "failed",
                                   "message": "This fake BinderHub builds only (build_only=true); "
                                   "it does not launch servers.\n"})  # fmt: skip
        if image in hub.built:
            await self.close_with({"phase": "ready", "imageName": image,
                                   "message": "Done! Found built image\n"})  # fmt: skip
        await self.send(WAITING)
        await self.send({"message": "Picked Git content provider.\n"}, r2d=True)  # no phase
        tmp = Path(tempfile.mkdtemp(prefix="fake-binderhub-"))
        try:
            checkout = tmp / "repo"
            await self.send({"message": f"Cloning into '{checkout}'...\n", "phase": "fetching"},
                            r2d=True)  # fmt: skip
            rc, out = await self._exec("git", "clone", "-q", "--no-checkout", repo, str(checkout),
                                       env=GIT_ENV)  # fmt: skip
            if rc == 0:
                rc, out = await self._exec("git", "-C", str(checkout), "reset", "-q", "--hard", ref)
            if rc:
                for line in out:
                    await self.send({"message": line + "\n", "phase": "fetching"}, r2d=True)
                await self.fail_build(f"Error during build: Command '['git', 'reset', '--hard', "
                                      f"'{ref}']' returned non-zero exit status {rc}.")  # fmt: skip
            _, head = await self._exec("git", "-C", str(checkout), "log", "-1", "--format=%h %s")
            await self.send({"message": f"HEAD is now at {head[0]}\n", "phase": "fetching"},
                            r2d=True)  # fmt: skip
            dockerfile = checkout / "binder" / "Dockerfile"
            if not dockerfile.is_file():
                await self.fail_build("This fake BinderHub builds only binder/Dockerfile")
            await self.send({"message": "Using DockerBuildPack builder\n", "phase": "building"},
                            r2d=True)  # fmt: skip
            if hub.docker is not None:
                await self._docker_build(checkout, image)
                if hub.registry is not None:
                    await self._push(image)
            else:
                await self._logged_build(dockerfile, image)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        hub.built[image] = ref
        await self.close_with({"phase": "ready", "message": "Done! Image built\n",
                               "imageName": image})  # fmt: skip

    async def _building(self, line: str) -> None:
        """One line of `docker build` output as repo2docker passes it on: a "Step" line
        without its newline, then the newline as an event of its own."""
        if line.startswith("Step "):
            await self.send({"message": line, "phase": "building"}, r2d=True)
            await self.send({"message": "\n", "phase": "building"}, r2d=True)
        else:
            await self.send({"message": line + "\n", "phase": "building"}, r2d=True)

    async def _logged_build(self, dockerfile: Path, image: str) -> None:
        """No engine: what `docker build` would have logged for the Dockerfile's steps."""
        steps = [s.strip() for s in dockerfile.read_text().splitlines()
                 if s.strip() and not s.lstrip().startswith("#")]  # fmt: skip
        layer = ""
        for n, step in enumerate(steps, 1):
            await self._building(f"Step {n}/{len(steps)} : {step}")
            layer = hashlib.sha256(f"{image} {n}".encode()).hexdigest()[:12]
            await self._building(f" ---> {layer}")
        await self._building(f"Successfully built {layer}")
        await self._building(f"Successfully tagged {image}")

    async def _docker_build(self, checkout: Path, image: str) -> None:
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder: plain output
        rc, out = await self._exec(*self._docker(), "build", "--network", "host", "-t", image,
                                   "-f", "binder/Dockerfile", "binder", cwd=checkout, env=env,
                                   on_line=self._building)  # fmt: skip
        if rc:
            why = [line for line in out if "returned a non-zero code" in line]
            await self.fail_build(why[-1] if why else
                                  f"The command 'docker build' returned a non-zero code: {rc}")  # fmt: skip

    async def _push(self, image: str) -> None:
        registry = self.hub.registry
        config = tempfile.mkdtemp(prefix="fake-binderhub-docker-")
        env = {**os.environ, "DOCKER_CONFIG": config}
        layers: dict[str, dict] = {}
        progress: dict[str, str] = {}

        async def pushing(line: str) -> None:
            m = re.match(r"([0-9a-f]{12}): (.+)", line)
            if not m:
                return
            layers[m[1]] = {"status": m[2], "progressDetail": {}, "id": m[1]}
            progress[m[1]] = m[2]
            await self.send({"message": "Pushing image\n", "progress": dict(progress),
                             "layers": dict(layers), "phase": "pushing"}, r2d=True)  # fmt: skip

        try:
            rc, out = await self._exec(*self._docker(), "login", "--username", registry.user,
                                       "--password-stdin", registry.address, env=env,
                                       input=registry.password.encode())  # fmt: skip
            if rc == 0:
                rc, out = await self._exec(*self._docker(), "push", image, env=env,
                                           on_line=pushing)  # fmt: skip
            if rc:
                await self.fail_build("\n".join(out))
        finally:
            shutil.rmtree(config, ignore_errors=True)
        await self.send({"message": f"Successfully pushed {image}", "phase": "pushing"}, r2d=True)
        await self._exec(*self._docker(), "rmi", image)  # clients must pull it from the registry

    def _docker(self) -> list[str]:
        return ["docker", "-H", self.hub.docker.host]

    async def _exec(self, *argv: str, cwd: Path | None = None, env: dict | None = None,
                    input: bytes | None = None, on_line=None) -> tuple[int, list[str]]:  # fmt: skip
        """Run a command (killed if this request ends first): exit code and output lines."""
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=DEVNULL if input is None else PIPE,
            stdout=PIPE, stderr=STDOUT)  # fmt: skip
        lines = []
        try:
            if input is not None:
                proc.stdin.write(input)
                await proc.stdin.drain()
                proc.stdin.close()
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                lines.append(line)
                if on_line is not None:
                    await on_line(line)
            return await proc.wait(), lines
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _failure(self, provider: str, spec: str) -> None:
        """A build whose Dockerfile step fails, as 04-bad-build.txt shows it."""
        await self.send(WAITING)
        await self.send({"message": "Picked Git content provider.\n"}, r2d=True)
        await self.send({"message": "Using DockerBuildPack builder\n", "phase": "building"},
                        r2d=True)  # fmt: skip
        for line in ("Step 1/2 : FROM buildpack-deps", " ---> 77178ce779ae",
                     "Step 2/2 : RUN pip install nonexistent", " ---> Running in a459fc430c31",
                     "ERROR: No matching distribution found for nonexistent",
                     "Removing intermediate container a459fc430c31"):  # fmt: skip
            await self._building(line)
        await self.fail_build("The command '/bin/sh -c pip install nonexistent' returned a "
                              "non-zero code: 1")  # fmt: skip

    async def _quiet(self, provider: str, spec: str) -> None:
        await self.send(WAITING)
        raise _Failed  # nothing more but keep-alives

    async def _drop(self, provider: str, spec: str) -> None:
        await self.send(WAITING)
        await self._building("Step 1/2 : FROM buildpack-deps")
        await self._building("Step 2/2 : RUN make")
        self.dropped = self.rec.closed_by_server = True
        self.request.connection.stream.close()  # mid-response: no final chunk

    async def _odd(self, provider: str, spec: str) -> None:
        """What the protocol allows though the recorded BinderHub did not send it: capitalised
        and unknown phases, events without a message, a keep-alive mid-stream."""
        try:
            image = self.hub.image_name(*repo_and_ref(provider, spec))
        except ValueError:
            image = self.hub.image_prefix + "unknown:latest"
        for event in (WAITING, {"message": "no phase here\n"},
                      {"phase": "Fetching", "message": "capitalised\n"},
                      {"phase": "some-new-phase", "message": "unknown phase\n"},
                      {"phase": "unknown"}, {"phase": "building"}, None):  # fmt: skip
            await self.send(event)
        await self.close_with({"phase": "READY", "message": "Done! Found built image\n",
                               "imageName": image})  # fmt: skip


class OutsideHandler(tornado.web.RequestHandler):
    """A path outside the BinderHub: behind a JupyterHub, its prefix redirect to /hub/...
    (a wrong binderhub_url gets a 302, not a 404); a BinderHub on its own: 404."""

    def initialize(self, hub: FakeBinderHub) -> None:
        self.hub = hub

    def prepare(self) -> None:
        if not self.hub.hub_in_front:
            raise tornado.web.HTTPError(404)
        self.redirect("/hub" + self.request.uri, status=302)


class JSONHandler(tornado.web.RequestHandler):
    def initialize(self, answer) -> None:
        self.answer = answer

    def get(self) -> None:
        status, body = self.answer()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


class FakeBinderHub:
    failed_delay = 0.05  # between repo2docker's `failed` and BinderHub's bare one (real: ~1 s)
    replay_speed = 20.0  # a transcript's pauses are this many times shorter (each at most 2 s)

    def __init__(self, *, token: str | None = None, api_only: bool = True,
                 docker: DockerDaemon | None = None, registry: Registry | None = None,
                 image_prefix: str = "binder-", keepalive_interval: float = 0.3,
                 base_url: str = "/services/binder/", hub_in_front: bool | None = None,
                 rate_limit: int = 0, rate_period: int = 3600) -> None:  # fmt: skip
        self.token, self.api_only = token, api_only
        # set: tokens are checked with this JupyterHub's API (.../hub/api/), as BinderHub does
        self.hub_api_url: str | None = None
        self.docker, self.registry = docker, registry
        self.image_prefix, self.keepalive_interval = image_prefix, keepalive_interval
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self.hub_in_front = (self.base_url.startswith("/services/") if hub_in_front is None
                             else hub_in_front)  # fmt: skip
        self.rate_limit, self.rate_period = rate_limit, rate_period
        self._rates: dict[str, tuple[int, float]] = {}
        self.url = ""
        self.scenarios: list[str] = []
        self.default_scenario = "build"
        self.healthy = True
        self.requests: list[BuildRequest] = []
        self.built: dict[str, str] = {}
        self._handlers: set[BuildHandler] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: HTTPServer | None = None
        self._started = threading.Event()

    @property
    def auth_enabled(self) -> bool:
        return bool(self.token or self.hub_api_url)

    def image_name(self, repo_url: str, ref: str) -> str:
        """image_prefix + escaped build slug (the git provider's: the URL) + "-" + 6 hex digits
        of its sha256 + ":" + ref, lower-cased, as BinderHub's _safe_build_slug."""
        safe = set(string.ascii_letters + string.digits)
        escaped = "".join(c if c in safe else "".join(f"-{b:02x}" for b in c.encode())
                          for c in repo_url)  # fmt: skip
        limit = 255 - len(self.image_prefix)
        slug = f"{escaped[: limit - 7]}-{hashlib.sha256(repo_url.encode()).hexdigest()[:6]}"
        prefix = f"{self.registry.address}/" if self.registry is not None else ""
        return f"{prefix}{self.image_prefix}{slug}:{ref}".replace("_", "-").lower()

    def start(self) -> FakeBinderHub:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fake-binderhub", daemon=True)
        self._thread.start()
        if not self._started.wait(10) or not self.url:
            raise RuntimeError("the fake BinderHub did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._listen())
        finally:
            self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _listen(self) -> None:
        base = re.escape(self.base_url)
        providers = [{"id": k, "displayName": v} for k, v in PROVIDERS.items()]
        checks = lambda: [{"service": "Docker registry", "ok": self.healthy},  # noqa: E731
                          {"service": "Pod quota", "ok": True}]  # fmt: skip
        app = tornado.web.Application([
            (base + r"build/([^/]+)/(.+)", BuildHandler, {"hub": self}),
            (base + "health", JSONHandler, {"answer": lambda: (
                200 if self.healthy else 503, {"ok": self.healthy, "checks": checks()})}),
            (base + "versions", JSONHandler, {"answer": lambda: (
                200, {"builder_info": {"repo2docker-version": "fake"}, "binderhub": "fake-1.0"})}),
            (base + "api/repoproviders", JSONHandler, {"answer": lambda: (200, providers)}),
        ], default_handler_class=OutsideHandler, default_handler_args={"hub": self},
           log_function=lambda handler: None)  # fmt: skip
        sockets = bind_sockets(0, "127.0.0.1")
        self._server = HTTPServer(app)
        self._server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}{self.base_url}"

    def wait_hangup(self, index: int = -1, timeout: float = 10) -> bool:
        """Wait until that request's connection is closed (by the client, or the server ended)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                rec = self.requests[index]
                break
            except IndexError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
        return rec.hung_up.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(20)
        except Exception:  # noqa: S110 - closing anyway
            pass
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(20)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.stop()
        works = [h.work for h in self._handlers if h.work]
        for handler in list(self._handlers):  # kills running builds (see _exec)
            handler.stop()
        await asyncio.gather(*works, return_exceptions=True)
        if self._server is not None:
            await asyncio.wait_for(self._server.close_all_connections(), 10)
