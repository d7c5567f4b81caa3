"""Books: the book in a checkout, re-executed in its built environment.

One engine per book format knows how to prepare the checkout, which command builds it and
where the results are:
- Jupyter Book 1 (content/_config.yml + _toc.yml, or at the repository root; content/
  _neurolibre.yml's single page): the jupyter-book the author pinned, in their environment;
- MyST (myst.yml): the service's own pinned mystmd, its Jupyter server from the service's
  server environment, the notebooks on a kernel of the author's environment, the page drawn
  with the theme myst.yml names (mystthemes).
The book is found as the layout check finds it (booklayout). One runner per place a build can
run (on this machine under bubblewrap; in a container of the environment's Docker image) looks
into the environment (`environment()`: its Python, its book programs and their versions, as
seen where the build runs) and runs the engine's commands, with each dataset at
`data/<projectName>`, read-only.

Notebooks are re-executed on every build, but through an execution cache handed from one build
of a repository to the next: a notebook whose code did not change takes its outputs from the
cache, so a commit that edits only prose executes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import yaml
from traitlets import Any, Bool, Dict, Float, Instance, Int, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import booklayout
from . import docker_engine as de
from .checks import PROJECT_NAME_RE
from .environments.docker import memory_bytes
from .environments.local import base_prefixes
from .environments.service_envs import ServiceEnvironment, ServiceEnvironmentError
from .jobs import JobContext, JobFailed
from .mystthemes import (
    PINNED_THEMES,
    THEME_URL,
    ThemeRequestError,
    ThemeStore,
    ThemeUnavailable,
    requested_theme,
)
from .processes import LineCutter
from .safefiles import UnsafeFile, read_text_confined, remove_special_files
from .sandbox import Sandbox, chown_tree, freeze_tree
from .units import duration

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# the token of the Jupyter server a book starts (MyST prints its URL): not for the log
SERVER_TOKEN = re.compile(r"([?&]token=)[^\s&]+")
# myst-nb's log lines: "<path>: Executed notebook in 1.2 seconds [mystnb]" and friends
EXECUTING = re.compile(r"^(?P<path>\S.*?): Executing notebook using")
EXECUTED = re.compile(r"^(?P<path>\S.*?): Executed notebook in")
CACHED = re.compile(r"^(?P<path>\S.*?): Using cached notebook: ID=")
FAILED = re.compile(r"^(?P<path>\S.*?): WARNING: Executing notebook failed")
CACHE_ID = re.compile(r": (?:Using cached notebook|Cached executed notebook): ID=(?P<id>\d+)")
CACHE_IN_CHECKOUT = ".neurolibre-exec-cache"  # where a build's execution cache lives
JB1_EXCLUDED = ("_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints")  # its defaults
# not pages of a Jupyter Book at the repository root: the service's folders, the datasets
ROOT_EXCLUDED = (".neurolibre-*", "data", "binder")
NOTEBOOK_SUFFIXES = (".ipynb", ".md", ".myst", ".py")

# MyST's log lines (mystmd 1.x; jupyter-book 2 is the same program), paths relative to myst.yml
MYST_EXECUTING = re.compile(r"^\U0001f4bf Executing notebook \((?P<path>.+)\) \[")
MYST_CACHED = re.compile(r"^\U0001f4be Adding cached notebook outputs \((?P<path>.+)\)$")
MYST_BUILT = re.compile(r"^\U0001f4d6 Built (?P<path>.+) in ")
MYST_ERROR = re.compile(
    r"^\u26d4\ufe0f? (?P<path>.+?) (?P<what>An exception occurred during "
    r"(?:code execution|expression evaluation)|Notebook does not declare "
    r"the necessary 'kernelspec'|Could not load Jupyter session manager)"
)
MYST_NO_KERNEL = re.compile(r"^Unable to create a new kernel (?P<name>\S+)")
# what ends a notebook's error in the log: MyST's next message
MYST_MESSAGE = re.compile(
    r"^(?:\U0001f4d6|\u26d4|\u26a0|\U0001f4bf|\U0001f4be|\U0001f4da|"
    r"\U0001f680|\U0001fa90|\U0001f50c|Starting WebSocket|neurolibre: )"
)
MYST_CACHE_USED = re.compile(r"^neurolibre: execution cache entry used: (?P<name>\S+)$")
MYST_WORK = ".neurolibre-myst"  # in the checkout: the Jupyter settings and the cache probe
# loaded into MyST's node (NODE_OPTIONS=--require): says which cache entries the build reads
MYST_CACHE_PROBE = """\
// NeuroLibre: name the execution cache entries MyST reads, so the others can be dropped.
const fs = require("node:fs");
const path = require("node:path");
const dir = process.env.NEUROLIBRE_MYST_CACHE;
if (dir) {
  const readFileSync = fs.readFileSync;
  fs.readFileSync = function (file, ...rest) {
    if (typeof file === "string" && path.dirname(path.resolve(file)) === dir) {
      process.stderr.write(`neurolibre: execution cache entry used: ${path.basename(file)}\\n`);
    }
    return readFileSync.call(this, file, ...rest);
  };
}
"""


class BookError(JobFailed):
    """The repository's book cannot be built as it is; the message tells its author why."""


@dataclass(frozen=True)
class BookSource:
    engine: str  # "jupyter-book" (Jupyter Book 1: _config.yml + _toc.yml) or "myst" (myst.yml)
    root: Path  # content/ (or the root) for Jupyter Book 1; the folder of myst.yml for MyST
    # content/_neurolibre.yml's single_page, and whether its traditional layout makes that page
    # the whole book (NeuroLibre built `jupyter-book build --builder singlehtml content/<page>`)
    single_page: str | None = None
    traditional: bool = False


# what a runner finds out about an environment: these distributions' versions, these programs
DISTRIBUTIONS = ("jupyter_book", "mystmd", "jupyter_server", "ipykernel", "jupyter_cache")
COMMANDS = ("jupyter-book", "myst")


@dataclass(frozen=True)
class EnvInfo:
    """An environment as a book build sees it: every path is valid where the build runs (on
    this machine for a virtual environment, inside the container for a Docker image)."""

    name: str  # what the pipeline calls it: a virtual environment's path, an image's name
    prefix: PurePosixPath  # its Python's sys.prefix
    python: str  # its Python
    versions: Mapping[str, str] = field(default_factory=dict)  # distribution: version
    commands: Mapping[str, str] = field(default_factory=dict)  # program (COMMANDS): its path
    root: bool = False  # builds run as root (MyST's Jupyter server must be told it may)
    path: str = ""  # PATH for its commands ("": the runner's own choice)
    home: str = ""  # HOME for its commands ("": the user's own)


def venv_info(prefix: Path) -> EnvInfo:
    """A virtual environment on this machine, from its files (nothing of it runs)."""
    prefix = Path(prefix)
    bin_dir = prefix / "bin"
    versions = {d: v for d in DISTRIBUTIONS if (v := _installed_version(prefix, d))}
    commands = {c: str(bin_dir / c) for c in COMMANDS if (bin_dir / c).exists()}
    return EnvInfo(str(prefix), PurePosixPath(prefix), str(bin_dir / "python"), versions,
                   commands, root=os.geteuid() == 0)  # fmt: skip


@dataclass(frozen=True)
class BookResult:
    engine: str
    html_dir: Path  # out_dir / "html", with index.html
    cache_dir: Path | None  # out_dir / "exec-cache": the execution cache for the next build
    executed: int  # notebooks executed in this build
    cached: int  # notebooks whose outputs came from the execution cache


def find_book(checkout: Path) -> BookSource:
    """Which book the repository has, found as the layout check finds it (booklayout): Jupyter
    Book 1 in content/ (or at the root), or MyST (myst.yml in content/ or at the root)."""
    top = checkout.resolve()
    settings = booklayout.neurolibre_settings(_neurolibre_yml(top))
    book = booklayout.find_book(lambda rel: _kind(top, rel), settings)
    if book.engine is None:
        raise BookError(
            "No book to build: add content/_config.yml and content/_toc.yml (Jupyter Book), or "
            "a myst.yml (MyST) in content/ or at the repository root."
        )
    root = checkout / book.base if book.base else checkout
    if book.engine == "myst":
        return _confined(checkout, BookSource("myst", root), "myst.yml")
    source = BookSource("jupyter-book", root, settings.single_page if book.base else None,
                        book.single_page is not None)  # fmt: skip
    if not source.traditional and not (root / "_toc.yml").is_file():
        where = f"{book.base}_config.yml"
        raise BookError(
            f"{where} is there but {book.base}_toc.yml is not: Jupyter Book needs a table of "
            f"contents. Add {book.base}_toc.yml listing the book's pages (or, for a preprint "
            "that is one page, content/_neurolibre.yml with book_layout: traditional and "
            "single_page: <the page>)."
        )
    return _confined(checkout, source, "_toc.yml", "_config.yml")


