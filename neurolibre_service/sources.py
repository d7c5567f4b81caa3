"""Repository URLs and refs: validation, ref -> commit resolution, and checkouts.

Git runs in the service (it does not execute repository code), with only the https and
(when configured) local transports enabled: no `ext::`, no `file://` URLs typed by users,
no option injection (every user value comes after `--`).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# a conservative subset of git check-ref-format: no leading '-', no '..', no '@{', no control
REF_RE = re.compile(r"(?!-)(?!.*\.\.)(?!.*@\{)(?!.*//)[A-Za-z0-9._/@+-]{1,255}(?<![./])")


class SourceError(ValueError):
    """A repository or ref the user gave cannot be used; the message says why."""


@dataclass(frozen=True)
class RepoPolicy:
    schemes: Sequence[str] = ("https",)
    local_roots: Sequence[str] = ()
    git_timeout: float = 60.0


def validate_url(url: str, policy: RepoPolicy) -> str:
    """Return the normalised repository location, or raise SourceError."""
    url = (url or "").strip()
    if not url:
        raise SourceError("A repository URL is required.")
    if any(c.isspace() or ord(c) < 32 for c in url) or len(url) > 2000:
        raise SourceError("The repository URL contains spaces or control characters.")
    if url.startswith("-"):
        raise SourceError("The repository URL may not start with '-'.")
    if url.startswith("/"):
        return _validate_local(url, policy)
    if "::" in url.split("/", 1)[0]:
        raise SourceError("Git remote helpers (such as ext::) are not allowed.")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        allowed = " or ".join(f"{s}://" for s in policy.schemes)
        local = " or a local path under an allowed root" if policy.local_roots else ""
        raise SourceError(f"The repository URL must start with {allowed}{local} (got {url!r}).")
    if not parts.hostname:
        raise SourceError("The repository URL has no host name.")
    if parts.username or parts.password:
        raise SourceError(
            "Do not put credentials in the repository URL; only public repositories can be built."
        )
    if parts.query or parts.fragment:
        raise SourceError("The repository URL may not have a query (?) or fragment (#).")
    return url


def _validate_local(path: str, policy: RepoPolicy) -> str:
    if not policy.local_roots:
        raise SourceError("Local repository paths are not allowed on this service; use https://.")
    real = Path(path).resolve()
    for root in policy.local_roots:
        root_real = Path(root).resolve()
        if real == root_real or root_real in real.parents:
            break
    else:
        raise SourceError(f"{path} is outside the local repository roots this service allows.")
    if not (real / ".git").exists() and not (real / "HEAD").is_file():
        raise SourceError(f"{path} is not a Git repository.")
    return str(real)


def validate_ref(ref: str) -> str:
    ref = (ref or "").strip() or "HEAD"
    if not REF_RE.fullmatch(ref):
        raise SourceError(
            f"{ref!r} is not a valid branch, tag or commit name "
            "(letters, digits and . _ / @ + - only; it may not start with '-' or contain '..')."
        )
    return ref


def _git_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        **{k: os.environ[k] for k in ("SSL_CERT_FILE", "GIT_SSL_CAINFO", "HTTPS_PROXY",
                                       "https_proxy", "NO_PROXY", "no_proxy") if k in os.environ},
    }  # fmt: skip


def _git_args(url: str) -> list[str]:
    args = ["git", "-c", "protocol.allow=never", "-c", "protocol.https.allow=always"]
    args += ["-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false"]
    if url.startswith("/"):
        args += ["-c", "protocol.file.allow=always"]
    if url.startswith("http://"):
        args += ["-c", "protocol.http.allow=always"]
    return args


async def git(*args: str, url: str, cwd: Path | None = None, timeout: float = 60.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        *_git_args(url),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=_git_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SourceError(f"git {args[0]} took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip().splitlines()
        raise SourceError(msg[-1] if msg else f"git {args[0]} failed")
    return out.decode()


async def resolve_ref(url: str, ref: str, policy: RepoPolicy) -> str:
    """The commit a ref names now (branch, tag, HEAD) or the full SHA itself."""
    if SHA_RE.fullmatch(ref):
        return ref
    try:
        out = await git("ls-remote", "--", url, ref, *([] if ref == "HEAD" else [f"{ref}^{{}}"]),
                        url=url, timeout=policy.git_timeout)  # fmt: skip
    except SourceError as e:
        raise SourceError(f"Cannot read the repository {url}: {e}") from None
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in found:
            return found[name]
    raise SourceError(f"The repository {url} has no branch or tag named {ref!r}.")


async def checkout(url: str, commit: str, dest: Path, policy: RepoPolicy) -> None:
    """A shallow checkout of one commit into dest (created; must not exist)."""
    dest.mkdir(parents=True)
    t = policy.git_timeout
    await git("init", "-q", str(dest), url=url, timeout=t)
    try:
        await git("fetch", "-q", "--depth=1", "--", url, commit, url=url, cwd=dest, timeout=t)
    except SourceError:
        # servers that refuse fetching by SHA: fetch all branches and tags, then pick it
        await git("fetch", "-q", "--tags", "--", url, "+refs/heads/*:refs/remotes/origin/*",
                  url=url, cwd=dest, timeout=t)  # fmt: skip
    try:
        await git("checkout", "-q", "--detach", commit, url=url, cwd=dest, timeout=t)
    except SourceError:
        raise SourceError(f"Commit {commit} is not in {url}.") from None
