"""Repository URLs and refs: validation, ref -> commit resolution, and checkouts.

Git runs in the service (it does not execute repository code), with only the https and
(when configured) local transports enabled: no `ext::`, no `file://` URLs typed by users,
no option injection (every user value comes after `--`), no credential helpers or prompts.

Every git step has a deadline: a transfer during which the server sends nothing for
`git_stall_time` seconds is aborted by git itself (curl's low-speed limit), and past
`git_timeout` seconds the whole process tree is killed (git's remote helpers too: a TLS
handshake that never completes is not covered by the low-speed limit, nor by any git option).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .processes import run_captured

SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# a conservative subset of git check-ref-format: no leading '-', no '..', no '@{', no control
REF_RE = re.compile(r"(?!-)(?!.*\.\.)(?!.*@\{)(?!.*//)[A-Za-z0-9._/@+-]{1,255}(?<![./])")


class SourceError(ValueError):
    """A repository or ref the user gave cannot be used; the message says why."""


class SourceTimeout(SourceError):
    """A git step did not finish in time; the message says which."""


@dataclass(frozen=True)
class RepoPolicy:
    schemes: Sequence[str] = ("https",)
    local_roots: Sequence[str] = ()
    git_timeout: float = 60.0  # one git step, start to end
    git_stall_time: float = 30.0  # a transfer receiving nothing this long is aborted


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


def _git_args(url: str, stall_time: float) -> list[str]:
    args = ["git", "-c", "protocol.allow=never", "-c", "protocol.https.allow=always"]
    args += ["-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false"]
    # an empty value clears helpers from the user's config: nothing asks for or stores secrets
    args += ["-c", "credential.helper="]
    # "less than 1 byte/s for N s": the server sent nothing at all (keep-alives count)
    args += ["-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={max(1, round(stall_time))}"]
    if url.startswith("/"):
        args += ["-c", "protocol.file.allow=always"]
    if url.startswith("http://"):
        args += ["-c", "protocol.http.allow=always"]
    return args


def _seconds(t: float) -> str:
    return f"{t:.0f} s" if t >= 10 else f"{t:g} s"


async def git(*args: str, url: str, step: str, cwd: Path | None = None,
              policy: RepoPolicy = RepoPolicy(), network: bool = True) -> str:  # fmt: skip
    """Run one git step; `step` names it in messages ("Fetching https://...")."""
    stall = min(policy.git_stall_time, policy.git_timeout)
    try:
        code, out, err = await run_captured([*_git_args(url, stall), *args], cwd=cwd,
                                            env=_git_env(), timeout=policy.git_timeout)  # fmt: skip
    except TimeoutError:
        why = " (no answer from the server, or too slow an answer)" if network else ""
        raise SourceTimeout(
            f"{step} timed out after {_seconds(policy.git_timeout)}{why}."
        ) from None
    if code != 0:
        msg = err.decode(errors="replace").strip().splitlines()
        if any("Operation too slow" in line for line in msg):  # curl's low-speed limit
            raise SourceTimeout(f"{step} timed out: the server sent nothing for {_seconds(stall)}.")
        raise SourceError(msg[-1] if msg else f"git {args[0]} failed")
    return out.decode()


async def resolve_ref(url: str, ref: str, policy: RepoPolicy) -> str:
    """The commit a ref names now (branch, tag, HEAD) or the full SHA itself."""
    if SHA_RE.fullmatch(ref):
        return ref
    try:
        out = await git("ls-remote", "--", url, ref, *([] if ref == "HEAD" else [f"{ref}^{{}}"]),
                        url=url, step=f"Reading the branches and tags of {url}",
                        policy=policy)  # fmt: skip
    except SourceTimeout:
        raise
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
    p = policy
    await git(
        "init", "-q", str(dest), url=url, step="Preparing the checkout", policy=p, network=False
    )
    fetching = f"Fetching {url}"
    try:
        await git("fetch", "-q", "--depth=1", "--", url, commit, url=url, cwd=dest,
                  step=fetching, policy=p)  # fmt: skip
    except SourceTimeout:
        raise  # a server that does not answer is not asked again
    except SourceError:
        # servers that refuse fetching by SHA: fetch all branches and tags, then pick it
        await git("fetch", "-q", "--tags", "--", url, "+refs/heads/*:refs/remotes/origin/*",
                  url=url, cwd=dest, step=fetching, policy=p)  # fmt: skip
    try:
        await git("checkout", "-q", "--detach", commit, url=url, cwd=dest,
                  step=f"Checking out {commit}", policy=p, network=False)  # fmt: skip
    except SourceTimeout:
        raise
    except SourceError:
        raise SourceError(f"Commit {commit} is not in {url}.") from None
