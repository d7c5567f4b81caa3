"""A published version's metadata, from the layout check's own reading of paper.md and myst.yml.

The check (checks.Checker) already parses paper.md's front matter and a MyST project's
`project:`, confined, bounded and with every file read through its guards; this module only
normalises what it found into what readers' pages and citation tools need: title, authors (name,
ORCID, affiliations), affiliations, summary, keywords, date and licence. Every value comes from a
hostile repository: strings are cut to a length, lists to a count, an ORCID must be one (so a
`javascript:` "ORCID" never becomes a link), and nothing is interpreted as HTML here (pages escape).

Like the check, it runs in a child process confined by the sandbox
(`python -I -m neurolibre_service.metadata CHECKOUT` prints one JSON line): publishing.py starts it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

from .checks import MAX_ENTRIES, MAX_FILE_SIZE, Checker, title_of

MAX_AUTHORS = 200
MAX_NAME = 200
MAX_AFFILIATIONS = 100
MAX_AFFILIATION = 300
MAX_KEYWORDS = 30
MAX_KEYWORD = 100
MAX_SUMMARY = 2000
MAX_LICENSE = 100
ORCID_RE = re.compile(r"(?:https?://(?:www\.)?orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])/?")
DATE_FORMATS = ("%Y-%m-%d", "%d %B %Y", "%B %d %Y", "%B %d, %Y", "%d %b %Y", "%b %d %Y", "%Y/%m/%d")
SUMMARY_HEADING_RE = re.compile(r"^#{1,3}\s*(summary|abstract)\s*$", re.IGNORECASE | re.MULTILINE)


def _clean(value: Any, limit: int) -> str | None:
    """A one-line string of at most `limit` characters, or None (no control characters)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in str(value))
    text = " ".join(text.split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def orcid(value: Any) -> str | None:
    """The ORCID iD in value (bare or as its https://orcid.org/ URL) if its checksum holds."""
    m = ORCID_RE.fullmatch(str(value or "").strip())
    if not m:
        return None
    ident = m.group(1)
    digits = ident.replace("-", "")
    total = 0
    for d in digits[:-1]:  # ISO 7064 11,2, as ORCID computes its check digit
        total = (total + int(d)) * 2
    check = (12 - total % 11) % 11
    return ident if digits[-1] == ("X" if check == 10 else str(check)) else None


def _list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _refs(value: Any) -> list[str]:
    """An author's affiliation references: "1, 2", "polymtl; mhi", [1, 2] or ["a", "b"]."""
    out: list[str] = []
    for item in _list(value):
        if isinstance(item, dict):
            item = item.get("id") or item.get("name") or item.get("institution")
        if item is None:
            continue
        out += [p.strip() for p in re.split(r"[;,]", str(item)) if p.strip()]
    return out


def _person_name(value: Any) -> str | None:
    if isinstance(value, dict):  # MyST's {given, family} or {literal}
        literal = value.get("literal")
        if literal:
            return _clean(literal, MAX_NAME)
        parts = [value.get("given"), value.get("family")]
        return _clean(" ".join(str(p) for p in parts if p), MAX_NAME)
    return _clean(value, MAX_NAME)


def authors_and_affiliations(front: dict) -> tuple[list[dict], list[str]]:
    """Authors as [{name, orcid, affiliations: [1-based indexes]}], and the affiliations'
    names in order of first mention (paper.md's `index:` or MyST's `id:` resolved)."""
    known: dict[str, str] = {}
    for n, a in enumerate(_list(front.get("affiliations"))[:MAX_AFFILIATIONS], start=1):
        if isinstance(a, dict):
            name = _clean(a.get("name") or a.get("institution"), MAX_AFFILIATION)
            if not name:
                continue
            for key in (a.get("index"), a.get("id"), n):
                if key is not None:
                    known.setdefault(str(key).strip(), name)
        elif (name := _clean(a, MAX_AFFILIATION)) is not None:
            known.setdefault(str(n), name)
            known.setdefault(name, name)
    names: list[str] = []
    authors: list[dict] = []
    for a in _list(front.get("authors") or front.get("author"))[:MAX_AUTHORS]:
        if isinstance(a, dict):
            name = _person_name(a.get("name"))
            refs = _refs(a.get("affiliation") if "affiliation" in a else a.get("affiliations"))
            ident = orcid(a.get("orcid"))
        else:
            name, refs, ident = _clean(a, MAX_NAME), [], None
        if not name:
            continue
        indexes = []
        for ref in refs[:MAX_AFFILIATIONS]:
            aff = known.get(ref) or _clean(ref, MAX_AFFILIATION)  # MyST allows names inline
            if aff is None or (aff not in names and len(names) >= MAX_AFFILIATIONS):
                continue
            if aff not in names:
                names.append(aff)
            indexes.append(names.index(aff) + 1)
        authors.append({"name": name, "orcid": ident, "affiliations": indexes})
    return authors, names


def iso_date(value: Any) -> str | None:
    """YYYY-MM-DD from a YAML date or the usual ways to write one ("22 November 2026")."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = _clean(value, 40)
    if not text:
        return None
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text)
    for fmt in DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def summary_of(front: dict, body: str | None) -> str | None:
    """The abstract: the front matter's summary/abstract/description, else the first paragraph
    under paper.md's "# Summary" heading."""
    for key in ("summary", "abstract", "description"):
        text = _clean(front.get(key), MAX_SUMMARY)
        if text:
            return text
    if not body:
        return None
    m = SUMMARY_HEADING_RE.search(body)
    if not m:
        return None
    rest = body[m.end() : m.end() + 20 * MAX_SUMMARY]
    paragraphs = []
    for block in re.split(r"\n\s*\n", rest):
        if block.lstrip().startswith("#"):
            break
        if block.strip():
            paragraphs.append(block)
        if sum(len(p) for p in paragraphs) > MAX_SUMMARY:
            break
    return _clean(" ".join(paragraphs), MAX_SUMMARY)


def keywords_of(front: dict) -> list[str]:
    raw = front.get("keywords") or front.get("tags") or []
    if isinstance(raw, str):
        raw = raw.split(",")
    out: list[str] = []
    for k in _list(raw):
        text = _clean(k, MAX_KEYWORD)
        if text and text not in out:
            out.append(text)
        if len(out) >= MAX_KEYWORDS:
            break
    return out


def licenses_of(front: dict) -> tuple[str | None, str | None]:
    """(the content's licence, the code's licence if given apart): "CC-BY-4.0", "MIT"..."""
    raw = front.get("license") or front.get("licence")
    if isinstance(raw, dict):  # MyST: {content: ..., code: ...}
        return _clean(raw.get("content"), MAX_LICENSE), _clean(raw.get("code"), MAX_LICENSE)
    return _clean(raw, MAX_LICENSE), None


def metadata(checker: Checker) -> dict:
    """The normalised metadata of a checked repository (checker.run() has been called)."""
    front = checker.front if isinstance(checker.front, dict) else {}
    body = None
    text = checker.read("paper.md") if checker.kind("paper.md") == "file" else None
    if text is not None:
        _front, body, _line = checker.front_matter("paper.md", text, required=False)
    authors, affiliations = authors_and_affiliations(front)
    license_, code_license = licenses_of(front)
    if license_ is None:  # the LICENSE file's heading ("MIT License", "GNU GENERAL PUBLIC ...")
        for name in ("LICENSE", "LICENSE.md", "LICENSE.txt", "COPYING"):
            if checker.kind(name) == "file":
                text = checker.read(name, limit=1 << 20) or ""
                lines = [line for line in text.splitlines()[:5] if line.strip()]
                license_ = _clean(" ".join(lines[:2]) if "version" in " ".join(lines[1:2]).lower()
                                  else (lines or [None])[0], MAX_LICENSE)  # fmt: skip
                break
    return {
        "title": _clean(title_of(front), 300),
        "subtitle": _clean(front.get("subtitle"), 300),
        "authors": authors,
        "affiliations": affiliations,
        "summary": summary_of(front, body),
        "keywords": keywords_of(front),
        "date": iso_date(front.get("date")),
        "license": license_,
        "code_license": code_license,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a checkout's preprint metadata as JSON.")
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--max-file-size", type=int, default=MAX_FILE_SIZE)
    parser.add_argument("--max-entries", type=int, default=MAX_ENTRIES)
    args = parser.parse_args(argv)
    checker = Checker(args.checkout, None, max_file_size=args.max_file_size,
                      max_entries=args.max_entries)  # fmt: skip
    checker.run()
    sys.stdout.write(json.dumps({"metadata": metadata(checker)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
