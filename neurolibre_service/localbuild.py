"""`neurolibre build PATH`: the service's own pipeline, run once on the author's machine.

The same check, environment, data and book stages as the online service (same code, same
confinement), with a private SQLite store under the data directory and logs on the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import sys
from pathlib import Path

from .logs import LogLine
from .preprints import LOGGED_STAGES, stage_log_key


async def _follow(app, key: str, prefix: str, out) -> None:
    async for batch in app.logs.follow(key, 0):
        for item in batch:
            if isinstance(item, LogLine):
                print(f"{prefix}{item.text}", file=out, flush=True)


async def _run(args: argparse.Namespace) -> int:
    from .app import NeuroLibre
    from .jobs import InstanceLocked

    # as root, builds run as the unprivileged build user, who cannot enter root's home
    default = (
        Path("/var/cache/neurolibre") if os.geteuid() == 0 else Path.home() / ".cache/neurolibre"
    )
    data_dir = Path(args.data_dir or default).resolve()
    argv = [f"--NeuroLibre.data_dir={data_dir}", "--NeuroLibre.config_file="]
    sandbox = args.sandbox or ("bwrap" if shutil.which("bwrap") else "none")
    argv.append(f"--NeuroLibre.sandbox={sandbox}")
    argv.append(f"--NeuroLibre.builder={getattr(args, 'builder', None) or 'local'}")
    if args.time_limit:
        argv.append(f"--LocalBookRunner.time_limit={args.time_limit}")
    if getattr(args, "myst_themes", None):  # either runner: the one --builder picks
        themes = Path(args.myst_themes).expanduser().resolve()
        argv += [f"--{runner}.myst_themes_dir={themes}"
                 for runner in ("LocalBookRunner", "DockerBookRunner")]  # fmt: skip
    app = NeuroLibre()
    app.initialize(argv)
    try:
        await app.setup()
    except InstanceLocked as e:  # another build (or a service) uses this data directory
        print(f"neurolibre build: {e}", file=sys.stderr)
        return 1
    if sandbox == "none":
        print("note: bubblewrap is not installed: build steps run unconfined", file=sys.stderr)
    try:
        _p, build = await app.preprints.submit_working_tree(getpass.getuser(), Path(args.path))
        job_id = build.job_id
        followers = [
            asyncio.create_task(_follow(app, stage_log_key(job_id, s), f"[{s}] ", sys.stdout))
            for s in LOGGED_STAGES
        ]
        await app.datasets.recover()
        await app.queue.start()
        await _follow(app, stage_log_key(job_id, "main"), "", sys.stdout)
        await asyncio.sleep(0.1)  # let the stage followers print their last lines
        for f in followers:
            f.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        _p, build = await app.preprints.get_build(build.id, "", True)
        if build.job.status.value != "succeeded":
            print(f"\nFAILED at the {build.failed_stage or '?'} stage: {build.job.error}",
                  file=sys.stderr)  # fmt: skip
            return 1
        index = app.preprints.html_dir(build.id) / "index.html"
        print(f"\nBuilt: {index.as_uri()}")
        print(f"Notebooks: {build.executed or 0} executed, {build.cached or 0} from the cache.")
        return 0
    finally:
        await app.queue.stop()
        await app.db.close()


def build_working_tree(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
