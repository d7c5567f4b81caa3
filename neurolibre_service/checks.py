"""The preprint layout checks (NeuroLibre handbook, "preprint repository structure").

One code path for the CLI (`neurolibre check`), the build's check stage and `api/check` (the
service runs it in a child process: see checks_runner.py). Errors stop a build before anything
is installed; warnings are deviations that still build. Every finding says where and gives a
concrete instruction.

What authors write is read the way the tools that build it read it:
- the book is found where the builder finds it (booklayout.find_book): Jupyter Book 1 in content/
  (content/_neurolibre.yml's single-page layout included), else a MyST project (myst.yml in
  content/ or at the repository root). A MyST preprint's metadata is myst.yml's `project:`
  (paper.md's front matter on top), and its book tool is the service's own mystmd.
- Markdown is parsed (markdown-it-py): a citation counts only in prose, never in a code span, a
  code block, a code-like directive or HTML; notebooks' Markdown cells alike.
- BibTeX is parsed (bibtexparser); requirement lines by the local builder's own parser
  (environments/requirements.py, with packaging), so its refusals read the same here.

The repository is hostile: every file is read through Checker.read, which never leaves the
checkout (a symbolic link out of it is a finding, never followed), never opens a special file
(FIFO, device, socket) and never reads more than a cap. Directory walks do not follow links and
stop after a number of entries. The slow parsers get less: BibTeX files up to MAX_BIB_SIZE, and
at most MAX_PROSE characters of Markdown per check (pathological Markdown parses at ~30 us/char).
"""

from __future__ import annotations

import ast
import bisect
import io
import json
import logging
import os
import re
import stat
import tokenize
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import bibtexparser
import yaml
from bibtexparser.model import DuplicateBlockKeyBlock, DuplicateFieldKeyBlock
from markdown_it import MarkdownIt
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from . import booklayout
from .booklayout import Book

ERROR, WARNING = "error", "warning"
PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# pandoc's citation key: starts with a letter, digit or _, internal punctuation allowed; not
# preceded by a word character, @ or '.' (an e-mail address is not a citation)
CITATION_RE = re.compile(r"(?<![\w@.])@([A-Za-z0-9_][\w:.#$%&+?<>~/-]*[\w]|[A-Za-z0-9_])")
BRACKETS_RE = re.compile(r"\[([^\[\]]*)\]")  # pandoc's [see @a, p. 3; @b]
DOI_RE = re.compile(r"10\.\d{4,9}/\S+")  # MyST cites @10.xxxx/yyy from doi.org, not a .bib
CITE_ROLE_RE = re.compile(r"\{cite(?::[a-z]+)?\}$")  # {cite}`key`, {cite:p}`a,b`, {cite:t}...
ROLE_KEY_RE = re.compile(r"[^\s,;{}]+")
DIRECTIVE_RE = re.compile(r"\{([\w:.-]+)\}")  # a MyST directive's fence: ```{note}
DIRECTIVE_OPTION_RE = re.compile(r"\s*:[\w-]+:")  # `:class: tip` lines at a directive's top
# directives whose body is code or data, not prose
CODE_DIRECTIVES = frozenset({
    "code-cell", "raw-cell", "code", "code-block", "sourcecode", "literalinclude", "raw", "math",
    "mermaid", "eval-rst", "csv-table", "include", "bibliography", "toctree", "graphviz", "dot",
    "jupyter-execute", "ipython", "doctest", "testcode", "glue", "glue:figure", "glue:any",
})  # fmt: skip
MAX_NESTING = 4  # directives inside directives, parsed for prose
BIB_KEY_RE = re.compile(r"@\s*\w+\s*[{(]\s*([^,\s}]+)")  # the key of an entry that failed to parse
RUNTIME_RE = re.compile(r"python-(\d+)\.(\d+)(\.\d+)?", re.IGNORECASE)  # repo2docker's runtime.txt
LOOSE_PYTHON_RE = re.compile(r"(?:python|py)?\s*[-_ ]?\s*v?(\d+)\.(\d+)(?:\.\d+)?", re.IGNORECASE)
# a quoted string with a drive letter or a backslash (one pass: no nested quantifiers)
INTERNET_ADDRESS_RE = re.compile(r"https?://\S+")
WINDOWS_PATH_RE = re.compile(r"""['"](?:[A-Za-z]:\\|[^'"\n\\]*\\)[^'"\n]*['"]""")
EXECUTABLE_SUFFIXES = (".ipynb",)
PAGE_SUFFIXES = (".md", ".myst")
TOC_SUFFIXES = ("", ".md", ".ipynb", ".rst", ".myst", ".py")
MANY_REQUIREMENTS = 60
# YAML between --- lines at the very top (myst-nb's rule: the closing line starts with --- or ...)
FRONT_MATTER_RE = re.compile(r"---[ \t]*\n(?:(.*?)\n)?(?:---|\.\.\.)[^\n]*(?:\n|$)", re.S)
MAX_FILE_SIZE = 5 << 20  # paper.md, YAML, JSON, Markdown
NOTEBOOK_FACTOR = 5  # notebooks keep their outputs (images): a larger cap
MAX_BIB_SIZE = 2 << 20  # BibTeX parses at ~10 us/byte on hostile input
MAX_PROSE = 1 << 20  # characters of Markdown parsed per check, all files together
MAX_ENTRIES = 20_000  # files and folders walked in the repository
MAX_FINDINGS = 500
MAX_TEXT = 500  # characters of the repository's own text quoted in a finding
MAX_YAML_NODES = 100_000  # values a YAML document may expand to (aliases: "billion laughs")
MAX_BIB_FINDINGS = 5  # per BibTeX file: the first broken entries are enough to start fixing
SKIP_DIRS = frozenset({".git", "_build", ".ipynb_checkpoints", "__pycache__"})
LARGE_FIX = (
    "Keep large files out of the repository: data_requirement.json fetches data at build time, "
    "and notebook outputs are recomputed by the build (clear them before committing)."
)
JB1_PIN = "jupyter-book==1.0.4.post1"
YAML_FIX = ("Correct the YAML there: indent nested keys by the same number of spaces, put a space "
            "after each ':', and quote values that contain ': ' or start with @, `, [ or {.")  # fmt: skip

# markdown-it's CommonMark with tables; text_join off, so an escaped \@ stays apart from text
MARKDOWN = MarkdownIt("commonmark").enable("table").disable("text_join")
# the parser logs each broken entry (and, without a handler, Python prints warnings on stderr):
# the findings say it instead
logging.getLogger("bibtexparser").setLevel(logging.CRITICAL + 1)


@dataclass(frozen=True)
class Finding:
    level: str
    file: str | None
    line: int | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = (
            f"{self.file}:{self.line}" if self.file and self.line else (self.file or "repository")
        )
        return f"{self.level}: {where}: {self.message}\n    fix: {self.fix}"


@dataclass(frozen=True)
class Citation:
    file: str
    line: int | None
    key: str
    cell: int | None = None  # a notebook's Markdown cell (1-based)


@dataclass
class Bibliography:
    rel: str  # path in the repository
    named_in: str | None  # where the author named it ("paper.md's front matter"); None: default
    keys: set[str] | None = None  # None: missing, or refused with a finding of its own
    refused: bool = False  # too large, a link out...: a finding says so; citations not checked


