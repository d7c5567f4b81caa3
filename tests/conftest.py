"""Fixtures: a real JupyterHub with the service, a local package index, Git repositories."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from .support.hub import Hub, service_config_args
from .support.mystthemes import site_theme, write_tree
from .support.pkgindex import PackageIndex, book_wheels, cache_dir, server_wheels
from .support.repos import make_repo

CI = os.environ.get("CI", "").lower() == "true"


def need(what: str, present: bool) -> None:
    """A missing part skips on a laptop, and fails under CI=true (the setup must provide it)."""
    if present:
        return
    if CI:
        pytest.fail(f"{what} is missing, and CI=true: the test setup must install it")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="session")
def pkg_index(tmp_path_factory) -> PackageIndex:
    need("configurable-http-proxy", bool(shutil.which("configurable-http-proxy")))
    index = PackageIndex([server_wheels(cache_dir()), book_wheels(cache_dir())])
    index.sdists = tmp_path_factory.mktemp("sdists")
    yield index
    index.close()


@pytest.fixture(scope="session")
def repos_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("repos")


_names = itertools.count()


@pytest.fixture
def new_repo(repos_root):
    """new_repo(files) -> (path, sha): a fresh repository under the allowed root."""

    def make(files: dict[str, str], branch: str = "main") -> tuple[Path, str]:
        path = repos_root / f"repo{next(_names)}"
        return path, make_repo(path, files, branch)

    return make


def offline_myst_themes() -> Path:
    """The operator's MyST themes in test hubs: article-theme and book-theme, the tests' small
    template named as MyST's are."""
    root = cache_dir() / "test-myst-themes"
    for name in ("article-theme", "book-theme"):
        write_tree(root / name, site_theme(name))
    return root


def hub_args(pkg_index: PackageIndex, repos_root: Path, **traits) -> list[str]:
    base = {
        "local_repository_roots": [str(repos_root)],
        "build_environment": {"UV_DEFAULT_INDEX": pkg_index.url},
        "build_concurrency": 2,
        "build_time_limit": 900,
        # readers' launches (test_launch.py): a limit reached with two, a quick clean-up
        "reader_servers_per_preprint": 2,
        "reader_sweep_interval": 2,
        # MyST themes: the tests' offline template; a test hub never downloads one
        "LocalBookRunner__myst_themes_dir": str(offline_myst_themes()),
        "LocalBookRunner__myst_theme_download": False,
    }
    base.update(traits)
    return service_config_args(**base)


@pytest.fixture(scope="session")
def hub(tmp_path_factory, pkg_index, repos_root) -> Hub:
    need("bubblewrap", bool(shutil.which("bwrap")))
    h = Hub(tmp_path_factory.mktemp("hubs"), service_args=hub_args(pkg_index, repos_root))
    h.start()
    yield h
    h.stop()


@pytest.fixture
def start_hub(tmp_path, pkg_index, repos_root):
    """Start another hub with other service settings (time limits, databases)."""
    hubs: list[Hub] = []

    def start(name: str = "hub", extra_config: str = "", **traits) -> Hub:
        need("bubblewrap", bool(shutil.which("bwrap")))
        h = Hub(tmp_path, name=name, service_args=hub_args(pkg_index, repos_root, **traits),
                extra_config=extra_config)  # fmt: skip
        h.start()
        hubs.append(h)
        return h

    yield start
    for h in hubs:
        h.stop()


@pytest.fixture
async def alice(hub):
    async with hub.token_client("alice") as c:
        yield c


async def follow(client: httpx.AsyncClient, env_id: int, last_event_id: int = 0,
                 limit: int | None = None, timeout: float = 600) -> tuple[list[tuple[int, str]], str | None]:  # fmt: skip
    """Read an environment's log as server-sent events: ([(id, line)], end status or None)."""
    return await follow_log(client, f"environments/{env_id}/log", last_event_id, limit, timeout)


async def follow_log(client: httpx.AsyncClient, path: str, last_event_id: int = 0,
                     limit: int | None = None, timeout: float = 600) -> tuple[list[tuple[int, str]], str | None]:  # fmt: skip
    """Read a log (API path) as server-sent events: ([(id, line)], end status or None)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = str(last_event_id)
    lines: list[tuple[int, str]] = []
    event: dict[str, str] = {}
    async with client.stream("GET", path, headers=headers, timeout=timeout) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for raw in r.aiter_lines():
            if raw:
                key, _, value = raw.partition(":")
                event[key] = value[1:] if value.startswith(" ") else value
                continue
            if "data" in event and event.get("event", "message") == "message":
                lines.append((int(event["id"]), event["data"]))
                if limit and len(lines) >= limit:
                    return lines, None
            elif event.get("event") == "end":
                return lines, json.loads(event["data"])["status"]
            event = {}
    return lines, None


async def build(client: httpx.AsyncClient, name: str, repo: Path | str, ref: str = "main",
                **extra) -> tuple[dict, list[str]]:  # fmt: skip
    """Add an environment, follow its build to the end; returns (environment, log lines)."""
    r = await client.post("environments", json={"name": name, "repository": str(repo),
                                                "ref": ref, **extra})  # fmt: skip
    assert r.status_code == 201, r.text
    env = r.json()
    lines, status = await follow(client, env["id"])
    assert status is not None
    r = await client.get(f"environments/{env['id']}")
    return r.json(), [text for _, text in lines]


@pytest.fixture(scope="session")
def postgres():
    from .support.postgres import Postgres, pg_bin

    need("PostgreSQL server (Debian package postgresql)", pg_bin() is not None)
    pg = Postgres()
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def engine():
    """A private Docker engine (host networking only) with the tests' Debian base image."""
    from .support.docker import DockerDaemon, ensure_base_image, missing_tools

    for package in missing_tools():
        need(f"{package} (Debian package)", False)
    need("root, to start dockerd", os.geteuid() == 0)
    daemon = DockerDaemon()
    try:
        daemon.start()
        ensure_base_image(daemon)
        yield daemon
    finally:
        daemon.stop()
