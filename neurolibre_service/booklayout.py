"""Where a preprint's book is and what builds it: one answer for the layout check and the builder.

The order is NeuroLibre's: a Jupyter Book 1 in content/ (content/_toc.yml or _config.yml), then
a MyST project (myst.yml in content/, then at the root), then a Jupyter Book at the repository
root (its _toc.yml: a root _config.yml alone may well be Jekyll's). content/_neurolibre.yml,
NeuroLibre's older layout file, is honoured where NeuroLibre honoured it:
- `build_myst: true` builds the MyST project instead of content/'s Jupyter Book, when there is
  one (NeuroLibre then skipped Jupyter Book and ran MyST on myst.yml);
- `book_layout: traditional` with `single_page: index.ipynb` builds that one page as the whole
  preprint (`jupyter-book build --builder singlehtml content/index.ipynb`), no _toc.yml needed.

Callers say how to look at the repository (`kind`: "file", "dir", "other" or None for a path
relative to it), so each keeps its own confinement: the check reports a link out of the
repository as a finding, the builder refuses to build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NEUROLIBRE_YML = "content/_neurolibre.yml"


@dataclass(frozen=True)
class Book:
    """Where the book is and what builds it."""

    engine: str | None  # "jupyter-book" (Jupyter Book 1), "myst", or None: no book found
    base: str  # its folder in the repository, with a trailing / ("" for the root)
    config: str | None = None  # content/_config.yml, or the MyST project's myst.yml
    single_page: str | None = None  # the one page built (_neurolibre.yml's traditional layout)

    @property
    def at_root(self) -> bool:
        return self.engine == "jupyter-book" and self.base == ""


@dataclass(frozen=True)
class NeuroLibreSettings:
    """What content/_neurolibre.yml says about the book."""

    single_page: str | None = None  # a page of content/, as written (not checked here)
    book_layout: str | None = None
    build_myst: bool = False

    @property
    def traditional(self) -> bool:
        """The single page is the whole preprint (NeuroLibre built only it)."""
        return self.single_page is not None and self.book_layout == "traditional"


def neurolibre_settings(data: object) -> NeuroLibreSettings:
    """content/_neurolibre.yml's parsed YAML (None: no such file), read as NeuroLibre read it:
    values are compared as text (its build script took them with sed)."""
    if not isinstance(data, dict):
        return NeuroLibreSettings()
    page = data.get("single_page")
    page = page.strip() if isinstance(page, str) and page.strip() else None
    layout = data.get("book_layout")
    layout = layout.strip() if isinstance(layout, str) else None
    myst = data.get("build_myst")
    return NeuroLibreSettings(page, layout, myst is True or str(myst).strip().lower() == "true")


def find_book(kind: Callable[[str], str | None],
              settings: NeuroLibreSettings = NeuroLibreSettings()) -> Book:  # fmt: skip
    """The book of a repository, looked at through `kind`."""
    myst = next((rel for rel in ("content/myst.yml", "myst.yml") if kind(rel) == "file"), None)
    if any(kind(f"content/{n}") == "file" for n in ("_toc.yml", "_config.yml")):
        if not (settings.build_myst and myst):
            page = settings.single_page if settings.traditional else None
            return Book("jupyter-book", "content/", "content/_config.yml", page)
    if myst:
        return Book("myst", myst.removesuffix("myst.yml"), myst)
    if kind("_toc.yml") == "file":
        return Book("jupyter-book", "", "_config.yml")
    return Book(None, "content/" if kind("content") == "dir" else "")
