"""Environments built by repo2docker into Docker images, on a real engine.

Real parts: Debian's dockerd (private, started by scripts/docker-engine.sh), repo2docker
2024.7.0, a base image made with debootstrap, the job queue and environment manager on
SQLite, and a package index on 127.0.0.1 that pip inside the build reaches over the host
network. The test repositories' binder/Dockerfile starts FROM the local base image:
repo2docker's conda-based buildpacks download micromamba and cannot build offline.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from neurolibre_service.db import Database, Runtime
from neurolibre_service.environments.docker import DockerBuilder
from neurolibre_service.environments.manager import EnvironmentManager
from neurolibre_service.jobs import JobQueue
from neurolibre_service.logs import LogStore, Redactor
from neurolibre_service.sources import RepoPolicy

from .support.docker import DockerDaemon, Registry
from .support.pkgindex import PackageIndex, cache_dir, server_wheels
from .support.repos import make_repo
from .test_environments import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")
MEMORY_LIMIT = 512 * 1024 * 1024


@pytest.fixture(scope="module")
def index():
    idx = PackageIndex([server_wheels(cache_dir())])
    yield idx
    idx.close()


class Site:
    """The environment side of a service on the docker builder: database, queue, manager."""

    def __init__(self, root: Path, host: str, *, time_limit: float = 600, **traits):
        self.root = root
        self.db = Database(f"sqlite:///{root / 'db.sqlite'}")
        self.logs = LogStore(root / "logs", Redactor())
        self.queue = JobQueue(self.db, self.logs, {}, concurrency=2, time_limit=time_limit)
        traits = {"docker_host": host, "environments_dir": str(root / "environments"),
                  "build_network": "host", "build_memory_limit": "512M",
                  "image_prefix": "nl-test-env-", **traits}  # fmt: skip
        self.builder = DockerBuilder(**traits)
        for secret in self.builder.secrets():
            self.logs.redact.add(secret)
        (root / "environments").mkdir(parents=True, exist_ok=True)
        self.manager = EnvironmentManager(
            self.db, self.queue, self.builder,
            policy=RepoPolicy(("https",), (str(root.parent),)), checkouts_dir=root / "checkouts",
            machine_profiles=[], default_cpu=None, default_memory=None,
        )  # fmt: skip

    async def start(self) -> Site:
        await self.db.upgrade()
        await self.queue.start()
        return self

    async def stop(self) -> None:
        await self.queue.stop()
        await self.db.close()

    async def build(self, name: str, repo: Path, *, wait: bool = True) -> dict:
        env = await self.manager.create("alice", name=name, repository=str(repo), ref="main")
        return await self.finished(env["id"]) if wait else env

    async def finished(self, env_id: int, timeout: float = 300) -> dict:
        async def done():
            env, job = await self.manager.get(env_id, "alice", True)
            return job is not None and job.status.finished and (env, job)

        env, job = await wait_for(done, timeout=timeout)
        return self.manager.to_dict(env, job)

    def log(self, env: dict) -> list[str]:
        return self.logs.path(self.queue.log_key(env["job"]["id"])).read_text().splitlines()


_count = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docker")


@pytest.fixture(scope="module")
async def site(workdir, engine):
    s = await Site(workdir / "site", engine.host).start()
    yield s
    await s.stop()


@pytest.fixture
def new_repo(workdir):
    def make(files: dict[str, str]) -> Path:
        path = workdir / f"repo{next(_count)}"
        make_repo(path, files)
        return path

    return make


def dockerfile(*steps: str) -> str:
    return "\n".join(["FROM neurolibre-test-base:bookworm", "ARG NB_USER", "ARG NB_UID",
                      'RUN useradd -m -u "$NB_UID" "$NB_USER"', *steps]) + "\n"  # fmt: skip


def a_runtime(index: PackageIndex) -> dict[str, str]:
    """A binder/Dockerfile that makes a virtual environment with a package from the index."""
    return {
        "binder/Dockerfile": dockerfile(
            f"RUN python3 -m venv /opt/env && /opt/env/bin/pip install --no-cache-dir "
            f"--index-url {index.url} traitlets",
            'RUN echo "build memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes '
            '2>/dev/null || cat /sys/fs/cgroup/memory.max)"',
            'USER "$NB_USER"',
        ),
        "content/intro.md": "# A preprint\n",
    }


# its output ("slow step 42") is not in the step's own line, which the log shows first
SLOW = {"binder/Dockerfile": dockerfile('RUN echo "slow step $((6 * 7))" && sleep 600')}
SLOW_OUTPUT = "slow step 42"


def containers(engine: DockerDaemon) -> list[str]:
    return engine.docker("ps", "-aq").stdout.decode().split()


def tags(engine: DockerDaemon, repository: str) -> list[str]:
    out = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}", repository)
    return out.stdout.decode().split()


def run(engine: DockerDaemon, image: str, *cmd: str) -> str:
    return engine.docker("run", "--rm", "--network", "host", image, *cmd).stdout.decode().strip()


@pytest.fixture(scope="module")
async def first(site, index, workdir) -> dict:
    path = workdir / "first-repo"
    make_repo(path, a_runtime(index))
    return await site.build("first", path)


async def test_an_environment_is_built_into_an_image_with_its_labels(site, engine, first):
    env, log = first, site.log(first)
    assert env["status"] == "ready", "\n".join(log)
    assert env["runtime"]["backend"] == "docker"
    key = env["runtime"]["key"]
    name = f"nl-test-env-{key[:32]}:latest"
    async with site.db.session() as s:
        assert (await s.get(Runtime, key)).location == name

    # repo2docker's log, line by line, in the job's log
    assert "==> building image" in log
    assert any(line.startswith("Step 1/") for line in log)
    assert f"build memory limit: {MEMORY_LIMIT}" in log
    assert any(line.startswith(f"Image ready: {name}") for line in log)

    info = json.loads(engine.docker("image", "inspect", name).stdout)[0]
    labels = info["Config"]["Labels"]
    assert labels["org.neurolibre.runtime-key"] == key
    assert labels["org.neurolibre.owner"] == "alice"
    assert labels["org.neurolibre.environment-id"] == str(env["id"])
    assert labels["org.neurolibre.commit"] == env["commit"]
    assert labels["org.neurolibre.backend"] == "docker"
    # only the final name: the temporary build tag is gone
    assert tags(engine, f"nl-test-env-{key[:32]}") == [name]
    assert not containers(engine)

    # the environment works, as the user repo2docker was told to create
    assert run(engine, name, "id", "-un") == "jovyan"
    assert run(engine, name, "id", "-u") == "1000"
    assert run(engine, name, "/opt/env/bin/python", "-c", "import traitlets; print('ok')") == "ok"
    assert await site.builder.exists(name)
    listed = await site.builder.images()
    assert [i["key"] for i in listed if i["name"] == name] == [key]


async def test_the_same_runtime_files_reuse_the_image_without_a_build(
    site, engine, first, index, new_repo, workdir
):
    # another repository with other content, same runtime files
    repo = new_repo({**a_runtime(index), "content/intro.md": "# Another preprint\n"})
    second = await site.build("second", repo)
    log = site.log(second)
    assert second["status"] == "ready", "\n".join(log)
    assert second["runtime"]["key"] == first["runtime"]["key"]
    assert any("Reusing the environment built earlier" in line for line in log)
    assert "==> building image" not in log

    # a service that has lost its database still finds the image on the engine
    other = await Site(workdir / "amnesic", engine.host).start()
    try:
        third = await other.build("third", repo)
        log = other.log(third)
    finally:
        await other.stop()
    assert third["status"] == "ready", "\n".join(log)
    assert any("The Docker engine already has image" in line for line in log)
    assert not any(line.startswith("Step 1/") for line in log)

    # when no environment uses it any more, the image goes
    name = f"nl-test-env-{first['runtime']['key'][:32]}:latest"
    await site.manager.delete(first["id"], "alice", True)
    assert await site.builder.exists(name)
    await site.manager.delete(second["id"], "alice", True)
    assert not await site.builder.exists(name)


def images_of(engine: DockerDaemon, log: list[str]) -> list[str]:
    """Every tag on the engine for the runtime key the log names (final or temporary)."""
    key16 = next(line.split()[2] for line in log if line.startswith("Runtime key "))
    out = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
    return [n for n in out.split() if n.startswith(f"nl-test-env-{key16}")]


async def test_a_failing_build_fails_with_its_log(site, engine, new_repo):
    repo = new_repo({"binder/Dockerfile": dockerfile("RUN echo about to fail && exit 3")})
    env = await site.build("broken", repo)
    log = site.log(env)

    assert env["status"] == "failed"
    assert env["error"] == (
        "Building the image failed: The command '/bin/sh -c echo about to fail && exit 3' "
        "returned a non-zero code: 3. The build log above shows the step that failed."
    )
    assert "about to fail" in log
    assert log[-2] == f"!! {env['error']}"
    assert not images_of(engine, log)
    assert not containers(engine)


async def stopped_build(site: Site, env_id: int, stop) -> tuple[dict, list[str], str]:
    """Wait for the slow step to run, then `stop()` the build and wait for its end.

    Returns the environment, its log and the id of the slow step's container."""

    async def started():
        _env, job = await site.manager.get(env_id, "alice", True)
        path = site.logs.path(site.queue.log_key(job.id))
        return path.exists() and SLOW_OUTPUT in path.read_text().splitlines()

    await wait_for(started, timeout=120)
    await stop()
    env = await site.finished(env_id)
    log = site.log(env)
    step = next(i for i, line in enumerate(log)
                if line.startswith("Step ") and "slow step" in line)  # fmt: skip
    return env, log, log[step + 1].removeprefix(" ---> Running in ")


