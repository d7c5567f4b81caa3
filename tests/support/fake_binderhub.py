"""A fake BinderHub for the tests: a test double of BinderHub's build API, not of our code.

It behaves as /work/shared/BINDERHUB_PROTOCOL.md says BinderHub does, awkward parts included:
errors are events in an HTTP 200 event stream; after a failure the stream stays open with only
keep-alives until the client hangs up; some events have no phase or no message; phases may be
capitalised. A Tornado app in its own thread and event loop, on 127.0.0.1, under a base URL
(/services/binder/, as when BinderHub is a JupyterHub service).

Each build request takes the next of `scenarios` (else `default_scenario`): "build" (resolve the
ref, clone, `docker build` binder/Dockerfile, push to the registry and remove the local image),
"failure", "rate-limit", "quiet", "drop", "html" or "odd". A client that hangs up stops the
build here (on Kubernetes it would go on).
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
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

if TYPE_CHECKING:
    from .docker import DockerDaemon, Registry

PROVIDERS = {"gh": "GitHub", "gl": "GitLab", "git": "Git repository"}
SHA1 = re.compile(r"[0-9a-f]{40}")
AUTH = re.compile(r"(?:token|bearer)\s+(.+)", re.IGNORECASE)  # as JupyterHub reads it
API_ONLY = ("Building but not launching is not permitted when the API only mode was not enabled "
            "by setting `enable_api_only_mode` to True. ")  # fmt: skip
LOGIN_PAGE = ('<!DOCTYPE html>\n<html><head><title>JupyterHub</title></head><body>\n'
              '<form action="/hub/login?next=" method="post" role="form">\n'
              '<input id="username_input" name="username"><input type="password" name="password">'
              '\n<button type="submit">Sign in</button></form></body></html>\n')  # fmt: skip
SCOPE = "access:services!service=binder"  # what BinderHub asks of a token (auth_enabled)
WAITING = {"phase": "waiting", "message": "Waiting for build to start...\n"}
GIT_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "http"}


@dataclass
class BuildRequest:
    path: str  # provider_prefix/spec as requested (still quoted)
    provider: str
    spec: str
    query: dict[str, str]
    headers: dict[str, str]
    scenario: str
    events: list[dict] = field(default_factory=list)  # every event sent, in order
    keepalives: int = 0
    hung_up: threading.Event = field(default_factory=threading.Event)  # or the server finished
    closed_by_server: bool = False


class _Failed(Exception):
    """A failure was sent: from now on only keep-alives, until the client hangs up."""


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
        self.work: asyncio.Future | None = None
        self.lock = asyncio.Lock()  # one flush at a time: Tornado loses concurrent ones
        self.last_write = time.monotonic()
        self.dropped = self.stopping = False

    async def get(self, _provider: str, _spec: str) -> None:
        hub = self.hub
        # Tornado unquotes path arguments; like BinderHub, read the spec from the raw path
        path = self.request.path[len(hub.base_url + "build/") :]
        provider, _, spec = path.partition("/")
        query = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        headers = dict(self.request.headers)
        if self.request.headers.get("Accept", "").split(";")[0].strip() != "text/event-stream":
            rec = BuildRequest(path, provider, spec, query, headers, "bad-accept")
            rec.closed_by_server = True
            rec.hung_up.set()
            hub.requests.append(rec)
            self.send_error(400)  # BinderHub's HTML error page, not an event
            return
        scenario = hub.scenarios.pop(0) if hub.scenarios else hub.default_scenario
        self.rec = rec = BuildRequest(path, provider, spec, query, headers, scenario)
        hub.requests.append(rec)
        if scenario == "html":  # e.g. JupyterHub's login page instead of BinderHub
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            rec.closed_by_server = True
            rec.hung_up.set()
            self.finish(LOGIN_PAGE)
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache, no-store, must-revalidate")
        hub._handlers.add(self)
        keepalive = asyncio.ensure_future(self._keepalive())
        self.work = asyncio.ensure_future(self._serve(provider, spec, scenario))
        try:
            await self.work
        except (asyncio.CancelledError, StreamClosedError):
            pass
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
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

    async def send(self, event: dict | None) -> None:
        """Send one event (None: a keep-alive comment) and flush it."""
        if event is None:
            self.rec.keepalives += 1
            chunk = ":keepalive\n\n"
        else:
            self.rec.events.append(event)
            chunk = f"data: {json.dumps(event)}\n\n"
        async with self.lock:
            self.last_write = time.monotonic()
            try:
                self.write(chunk)
                await self.flush()
            except (StreamClosedError, RuntimeError):
                self.stop()
                raise asyncio.CancelledError from None

    async def fail(self, *events: dict) -> None:
        for event in events:
            await self.send(event)
        raise _Failed

    async def _keepalive(self) -> None:
        interval = self.hub.keepalive_interval
        while True:
            await asyncio.sleep(max(0.0, self.last_write + interval - time.monotonic()))
            if time.monotonic() - self.last_write >= interval:
                await self.send(None)

    async def _serve(self, provider: str, spec: str, scenario: str) -> None:
        hub = self.hub
        try:
            if (hub.token or hub.hub_api_url) and not await self._authorized():
                await self.fail({"phase": "failed", "status_code": 403, "message": "Forbidden\n"})
            if provider not in PROVIDERS:
                await self.fail({"phase": "failed",
                                 "message": f"No provider found for prefix {provider}\n"})  # fmt: skip
            if self.rec.query.get("build_only", "").lower() == "true" and not hub.api_only:
                await self.fail({"phase": "failed", "status_code": 400, "message": API_ONLY})
            run = {"build": self._build, "failure": self._failure, "rate-limit": self._rate_limit,
                   "quiet": self._quiet, "drop": self._drop, "odd": self._odd}.get(scenario)  # fmt: skip
            if run is None:  # a typo in a test shows in the stream
                await self.fail({"phase": "failed", "message": f"Unknown scenario {scenario!r}\n"})
            await run(provider, spec)
        except _Failed:
            await asyncio.Event().wait()  # keep-alives only, until the client hangs up

    async def _authorized(self) -> bool:
        m = AUTH.match(self.request.headers.get("Authorization", ""))
        if not m:
            return False
        if not self.hub.hub_api_url:
            return hmac.compare_digest(m.group(1).strip(), self.hub.token or "")
        # BinderHub with auth_enabled: the hub says whose token it is and what it may do
        import httpx

        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(self.hub.hub_api_url + "user",
                                 headers={"Authorization": f"token {m.group(1).strip()}"})  # fmt: skip
        return r.status_code == 200 and SCOPE in (r.json().get("scopes") or [])

    async def _build(self, provider: str, spec: str) -> None:
        hub, key = self.hub, f"{provider}:{spec}"
        unresolved = (f"Could not resolve ref for {key}. Double check your URL and that the ref "
                      "exists.\n")  # fmt: skip
        try:
            repo, ref = repo_and_ref(provider, spec)
        except ValueError:
            await self.fail({"phase": "failed", "message": unresolved})
        if provider != "git" or urlsplit(repo).hostname not in ("127.0.0.1", "localhost"):
            # offline: GitHub, GitLab and other hosts cannot be reached from here
            await self.fail({"phase": "failed", "message": unresolved})
        if not SHA1.fullmatch(ref):
            rc, out = await self._exec("git", "ls-remote", "--", repo, ref, env=GIT_ENV)
            if rc:
                await self.fail({"phase": "failed", "message": f"Error resolving ref for {key}: "
                                 "Unable to run git ls-remote to get the `resolved_ref`: "
                                 + "\n".join(out) + "\n"})  # fmt: skip
            shas = [line.split()[0] for line in out if SHA1.match(line)]
            if not shas:
                await self.fail({"phase": "failed", "message": unresolved})
            ref = shas[0]
        image = hub.image_name(repo, ref)
        await self.send(WAITING)
        if image in hub.built:
            await self.send({"phase": "ready", "message": "Done! Found built image\n",
                             "imageName": image})  # fmt: skip
            await asyncio.sleep(hub.finish_delay)
            return
        await self.send({"phase": "fetching", "message": f"Fetching {repo} at {ref}\n"})
        await self.send({"message": "Using DockerBuildPack builder\n"})  # no phase
        tmp = Path(tempfile.mkdtemp(prefix="fake-binderhub-"))
        try:
            checkout = tmp / "repo"
            rc, out = await self._exec("git", "clone", "-q", "--no-checkout", repo, str(checkout),
                                       env=GIT_ENV)  # fmt: skip
            if rc == 0:
                rc, out = await self._exec("git", "-C", str(checkout), "checkout", "-q", ref)
            if rc:
                await self.fail({"phase": "failure", "message": "\n".join(out) + "\n"},
                                {"phase": "failed"})  # fmt: skip
            if not (checkout / "binder" / "Dockerfile").is_file():
                await self.fail({"phase": "failed",
                                 "message": "This fake BinderHub builds only binder/Dockerfile\n"})  # fmt: skip
            if hub.docker is not None:
                await self._docker_build(checkout, image)
                if hub.registry is not None:
                    await self._push(image)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        hub.built[image] = ref
        await self.send({"phase": "ready", "message": "Done! Image built\n", "imageName": image})
        await asyncio.sleep(hub.finish_delay)

    async def _docker_build(self, checkout: Path, image: str) -> None:
        odd_sent = False

        async def building(line: str) -> None:
            nonlocal odd_sent
            await self.send({"phase": "Building", "message": line + "\n"})
            if not odd_sent:  # what BinderHub makes of a builder's non-JSON and empty lines
                odd_sent = True
                await self.send(
                    {"phase": "unknown", "message": "a non-JSON line from the builder\n"}
                )
                await self.send({"phase": "unknown"})

        env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder: plain output
        rc, out = await self._exec(*self._docker(), "build", "--network", "host", "-t", image,
                                   "-f", "binder/Dockerfile", "binder", cwd=checkout, env=env,
                                   on_line=building)  # fmt: skip
        if rc:
            why = [line for line in out if "returned a non-zero code" in line]
            why = why[-1] if why else f"The command 'docker build' returned a non-zero code: {rc}"
            await self.fail({"phase": "failure", "message": why + "\n"}, {"phase": "failed"})

    async def _push(self, image: str) -> None:
        registry = self.hub.registry
        config = tempfile.mkdtemp(prefix="fake-binderhub-docker-")
        env = {**os.environ, "DOCKER_CONFIG": config}
        layers: dict[str, str] = {}
        progress: dict[str, int] = {}

        async def pushing(line: str) -> None:
            m = re.match(r"([0-9a-f]{12}): (.+)", line)
            if m:
                layers[m[1]] = m[2]
                progress[m[1]] = 100 if m[2] in ("Pushed", "Layer already exists") else 0
            await self.send({"phase": "pushing", "message": "Pushing image\n",
                             "progress": dict(progress), "layers": dict(layers)})  # fmt: skip

        try:
            rc, out = await self._exec(*self._docker(), "login", "--username", registry.user,
                                       "--password-stdin", registry.address, env=env,
                                       input=registry.password.encode())  # fmt: skip
            if rc == 0:
                rc, out = await self._exec(*self._docker(), "push", image, env=env,
                                           on_line=pushing)  # fmt: skip
            if rc:
                await self.fail({"phase": "failure", "message": "\n".join(out) + "\n"},
                                {"phase": "failed"})  # fmt: skip
        finally:
            shutil.rmtree(config, ignore_errors=True)
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
        await self.send(WAITING)
        await self.send({"phase": "building", "message": "Step 1/5 : FROM buildpack-deps\n"})
        await self.send({"phase": "building", "message": "Step 2/5 : COPY . /srv\n"})
        await self.fail({"phase": "failure", "message": "Step 3/5 : RUN pip install nonexistent\n"
                         "ERROR: No matching distribution found for nonexistent\n"},
                        {"phase": "failed"})  # fmt: skip

    async def _rate_limit(self, provider: str, spec: str) -> None:
        await self.fail({"phase": "failed", "status_code": 429,
                         "message": "Rate limit exceeded. Try again in 2400 seconds.\n"})  # fmt: skip

    async def _quiet(self, provider: str, spec: str) -> None:
        await self.send(WAITING)
        raise _Failed  # nothing more but keep-alives

    async def _drop(self, provider: str, spec: str) -> None:
        await self.send(WAITING)
        await self.send({"phase": "building", "message": "Step 1/2 : FROM buildpack-deps\n"})
        await self.send({"phase": "building", "message": "Step 2/2 : RUN make\n"})
        self.dropped = self.rec.closed_by_server = True
        self.request.connection.stream.close()  # mid-response: no final chunk

    async def _odd(self, provider: str, spec: str) -> None:
        try:
            image = self.hub.image_name(*repo_and_ref(provider, spec))
        except ValueError:
            image = self.hub.image_prefix + "unknown:latest"
        for event in (WAITING, {"message": "no phase here\n"},
                      {"phase": "Fetching", "message": "capitalised\n"},
                      {"phase": "some-new-phase", "message": "unknown phase\n"},
                      {"phase": "unknown"}, {"phase": "building"}, None,
                      {"phase": "READY", "message": "Done! Found built image\n",
                       "imageName": image}):  # fmt: skip
            await self.send(event)


class JSONHandler(tornado.web.RequestHandler):
    def initialize(self, answer) -> None:
        self.answer = answer

    def get(self) -> None:
        status, body = self.answer()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


class FakeBinderHub:
    finish_delay = 1.0  # how long a successful stream stays open after "ready"

    def __init__(self, *, token: str | None = None, api_only: bool = True,
                 docker: DockerDaemon | None = None, registry: Registry | None = None,
                 image_prefix: str = "binder-", keepalive_interval: float = 0.3,
                 base_url: str = "/services/binder/") -> None:  # fmt: skip
        self.token, self.api_only = token, api_only
        # set: tokens are checked with this JupyterHub's API (.../hub/api/), as BinderHub does
        self.hub_api_url: str | None = None
        self.docker, self.registry = docker, registry
        self.image_prefix, self.keepalive_interval = image_prefix, keepalive_interval
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
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

    def image_name(self, repo_url: str, ref: str) -> str:
        """image_prefix + escaped URL + "-" + short hash + ":" + ref, lower-cased, as BinderHub."""
        safe = set(string.ascii_letters + string.digits)
        slug = "".join(c if c in safe else "".join(f"-{b:02x}" for b in c.encode())
                       for c in repo_url)  # fmt: skip
        slug = f"{slug[:200]}-{hashlib.sha256(repo_url.encode()).hexdigest()[:8]}"
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
        ], log_function=lambda handler: None)  # fmt: skip
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
