"""The preprint layout checks (NeuroLibre handbook, "preprint repository structure").

One code path for the CLI (`neurolibre check`) and, later, the web pages and `api/check`.
Errors stop a build before anything is installed; warnings are deviations that still build.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ERROR, WARNING = "error", "warning"
PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CITATION_RE = re.compile(r"(?<![\w@.])@([A-Za-z0-9_][\w:.#$%&+?<>~/-]*[\w])")
BIB_KEY_RE = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")
WINDOWS_PATH_RE = re.compile(r"""['"](?:[A-Za-z]:\\|[^'"\n]*\\\\?[^'"\n]*\\)[^'"\n]*['"]""")
EXECUTABLE_SUFFIXES = (".ipynb",)
TOC_SUFFIXES = ("", ".md", ".ipynb", ".rst", ".myst", ".py")
MANY_REQUIREMENTS = 60
FRONT_MATTER_RE = re.compile(r"---\s*\n(.*?)\n---\s*\n", re.S)


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
    def __init__(self, root: Path, repository_url: str | None = None):
        self.root = root.resolve()
        self.repository_url = repository_url
        self.findings: list[Finding] = []

    def add(self, level: str, file: str | None, message: str, fix: str,
            line: int | None = None) -> None:  # fmt: skip
        self.findings.append(Finding(level, file, line, message, fix))

    def read(self, rel: str) -> str | None:
        p = (self.root / rel).resolve()
        if self.root not in p.parents or not p.is_file():
            return None
        return p.read_text(encoding="utf-8", errors="replace")

    def run(self) -> list[Finding]:
        self.check_binder()
        front = self.check_paper()
        self.check_book(front)
        return self.findings

    # -- binder/ ---------------------------------------------------------------------------

    def check_binder(self) -> None:
        binder = self.root / "binder"
        if not binder.is_dir():
            self.add(WARNING, "binder/", "There is no binder/ folder; the runtime files are looked "
                     "for at the repository root.", "Move requirements.txt (and data_requirement.json) "
                     "into binder/, as the handbook's layout shows.")  # fmt: skip
            base = ""
        else:
            base = "binder/"
        reqs = self.read(f"{base}requirements.txt")
        if reqs is None:
            if not any((self.root / base / f).exists() for f in ("environment.yml", "Dockerfile")):
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
            self.add(ERROR, "paper.md", "paper.md is missing.", "Add paper.md with its front matter "
                     "(title, authors, affiliations, date, bibliography).")  # fmt: skip
            return {}
        front: dict = {}
        m = FRONT_MATTER_RE.match(paper)
        if not m:
            self.add(ERROR, "paper.md", "No front matter (a YAML block between --- lines).",
                     "Start paper.md with the front matter the handbook shows.", 1)  # fmt: skip
        else:
            try:
                front = yaml.safe_load(m.group(1)) or {}
            except yaml.YAMLError as e:
                line = getattr(getattr(e, "problem_mark", None), "line", None)
                self.add(ERROR, "paper.md", f"The front matter is not valid YAML: {e}",
                         "Fix the YAML (indentation, quotes around values with ':').",
                         None if line is None else line + 2)  # fmt: skip
        for key in ("title", "authors", "date", "bibliography"):
            if front and not front.get(key):
                self.add(ERROR, "paper.md", f"The front matter has no {key}.",
                         f"Add {key}: to the front matter.", 1)  # fmt: skip
        indexes = {
            str(a.get("index")) for a in front.get("affiliations") or [] if isinstance(a, dict)
        }
        for author in front.get("authors") or []:
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
        content = self.root / "content"
        myst = next(
            (p for p in (content / "myst.yml", self.root / "myst.yml") if p.is_file()), None
        )
        if (content / "_toc.yml").is_file() or (content / "_config.yml").is_file():
            self.check_jupyter_book(content, front)
        elif myst is None:
            self.add(ERROR, "content/", "No book: content/_toc.yml and content/_config.yml "
                     "(Jupyter Book) or a myst.yml (MyST) are needed.", "Add content/_config.yml "
                     "and content/_toc.yml, as in the handbook's layout.")  # fmt: skip
        elif myst.parent == self.root:
            self.add(WARNING, "myst.yml", "myst.yml is at the repository root, not in content/.",
                     "This builds; move the book into content/ to match the handbook.")  # fmt: skip
        book_dir = content if content.is_dir() else self.root
        executable = [p for p in book_dir.rglob("*") if p.suffix in EXECUTABLE_SUFFIXES
                      and ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts]  # fmt: skip
        executable += [p for p in book_dir.rglob("*.md")
                       if "_build" not in p.parts and "```{code-cell}" in p.read_text(errors="replace")]  # fmt: skip
        if not executable:
            self.add(ERROR, "content/", "No executable content (a notebook or a MyST code cell).",
                     "A living preprint's figures come from code: add a notebook to content/.")  # fmt: skip
        for nb in (p for p in executable if p.suffix == ".ipynb"):
            self.check_notebook(nb)

    def check_jupyter_book(self, content: Path, front: dict) -> None:
        for name in ("_toc.yml", "_config.yml"):
            if not (content / name).is_file():
                self.add(ERROR, f"content/{name}", f"content/{name} is missing.",
                         f"Add content/{name}: Jupyter Book needs it.")  # fmt: skip
        config = self._yaml("content/_config.yml")
        if isinstance(config, dict) and front:
            if (
                front.get("title")
                and str(config.get("title", "")).strip() != str(front["title"]).strip()
            ):
                self.add(WARNING, "content/_config.yml", f"title {config.get('title')!r} differs "
                         f"from paper.md's {front['title']!r}.", "Use the same title in both.")  # fmt: skip
            names = [a.get("name") for a in front.get("authors") or [] if isinstance(a, dict)]
            author = str(config.get("author", ""))
            missing = [n for n in names if n and n not in author]
            if missing:
                self.add(WARNING, "content/_config.yml", f"author does not list {', '.join(missing)} "
                         "(from paper.md).", "List the same authors in both.")  # fmt: skip
            url = (config.get("repository") or {}).get("url")
            if self.repository_url and url and url.rstrip("/").removesuffix(".git") != \
                    self.repository_url.rstrip("/").removesuffix(".git"):  # fmt: skip
                self.add(WARNING, "content/_config.yml", f"repository.url {url} is not the "
                         f"submitted repository {self.repository_url}.", "Fix repository.url.")  # fmt: skip
        toc = self._yaml("content/_toc.yml")
        if isinstance(toc, dict):
            for entry in _toc_files(toc):
                if not any((content / f"{entry}{s}").is_file() for s in TOC_SUFFIXES):
                    self.add(ERROR, "content/_toc.yml", f"{entry!r} is in the table of contents "
                             "but no such file exists in content/.", "Fix the name, or add the "
                             "file.")  # fmt: skip

    def check_notebook(self, nb: Path) -> None:
        rel = nb.relative_to(self.root).as_posix()
        try:
            cells = json.loads(nb.read_text(encoding="utf-8")).get("cells", [])
        except (ValueError, OSError):
            self.add(ERROR, rel, "Not a valid notebook (JSON).", "Save it again with Jupyter.")
            return
        for i, cell in enumerate(cells, 1):
            src = "".join(cell.get("source", [])) if cell.get("cell_type") == "code" else ""
            if WINDOWS_PATH_RE.search(src):
                self.add(WARNING, rel, f"Code cell {i} uses a Windows-style path, which fails on "
                         "NeuroLibre's Linux servers.", "Use os.path.join('data', ...) or '/'.")  # fmt: skip

    def _yaml(self, rel: str):
        text = self.read(rel)
        if text is None:
            return None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            self.add(ERROR, rel, f"Not valid YAML: {e}", "Fix the YAML syntax.")
            return None


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


def front_matter(text: str) -> dict:
    """paper.md's YAML front matter, or {} when it has none or it is not valid."""
    m = FRONT_MATTER_RE.match(text)
    try:
        front = yaml.safe_load(m.group(1)) if m else None
    except yaml.YAMLError:
        return {}
    return front if isinstance(front, dict) else {}


def check(root: Path, repository_url: str | None = None) -> list[Finding]:
    return Checker(root, repository_url).run()


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"errors": sum(f.level == ERROR for f in findings),
                       "warnings": sum(f.level == WARNING for f in findings),
                       "findings": [asdict(f) for f in findings]}, indent=2)  # fmt: skip
