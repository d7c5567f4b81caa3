"""MyST site themes: the author names one in myst.yml, the service provides it.

`site: template: article-theme` (or `book-theme`, MyST's default) in myst.yml is a name, looked
up in the operator's folder of themes (one folder per name, each with its template.yml). A theme
the service does not have yet is downloaded once, at the version pinned here for the pinned
mystmd, from MyST's own theme repositories (myst-templates/<name> on GitHub: each release is a
commit there), its packages installed with `npm ci --ignore-scripts` (confined, no package
scripts), and reused by every later build.

MyST is then handed the absolute path of that folder. A repository never makes MyST fetch or
read a theme of its own: a path (even inside the repository) or an address in `site.template`
is refused before anything runs, so the page a reader gets is always drawn by a theme the
operator provides.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shutil
import stat
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from .processes import run_streaming
from .sandbox import Sandbox

DEFAULT_THEME = "book-theme"  # what MyST uses when myst.yml names none
THEME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# MyST's own spellings of its public site themes ('myst/book-theme', 'site/myst/book-theme')
MYST_PREFIXES = ("site/myst/", "myst/")
# the releases of MyST's site themes this service downloads: made for the pinned mystmd
# (pyproject.toml); each is the commit "🚀 vX.Y.Z" of github.com/myst-templates/<name>
PINNED_THEMES = {
    "article-theme": "75058e55fdb4c3287fb6258fc0aabf47e3620bbc",  # v1.1.4
    "book-theme": "eba3b0069f8c061b52927a09450c2a1cabd5d10e",  # v1.1.2
}
THEME_URL = "https://github.com/myst-templates/{name}/archive/{version}.zip"
MAX_DOWNLOAD = 300 << 20  # bytes of one theme's archive
MAX_UNPACKED = 1 << 30  # bytes it may unpack to
NPM_TIME_LIMIT = 900


class ThemeRequestError(ValueError):
    """The author asked for a theme this service cannot give (the message says what to write)."""


class ThemeUnavailable(RuntimeError):
    """A theme the service knows but does not have and cannot get: the operator's to fix."""


def requested_theme(site: Mapping | None, where: str) -> str:
    """The theme myst.yml's `site.template` names (none: MyST's default, the book-theme)."""
    template = (site or {}).get("template")
    if template is None:
        return DEFAULT_THEME
    name = template.strip() if isinstance(template, str) else ""
    for prefix in MYST_PREFIXES:
        name = name.removeprefix(prefix)
    if not THEME_NAME.fullmatch(name):
        shown = template if isinstance(template, str) else type(template).__name__
        raise ThemeRequestError(
            f"{where} sets site.template: {shown[:200]!r}; this service draws preprints with "
            "the MyST themes it provides, named, never with a theme from a path or an "
            "address. Write `template: article-theme` (or book-theme) under site:."
        )
    return name


