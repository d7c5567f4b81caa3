"""The binderhub backend: a BinderHub builds the image, through its HTTP build API.

The client follows BinderHub's protocol (README, "The BinderHub backend"): one
`GET {binderhub_url}build/{provider}/{spec}?build_only=true` answered by a server-sent event
stream whose events carry the build log; `ready` gives the image's name. Its awkward parts:

- errors are events, not HTTP statuses: a refusal (403, 429, an unknown provider, a ref that
  does not resolve, `build_only` without API-only mode) is one `failed` event, then BinderHub
  closes the stream; a failed build is repo2docker's `failed` event with the reason, then a bare
  `failed`, then keep-alives forever: the client treats `failure`/`failed` as terminal and
  hangs up itself;
- a cache hit is a single `ready` event; events may lack a phase or a message; Docker's "Step"
  lines come without their newline, which follows as an event of its own (dropped here);
- without a token BinderHub rate-limits per address (429 as an event); a BinderHub without
  auth ignores a token, so a token does not lift its limit;
- behind a JupyterHub, a wrong `binderhub_url` is a 302 to the hub's pages, not a 404;
- a connection can drop mid-build: the client reconnects (with back-off) for dropped
  connections and 5xx answers, never for a build that failed. A new request does not join the
  build it left: BinderHub's local executor starts the build again (Docker's layer cache makes
  the repeat quicker); a Kubernetes BinderHub re-attaches to a build still running.
(support/binderhub-transcripts/ in the tests holds what a real BinderHub sent.)

The BinderHub fetches the repository itself, at the commit being built: the runtime key
still hashes only the runtime files, so one image serves every commit with the same runtime
files. Books and servers run on the image with a Docker engine (`docker_host`), which pulls
it from BinderHub's registry when it is not there (`registry_username`/`registry_password`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
from traitlets import Float, Instance, Int, List, Unicode, default, validate

from .. import docker_engine as de
from ..sandbox import Sandbox
from .base import Builder, BuiltRuntime
from .runtime import RuntimeError_, RuntimeFiles

if TYPE_CHECKING:
    from ..jobs import JobContext

SSE = "text/event-stream"
# phases after which BinderHub sends nothing but keep-alives
FAILED = frozenset({"failure", "failed"})
# build-only success is `ready`; a BinderHub that launched anyway says `built` first
DONE = frozenset({"ready", "built"})
# phases worth showing as the job's stage
STAGES = {"waiting": "waiting for BinderHub", "fetching": "BinderHub fetching the repository",
          "building": "BinderHub building the image", "pushing": "BinderHub pushing the image"}  # fmt: skip
RETRY_AFTER = re.compile(r"(\d+)\s*seconds?")
# Docker's bookkeeping lines, left out of the last lines a failure quotes
NOISE = (" ---> ", "Removing intermediate container")
WRONG_URL = ("check c.BinderHubBuilder.binderhub_url (a BinderHub run as a hub service is at "
             "https://HUB/services/binder/).")  # fmt: skip


class BinderHubError(Exception):
    """The build cannot go on; `transient` errors are worth a reconnect."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass
class Event:
    data: dict[str, Any]

    @property
    def phase(self) -> str:
        value = self.data.get("phase")
        return value.lower() if isinstance(value, str) else ""

    @property
    def message(self) -> str:
        value = self.data.get("message")
        return value if isinstance(value, str) else ""


@dataclass
class BuildOutcome:
    image: str
    cached: bool


def provider_spec(repository: str, commit: str, gitlab_hosts: list[str]) -> tuple[str, str]:
    """(provider prefix, spec) for a repository URL at a commit: gh, gl or git."""
    parts = urlsplit(repository)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RuntimeError_(
            f"A BinderHub cannot fetch {repository}: it needs an http(s) URL it can reach. "
            "Local paths work only with the local and docker builders."
        )
    path = parts.path.strip("/").removesuffix(".git")
    segments = path.split("/")
    host = parts.hostname.lower()
    if host == "github.com" and len(segments) == 2 and parts.port is None:
        return "gh", f"{segments[0]}/{segments[1]}/{commit}"
    if host in gitlab_hosts and len(segments) >= 2 and parts.port is None:
        return "gl", f"{quote(path, safe='')}/{commit}"
    return "git", f"{quote(repository, safe='')}/{commit}"