async def no_leftovers(engine: DockerDaemon, log: list[str], container_id: str) -> None:
    # the slow step's container (it was running: the log has its first line) is gone, and no
    # image has the runtime's name, final or temporary
    assert SLOW_OUTPUT in log
    assert engine.docker("container", "inspect", container_id, check=False).returncode == 1
    assert not containers(engine)
    assert not images_of(engine, log)


async def test_a_cancelled_build_leaves_no_container_and_no_image(site, engine, new_repo):
    env = await site.build("cancelled", new_repo(SLOW), wait=False)
    env, log, container = await stopped_build(
        site, env["id"], lambda: site.manager.cancel(env["id"], "alice", False)
    )
    assert env["status"] == "cancelled"
    assert log[-2] == "!! Cancelled by alice."
    await no_leftovers(engine, log, container)


async def test_a_build_past_the_time_limit_leaves_no_container_and_no_image(
    engine, new_repo, workdir
):
    site = await Site(workdir / "limited", engine.host, time_limit=20).start()
    try:
        env = await site.build("forever", new_repo(SLOW), wait=False)

        async def nothing():
            pass

        env, log, container = await stopped_build(site, env["id"], nothing)
    finally:
        await site.stop()
    assert env["status"] == "failed"
    assert env["error"] == "Stopped: the time limit of 20 seconds was exceeded."
    await no_leftovers(engine, log, container)