def _kind(top: Path, rel: str) -> str | None:
    """What rel is in the repository ("file", "dir", "other"; None: missing). A symbolic link
    that leads out of it is refused: the service would read, write or publish its target."""
    path = top / rel
    if not (path.exists() or path.is_symlink()):
        return None
    if not path.resolve().is_relative_to(top):
        raise BookError(f"{rel} is a symbolic link that leads out of the repository: the book "
                        "must be inside it.")  # fmt: skip
    return (
        "file" if path.is_file() else "dir" if path.is_dir() else "other" if path.exists() else None
    )


def _neurolibre_yml(top: Path) -> object:
    """content/_neurolibre.yml's YAML (None: there is none)."""
    if _kind(top, booklayout.NEUROLIBRE_YML) != "file":
        return None
    try:
        return yaml.safe_load(read_text_confined(top / booklayout.NEUROLIBRE_YML, top))
    except UnsafeFile as e:
        raise BookError(f"{booklayout.NEUROLIBRE_YML}: {e}") from None
    except yaml.YAMLError as e:
        raise BookError(f"{booklayout.NEUROLIBRE_YML} is not valid YAML: {e}") from None


def _confined(checkout: Path, source: BookSource, *names: str) -> BookSource:
    """The book's directory and settings files must be in the repository (symbolic links that
    lead out of it would make the service read, write or publish files of its own)."""
    top = checkout.resolve()
    for path in (source.root, *(source.root / n for n in names)):
        if (path.exists() or path.is_symlink()) and not path.resolve().is_relative_to(top):
            raise BookError(
                f"{path.relative_to(checkout).as_posix()} is a symbolic link that leads out of "
                "the repository: the book must be inside it."
            )
    return source


@dataclass
class _Progress:
    """What the book's log says about its notebooks, read line by line as it streams."""

    executed: set[str] = field(default_factory=set)
    cached: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    current: str | None = None  # the notebook executing now
    cache_ids: set[int] = field(default_factory=set)  # execution cache records this build used

    def see(self, line: str) -> None:
        if m := CACHE_ID.search(line):
            self.cache_ids.add(int(m["id"]))
        if m := EXECUTING.match(line):
            self.current = m["path"]
        elif m := EXECUTED.match(line):
            self.executed.add(m["path"])
            self.current = None
        elif m := CACHED.match(line):
            self.cached.add(m["path"])
        elif m := FAILED.match(line):
            self.failed.add(m["path"])
            self.executed.add(m["path"])
            self.current = None


@dataclass
class _MystProgress(_Progress):
    """What MyST's log says: notebooks executed or cached, errors."""

    prefix: str = ""  # the MyST project's directory in the repository ("" at the root), with /
    errors: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # path: (what, lines)
    no_kernel: str | None = None  # a kernel MyST could not start
    cache_used: set[str] = field(default_factory=set)  # execution cache entries read
    _error: list[str] | None = None  # the lines of the notebook error being read

    def see(self, line: str) -> None:
        line = line.rstrip("\n")
        if self._error is not None:
            if not MYST_MESSAGE.match(line):
                self._error.append(line)
                return
            self._error = None
        if m := MYST_EXECUTING.match(line):
            self.current = self.prefix + m["path"]
            self.executed.add(self.current)
        elif m := MYST_CACHED.match(line):
            self.cached.add(self.prefix + m["path"])
        elif m := MYST_BUILT.match(line):
            if self.current == self.prefix + m["path"]:
                self.current = None
        elif m := MYST_ERROR.match(line):
            path = self.prefix + m["path"]
            self.failed.add(path)
            self._error = []
            self.errors[path] = (m["what"], self._error)
        elif m := MYST_NO_KERNEL.match(line):
            self.no_kernel = m["name"]
        elif m := MYST_CACHE_USED.match(line):
            self.cache_used.add(m["name"])


class _TappedLog:
    """A job's log channel that drops terminal colours and lets the book engine read along."""

    def __init__(self, channel, on_line: Callable[[str], None]):
        self._channel = channel
        self._on_line = on_line

    def write(self, text: str):
        text = SERVER_TOKEN.sub(r"\1[secret]", ANSI.sub("", text))
        self._on_line(text)
        return self._channel.write(text)

    def __getattr__(self, name):
        return getattr(self._channel, name)


@dataclass
class _Run:
    """One book build in progress: what the engine tells the runner to run."""

    source: BookSource
    checkout: Path
    env: EnvInfo
    out_dir: Path
    argv: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)
    progress: _Progress = field(default_factory=_Progress)
    cwd: Path | None = None  # where the command runs (the checkout unless said)
    readable: list[Path] = field(default_factory=list)  # more directories it may read
    # the service's programs (node, mystmd), read-only at another path where the build runs
    mounts: list[tuple[Path, str]] = field(default_factory=list)


# run with the environment's jupyter-cache (a dependency of Jupyter Book 1)
PRUNE = """
import sys
from jupyter_cache import get_cache
cache = get_cache(sys.argv[1])
keep = {int(pk) for pk in sys.argv[2:]}
for record in cache.list_project_records():
    cache.remove_nb_from_project(record.pk)
stale = [r.pk for r in cache.list_cache_records() if r.pk not in keep]
for pk in stale:
    cache.remove_cache(pk)
print(f"Execution cache for the next build: {len(keep)} kept, {len(stale)} outdated dropped.")
"""


