"""Environments built by a BinderHub, through its build API, against a fake kept honest by a real
BinderHub's recorded streams.

support/binderhub-transcripts/ holds what a real BinderHub (jupyterhub/binderhub b9fad99) sent;
the fake (support/fake_binderhub.py) replays those files byte for byte, and its own answers are
checked here against them: refusals are one `failed` event and the stream closes, a cache hit is
one `ready`, a failed build is repo2docker's `failed` then a bare `failed` and a stream that
never closes, an HTTP 200 event for a missing Accept, 6-hex-digit image hashes, `"\\n"` events.
The client then meets both the replays and the fake. The repositories are served over Git's
HTTP protocol on 127.0.0.1, as a BinderHub fetches them. Real parts: the job queue and
environment manager on SQLite, git, the HTTP client, the log redactor.

The whole pipeline on BinderHub images (a real Docker engine and registry) is in
test_binderhub_hub.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from neurolibre_service.db import Database
from neurolibre_service.environments.binderhub import BinderHubBuilder, provider_spec
from neurolibre_service.environments.manager import EnvironmentManager
from neurolibre_service.environments.runtime import RuntimeError_
from neurolibre_service.jobs import JobQueue
from neurolibre_service.logs import LogStore, Redactor
from neurolibre_service.sources import RepoPolicy

from .support.fake_binderhub import TRANSCRIPTS, WAITING, FakeBinderHub, transcript
from .support.fake_engine import FakeEngine
from .support.gitserver import GitServer
from .support.hub import free_port
from .support.repos import make_repo
from .test_environments import wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]
TOKEN = "binder-token-for-tests"
RUNTIME = {"binder/Dockerfile": "FROM neurolibre-test-base:bookworm\n", "README.md": "hi\n"}
SSE = {"Accept": "text/event-stream"}
# the image the recorded BinderHub built (01-, 02-), and the repository it built it from
RECORDED_IMAGE = ("binder-http-3a-2f-2f127-2e0-2e0-2e1-3a35971-2fgood-2egit-c1945d:"
                  "e56535e7c46d6a2d4d5042ec7a4339282f2db616")  # fmt: skip
RECORDED_REPO = "http://127.0.0.1:35971/good.git"
LOG = logging.getLogger("neurolibre.test_binderhub")  # the builder's, i.e. the operator's log


class Site:
    """The environment side of a service on the binderhub builder."""

    def __init__(self, root: Path, binderhub_url: str, *, time_limit: float = 120, **traits):
        self.db = Database(f"sqlite:///{root / 'db.sqlite'}")
        self.logs = LogStore(root / "logs", Redactor())
        self.queue = JobQueue(self.db, self.logs, {}, concurrency=2, time_limit=time_limit)
        traits = {"binderhub_url": binderhub_url, "token": TOKEN, "retry_backoff": 0.2,
                  "docker_host": "unix:///nonexistent/docker.sock", "log": LOG, **traits}  # fmt: skip
        self.builder = BinderHubBuilder(**traits)
        for secret in self.builder.secrets():  # as the service does (app.py)
            self.logs.redact.add(secret)
        self.manager = EnvironmentManager(
            self.db, self.queue, self.builder,
            policy=RepoPolicy(("https", "http"), (str(root.parent),)),
            checkouts_dir=root / "checkouts", machine_profiles=[], default_cpu=None,
            default_memory=None,
        )  # fmt: skip

    async def __aenter__(self) -> Site:
        await self.db.upgrade()
        await self.queue.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.queue.stop()
        await self.db.close()

    async def create(self, repo: str, name: str | None = None) -> dict:
        name = name or f"env{next(_count)}"
        return await self.manager.create("alice", name=name, repository=repo, ref="main")

    async def finished(self, env_id: int, timeout: float = 60) -> dict:
        async def done():
            env, job = await self.manager.get(env_id, "alice", True)
            return job is not None and job.status.finished and (env, job)

        env, job = await wait_for(done, timeout=timeout, interval=0.1)
        return self.manager.to_dict(env, job)

    async def build(self, repo: str) -> tuple[dict, str]:
        env = await self.finished((await self.create(repo))["id"])
        return env, self.log(env)

    def log(self, env: dict) -> str:
        return self.logs.path(self.queue.log_key(env["job"]["id"])).read_text()


_count = itertools.count()


@pytest.fixture(scope="module")
def git_server():
    server = GitServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("binderhub")


@pytest.fixture
def published(workdir, git_server):
    """published(files) -> (http URL, commit) of a new repository served over Git's HTTP."""

    def make(files: dict[str, str] = RUNTIME) -> tuple[str, str]:
        path = workdir / f"repo{next(_count)}"
        sha = make_repo(path, files)
        return git_server.publish(path), sha

    return make


