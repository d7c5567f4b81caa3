"""A private Docker engine for the tests, and the small Debian image their builds start FROM.

The engine is Debian's dockerd started by scripts/docker-engine.sh (as an operator would), with
its own sockets and state in a temporary directory, no bridge and no iptables rules: containers
and builds use host networking, so they reach only what listens on this machine.

No image can be pulled here, so the base image is made from Debian packages: debootstrap, the
machine's CA bundle, `docker import`. The root file system is kept as a tarball in the test
cache, so only the first run on a machine runs debootstrap (about a minute).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .pkgindex import cache_dir

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "docker-engine.sh"
BASE_IMAGE = "neurolibre-test-base:bookworm"
SUITE = "bookworm"
PACKAGES = "python3,python3-venv,python3-pip,git,ca-certificates"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CONFIG = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    f"ENV PIP_CERT={CA_BUNDLE}",
    'CMD ["/bin/bash"]',
]


def missing_tools() -> list[str]:
    """What this machine lacks to run the docker tests (Debian package names)."""
    wanted = {"docker.io": ("dockerd", "docker"), "debootstrap": ("debootstrap",),
              "docker-registry": ("docker-registry",), "apache2-utils": ("htpasswd",)}  # fmt: skip
    return [pkg for pkg, tools in wanted.items() if not all(map(shutil.which, tools))]


class DockerDaemon:
    """dockerd with everything under one short temporary directory (sockets must be short)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nl-docker-", dir="/tmp"))
        self.host = ""

    def start(self) -> str:
        out = subprocess.run(["bash", str(SCRIPT), "start", str(self.dir)], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        self.host = out.strip().splitlines()[-1].removeprefix("DOCKER_HOST=")
        return self.host

    def docker(self, *args: str, input: bytes | None = None, check: bool = True,
               stdin=None) -> subprocess.CompletedProcess:  # fmt: skip
        return subprocess.run(["docker", "-H", self.host, *args], input=input, stdin=stdin,
                              capture_output=True, check=check)  # fmt: skip

    def log(self) -> str:
        try:
            return (self.dir / "dockerd.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.dir)], check=False)
        mounts = Path("/proc/mounts").read_text()
        if f" {self.dir}/" in mounts:
            return  # something is still mounted under it: leave it rather than harm it
        shutil.rmtree(self.dir, ignore_errors=True)


def rootfs_tarball() -> Path:
    """The base image's root file system as a tarball, made once per machine by debootstrap."""
    stamp = hashlib.sha256(f"{SUITE} {PACKAGES} v1".encode()).hexdigest()[:12]
    tarball = cache_dir() / f"debootstrap-{SUITE}-{stamp}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    mirror = os.environ.get("NEUROLIBRE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    try:
        root = work / "root"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE,
                        str(root), mirror], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        # smaller: no downloaded packages nor package lists
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / d).glob("*"):
                if p.is_file():
                    p.unlink()
        if CA_BUNDLE.exists():
            shutil.copyfile(CA_BUNDLE, root / CA_BUNDLE.relative_to("/"))
        partial = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."],
                       check=True)  # fmt: skip
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def ensure_base_image(daemon: DockerDaemon) -> str:
    """BASE_IMAGE on the engine, imported from the cached root file system."""
    if daemon.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    tarball = rootfs_tarball()
    changes = [a for c in IMAGE_CONFIG for a in ("--change", c)]
    with tarball.open("rb") as f:
        daemon.docker("import", *changes, "-", BASE_IMAGE, stdin=f)
    return BASE_IMAGE


class Registry:
    """Debian's docker-registry on 127.0.0.1, with one user (htpasswd, bcrypt)."""

    def __init__(self, user: str, password: str) -> None:
        from .hub import free_port

        self.dir = Path(tempfile.mkdtemp(prefix="nl-registry-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.user, self.password = user, password
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        htpasswd = subprocess.run(["htpasswd", "-Bbn", self.user, self.password], check=True,
                                  capture_output=True, text=True).stdout  # fmt: skip
        (self.dir / "htpasswd").write_text(htpasswd)
        (self.dir / "config.yml").write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            f"http:\n  addr: {self.address}\n"
            f"auth:\n  htpasswd:\n    realm: test\n    path: {self.dir / 'htpasswd'}\n"
        )
        log = (self.dir / "registry.log").open("wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.dir / "config.yml")],
                                     stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        import httpx

        for _ in range(100):
            try:
                httpx.get(f"http://{self.address}/v2/", timeout=1)
                return self.address
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the registry did not start: " + (self.dir / "registry.log").read_text())

    def catalog(self) -> list[str]:
        import httpx

        r = httpx.get(f"http://{self.address}/v2/_catalog", auth=(self.user, self.password))
        r.raise_for_status()
        return r.json()["repositories"]

    def tags(self, repository: str) -> list[str]:
        import httpx

        r = httpx.get(f"http://{self.address}/v2/{repository}/tags/list",
                      auth=(self.user, self.password))  # fmt: skip
        return r.json().get("tags") or [] if r.status_code == 200 else []

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
