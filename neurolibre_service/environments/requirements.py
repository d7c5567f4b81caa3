"""binder/requirements.txt, parsed (not pattern-matched) before the local builder installs it.

A repository's requirements file is hostile input. uv (like pip) reads far more than package
names from it: local paths, archives, editable installs, other files (-r/-c), extra indexes and
find-links, environment variables (${VAR}). Any of these lets a repository install code the
service never fetched from an index the operator chose, or point the installer at host paths.

So the file is parsed the way pip reads it (logical lines: `\\` continuations, ` #` comments),
each requirement with `packaging`, every option against an allow-list, -r/-c recursively from
the runtime files the service already read. The builder never hands the repository's file to uv:
it writes a sanitized copy (requirement lines and their hashes only) with `Requirements.write`
and passes the options itself, with uv's configuration discovery turned off.

Options the service accepts (everything else is refused):
  -r/--requirement, -c/--constraint  files inside the runtime directory, parsed by these rules
  -i/--index-url, --extra-index-url  https indexes the operator allowed (default: none)
  --pre                              passed to uv as --prerelease=allow
  --only-binary, --no-binary         :all:, :none: or package names (which files uv may use)
  --prefer-binary, --require-hashes  accepted and not passed on (said in the build log)
  --hash (on a requirement's line)   kept: uv checks the files it downloads against it
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlsplit

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# nested -r/-c files below the entry file (the entry is depth 0)
MAX_DEPTH = 4
# the URL schemes a requirement may be fetched over: encrypted, and never the build's own disk
URL_SCHEMES = frozenset({"https", "git+https"})
ARCHIVES = (".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar", ".zip")
# uv's configuration files (uv.toml, pyproject.toml [tool.uv], ~/.config/uv) can set indexes,
# find-links and the cache: a repository's copy must never be read. Both, to be sure.
UV_NO_CONFIG_ARGS = ("--no-config",)
UV_NO_CONFIG_ENV = {"UV_NO_CONFIG": "1"}

FIX_NAME = ("list the package by name from PyPI, e.g. `numpy==1.26.4`, or as a https Git URL, "
            "e.g. `mypkg @ git+https://github.com/org/repo@v1.0`")  # fmt: skip
COMMENT_RE = re.compile(r"(^|\s+)#.*$")  # pip's: a # that starts the line or follows a space
HASH_RE = re.compile(r"(sha256|sha384|sha512|md5):[0-9a-fA-F]+")
# `name [extras] @ ...`: a direct reference, whatever follows the @
NAMED_URL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*@")
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Problem:
    """One refused line: where it is, what it says, why not, and what to write instead."""

    file: str  # as the author knows it, e.g. binder/requirements.txt
    line: int
    text: str
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line} ({self.text!r}): {self.reason}. Fix: {self.fix}."


@dataclass
class Requirements:
    """What the builder may install: sanitized lines, the options it passes itself, and errors."""

    requirements: list[str] = field(default_factory=list)  # lines for the sanitized file
    constraints: list[str] = field(default_factory=list)
    index_url: str | None = None  # an allowed replacement for the operator's default index
    extra_index_urls: list[str] = field(default_factory=list)  # allowed, in order
    uv_options: list[str] = field(default_factory=list)  # --prerelease=allow, --only-binary ...
    notes: list[str] = field(default_factory=list)  # accepted but without effect: tell the author
    errors: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self, limit: int = 10) -> str:
        """The errors as one message for the author (the first `limit`, then a count)."""
        lines = [str(p) for p in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"... and {len(self.errors) - limit} more lines like these.")
        return "\n".join(lines)

    def write(self, directory: Path) -> list[str]:
        """Write the sanitized files into `directory` (the service's, not the repository's) and
        return the arguments for `uv pip install` (after `--python ...`, before other packages).
        """
        if self.errors:
            raise ValueError("refusing to write requirements that did not validate")
        args = list(UV_NO_CONFIG_ARGS)
        for name, lines, flag in (("requirements.txt", self.requirements, "-r"),
                                  ("constraints.txt", self.constraints, "-c")):  # fmt: skip
            if lines:
                path = directory / name
                path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
                args += [flag, str(path)]
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        return args + self.uv_options


def normalize_index(url: str) -> str:
    """Compare index URLs without a trailing slash or case in the scheme and host."""
    parts = urlsplit(url.strip())
    return (
        parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower())
        .geturl()
        .rstrip("/")
    )


def check_allowed_indexes(urls: Sequence[str]) -> list[str]:
    """The operator's allow-list, normalized; a non-https entry is a configuration error."""
    out = []
    for url in urls:
        parts = urlsplit(url.strip())
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise ValueError(f"allowed index {url!r} is not an https URL")
        out.append(normalize_index(url))
    return out