@pytest.fixture
def fake():
    hub = FakeBinderHub(token=TOKEN, keepalive_interval=0.2).start()
    yield hub
    hub.close()


@pytest.fixture
async def site(workdir, fake):
    root = workdir / f"site{next(_count)}"
    async with Site(root, fake.url) as s:
        yield s


async def fetch(url: str, *, method: str = "GET", headers: dict | None = None,
                until: Callable[[bytes], bool] | None = None,
                ) -> tuple[httpx.Response, bytes, bool]:  # fmt: skip
    """A raw answer: the response, its body's bytes, whether the server closed the stream.
    The client hangs up once `until(body)` holds (a stream BinderHub never closes)."""
    body = b""
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        method, url, headers=SSE if headers is None else headers
    ) as r:  # fmt: skip
        async for chunk in r.aiter_raw():
            body += chunk
            if until is not None and until(body):
                return r, body, False
    return r, body, True


def events_of(body: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]


# -- the fake against the real BinderHub's recordings --------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in TRANSCRIPTS.glob("*.txt")))
async def test_the_fake_replays_a_real_binderhubs_answer_byte_for_byte(fake, name):
    recorded = transcript(name)
    fake.replay_speed = 1000.0
    fake.scenarios = [f"replay:{name}"]
    n = len(recorded.body) + len(b":keepalive\n\n")
    r, body, closed = await fetch(f"{fake.url}build/git/x/HEAD?build_only=true",
                                  until=None if recorded.closed else lambda b: len(b) >= n)  # fmt: skip
    assert r.status_code == recorded.status == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert body[: len(recorded.body)] == recorded.body
    if recorded.closed:
        assert closed and body == recorded.body
    else:  # the real one never closed it: the fake goes on with keep-alives
        assert not closed and body[len(recorded.body) :].startswith(b":keepalive\n\n")


@pytest.mark.parametrize(
    ("recording", "how"),
    [("07-no-accept.txt", "no-accept"), ("14-post.txt", "post"),
     ("11-unknown-provider.txt", "unknown-provider"), ("30-auth-no-token.txt", "no-token"),
     ("42-rate-limited.txt", "rate-limited"), ("05-nonexistent-ref.txt", "bad-ref")],
)  # fmt: skip
async def test_the_fake_refuses_as_the_real_binderhub_did(published, recording, how):
    """A refusal is an HTTP 200 event stream with one `failed` event, then it closes."""
    hub = FakeBinderHub(token=TOKEN if how == "no-token" else None, keepalive_interval=0.2,
                        rate_limit=1 if how == "rate-limited" else 0).start()  # fmt: skip
    try:
        url, _ = published()
        build = f"{hub.url}build/git/{quote(url, safe='')}"
        method, headers, target = "GET", None, f"{build}/main?build_only=true"
        if how == "no-accept":
            headers = {"Accept": "text/html, text/event-stream"}  # a list: refused
        elif how == "post":
            method = "POST"
        elif how == "unknown-provider":
            target = f"{hub.url}build/nope/{quote(url, safe='')}/main?build_only=true"
        elif how == "rate-limited":  # the limit counts any request past the Accept check
            await fetch(f"{hub.url}build/nope/x/main")
        elif how == "bad-ref":
            target = f"{build}/no-such-branch?build_only=true"
        r, body, closed = await fetch(target, method=method, headers=headers)
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        assert closed and hub.wait_hangup(-1) and hub.requests[-1].closed_by_server
        expected = transcript(recording).events
        if how == "bad-ref":  # the same words about another repository
            expected[0]["message"] = expected[0]["message"].replace(
                quote(RECORDED_REPO, safe=""), quote(url, safe="")
            )
        assert events_of(body) == expected
    finally:
        hub.close()


