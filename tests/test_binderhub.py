"""Environments built by a BinderHub, through its build API, against a faithful fake.

The fake (support/fake_binderhub.py) follows BINDERHUB_PROTOCOL.md, awkward parts included:
errors as events on an HTTP 200 stream that it never closes after a failure, keep-alives,
events without phase or message, capitalised and unknown phases, dropped connections. The
repositories are served over Git's HTTP protocol on 127.0.0.1, as a BinderHub fetches them.
Real parts: the job queue and environment manager on SQLite, git, the HTTP client.

The whole pipeline on BinderHub images (a real Docker engine and registry) is in
test_binderhub_hub.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from urllib.parse import quote

import pytest

from neurolibre_service.db import Database
from neurolibre_service.environments.binderhub import BinderHubBuilder, provider_spec
from neurolibre_service.environments.manager import EnvironmentManager
from neurolibre_service.environments.runtime import RuntimeError_
from neurolibre_service.jobs import JobQueue
from neurolibre_service.logs import LogStore, Redactor
from neurolibre_service.sources import RepoPolicy

from .support.fake_binderhub import FakeBinderHub
from .support.gitserver import GitServer
from .support.hub import free_port
from .support.repos import make_repo
from .test_environments import wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]
TOKEN = "binder-token-for-tests"
RUNTIME = {"binder/Dockerfile": "FROM neurolibre-test-base:bookworm\n", "README.md": "hi\n"}


class Site:
    """The environment side of a service on the binderhub builder."""

    def __init__(self, root: Path, binderhub_url: str, *, time_limit: float = 120, **traits):
        self.db = Database(f"sqlite:///{root / 'db.sqlite'}")
        self.logs = LogStore(root / "logs", Redactor())
        self.queue = JobQueue(self.db, self.logs, {}, concurrency=2, time_limit=time_limit)
        traits = {"binderhub_url": binderhub_url, "token": TOKEN, "retry_backoff": 0.2,
                  "docker_host": "unix:///nonexistent/docker.sock", **traits}  # fmt: skip
        self.builder = BinderHubBuilder(**traits)
        for secret in self.builder.secrets():
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
    fake.scenarios = ["odd"]
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
    # every message reached the log as it came: without a phase, capitalised, unknown phase
    for text in ("no phase here", "capitalised", "unknown phase", "Found built image"):
        assert text in log
    assert TOKEN not in log


async def test_a_failed_build_ends_the_job_with_binderhubs_reason_and_hangs_up(
    site, fake, published
):
    fake.scenarios = ["failure"]
    env, log = await site.build(published()[0])
    assert env["status"] == "failed"
    assert "No matching distribution found for nonexistent" in env["error"]
    assert "Step 3/5" in log
    # BinderHub keeps a failed stream open: the client hung up by itself
    assert fake.wait_hangup(-1, timeout=10)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("rate-limit", "rate limit stopped the build (Rate limit exceeded. Try again in 2400 "
                       "seconds.). Try again in 2400 s"),
        ("wrong-token", "refused the token (403 Forbidden)"),
        ("no-api-only", "c.BinderHub.enable_api_only_mode = True"),
        ("html", "did not answer with an event stream but with text/html"),
    ],
)  # fmt: skip
async def test_each_refusal_ends_the_job_with_its_own_message(
    workdir, fake, published, setup, expected
):
    traits = {}
    if setup == "rate-limit":
        fake.scenarios = ["rate-limit"]
    elif setup == "wrong-token":
        traits["token"] = "not-the-token"
    elif setup == "no-api-only":
        fake.api_only = False
    else:
        fake.scenarios = ["html"]
    async with Site(workdir / f"site{next(_count)}", fake.url, **traits) as site:
        env, log = await site.build(published()[0])
    assert env["status"] == "failed"
    assert expected in env["error"]
    assert len(fake.requests) == 1  # refusals are not retried
    if setup != "html":
        assert fake.wait_hangup(-1, timeout=10)
    assert "not-the-token" not in log


async def test_a_dropped_connection_reconnects_and_the_build_goes_on(site, fake, published):
    fake.scenarios = ["drop", "odd"]
    env, log = await site.build(published()[0])
    assert env["status"] == "ready", log
    assert len(fake.requests) == 2
    assert "Reconnecting in" in log


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
    wrong = fake.url.replace("/services/binder/", "/services/nothing/")
    async with Site(workdir / f"site{next(_count)}", wrong) as site:
        env, _ = await site.build(url)
    assert env["status"] == "failed" and "no BinderHub build API" in env["error"]
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
