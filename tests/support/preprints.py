"""Preprint repositories made by the tests: the handbook's layout, small enough to build fast."""

from __future__ import annotations

import json

BOOK_REQUIREMENTS = "jupyter-book==1.0.4.post1\n"

PAPER = """---
title: 'A test preprint'
authors:
  - name: Ada Researcher
    affiliation: 1
affiliations:
  - name: Example University
    index: 1
date: 22 November 2026
bibliography: paper.bib
---

# Summary

A preprint made by the test suite [@doe2020].
"""

BIB = """@article{doe2020,
  title = {A reference},
  author = {Doe, Jane},
  journal = {Journal of Tests},
  year = {2020}
}
"""

CONFIG = """title: 'A test preprint'
author: Ada Researcher
execute:
  execute_notebooks: cache
  timeout: -1
"""


def notebook(*cells: str) -> str:
    """A notebook of code cells (markdown cells start with '# md:')."""
    out = []
    for src in cells:
        if src.startswith("# md:"):
            out.append({"cell_type": "markdown", "metadata": {},
                        "source": src.removeprefix("# md:").strip()})  # fmt: skip
        else:
            out.append({"cell_type": "code", "metadata": {}, "execution_count": None,
                        "outputs": [], "source": src})  # fmt: skip
    return json.dumps({
        "cells": out,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    })  # fmt: skip


def preprint(notebooks: dict[str, str] | None = None, *, intro: str = "# Introduction\n\nProse.",
             data: dict | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:  # fmt: skip
    """The files of a preprint repository; `notebooks` maps names (without .ipynb) to JSON."""
    notebooks = notebooks or {"analysis": notebook("print('answer', 6 * 7)")}
    toc = "format: jb-book\nroot: intro\nchapters:\n" + "".join(
        f"  - file: {name}\n" for name in notebooks
    )
    files = {
        "binder/requirements.txt": BOOK_REQUIREMENTS,
        "content/_config.yml": CONFIG,
        "content/_toc.yml": toc,
        "content/intro.md": intro,
        "paper.md": PAPER,
        "paper.bib": BIB,
        **{f"content/{name}.ipynb": nb for name, nb in notebooks.items()},
    }
    if data is not None:
        files["binder/data_requirement.json"] = json.dumps(data, indent=2)
    files.update(extra or {})
    return files