class Checker:
    def __init__(self, root: Path, repository_url: str | None = None, *,
                 max_file_size: int = MAX_FILE_SIZE, max_entries: int = MAX_ENTRIES,
                 allowed_indexes: Sequence[str] = (), local_builder: bool = True):  # fmt: skip
        """allowed_indexes: the local builder's index allow-list (c.LocalBuilder.allowed_index_urls);
        local_builder: report the local builder's refusals of requirement lines (repo2docker, for
        the docker and binderhub backends, reads requirements.txt itself)."""
        self.root = root.resolve()
        self.repository_url = repository_url
        self.max_file_size = max_file_size
        self.max_notebook_size = NOTEBOOK_FACTOR * max_file_size
        self.max_entries = max_entries
        self.allowed_indexes = tuple(allowed_indexes)
        self.local_builder = local_builder
        self.findings: list[Finding] = []
        self.dropped = 0  # findings past MAX_FINDINGS
        self.refused: set[str] = set()  # paths with a finding of their own: not "missing"
        self.front: dict = {}  # the preprint's metadata (paper.md; myst.yml's project: first)
        self.files: list[str] = []  # regular files of the repository (walked, bounded)
        self.walk_complete = True
        self.entries = 0
        self.walked: set[str] = set()
        self.book = Book(None, "")
        self.neurolibre: dict = {}  # content/_neurolibre.yml
        self.project: dict = {}  # myst.yml's project:
        self.paper_front: dict = {}  # paper.md's front matter
        self.citations: list[Citation] = []
        self.prose_left = MAX_PROSE
        self.prose_unchecked: list[str] = []  # files whose Markdown was past MAX_PROSE
        self.code_cells: set[str] = set()  # Markdown pages with {code-cell}s
        self.yaml_cache: dict[str, object] = {}

    def add(self, level: str, file: str | None, message: str, fix: str,
            line: int | None = None) -> None:  # fmt: skip
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped += 1
            return
        self.findings.append(Finding(level, file, line, _short(message), _short(fix)))

    # -- reading the repository without leaving it ---------------------------------------

    def blocked(self, rel: str) -> bool:
        """Whether rel, or a folder on its way, was refused (a finding says why)."""
        return any(rel == r or rel.startswith(f"{r}/") for r in self.refused)

    def _refuse(self, rel: str, level: str, message: str, fix: str) -> None:
        if not self.blocked(rel):
            self.refused.add(rel)
            self.add(level, rel, message, fix)

    def _outside(self, rel: str, link: Path) -> None:
        try:
            target = os.readlink(link)
        except (OSError, ValueError):
            target = "?"
        self._refuse(rel, ERROR, f"{rel} is a symbolic link to {target!r}, outside the "
                     "repository; it is not followed.", "Replace the link with the file or folder "
                     "itself: a build sees only the repository.")  # fmt: skip

    def _inside(self, path: str | Path) -> bool:
        return Path(path) == self.root or self.root in Path(path).parents

    def locate(self, rel: str) -> tuple[Path, os.stat_result] | None:
        """The real path of rel and its lstat, if it exists inside the checkout.

        Each link on the way is resolved and must stay in the checkout; one that leaves it is a
        finding (on the link) and rel is not followed.
        """
        norm = PurePosixPath(os.path.normpath(rel))
        parts = norm.parts
        if not parts or norm.is_absolute() or parts[0] in (".", ".."):
            self._refuse(rel, ERROR, f"{rel} is not a path inside the repository.",
                         "Use a path relative to the repository, without '..'.")  # fmt: skip
            return None
        cur, st = self.root, None
        for i, part in enumerate(parts):
            nxt = cur / part
            try:
                st = os.lstat(nxt)
                if stat.S_ISLNK(st.st_mode):
                    real = Path(os.path.realpath(nxt))
                    if not self._inside(real):
                        self._outside("/".join(parts[: i + 1]), nxt)
                        return None
                    nxt, st = real, os.lstat(real)  # a link loop stays a link: not a file
            except PermissionError:
                self._unreadable("/".join(parts[: i + 1]))
                return None
            except (OSError, ValueError):  # missing, not a directory, a loop, a NUL byte
                return None
            cur = nxt
        return (cur, st) if st is not None else None

    def kind(self, rel: str) -> str | None:
        """What rel is inside the checkout ("file", "dir", "other"); None: missing or refused."""
        found = self.locate(rel)
        if found is None:
            return None
        mode = found[1].st_mode
        return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"

    def read(self, rel: str, limit: int | None = None, level: str = ERROR) -> str | None:
        """rel's text, or None: missing, or refused with a finding (see blocked)."""
        found = self.locate(rel)
        if found is None or stat.S_ISDIR(found[1].st_mode):
            return None
        path, st = found
        limit = self.max_file_size if limit is None else limit
        if not stat.S_ISREG(st.st_mode):
            self._special(rel, st.st_mode)
            return None
        if st.st_size > limit:
            self._too_large(rel, st.st_size, limit, level)
            return None
        try:  # no link, no blocking open, and never more than limit + 1 bytes
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            self._unreadable(rel)
            return None
        except (OSError, ValueError):
            return None
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._special(rel, st.st_mode)
                return None
            data = f.read(limit + 1)
        if len(data) > limit:
            self._too_large(rel, len(data), limit, level)
            return None
        return data.decode("utf-8", errors="replace")

    def _unreadable(self, rel: str) -> None:
        self._refuse(rel, ERROR, f"{rel} cannot be read (permission denied).",
                     "Make it readable by everyone (chmod -R a+rX), as Git would check it out.")  # fmt: skip

    def _special(self, rel: str, mode: int) -> None:
        what = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")  # fmt: skip
        self._refuse(rel, ERROR, f"{rel} is {what}, not a regular file; it is not read.",
                     "Remove it: a preprint repository holds regular files only.")  # fmt: skip

    def _too_large(self, rel: str, size: int, limit: int, level: str) -> None:
        more = "more than " if size == limit + 1 else ""
        self._refuse(rel, level, f"{rel} is {more}{_size(size)}; the check reads files up to "
                     f"{_size(limit)}, so it was not checked.", LARGE_FIX)  # fmt: skip

    def walk(self, top: str) -> Iterator[str]:
        """Regular files under top (relative paths), never through a link, at most max_entries.

        Links out of the checkout and special files are findings; a link to a file inside the
        checkout is listed, a link to a folder is not walked (no loops, no double counting).
        """
        stack = [top]
        while stack:
            rel_dir = stack.pop()
            try:
                it = os.scandir(self.root / rel_dir if rel_dir else self.root)
            except PermissionError:
                self._unreadable(rel_dir or ".")
                continue
            except OSError:
                continue
            with it:
                for e in it:
                    self.entries += 1
                    if self.entries > self.max_entries:
                        if self.walk_complete:
                            self.walk_complete = False
                            self.add(WARNING, None, f"The repository has more than "
                                     f"{self.max_entries} files and folders; the check looked at "
                                     f"the first {self.max_entries}.", LARGE_FIX)  # fmt: skip
                        return
                    rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                    try:
                        if e.is_symlink():
                            real = os.path.realpath(e.path)
                            if not self._inside(real):
                                self._outside(rel, Path(e.path))
                            elif os.path.isfile(real):
                                yield rel
                        elif e.is_dir(follow_symlinks=False):
                            if e.name not in SKIP_DIRS and rel not in self.walked:
                                stack.append(rel)
                        elif e.is_file(follow_symlinks=False):
                            yield rel
                        else:
                            self._special(rel, e.stat(follow_symlinks=False).st_mode)
                    except OSError:
                        continue

    def scan(self, first: str) -> None:
        """Walk `first` (the book), then the rest of the repository, into self.files."""
        for top in (first, "") if first else ("",):
            self.files += self.walk(top)
            self.walked.add(top)

    def run(self) -> list[Finding]:
        content = self.kind("content")
        self.scan("content" if content == "dir" else "")
        self.book = self.find_book()
        self.check_binder()
        self.front = self.check_paper()
        self.check_book()
        self.check_citations()
        if self.prose_unchecked:
            names = ", ".join(self.prose_unchecked[:5])
            more = (
                f" and {len(self.prose_unchecked) - 5} more"
                if len(self.prose_unchecked) > 5
                else ""
            )
            self.add(WARNING, self.prose_unchecked[0], f"Citations were not checked in {names}{more}: "
                     f"the check reads at most {_size(MAX_PROSE)} of Markdown.", "Build the book to "
                     "see its unresolved citations, and keep long data or generated text out of "
                     "Markdown pages.")  # fmt: skip
        if self.dropped:
            self.findings.append(Finding(WARNING, None, None, f"{self.dropped} more findings are "
                                         "not listed.", "Fix the ones above and check again."))  # fmt: skip
        return self.findings

    def find_book(self) -> Book:
        """Where the builder finds the book (booklayout.find_book: the same function); a Jupyter
        Book at the root is found too, to say where it goes."""
        if self.blocked("content"):
            return Book(None, "content/")  # a link out of the repository: its finding says so
        rel = booklayout.NEUROLIBRE_YML
        data = self._yaml(rel) if self.kind(rel) == "file" else None
        return booklayout.find_book(self.kind, booklayout.neurolibre_settings(data))

    # -- binder/ ---------------------------------------------------------------------------

    def check_binder(self) -> None:
        folder = next((d for d in ("binder", ".binder") if self.kind(d) == "dir"), None)
        if folder is None:
            if self.blocked("binder") or self.blocked(".binder"):
                return
            self.add(WARNING, "binder/", "There is no binder/ folder; the runtime files are looked "
                     "for at the repository root.", "Move requirements.txt (and data_requirement.json) "
                     "into binder/, as the handbook's layout shows.")  # fmt: skip
            base = ""
        else:
            base = f"{folder}/"
        runtime = self.read(f"{base}runtime.txt")
        if runtime is not None:
            self.check_runtime(f"{base}runtime.txt", runtime)
        reqs = self.read(f"{base}requirements.txt")
        if reqs is None:
            others = [f"{base}{f}" for f in ("environment.yml", "Dockerfile")]
            if not self.blocked(f"{base}requirements.txt") and not any(
                self.kind(f) or self.blocked(f) for f in others
            ):
                self.add(ERROR, f"{base}requirements.txt", "No runtime file (requirements.txt, "
                         "environment.yml or Dockerfile).", f"Add {base or 'binder/'}requirements.txt "
                         "listing the packages your notebooks import, one per line with its "
                         "version (e.g. numpy==1.26.4).")  # fmt: skip
        else:
            self.check_requirements(base, reqs)
        data = self.read(f"{base}data_requirement.json")
        if data is not None:
            self.check_data_requirement(f"{base}data_requirement.json", data)

    def check_runtime(self, rel: str, text: str) -> None:
        """repo2docker's runtime.txt: python-X.Y[.Z], in any case (`Python-3.8` is NeuroLibre's
        own template). An R runtime (r-...) is left to the builder, which says who builds it."""
        value = text.removeprefix("\ufeff").strip()
        if RUNTIME_RE.fullmatch(value) or value.lower().startswith("r-"):
            return
        loose = LOOSE_PYTHON_RE.fullmatch(value)
        example = f"python-{loose.group(1)}.{loose.group(2)}" if loose else "python-3.11"
        self.add(ERROR, rel, f"runtime.txt says {_short(value)!r}, which is not a Python version "
                 "the builders read (python-X.Y).", f"Write {example} as the file's only line, or "
                 "delete the file to use the service's default Python.", 1)  # fmt: skip

    def check_requirements(self, base: str, text: str) -> None:
        """requirements.txt as the local builder reads it (its refusals, word for word), the book
        tool the layout needs, and pins."""
        # the builders' package is heavy to import (docker, BinderHub clients): only here
        from .environments.requirements import _logical_lines, parse_requirements
        from .environments.runtime import RUNTIME_FILES

        rel = f"{base}requirements.txt"
        names = sorted(f.removeprefix(base) for f in self.files if f.startswith(base) and
                       (base or f in RUNTIME_FILES))  # fmt: skip
        files = _RuntimeFiles(self, base, names, {"requirements.txt": text.encode()})
        directory = self.root / base if base else self.root
        parsed = parse_requirements(files, directory, prefix=base,
                                    allowed_indexes=self.allowed_indexes)  # fmt: skip
        for p in parsed.errors:  # what the builder would refuse, said the way it says it
            if self.local_builder or p.reason.startswith("is not a valid requirement"):
                self.add(ERROR, p.file, f"{p.text!r} {p.reason}.", _sentence(p.fix), p.line)
        requirements = []
        for line in parsed.requirements:
            try:
                requirements.append(Requirement(line))
            except InvalidRequirement:  # an unnamed URL (git+https://...#egg=x)
                continue
        lines = {}  # the entry file's requirements by name: their line numbers
        for n, line in _logical_lines(text):
            if line.startswith("-"):
                continue
            tokens = line.split()  # pip's split: options start at the first token with -
            cut = next((i for i, t in enumerate(tokens) if t.startswith("-")), len(tokens))
            spec = " ".join(tokens[:cut])
            try:
                req = Requirement(spec)
            except InvalidRequirement:
                continue  # refused above, with the builder's reason
            lines.setdefault(canonicalize_name(req.name), n)
            if req.url is None and not _pinned(req):
                self.add(WARNING, rel, f"{line!r} is not pinned: a later release may change your "
                         "results or break the build.", f"Pin the version you tested with, e.g. "
                         f"{_pin_example(req)} (`pip show {req.name}` prints it).", n)  # fmt: skip
        if self.book.engine == "jupyter-book":
            self.check_book_tool(rel, [r for r in requirements
                                       if canonicalize_name(r.name) == "jupyter-book"],
                                 lines.get("jupyter-book"))  # fmt: skip
        if len(parsed.requirements) > MANY_REQUIREMENTS:
            self.add(WARNING, rel, f"{len(parsed.requirements)} requirements: large environments "
                     "build and start slowly.", "List only the packages your notebooks import; "
                     "their own dependencies are installed with them.")  # fmt: skip

    def check_book_tool(self, rel: str, jupyter_book: list[Requirement],
                        line: int | None) -> None:  # fmt: skip
        """A Jupyter Book 1 book needs jupyter-book < 2 in the author's environment (a MyST
        preprint needs nothing: the service runs its own mystmd)."""
        where = "the repository root" if self.book.at_root else "content/"
        if not jupyter_book:
            self.add(ERROR, rel, f"jupyter-book is not in the runtime, so the Jupyter Book in "
                     f"{where} cannot be built.", f"Add the line {JB1_PIN} to {rel} (or the 0.x/1.x "
                     "release your book was written with, e.g. jupyter-book==0.14.0).")  # fmt: skip
            return
        for req in jupyter_book:
            floor = [s for s in req.specifier if s.operator in ("==", "===", "~=", ">=", ">")]
            if any(_major(s.version) >= 2 for s in floor):
                self.add(ERROR, rel, f"{str(req)!r} asks for Jupyter Book 2 or later, which builds "
                         f"MyST projects (myst.yml), not the _toc.yml/_config.yml book in {where}.",
                         f"Pin Jupyter Book 1: {JB1_PIN}.", line)  # fmt: skip

    def check_data_requirement(self, rel: str, text: str) -> None:
        try:
            data = json.loads(text)
        except RecursionError:
            self.add(ERROR, rel, "Not valid JSON: nested too deeply.",
                     'Write one flat object: {"src": ..., "projectName": ...}.')  # fmt: skip
            return
        except ValueError as e:
            self.add(ERROR, rel, f"Not valid JSON: {e}", "Correct the JSON at that line: double "
                     "quotes around keys and strings, commas between entries, none after the "
                     "last.", getattr(e, "lineno", None))  # fmt: skip
            return
        if not isinstance(data, dict) or not data:
            self.add(
                ERROR, rel, "Must be a JSON object.", 'Write {"src": ..., "projectName": ...}.'
            )
            return
        # one dataset, or several: an object of objects
        several = all(isinstance(v, dict) for v in data.values())
        datasets = data if several else {"": data}
        for key, ds in datasets.items():
            label = f"dataset {key!r}: " if key else ""
            if not isinstance(ds, dict):
                self.add(ERROR, rel, f"{label}must be an object with src and projectName.",
                         'Write {"src": ..., "projectName": ...}.')  # fmt: skip
                continue
            if not ds.get("src"):
                self.add(ERROR, rel, f"{label}has no src.", "Give src: a URL, a DOI or the "
                         "command that downloads the data.")  # fmt: skip
            name = ds.get("projectName")
            if not isinstance(name, str) or not PROJECT_NAME_RE.fullmatch(name) or ".." in name:
                self.add(ERROR, rel, f"{label}projectName {name!r} is missing or unsafe.",
                         "Use letters, digits, '.', '_' or '-' (the data goes to data/<projectName>).")  # fmt: skip

    # -- paper.md (and myst.yml's project:) -------------------------------------------------

    def check_paper(self) -> dict:
        """The preprint's metadata: paper.md's front matter, over myst.yml's `project:` for MyST."""
        myst = self.book.engine == "myst"
        if myst:
            config = self._yaml(self.book.config) if self.book.config else None
            if config is not None and not isinstance(config, dict):
                self.add(ERROR, self.book.config, "myst.yml is not a YAML mapping.",
                         "Start it with version: 1 and project: (title:, authors:, ...).", 1)  # fmt: skip
            project = config.get("project") if isinstance(config, dict) else None
            if project is not None and not isinstance(project, dict):
                self.add(ERROR, self.book.config, "project: is not a mapping.", "Write the "
                         "project's settings indented under project: (title:, authors:, ...).")  # fmt: skip
            self.project = project if isinstance(project, dict) else {}
        paper = self.read("paper.md")
        if paper is None:
            if not self.blocked("paper.md"):
                self.add(ERROR, "paper.md", "paper.md is missing.", "Add paper.md with its front "
                         "matter (title, authors, affiliations, date, bibliography).")  # fmt: skip
            return dict(self.project)
        front, body, first_line = self.front_matter("paper.md", paper, required=not myst)
        self.paper_front = front or {}
        self.prose("paper.md", body, first_line, bare=True)
        if myst:
            meta = {**self.project, **(front or {})}
            examples = (
                ("title", "'Your title'"),
                ("authors", "[{name: Your Name}] (one name per author)"),
            )
            for key, example in examples:
                if not meta.get(key):
                    self.add(ERROR, self.book.config, f"The preprint has no {key}: neither "
                             f"{self.book.config}'s project: nor paper.md's front matter gives one.",
                             f"Add {key}: {example} under project: in {self.book.config}.")  # fmt: skip
            return meta
        if front is None:
            return {}
        examples = {"title": "'Your title'", "authors": "a list of - name: ... entries",
                    "date": "21 November 2026 (the day you submit)"}  # fmt: skip
        for key, example in examples.items():
            if not front.get(key):
                self.add(ERROR, "paper.md", f"The front matter has no {key}.",
                         f"Add {key}: {example} to paper.md's front matter.", 1)  # fmt: skip
        indexes = {
            str(a.get("index")) for a in _list(front.get("affiliations")) if isinstance(a, dict)
        }
        for author in _list(front.get("authors")):
            if not isinstance(author, dict):
                continue
            for ref in str(author.get("affiliation", "")).replace(" ", "").split(","):
                if ref and ref not in indexes:
                    self.add(ERROR, "paper.md", f"{author.get('name')!r} has affiliation {ref}, "
                             "which is not in affiliations.", f"Add an affiliation with index: "
                             f"{ref} to affiliations, or change the author's number to one that "
                             "is there.", 1)  # fmt: skip
        return front

    def front_matter(self, rel: str, text: str, *,
                     required: bool) -> tuple[dict | None, str, int]:  # fmt: skip
        """(front matter, the body after it, the body's first line number); the front matter is
        None when there is none, or it is not a valid YAML mapping (a finding says so)."""
        text = _text(text)
        m = FRONT_MATTER_RE.match(text)
        if not m:
            if required:
                self.add(ERROR, rel, "No front matter (a YAML block between --- lines).",
                         f"Start {rel} with the front matter the handbook shows: a --- line, "
                         "title:, authors:, affiliations:, date:, bibliography:, and a --- line.", 1)  # fmt: skip
            return None, text, 1
        body_line = text[: m.end()].count("\n") + 1
        try:
            front = load_yaml(m.group(1) or "") or {}
        except yaml.YAMLError as e:
            message, line = _yaml_error(e, 2)  # the YAML starts on the file's second line
            self.add(ERROR, rel, f"The front matter is not valid YAML: {message}", YAML_FIX, line)
            return None, text[m.end() :], body_line
        if not isinstance(front, dict):
            self.add(ERROR, rel, "The front matter is not a YAML mapping.",
                     "Write it as key: value lines (title:, authors:, ...).", 1)  # fmt: skip
            return None, text[m.end() :], body_line
        return front, text[m.end() :], body_line

    # -- citations and bibliographies -----------------------------------------------------

    def prose(self, rel: str, text: str, first_line: int, *, bare: bool,
              cell: int | None = None) -> bool:  # fmt: skip
        """Collect rel's citations (in prose only); whether it has a {code-cell}."""
        budget = [self.prose_left]
        found, code_cell, complete = markdown_citations(text, bare=bare, budget=budget)
        self.prose_left = budget[0]
        if not complete:
            if rel not in self.prose_unchecked:
                self.prose_unchecked.append(rel)
            code_cell = code_cell or "{code-cell}" in text  # not parsed: the plain test
        for line, key in found:
            if DOI_RE.fullmatch(key):
                continue
            self.citations.append(Citation(rel, None if cell else first_line + line - 1, key, cell))
        return code_cell

    def bibliographies(self) -> tuple[list[Bibliography], list[Bibliography]]:
        """The bibliographies paper.md's citations resolve in, and those of the book's pages."""
        front, bibs = self.paper_front, {}

        def add(rel: str, named_in: str | None) -> Bibliography:
            rel = os.path.normpath(rel).replace(os.sep, "/")
            if rel not in bibs:
                bibs[rel] = Bibliography(rel, named_in)
            return bibs[rel]

        named = [
            (str(b), "paper.md's front matter", "") for b in _strings(front.get("bibliography"))
        ]
        if self.book.engine == "myst":
            config = self.book.config or "myst.yml"
            named += [(str(b), f"{config}'s project.bibliography", self.book.base)
                      for b in _strings(self.project.get("bibliography"))]  # fmt: skip
            if named:
                paper = [add(_join(base, b), where) for b, where, base in named]
            else:  # MyST reads every .bib file of the project
                paper = [add(f, None) for f in self.files
                         if f.startswith(self.book.base) and f.endswith(".bib")]  # fmt: skip
            return paper, paper
        paper = [add(_join(base, b), where) for b, where, base in named] or [add("paper.bib", None)]
        book = list(paper)
        config = self._yaml(self.book.config) if self.book.config else None
        if isinstance(config, dict):
            where = f"{self.book.config}'s bibtex_bibfiles"
            book += [add(_join(self.book.base, b), where)
                     for b in _strings(config.get("bibtex_bibfiles"))]  # fmt: skip
        return paper, book

    def check_citations(self) -> None:
        paper_bibs, book_bibs = self.bibliographies()
        paper_cites = [c for c in self.citations if c.file == "paper.md"]
        book_cites = [c for c in self.citations if c.file != "paper.md"]
        if paper_cites and self.paper_front and self.book.engine != "myst" and \
                not self.paper_front.get("bibliography"):  # fmt: skip
            self.add(ERROR, "paper.md", f"paper.md cites @{paper_cites[0].key} but its front matter "
                     "names no bibliography.", "Add bibliography: paper.bib to paper.md's front "
                     "matter.", 1)  # fmt: skip
        for bib in {b.rel: b for b in (*paper_bibs, *book_bibs)}.values():
            self.load_bibliography(bib, cited=bool(
                (paper_cites and bib in paper_bibs) or (book_cites and bib in book_bibs)))  # fmt: skip
        for cites, bibs in ((paper_cites, paper_bibs), (book_cites, book_bibs)):
            self.resolve(cites, bibs)

    def load_bibliography(self, bib: Bibliography, *, cited: bool) -> None:
        text = self.read(bib.rel, min(self.max_file_size, MAX_BIB_SIZE), WARNING)
        if text is None:
            bib.refused = self.blocked(bib.rel)
            if bib.refused or not (cited or bib.named_in):
                return  # refused: its own finding; never named and nothing cited: not needed
            named = f" ({bib.named_in} names it)" if bib.named_in else ""
            self.add(ERROR if cited else WARNING, bib.rel, f"The bibliography {bib.rel} is "
                     f"missing{named}.", f"Add {bib.rel} with a BibTeX entry for each work you "
                     "cite." if cited else f"Add {bib.rel}, or remove it from {bib.named_in}.")  # fmt: skip
            return
        bib.keys = set()
        try:
            library = bibtexparser.parse_string(text, parse_stack=[])
        except Exception as e:  # the parser's own invariants: a finding, never a failed check
            self.add(ERROR, bib.rel, f"{bib.rel} could not be read as BibTeX ({type(e).__name__}).",
                     "Export the bibliography again from your reference manager.")  # fmt: skip
            bib.refused = True
            return
        bib.keys.update(e.key for e in library.entries)
        reported = 0
        for block in library.failed_blocks:
            line = None if block.start_line is None else block.start_line + 1
            if isinstance(block, DuplicateBlockKeyBlock):
                bib.keys.add(block.key)
                message = f"The key {block.key} is used by two entries."
                fix = "Remove one of the two entries, or rename one and update its citations."
            elif isinstance(block, DuplicateFieldKeyBlock):
                bib.keys.add(block.ignore_error_block.key)
                fields = ", ".join(sorted(block.duplicate_keys))
                message = f"The entry {block.ignore_error_block.key} has {fields} twice."
                fix = "Keep one of each field."
            else:
                key = BIB_KEY_RE.match(block.raw or "")
                if key:  # it is there, if broken: say that, not "not in paper.bib"
                    bib.keys.add(key.group(1))
                reason = getattr(block.error, "abort_reason", "") or str(block.error)
                message = (f"The entry here is not valid BibTeX: {reason.strip()}" if reason
                           else "The entry here is not valid BibTeX.")  # fmt: skip
                fix = ("Close every { and \" of this entry and separate its fields with commas "
                       "(exporting it again from a reference manager fixes most cases).")  # fmt: skip
            reported += 1
            if reported <= MAX_BIB_FINDINGS:
                level = ERROR if type(block).__name__ == "ParsingFailedBlock" else WARNING
                self.add(level, bib.rel, message, fix, line)
        if reported > MAX_BIB_FINDINGS:
            self.add(WARNING, bib.rel, f"{reported - MAX_BIB_FINDINGS} more entries have problems.",
                     "Fix the ones above and check again.")  # fmt: skip

    def resolve(self, cites: list[Citation], bibs: list[Bibliography]) -> None:
        if not cites or any(b.refused for b in bibs):
            return  # a bibliography that was not read: its finding says so
        loaded = [b for b in bibs if b.keys is not None]
        if bibs and not loaded:
            return  # "missing" said it
        keys = set().union(*(b.keys for b in loaded))
        folded = {k.casefold(): k for k in keys}
        names = " or ".join(b.rel for b in loaded) or "a bibliography"
        target = loaded[0].rel if loaded else "paper.bib"
        seen = set()
        for c in sorted(cites, key=lambda c: (c.file, c.cell or 0, c.line or 0)):
            if c.key in keys or (c.file, c.key) in seen:
                continue
            seen.add((c.file, c.key))
            where = f"Markdown cell {c.cell}: c" if c.cell else "C"
            if not loaded:
                fix = (f"Add paper.bib with an entry for {c.key} and list it under project: in "
                       f"{self.book.config} as bibliography: [paper.bib].")  # fmt: skip
            elif c.key.casefold() in folded:
                fix = (f"Write @{folded[c.key.casefold()]}: keys are case-sensitive, and that is "
                       f"how {target} spells it.")  # fmt: skip
            else:
                fix = f"Add an entry with key {c.key} to {target}, or correct the key."
            self.add(ERROR, c.file, f"{where}itation @{c.key} is not in {names}.", fix, c.line)

    # -- content/ (Jupyter Book 1 or MyST) --------------------------------------------------

    def check_book(self) -> None:
        if self.blocked("content"):
            return  # a link out of the repository: its finding says what to do
        if self.kind("content/_neurolibre.yml") == "file":
            self.check_neurolibre()
        if self.book.engine == "jupyter-book":
            self.check_jupyter_book()
        elif self.book.engine == "myst":
            self.check_myst()
        elif not any(self.blocked(p) for p in ("content/_toc.yml", "content/_config.yml",
                                               "content/myst.yml", "myst.yml")):  # fmt: skip
            self.add(ERROR, "content/", "No book: content/_toc.yml and content/_config.yml "
                     "(Jupyter Book) or a myst.yml (MyST) are needed.", "Add content/_config.yml "
                     "and content/_toc.yml, as in the handbook's layout, or a myst.yml with a "
                     "project: section (NeuroLibre's MyST template).")  # fmt: skip
        pages_dir = "content/" if self.kind("content") == "dir" else self.book.base
        # paper.md is read once (check_paper); a README at the root is not a page
        mine = [f for f in self.files if f.startswith(pages_dir) and f != "paper.md"
                and not (pages_dir == "" and "/" not in f and f.upper().startswith("README"))]  # fmt: skip
        notebooks = [f for f in mine if f.endswith(EXECUTABLE_SUFFIXES)]
        for page in (f for f in mine if f.endswith(PAGE_SUFFIXES)):
            self.check_page(page)
        for nb in notebooks:
            self.check_notebook(nb)
        if not notebooks and not self.code_cells and self.walk_complete:
            self.add(ERROR, "content/", "No executable content (a notebook or a MyST code cell).",
                     "A living preprint's figures come from code: add a notebook to content/.")  # fmt: skip

    def check_neurolibre(self) -> None:
        """content/_neurolibre.yml, NeuroLibre's older layout switch: `book_layout: traditional`
        with `single_page: index.ipynb` builds that one page as the whole preprint (jupyter-book
        build --builder singlehtml content/<page>), so no table of contents is needed."""
        rel = "content/_neurolibre.yml"
        data = self._yaml(rel)
        if data is None:
            return
        if not isinstance(data, dict):
            self.add(ERROR, rel, "Not a YAML mapping.", "Write key: value lines, e.g. "
                     "book_layout: traditional and single_page: index.ipynb.", 1)  # fmt: skip
            return
        page = data.get("single_page")
        if page is not None:
            if not isinstance(page, str) or not page.strip():
                self.add(ERROR, rel, "single_page must name a page in content/.",
                         "Write e.g. single_page: index.ipynb.")  # fmt: skip
                page = None
            elif not self.check_toc_entry(page.strip(), "content/", rel, single_page=True):
                page = None
        self.neurolibre = {**data, "single_page": page.strip() if page else None}
        if data.get("build_myst") and self.book.engine == "jupyter-book":
            self.add(WARNING, rel, "build_myst asks NeuroLibre to build this book with MyST; this "
                     "service builds content/_toc.yml and _config.yml with Jupyter Book 1.",
                     f"Keep jupyter-book in the runtime (e.g. {JB1_PIN}), or move to MyST: a "
                     "myst.yml with a project: section, as in NeuroLibre's MyST template.")  # fmt: skip

    @property
    def single_page(self) -> str | None:
        return self.neurolibre.get("single_page")

    @property
    def traditional(self) -> bool:
        return self.single_page is not None and self.neurolibre.get("book_layout") == "traditional"

    def check_jupyter_book(self) -> None:
        base = self.book.base
        if self.book.at_root:
            present = [n for n in ("_config.yml", "_toc.yml") if self.kind(n) == "file"]
            # it builds where it is (books.find_book): a warning, as the handbook's place is content/
            self.add(WARNING, present[0], f"The Jupyter Book is at the repository root "
                     f"({', '.join(present)}): it builds there, but NeuroLibre's handbook keeps "
                     "the book in content/.",
                     "Move _config.yml, _toc.yml and the pages they list into content/ (the "
                     "entries of _toc.yml stay as they are), and set repository.path_to_book: "
                     "content in _config.yml.")  # fmt: skip
        for name in ("_config.yml", "_toc.yml"):
            rel = f"{base}{name}"
            if name == "_toc.yml" and self.traditional:
                continue  # the single page is the whole book
            if self.kind(rel) != "file" and not self.blocked(rel):
                example = ("title: and author: (as in paper.md)" if name == "_config.yml" else
                           "format: jb-book, root: <first page>, chapters: - file: ...")  # fmt: skip
                self.add(ERROR, rel, f"{rel} is missing.", f"Add {rel} ({example}): Jupyter Book "
                         "needs it.")  # fmt: skip
        self.check_config()
        if self.kind(f"{base}_toc.yml") == "file":
            self.check_toc(f"{base}_toc.yml", base)

    def check_config(self) -> None:
        rel, front = self.book.config or "content/_config.yml", self.front
        config = self._yaml(rel)
        if config is not None and not isinstance(config, dict):
            self.add(ERROR, rel, "Not a YAML mapping.", "Write key: value lines (title:, "
                     "author:, ...) as in the handbook.", 1)  # fmt: skip
        if not isinstance(config, dict) or not front:
            return
        title = front.get("title")
        if title and str(config.get("title", "")).strip() != str(title).strip():
            self.add(WARNING, rel, f"title {config.get('title')!r} differs from paper.md's "
                     f"{title!r}.", f"Set title: {_yaml_str(title)} in {rel} (the handbook asks "
                     "for the same title in both).")  # fmt: skip
        names = [str(a.get("name")) for a in _list(front.get("authors"))
                 if isinstance(a, dict) and a.get("name")]  # fmt: skip
        author = str(config.get("author", ""))
        missing = [n for n in names if n not in author]
        if missing:
            self.add(WARNING, rel, f"author does not list {', '.join(missing)} (from paper.md).",
                     f"Set author: {_yaml_str(', '.join(names))} in {rel}.")  # fmt: skip
        repository = config.get("repository")
        url = repository.get("url") if isinstance(repository, dict) else None
        if self.repository_url and url and str(url).rstrip("/").removesuffix(".git") != \
                self.repository_url.rstrip("/").removesuffix(".git"):  # fmt: skip
            self.add(WARNING, rel, f"repository.url {url} is not the submitted repository "
                     f"{self.repository_url}.", f"Set url: {self.repository_url} under "
                     f"repository: in {rel} (its launch and source links point there).")  # fmt: skip

    def check_myst(self) -> None:
        config, base = self.book.config or "myst.yml", self.book.base
        toc = self.project.get("toc")
        if isinstance(toc, list):
            for entry in dict.fromkeys(_toc_files(toc)):
                self.check_toc_entry(entry, base, config)
        elif toc is not None:
            self.add(ERROR, config, "project.toc is not a list.", "Write it as a list of "
                     "- file: <page> entries, or remove it to list every page.")  # fmt: skip
        elif self.kind(f"{base}_toc.yml") == "file":  # MyST reads a Jupyter Book table of contents
            self.check_toc(f"{base}_toc.yml", base)

    def check_toc(self, rel: str, base: str) -> None:
        toc = self._yaml(rel)
        if toc is None:
            return
        if isinstance(toc, list):
            self.add(ERROR, rel, f"{rel} is in the old list format (Jupyter Book before 0.11); "
                     "Jupyter Book 0.11 and later stop on it.", f"Convert it: `jupyter-book toc "
                     f"migrate {rel} -o {rel}`, or write format: jb-book, root: <first page>, "
                     "chapters: - file: <page> ...")  # fmt: skip
        elif not isinstance(toc, dict):
            self.add(ERROR, rel, "Not a YAML mapping.", "Write format: jb-book, root: <first "
                     "page>, chapters: - file: <page> ...", 1)  # fmt: skip
            return
        root = toc.get("root") if isinstance(toc, dict) else None
        if isinstance(toc, dict) and not (isinstance(root, str) and root.strip()):
            if self.single_page is None:
                self.add(ERROR, rel, f"{rel} has no root (the book's first page).",
                         "Add root: <first page, relative to the folder, without its extension>, "
                         "e.g. root: intro.")  # fmt: skip
        for entry in dict.fromkeys(_toc_files(toc)):
            # content/_neurolibre.yml's single page stands for the root, as NeuroLibre read it;
            # in its traditional layout the table of contents is not built at all
            lenient = self.traditional or (entry == root and self.single_page is not None)
            self.check_toc_entry(entry, base, rel, must_exist=not lenient)

    def check_toc_entry(self, entry: str, base: str, where: str, *, must_exist: bool = True,
                        single_page: bool = False) -> bool:  # fmt: skip
        """A table of contents entry (or _neurolibre.yml's single_page) names a file inside the
        book's folder, never anything else. Whether it does."""
        folder = base or "the repository"
        what = f"single_page {entry!r}" if single_page else f"{entry!r} in the table of contents"
        if entry.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", entry):
            self.add(ERROR, where, f"{what} is an absolute path.",
                     f"Write the path relative to {folder}, e.g. 'analysis' for "
                     f"{base}analysis.ipynb.")  # fmt: skip
            return False
        path = os.path.normpath(f"{base}{entry}")
        if path == ".." or path.startswith(("../", "/")) or (base and not path.startswith(base)):
            self.add(ERROR, where, f"{what} points outside {folder}.",
                     f"Move the file into {folder} and list it by its path relative to {folder}.")  # fmt: skip
            return False
        candidates = [f"{path}{s}" for s in TOC_SUFFIXES]
        if any(self.kind(c) == "file" for c in candidates):
            return True
        if any(self.blocked(c) for c in candidates):
            self.add(ERROR, where, f"{what} leads outside the repository (a symbolic link).", f"List a file that is in {folder} itself.")  # fmt: skip
            return False
        if must_exist and single_page:
            self.add(ERROR, where, f"{what} is not a file in {folder}.", f"Write the path of the "
                     f"notebook or MyST page that makes the preprint, relative to {folder} (e.g. "
                     "single_page: index.ipynb).")  # fmt: skip
        elif must_exist:
            self.add(ERROR, where, f"{entry!r} is in the table of contents but no such file "
                     f"exists in {folder}.", f"Correct it to the path of a page relative to "
                     f"{folder} (e.g. 'analysis' for {base}analysis.ipynb), or add the page.")  # fmt: skip
        return False

    def check_page(self, rel: str) -> None:
        """A Markdown page: its citations, and its code cells (Jupyter Book 1 executes them only
        with a Jupytext header, myst-nb's rule)."""
        text = self.read(rel, level=WARNING)
        if text is None:
            return
        text = _text(text)
        m = FRONT_MATTER_RE.match(text)
        front: object = None
        if m:
            try:
                front = load_yaml(m.group(1) or "")
            except yaml.YAMLError:
                front = None
        body, first = (text[m.end() :], text[: m.end()].count("\n") + 1) if m else (text, 1)
        if not self.prose(rel, body, first, bare=self.book.engine == "myst"):
            return
        self.code_cells.add(rel)
        if self.book.engine == "jupyter-book" and not _myst_notebook(front):
            self.add(WARNING, rel, f"{rel} has {{code-cell}} blocks but no Jupytext header, so "
                     "Jupyter Book 1 shows them as code and never runs them.", "Start the file "
                     "with a Jupytext header, these four lines: `---`, `jupytext: "
                     "{text_representation: {format_name: myst}}`, `kernelspec: {name: python3, "
                     "display_name: Python 3}`, `---`.", 1)  # fmt: skip

    def check_notebook(self, rel: str) -> None:
        text = self.read(rel, self.max_notebook_size, WARNING)
        if text is None:
            return
        try:
            nb = json.loads(text)
            cells = nb.get("cells", []) if isinstance(nb, dict) else None
            if not isinstance(cells, list):
                raise ValueError("no cells")
        except (ValueError, RecursionError):
            self.add(ERROR, rel, "Not a valid notebook (JSON).", "Open it in Jupyter and save "
                     "it again (File > Save), or restore it from Git.")  # fmt: skip
            return
        bare = self.book.engine == "myst"
        first_markdown = True
        internet = False
        for i, cell in enumerate(cells, 1):
            if not isinstance(cell, dict):
                continue
            source = cell.get("source", [])
            src = source if isinstance(source, str) else "".join(
                s for s in source if isinstance(s, str)) if isinstance(source, list) else ""  # fmt: skip
            if cell.get("cell_type") == "markdown":
                if first_markdown:  # MyST reads a notebook's front matter from its first cell
                    m = FRONT_MATTER_RE.match(_text(src))
                    src = _text(src)[m.end() :] if m else src
                    first_markdown = False
                self.prose(rel, src, 1, bare=bare, cell=i)
            elif cell.get("cell_type") == "code" and WINDOWS_PATH_RE.search(src):
                self.add(WARNING, rel, f"Code cell {i} uses a Windows-style path, which fails on "
                         "NeuroLibre's Linux servers.", "Use os.path.join('data', ...) or '/'.")  # fmt: skip
            if cell.get("cell_type") == "code" and not internet and \
                    (address := _internet_address(src)):  # fmt: skip
                internet = True  # once per notebook: the fix is the same for every address
                self.add(WARNING, rel, f"Code cell {i} reads {address[:200]} from the "
                         "internet, but NeuroLibre re-executes notebooks without network "
                         "access, so this cell will fail in the book.",
                         "Make it a dataset: put the address as src in "
                         "binder/data_requirement.json (with a projectName) and read the file "
                         "from ../data/<projectName>/ in the notebook.")  # fmt: skip

    def _yaml(self, rel: str):
        """rel's YAML document, read and reported once; None: missing, refused or not valid."""
        if rel in self.yaml_cache:
            return self.yaml_cache[rel]
        text, data = self.read(rel), None
        if text is not None:
            try:
                data = load_yaml(text)
            except yaml.YAMLError as e:
                message, line = _yaml_error(e, 1)
                self.add(ERROR, rel, f"Not valid YAML: {message}", YAML_FIX, line)
        self.yaml_cache[rel] = data
        return data