def parse_requirements(
    files: Mapping[str, bytes],
    directory: Path | None = None,
    *,
    entry: str = "requirements.txt",
    prefix: str = "binder/",
    allowed_indexes: Sequence[str] = (),
) -> Requirements:
    """Validate `entry` among a runtime's `files` (relative name -> bytes, as RuntimeFiles holds
    them; -r/-c may name only these). `directory` is where they are on disk, to refuse includes
    that are symbolic links; `prefix` is how messages name the runtime directory ("binder/").
    """
    parser = _Parser(files, directory, prefix, check_allowed_indexes(allowed_indexes))
    if entry in files:
        parser.parse_file(entry, constraint=False, stack=(entry,))
    return parser.result


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """pip's preprocessing: join `\\` continuations, drop comments and blank lines."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    first = 0
    for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        if line.endswith("\\") and not COMMENT_RE.search(line):
            if not pending:
                first = n
            pending.append(line[:-1])
            continue
        if pending:
            pending.append(line)
            n, line = first, "".join(pending)
            pending = []
        out.append((n, line))
    if pending:  # a continuation on the last line
        out.append((first, "".join(pending)))
    stripped = ((n, COMMENT_RE.sub("", line).strip()) for n, line in out)
    return [(n, line) for n, line in stripped if line]


def _url_problem(url: str) -> str | None:
    """Why a requirement's URL may not be fetched, or None: https (or git+https) to a host."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in URL_SCHEMES and parts.hostname:
        # #subdirectory= is a folder of the fetched tree: `..` or `/` would leave it
        for sub in parse_qs(parts.fragment).get("subdirectory", []):
            if sub.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", sub):
                return f"has #subdirectory={sub}, which leaves the fetched tree"
        return None
    if not scheme or scheme.endswith("file") or (scheme in URL_SCHEMES and not parts.hostname):
        return "installs from a local path, which the service does not allow"
    if scheme.endswith("http"):
        return f"fetches over unencrypted {scheme}://, which the service does not allow"
    return f"uses {scheme}://: only https:// and git+https:// URLs are allowed"


def _looks_local(token: str) -> bool:
    """What pip (or uv) would take for a path or an archive on disk rather than a name."""
    return (
        token.startswith((".", "/", "~"))
        or "/" in token
        or "\\" in token
        or bool(re.match(r"[A-Za-z]:", token))
        or token.lower().endswith(ARCHIVES)
    )


# option -> (canonical name, takes a value)
OPTIONS: dict[str, tuple[str, bool]] = {
    "-r": ("requirement", True), "--requirement": ("requirement", True),
    "-c": ("constraint", True), "--constraint": ("constraint", True),
    "-e": ("editable", True), "--editable": ("editable", True),
    "-i": ("index-url", True), "--index-url": ("index-url", True),
    "--extra-index-url": ("extra-index-url", True),
    "-f": ("find-links", True), "--find-links": ("find-links", True),
    "--no-index": ("no-index", False),
    "--trusted-host": ("trusted-host", True),
    "--pre": ("pre", False),
    "--prefer-binary": ("prefer-binary", False),
    "--require-hashes": ("require-hashes", False),
    "--only-binary": ("only-binary", True),
    "--no-binary": ("no-binary", True),
    "--hash": ("hash", True),
}  # fmt: skip
INDEX_FIX = ("remove it: packages come from the service's package index (PyPI unless the operator "
             "chose another), or ask the operator to allow this https index")  # fmt: skip