async def test_the_fakes_build_cache_hit_and_failure_stream_as_the_real_ones(fake, published):
    url, sha = published()
    target = f"{fake.url}build/git/{quote(url, safe='')}/{sha}?build_only=true"
    headers = {**SSE, "Authorization": f"Bearer {TOKEN}"}
    _, body, closed = await fetch(target, headers=headers)
    events, real = events_of(body), transcript("01-good-build.txt").events
    assert closed  # a build-only build ends with `ready`, then BinderHub closes the stream
    assert events[:2] == real[:2] == [WAITING, {"message": "Picked Git content provider.\n"}]
    # the same phases in the same order (the real one's log has more lines)
    phases = [k for k, _ in itertools.groupby(e.get("phase") for e in events)]
    assert phases == [k for k, _ in itertools.groupby(e.get("phase") for e in real)]
    # Docker's Step lines without their newline, which follows alone; an extra blank line after
    # each of repo2docker's events
    steps = [i for i, e in enumerate(events) if e.get("message", "").startswith("Step ")]
    assert steps and all(events[i + 1] == {"message": "\n", "phase": "building"} for i in steps)
    assert b'data: {"message": "Picked Git content provider.\\n"}\n\n\n' in body
    assert events[-1]["phase"] == "ready" and events[-1]["message"] == "Done! Image built\n"
    image = events[-1]["imageName"]
    assert re.fullmatch(r"binder-[0-9a-z-]+-[0-9a-f]{6}:" + sha, image)
    # the fake names images as the real one did
    assert fake.image_name(RECORDED_REPO, RECORDED_IMAGE.rpartition(":")[2]) == RECORDED_IMAGE

    # built before: one `ready`, nothing else, as 02-good-cache-hit.txt
    _, body, closed = await fetch(target, headers=headers)
    cached = transcript("02-good-cache-hit.txt").events
    assert closed and events_of(body) == [{**cached[0], "imageName": image}]

    # a failed build: repo2docker's `failed` with the reason (no newline), a bare `failed`, then
    # keep-alives on a stream the server never closes, as 04-bad-build.txt
    fake.scenarios = ["failure"]
    real = transcript("04-bad-build.txt")
    end = b'data: {"phase": "failed"}\n\n:keepalive\n\n'
    _, body, closed = await fetch(target, headers=headers, until=lambda b: end in b)
    events = events_of(body)
    assert not closed
    assert [sorted(e) for e in events[-2:]] == [sorted(e) for e in real.events[-2:]]
    assert events[-2]["message"].endswith("returned a non-zero code: 1")
    assert events[-1] == {"phase": "failed"}
    assert fake.wait_hangup(-1) and not fake.requests[-1].closed_by_server


async def test_the_fake_rate_limits_anonymous_requests_and_ignores_a_token(published):
    hub = FakeBinderHub(rate_limit=1, keepalive_interval=0.2).start()
    try:
        url, sha = published()
        target = f"{hub.url}build/git/{quote(url, safe='')}/{sha}?build_only=true"
        headers = {**SSE, "Authorization": f"Bearer {TOKEN}"}  # no auth here: ignored
        _, body, _ = await fetch(target, headers=headers)
        assert events_of(body)[-1]["phase"] == "ready"
        _, body, closed = await fetch(target, headers=headers)  # a cache hit counts too
        assert closed and events_of(body) == transcript("42-rate-limited.txt").events
    finally:
        hub.close()