class _RuntimeFiles(Mapping[str, bytes]):
    """The runtime folder as environments/requirements.py takes it (name -> bytes), read on
    demand through the checker's confined reader (only the files -r/-c name are read)."""

    def __init__(self, checker: Checker, base: str, names: list[str], known: dict[str, bytes]):
        self.checker, self.base, self.names, self.known = checker, base, names, known

    def __getitem__(self, name: str) -> bytes:
        if name not in self.known:
            text = self.checker.read(f"{self.base}{name}")
            self.known[name] = b"" if text is None else text.encode()  # refused: its own finding
        return self.known[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.known or name in self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _short(text: str) -> str:
    """A finding quotes the repository's text, but never much of it."""
    return text if len(text) <= 2 * MAX_TEXT else f"{text[:MAX_TEXT]} [...] {text[-100:]}"


def _size(n: int) -> str:
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _join(base: str, path: str) -> str:
    """path relative to the folder base ("content/"); an absolute path stays absolute (refused)."""
    return path if path.startswith(("/", "\\")) else f"{base}{path}"


def load_yaml(text: str):
    """yaml.safe_load, refusing documents nested too deeply or expanding (aliases) too far."""
    try:
        data = yaml.safe_load(text)
        size = _expanded_size(data, {})
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    if size > MAX_YAML_NODES:
        raise yaml.YAMLError(f"it expands to more than {MAX_YAML_NODES} values (aliases)")
    return data


def _expanded_size(node, memo: dict[int, int]) -> int:
    """How many values node stands for once its aliases are expanded (a cycle is infinite)."""
    if not isinstance(node, (dict, list)):
        return 1
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_NODES + 1  # in progress: reaching it again is a cycle
    items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
    total = 1
    for item in items:
        total += _expanded_size(item, memo)
        if total > MAX_YAML_NODES:
            break
    memo[key] = total
    return total


def _toc_files(node) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                out.append(node[key])
        for value in node.values():
            if isinstance(value, (list, dict)):
                out += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            out += _toc_files(item)
    return out


def check(root: Path, repository_url: str | None = None, **options) -> list[Finding]:
    """The findings for the repository at root (options: Checker's keywords)."""
    return Checker(root, repository_url, **options).run()


def title_of(front: dict) -> str | None:
    title = front.get("title")
    return str(title)[:300] if title else None


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"errors": sum(f.level == ERROR for f in findings),
                       "warnings": sum(f.level == WARNING for f in findings),
                       "findings": [asdict(f) for f in findings]}, indent=2)  # fmt: skip