def check_theme(theme: Path, what: str) -> Path:
    """A theme folder MyST can use as it is (builds cannot write to it): its template.yml, and
    its packages installed unless it renders pages itself. Raises ThemeUnavailable."""
    try:
        template = yaml.safe_load((theme / "template.yml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ThemeUnavailable(
            f"The MyST theme {what} is not usable: its template.yml cannot be read ({e}). "
            "The operator must fix it."
        ) from None
    renders = isinstance(template, dict) and (template.get("build") or {}).get("render")
    if not renders and not (theme / "node_modules").is_dir():
        raise ThemeUnavailable(
            f"The MyST theme {what} has no node_modules: the operator must run "
            "`npm ci --ignore-scripts` in it (it is read-only during builds)."
        )
    return theme


@dataclass
class ThemeStore:
    """The themes this service has (`root`/<name>/), and how it gets the ones it lacks."""

    root: Path | None  # the operator's folder of themes (c.BookRunner.myst_themes_dir)
    setting: str  # "c.LocalBookRunner": where messages point the operator
    book_theme: Path | None = None  # c.BookRunner.myst_theme: a copy of the book-theme
    versions: Mapping[str, str] = field(default_factory=lambda: dict(PINNED_THEMES))
    url: str = THEME_URL  # {name} and {version} are filled in
    download: bool = True
    sandbox: Sandbox | None = None  # confines `npm ci` (None: runs as the service)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def known(self) -> list[str]:
        """Theme names an author may ask for here."""
        names = set(self.versions)
        if self.book_theme:
            names.add(DEFAULT_THEME)
        if self.root and self.root.is_dir():
            names |= {p.name for p in self.root.iterdir()
                      if THEME_NAME.fullmatch(p.name) and (p / "template.yml").is_file()}  # fmt: skip
        return sorted(names)

    def _local(self, name: str) -> Path | None:
        if name == DEFAULT_THEME and self.book_theme:
            return Path(self.book_theme).expanduser().resolve()
        if self.root is None:
            return None
        path = self.root / name  # a THEME_NAME: one folder name, never a way out of root
        return path.resolve() if (path / "template.yml").is_file() else None

    def _what(self, name: str, path: Path) -> str:
        if name == DEFAULT_THEME and self.book_theme:
            return f"{name} ({self.setting}.myst_theme = {path})"
        return f"{name} ({path})"

    async def get(self, name: str, where: str, say: Callable[[str], None]) -> Path:
        """The folder of theme `name` (a THEME_NAME), downloaded first if need be."""
        local = self._local(name)
        if local is not None:
            return check_theme(local, self._what(name, local))
        if name not in self.versions:
            raise ThemeRequestError(
                f"{where} asks for the site theme {name!r}, which this service does not have. "
                f"Use one of: {', '.join(self.known())} (site: template: article-theme)."
            )
        url = self.url.format(name=name, version=self.versions[name])
        if self.root is None or not self.download:
            why = ("downloading themes is off (c.BookRunner.myst_theme_download)"
                   if self.root is not None else "this runner has no myst_themes_dir")  # fmt: skip
            raise ThemeUnavailable(self._provide(name, url, why))
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if (local := self._local(name)) is None:
                await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
                # another process on the same data directory (`neurolibre build`) may get it too
                with open(self.root / f".{name}.lock", "w") as fh:  # noqa: ASYNC230 (tiny, local)
                    await asyncio.to_thread(fcntl.flock, fh, fcntl.LOCK_EX)
                    try:
                        if (local := self._local(name)) is None:
                            local = await self._download(name, url, say)
                    finally:
                        fcntl.flock(fh, fcntl.LOCK_UN)
        return check_theme(local, self._what(name, local))

    def _provide(self, name: str, url: str, why: str) -> str:
        where = f"{self.root}/{name}" if self.root else f"<themes folder>/{name}"
        return (
            f"The MyST theme {name} is not on this server, and {why}. The operator must provide "
            f"it: on a machine with internet access, download {url} (the version this service "
            "pins), unzip it, run `npm ci --ignore-scripts` in the folder it holds, and copy "
            f"that folder to {where} ({self.setting}.myst_themes_dir; `neurolibre build "
            "--myst-themes DIR` takes such a folder of themes)."
        )

    async def _download(self, name: str, url: str, say: Callable[[str], None]) -> Path:
        assert self.root is not None
        say(f"Downloading the MyST theme {name} (once, for every later build): {url}")
        work = self.root / f".{name}-{uuid.uuid4().hex[:8]}"
        archive = work.with_suffix(".zip")
        try:
            try:
                await _fetch(url, archive)
            except (httpx.HTTPError, OSError, ValueError) as e:
                raise ThemeUnavailable(
                    self._provide(name, url, f"downloading it failed ({e})")
                ) from None
            try:
                top = await asyncio.to_thread(_unpack, archive, work)
            except (zipfile.BadZipFile, OSError, ValueError) as e:
                raise ThemeUnavailable(
                    self._provide(name, url, f"its archive is not usable ({e})")
                ) from None
            if (top / "package.json").is_file():
                await self._npm(name, url, top, say)
            target = self.root / name
            await asyncio.to_thread(_remove, target)
            await asyncio.to_thread(os.rename, top, target)
            say(f"The MyST theme {name} is ready: {target}")
            return target.resolve()
        finally:
            await asyncio.to_thread(_remove, archive)
            await asyncio.to_thread(_remove, work)

    async def _npm(self, name: str, url: str, top: Path, say: Callable[[str], None]) -> None:
        """The theme's packages (its server's), as its template.yml says: `npm ci
        --ignore-scripts` (no package runs code while it is installed), confined."""
        npm = shutil.which("npm")
        if npm is None:
            raise ThemeUnavailable(self._provide(name, url, "npm is not installed to install "
                                                 "its packages (apt-get install npm)"))  # fmt: skip
        ci = "ci" if (top / "package-lock.json").is_file() else "install"
        argv = [npm, ci, "--ignore-scripts", "--no-audit", "--no-fund"]
        sandbox = self.sandbox or Sandbox("none")
        tools = {
            Path(npm).resolve().parent.parent,
            Path(shutil.which("node") or npm).resolve().parent,
        }
        readable = sorted(t for t in tools if t != Path("/"))
        environ = sandbox.env(path_prefix=[str(p) for p in readable], extra={"NO_COLOR": "1"})
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            del lines[:-20]
            say(line)

        await asyncio.to_thread(sandbox.lend, top)
        try:
            wrapped = sandbox.wrap(argv, writable=[top], readable=readable, cwd=top, network=True)
            async with asyncio.timeout(NPM_TIME_LIMIT):
                code = await run_streaming(wrapped, on_line=keep, cwd=str(top), env=environ)
        except TimeoutError:
            code = None
        finally:
            await asyncio.to_thread(sandbox.reclaim, top)
        if code != 0:
            what = "took too long" if code is None else f"exited with status {code}"
            raise ThemeUnavailable(self._provide(
                name, url, f"`npm {ci} --ignore-scripts` in it {what}: " + " / ".join(lines[-5:])
            ))  # fmt: skip


async def _fetch(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    async with httpx.AsyncClient(follow_redirects=True, timeout=60) as client:
        async with client.stream("GET", url) as response:
            response.raise_for_status()
            with open(dest, "wb") as out:  # noqa: ASYNC230 (chunks as they come)
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD:
                        raise ValueError(f"larger than {MAX_DOWNLOAD >> 20} MB")
                    out.write(chunk)


def _unpack(archive: Path, work: Path) -> Path:
    """Unzip into work (regular files and folders only, each inside it); the folder holding
    template.yml (GitHub's archives have one folder at the top)."""
    work.mkdir(parents=True)
    total = 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            parts = Path(info.filename).parts
            if info.filename.startswith("/") or ".." in parts or stat.S_ISLNK(mode):
                raise ValueError(f"{info.filename!r} would land outside the theme")
            total += info.file_size
            if total > MAX_UNPACKED:
                raise ValueError(f"it unpacks to more than {MAX_UNPACKED >> 20} MB")
            zf.extract(info, work)
    if (work / "template.yml").is_file():
        return work
    inner = [p for p in work.iterdir() if (p / "template.yml").is_file()]
    if len(inner) != 1:
        raise ValueError("it has no template.yml")
    return inner[0]


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
