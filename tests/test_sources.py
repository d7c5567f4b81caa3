"""git against servers that never answer: every step ends in time, says which step, and leaves
no git process behind.

The attack: a repository URL pointing at a server that accepts connections and then sends
nothing (or stops in the middle of a clone) held `api/check` for minutes and left
`git-remote-https` processes running with parent 1. The defences: git's low-speed limit
(a transfer receiving nothing for `git_stall_time` is aborted by git), a deadline per step
that kills git's whole process tree (a TLS handshake that never completes is outside the
low-speed limit), and a message naming the step.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from neurolibre_service import sources
from neurolibre_service.errors import UserError
from neurolibre_service.preprints import PreprintManager

from .support.gitserver import GitServer
from .support.repos import make_repo

pytestmark = pytest.mark.asyncio(loop_scope="session")

# a small deadline; the stall limit (plain http) is shorter still, so each shows in the message
POLICY = sources.RepoPolicy(schemes=("https", "http"), git_timeout=4, git_stall_time=2)


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        # shutdown wakes the blocked accept(); a bare close would leave it waiting on a
        # descriptor number the next socket of this process reuses
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self.conns:
            c.close()


class StallingGitServer:
    """Answers a repository's refs (dumb HTTP), then never answers a request for an object."""

    def __init__(self, repo: Path) -> None:
        subprocess.run(["git", "-C", str(repo), "update-server-info"], check=True)
        files = {"info/refs": (repo / ".git" / "info" / "refs").read_bytes(),
                 "HEAD": (repo / ".git" / "HEAD").read_bytes()}  # fmt: skip
        self.release = threading.Event()
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = files.get(self.path.split("?")[0].removeprefix("/stall.git/"))
                if data is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    release.wait(120)  # hold the connection, say nothing

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/stall.git"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    s = SilentServer()
    yield s
    s.close()


def git_processes(port: int) -> list[str]:
    """Live processes whose command line names the port (git, git-remote-http(s))."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "git" in cmd and f"127.0.0.1:{port}" in cmd:
            found.append(f"{entry.name}: {cmd}")
    return found


def assert_no_git_left(port: int) -> None:
    deadline = time.monotonic() + 2  # a killed process disappears at once; allow a beat
    while (left := git_processes(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, left


async def test_a_plain_http_server_that_never_answers_is_given_up_by_git_itself(silent):
    url = f"http://127.0.0.1:{silent.port}/silent.git"
    start = time.monotonic()
    with pytest.raises(sources.SourceTimeout) as e:
        await sources.resolve_ref(url, "main", POLICY)
    # the low-speed limit (2 s), well before the step's deadline (4 s)
    assert str(e.value) == (
        f"Reading the branches and tags of {url} timed out: the server sent nothing for 2 s."
    )
    assert time.monotonic() - start < 30
    assert_no_git_left(silent.port)


async def test_checking_an_https_server_whose_tls_handshake_never_completes_is_a_clear_400(
    silent, tmp_path
):
    """What api/check answers (UserError -> its status), through the code the handler calls.

    curl's low-speed limit does not cover the TLS handshake (nor does any git option): the
    step's deadline ends it, and takes git-remote-https (git's child) with it."""
    manager = PreprintManager(None, None, policy=POLICY, checkouts_dir=tmp_path,
                              builds_dir=tmp_path, datasets_root=tmp_path)  # fmt: skip
    url = f"https://127.0.0.1:{silent.port}/paper.git"
    with pytest.raises(UserError) as e:
        await manager.check(url, "main")
    assert e.value.status == 400
    assert str(e.value) == (
        f"Reading the branches and tags of {url} timed out after 4 s "
        "(no answer from the server, or too slow an answer)."
    )
    assert_no_git_left(silent.port)


async def test_a_server_that_stalls_in_the_middle_of_a_clone_fails_the_fetch_step(tmp_path):
    sha = make_repo(tmp_path / "repo", {"paper.md": "# Paper\n"})
    server = StallingGitServer(tmp_path / "repo")
    try:
        # the refs come back: the ref resolves ...
        assert await sources.resolve_ref(server.url, "main", POLICY) == sha
        # ... then the objects never do. git's dumb-HTTP walker asks again after each stall
        # (2 s each), so the step's deadline (3 s) ends it; it is not tried a second way
        policy = sources.RepoPolicy(schemes=("http",), git_timeout=3, git_stall_time=2)
        start = time.monotonic()
        with pytest.raises(sources.SourceTimeout) as e:
            await sources.checkout(server.url, sha, tmp_path / "checkout", policy)
        assert str(e.value) == (
            f"Fetching {server.url} timed out after 3 s "
            "(no answer from the server, or too slow an answer)."
        )
        assert time.monotonic() - start < 30
        assert_no_git_left(server.port)
    finally:
        server.close()


async def test_a_repository_served_over_http_still_checks_out(tmp_path):
    sha = make_repo(tmp_path / "repo", {"paper.md": "# Paper\n"})
    server = GitServer()
    try:
        url = server.publish(tmp_path / "repo", "paper")
        assert await sources.resolve_ref(url, "main", POLICY) == sha
        await sources.checkout(url, sha, tmp_path / "checkout", POLICY)
    finally:
        server.close()
    assert (tmp_path / "checkout" / "paper.md").read_text() == "# Paper\n"