def markdown_citations(text: str, *, bare: bool,
                       budget: list[int] | None = None) -> tuple[list[tuple[int, str]], bool, bool]:  # fmt: skip
    """The citations in text's prose, as (line, key) with 1-based lines; whether it has a
    top-level {code-cell}; whether all of it was parsed (budget: characters left to parse).

    bare: `@key` alone is a citation (pandoc, MyST); otherwise only `[@key]` and {cite} roles
    (Jupyter Book 1 pages, whose @ is plain text). Code spans, code blocks, code-like
    directives, HTML, links and images never hold citations; the {cite} role's code span does.
    """
    found: list[tuple[int, str]] = []
    budget = [len(text)] if budget is None else budget
    complete = [True]
    code_cell = _scan_markdown(text, bare, 1, 0, found, budget, complete)
    return found, code_cell, complete[0]


def _scan_markdown(text: str, bare: bool, first: int, depth: int, found: list[tuple[int, str]],
                   budget: list[int], complete: list[bool]) -> bool:  # fmt: skip
    if len(text) > budget[0]:
        complete[0] = False
        return False
    budget[0] -= len(text)
    code_cell = False
    for tok in MARKDOWN.parse(text):
        line = first + (tok.map[0] if tok.map else 0)
        if tok.type == "inline":
            _inline_citations(tok.children or [], bare, line, found)
        elif tok.type == "fence":
            m = DIRECTIVE_RE.match(tok.info.strip())
            name = m.group(1) if m else None
            # myst-nb runs only top-level code cells (not in a list, a quote or a directive)
            code_cell |= name == "code-cell" and depth == 0 and tok.level == 0
            if name and name not in CODE_DIRECTIVES and depth < MAX_NESTING:
                body, skipped = _directive_body(tok.content)
                _scan_markdown(body, bare, line + 1 + skipped, depth + 1, found, budget, complete)
    return code_cell