class _JupyterBook1:
    """Jupyter Book 1 (`jupyter-book<2`): Sphinx and myst-nb, executed through jupyter-cache."""

    name = "jupyter-book"
    # sphinx settings that would undo the execution settings below
    SPHINX_KEYS = ("nb_execution_mode", "nb_execution_cache_path", "nb_execution_allow_errors",
                   "nb_execution_raise_on_error", "jupyter_execute_notebooks",
                   "execution_allow_errors")  # fmt: skip

    def __init__(self, runner: BookRunner):
        self.runner = runner

    async def prepare(self, ctx: JobContext, source: BookSource, checkout: Path,
                      env: EnvInfo, cache_in: Path | None, out_dir: Path) -> _Run:  # fmt: skip
        jb = env.commands.get("jupyter-book")
        version = env.versions.get("jupyter_book")
        if jb is None or version is None:
            raise BookError(
                "The environment has no jupyter-book: add jupyter-book<2 (e.g. "
                "jupyter-book==1.0.4.post1) to binder/requirements.txt."
            )
        if int(version.split(".")[0]) >= 2:
            raise BookError(
                f"content/_toc.yml makes this a Jupyter Book 1 book, but the environment has "
                f"jupyter-book {version} (2 and later build MyST projects from myst.yml). Pin "
                "jupyter-book<2 in binder/requirements.txt."
            )
        ctx.say(f"Jupyter Book {version}")
        rel = source.root.relative_to(checkout).as_posix()
        self.base = "" if rel == "." else f"{rel}/"  # how the author's files are named
        page = self._single_page(ctx, source)
        cache = checkout / CACHE_IN_CHECKOUT
        await asyncio.to_thread(_remove, cache)
        if cache_in is not None and cache_in.is_dir():
            await asyncio.to_thread(shutil.copytree, cache_in, cache, symlinks=True)
        else:
            cache.mkdir()
        self._configure(ctx, source.root, cache)
        await asyncio.to_thread(_remove, source.root / "_build")
        if page is None:
            argv = [jb, "build", "--all", str(source.root)]
        else:  # as NeuroLibre built it: the one page, as a single HTML page
            argv = [jb, "build", "--all", "--builder", "singlehtml", str(page)]
        self.page = page
        return _Run(source, checkout, env, out_dir, argv)

    def _single_page(self, ctx: JobContext, source: BookSource) -> Path | None:
        """The page built alone, when content/_neurolibre.yml makes the preprint one page: its
        traditional layout, or a _toc.yml without a root of its own (NeuroLibre took the single
        page as the root). None: the whole book, from _toc.yml."""
        name = source.single_page
        if name is None:
            return None
        if not source.traditional and self._toc_has_root(source.root):
            return None
        where = booklayout.NEUROLIBRE_YML
        candidate = source.root / name
        top = source.root.resolve()
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or \
                not candidate.resolve().is_relative_to(top):  # fmt: skip
            raise BookError(f"{where}: single_page {name!r} is not a page inside "
                            f"{self.base or 'the repository'}. Write e.g. single_page: index.ipynb.")  # fmt: skip
        for path in (
            candidate,
            *(candidate.with_name(candidate.name + s) for s in NOTEBOOK_SUFFIXES),
        ):
            if path.is_file() and path.resolve().is_relative_to(top):
                ctx.say(f"{where}: the preprint is the single page {self.base}{name}.")
                return path
        raise BookError(f"{where}: single_page {name!r} is not a file in {self.base}. Write the "
                        "path of the notebook or MyST page that makes the preprint, e.g. "
                        "single_page: index.ipynb.")  # fmt: skip

    @staticmethod
    def _toc_has_root(root: Path) -> bool:
        try:
            toc = yaml.safe_load(read_text_confined(root / "_toc.yml", root))
        except (OSError, UnsafeFile, yaml.YAMLError):
            return False
        entry = toc.get("root") if isinstance(toc, dict) else None
        if not isinstance(entry, str) or not entry.strip():
            return False
        path = root / entry.strip()
        return any(p.is_file() for p in (path, *(path.with_name(path.name + s)
                                                 for s in NOTEBOOK_SUFFIXES)))  # fmt: skip

    def _configure(self, ctx: JobContext, root: Path, cache: Path) -> None:
        """Execute through the cache whatever the author's _config.yml says; keep the rest."""
        path = root / "_config.yml"
        config: dict = {}
        if path.is_file() or path.is_symlink():
            try:
                config = yaml.safe_load(read_text_confined(path, root)) or {}
            except UnsafeFile as e:
                raise BookError(f"{self.base}{e}") from None
            except yaml.YAMLError as e:
                raise BookError(f"{self.base}_config.yml is not valid YAML: {e}") from None
            if not isinstance(config, dict):
                raise BookError(f"{self.base}_config.yml must be a mapping of settings.")
        execute = config.get("execute") or {}
        if not isinstance(execute, dict):
            raise BookError(f"{self.base}_config.yml: `execute` must be a mapping of settings.")
        mode = execute.get("execute_notebooks")
        if mode is False:
            mode = "off"  # YAML reads a bare `off` as false
        if mode is not None and mode != "cache":
            ctx.say(f"{self.base}_config.yml sets execute_notebooks: {mode}; NeuroLibre runs "
                    "'cache' instead: every notebook is re-executed unless the execution cache "
                    "of an earlier build has its outputs for the same code.")  # fmt: skip
        if execute.get("allow_errors"):
            ctx.say(f"{self.base}_config.yml sets allow_errors: true; it is ignored here: a cell that "
                    "raises fails the build. To show an error on purpose, tag that cell "
                    "`raises-exception`.")  # fmt: skip
        execute.update(execute_notebooks="cache", cache=str(cache), allow_errors=False,
                       raise_on_error=False)  # fmt: skip
        config["execute"] = execute
        if not self.base:  # a book at the root: the service's folders there are not its pages
            patterns = config.get("exclude_patterns")
            patterns = list(patterns) if isinstance(patterns, list) else list(JB1_EXCLUDED)
            config["exclude_patterns"] = patterns + [p for p in ROOT_EXCLUDED if p not in patterns]
        sphinx_config = (config.get("sphinx") or {}).get("config")
        if isinstance(sphinx_config, dict):
            for key in self.SPHINX_KEYS:
                if sphinx_config.pop(key, None) is not None:
                    ctx.say(f"{self.base}_config.yml: sphinx.config.{key} is ignored (execution "
                            "settings are NeuroLibre's).")  # fmt: skip
        path.unlink(missing_ok=True)  # a symbolic link (inside the repository) stays untouched
        path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                        encoding="utf-8")  # fmt: skip

    def after(self, run: _Run) -> list[str] | None:
        """A command to run after a successful build: drop what the next build cannot use
        from the execution cache, so it does not grow with every version of every notebook."""
        cache = run.checkout / CACHE_IN_CHECKOUT
        if not _has_files(cache):
            return None
        return [run.env.python, "-c", PRUNE, str(cache), *map(str, sorted(run.progress.cache_ids))]

    async def collect(self, ctx: JobContext, run: _Run, code: int) -> tuple[Path, Path | None]:
        """Move the HTML and the cache to out_dir; raise if the build or a notebook failed."""
        built = run.source.root / "_build" / "html"
        if self.page is not None:  # _build/_page/<page>/singlehtml (<folder>-<page> deeper down)
            found = sorted((run.source.root / "_build" / "_page").glob("*/singlehtml"))
            built = found[0] if len(found) == 1 else built
        html = run.out_dir / "html"
        cache_out = await self.keep_cache(run)
        await asyncio.to_thread(_replace, built if _real_dir(built) else None, html)
        if self.page is not None and code == 0:
            page = html / f"{self.page.stem}.html"  # Sphinx names it after the page
            if page.is_file() and not (html / "index.html").exists():
                await asyncio.to_thread(shutil.copyfile, page, html / "index.html")
        failed = _reports(html)
        if failed:
            for docname, report in failed:
                ctx.say(f"--- {self._notebook(run.source.root, docname)}: what failed ---")
                for line in _traceback(report).splitlines():
                    ctx.log.write(line)
            first_report = failed[0][1]
            names = ", ".join(self._notebook(run.source.root, d) for d, _ in failed)
            what = _last_line(_traceback(first_report))
            raise JobFailed(
                f"{names} failed when re-executed"
                + (f" ({what})" if what and len(failed) == 1 else "")
                + ": open the book log; each failing notebook's error is under "
                "'--- <notebook>: what failed ---'. A notebook must run from top to bottom "
                "in the environment built from binder/, with data only from data/."
            )
        if code != 0:
            raise JobFailed(
                f"The book build failed (jupyter-book exited with status {code}): open the "
                "book log, the reason is in its last lines (often a mistake in _toc.yml or "
                "_config.yml, or a page that does not parse)."
            )
        if not (html / "index.html").is_file():
            raise JobFailed("The book build produced no index.html: open the book log.")
        return html, cache_out

    async def keep_cache(self, run: _Run) -> Path | None:
        """Move the execution cache to out_dir/exec-cache (even when the build failed: it
        holds only notebooks that ran to the end, which the next build need not run again)."""
        cache, cache_out = run.checkout / CACHE_IN_CHECKOUT, run.out_dir / "exec-cache"
        await asyncio.to_thread(_replace, cache if _has_files(cache) else None, cache_out)
        return cache_out if cache_out.is_dir() else None

    @staticmethod
    def _notebook(root: Path, docname: str) -> str:
        """content/name.ipynb for a Sphinx document name."""
        for suffix in NOTEBOOK_SUFFIXES:
            if (root / f"{docname}{suffix}").is_file():
                docname += suffix
                break
        return f"{root.name}/{docname}"


