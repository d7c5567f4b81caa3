"""A PEP 503 package index on 127.0.0.1, so test builds install packages without the internet.

It serves real wheels (downloaded once from PyPI by the test setup, like any dependency) and
sdists the tests write, whose setup.py is the "repository code" a build runs.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jupyterhub


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return normalize(filename.split("-")[0])
    return normalize(filename.rsplit("-", 1)[0])


def server_wheels(cache: Path) -> Path:
    """Wheels for what every environment gets (jupyterhub matching ours, ipykernel, jupyterlab)."""
    reqs = [f"jupyterhub=={jupyterhub.__version__}", "ipykernel", "jupyterlab", "setuptools",
            "wheel"]  # fmt: skip
    return _wheels(cache, reqs)


# what the test preprints' binder/requirements.txt may list: a book engine, and matplotlib
# for the books' figures (13 of 20 real preprints plot with it, or with seaborn or nilearn)
BOOK_REQUIREMENTS = ["jupyter-book==1.0.4.post1", "matplotlib==3.10.8"]


def book_wheels(cache: Path) -> Path:
    """Wheels for the preprints' own requirements (Jupyter Book 1)."""
    return _wheels(cache, BOOK_REQUIREMENTS)


# a MyST book's requirements (mystmd runs on the machine's node; the kernel and Jupyter server
# come from server_wheels)
MYST_REQUIREMENTS = ["mystmd==1.11.0"]


def myst_wheels(cache: Path) -> Path:
    """Wheels for MyST books (mystmd)."""
    return _wheels(cache, MYST_REQUIREMENTS)


# a preprint pinned for Python 3.8 as published ones are: pins the hub's own stack cannot share
# (jupyterhub 6 needs Python >= 3.10, jsonschema >= 4, SQLAlchemy >= 1.4), and a widget library
# that ships a prebuilt JupyterLab extension (jupyterlab_widgets)
PY38_REQUIREMENTS = ["jsonschema==3.2.0", "SQLAlchemy==1.3.24", "ipywidgets==8.1.7"]


def _wheels(cache: Path, reqs: list[str]) -> Path:
    stamp_key = hashlib.sha256(" ".join(reqs).encode()).hexdigest()[:16]
    target = cache / f"wheels-{stamp_key}"
    stamp = target / ".complete"
    if not stamp.exists():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d",
             str(target), *reqs],
            check=True,
        )  # fmt: skip
        stamp.write_text("ok\n")
    return target


class PackageIndex:
    def __init__(self, dirs: list[Path]):
        self.dirs = dirs
        self.files: dict[str, Path] = {}
        for d in dirs:
            for f in d.iterdir():
                if f.suffix in (".whl", ".gz"):
                    self.files[f.name] = f
        self.extra_dir: Path | None = None
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._head_only = True
                self.do_GET()

            def do_GET(self):
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if parts[:1] == ["simple"] and len(parts) == 2:
                    project = normalize(parts[1])
                    links = [
                        f'<a href="/files/{html.escape(n)}#sha256={_sha(p)}">{html.escape(n)}</a>'
                        for n, p in sorted(index.files.items())
                        if _project_of(n) == project
                    ]
                    if not links:
                        self.send_error(404)
                        return
                    body = "<!doctype html><html><body>" + "<br>".join(links) + "</body></html>"
                    self._send(body.encode(), "text/html")
                elif parts[:1] == ["simple"]:
                    names = sorted({_project_of(n) for n in index.files})
                    body = "".join(f'<a href="/simple/{n}/">{n}</a>' for n in names)
                    self._send(body.encode(), "text/html")
                elif parts[:1] == ["files"] and len(parts) == 2 and parts[1] in index.files:
                    self._send(index.files[parts[1]].read_bytes(), "application/octet-stream")
                else:
                    self.send_error(404)

            def _send(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "none")
                self.end_headers()
                if not getattr(self, "_head_only", False):
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/simple"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add_sdist(self, directory: Path, name: str, version: str, setup_code: str,
                  modules: dict[str, str] | None = None) -> str:  # fmt: skip
        """A source distribution whose setup.py runs `setup_code` before setup().

        `modules` maps module names to their source, installed as top-level modules.
        """
        base = f"{name}-{version}"
        modules = modules or {}
        setup_py = textwrap.dedent(setup_code) + textwrap.dedent(f"""
            from setuptools import setup
            setup(name={name!r}, version={version!r}, py_modules={sorted(modules)!r})
        """)
        pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            files = [("setup.py", setup_py), ("PKG-INFO", pkg_info),
                     *((f"{m}.py", src) for m, src in modules.items())]  # fmt: skip
            for fname, content in files:
                data = content.encode()
                info = tarfile.TarInfo(f"{base}/{fname}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{base}.tar.gz"
        path.write_bytes(buf.getvalue())
        self.files[path.name] = path
        return f"{name}=={version}"

    def close(self) -> None:
        self.server.shutdown()


_sha_cache: dict[Path, str] = {}


def _sha(p: Path) -> str:
    if p not in _sha_cache:
        _sha_cache[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _sha_cache[p]


def cache_dir() -> Path:
    return Path(
        os.environ.get("NEUROLIBRE_TEST_CACHE", Path.home() / ".cache" / "neurolibre-tests")
    )


def bookworm_wheels(cache: Path) -> Path:
    """Wheels for Debian 12's Python (3.11.2), which the Docker tests' base image has: the latest
    soupsieve (beautifulsoup4's, for Jupyter Book and JupyterLab) asks for 3.11.5 or later."""
    target = cache / "wheels-python-3.11.2"
    if not (target / ".complete").exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                        "--python-version", "3.11.2", "--no-deps", "-d", str(target),
                        "soupsieve"], check=True)  # fmt: skip
        (target / ".complete").write_text("ok\n")
    return target


def add_wheels(index: PackageIndex, directory: Path) -> None:
    for f in directory.iterdir():
        if f.suffix == ".whl":
            index.files[f.name] = f