def _directive_body(content: str) -> tuple[str, int]:
    """A directive's body without its options (`:key: value` lines or a --- YAML block)."""
    lines = content.split("\n")
    start = 0
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        start = 0 if end is None else end + 1
    while start < len(lines) and DIRECTIVE_OPTION_RE.match(lines[start]):
        start += 1
    return "\n".join(lines[start:]), start


def _inline_citations(children: list, bare: bool, first: int,
                      found: list[tuple[int, str]]) -> None:  # fmt: skip
    pieces: list[str] = []
    breaks: list[int] = []  # where each line break is in the joined text
    pos, links, tail = 0, 0, ""
    for child in children:
        kind = child.type
        if kind == "link_open":
            links += 1
            piece = " "
        elif kind == "link_close":
            links = max(0, links - 1)
            piece = " "
        elif kind in ("softbreak", "hardbreak"):
            piece = "\n"
            breaks.append(pos)
        elif links:
            continue  # a link's text: not a citation (e-mail and URL autolinks included)
        elif kind == "text":
            piece = child.content
        elif kind == "text_special":  # \@ or &#64; is an escaped @: never a citation
            piece = "\x00" if child.content == "@" else child.content
        elif kind == "code_inline":
            if CITE_ROLE_RE.search(tail):  # {cite:p}`a, b`: the span holds keys
                found += [(first + len(breaks), k.lstrip("@"))
                          for k in ROLE_KEY_RE.findall(child.content)]  # fmt: skip
            piece = " "  # code is never prose
        elif kind in ("image", "html_inline"):
            piece = " "
        else:
            continue
        pieces.append(piece)
        pos += len(piece)
        tail = (tail + piece)[-16:]
    text = "".join(pieces)
    spans = [(0, text)] if bare else [(m.start(1), m.group(1)) for m in BRACKETS_RE.finditer(text)]
    for offset, span in spans:
        for m in CITATION_RE.finditer(span):
            found.append((first + bisect.bisect_left(breaks, offset + m.start()), m.group(1)))