async def events(
    response: httpx.Response, on_keepalive: Callable[[], None]
) -> AsyncIterator[Event]:
    """The events of a server-sent event stream (data lines joined; comments are keep-alives)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            on_keepalive()
            continue
        if line == "":
            if data:
                text, data = "\n".join(data), []
                try:
                    payload = json.loads(text)
                except ValueError:
                    payload = {"message": text}
                yield Event(payload if isinstance(payload, dict) else {"message": text})
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:  # a last event without its blank line: the stream was cut
        raise httpx.RemoteProtocolError("the event stream ended in the middle of an event")


class BinderHubClient:
    """One BinderHub's build API and health check, with its token."""

    def __init__(self, url: str, token: str, *, idle_timeout: float, read_timeout: float,
                 retries: int, backoff: float) -> None:  # fmt: skip
        self.url = url if url.endswith("/") else url + "/"
        self.token = token
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff

    def _headers(self) -> dict[str, str]:
        # exactly this Accept: BinderHub refuses a list of types
        headers = {"Accept": SSE}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def health(self) -> dict[str, Any]:
        """BinderHub's /health (and version), or why it cannot be had."""
        out: dict[str, Any] = {"url": self.url}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.get(self.url + "health")
                try:
                    body = r.json()
                except ValueError:
                    body = None
                if not isinstance(body, dict) or "ok" not in body:
                    out.update(ok=False, error=f"{self.url}health answered HTTP {r.status_code} "
                               "without BinderHub's health report: is binderhub_url right?")  # fmt: skip
                    return out
                out.update(ok=bool(body["ok"]), checks=body.get("checks") or [])
                try:
                    v = await client.get(self.url + "versions")
                    out["version"] = v.json().get("binderhub")
                except (httpx.HTTPError, ValueError, AttributeError):
                    pass
        except httpx.HTTPError as e:
            out.update(ok=False, error=f"Cannot reach the BinderHub at {self.url}: {_why(e)}")
        return out

    async def build(self, prefix: str, spec: str, say: Callable[[str], None],
                    on_phase: Callable[[str], Any]) -> BuildOutcome:  # fmt: skip
        """Build (or find) the image; every event's message goes to `say` as it arrives."""
        outcome = BuildOutcome("", False)
        url = f"{self.url}build/{prefix}/{spec}"
        attempt = 0
        while True:
            try:
                await self._stream(url, outcome, say, on_phase)
                return outcome
            except BinderHubError as e:
                if not e.transient or attempt >= self.retries:
                    if e.transient:
                        raise BinderHubError(f"{e} Gave up after {attempt + 1} attempts.") from None
                    raise
                delay = self.backoff * 2**attempt
                attempt += 1
                # a new request is a new build on BinderHub's local executor (its log starts
                # over); only a Kubernetes BinderHub re-attaches to the build still running
                say(f"!! {e} Reconnecting in {delay:g} s (attempt {attempt + 1} of "
                    f"{self.retries + 1}): BinderHub starts the build again (Docker's cache "
                    "makes the steps already done quick; a BinderHub on Kubernetes rejoins the "
                    "running build), so its log may repeat.")  # fmt: skip
                await asyncio.sleep(delay)

    async def _stream(self, url: str, outcome: BuildOutcome, say: Callable[[str], None],
                      on_phase: Callable[[str], Any]) -> None:  # fmt: skip
        timeout = httpx.Timeout(30.0, read=self.read_timeout)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client, client.stream(
                "GET", url, params={"build_only": "true"}, headers=self._headers()
            ) as r:  # fmt: skip
                self._check_answer(r)
                last_event = time.monotonic()

                def keepalive() -> None:
                    if time.monotonic() - last_event > self.idle_timeout:
                        raise BinderHubError(
                            f"BinderHub sent nothing but keep-alives for {self.idle_timeout:g} s "
                            f"(c.BinderHubBuilder.idle_timeout): the build is stuck, or waits "
                            "for resources it does not get. Ask the BinderHub's operator."
                        )

                phase = ""
                recent: list[str] = []  # the last few lines, quoted if the build fails
                async for event in events(r, keepalive):
                    last_event = time.monotonic()
                    # the stage's header before its first line
                    if event.phase and event.phase != phase and event.phase in STAGES:
                        phase = event.phase
                        await on_phase(STAGES[phase])
                    text = event.message.rstrip("\n")
                    # Docker's "Step" lines come without a newline, which then comes alone
                    if text.strip():
                        say(text)
                    if event.phase in FAILED:
                        # BinderHub never closes a failed stream: leaving this block hangs up
                        raise BinderHubError(_failure(event, bool(self.token), recent))
                    if text.strip() and not text.startswith(NOISE):
                        recent = [*recent[-2:], text.strip()[:300]]
                    if event.phase in DONE:
                        image = event.data.get("imageName")
                        if not isinstance(image, str) or not image:
                            raise BinderHubError(
                                f"BinderHub said {event.phase!r} without the image's name "
                                "(imageName); it may not be a BinderHub with API-only mode."
                            )
                        outcome.image = image
                        outcome.cached = "found built image" in event.message.lower()
                        return
                raise BinderHubError("BinderHub closed the stream before the build ended.",
                                     transient=True)  # fmt: skip
        except httpx.TimeoutException as e:
            raise BinderHubError(
                f"BinderHub sent nothing, not even a keep-alive, for {self.read_timeout:g} s "
                f"({type(e).__name__}).",
                transient=True,
            ) from None
        except httpx.TransportError as e:
            raise BinderHubError(f"The connection to BinderHub at {self.url} failed: {_why(e)}.",
                                 transient=True) from None  # fmt: skip

    def _check_answer(self, r: httpx.Response) -> None:
        kind = r.headers.get("content-type", "").split(";")[0].strip().lower()
        if r.status_code >= 500:
            raise BinderHubError(f"BinderHub answered HTTP {r.status_code}.", transient=True)
        if r.status_code in (401, 403):
            raise BinderHubError(
                f"BinderHub (or the hub in front of it) refused the request with HTTP "
                f"{r.status_code}: check the token (c.BinderHubBuilder.token)."
            )
        if r.status_code == 404:
            raise BinderHubError(f"There is no BinderHub build API at {self.url} (HTTP 404): "
                                 + WRONG_URL)  # fmt: skip
        if r.is_redirect:
            # a JupyterHub in front sends paths it has no service for to its own pages
            where = r.headers.get("location", "")[:200]
            raise BinderHubError(
                f"There is no BinderHub build API at {self.url}: it redirects (HTTP "
                f"{r.status_code}) to {where or 'elsewhere'}, as a JupyterHub does for a "
                "service it does not have. " + WRONG_URL[0].upper() + WRONG_URL[1:]
            )
        if r.status_code != 200:
            raise BinderHubError(f"BinderHub refused the request with HTTP {r.status_code}.")
        if kind != SSE:
            raise BinderHubError(
                f"{self.url} did not answer with an event stream but with {kind or 'no type'} "
                "(a login page, or not a BinderHub?): check c.BinderHubBuilder.binderhub_url "
                "and the token."
            )


