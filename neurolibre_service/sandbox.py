"""Confinement for untrusted steps: package installs, data `src` code, notebooks, book tools.

With bubblewrap, a step sees the system read-only, private /tmp, /dev/shm, /proc, IPC and pid
namespaces, and may write only where it is told. The service's data directory and database are
replaced by empty directories. Bubblewrap's mounts are made before the step starts and, seen
from the step, are locked: it cannot unmount them to uncover what they hide.

The step itself never runs with privileges:
- as root, the service makes bubblewrap start the step through `setpriv` as a dedicated
  unprivileged user (`build_user`), with no capabilities (empty bounding set), no_new_privs;
- as an ordinary user, bubblewrap runs unprivileged in a user namespace and drops every
  capability; the step runs as the service's own user (the hidden paths still hold, but
  unix permissions no longer separate the step from the service's files: see the README).
Resource limits (memory, CPU time, processes, open files, file size, no core dumps) are set
with `prlimit` inside the sandbox, so they bind the step and everything it forks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# what a build may inherit from the service's environment (certificates, proxies, indexes)
DEFAULT_PASSTHROUGH = (
    "LANG",
    "LC_ALL",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_NATIVE_TLS",
    "UV_SYSTEM_CERTS",
)

DEFAULT_BUILD_USER = "neurolibre-build"


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits of a confined step (None: no limit of that kind).

    memory is RLIMIT_DATA (heap and private mappings: what an allocation takes), processes is
    RLIMIT_NPROC (counted per user: every step of the build user together)."""

    memory: int | None = 4 << 30
    cpu_seconds: int | None = 3600
    processes: int | None = 1024
    open_files: int | None = 4096
    file_size: int | None = 16 << 30

    def prlimit(self, prlimit: str) -> list[str]:
        argv = [prlimit, "--core=0"]
        for flag, value in (("--data", self.memory), ("--cpu", self.cpu_seconds),
                            ("--nproc", self.processes), ("--nofile", self.open_files),
                            ("--fsize", self.file_size)):  # fmt: skip
            if value is not None:
                argv.append(f"{flag}={value}")
        return [*argv, "--"]