class _Myst:
    """MyST (myst.yml), built by the service's own pinned mystmd (`myst build --html
    --execute`), whatever the author's environment has: the book tool of a MyST preprint is the
    service's. Its Jupyter server is the service's too (the server environment; in a container,
    the image's); the notebooks run on a kernel of the author's environment, written into the
    build's own Jupyter folder. It executes through its own cache, _build/execute: one file per
    notebook version. The page is drawn with the theme myst.yml names (mystthemes)."""

    name = "myst"

    def __init__(self, runner: BookRunner):
        self.runner = runner

    async def prepare(self, ctx: JobContext, source: BookSource, checkout: Path,
                      env: EnvInfo, cache_in: Path | None, out_dir: Path) -> _Run:  # fmt: skip
        rel = source.root.relative_to(checkout).as_posix()
        where = "myst.yml" if rel == "." else f"{rel}/myst.yml"
        if "ipykernel" not in env.versions:
            raise BookError(
                "The notebooks of this MyST book run on a Python kernel of the environment "
                "built from binder/, which has no ipykernel: add ipykernel to "
                "binder/requirements.txt."
            )
        config = self._read(source.root, where)
        try:
            theme_name = requested_theme(config.get("site"), where)
            theme = await self.runner.myst_theme_store().get(theme_name, where, ctx.say)
        except ThemeRequestError as e:
            raise BookError(str(e)) from None
        except ThemeUnavailable as e:
            raise JobFailed(str(e)) from None
        self._configure(source.root, config, theme)
        build = source.root / "_build"
        await asyncio.to_thread(_remove, build)
        cache = build / "execute"
        if cache_in is not None and cache_in.is_dir():
            await asyncio.to_thread(shutil.copytree, cache_in, cache, symlinks=True)
        else:
            cache.mkdir(parents=True)
        work = checkout / MYST_WORK
        await asyncio.to_thread(_remove, work)
        (work / "jupyter").mkdir(parents=True)
        if env.root:  # MyST's Jupyter server refuses to run as root unless allowed
            (work / "jupyter" / "jupyter_server_config.json").write_text(
                '{"ServerApp": {"allow_root": true}}\n'
            )
        # the kernel MyST asks the server for ("python3", as notebooks name it): the author's
        # Python, found first on JUPYTER_PATH (the server's own python3 kernel comes later)
        kernels = work / "kernels" / "python3"
        kernels.mkdir(parents=True)
        bin_dir = str(env.prefix / "bin")
        (kernels / "kernel.json").write_text(json.dumps({
            "argv": [env.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python",
            # the kernel's programs (`python`, `pip`, tools a notebook calls) are the author's
            "env": {"PATH": f"{bin_dir}:${{PATH}}", "VIRTUAL_ENV": str(env.prefix)},
            "metadata": {"debugger": True},
        }, indent=1))  # fmt: skip
        (work / "cache-probe.cjs").write_text(MYST_CACHE_PROBE)
        tools = await self.runner.myst_tools(ctx, env, work)
        ctx.say(f"MyST {tools.version} (mystmd, the service's), theme {theme_name} ({theme})")
        ctx.say(f"Notebooks run on the python3 kernel of {env.name}; MyST's Jupyter server is "
                f"{tools.server}.")  # fmt: skip
        argv = [*tools.argv, "build", "--html", "--execute"]
        run = _Run(source, checkout, env, out_dir, argv, cwd=source.root,
                   readable=[theme, *tools.readable], mounts=list(tools.mounts),
                   progress=_MystProgress(prefix="" if rel == "." else f"{rel}/"))  # fmt: skip
        # the author environment's share/jupyter after ours: its widgets and extensions
        jupyter_path = [str(work), str(env.prefix / "share" / "jupyter")]
        run.extra_env.update(
            JUPYTER_CONFIG_DIR=str(work / "jupyter"),
            JUPYTER_PATH=":".join(jupyter_path),
            NODE_OPTIONS=f"--require {work / 'cache-probe.cjs'}",
            NEUROLIBRE_MYST_CACHE=str(cache),
            MYST_LANG="PYTHON",
        )
        if tools.path:
            run.extra_env["PATH"] = tools.path
        self.cache_before = {p.name for p in cache.iterdir()}
        self.server = tools.server
        return run

    @staticmethod
    def _read(root: Path, where: str) -> dict:
        try:
            config = yaml.safe_load(read_text_confined(root / "myst.yml", root)) or {}
        except UnsafeFile as e:
            raise BookError(f"{where}: {e}") from None
        except yaml.YAMLError as e:
            raise BookError(f"{where} is not valid YAML: {e}") from None
        if not isinstance(config, dict):
            raise BookError(f"{where} must be a mapping of settings.")
        site = config.get("site")
        if site is not None and not isinstance(site, dict):
            raise BookError(f"{where}: `site` must be a mapping of settings.")
        return config

    @staticmethod
    def _configure(root: Path, config: dict, theme: Path) -> None:
        """Point myst.yml at the service's copy of the theme, keeping the author's other
        settings (without a `site` entry MyST builds no website at all: one is added)."""
        site = dict(config.get("site") or {})
        site["template"] = str(theme)
        config["site"] = site
        path = root / "myst.yml"
        path.unlink(missing_ok=True)  # a symbolic link (inside the repository) stays untouched
        path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                        encoding="utf-8")  # fmt: skip

    def after(self, run: _Run) -> list[str] | None:
        return None  # the cache is tidied in collect

    async def collect(self, ctx: JobContext, run: _Run, code: int) -> tuple[Path, Path | None]:
        """Move the HTML and the cache to out_dir; raise if the build or a notebook failed."""
        progress: _MystProgress = run.progress  # type: ignore[assignment]
        built = run.source.root / "_build" / "html"
        html = run.out_dir / "html"
        cache_out = await self.keep_cache(run, tidy=code == 0, ctx=ctx)
        await asyncio.to_thread(_replace, built if _real_dir(built) else None, html)
        if progress.errors:
            for path, (_, lines) in progress.errors.items():
                ctx.say(f"--- {path}: what failed ---")
                for line in lines:
                    ctx.log.write(line)
        cells = {p: lines for p, (what, lines) in progress.errors.items()
                 if what.startswith("An exception")}  # fmt: skip
        if cells:
            what = _last_line("\n".join(next(iter(cells.values()))))
            raise JobFailed(
                f"{', '.join(cells)} failed when re-executed"
                + (f" ({what})" if what and len(cells) == 1 else "")
                + ": open the book log; each failing notebook's error is under "
                "'--- <notebook>: what failed ---'. A notebook must run from top to bottom "
                "in the environment built from binder/, with data only from data/."
            )
        if any(what.startswith("Could not load") for what, _ in progress.errors.values()):
            raise JobFailed(
                "MyST could not start its Jupyter server to execute the notebooks ("
                + self.server
                + "): the operator must look at the book log, after 'Starting "
                "new Jupyter server'."
            )
        if progress.no_kernel:
            raise JobFailed(
                f"MyST could not start the Jupyter kernel {progress.no_kernel!r} that the "
                "notebooks ask for: this service runs notebooks on the python3 kernel of the "
                "environment built from binder/. Set each notebook's kernel to python3 (its "
                "metadata.kernelspec.name; `kernelspec: {name: python3}` in a MyST page's "
                "frontmatter)."
            )
        if progress.errors:
            names = ", ".join(progress.errors)
            raise JobFailed(
                f"{names} cannot be executed: it declares no kernel (a notebook's "
                "metadata.kernelspec, or the `kernelspec` of a MyST page's frontmatter)."
            )
        if code != 0:
            raise JobFailed(
                f"The book build failed (MyST exited with status {code}): "
                "open the book log, the reason is in its last lines (often a mistake in "
                "myst.yml, or a page that does not parse)."
            )
        if not (html / "index.html").is_file():
            raise JobFailed("The book build produced no index.html: open the book log.")
        return html, cache_out

    async def keep_cache(self, run: _Run, *, tidy: bool = False,
                         ctx: JobContext | None = None) -> Path | None:  # fmt: skip
        """Move the execution cache to out_dir/exec-cache (even when the build failed: it
        holds only notebooks that ran to the end). After a whole build, only the entries it
        wrote or read are kept, so the cache does not grow with every version of a notebook."""
        progress: _MystProgress = run.progress  # type: ignore[assignment]
        cache = run.source.root / "_build" / "execute"
        cache_out = run.out_dir / "exec-cache"
        if tidy and _has_files(cache):
            if progress.cached and not progress.cache_used:
                ctx.say("!! Which execution cache entries were used is unknown; all are kept.")
            else:
                keep = progress.cache_used | ({p.name for p in cache.iterdir()}
                                              - self.cache_before)  # fmt: skip
                entries = list(cache.iterdir())
                stale = [p for p in entries if p.name not in keep]
                for p in stale:
                    await asyncio.to_thread(_remove, p)
                ctx.say(f"Execution cache for the next build: {len(entries) - len(stale)} kept, "
                        f"{len(stale)} outdated dropped.")  # fmt: skip
        await asyncio.to_thread(_replace, cache if _has_files(cache) else None, cache_out)
        return cache_out if cache_out.is_dir() else None


def _real_dir(path: Path) -> bool:
    """A directory reached without a symbolic link (the build may have made some)."""
    return path.is_dir() and path.resolve() == path.absolute()


def _installed_version(env_prefix: Path, module: str) -> str | None:
    """The version of a distribution installed in a virtual environment (its dist-info)."""
    for info in sorted(env_prefix.glob(f"lib/python*/site-packages/{module}-*.dist-info")):
        return info.name[len(module) + 1 : -len(".dist-info")]
    return None