def _failure(event: Event, token_sent: bool, recent: list[str]) -> str:
    """A specific message for each way BinderHub refuses or fails a build."""
    said = event.message.strip()
    code = event.data.get("status_code")
    if code == 429:
        m = RETRY_AFTER.search(said)
        later = f" in {m.group(1)} s" if m else " later"
        if token_sent:
            # BinderHub lifts its limit only for users of a hub it authenticates with
            how = ("The token did not lift the limit: this BinderHub does not authenticate "
                   "(c.BinderHub.auth_enabled is off), so it limits each address. Its operator "
                   "can raise c.RateLimiter.limit, or turn on auth_enabled.")  # fmt: skip
        else:
            how = ("Or give the service a token (c.BinderHubBuilder.token) for a BinderHub "
                   "with auth_enabled: requests it authenticates are not rate-limited.")  # fmt: skip
        return (
            f"BinderHub's rate limit stopped the build ({said or '429'}). Try again{later}. {how}"
        )
    if code == 403:
        scope = "access:services!service=binder"
        if not token_sent:
            return (f"BinderHub requires a token (403 {said or 'Forbidden'}): give the service "
                    f"a JupyterHub token with the scope {scope} (c.BinderHubBuilder.token, or "
                    "NEUROLIBRE_BINDERHUB_TOKEN).")  # fmt: skip
        if said.lower() in ("", "forbidden"):
            return (f"BinderHub refused the token (403 Forbidden): it is not a token of the "
                    f"BinderHub's JupyterHub, or it has expired. It needs a JupyterHub token "
                    f"with the scope {scope} (see the README).")  # fmt: skip
        # JupyterHub's own reason, e.g. "service neurolibre is not allowed." (no scope)
        return (f"BinderHub refused the token (403): {said} The token's owner needs the scope "
                f"{scope} on the BinderHub's JupyterHub (see the README).")  # fmt: skip
    if code == 400 and "not permitted" in said:
        return ("This BinderHub does not build without launching: its operator must set "
                "c.BinderHub.enable_api_only_mode = True. BinderHub said: " + said)  # fmt: skip
    last = f" Its last lines: {' | '.join(recent)}" if recent else ""
    if said:
        return f"BinderHub's build failed: {said}{'.' if said[-1:].isalnum() else ''}{last}"
    return (f"BinderHub's build failed without saying why.{last}" if last
            else "BinderHub's build failed without saying why.")  # fmt: skip