def _internet_address(code: str) -> str | None:
    """The first string literal of a code cell that is a whole http(s) address (what
    read_csv, urlopen or requests.get are given); not an address inside a longer string."""
    lines = [ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
            if tok.type == tokenize.STRING:
                try:
                    value = ast.literal_eval(tok.string)
                except (ValueError, SyntaxError):
                    continue  # an f-string, or bytes
                if isinstance(value, str) and INTERNET_ADDRESS_RE.fullmatch(value):
                    return value
    except (tokenize.TokenError, SyntaxError):
        return None  # not Python (another kernel's language): nothing said
    return None


def _myst_notebook(front: object) -> bool:
    """myst-nb's test: a Markdown page is a notebook when its front matter says file_format:
    mystnb, or jupytext's text_representation has format_name: myst."""
    if not isinstance(front, dict):
        return False
    if front.get("file_format") == "mystnb":
        return True
    jupytext = front.get("jupytext")
    text = jupytext.get("text_representation") if isinstance(jupytext, dict) else None
    return isinstance(text, dict) and text.get("format_name") == "myst"


def _pinned(req: Requirement) -> bool:
    return any(s.operator in ("==", "===") and "*" not in s.version for s in req.specifier)


def _pin_example(req: Requirement) -> str:
    """`jupyter-book<2.0.0` -> `jupyter-book==X.Y.Z` (extras and marker kept)."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    return f"{req.name}{extras}==X.Y.Z{marker}"


def _major(version: str) -> int:
    try:
        return Version(version.removesuffix(".*")).major
    except InvalidVersion:
        return 0


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


def _text(text: str) -> str:
    """As the Markdown and YAML parsers see it: no byte order mark, \\n line ends."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def _strings(value: object) -> list[str]:
    """A YAML value that is a file name or a list of them (bibliography: x.bib, or a list); a
    URL (MyST downloads those) is not a file of the repository."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v for v in items if isinstance(v, str) and v.strip() and "://" not in v]


def _yaml_str(value: object) -> str:
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a YAML string


def _yaml_error(e: yaml.YAMLError, first_line: int) -> tuple[str, int | None]:
    """PyYAML's message without its marks (they count lines from the parsed text, not the file),
    and the file's line of the problem. first_line: the file's line of the text's first line."""
    if not isinstance(e, yaml.MarkedYAMLError):
        return str(e), None
    parts = []
    if e.context:
        where = f" (line {e.context_mark.line + first_line})" if e.context_mark else ""
        parts.append(f"{e.context}{where}")
    if e.problem:
        mark = e.problem_mark
        where = f" (line {mark.line + first_line}, column {mark.column + 1})" if mark else ""
        parts.append(f"{e.problem}{where}")
    # an unclosed quote or bracket is where it opens, not at the end of the text
    mark = e.problem_mark
    if e.context_mark is not None and (mark is None or "end of stream" in (e.problem or "")):
        mark = e.context_mark
    return "; ".join(parts) or str(e), None if mark is None else mark.line + first_line