# -- the client on the real BinderHub's recorded streams --------------------------------------


@pytest.mark.parametrize(
    ("recording", "token", "status", "expected"),
    [
        ("01-good-build.txt", TOKEN, "ready", f"Image built by BinderHub: {RECORDED_IMAGE}"),
        ("02-good-cache-hit.txt", TOKEN, "ready",
         f"Image found already built by BinderHub: {RECORDED_IMAGE}"),
        ("50-registry-build-push.txt", TOKEN, "ready",
         f"Image built by BinderHub: 127.0.0.1:41240/{RECORDED_IMAGE}"),
        ("04-bad-build.txt", TOKEN, "failed",
         "BinderHub's build failed: The command '/bin/sh -c echo about to fail && false' "
         "returned a non-zero code: 1. Its last lines: Step 1/5 : FROM "
         "neurolibre-test-base:bookworm | Step 2/5 : RUN echo about to fail && false | about to "
         "fail"),
        ("06-nonexistent-sha.txt", TOKEN, "failed",
         "fatal: Could not parse object '0123456789abcdef0123456789abcdef01234567'."),
        ("05-nonexistent-ref.txt", TOKEN, "failed",
         "BinderHub's build failed: Could not resolve ref for git:"),
        ("11-unknown-provider.txt", TOKEN, "failed", "No provider found for prefix nope"),
        ("41-not-api-only-bad-ref.txt", TOKEN, "failed", "Could not resolve ref"),
        # no token for a BinderHub with auth: say a token is needed
        ("30-auth-no-token.txt", "", "failed", "BinderHub requires a token (403 Forbidden)"),
        # a token without the scope: JupyterHub's own reason, as BinderHub passed it on
        ("32-auth-token-without-scope.txt", TOKEN, "failed",
         "BinderHub refused the token (403): service noscope is not allowed. The token's owner "
         "needs the scope access:services!service=binder"),
        # rate-limited with a token: the token is not the cure; without one, it may be
        ("42-rate-limited.txt", TOKEN, "failed",
         "Try again in 3600 s. The token did not lift the limit: this BinderHub does not "
         "authenticate"),
        ("42-rate-limited.txt", "", "failed", "Try again in 3600 s. Or give the service a token"),
    ],
)  # fmt: skip
async def test_the_client_on_a_real_binderhubs_streams(
    workdir, fake, published, recording, token, status, expected
):
    fake.scenarios = [f"replay:{recording}"]
    async with Site(workdir / f"site{next(_count)}", fake.url, token=token) as site:
        env, log = await site.build(published()[0])
    text = env["error"] if status == "failed" else log
    assert env["status"] == status, log
    assert expected in text
    assert len(fake.requests) == 1  # refusals and failures are not retried
    assert fake.wait_hangup(-1, timeout=10)  # also from a stream the server keeps open
    if "rate-limited" in recording and token:
        assert "give the service a token" not in env["error"]
    lines = log.splitlines()
    # attack: a message that is only Docker's newline must not become a blank line
    assert "" not in lines
    assert "[secret]" not in log


async def test_the_log_shows_each_stage_header_before_the_stages_lines(workdir, fake, published):
    fake.scenarios = ["replay:01-good-build.txt"]
    async with Site(workdir / f"site{next(_count)}", fake.url) as site:
        env, log = await site.build(published()[0])
    assert env["status"] == "ready"
    lines = log.splitlines()
    for header, first in (("==> BinderHub fetching the repository", "Cloning into '<tmpdir>'..."),
                          ("==> BinderHub building the image", "Using DockerBuildPack builder"),
                          ("==> waiting for BinderHub", "Waiting for build to start...")):  # fmt: skip
        assert lines.index(header) == lines.index(first) - 1, lines
    # Step lines and Docker's next line, with no blank between them
    step = lines.index("Step 1/5 : FROM neurolibre-test-base:bookworm")
    assert lines[step + 1] == " ---> 77178ce779ae"


# -- the client against the fake ------------------------------------------------------------


