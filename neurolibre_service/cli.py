"""The `neurolibre` command: for operators (database) and for running the service."""

from __future__ import annotations

import argparse
import sys

from .db.engine import upgrade


def _db_url(args: argparse.Namespace) -> str:
    if args.db_url:
        return args.db_url
    from .app import NeuroLibre

    app = NeuroLibre()
    argv = [f"--config={args.config}"] if args.config else []
    if args.data_dir:
        argv.append(f"--data-dir={args.data_dir}")
    app.initialize(argv)
    return app.db_url


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from .app import NeuroLibre

        NeuroLibre.launch_instance(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="neurolibre", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service (options: see `neurolibre serve --help-all`)")
    db = sub.add_parser("db", help="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply migrations up to the latest schema")
    up.add_argument("--db-url", help="database URL (default: from the service's config)")
    up.add_argument("--config", help="service config file (default: neurolibre_config.py)")
    up.add_argument("--data-dir", help="the service's data directory")
    up.add_argument("--revision", default="head")
    chk = sub.add_parser("check", help="check a preprint repository's layout (exit 1 on errors)")
    chk.add_argument("source", help="a local directory, or an https:// Git URL")
    chk.add_argument("--ref", default="HEAD", help="branch, tag or commit (for a URL)")
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    bld = sub.add_parser(
        "build",
        help="build a preprint on this machine as the service would: check, environment, "
        "data, book (exit 1 on failure)",
    )
    bld.add_argument("path", help="the preprint repository's directory (its files as they are)")
    bld.add_argument("--data-dir", default=None,
                     help="where environments, datasets and builds are kept "
                     "(default: ~/.cache/neurolibre)")  # fmt: skip
    bld.add_argument("--sandbox", choices=("bwrap", "none"), default=None,
                     help="confine build steps with bubblewrap (default when installed)")  # fmt: skip
    bld.add_argument("--builder", choices=("local", "docker"), default="local",
                     help="how the environment is built: 'local' (a Python virtual environment: "
                     "requirements.txt, runtime.txt, postBuild) or 'docker' (repo2docker: also "
                     "apt.txt, environment.yml, install.R, Project.toml, Dockerfile, start)")  # fmt: skip
    bld.add_argument("--time-limit", type=float, default=None,
                     help="seconds the book build may take (default 600)")  # fmt: skip
    bld.add_argument("--myst-themes", metavar="DIR", default=None,
                     help="a folder of MyST site themes, one folder per theme name "
                     "(article-theme/, book-theme/, each with its template.yml and "
                     "node_modules), for MyST books; default: <data dir>/myst-themes, where "
                     "a missing theme is downloaded once (needs internet access)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args)
    if args.command == "build":
        from .localbuild import build_working_tree

        return build_working_tree(args)
    if args.command == "db" and args.db_command == "upgrade":
        upgrade(_db_url(args), args.revision)
        print("database is at revision", args.revision)
    return 0


def _check(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile
    from pathlib import Path

    from . import sources
    from .checks import ERROR, as_json, check

    url = None
    if Path(args.source).is_dir():
        findings = check(Path(args.source))
    else:
        policy = sources.RepoPolicy()
        try:
            url = sources.validate_url(args.source, policy)
            ref = sources.validate_ref(args.ref)
            with tempfile.TemporaryDirectory() as tmp:

                async def fetch() -> None:
                    commit = await sources.resolve_ref(url, ref, policy)
                    await sources.checkout(url, commit, Path(tmp) / "repo", policy)

                asyncio.run(fetch())
                findings = check(Path(tmp) / "repo", url)
        except sources.SourceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.json:
        print(as_json(findings))
    else:
        for f in findings:
            print(f)
        errors = sum(f.level == ERROR for f in findings)
        print(f"{errors} error(s), {len(findings) - errors} warning(s)")
    return 1 if any(f.level == ERROR for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