async def test_an_unreachable_engine_fails_the_build_with_a_clear_error(new_repo, workdir):
    site = await Site(workdir / "no-engine", f"unix://{workdir}/no-such.sock").start()
    try:
        env = await site.build("nowhere", new_repo(SLOW))
    finally:
        await site.stop()
    assert env["status"] == "failed"
    assert env["error"].startswith(f"The Docker engine at unix://{workdir}/no-such.sock")
    assert env["error"].endswith("Ask the operator to start it.")


async def test_an_image_is_pushed_to_a_registry_with_credentials_kept_secret(
    engine, new_repo, workdir
):
    registry = Registry("builder", "registry-secret-password")
    registry.start()
    target = f"{registry.address}/nl"
    try:
        site = await Site(workdir / "pushing", engine.host, registry=target,
                          registry_username="builder",
                          registry_password="registry-secret-password").start()  # fmt: skip
        try:
            repo = new_repo({"binder/Dockerfile": dockerfile('RUN echo "a pushed build"')})
            env = await site.build("pushed", repo)
            log = site.log(env)
        finally:
            await site.stop()
        # a wrong password: the push fails, and no image is left under the final name
        bad = await Site(workdir / "bad-password", engine.host, registry=target,
                         registry_username="builder", registry_password="not-the-password",
                         image_prefix="nl-test-denied-").start()  # fmt: skip
        try:
            denied = await bad.build("denied", new_repo({"binder/Dockerfile": dockerfile()}))
            denied_log = bad.log(denied)
        finally:
            await bad.stop()
        catalog = registry.catalog()
        key = env["runtime"] and env["runtime"]["key"]
        pushed_tags = registry.tags(f"nl/nl-test-env-{key[:32]}") if key else []
    finally:
        registry.stop()

    assert env["status"] == "ready", "\n".join(log)
    assert "==> pushing image" in log
    assert f"nl/nl-test-env-{key[:32]}" in catalog
    assert pushed_tags == ["latest"]
    assert tags(engine, f"{target}/nl-test-env-{key[:32]}") == [
        f"{target}/nl-test-env-{key[:32]}:latest"
    ]

    assert denied["status"] == "failed"
    assert denied["error"].startswith("Pushing the image failed"), denied["error"]
    assert not [n for n in catalog if "nl-test-denied-" in n]
    assert not images_of(engine, denied_log)
    assert not containers(engine)
    # the passwords are in no log line (they never reach a command line or repo2docker)
    for text in ("\n".join(log), "\n".join(denied_log)):
        assert "registry-secret-password" not in text
        assert "not-the-password" not in text