async def test_provider_specs_follow_binderhubs_providers():
    sha = "a" * 40
    assert provider_spec("https://github.com/neurolibre/paper.git", sha, ["gitlab.com"]) == (
        "gh", f"neurolibre/paper/{sha}")  # fmt: skip
    assert provider_spec("https://gitlab.com/group/sub/paper", sha, ["gitlab.com"]) == (
        "gl", f"group%2Fsub%2Fpaper/{sha}")  # fmt: skip
    url = "https://git.example.org/paper.git"
    assert provider_spec(url, sha, ["gitlab.com"]) == ("git", f"{quote(url, safe='')}/{sha}")
    with pytest.raises(RuntimeError_, match="needs an http"):
        provider_spec("/srv/repos/paper", sha, [])


async def test_a_build_asks_for_build_only_and_records_the_image_binderhub_names(
    site, fake, published
):
    url, sha = published()
    env, log = await site.build(url)
    assert env["status"] == "ready", log
    req = fake.requests[-1]
    # exactly one Accept type, the token as a bearer, build only, the git provider at the commit
    assert req.headers["Accept"] == "text/event-stream"
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.query.get("build_only") == "true"
    assert (req.provider, req.spec) == ("git", f"{quote(url, safe='')}/{sha}")
    ready = req.events[-1]
    assert env["runtime"]["backend"] == "binderhub"
    rt = await site.manager.runtime(env["runtime"]["key"])
    assert rt.location == ready["imageName"]
    assert f"to build git/{quote(url, safe='')}/{sha} with a token." in log
    assert "Step 1/1 : FROM neurolibre-test-base:bookworm" in log and "" not in log.splitlines()
    assert TOKEN not in log


async def test_odd_but_allowed_events_reach_the_log(site, fake, published):
    fake.scenarios = ["odd"]
    env, log = await site.build(published()[0])
    assert env["status"] == "ready", log
    # without a phase, capitalised, unknown phase, and a capitalised READY
    for text in ("no phase here", "capitalised", "unknown phase", "Found built image"):
        assert text in log


async def test_without_a_token_the_log_says_so_unredacted(workdir, published):
    """The redactor takes "token: WORD" for a secret: the line must not be written that way."""
    hub = FakeBinderHub(keepalive_interval=0.2).start()  # no auth
    try:
        async with Site(workdir / f"site{next(_count)}", hub.url, token="") as site:
            env, log = await site.build(published()[0])
        assert env["status"] == "ready", log
        assert "without a token, so BinderHub's rate limit applies." in log
        assert "[secret]" not in log
        assert "Authorization" not in hub.requests[-1].headers
    finally:
        hub.close()


async def test_a_failed_build_ends_the_job_with_binderhubs_reason_and_hangs_up(
    site, fake, published
):
    fake.scenarios = ["failure"]
    env, log = await site.build(published()[0])
    assert env["status"] == "failed"
    # BinderHub's own reason, and the log lines before it that say why
    assert "returned a non-zero code: 1" in env["error"]
    assert "No matching distribution found for nonexistent" in env["error"]
    assert "Step 2/2 : RUN pip install nonexistent" in log
    # BinderHub keeps a failed stream open: the client hung up by itself
    assert fake.wait_hangup(-1, timeout=10)
    assert not fake.requests[-1].closed_by_server


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("rate-limit-no-token", "rate limit stopped the build (Rate limit exceeded. Try again in "
                                "3600 seconds.). Try again in 3600 s. Or give the service a token"),
        ("rate-limit-token", "The token did not lift the limit"),
        ("wrong-token", "refused the token (403 Forbidden)"),
        ("no-api-only", "c.BinderHub.enable_api_only_mode = True"),
        ("html", "did not answer with an event stream but with text/html"),
    ],
)  # fmt: skip
async def test_each_refusal_ends_the_job_with_its_own_message(workdir, published, setup, expected):
    traits = {}
    hub = FakeBinderHub(token=None if setup.startswith("rate") else TOKEN,
                        rate_limit=1 if setup.startswith("rate") else 0).start()  # fmt: skip
    try:
        if setup == "rate-limit-no-token":
            traits["token"] = ""
        elif setup == "wrong-token":
            traits["token"] = "not-the-token"
        elif setup == "no-api-only":
            hub.api_only = False
        elif setup == "html":
            hub.scenarios = ["html"]
        async with Site(workdir / f"site{next(_count)}", hub.url, **traits) as site:
            if setup.startswith("rate"):  # the first request of the period passes
                assert (await site.build(published()[0]))[0]["status"] == "ready"
            # other runtime files: not the runtime just built
            env, log = await site.build(published({**RUNTIME, "binder/Dockerfile": "FROM b\n"})[0])
        assert env["status"] == "failed"
        assert expected in env["error"]
        assert len(hub.requests) == (2 if setup.startswith("rate") else 1)  # not retried
        assert hub.wait_hangup(-1, timeout=10)
        if setup == "rate-limit-token":
            assert "give the service a token" not in env["error"]
        assert "not-the-token" not in log
    finally:
        hub.close()