def _has_files(path: Path) -> bool:
    return _real_dir(path) and any(path.iterdir())


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _replace(src: Path | None, dst: Path) -> None:
    """Move a build's output to dst, without the symbolic links the build may have put in it:
    published files and the next build's cache are only what the build wrote."""
    shutil.rmtree(dst, ignore_errors=True)
    if src is not None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
        remove_special_files(dst)
        for root, dirs, files in os.walk(dst):
            for name in dirs + files:
                if os.path.islink(os.path.join(root, name)):
                    os.unlink(os.path.join(root, name))


def _reports(html: Path) -> list[tuple[str, Path]]:
    """myst-nb writes one reports/<docname>.err.log per notebook that failed to execute."""
    reports = html / "reports"
    if not reports.is_dir():
        return []
    return sorted((str(p.relative_to(reports))[: -len(".err.log")], p)
                  for p in reports.rglob("*.err.log"))  # fmt: skip


def _traceback(report: Path) -> str:
    try:
        text = ANSI.sub("", read_text_confined(report, report.parent, 1 << 20))
    except UnsafeFile:
        return ""
    # from nbclient's message on: the frames above it are the executor's, not the author's
    start = text.find("An error occurred while executing")
    if start < 0:
        start = text.find("A cell timed out")
    return text[start:] if start >= 0 else text


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


class BookRunner(LoggingConfigurable):
    """Builds a checkout's book in its environment. Subclasses only say how a command runs."""

    time_limit = Float(
        600,
        help="""Seconds a book build may take, notebooks included; past it the build is stopped
        and fails. Each notebook's cells also obey the book's own execute.timeout.""",
    ).tag(config=True)

    myst_command = Unicode(
        "",
        help="""The MyST program that builds MyST books (the book tool of a MyST preprint is the
        service's, never the author's). Default: the mystmd pinned with this service (its
        Python package, run on node). Another one: a `myst` program, from mystmd's Python
        package or from npm (`npm install -g mystmd`), or its JavaScript file (myst.cjs).""",
    ).tag(config=True)

    node = Unicode(
        "",
        help="""Node.js (20 or later) that MyST runs on. Default: `node` on the service's
        PATH. The Docker book runner runs it inside the environment's image, so it must be a
        build that needs nothing of the machine's (nodejs.org's, or NodeSource's).""",
    ).tag(config=True)

    myst_themes_dir = Unicode(
        "",
        help="""A folder of MyST site themes, one folder per theme name (article-theme/,
        book-theme/), each with its template.yml (and node_modules, from `npm ci
        --ignore-scripts`). A MyST book is drawn with the theme its myst.yml names (site:
        template:; none: book-theme). The service's default: <data_dir>/myst-themes, where a
        missing theme is downloaded once (myst_theme_download).""",
    ).tag(config=True)

    myst_theme = Unicode(
        "",
        help="""A copy of MyST's book-theme on this machine: the theme of MyST books that name
        none or name book-theme (as <myst_themes_dir>/book-theme would be).""",
    ).tag(config=True)

    myst_theme_download = Bool(
        True,
        help="""Download a MyST theme the service does not have into myst_themes_dir, once, at
        the version myst_theme_versions pins (needs internet access; builds never reach the
        internet themselves). Off: the operator provides every theme.""",
    ).tag(config=True)

    myst_theme_versions = Dict(
        dict(PINNED_THEMES),
        help="""The MyST themes the service may download, and their versions (commits of
        github.com/myst-templates/<name>, one per theme release), made for the pinned mystmd.""",
    ).tag(config=True)

    myst_theme_url = Unicode(
        THEME_URL,
        help="""Where a MyST theme is downloaded from: a zip archive, {name} and {version}
        filled in from myst_theme_versions.""",
    ).tag(config=True)

    server_environment = Any(
        None,
        allow_none=True,
        help="""The service's Jupyter server environment, which MyST starts its Jupyter server
        from (the notebooks still run on the author's kernel): a ServiceEnvironment, or an
        async function returning one (set by the service). None: the server comes from the
        author's environment.""",
    )

    sandbox = Instance(Sandbox, allow_none=True,
                       help="How build steps are confined (set by the service).")  # fmt: skip

    def engine(self, name: str):
        return _JupyterBook1(self) if name == "jupyter-book" else _Myst(self)

    def myst_theme_store(self) -> ThemeStore:
        root = Path(self.myst_themes_dir).expanduser().resolve() if self.myst_themes_dir else None
        locks = self.__dict__.setdefault("_theme_locks", {})  # one download of a theme at once
        return ThemeStore(root, f"c.{type(self).__name__}",
                          book_theme=Path(self.myst_theme) if self.myst_theme else None,
                          versions=dict(self.myst_theme_versions), url=self.myst_theme_url,
                          download=self.myst_theme_download, sandbox=self.sandbox,
                          _locks=locks)  # fmt: skip

    def myst_programs(self) -> MystPrograms:
        """node, npm (MyST checks both), MyST's JavaScript file and its version: the
        service's, on this machine."""
        setting = f"c.{type(self).__name__}"
        node = shutil.which(self.node or "node")
        if node is None:
            raise JobFailed(
                f"MyST books need Node.js 20 or later ({self.node or 'node'} is not found): the "
                f"operator installs it (nodejs.org, or NodeSource's packages), or sets "
                f"{setting}.node to its path."
            )
        node_path = Path(node).resolve()
        # npm beside node (as Node.js installs it), else on the service's PATH
        npm = shutil.which("npm", path=f"{Path(node).parent}:{node_path.parent}") or \
            shutil.which("npm")  # fmt: skip
        npm_cli = Path(npm).resolve() if npm else None
        if npm_cli is None or npm_cli.suffix != ".js":
            raise JobFailed(
                f"MyST books need npm beside {node_path} (MyST checks it is there; Node.js "
                "installs it): the operator installs it (apt-get install npm, or Node.js from "
                "nodejs.org)."
            )
        if self.myst_command:
            bundle, version = _myst_bundle(Path(self.myst_command).expanduser())
            if bundle is None:
                raise JobFailed(
                    f"{setting}.myst_command = {self.myst_command} is not a MyST program this "
                    "service can run (mystmd's `myst`, or its myst.cjs)."
                )
        else:
            bundle, version = _service_mystmd()
            if bundle is None:
                raise JobFailed("This service was installed without mystmd (a dependency of "
                                "neurolibre-service): reinstall it (scripts/install.sh).")  # fmt: skip
        major = _node_major(node_path)
        if major < 20:
            raise JobFailed(
                f"MyST books need Node.js 20 or later; {node_path} is "
                f"{f'Node.js {major}' if major else 'not a Node.js that runs'}. The operator "
                f"installs a newer one (nodejs.org, or NodeSource's packages), or sets "
                f"{setting}.node to its path."
            )
        return MystPrograms(node_path, npm_cli, bundle, version)

    async def myst_tools(self, ctx: JobContext, env: EnvInfo, work: Path) -> MystTools:
        """How MyST runs where the build runs: its command, PATH, what it reads (`work`: the
        build's own folder, in the checkout)."""
        raise NotImplementedError

    async def _server_environment(self, ctx: JobContext) -> ServiceEnvironment | None:
        server = self.server_environment
        if callable(server):
            try:
                server = await server()
            except ServiceEnvironmentError as e:
                raise JobFailed(f"MyST books need the service's Jupyter server: {e}") from None
        return server

    async def build(self, ctx: JobContext, *, checkout: Path, environment: str,
                    datasets: Sequence[tuple[str, Path]], cache_in: Path | None,
                    out_dir: Path) -> BookResult:  # fmt: skip
        """Build the checkout's book in `environment` (what the environment builder made:
        a virtual environment's path, an image's name), each dataset at data/<name>."""
        checkout = checkout.resolve()
        source = find_book(checkout)
        for name, _ in datasets:
            if not PROJECT_NAME_RE.fullmatch(name) or ".." in name:
                raise BookError(f"Dataset name {name!r} cannot be a directory under data/.")
        engine = self.engine(source.engine)
        env = await self.environment(ctx, environment)
        out_dir.mkdir(parents=True, exist_ok=True)
        run = await engine.prepare(ctx, source, checkout, env, cache_in, out_dir)
        rel = source.root.relative_to(checkout).as_posix()
        ctx.say(f"Building the book ({source.engine}, in {rel if rel != '.' else 'the root'}) "
                f"with {duration(self.time_limit)} at most.")  # fmt: skip
        self.announce(ctx, env)
        tapped = ctx.with_log(_TappedLog(ctx.log, run.progress.see))
        try:
            async with asyncio.timeout(self.time_limit):
                code = await self.run(tapped, run.argv, checkout=checkout, env=env,
                                      datasets=datasets, extra_env=run.extra_env, cwd=run.cwd,
                                      readable=run.readable, mounts=run.mounts)  # fmt: skip
                after = engine.after(run) if code == 0 else None
                if after and await self.run(ctx, after, checkout=checkout, env=env,
                                            datasets=(), extra_env=run.extra_env):  # fmt: skip
                    ctx.say("!! Tidying the execution cache failed; it is kept whole.")
        except TimeoutError:
            running = run.progress.current
            where = f" while executing {self._rel(running, checkout)}" if running else ""
            await engine.keep_cache(run)  # what executed before the stop serves the next build
            raise JobFailed(
                f"The book build was stopped{where}: it exceeded the time limit of "
                f"{duration(self.time_limit)} (c.{type(self).__name__}.time_limit). Make the "
                "notebooks faster (e.g. compute heavy results beforehand and read them from "
                "the data), or ask the operator for a longer limit."
            ) from None
        progress = run.progress
        html, cache_dir = await engine.collect(ctx, run, code)
        executed, cached = len(progress.executed), len(progress.cached)
        total = executed + cached
        ctx.say(f"{total} notebook{'s' if total != 1 else ''}: {executed} executed, "
                f"{cached} from the cache")  # fmt: skip
        return BookResult(source.engine, html, cache_dir, executed, cached)

    @staticmethod
    def _rel(path: str, checkout: Path) -> str:
        p = Path(path)
        return p.relative_to(checkout).as_posix() if p.is_relative_to(checkout) else path

    async def environment(self, ctx: JobContext, environment: str) -> EnvInfo:
        """What the environment has, as seen where the book runs."""
        raise NotImplementedError

    def announce(self, ctx: JobContext, env: EnvInfo) -> None:
        """Say in the log where and how confined the book runs."""

    async def recover(self) -> None:
        """At the service's start: stop what builds of an earlier run left running."""

    async def run(self, ctx: JobContext, argv: Sequence[str], *, checkout: Path, env: EnvInfo,
                  datasets: Sequence[tuple[str, Path]], extra_env: dict[str, str],
                  cwd: Path | None = None, readable: Sequence[Path] = (),
                  mounts: Sequence[tuple[Path, str]] = ()) -> int:  # fmt: skip
        """Run a command of the book's in the checkout (or cwd, inside it), datasets read-only
        at data/<name>; `readable`: directories of the service's it may read (a theme);
        `mounts`: files of the service's, read-only at another path (source, target)."""
        raise NotImplementedError