async def test_the_runtime_key_follows_what_changes_the_image(tmp_path):
    from neurolibre_service.environments.runtime import find_runtime

    (tmp_path / "binder").mkdir()
    (tmp_path / "binder" / "Dockerfile").write_text(dockerfile())
    runtime = find_runtime(tmp_path)

    async def key(**traits) -> str:
        return runtime.digest(await DockerBuilder(**traits).recipe(runtime))

    plain = await key()
    # where and how it is built and stored: same image, same key
    assert plain == await key(docker_host="unix:///elsewhere.sock", build_network="host",
                              build_memory_limit="1G", registry="registry.example.org/nl",
                              image_prefix="other-")  # fmt: skip
    # what goes into the image: another key
    assert plain != await key(user_id=1001)
    assert plain != await key(base_image="buildpack-deps:noble")
    assert plain != await key(build_args={"SITE": "x"})
    assert plain != await key(appendix="RUN true")
    # 2025+ needs the docker buildx plugin, which Debian does not ship
    assert (await DockerBuilder().recipe(runtime))["repo2docker"] == "2024.7.0"


async def test_an_image_removed_behind_the_services_back_shows_the_environment_as_missing(
    site, engine, new_repo
):
    repo = new_repo({"binder/Dockerfile": dockerfile('RUN echo "to be removed" > /gone.txt')})
    env = await site.build("soon-missing", repo)
    assert env["status"] == "ready", site.log(env)[-20:]
    image = env["runtime"] and (await site.manager.runtime(env["runtime"]["key"])).location
    engine.docker("rmi", "-f", image)
    # at start the service checks what it built against the engine
    assert await site.manager.reconcile() == [image]
    e, job = await site.manager.get(env["id"], "alice", True)
    shown = site.manager.to_dict(e, job)
    assert shown["status"] == "missing" and "rebuild" in shown["error"]
    # a rebuild makes it ready again
    await site.manager.rebuild(env["id"], "alice", True)
    env = await site.finished(env["id"])
    assert env["status"] == "ready"
    assert await site.manager.reconcile() == []


async def test_a_build_interrupted_by_a_service_restart_runs_again_and_leaves_nothing_behind(
    engine, new_repo, workdir
):
    repo = new_repo({"binder/Dockerfile": dockerfile('RUN echo "restart step" && sleep 8')})
    first = await Site(workdir / "restarting", engine.host).start()
    env = await first.build("interrupted", repo, wait=False)

    async def running():
        _env, job = await first.manager.get(env["id"], "alice", True)
        path = first.logs.path(first.queue.log_key(job.id))
        return path.exists() and "restart step" in path.read_text()

    await wait_for(running, timeout=120)
    # the service stops in the middle of the build: the job stays "running" in SQL
    await first.stop()
    assert not containers(engine)

    # the next start re-queues it; it runs again to the end on the same engine
    second = await Site(workdir / "restarting", engine.host).start()
    try:
        env = await second.finished(env["id"])
        log = second.log(env)
    finally:
        await second.stop()
    assert env["status"] == "ready", log[-20:]
    assert env["job"]["attempts"] == 2
    assert "!! The service restarted during this job; it was re-queued." in log
    assert not containers(engine)
    assert engine.docker("image", "inspect", env["runtime"] and
                         (await _location(workdir / "restarting", env))).returncode == 0  # fmt: skip


async def _location(root: Path, env: dict) -> str:
    db = Database(f"sqlite:///{root / 'db.sqlite'}")
    try:
        async with db.session() as s:
            return (await s.get(Runtime, env["runtime"]["key"])).location
    finally:
        await db.close()