async def test_a_dropped_connection_reconnects_and_says_the_build_starts_again(
    site, fake, published
):
    fake.scenarios = ["drop"]  # then a build
    env, log = await site.build(published()[0])
    assert env["status"] == "ready", log
    assert len(fake.requests) == 2
    # what BinderHub's local executor does: a new build, its log from the start again
    assert "Reconnecting in" in log and "BinderHub starts the build again" in log
    assert "re-attaches to the same build" not in log
    assert log.count("Waiting for build to start...") == 2


async def test_a_connection_that_keeps_dropping_fails_after_the_retries(workdir, fake, published):
    fake.scenarios = ["drop"] * 5
    async with Site(workdir / f"site{next(_count)}", fake.url, retries=2) as site:
        env, _log = await site.build(published()[0])
    assert env["status"] == "failed"
    assert "Gave up after 3 attempts" in env["error"]
    assert len(fake.requests) == 3


async def test_a_binderhub_that_sends_only_keepalives_is_given_up(workdir, fake, published):
    fake.scenarios = ["quiet"]
    async with Site(workdir / f"site{next(_count)}", fake.url, idle_timeout=2) as site:
        env, _log = await site.build(published()[0])
    assert env["status"] == "failed"
    assert "nothing but keep-alives for 2 s" in env["error"]
    assert fake.requests[-1].keepalives >= 5
    assert fake.wait_hangup(-1, timeout=10)


async def test_a_quiet_binderhub_past_the_jobs_time_limit_fails_the_job(workdir, fake, published):
    fake.scenarios = ["quiet"]
    async with Site(workdir / f"site{next(_count)}", fake.url, time_limit=3) as site:
        env, _log = await site.build(published()[0])
    assert env["status"] == "failed"
    assert "time limit" in env["error"]
    assert fake.wait_hangup(-1, timeout=10)


async def test_cancel_closes_the_stream(site, fake, published):
    fake.scenarios = ["quiet"]
    env = await site.create(published()[0])
    await wait_for(lambda: fake.requests, timeout=30, interval=0.1)
    await site.manager.cancel(env["id"], "alice", False)
    env = await site.finished(env["id"])
    assert env["status"] == "cancelled"
    assert fake.wait_hangup(-1, timeout=10)


