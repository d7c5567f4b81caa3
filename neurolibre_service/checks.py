"""The preprint layout checks (NeuroLibre handbook, "preprint repository structure").

One code path for the CLI (`neurolibre check`), the build's check stage and `api/check` (the
service runs it in a child process: see checks_runner.py). Errors stop a build before anything
is installed; warnings are deviations that still build.

The repository is hostile: every file is read through Checker.read, which never leaves the
checkout (a symbolic link out of it is a finding, never followed), never opens a special file
(FIFO, device, socket) and never reads more than a cap. Directory walks do not follow links and
stop after a number of entries.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import yaml

ERROR, WARNING = "error", "warning"
PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CITATION_RE = re.compile(r"(?<![\w@.])@([A-Za-z0-9_][\w:.#$%&+?<>~/-]*[\w])")
BIB_KEY_RE = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")
# a quoted string with a drive letter or a backslash (one pass: no nested quantifiers)
WINDOWS_PATH_RE = re.compile(r"""['"](?:[A-Za-z]:\\|[^'"\n\\]*\\)[^'"\n]*['"]""")
EXECUTABLE_SUFFIXES = (".ipynb",)
TOC_SUFFIXES = ("", ".md", ".ipynb", ".rst", ".myst", ".py")
MANY_REQUIREMENTS = 60
FRONT_MATTER_RE = re.compile(r"---\s*\n(.*?)\n---\s*\n", re.S)
MAX_FILE_SIZE = 5 << 20  # paper.md, paper.bib, YAML, JSON, Markdown
NOTEBOOK_FACTOR = 5  # notebooks keep their outputs (images): a larger cap
MAX_ENTRIES = 20_000  # files and folders walked in the repository
MAX_FINDINGS = 500
MAX_TEXT = 500  # characters of the repository's own text quoted in a finding
MAX_YAML_NODES = 100_000  # values a YAML document may expand to (aliases: "billion laughs")
SKIP_DIRS = frozenset({".git", "_build", ".ipynb_checkpoints", "__pycache__"})
LARGE_FIX = (
    "Keep large files out of the repository: data_requirement.json fetches data at build time, "
    "and notebook outputs are recomputed by the build (clear them before committing)."
)


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


class Checker:
    def __init__(self, root: Path, repository_url: str | None = None, *,
                 max_file_size: int = MAX_FILE_SIZE, max_entries: int = MAX_ENTRIES):  # fmt: skip
        self.root = root.resolve()
        self.repository_url = repository_url
        self.max_file_size = max_file_size
        self.max_notebook_size = NOTEBOOK_FACTOR * max_file_size
        self.max_entries = max_entries
        self.findings: list[Finding] = []
        self.dropped = 0  # findings past MAX_FINDINGS
        self.refused: set[str] = set()  # paths with a finding of their own: not "missing"
        self.front: dict = {}
        self.files: list[str] = []  # regular files of the repository (walked, bounded)
        self.walk_complete = True
        self.entries = 0
        self.walked: set[str] = set()

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
        self.check_binder()
        self.front = self.check_paper()
        self.check_book(self.front)
        if self.dropped:
            self.findings.append(Finding(WARNING, None, None, f"{self.dropped} more findings are "
                                         "not listed.", "Fix the ones above and check again."))  # fmt: skip
        return self.findings

    # -- binder/ ---------------------------------------------------------------------------

    def check_binder(self) -> None:
        if self.kind("binder") != "dir":
            if self.blocked("binder"):
                return
            self.add(WARNING, "binder/", "There is no binder/ folder; the runtime files are looked "
                     "for at the repository root.", "Move requirements.txt (and data_requirement.json) "
                     "into binder/, as the handbook's layout shows.")  # fmt: skip
            base = ""
        else:
            base = "binder/"
        reqs = self.read(f"{base}requirements.txt")
        if reqs is None:
            others = [f"{base}{f}" for f in ("environment.yml", "Dockerfile")]
            if not self.blocked(f"{base}requirements.txt") and not any(
                self.kind(f) or self.blocked(f) for f in others
            ):
                self.add(ERROR, f"{base}requirements.txt", "No runtime file (requirements.txt, "
                         "environment.yml or Dockerfile).", "Add binder/requirements.txt listing "
                         "the packages your notebooks import, with versions.")  # fmt: skip
        else:
            self.check_requirements(f"{base}requirements.txt", reqs)
        data = self.read(f"{base}data_requirement.json")
        if data is not None:
            self.check_data_requirement(f"{base}data_requirement.json", data)

    def check_requirements(self, rel: str, text: str) -> None:
        lines = [(n, ln.split("#", 1)[0].strip()) for n, ln in enumerate(text.splitlines(), 1)]
        lines = [(n, ln) for n, ln in lines if ln and not ln.startswith("-")]
        names = {re.split(r"[\s<>=!~;\[]", ln, maxsplit=1)[0].lower().replace("_", "-")
                 for _, ln in lines}  # fmt: skip
        if not names & {"jupyter-book", "jupyterbook", "mystmd"}:
            self.add(ERROR, rel, "jupyter-book is not in the runtime, so the book cannot be built.",
                     "Add a pinned jupyter-book line, e.g. jupyter-book==1.0.4.post1.")  # fmt: skip
        for n, ln in lines:
            if not re.search(r"==|@|\.whl|git\+", ln):
                self.add(WARNING, rel, f"{ln!r} is not pinned: a later release may change your "
                         "results or break the build.", f"Pin it, e.g. {ln}==X.Y.Z.", n)  # fmt: skip
        if len(lines) > MANY_REQUIREMENTS:
            self.add(WARNING, rel, f"{len(lines)} requirements: large environments build and start "
                     "slowly.", "List only what your notebooks import (pip freeze output is "
                     "rarely needed).")  # fmt: skip

    def check_data_requirement(self, rel: str, text: str) -> None:
        try:
            data = json.loads(text)
        except RecursionError:
            self.add(ERROR, rel, "Not valid JSON: nested too deeply.", "Write a flat JSON object.")
            return
        except ValueError as e:
            self.add(ERROR, rel, f"Not valid JSON: {e}", "Fix the JSON syntax (quotes, commas).",
                     getattr(e, "lineno", None))  # fmt: skip
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

    # -- paper.md / paper.bib -------------------------------------------------------------

    def check_paper(self) -> dict:
        paper = self.read("paper.md")
        if paper is None:
            if not self.blocked("paper.md"):
                self.add(ERROR, "paper.md", "paper.md is missing.", "Add paper.md with its front "
                         "matter (title, authors, affiliations, date, bibliography).")  # fmt: skip
            return {}
        front: dict = {}
        m = FRONT_MATTER_RE.match(paper)
        if not m:
            self.add(ERROR, "paper.md", "No front matter (a YAML block between --- lines).",
                     "Start paper.md with the front matter the handbook shows.", 1)  # fmt: skip
        else:
            try:
                front = load_yaml(m.group(1)) or {}
            except yaml.YAMLError as e:
                line = getattr(getattr(e, "problem_mark", None), "line", None)
                self.add(ERROR, "paper.md", f"The front matter is not valid YAML: {e}",
                         "Fix the YAML (indentation, quotes around values with ':').",
                         None if line is None else line + 2)  # fmt: skip
            if not isinstance(front, dict):
                self.add(ERROR, "paper.md", "The front matter is not a YAML mapping.",
                         "Write it as key: value lines (title:, authors:, ...).", 1)  # fmt: skip
                front = {}
        for key in ("title", "authors", "date", "bibliography"):
            if front and not front.get(key):
                self.add(ERROR, "paper.md", f"The front matter has no {key}.",
                         f"Add {key}: to the front matter.", 1)  # fmt: skip
        indexes = {
            str(a.get("index")) for a in _list(front.get("affiliations")) if isinstance(a, dict)
        }
        for author in _list(front.get("authors")):
            if not isinstance(author, dict):
                continue
            for ref in str(author.get("affiliation", "")).replace(" ", "").split(","):
                if ref and ref not in indexes:
                    self.add(ERROR, "paper.md", f"{author.get('name')!r} has affiliation {ref}, "
                             "which is not in affiliations.", "Add it to affiliations (with its "
                             "index) or fix the author's number.", 1)  # fmt: skip
        bib_name = str(front.get("bibliography") or "paper.bib")
        bib = self.read(bib_name)
        if bib is None:
            if not self.blocked(bib_name):
                self.add(ERROR, bib_name, f"The bibliography {bib_name} is missing.",
                         f"Add {bib_name} (BibTeX) next to paper.md.")  # fmt: skip
            return front
        keys = set(BIB_KEY_RE.findall(bib))
        body_start = m.end() if m else 0
        for n, line in enumerate(
            paper[body_start:].splitlines(), paper[:body_start].count("\n") + 1
        ):
            for key in CITATION_RE.findall(line):
                if key not in keys:
                    self.add(ERROR, "paper.md", f"Citation @{key} is not in {bib_name}.",
                             f"Add an entry with key {key} to {bib_name}, or fix the key.", n)  # fmt: skip
        return front

    # -- content/ (Jupyter Book 1 or MyST) --------------------------------------------------

    def check_book(self, front: dict) -> None:
        if self.blocked("content"):
            return  # a link out of the repository: its finding says what to do
        myst = next((p for p in ("content/myst.yml", "myst.yml") if self.kind(p) == "file"), None)
        if self.kind("content/_toc.yml") == "file" or self.kind("content/_config.yml") == "file":
            self.check_jupyter_book(front)
        elif myst is None:
            if not any(self.blocked(p) for p in ("content/_toc.yml", "content/_config.yml",
                                                 "content/myst.yml", "myst.yml")):  # fmt: skip
                self.add(ERROR, "content/", "No book: content/_toc.yml and content/_config.yml "
                         "(Jupyter Book) or a myst.yml (MyST) are needed.", "Add content/_config.yml "
                         "and content/_toc.yml, as in the handbook's layout.")  # fmt: skip
        elif myst == "myst.yml":
            self.add(WARNING, "myst.yml", "myst.yml is at the repository root, not in content/.",
                     "This builds; move the book into content/ to match the handbook.")  # fmt: skip
        book = "content/" if self.kind("content") == "dir" else ""
        mine = [f for f in self.files if f.startswith(book) and "_build" not in f.split("/")]
        notebooks = [f for f in mine if f.endswith(EXECUTABLE_SUFFIXES)]
        # a MyST code cell counts too; only looked for when there is no notebook
        executable = notebooks or next(
            (f for f in mine if f.endswith(".md") and "```{code-cell}" in
             (self.read(f, level=WARNING) or "")), None,
        )  # fmt: skip
        if not executable and self.walk_complete:
            self.add(ERROR, "content/", "No executable content (a notebook or a MyST code cell).",
                     "A living preprint's figures come from code: add a notebook to content/.")  # fmt: skip
        for nb in notebooks:
            self.check_notebook(nb)

    def check_jupyter_book(self, front: dict) -> None:
        for name in ("_toc.yml", "_config.yml"):
            rel = f"content/{name}"
            if self.kind(rel) != "file" and not self.blocked(rel):
                self.add(ERROR, rel, f"{rel} is missing.", f"Add {rel}: Jupyter Book needs it.")
        config = self._yaml("content/_config.yml")
        if isinstance(config, dict) and front:
            if (
                front.get("title")
                and str(config.get("title", "")).strip() != str(front["title"]).strip()
            ):
                self.add(WARNING, "content/_config.yml", f"title {config.get('title')!r} differs "
                         f"from paper.md's {front['title']!r}.", "Use the same title in both.")  # fmt: skip
            names = [a.get("name") for a in _list(front.get("authors")) if isinstance(a, dict)]
            author = str(config.get("author", ""))
            missing = [str(n) for n in names if n and str(n) not in author]
            if missing:
                self.add(WARNING, "content/_config.yml", f"author does not list {', '.join(missing)} "
                         "(from paper.md).", "List the same authors in both.")  # fmt: skip
            repository = config.get("repository")
            url = repository.get("url") if isinstance(repository, dict) else None
            if self.repository_url and url and str(url).rstrip("/").removesuffix(".git") != \
                    self.repository_url.rstrip("/").removesuffix(".git"):  # fmt: skip
                self.add(WARNING, "content/_config.yml", f"repository.url {url} is not the "
                         f"submitted repository {self.repository_url}.", "Fix repository.url.")  # fmt: skip
        toc = self._yaml("content/_toc.yml")
        if isinstance(toc, dict):
            for entry in dict.fromkeys(_toc_files(toc)):
                self.check_toc_entry(entry)

    def check_toc_entry(self, entry: str) -> None:
        """A table of contents entry names a file inside content/, never anything else."""
        where = "content/_toc.yml"
        if entry.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", entry):
            self.add(ERROR, where, f"{entry!r} in the table of contents is an absolute path.",
                     "Write the path relative to content/, e.g. 'analysis' for "
                     "content/analysis.ipynb.")  # fmt: skip
            return
        path = os.path.normpath(f"content/{entry}")
        if not path.startswith("content/"):
            self.add(ERROR, where, f"{entry!r} in the table of contents points outside content/.",
                     "Move the file into content/ and list it by its path relative to content/.")  # fmt: skip
            return
        candidates = [f"{path}{s}" for s in TOC_SUFFIXES]
        if any(self.kind(c) == "file" for c in candidates):
            return
        if any(self.blocked(c) for c in candidates):
            self.add(ERROR, where, f"{entry!r} in the table of contents leads outside the "
                     "repository (a symbolic link).", "List a file that is in content/ itself.")  # fmt: skip
            return
        self.add(ERROR, where, f"{entry!r} is in the table of contents but no such file exists "
                 "in content/.", "Fix the name, or add the file.")  # fmt: skip

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
            self.add(ERROR, rel, "Not a valid notebook (JSON).", "Save it again with Jupyter.")
            return
        for i, cell in enumerate(cells, 1):
            if not isinstance(cell, dict) or cell.get("cell_type") != "code":
                continue
            source = cell.get("source", [])
            src = source if isinstance(source, str) else "".join(
                s for s in source if isinstance(s, str)) if isinstance(source, list) else ""  # fmt: skip
            if WINDOWS_PATH_RE.search(src):
                self.add(WARNING, rel, f"Code cell {i} uses a Windows-style path, which fails on "
                         "NeuroLibre's Linux servers.", "Use os.path.join('data', ...) or '/'.")  # fmt: skip

    def _yaml(self, rel: str):
        text = self.read(rel)
        if text is None:
            return None
        try:
            return load_yaml(text)
        except yaml.YAMLError as e:
            self.add(ERROR, rel, f"Not valid YAML: {e}", "Fix the YAML syntax.")
            return None


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


def check(root: Path, repository_url: str | None = None, **limits: int) -> list[Finding]:
    """The findings for the repository at root (limits: Checker's max_* keywords)."""
    return Checker(root, repository_url, **limits).run()


def title_of(front: dict) -> str | None:
    title = front.get("title")
    return str(title)[:300] if title else None


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"errors": sum(f.level == ERROR for f in findings),
                       "warnings": sum(f.level == WARNING for f in findings),
                       "findings": [asdict(f) for f in findings]}, indent=2)  # fmt: skip
