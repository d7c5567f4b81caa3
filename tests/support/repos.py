"""Small Git repositories made by the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_ID = ["-c", "user.name=Test Author", "-c", "user.email=author@example.invalid"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_ID, "-C", str(repo), *args], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


def make_repo(path: Path, files: dict[str, str], branch: str = "main") -> str:
    """Create a repository with one commit holding `files`; returns the commit SHA."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
    return commit(path, files, "Initial commit")


def commit(path: Path, files: dict[str, str], message: str = "Change") -> str:
    for name, content in files.items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")