def _why(e: Exception) -> str:
    return str(e) or type(e).__name__


class BinderHubBuilder(Builder):
    backend = "binderhub"

    # given to every builder by the service; a BinderHub needs none of them
    environments_dir = Unicode(help="Unused by this builder (set by the service).")
    uv_cache_dir = Unicode(help="Unused by this builder (set by the service).")
    sandbox = Instance(Sandbox, allow_none=True, help="Unused: the BinderHub builds.")
    hub_version = Unicode(help="The hub's version (set by the service).")

    binderhub_url = Unicode(
        help="""The BinderHub's base URL, e.g. https://hub.example.org/services/binder/ when it
        runs as a service of a JupyterHub. Required with builder = binderhub.""",
    ).tag(config=True)

    @validate("binderhub_url")
    def _valid_url(self, proposal) -> str:
        value = proposal["value"].strip()
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(f"binderhub_url {value!r}: use http(s)://host/path/")
        if parts.username or parts.password:
            raise ValueError("binderhub_url: no credentials in the URL; set the token")
        return value if value.endswith("/") or not value else value + "/"

    token = Unicode(
        help="""Token sent as 'Authorization: Bearer'. Default: NEUROLIBRE_BINDERHUB_TOKEN,
        else this service's own hub token (JUPYTERHUB_API_TOKEN), which works when the
        BinderHub is a service of the same hub and this service's role has the scope
        access:services!service=binder. Empty: no token (BinderHub's rate limit applies).""",
    ).tag(config=True)

    @default("token")
    def _default_token(self) -> str:
        return os.environ.get("NEUROLIBRE_BINDERHUB_TOKEN") or os.environ.get(
            "JUPYTERHUB_API_TOKEN", ""
        )

    gitlab_hosts = List(
        Unicode(), ["gitlab.com"],
        help="Hosts whose repositories go to BinderHub's GitLab provider (gl); others: git.",
    ).tag(config=True)  # fmt: skip
    idle_timeout = Float(
        900.0,
        help="""Seconds BinderHub may send nothing but keep-alives before the build is given
        up as stuck (a real build logs far more often).""",
    ).tag(config=True)
    read_timeout = Float(
        90.0,
        help="""Seconds without a byte (BinderHub sends a keep-alive every 25 s) before the
        connection is taken as dropped and re-opened.""",
    ).tag(config=True)
    retries = Int(4, help="Reconnections after a dropped connection or a 5xx answer.").tag(
        config=True
    )
    retry_backoff = Float(2.0, help="First wait before reconnecting, in seconds; doubles.").tag(
        config=True
    )

    docker_host = Unicode(
        help="""The Docker engine books run on (pulling BinderHub's images). Default:
        DOCKER_HOST, or unix:///var/run/docker.sock.""",
    ).tag(config=True)

    @default("docker_host")
    def _default_docker_host(self) -> str:
        return de.default_host()

    registry_username = Unicode(
        "", help="Login for pulling from BinderHub's registry; empty: pull without login."
    ).tag(config=True)
    registry_password = Unicode(
        help="""Password or token for BinderHub's registry. Default: the
        NEUROLIBRE_REGISTRY_PASSWORD environment variable. Sent to the engine in a header,
        never in argv or a log.""",
    ).tag(config=True)

    @default("registry_password")
    def _default_registry_password(self) -> str:
        return os.environ.get("NEUROLIBRE_REGISTRY_PASSWORD", "")

    def client(self) -> BinderHubClient:
        return BinderHubClient(self.binderhub_url, self.token, idle_timeout=self.idle_timeout,
                               read_timeout=self.read_timeout, retries=self.retries,
                               backoff=self.retry_backoff)  # fmt: skip

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.registry_password) if s]

    def registry_auth(self) -> dict[str, str] | None:
        if not self.registry_username:
            return None
        return {"username": self.registry_username, "password": self.registry_password}

    async def recipe(self, runtime: RuntimeFiles) -> dict:
        if not self.binderhub_url:
            raise RuntimeError_("The service has no BinderHub: the operator must set "
                                "c.BinderHubBuilder.binderhub_url.")  # fmt: skip
        # the BinderHub (its repo2docker, its registry) decides what an image holds
        return {"backend": self.backend, "recipe": 1, "binderhub": self.binderhub_url}

    async def health(self) -> dict[str, Any]:
        if not self.binderhub_url:
            return {"ok": False, "error": "c.BinderHubBuilder.binderhub_url is not set."}
        return await self.client().health()

    async def exists(self, location: str) -> bool:
        """On the engine, or in the registry (the engine asks it). Unknown counts as there,
        so an engine that is down, or a registry login that is missing, at start does not
        make every environment 'missing' (and rebuilt, to no avail: the pull needs the same
        engine and login). The operator's log says which of the two it is."""
        try:
            async with de.engine(self.docker_host) as client:
                if await de.inspect_image(client, location) is not None:
                    return True
                return await de.in_registry(client, location, self.registry_auth())
        except de.RegistryAuthError as e:
            self.log.warning(
                "Cannot tell whether image %s exists: %s Books and servers pull it with this "
                "login too: set or fix c.BinderHubBuilder.registry_username and its password "
                "(NEUROLIBRE_REGISTRY_PASSWORD). Counted as there.", location, e,
            )  # fmt: skip
        except de.EngineUnavailable as e:
            self.log.warning("Cannot tell whether image %s exists: %s Check "
                             "c.BinderHubBuilder.docker_host. Counted as there.", location, e)  # fmt: skip
        except de.DockerError as e:
            self.log.warning("Cannot tell whether image %s exists: the engine at %s could not "
                             "ask its registry (HTTP %s: %s). Counted as there.",
                             location, self.docker_host, e.status, e.message)  # fmt: skip
        return True

    async def remove(self, location: str) -> None:
        # BinderHub owns its registry; only the engine's copy is ours to drop
        try:
            async with de.engine(self.docker_host) as client:
                if await de.remove_image(client, location):
                    self.log.info("Removed image %s from the engine", location)
        except (de.EngineUnavailable, de.DockerError) as e:
            self.log.warning("Could not remove image %s: %s", location, e)

    async def build(self, ctx: JobContext, runtime: RuntimeFiles, key: str) -> BuiltRuntime:
        from ..jobs import JobFailed

        await self.recipe(runtime)
        origin = ctx.data.get("origin") or {}
        repository = origin.get("repository")
        commit = origin.get("commit") or ctx.params.get("commit")
        if not repository or not commit:
            raise JobFailed("A BinderHub builds from a repository and commit; this job has none.")
        try:
            prefix, spec = provider_spec(str(repository), str(commit), list(self.gitlab_hosts))
        except RuntimeError_ as e:
            raise JobFailed(str(e)) from None
        # no "token:" in this line: the redactor takes "token: WORD" for a secret
        ctx.say(f"Asking the BinderHub at {self.binderhub_url} to build {prefix}/{spec} "
                + ("with a token." if self.token else
                   "without a token, so BinderHub's rate limit applies."))  # fmt: skip
        started = time.monotonic()
        try:
            outcome = await self.client().build(prefix, spec, ctx.say, ctx.stage)
        except BinderHubError as e:
            raise JobFailed(str(e)) from None
        how = "found already built" if outcome.cached else "built"
        ctx.say(f"Image {how} by BinderHub: {outcome.image} "
                f"({time.monotonic() - started:.0f} s)")  # fmt: skip
        return BuiltRuntime(outcome.image)
