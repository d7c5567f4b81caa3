"""Confinement for untrusted build steps (package installs run the repository's code).

With bubblewrap, a step sees the system read-only, a private /tmp and /proc, its own pid
namespace, and may write only where it is told. The service's data directory and database
are replaced by empty directories, so a build cannot read them.
"""

from __future__ import annotations

import os
import shutil
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


class SandboxUnavailable(RuntimeError):
    pass


@dataclass
class Sandbox:
    """How to wrap a command. kind is "bwrap" or "none" (no confinement, by explicit choice)."""

    kind: str = "bwrap"
    hidden: Sequence[Path] = ()
    passthrough: Sequence[str] = DEFAULT_PASSTHROUGH
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.kind == "bwrap" and not shutil.which("bwrap"):
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed, and builds run confined by default. "
                "Install it (apt-get install bubblewrap), or set "
                "c.NeuroLibre.sandbox = 'none' to run builds unconfined (they can then read "
                "and write everything the service can)."
            )
        if self.kind not in ("bwrap", "none"):
            raise SandboxUnavailable(f"unknown sandbox {self.kind!r}: use 'bwrap' or 'none'")

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
    ) -> list[str]:
        self.check()
        if self.kind == "none":
            return list(argv)
        cmd = [
            "bwrap",
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
        ]  # fmt: skip
        hidden = [Path(p).resolve() for p in self.hidden]
        for p in hidden:
            if any(h in p.parents for h in hidden):
                continue  # already inside a hidden directory
            if p.is_dir():
                cmd += ["--tmpfs", str(p)]
            elif p.exists():
                cmd += ["--ro-bind", "/dev/null", str(p)]
        # binds after the hiding mounts win, so paths inside a hidden directory can be exposed
        for p in readable:
            cmd += ["--ro-bind", str(p), str(p)]
        for p in writable:
            Path(p).mkdir(parents=True, exist_ok=True)
            cmd += ["--bind", str(p), str(p)]
        cmd += [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--new-session",
        ]
        if cwd is not None:
            cmd += ["--chdir", str(cwd)]
        return [*cmd, "--", *argv]