# variables every book command gets, wherever it runs. No MPLBACKEND: the kernel then picks
# matplotlib's inline backend, which draws without a display and makes each figure an image
# output (MPLBACKEND=Agg made plt.show() a no-op: every plot was lost). Builds stay headless:
# nothing passes DISPLAY, so matplotlib outside a kernel falls back to Agg by itself; its
# settings and font cache go to the writable HOME (/tmp in the sandbox).
BOOK_ENV = {
    "PYTHONUNBUFFERED": "1",
    "NO_COLOR": "1",
    "JUPYTER_PLATFORM_DIRS": "1",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}


@dataclass(frozen=True)
class MystPrograms:
    """The service's programs for MyST books, on this machine."""

    node: Path
    npm_cli: Path  # npm's bin/npm-cli.js, in its package
    bundle: Path  # MyST's JavaScript file (myst.cjs)
    version: str

    @property
    def npm_package(self) -> Path:
        return self.npm_cli.parent.parent


@dataclass(frozen=True)
class MystTools:
    """How the service's MyST runs where a book builds."""

    argv: list[str]  # node and MyST's JavaScript, as paths seen where the build runs
    version: str
    server: str  # where its Jupyter server comes from (for messages)
    path: str | None = None  # PATH for MyST (None: the environment's own)
    readable: list[Path] = field(default_factory=list)  # read-only, at the same path
    mounts: list[tuple[Path, str]] = field(default_factory=list)  # read-only, elsewhere