async def test_a_wrong_or_unreachable_binderhub_url_says_so(workdir, fake, published):
    url = published()[0]
    # behind a JupyterHub: a service it does not have is a 302 to its own pages
    wrong = fake.url.replace("/services/binder/", "/services/nothing/")
    async with Site(workdir / f"site{next(_count)}", wrong) as site:
        env, _ = await site.build(url)
    assert env["status"] == "failed"
    assert "There is no BinderHub build API at" in env["error"]
    assert "redirects (HTTP 302) to /hub/services/nothing/build/" in env["error"]
    assert "c.BinderHubBuilder.binderhub_url" in env["error"]
    # a BinderHub on its own: 404
    alone = FakeBinderHub(base_url="/binder/").start()
    try:
        wrong = alone.url.replace("/binder/", "/nothing/")
        async with Site(workdir / f"site{next(_count)}", wrong) as site:
            env, _ = await site.build(url)
        assert env["status"] == "failed" and "no BinderHub build API" in env["error"]
        assert "(HTTP 404)" in env["error"]
    finally:
        alone.close()
    closed = f"http://127.0.0.1:{free_port()}/services/binder/"
    async with Site(workdir / f"site{next(_count)}", closed, retries=1) as site:
        env, log = await site.build(url)
    assert env["status"] == "failed"
    assert "connection to BinderHub" in env["error"] and "Gave up after 2 attempts" in env["error"]
    assert "Reconnecting in" in log


async def test_a_local_repository_cannot_go_to_a_binderhub(site, fake, workdir):
    path = workdir / f"local{next(_count)}"
    make_repo(path, RUNTIME)
    env, _ = await site.build(str(path))
    assert env["status"] == "failed"
    assert "A BinderHub cannot fetch" in env["error"]
    assert fake.requests == []


async def test_health_reports_binderhubs_own_check(site, fake):
    health = await site.builder.health()
    assert health["ok"] is True and health["version"] == "fake-1.0"
    assert any(c["service"] == "Docker registry" for c in health["checks"])
    fake.healthy = False
    health = await site.builder.health()
    assert health["ok"] is False
    gone = BinderHubBuilder(binderhub_url=f"http://127.0.0.1:{free_port()}/")
    health = await gone.health()
    assert health["ok"] is False and "Cannot reach the BinderHub" in health["error"]


async def test_a_registry_that_wants_a_login_is_told_apart_from_an_engine_that_is_down(
    workdir, published, caplog
):
    """At start the service checks each image is still there. A registry that wants a login
    (none set, or a wrong one) is not an engine that is down, and neither is 'gone': the
    operator's log says which, and the environment stays (a rebuild could not pull either)."""
    registry = f"127.0.0.1:{free_port()}"
    hub = FakeBinderHub(image_prefix=f"{registry}/binder-", keepalive_interval=0.2).start()
    engine = FakeEngine("robot", "registry-password-for-tests")
    caplog.set_level(logging.WARNING, logger=LOG.name)
    try:
        root = workdir / f"site{next(_count)}"
        async with Site(root, hub.url, token="", docker_host=engine.host) as site:
            env, log = await site.build(published()[0])
            assert env["status"] == "ready", log
            image = (await site.manager.runtime(env["runtime"]["key"])).location
            assert await site.manager.reconcile() == []  # kept: counted as there
            assert engine.asked == [(image, None)]
            assert "needs a login, and none is set" in caplog.text
            assert "set or fix c.BinderHubBuilder.registry_username" in caplog.text
            assert "does not answer" not in caplog.text
        caplog.clear()
        # a wrong login: the registry refused it
        async with Site(root, hub.url, token="", docker_host=engine.host,
                        registry_username="robot", registry_password="wrong-password") as site:  # fmt: skip
            assert await site.manager.reconcile() == []
        assert f"The registry {registry} refused the login as robot" in caplog.text
        assert "wrong-password" not in caplog.text
        caplog.clear()
        # the right login: the registry says it does not have it, so it is gone
        async with Site(root, hub.url, token="", docker_host=engine.host,
                        registry_username="robot",
                        registry_password="registry-password-for-tests") as site:  # fmt: skip
            assert await site.manager.reconcile() == [image]
        caplog.clear()
        # an engine that is down says so, and not that a login is missing
        async with Site(root, hub.url, token="") as site:
            env, _ = await site.build(published()[0])
            assert await site.manager.reconcile() == []
        assert "/nonexistent/docker.sock does not answer" in caplog.text
        assert "Check c.BinderHubBuilder.docker_host" in caplog.text
        assert "login" not in caplog.text
    finally:
        engine.close()
        hub.close()