@dataclass
class Sandbox:
    """How to wrap a command. kind is "bwrap" or "none" (no confinement, by explicit choice)."""

    kind: str = "bwrap"
    hidden: Sequence[Path] = ()
    passthrough: Sequence[str] = DEFAULT_PASSTHROUGH
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # the unprivileged user steps run as when the service is root (a name or a number)
    build_user: str = DEFAULT_BUILD_USER
    limits: Limits = field(default_factory=Limits)

    @property
    def confined(self) -> bool:
        return self.kind == "bwrap"

    @property
    def switches_user(self) -> bool:
        """Whether steps run as build_user (the service is root) rather than as the service."""
        return self.confined and os.geteuid() == 0

    def ids(self) -> tuple[int, int]:
        """The uid and gid confined steps run as."""
        if not self.switches_user:
            return os.geteuid(), os.getegid()
        try:
            pw = pwd.getpwnam(self.build_user) if not self.build_user.isdigit() else (
                pwd.getpwuid(int(self.build_user)))  # fmt: skip
        except KeyError:
            raise SandboxUnavailable(
                f"The build user {self.build_user!r} does not exist. Builds never run as root: "
                "create it (scripts/install.sh does: useradd --system --no-create-home --shell "
                f"/usr/sbin/nologin {self.build_user}), or set c.NeuroLibre.build_user to "
                "another unprivileged user."
            ) from None
        if pw.pw_uid == 0 or pw.pw_gid == 0:
            raise SandboxUnavailable(f"The build user {self.build_user!r} is root; choose an "
                                     "unprivileged user for c.NeuroLibre.build_user.")  # fmt: skip
        return pw.pw_uid, pw.pw_gid

    def check(self) -> None:
        if self.kind not in ("bwrap", "none"):
            raise SandboxUnavailable(f"unknown sandbox {self.kind!r}: use 'bwrap' or 'none'")
        if self.kind != "bwrap":
            return
        missing = [t for t in ("bwrap", "prlimit") + (("setpriv",) if self.switches_user else ())
                   if not shutil.which(t)]  # fmt: skip
        if missing:
            raise SandboxUnavailable(
                f"{', '.join(missing)} not installed, and builds run confined by default. "
                "Install bubblewrap and util-linux (apt-get install bubblewrap util-linux), or "
                "set c.NeuroLibre.sandbox = 'none' to run builds unconfined (they can then read "
                "and write everything the service can)."
            )
        self.ids()

    def env(self, path_prefix: Sequence[str] = (), extra: Mapping[str, str] = ()) -> dict[str, str]:
        """A clean environment: nothing of the service's (tokens!) but the allowed names."""
        env = {k: os.environ[k] for k in self.passthrough if k in os.environ}
        env.update(
            PATH=os.pathsep.join([*path_prefix, "/usr/local/bin", "/usr/bin", "/bin"]),
            HOME="/tmp",
            TMPDIR="/tmp",
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def wrap(
        self,
        argv: Sequence[str],
        *,
        writable: Sequence[Path] = (),
        readable: Sequence[Path] = (),
        cwd: Path | None = None,
        network: bool = True,
        limits: Limits | None = None,
    ) -> list[str]:
        """argv confined: `writable` directories must be lent to the build user first (lend)."""
        self.check()
        if self.kind == "none":
            return list(argv)
        cmd = [
            "bwrap",
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/dev/shm",
            "--proc", "/proc",
            "--perms", "1777", "--tmpfs", "/tmp",
        ]  # fmt: skip
        # the service user's home too: its credentials (~/.docker, ~/.pypirc) are not the
        # build's, and tools kept there (pyenv) are exposed one by one as `readable`
        home = Path.home().resolve()
        extra = [home] if home != Path("/") and home.is_dir() else []
        hidden = [Path(p).resolve() for p in [*self.hidden, *extra]]
        for p in hidden:
            if any(h in p.parents for h in hidden):
                continue  # already inside a hidden directory
            if p.is_dir():
                cmd += ["--tmpfs", str(p)]
            elif p.exists():
                cmd += ["--ro-bind", "/dev/null", str(p)]
        # bubblewrap makes the parents of a mount point inside a tmpfs (/tmp, a hidden
        # directory) with their real modes; a 0700 parent would shut the build user out
        tmpfs_roots = [Path("/tmp"), *(h for h in hidden if h.is_dir())]
        parents = {a for p in [*readable, *writable] for a in Path(p).parents
                   if any(r in a.parents for r in tmpfs_roots)}  # fmt: skip
        for a in sorted(parents, key=lambda a: len(a.parts)):
            cmd += ["--perms", "0755", "--dir", str(a)]
        # binds after the hiding mounts win, so paths inside a hidden directory can be exposed
        for p in readable:
            cmd += ["--ro-bind", str(p), str(p)]
        for p in writable:
            Path(p).mkdir(parents=True, exist_ok=True)
            cmd += ["--bind", str(p), str(p)]
        cmd += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        if not network:
            cmd.append("--unshare-net")  # loopback only, and nothing of the host's listens there
        if not self.switches_user:
            # unprivileged bubblewrap: a user namespace without capabilities, and no nested ones
            cmd += ["--unshare-user", "--disable-userns"]
        cmd += ["--die-with-parent", "--new-session"]
        if cwd is not None:
            cmd += ["--chdir", str(cwd)]
        cmd += ["--", *(limits or self.limits).prlimit(shutil.which("prlimit") or "prlimit")]
        if self.switches_user:
            uid, gid = self.ids()
            cmd += [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={gid}",
                    "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
                    "--no-new-privs", "--"]  # fmt: skip
        return [*cmd, *argv]

    def lend(self, *paths: Path) -> None:
        """Give directory trees to the build user, so a confined step may write them."""
        if not self.switches_user:
            return
        uid, gid = self.ids()
        for p in paths:
            chown_tree(Path(p), uid, gid)

    def reclaim(self, *paths: Path) -> None:
        """Take directory trees back from the build user once its step is over: owned by the
        service, writable by nobody else, no set-id bits. Nothing later in the tree can be
        changed by a build any more."""
        for p in paths:
            freeze_tree(Path(p), os.geteuid(), os.getegid())


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give a tree to uid:gid without following symbolic links (a link in it must not hand
    over a file outside it)."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            try:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
            except FileNotFoundError:
                pass


_KEEP = ~(stat.S_IWGRP | stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID) & 0o7777


def freeze_tree(top: Path, uid: int, gid: int) -> None:
    """Own a tree as uid:gid, drop group/other write and set-id bits; symbolic links are
    changed themselves, never followed."""

    def fix(path: str) -> None:
        st = os.lstat(path)
        if st.st_uid != uid or st.st_gid != gid:
            os.chown(path, uid, gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & ~_KEEP:
            os.chmod(path, stat.S_IMODE(st.st_mode) & _KEEP)

    if not top.exists() and not top.is_symlink():
        return
    fix(str(top))
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            try:
                fix(os.path.join(root, name))
            except FileNotFoundError:
                pass