REFUSED = {
    "find-links": ("looks for packages in a folder or page (--find-links), which the service "
                   "does not allow", f"remove it and {FIX_NAME}"),
    "no-index": ("turns off the package index (--no-index), so packages could only come from "
                 "local paths", f"remove it and {FIX_NAME}"),
    "trusted-host": ("turns off certificate checks for a host (--trusted-host)",
                     "remove it: indexes and URLs must be https with a valid certificate"),
}  # fmt: skip


class _Parser:
    def __init__(self, files: Mapping[str, bytes], directory: Path | None, prefix: str,
                 allowed: list[str]) -> None:  # fmt: skip
        self.files = files
        self.directory = directory
        self.prefix = prefix
        self.allowed = allowed
        self.result = Requirements()
        self.done: set[tuple[str, bool]] = set()
        # top-level names in the runtime directory: a bare requirement naming one is a path to pip
        self.local_names = {canonicalize_name(k.split("/", 1)[0]) for k in files}

    def parse_file(self, rel: str, *, constraint: bool, stack: tuple[str, ...]) -> None:
        self.done.add((rel, constraint))
        text = self.files[rel].decode("utf-8", "replace")
        for n, line in _logical_lines(text):
            self.parse_line(rel, n, line, constraint=constraint, stack=stack)

    def error(self, rel: str, n: int, line: str, reason: str, fix: str) -> None:
        problem = Problem(self.prefix + rel, n, line, reason, fix)
        if problem not in self.result.errors:  # a file read as requirements and constraints
            self.result.errors.append(problem)

    def parse_line(self, rel: str, n: int, line: str, *, constraint: bool,
                   stack: tuple[str, ...]) -> None:  # fmt: skip
        def refuse(reason: str, fix: str = FIX_NAME) -> None:
            self.error(rel, n, line, reason, fix)

        if "${" in line:  # uv and pip substitute the build's environment variables
            return refuse("uses an environment variable (${...}), which the service does not "
                          "expand", "write the value itself")  # fmt: skip
        if line.startswith("-"):
            return self.parse_options(rel, n, line, constraint=constraint, stack=stack)
        # pip's split: the requirement, then options from the first token that starts with -
        tokens = line.split()
        cut = next((i for i, t in enumerate(tokens) if t.startswith("-")), len(tokens))
        spec, options = " ".join(tokens[:cut]), " ".join(tokens[cut:])
        hashes = []
        try:
            words = shlex.split(options)
        except ValueError as e:
            return refuse(f"cannot be read ({e})", "check the quotes on this line")
        i = 0
        while i < len(words):
            word = words[i]
            if word == "--hash" and i + 1 < len(words):
                value, i = words[i + 1], i + 2
            elif word.startswith("--hash="):
                value, i = word.split("=", 1)[1], i + 1
            else:
                return refuse(f"has the option {word.split('=', 1)[0]}, which the service does "
                              "not accept on a requirement's line",
                              "keep only the requirement and its --hash=sha256:... values")  # fmt: skip
            if not HASH_RE.fullmatch(value):
                return refuse(f"has a malformed hash {value!r}",
                              "write --hash=sha256:<64 hex digits> (pip hash <file> prints it)")  # fmt: skip
            hashes.append(f"--hash={value}")
        clean = self.parse_spec(spec, refuse)
        if clean is not None:
            out = self.result.constraints if constraint else self.result.requirements
            out.append(" ".join([clean, *hashes]))

    def parse_spec(self, spec: str, refuse: Callable[..., None]) -> str | None:
        """The requirement as the sanitized file will say it, or None (refused)."""
        first = spec.split()[0]
        if NAMED_URL_RE.match(spec):
            pass  # `name @ url`: packaging below, then the URL's own check
        elif SCHEME_RE.match(first) and ("://" in first or first.lower().startswith("file:")):
            # an unnamed URL (`git+https://...#egg=x`): optionally `; marker`, nothing else
            url, rest, marker = first, spec[len(first) :].strip(), None
            if rest:
                if not rest.startswith(";"):
                    return refuse("has more than a URL and an environment marker",
                                  "write one URL per line, e.g. `git+https://github.com/org/"
                                  "repo@v1.0#egg=mypkg`")  # fmt: skip
                marker = rest[1:].strip()
                try:
                    Marker(marker)
                except InvalidMarker as e:
                    return refuse(f"has an environment marker that does not parse ({e})",
                                  'write e.g. `; python_version < "3.12"`')  # fmt: skip
            problem = _url_problem(url)
            if problem:
                return refuse(problem)
            return url if marker is None else f"{url} ; {marker}"
        elif _looks_local(first):
            return refuse("installs from a local path (or an archive on disk), which the service "
                          "does not allow")  # fmt: skip
        try:
            req = Requirement(spec)
        except InvalidRequirement as e:
            detail = str(e).splitlines()[0]
            return refuse(f"is not a valid requirement ({detail})",
                          f"write `name`, `name==version` or `name @ https-URL`; {FIX_NAME}")  # fmt: skip
        if req.url is not None:
            problem = _url_problem(req.url)
            if problem:
                return refuse(problem)
        elif req.name.lower().endswith(ARCHIVES) or (
            not req.specifier and canonicalize_name(req.name) in self.local_names
        ):
            return refuse(f"names {req.name!r}, which is a file or folder here: pip would install "
                          "it from that local path, which the service does not allow")  # fmt: skip
        return str(req)

    def parse_options(self, rel: str, n: int, line: str, *, constraint: bool,
                      stack: tuple[str, ...]) -> None:  # fmt: skip
        def refuse(reason: str, fix: str = FIX_NAME) -> None:
            self.error(rel, n, line, reason, fix)

        try:
            words = shlex.split(line)
        except ValueError as e:
            return refuse(f"cannot be read ({e})", "check the quotes on this line")
        i = 0
        while i < len(words):
            word = words[i]
            i += 1
            value: str | None = None
            if word.startswith("--") and "=" in word:
                word, value = word.split("=", 1)
            elif not word.startswith("--") and len(word) > 2 and word[:2] in OPTIONS:
                word, value = word[:2], word[2:]  # -rfile.txt, -ihttps://..., -e.
            known = OPTIONS.get(word)
            if known is None:
                allowed = "-r, -c, --index-url, --extra-index-url, --pre, --only-binary, " \
                          "--no-binary, --prefer-binary, --require-hashes"  # fmt: skip
                return refuse(f"uses {word}, which the service does not accept",
                              f"remove it (accepted options: {allowed}); {FIX_NAME}")  # fmt: skip
            name, takes_value = known
            if takes_value and value is None:
                if i >= len(words):
                    return refuse(f"{word} needs a value", "give it on the same line")
                value, i = words[i], i + 1
            elif not takes_value and value is not None:
                return refuse(f"{word} takes no value", f"write {word} alone")
            self.option(rel, n, line, name, word, value, constraint=constraint, stack=stack)

    def option(self, rel: str, n: int, line: str, name: str, word: str, value: str | None, *,
               constraint: bool, stack: tuple[str, ...]) -> None:  # fmt: skip
        def refuse(reason: str, fix: str = FIX_NAME) -> None:
            self.error(rel, n, line, reason, fix)

        result = self.result
        if name in REFUSED:
            return refuse(*REFUSED[name])
        if name == "editable":
            assert value is not None
            if SCHEME_RE.match(value) and "://" in value and not _url_problem(value):
                return refuse("is an editable (-e) install, which the service does not support",
                              f"drop -e: write `mypkg @ {value.split('#')[0]}`")  # fmt: skip
            return refuse("installs from a local path in editable mode (-e), which the service "
                          "does not allow")  # fmt: skip
        if name in ("index-url", "extra-index-url"):
            assert value is not None
            parts = urlsplit(value)
            if parts.scheme.lower() != "https" or not parts.hostname:
                return refuse(f"uses a package index that is not https ({word} {value})",
                              INDEX_FIX)  # fmt: skip
            if normalize_index(value) not in self.allowed:
                return refuse(f"uses a package index the operator has not allowed ({value})",
                              INDEX_FIX)  # fmt: skip
            if name == "index-url":
                result.index_url = normalize_index(value)
            elif normalize_index(value) not in result.extra_index_urls:
                result.extra_index_urls.append(normalize_index(value))
            return None
        if name in ("requirement", "constraint"):
            assert value is not None
            return self.include(rel, n, line, value, constraint or name == "constraint", stack)
        if name == "pre":
            if "--prerelease=allow" not in result.uv_options:
                result.uv_options.append("--prerelease=allow")
            return None
        if name in ("only-binary", "no-binary"):
            assert value is not None
            for item in filter(None, (v.strip() for v in value.split(","))):
                if item not in (":all:", ":none:") and not NAME_RE.fullmatch(item):
                    return refuse(f"{word} {item!r} is not :all:, :none: or a package name",
                                  f"write e.g. {word} :all:")  # fmt: skip
                result.uv_options += [f"--{name}", item]
            return None
        if name == "hash":
            return refuse("has --hash without a requirement",
                          "put --hash=sha256:... on the line of the requirement it checks")  # fmt: skip
        note = (f"{self.prefix}{rel} line {n}: {word} is accepted but has no effect here"
                + (" (hashes given are still checked; the server packages the service adds "
                   "have none)" if name == "require-hashes" else ""))  # fmt: skip
        result.notes.append(note)
        return None

    def include(self, rel: str, n: int, line: str, value: str, constraint: bool,
                stack: tuple[str, ...]) -> None:  # fmt: skip
        def refuse(reason: str, fix: str) -> None:
            self.error(rel, n, line, reason, fix)

        where = self.prefix or "the runtime directory"
        inside = f"put the file in {where} and name it relative to this file, e.g. -r extra.txt"
        if SCHEME_RE.match(value) and ("://" in value or value.lower().startswith("file:")):
            return refuse("reads requirements from a URL", f"copy that file into {where}")
        if value.startswith(("/", "~", "\\")) or re.match(r"[A-Za-z]:", value):
            return refuse("reads a file by absolute path", inside)
        parts = PurePosixPath(value.replace("\\", "/")).parts
        if ".." in parts:
            return refuse("reads a file through '..'", inside)
        target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), value))
        if target not in self.files:
            return refuse(f"reads {value!r}, which is not a file in {where}", inside)
        if self.directory is not None:
            for k in range(1, len(PurePosixPath(target).parts) + 1):
                if (self.directory / Path(*PurePosixPath(target).parts[:k])).is_symlink():
                    return refuse(f"reads {value!r}, which is a symbolic link",
                                  f"replace the link with the file itself, in {where}")  # fmt: skip
        if target in stack:
            cycle = " -> ".join(self.prefix + s for s in (*stack, target))
            return refuse(f"includes a file that includes it back ({cycle})",
                          "remove one of the -r/-c lines that form the cycle")  # fmt: skip
        if len(stack) > MAX_DEPTH:
            return refuse(f"nests -r/-c files more than {MAX_DEPTH} deep",
                          "list the requirements in fewer files")  # fmt: skip
        if (target, constraint) in self.done:
            return None  # already read (same as reading it again: the lines are the same)
        self.parse_file(target, constraint=constraint, stack=(*stack, target))
        return None
