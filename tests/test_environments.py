"""An author turns a repository's binder/ folder into an environment, through the real hub."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import build, follow

pytestmark = pytest.mark.asyncio(loop_scope="session")


def marker_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


async def wait_for(predicate, timeout: float = 120, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def slow_package(pkg_index, name: str, seconds: float, marker: str) -> str:
    """A package whose build (setup.py) starts a child process and takes a while."""
    return pkg_index.add_sdist(pkg_index.sdists, name, "1.0", f"""
        import subprocess, sys, time
        # a child that outlives setup.py (its output detached, so uv need not wait for it)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)", {marker!r}],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        time.sleep({seconds})
    """)  # fmt: skip


async def test_author_builds_an_environment_with_what_a_hub_server_needs(
    hub, alice, new_repo, pkg_index
):
    req = pkg_index.add_sdist(pkg_index.sdists, "nl-hello", "1.0", "")
    repo, sha = new_repo({"binder/requirements.txt": f"{req}\n", "content/intro.md": "# Hi\n"})

    env, log = await build(alice, "hello", repo)

    assert env["status"] == "ready", log
    assert env["commit"] == sha
    assert env["owner"] == "alice"
    assert "==> installing packages" in log
    venv = hub.service_data / "environments" / env["runtime"]["key"]
    out = subprocess.run(
        [venv / "bin/python", "-c",
         "import ipykernel, importlib.metadata as m; print(m.version('nl-hello'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out == ["1.0"]
    # a kernel, not the server stack: servers run from the service's own server environment
    assert (venv / "share/jupyter/kernels/python3/kernel.json").is_file()
    assert not (venv / "bin/jupyterhub-singleuser").exists()

    listed = (await alice.get("environments")).json()
    assert [e["name"] for e in listed if e["id"] == env["id"]] == ["hello"]


async def test_the_same_runtime_files_are_built_once(hub, alice, new_repo, pkg_index):
    req = pkg_index.add_sdist(pkg_index.sdists, "nl-reuse", "1.0", "")
    files = {"binder/requirements.txt": f"{req}\n", "binder/data_requirement.json": "{}"}
    repo1, _ = new_repo({**files, "content/a.md": "# A\n"})
    # another repository, another commit, different content and data: same runtime
    repo2, _ = new_repo({**files, "binder/data_requirement.json": '{"x": 1}',
                         "content/b.md": "# B\n"})  # fmt: skip

    first, log1 = await build(alice, "reuse-1", repo1)
    second, log2 = await build(alice, "reuse-2", repo2)

    assert first["status"] == second["status"] == "ready"
    assert first["runtime"]["key"] == second["runtime"]["key"]
    assert "==> installing packages" in log1
    assert "==> installing packages" not in log2
    assert any("Reusing the environment built earlier" in line for line in log2)


async def test_a_failing_requirements_file_gives_a_clear_error_and_keeps_the_log(
    hub, alice, new_repo
):
    repo, _ = new_repo({"binder/requirements.txt": "nl-no-such-package==9.9\n"})

    env, log = await build(alice, "broken", repo)

    assert env["status"] == "failed"
    assert "Installing packages failed" in env["error"]
    assert "requirements.txt" in env["error"]
    text = (await alice.get(f"environments/{env['id']}/log")).text
    assert "nl-no-such-package" in text
    assert text.splitlines() == log


# a local package whose setup.py would run as the build (it must never run)
LOCAL_PKG = {"binder/pkgdir/setup.py": "import os; os.system('touch /tmp/pwned-by-setup')\n"}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"binder/environment.yml": "dependencies: [numpy]\n"}, "conda environment"),
        ({"binder/Dockerfile": "FROM scratch\n"}, "Dockerfile"),
        ({"binder/apt.txt": "cowsay\n"}, "apt.txt"),
        ({"binder/runtime.txt": "python-2.7\n"}, "Python 2.7, which this machine does not have"),
        ({"binder/runtime.txt": "r-4.1-2022-01-01\n"}, "only python-X.Y"),
        ({"binder/requirements.txt": "-e .\n"}, "local path"),
        # issue 11, attack 9: the bypasses of the old pattern match; the local setup.py never runs
        ({"binder/requirements.txt": "localpkg @ pkgdir\n", **LOCAL_PKG}, "local path"),
        ({"binder/requirements.txt": "pkgdir/\n", **LOCAL_PKG}, "local path"),
        ({"binder/requirements.txt": "--find-links /etc\nnl-x\n"}, "--find-links"),
        ({"binder/requirements.txt": "--index-url http://127.0.0.1:9/simple\nnl-x\n"}, "not https"),
    ],
)
async def test_runtimes_the_local_builder_cannot_make_fail_fast(
    hub, alice, new_repo, files, expected
):
    repo, _ = new_repo(files)
    env, log = await build(alice, f"unsupported-{abs(hash(str(files))) % 10**6}", repo)

    assert env["status"] == "failed"
    assert expected in env["error"]
    assert "==> installing packages" not in log
    assert not Path("/tmp/pwned-by-setup").exists()
    if "runtime.txt" not in str(files) and "requirements.txt" not in str(files):
        assert "docker" in env["error"] and "BinderHub" in env["error"]


@pytest.mark.parametrize(
    ("repository", "ref", "message"),
    [
        ("file:///etc", "main", "must start with https://"),
        ("ext::sh -c touch% /tmp/pwned", "main", "spaces"),
        ("ext::sh", "main", "remote helpers"),
        ("-uhttps://example.org/x", "main", "may not start with '-'"),
        ("http://example.org/repo.git", "main", "must start with https://"),
        ("https://user:secret@example.org/repo.git", "main", "credentials"),
        ("https://example.org/repo.git?x=1", "main", "query"),
        ("/etc", "main", "outside the local repository roots"),
        ("{repo}", "--upload-pack=touch /tmp/pwned", "not a valid branch"),
        ("{repo}", "../../etc", "not a valid branch"),
        ("{repo}", "no-such-branch", "no branch or tag named 'no-such-branch'"),
        ("", "main", "A repository URL is required"),
    ],
)
async def test_bad_repository_urls_and_refs_are_refused_with_a_reason(
    hub, alice, new_repo, repository, ref, message
):
    repo, _ = new_repo({"README.md": "x\n"})
    r = await alice.post("environments", json={
        "name": "bad", "repository": repository.format(repo=repo), "ref": ref})  # fmt: skip
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert not Path("/tmp/pwned").exists()


async def test_a_ref_is_resolved_to_its_commit_and_recorded(hub, alice, new_repo):
    from .support.repos import commit, git

    repo, first = new_repo({"README.md": "1\n"})
    git(repo, "tag", "v1")
    second = commit(repo, {"README.md": "2\n"})
    r = await alice.post("environments", json={"name": "tagged", "repository": str(repo),
                                                "ref": "v1"})  # fmt: skip
    assert r.json()["commit"] == first
    r = await alice.post("environments", json={"name": "branch", "repository": str(repo),
                                                "ref": "main"})  # fmt: skip
    assert r.json()["commit"] == second
    r = await alice.post("environments", json={"name": "branch", "repository": str(repo)})
    assert r.status_code == 409
    assert "already have an environment named 'branch'" in r.json()["message"]


async def test_cancel_stops_the_build_and_its_whole_process_tree(hub, alice, new_repo, pkg_index):
    marker = f"nl-cancel-marker-{time.time_ns()}"
    req = slow_package(pkg_index, f"nl-slow-{time.time_ns()}", 600, marker)
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})
    r = await alice.post("environments", json={"name": "cancel-me", "repository": str(repo)})
    env_id = r.json()["id"]

    await wait_for(lambda: marker_processes(marker))
    r = await alice.post(f"environments/{env_id}/cancel")

    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["error"] == "Cancelled by alice."
    await wait_for(lambda: not marker_processes(marker), timeout=10)
    text = (await alice.get(f"environments/{env_id}/log")).text
    assert "!! Cancelled by alice." in text
    r = await alice.post(f"environments/{env_id}/cancel")
    assert r.status_code == 409


async def test_a_live_log_resumes_after_a_reconnect_without_gaps_or_duplicates(
    hub, alice, new_repo, pkg_index
):
    req = slow_package(pkg_index, f"nl-slowish-{time.time_ns()}", 4, f"m-{time.time_ns()}")
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})
    env_id = (await alice.post("environments", json={"name": "resume",
                                                     "repository": str(repo)})).json()["id"]  # fmt: skip

    head, status = await follow(alice, env_id, limit=5)
    assert status is None  # still building: the client dropped the connection
    tail, status = await follow(alice, env_id, last_event_id=head[-1][0])

    assert status == "succeeded"
    ids = [i for i, _ in head + tail]
    assert ids == list(range(1, len(ids) + 1))
    full = (await alice.get(f"environments/{env_id}/log")).text.splitlines()
    assert [text for _, text in head + tail] == full
    # reading a finished log from the middle gives the rest, then the end event
    rest, status = await follow(alice, env_id, last_event_id=3)
    assert status == "succeeded"
    assert [i for i, _ in rest] == list(range(4, len(full) + 1))


async def test_a_build_cannot_read_the_service_database_or_write_outside_its_environment(
    hub, alice, new_repo, pkg_index, tmp_path
):
    db = hub.service_data / "neurolibre.sqlite"
    outside = tmp_path / "written-by-a-build"
    hub_secret = hub.data / "jupyterhub_cookie_secret"
    assert db.read_bytes().startswith(b"SQLite format 3")
    req = pkg_index.add_sdist(pkg_index.sdists, f"nl-evil-{time.time_ns()}", "1.0", f"""
        import os, sys
        def attempt(what, fn):
            try:
                print(what, "->", repr(fn())[:60])
            except Exception as e:
                print(what, "-> refused:", type(e).__name__)
        attempt("READ-DB", lambda: open({str(db)!r}, "rb").read(16))
        attempt("LIST-DATA", lambda: os.listdir({str(hub.service_data)!r}))
        attempt("READ-HUB-SECRET", lambda: open({str(hub_secret)!r}, "rb").read(8))
        attempt("WRITE-OUTSIDE", lambda: open({str(outside)!r}, "w").write("pwned"))
        attempt("TOKEN", lambda: [k for k in os.environ if "TOKEN" in k or "JUPYTERHUB" in k])
        sys.exit("evil package done")
    """)  # fmt: skip
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})

    env, log = await build(alice, "evil", repo)

    text = "\n".join(log)
    assert env["status"] == "failed"
    assert "READ-DB -> refused" in text
    assert "SQLite format" not in text
    listing = next(line for line in log if "LIST-DATA" in line)
    assert "logs" not in listing and "sqlite" not in listing
    assert "READ-HUB-SECRET -> refused" in text
    assert "WRITE-OUTSIDE -> refused" in text
    assert "TOKEN -> []" in text
    assert not outside.exists()
