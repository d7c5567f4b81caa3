"""The layout check as the service runs it: in a child process, confined, with a time limit.

A repository is hostile, so its check never runs in the service's event loop: a child
(`python -I -m neurolibre_service.checks_runner CHECKOUT`) reads the checkout, confined by the
sandbox like a build step (the checkout read-only), and prints its findings as one JSON line.
Past the time limit the child's whole process tree is killed and the author gets a finding that
says so; so does a child that dies or prints more than the output cap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .checks import ERROR, MAX_ENTRIES, MAX_FILE_SIZE, Checker, Finding, title_of
from .processes import _die_with_parent, kill_tree
from .sandbox import Sandbox

log = logging.getLogger("neurolibre.checks")
OUTPUT_LIMIT = 4 << 20  # the findings are capped (checks.MAX_FINDINGS): this is far above them
STDERR_TAIL = 4000


@dataclass
class CheckResult:
    findings: list[Finding]
    title: str | None = None  # the preprint's title (paper.md, or myst.yml's project:)


class CheckRunner:
    """Runs the check of a checkout in a confined child process (see the module's docstring)."""

    def __init__(self, sandbox: Sandbox | None = None, *, time_limit: float = 60.0,
                 max_file_size: int = MAX_FILE_SIZE, max_entries: int = MAX_ENTRIES,
                 output_limit: int = OUTPUT_LIMIT, allowed_indexes: Sequence[str] = (),
                 local_builder: bool = True):  # fmt: skip
        """allowed_indexes and local_builder: see checks.Checker (the local builder's index
        allow-list; whether its refusals of requirement lines apply)."""
        self.sandbox = sandbox
        self.time_limit = time_limit
        self.max_file_size = max_file_size
        self.max_entries = max_entries
        self.output_limit = output_limit
        self.allowed_indexes = tuple(allowed_indexes)
        self.local_builder = local_builder

    def argv(self, checkout: Path, repository_url: str | None) -> list[str]:
        # -I: the checkout (the child's cwd) is not on sys.path, so a yaml.py in it is not imported
        argv = [sys.executable, "-I", "-m", __name__, str(checkout),
                f"--max-file-size={self.max_file_size}", f"--max-entries={self.max_entries}"]  # fmt: skip
        if repository_url:
            argv.append(f"--url={repository_url}")
        argv += [f"--allowed-index={url}" for url in self.allowed_indexes]
        if not self.local_builder:
            argv.append("--not-local-builder")
        if self.sandbox is not None:
            # the checkout read-only, and our own code: the interpreter, the virtual environment
            # and the package itself (never its parent, which may hold the hidden data directory)
            code = {Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parent}
            argv = self.sandbox.wrap(argv, readable=[checkout, *sorted(code)], cwd=checkout,
                                     network=False)  # fmt: skip
        return argv

    async def run(self, checkout: Path, repository_url: str | None = None) -> CheckResult:
        checkout = checkout.resolve()
        proc = await asyncio.create_subprocess_exec(
            *self.argv(checkout, repository_url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=checkout,
            # nothing of the service's environment (tokens) but what builds may see
            env=(self.sandbox or Sandbox("none")).env(),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        stderr = bytearray()
        try:
            out = await asyncio.wait_for(self._collect(proc, stderr), self.time_limit)
        except TimeoutError:
            return CheckResult([Finding(
                ERROR, None, None, f"The layout check did not finish within "
                f"{self.time_limit:g} seconds, so it was stopped.", "Make the repository smaller: "
                "keep data out of it (data_requirement.json fetches it at build time) and remove "
                "very large files or folders with very many files.",
            )])  # fmt: skip
        finally:
            if proc.returncode is None:  # timed out, too much output, or we were cancelled
                kill_tree(proc.pid)
            # to the pipes' end, so the transport closes while its loop runs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.communicate(), 5)
        if out is None:
            return self._broken(checkout, f"more than {self.output_limit} bytes of output", stderr)
        if proc.returncode != 0:
            return self._broken(checkout, f"exit status {proc.returncode}", stderr)
        try:
            report = json.loads(out)
            findings = [Finding(**f) for f in report["findings"]]
            title = report.get("title")
        except (ValueError, TypeError, KeyError):
            return self._broken(checkout, "output that is not its report", stderr)
        return CheckResult(findings, title if isinstance(title, str) else None)

    async def _collect(self, proc: asyncio.subprocess.Process, stderr: bytearray) -> bytes | None:
        """The child's stdout, or None when it passed the cap (the child is then killed)."""

        async def out() -> bytes | None:
            buf = bytearray()
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                buf += chunk
                if len(buf) > self.output_limit:
                    kill_tree(proc.pid)  # its pipes close, so err() ends too
                    return None
            return bytes(buf)

        async def err() -> None:  # keep the tail, for the operator's log
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(65536):
                stderr[:] = (stderr + chunk)[-STDERR_TAIL:]

        result, _ = await asyncio.gather(out(), err())
        await proc.wait()
        return result

    def _broken(self, checkout: Path, what: str, stderr: bytearray) -> CheckResult:
        log.warning("layout check of %s failed (%s): %s", checkout, what,
                    stderr.decode("utf-8", "replace").strip()[-STDERR_TAIL:])  # fmt: skip
        return CheckResult([Finding(
            ERROR, None, None, "The layout check stopped unexpectedly, so the repository could "
            "not be checked.", "Try again; if it happens again, tell the service's "
            "administrators (the service's log says why).",
        )])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a checkout; print the report as JSON.")
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--url", default=None, help="the submitted repository URL")
    parser.add_argument("--max-file-size", type=int, default=MAX_FILE_SIZE)
    parser.add_argument("--max-entries", type=int, default=MAX_ENTRIES)
    parser.add_argument("--allowed-index", action="append", default=[])
    parser.add_argument("--not-local-builder", action="store_true")
    args = parser.parse_args(argv)
    checker = Checker(args.checkout, args.url, max_file_size=args.max_file_size,
                      max_entries=args.max_entries, allowed_indexes=args.allowed_index,
                      local_builder=not args.not_local_builder)  # fmt: skip
    findings = checker.run()
    report = {"findings": [asdict(f) for f in findings], "title": title_of(checker.front)}
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
