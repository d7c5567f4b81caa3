"""A Git "dumb HTTP" server on 127.0.0.1, so tests can clone their repositories over HTTP.

A test repository (a normal, non-bare one made by repos.make_repo) is published under a name:
`/NAME.git/...` is served read-only from `repo/.git/...`, after `git update-server-info` wrote
the files a dumb-HTTP client reads (info/refs, objects/info/packs). Loose and packed objects
both work. Publish again after new commits (or call refresh) to update those files.
"""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class GitServer:
    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}  # name -> the repository's .git directory
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = server._file(unquote(self.path.split("?")[0]))
                if path is None:
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _file(self, url_path: str) -> Path | None:
        """The file a URL path names, or None (unknown repository, escape attempt, missing)."""
        first, _, rest = url_path.lstrip("/").partition("/")
        if not first.endswith(".git") or not rest:
            return None
        with self._lock:
            root = self.repos.get(first.removesuffix(".git"))
        if root is None:
            return None
        try:
            path = (root / rest).resolve()
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    def publish(self, repo: Path, name: str | None = None) -> str:
        """Serve repo as NAME.git (idempotent: refreshes it); returns its clone URL."""
        name = name or repo.name
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"not a usable repository name: {name!r}")
        subprocess.run(["git", "-C", str(repo), "update-server-info"], check=True,
                       capture_output=True)  # fmt: skip
        gitdir = subprocess.run(["git", "-C", str(repo), "rev-parse", "--absolute-git-dir"],
                                check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
        with self._lock:
            self.repos[name] = Path(gitdir).resolve()
        return self.url(name)

    def refresh(self, name: str) -> str:
        """Run update-server-info again for a published repository (after new commits)."""
        with self._lock:
            gitdir = self.repos[name]
        subprocess.run(["git", "--git-dir", str(gitdir), "update-server-info"], check=True,
                       capture_output=True)  # fmt: skip
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}.git"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