@functools.cache
def _node_major(node: Path) -> int:
    """The major version of a node program (0: it does not run). The operator's program."""
    try:
        done = subprocess.run([str(node), "--version"], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        return int(done.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def _service_mystmd() -> tuple[Path | None, str]:
    """The mystmd this service is installed with: its JavaScript file, its version."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("mystmd_py")
    if spec is None or spec.origin is None:
        return None, ""
    bundle = Path(spec.origin).parent / "myst.cjs"
    try:
        version = importlib.metadata.version("mystmd")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return (bundle.resolve(), version) if bundle.is_file() else (None, "")


def _myst_bundle(command: Path) -> tuple[Path | None, str]:
    """The JavaScript file a `myst` program runs, and its version: npm's `myst` is (a link to)
    the file itself; mystmd's Python package runs the myst.cjs it ships."""
    found = shutil.which(str(command))
    if found is None:
        return None, ""
    real = Path(found).resolve()
    if real.suffix in (".cjs", ".js", ".mjs"):
        package = real.parent.parent / "package.json"  # npm's mystmd: dist/myst.cjs
        try:
            version = json.loads(package.read_text()).get("version", "?")
        except (OSError, ValueError, AttributeError):
            version = "?"
        return real, str(version)
    prefix = real.parent.parent  # a virtual environment's bin/myst
    for bundle in sorted(prefix.glob("lib/python3*/site-packages/mystmd_py/myst.cjs")):
        dist = sorted(bundle.parent.parent.glob("mystmd-*.dist-info"))
        version = dist[0].name[len("mystmd-") : -len(".dist-info")] if dist else "?"
        return bundle.resolve(), version
    return None, ""


class LocalBookRunner(BookRunner):
    """Runs the book on this machine, confined like local environment builds (bubblewrap):
    as the unprivileged build user, without network, with resource limits."""

    async def environment(self, ctx: JobContext, environment: str) -> EnvInfo:
        info = venv_info(Path(environment))
        # MyST's Jupyter server must be told when it runs as root
        return replace(info, root=os.geteuid() == 0 and not self.sandbox.switches_user)

    async def myst_tools(self, ctx: JobContext, env: EnvInfo, work: Path) -> MystTools:
        """The service's node, npm and mystmd, read where they are; MyST's `python` (the
        Jupyter server it starts) the service's server environment's."""
        programs = self.myst_programs()
        server = await self._server_environment(ctx)
        if server is not None:
            server_bin, what = (
                server.prefix / "bin",
                f"the service's server environment {server.prefix}",
            )
            readable = [server.prefix, server.base_prefix]
        else:
            server_bin, what = env.prefix / "bin", "the environment built from binder/"
            readable = []
        # node and npm as MyST finds them: by name, on PATH (npm's own folder holds a link)
        (work / "bin").mkdir(exist_ok=True)
        (work / "bin" / "npm").symlink_to(programs.npm_cli)
        path = [str(server_bin), str(programs.node.parent), str(work / "bin"),
                "/usr/local/bin", "/usr/bin", "/bin"]  # fmt: skip
        readable += [programs.node.parent, programs.npm_package, programs.bundle.parent]
        return MystTools([str(programs.node), str(programs.bundle)], programs.version, what,
                         ":".join(dict.fromkeys(path)),
                         readable=[r for r in dict.fromkeys(readable) if r != Path("/")])  # fmt: skip

    def announce(self, ctx: JobContext, env: EnvInfo) -> None:
        if self.sandbox.confined:
            who = (f"as the unprivileged user {self.sandbox.build_user}"
                   if self.sandbox.switches_user else "without capabilities")  # fmt: skip
            ctx.say(f"The book runs confined (bubblewrap): {who}, no network, resource limits, "
                    "read-only system, writes only to the checkout, data read-only.")  # fmt: skip
        else:
            ctx.say("!! The book runs unconfined (sandbox = 'none'): data/ links to the datasets.")

    async def run(self, ctx: JobContext, argv: Sequence[str], *, checkout: Path, env: EnvInfo,
                  datasets: Sequence[tuple[str, Path]], extra_env: dict[str, str],
                  cwd: Path | None = None, readable: Sequence[Path] = (),
                  mounts: Sequence[tuple[Path, str]] = ()) -> int:  # fmt: skip
        confined = self.sandbox.confined
        cwd = cwd or checkout
        prefix = Path(env.prefix)
        binds = _data_mounts(ctx, checkout, datasets, link=not confined)
        # the environment and the interpreter the service recorded for it, nothing else of it
        readable = [prefix, *base_prefixes(prefix), *readable]
        argv = self.sandbox.wrap(argv, writable=[checkout], readable=readable, cwd=cwd,
                                 network=False)  # fmt: skip
        if confined:
            argv = with_ro_binds(argv, [*binds, *((src, Path(dst)) for src, dst in mounts)])
        env_vars = self.sandbox.env(path_prefix=[str(prefix / "bin")],
                                    extra={"VIRTUAL_ENV": str(prefix), **BOOK_ENV,
                                           **extra_env})  # fmt: skip
        await asyncio.to_thread(self.sandbox.lend, checkout)
        try:
            return await ctx.run(argv, cwd=cwd, env=env_vars)
        finally:
            # what the book wrote is the service's again before anything reads it
            await asyncio.to_thread(self.sandbox.reclaim, checkout)


# run in the environment's image: what it has, as its user sees it (one JSON line)
PROBE = """\
import importlib.metadata as md, json, os, shutil, sys
versions, commands = {}, {}
for name in sys.argv[1].split(","):
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
for name in sys.argv[2].split(","):
    path = os.path.join(sys.prefix, "bin", name)
    path = path if os.access(path, os.X_OK) else shutil.which(name)
    if path:
        commands[name] = path
home = os.path.expanduser("~")
print("neurolibre-env:", json.dumps({
    "prefix": sys.prefix, "python": sys.executable, "versions": versions,
    "commands": commands, "uid": os.getuid(), "path": os.environ.get("PATH", ""),
    "home": home, "home_writable": os.access(home, os.W_OK)}))
"""
PROBE_TIME_LIMIT = 120
SERVICE_MOUNT = "/opt/neurolibre-service"  # where a container sees the service's node and MyST
USER = re.compile(r"(?P<uid>\d+):(?P<gid>\d+)")
ROLE_LABEL = de.LABEL_PREFIX + "role"
JOB_LABEL = de.LABEL_PREFIX + "job"
RUN_LABEL = de.LABEL_PREFIX + "run"


class DockerBookRunner(BookRunner):
    """Runs the book in a container of the environment's image, on a Docker engine.

    The checkout is mounted read-write at the same path as on this machine (so every path
    the engines write in the book's settings stays valid) and is the container's working
    directory; each dataset is mounted read-only at data/<name> in it. The container has no
    network (loopback only), no Docker socket, no capabilities, no new privileges, runs as
    `user` (not root) under CPU, memory and process limits, and is removed when the command
    ends, fails, is cancelled or runs out of time. Its log streams into the job's log.
    """

    docker_host = Unicode(
        help="""The Docker engine the books run on: unix:///path/to/docker.sock or
        tcp://host:port. Default: the docker builder's (c.DockerBuilder.docker_host), where
        the environment images are; that is DOCKER_HOST, or unix:///var/run/docker.sock.""",
    ).tag(config=True)

    @default("docker_host")
    def _default_docker_host(self) -> str:
        return de.default_host()

    user = Unicode(
        "1000:1000",
        help="""UID:GID the book runs as in the container (numbers; not root). The default is
        the user of repo2docker's images. The service hands the checkout to this user for the
        build and takes it back after, which needs the service to run as root, or as this
        very UID.""",
    ).tag(config=True)

    @validate("user")
    def _valid_user(self, proposal) -> str:
        m = USER.fullmatch(proposal["value"])
        if not m:
            raise ValueError(f"user {proposal['value']!r}: use numbers, UID:GID (e.g. 1000:1000)")
        if int(m["uid"]) == 0:
            raise ValueError("user: books do not run as root (UID 0)")
        return proposal["value"]

    cpu_limit = Float(2.0, help="CPUs a book build may use (may be fractional).").tag(config=True)
    mem_limit = Unicode(
        "4G", help="Memory a book build may use (e.g. 4G, 512M); no swap beyond it."
    ).tag(config=True)

    @validate("mem_limit")
    def _valid_memory(self, proposal) -> str:
        memory_bytes(proposal["value"])
        return proposal["value"]

    pids_limit = Int(1024, help="Processes (and threads) a book build may run at once.").tag(
        config=True
    )

    registry_auth = Dict(
        allow_none=True,
        help="""Credentials ({"username", "password"}) for pulling images that are not on the
        engine; the service sets them from the builder's registry settings.""",
    )

    @property
    def _ids(self) -> tuple[int, int]:
        m = USER.fullmatch(self.user)
        return int(m["uid"]), int(m["gid"])

    async def _ensure_image(self, ctx: JobContext, image: str) -> None:
        """An image built elsewhere (a BinderHub, another engine) is pulled from its registry.

        Only names with a registry host: a bare name was built on an engine, and is not
        looked for on Docker Hub (the container's start then says to rebuild it)."""
        if de.registry_host(image) is None:
            return
        try:
            async with de.engine(self.docker_host) as client:
                if await de.inspect_image(client, image) is not None:
                    return
                who = f" as {self.registry_auth['username']}" if self.registry_auth else ""
                ctx.say(f"Pulling {image} from its registry{who}")
                await de.pull_image(client, image, self.registry_auth, ctx.say)
        except de.EngineUnavailable as e:
            raise JobFailed(f"{e} Ask the operator to start it.") from None
        except de.DockerError as e:
            raise JobFailed(
                f"The environment's image {image} is not on the Docker engine and cannot be "
                f"pulled: {e.message}. If its registry needs a login, the operator sets the "
                "builder's registry_username and NEUROLIBRE_REGISTRY_PASSWORD; if the image "
                "was deleted, rebuild the environment."
            ) from None

    async def environment(self, ctx: JobContext, environment: str) -> EnvInfo:
        """Ask the image itself (a short container running its python3)."""
        await self._ensure_image(ctx, environment)
        lines: list[str] = []
        argv = ["python3", "-c", PROBE, ",".join(DISTRIBUTIONS), ",".join(COMMANDS)]
        try:
            async with asyncio.timeout(PROBE_TIME_LIMIT):
                code = await self._container(ctx, environment, argv, on_line=lines.append)
        except TimeoutError:
            code = None
        found = [line for line in lines if line.startswith("neurolibre-env: ")]
        if code != 0 or not found:
            what = "did not answer in time" if code is None else f"exited with status {code}"
            tail = "; its last lines:\n" + "\n".join(lines[-10:]) if lines else ""
            raise JobFailed(
                f"Cannot look into the environment's image {environment}: its python3 {what}. "
                "The image must have Python (python3 on its PATH) with the book's programs" + tail
            )
        info = json.loads(found[-1].removeprefix("neurolibre-env: "))
        path = info["path"] or "/usr/local/bin:/usr/bin:/bin"
        bin_dir = str(PurePosixPath(info["prefix"]) / "bin")
        if bin_dir not in path.split(":"):
            path = f"{bin_dir}:{path}"
        return EnvInfo(environment, PurePosixPath(info["prefix"]), info["python"],
                       info["versions"], info["commands"], root=info["uid"] == 0, path=path,
                       home="" if info["home_writable"] else "/tmp")  # fmt: skip

    async def myst_tools(self, ctx: JobContext, env: EnvInfo, work: Path) -> MystTools:
        """The service's node, npm and mystmd, mounted read-only into the container (node
        must be a build that needs nothing of this machine), found by name through small
        scripts in the build's folder; the Jupyter server MyST starts is the image's (`python
        -m jupyter_server`, python from the image's PATH), as NeuroLibre's images have it, and
        the kernel is the image's Python."""
        programs = self.myst_programs()
        node, npm, js = (f"{SERVICE_MOUNT}/node", f"{SERVICE_MOUNT}/npm",
                         f"{SERVICE_MOUNT}/mystmd")  # fmt: skip
        bin_dir = work / "bin"
        bin_dir.mkdir(exist_ok=True)
        for name, target in (("node", node), ("npm", f"{node} {npm}/bin/npm-cli.js")):
            (bin_dir / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
            (bin_dir / name).chmod(0o755)
        return MystTools([node, f"{js}/{programs.bundle.name}"], programs.version,
                         f"python -m jupyter_server of the image {env.name}",
                         path=f"{bin_dir}:{env.path}",
                         mounts=[(programs.node, node), (programs.npm_package, npm),
                                 (programs.bundle.parent, js)])  # fmt: skip

    def announce(self, ctx: JobContext, env: EnvInfo) -> None:
        ctx.say(f"The book runs in a container of {env.name} (user {self.user}, no network, "
                f"no new privileges, {self.cpu_limit:g} CPUs, {self.mem_limit} of memory): "
                "writes only to the checkout, data read-only.")  # fmt: skip

    async def recover(self) -> None:
        """Book containers left by an earlier run of the service (it stopped, or crashed,
        during a build): they are removed, their jobs are re-queued by the job queue."""
        try:
            async with de.engine(self.docker_host) as client:
                removed = await _remove_labelled(client, ROLE_LABEL + "=book")
        except (de.EngineUnavailable, de.DockerError, OSError) as e:  # must not stop the start
            self.log.error("Could not look for book containers of an earlier run: %s", e)
            return
        if removed:
            self.log.warning("Removed %d book container(s) left by an earlier run", removed)

    async def run(self, ctx: JobContext, argv: Sequence[str], *, checkout: Path, env: EnvInfo,
                  datasets: Sequence[tuple[str, Path]], extra_env: dict[str, str],
                  cwd: Path | None = None, readable: Sequence[Path] = (),
                  mounts: Sequence[tuple[Path, str]] = ()) -> int:  # fmt: skip
        uid, gid = self._ids
        as_root = os.geteuid() == 0
        if not as_root and os.geteuid() != uid:
            raise JobFailed(
                f"The book cannot run: it runs as user {self.user} in its container, and this "
                f"service (user {os.geteuid()}) cannot give that user the checkout. The "
                "operator must run the service as root, or set c.DockerBookRunner.user to the "
                "service's own UID:GID."
            )
        service_files = [(Path(src), Path(dst), True) for src, dst in mounts]
        mounts = [(checkout, checkout, False)]
        mounts += [(src, dst, True) for src, dst in _data_mounts(ctx, checkout, datasets,
                                                                  link=False)]  # fmt: skip
        mounts += [(Path(p).resolve(), Path(p).resolve(), True) for p in readable]
        mounts += service_files
        variables = {**BOOK_ENV, **extra_env}
        if env.path and "PATH" not in extra_env:
            variables["PATH"] = env.path
        if env.home:
            variables["HOME"] = env.home
        if as_root:  # the build writes in the checkout as its user
            await asyncio.to_thread(chown_tree, checkout, uid, gid)
        try:
            return await self._container(ctx, env.name, argv, on_line=ctx.log.write,
                                         mounts=mounts, cwd=cwd or checkout,
                                         variables=variables)  # fmt: skip
        finally:
            if as_root:  # back to the service (no set-id bits), which moves the results out
                await asyncio.shield(asyncio.to_thread(freeze_tree, checkout, os.geteuid(),
                                                       os.getegid()))  # fmt: skip

    async def _container(self, ctx: JobContext, image: str, argv: Sequence[str], *,
                         on_line: Callable[[str], None],
                         mounts: Sequence[tuple[Path, Path, bool]] = (), cwd: Path | None = None,
                         variables: Mapping[str, str] | None = None) -> int:  # fmt: skip
        """Run argv in a new container of `image`, each output line to on_line; its exit
        status. The container is removed however this ends (cancel and time limits too)."""
        token = uuid.uuid4().hex
        config = self._config(ctx, image, argv, mounts, cwd, variables or {}, token)
        try:
            async with de.engine(self.docker_host) as client:
                try:
                    container = await client.containers.create(config)
                    await container.start()
                except de.DockerError as e:
                    if e.status == 404 and "image" in str(e.message).lower():
                        raise JobFailed(
                            f"The Docker engine at {self.docker_host} has no image {image}: "
                            "the environment must be built again."
                        ) from None
                    raise JobFailed(
                        f"The book's container cannot start on {self.docker_host}: {e.message}"
                    ) from None
                await _stream_lines(container, on_line)
                status = (await container.wait()).get("StatusCode", -1)
                state = (await container.show()).get("State") or {}
                if state.get("OOMKilled"):
                    ctx.say(f"!! The book ran out of memory: it may use {self.mem_limit} "
                            f"(c.{type(self).__name__}.mem_limit).")  # fmt: skip
                return status
        except de.EngineUnavailable as e:
            raise JobFailed(f"{e} Ask the operator to start it.") from None
        finally:
            await asyncio.shield(self._remove(token))

    def _config(self, ctx: JobContext, image: str, argv: Sequence[str],
                mounts: Sequence[tuple[Path, Path, bool]], cwd: Path | None,
                variables: Mapping[str, str], token: str) -> dict:  # fmt: skip
        memory = memory_bytes(self.mem_limit)
        config = {
            "Image": image,
            "Cmd": list(argv),
            "User": self.user,
            "Env": [f"{k}={v}" for k, v in variables.items()],
            "Labels": {ROLE_LABEL: "book", JOB_LABEL: str(ctx.job_id), RUN_LABEL: token},
            "AttachStdin": False, "OpenStdin": False, "Tty": False,
            "HostConfig": {
                "Mounts": [{"Type": "bind", "Source": str(src), "Target": str(dst),
                            "ReadOnly": ro} for src, dst, ro in mounts],
                "NetworkMode": "none",
                "SecurityOpt": ["no-new-privileges"],
                "CapDrop": ["ALL"],
                "Privileged": False,
                "Init": True,  # reaps the notebooks' processes, passes signals on
                "NanoCpus": int(self.cpu_limit * 1e9),
                "Memory": memory,
                "MemorySwap": memory,
                "PidsLimit": self.pids_limit,
                "LogConfig": {"Type": "json-file",
                              "Config": {"max-size": "20m", "max-file": "2"}},
            },
        }  # fmt: skip
        if cwd is not None:
            config["WorkingDir"] = str(cwd)
        return config

    async def _remove(self, token: str) -> None:
        """The container of one run, found by its label (even if its creation was cut short
        before its id came back), killed and removed; failures are logged, not raised."""
        try:
            async with de.engine(self.docker_host, check=False) as client:
                await _remove_labelled(client, f"{RUN_LABEL}={token}")
        except (de.DockerError, OSError) as e:
            self.log.warning("Removing book container %s failed: %s", token, e)


async def _remove_labelled(client, label: str) -> int:
    found = await client.containers.list(all="1", filters=json.dumps({"label": [label]}))
    removed = 0
    for container in found:
        removed += await de.remove_container(client, container.id)
    return removed


async def _stream_lines(container, on_line: Callable[[str], None]) -> None:
    """The container's output (stdout and stderr), line by line as it comes, long lines cut."""
    lines = LineCutter(on_line, unit="characters")
    async for chunk in container.log(stdout=True, stderr=True, follow=True):
        lines.feed(chunk)
    lines.close()


def with_ro_binds(argv: list[str], binds: Sequence[tuple[Path, Path]]) -> list[str]:
    """Add read-only bind mounts (source, target) to a bubblewrap command from Sandbox.wrap.

    They go last among the mounts, so they land inside the writable checkout bound before.
    """
    at = argv.index("--")
    extra = [arg for src, dst in binds for arg in ("--ro-bind", str(src), str(dst))]
    return [*argv[:at], *extra, *argv[at:]]


def _data_mounts(ctx: JobContext, checkout: Path, datasets: Sequence[tuple[str, Path]], *,
                 link: bool) -> list[tuple[Path, Path]]:  # fmt: skip
    """Make checkout/data/<name> ready to receive each dataset; returns (dataset, target).

    Whatever the repository has there (a file, a symlink, a directory) is replaced, and data/
    itself must be a real directory, so a repository cannot aim the mount elsewhere.
    """
    if not datasets:
        return []
    data = checkout / "data"
    if data.is_symlink() or (data.exists() and not data.is_dir()):
        ctx.say("The repository's data/ is not a directory; it is replaced for the build.")
        data.unlink()
    data.mkdir(exist_ok=True)
    mounts = []
    for name, src in datasets:
        target = data / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            ctx.say(f"The repository's data/{name} is replaced by the dataset {name}.")
            shutil.rmtree(target)
        if link:
            target.symlink_to(Path(src).resolve(), target_is_directory=True)
        else:
            target.mkdir()
        mounts.append((Path(src).resolve(), target))
    return mounts
