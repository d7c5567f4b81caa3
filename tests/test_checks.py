"""An author checks a preprint repository's layout and learns exactly what to fix."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from neurolibre_service.checks import check
from neurolibre_service.checks_runner import CheckRunner
from neurolibre_service.sandbox import Sandbox

SAMPLE = Path(__file__).resolve().parents[1] / "example" / "sample-preprint"


@pytest.fixture
def preprint(tmp_path) -> Path:
    repo = tmp_path / "preprint"
    shutil.copytree(SAMPLE, repo)
    return repo


def edit(repo: Path, rel: str, old: str, new: str) -> None:
    p = repo / rel
    text = p.read_text()
    assert old in text, (rel, old)
    p.write_text(text.replace(old, new))


def errors(repo: Path, url: str | None = None) -> list:
    return [f for f in check(repo, url) if f.level == "error"]


def test_the_sample_preprint_passes():
    assert check(SAMPLE) == []


@pytest.mark.parametrize(
    ("change", "level", "file", "message"),
    [
        (lambda r: (r / "paper.bib").unlink(), "error", "paper.bib", "bibliography paper.bib is missing"),
        (lambda r: edit(r, "paper.md", "[@harris2020array]", "[@nobody2021]"), "error", "paper.md",
         "Citation @nobody2021 is not in paper.bib"),
        (lambda r: edit(r, "paper.md", "affiliation: 1", "affiliation: \"1, 3\""), "error", "paper.md",
         "has affiliation 3, which is not in affiliations"),
        (lambda r: edit(r, "paper.md", "date: 21 November 2026\n", ""), "error", "paper.md",
         "The front matter has no date"),
        (lambda r: edit(r, "content/_toc.yml", "file: analysis", "file: missing-chapter"), "error",
         "content/_toc.yml", "'missing-chapter' is in the table of contents"),
        (lambda r: (r / "content/analysis.ipynb").unlink(), "error", "content/",
         "No executable content"),
        (lambda r: edit(r, "binder/requirements.txt", "jupyter-book==1.0.4.post1\n", ""), "error",
         "binder/requirements.txt", "jupyter-book is not in the runtime"),
        (lambda r: edit(r, "binder/data_requirement.json", '"sample-preprint"', '"../escape"'), "error",
         "binder/data_requirement.json", "projectName '../escape' is missing or unsafe"),
        (lambda r: edit(r, "binder/data_requirement.json", '"src"', '"scr"'), "error",
         "binder/data_requirement.json", "has no src"),
        (lambda r: edit(r, "binder/data_requirement.json", "{", "{,"), "error",
         "binder/data_requirement.json", "Not valid JSON"),
        (lambda r: edit(r, "binder/requirements.txt", "numpy==2.4.6", "numpy"), "warning",
         "binder/requirements.txt", "'numpy' is not pinned"),
        (lambda r: edit(r, "content/_config.yml", "sine waves", "cosine waves"), "warning",
         "content/_config.yml", "differs from paper.md's"),
        (lambda r: edit(r, "content/analysis.ipynb", "import numpy as np",
                        "import numpy as np\\\\nopen('data\\\\\\\\sample\\\\\\\\x.csv')"), "warning",
         "content/analysis.ipynb", "Windows-style path"),
        (lambda r: edit(r, "content/analysis.ipynb", "import numpy as np",
                        "import pandas as pd\\ndf = pd.read_csv('https://example.org/t.csv')"),
         "warning", "content/analysis.ipynb", "reads https://example.org/t.csv from the internet"),
    ],
)  # fmt: skip
def test_each_problem_is_reported_with_where_and_how_to_fix(preprint, change, level, file, message):
    change(preprint)
    found = [f for f in check(preprint) if message in f.message]
    assert found, [str(f) for f in check(preprint)]
    assert (found[0].level, found[0].file) == (level, file)
    assert found[0].fix


def test_the_citation_finding_points_at_its_line(preprint):
    edit(preprint, "paper.md", "[@harris2020array]", "[@nobody2021]")
    (finding,) = errors(preprint)
    lines = (preprint / "paper.md").read_text().splitlines()
    assert "@nobody2021" in lines[finding.line - 1]


def test_the_repository_url_must_match_the_submitted_one(preprint):
    (found,) = check(preprint, "https://github.com/someone/else")
    assert "is not the submitted repository" in found.message
    # a concrete instruction (it said "Fix: Fix repository.url.")
    assert found.fix == ("Set url: https://github.com/someone/else under repository: in "
                         "content/_config.yml (its launch and source links point there).")  # fmt: skip
    assert check(preprint, "https://github.com/neurolibre/sample-preprint.git") == []


def test_what_repo2data_and_myst_accept_is_not_an_error(preprint):
    # several datasets with the extra keys real repositories use, and a MyST book at the root
    (preprint / "binder/data_requirement.json").write_text(json.dumps({
        "atlas": {"src": "https://example.org/a.zip", "projectName": "atlas", "dst": "./data",
                  "dataLayout": "bids", "recursive": True, "version": "1.0"},
        "scans": {"src": "osf://xyz", "projectName": "scans"},
    }))  # fmt: skip
    for name in ("_toc.yml", "_config.yml"):
        (preprint / "content" / name).unlink()
    (preprint / "myst.yml").write_text("version: 1\nproject:\n  title: A living preprint\n")
    # myst.yml at the root is where NeuroLibre's MyST template keeps it: not even a warning
    assert check(preprint) == []


def test_the_cli_exits_1_on_errors_and_speaks_json(preprint):
    run = [sys.executable, "-m", "neurolibre_service.cli", "check"]
    ok = subprocess.run([*run, str(SAMPLE)], capture_output=True, text=True)
    assert ok.returncode == 0 and "0 error(s), 0 warning(s)" in ok.stdout
    (preprint / "paper.md").unlink()
    bad = subprocess.run([*run, str(preprint), "--json"], capture_output=True, text=True)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["errors"] >= 1
    assert report["findings"][0]["file"] == "paper.md"
    url = subprocess.run([*run, "file:///etc"], capture_output=True, text=True)
    assert url.returncode == 2 and "https://" in url.stderr


# -- a hostile repository: the check never leaves it, never hangs, never reads without bound ---


@pytest.fixture
def canary(tmp_path) -> Path:
    """A file outside the repository: its text must never reach a finding (or be read at all).

    It reads as a requirement line and as a BibTeX key, so a check that followed a link to it
    would quote it (unpinned package, unknown citation)."""
    path = tmp_path / "canary.txt"
    path.write_text(f"canary{secrets.token_hex(8)}\n")
    return path


def service_runner(**kw) -> CheckRunner:
    """What the service runs: a child process, confined by bubblewrap when it is installed."""
    return CheckRunner(Sandbox("bwrap") if shutil.which("bwrap") else None, **kw)


def run_check(mode: str, repo: Path) -> list:
    if mode == "cli":  # `neurolibre check PATH`: in-process, on the author's own machine
        return check(repo)
    return asyncio.run(service_runner().run(repo)).findings


def link(repo: Path, rel: str, target: str | Path) -> None:
    path = repo / rel
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def toc(repo: Path, entry: str) -> None:
    edit(repo, "content/_toc.yml", "file: analysis", f"file: analysis\n  - file: {entry!r}")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

ATTACKS = {
    # issue 11: /dev/zero grew the service to 2.9 GB
    "content/zero.md -> /dev/zero": (
        lambda r, c: link(r, "content/zero.md", "/dev/zero"),
        "content/zero.md", "is a symbolic link to '/dev/zero', outside the repository",
    ),
    # issue 11: walking /usr blocked the service for 7 s; / walked /proc
    "content -> /usr": (
        lambda r, c: link(r, "content", "/usr"), "content", "outside the repository"),
    "content -> /": (lambda r, c: link(r, "content", "/"), "content", "outside the repository"),
    "paper.md -> canary": (lambda r, c: link(r, "paper.md", c), "paper.md", "outside the repository"),
    "paper.bib -> canary": (lambda r, c: link(r, "paper.bib", c), "paper.bib", "outside the repository"),
    "binder -> canary's folder": (
        lambda r, c: link(r, "binder", c.parent), "binder", "outside the repository"),
    "requirements.txt -> canary": (
        lambda r, c: link(r, "binder/requirements.txt", c),
        "binder/requirements.txt", "outside the repository",
    ),
    "bibliography: /canary": (
        lambda r, c: edit(r, "paper.md", "bibliography: paper.bib", f"bibliography: {c}"),
        None, "is not a path inside the repository",
    ),
    "data_requirement.json -> /dev/urandom": (
        lambda r, c: link(r, "binder/data_requirement.json", "/dev/urandom"),
        "binder/data_requirement.json", "outside the repository",
    ),
    # issue 11 item 4: a link in content/ published /etc/shadow
    "content/_static/x.txt -> canary": (
        lambda r, c: link(r, "content/_static/x.txt", c),
        "content/_static/x.txt", "outside the repository",
    ),
    "a FIFO in content/": (
        lambda r, c: os.mkfifo(r / "content" / "pipe.md"), "content/pipe.md", "named pipe (FIFO)"),
    "a FIFO as paper.md": (
        lambda r, c: ((r / "paper.md").unlink(), os.mkfifo(r / "paper.md")),
        "paper.md", "named pipe (FIFO)",
    ),
    "a 50 MB paper.md": (
        lambda r, c: os.truncate(r / "paper.md", 50 << 20),
        "paper.md", "paper.md is 50.0 MB; the check reads files up to 5.0 MB",
    ),
    # issue 11: ../../../../etc/passwd "existed" because the host has it
    "ToC ../../../../etc/passwd": (
        lambda r, c: toc(r, "../../../../etc/passwd"),
        "content/_toc.yml", "'../../../../etc/passwd' in the table of contents points outside content/",
    ),
    "ToC /etc/passwd": (
        lambda r, c: toc(r, "/etc/passwd"), "content/_toc.yml", "is an absolute path"),
    "ToC entry that is a link out": (
        lambda r, c: (link(r, "content/evil.md", c), toc(r, "evil")),
        "content/_toc.yml", "'evil' in the table of contents leads outside the repository",
    ),
    "ToC: a billion laughs": (
        lambda r, c: (r / "content/_toc.yml").write_text(BOMB + "root: intro\n"),
        "content/_toc.yml", "expands to more than",
    ),
    "ToC: a recursive alias": (
        lambda r, c: (r / "content/_toc.yml").write_text("root: intro\nparts: &p [*p]\n"),
        "content/_toc.yml", "expands to more than",
    ),
    "data_requirement.json nested 10^5 deep": (
        lambda r, c: (r / "binder/data_requirement.json").write_text("[" * 100_000),
        "binder/data_requirement.json", "nested too deeply",
    ),
}  # fmt: skip


@pytest.mark.parametrize("mode", ["cli", "service"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_a_hostile_repository_gets_a_finding_and_nothing_outside_it_is_read(
    preprint, canary, mode, attack
):
    setup, file, message = ATTACKS[attack]
    setup(preprint, canary)
    started = time.monotonic()
    findings = run_check(mode, preprint)
    assert time.monotonic() - started < 10
    found = [f for f in findings if message in f.message]
    assert found, [str(f) for f in findings]
    assert found[0].level == "error" and found[0].fix
    assert found[0].file == file or file is None
    assert canary.read_text().strip() not in json.dumps([asdict(f) for f in findings])


def test_links_inside_the_repository_are_fine(preprint):
    link(preprint, "content/loop", ".")  # a walk that followed it would never end
    link(preprint, "content/copy.ipynb", "analysis.ipynb")
    link(preprint, "content/more", "../binder")
    assert check(preprint) == []


def test_a_repository_with_too_many_files_is_looked_at_up_to_a_bound(preprint):
    many = preprint / "content" / "many"
    many.mkdir()
    for i in range(300):
        (many / f"{i}.txt").touch()
    found = check(preprint, max_entries=100)
    assert [f.message for f in found] == [
        "The repository has more than 100 files and folders; the check looked at the first 100."
    ]
    assert check(preprint) == []


def test_a_notebook_over_the_cap_is_a_warning_not_a_failure(preprint):
    nb = preprint / "content" / "analysis.ipynb"
    nb.write_text(nb.read_text() + " " * (300 << 10))
    (warning,) = check(preprint, max_file_size=50 << 10)
    assert warning.level == "warning" and warning.file == "content/analysis.ipynb"
    assert "the check reads files up to 250.0 KB, so it was not checked" in warning.message


def test_the_service_checks_in_a_child_and_reports_the_title(preprint):
    result = asyncio.run(service_runner().run(preprint, "https://github.com/someone/else"))
    assert result.title == "A living preprint: sine waves"
    assert [f.message for f in result.findings] == [
        "repository.url https://github.com/neurolibre/sample-preprint is not the submitted "
        "repository https://github.com/someone/else."
    ]


def test_the_checkout_is_not_on_the_childs_import_path(preprint):
    # `python -m` in the checkout would import the repository's yaml.py instead of PyYAML
    (preprint / "yaml.py").write_text("raise SystemExit('the repository ran code in the check')\n")
    assert asyncio.run(service_runner().run(preprint)).findings == []


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_check_past_its_time_limit_is_stopped_with_a_finding_and_leaves_no_process(preprint):
    started = time.monotonic()
    result = asyncio.run(service_runner(time_limit=0.001).run(preprint))
    assert time.monotonic() - started < 5
    (finding,) = result.findings
    assert finding.level == "error"
    assert (
        finding.message
        == "The layout check did not finish within 0.001 seconds, so it was stopped."
    )
    assert "data_requirement.json" in finding.fix
    deadline = time.monotonic() + 5
    while _processes_mentioning(str(preprint)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(str(preprint)) == []


def test_a_child_that_prints_too_much_is_stopped(preprint, caplog):
    result = asyncio.run(service_runner(output_limit=20).run(preprint))
    (finding,) = result.findings
    assert finding.message.startswith("The layout check stopped unexpectedly")
    assert "more than 20 bytes of output" in caplog.text


def test_neurolibre_build_stops_a_hostile_working_tree_at_the_check(preprint, canary, tmp_path):
    def build() -> subprocess.CompletedProcess:
        neurolibre = Path(sys.executable).parent / "neurolibre"
        return subprocess.run([neurolibre, "build", preprint, "--data-dir", tmp_path / "cache"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    link(preprint, "paper.md", canary)
    link(preprint, "content/zero.md", "/dev/zero")
    run = build()
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED at the check stage" in run.stderr
    assert "paper.md is a symbolic link to" in run.stdout
    assert "content/zero.md is a symbolic link to '/dev/zero'" in run.stdout
    assert canary.read_text().strip() not in run.stdout + run.stderr
    # a FIFO is not even copied (a read of it never ends): the author is told which file
    os.mkfifo(preprint / "content" / "pipe.md")
    run = build()
    assert run.returncode == 1
    assert "The working tree could not be copied: content/pipe.md" in run.stderr
    assert "Internal error" not in run.stdout + run.stderr


# -- what real NeuroLibre authors write (issue 12) ---------------------------------------------

REAL = Path(os.environ.get("NEUROLIBRE_REAL_PREPRINTS",
                           Path(__file__).resolve().parents[2] / "shared" / "real-preprints"))  # fmt: skip


def real_preprint(tmp_path: Path, name: str) -> Path:
    """A copy of one of NeuroLibre's official author templates, as authors write them."""
    if not (REAL / name).is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{REAL / name} is missing")
        pytest.skip(f"{REAL / name} is not on this machine")
    repo = tmp_path / name
    shutil.copytree(REAL / name, repo)
    return repo


def unpinned(*names: str) -> list[tuple[str, str, str]]:
    return [("warning", "binder/requirements.txt", f"{n!r} is not pinned: a later release may "
             "change your results or break the build.") for n in names]  # fmt: skip


TEMPLATES = {
    # Jupyter Book 1: citation syntax examples in code spans are not citations (4 errors before)
    "template": [
        *unpinned("repo2data>=2.6.0"),
        # true, and the handbook asks for the same title and authors in both
        ("warning", "content/_config.yml", "title 'NeuroLibre preprint template' differs from "
         "paper.md's 'NeuroLibre preprint (PDF) template'."),
        ("warning", "content/_config.yml", "author does not list Agah Karakuzu, Nikola Stikov "
         "(from paper.md)."),
    ],
    # MyST: myst.yml at the root, metadata in its project:, no book tool in the runtime (5 false
    # errors and a false warning before)
    # (and its first figure downloads its data itself: books run without network)
    "mystical-article": [
        *unpinned("plotly", "networkx", "pandas"),
        ("warning", "content/figure_1.ipynb", "Code cell 1 reads https://raw.githubusercontent"
         ".com/plotly/datasets/master/hobbs-pearson-trials.csv from the internet, but NeuroLibre "
         "re-executes notebooks without network access, so this cell will fail in the book."),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", TEMPLATES)
def test_neurolibres_official_templates_check_with_no_errors(tmp_path, name):
    found = check(real_preprint(tmp_path, name))
    assert [(f.level, f.file, f.message) for f in found] == TEMPLATES[name], [str(f) for f in found]
    assert all(f.fix for f in found)


def test_a_myst_preprints_title_comes_from_myst_yml(tmp_path):
    repo = real_preprint(tmp_path, "mystical-article")
    result = asyncio.run(service_runner().run(repo))
    assert result.title == "Demystifying MyST: The most powerful preprint authoring tool"
    assert [f.level for f in result.findings] == ["warning"] * 4
    # myst.yml in content/ is the other place the builder looks: not a warning either
    text = (repo / "myst.yml").read_text().replace("- paper.bib", "- ../paper.bib")
    (repo / "content" / "myst.yml").write_text(text)
    (repo / "myst.yml").unlink()
    (repo / "_toc.yml").unlink()  # MyST then lists the pages of content/ itself
    assert [(f.level, f.file, f.message) for f in check(repo)] == TEMPLATES["mystical-article"]


def test_a_myst_preprint_without_a_title_or_authors_is_told_where_to_add_them(tmp_path):
    repo = real_preprint(tmp_path, "mystical-article")
    edit(repo, "myst.yml", "  title: 'Demystifying MyST", "  subtitle2: 'Demystifying MyST")
    edit(repo, "myst.yml", "  authors:", "  writers:")
    found = errors(repo)
    assert [(f.file, f.message, f.fix) for f in found] == [
        ("myst.yml", "The preprint has no title: neither myst.yml's project: nor paper.md's "
         "front matter gives one.", "Add title: 'Your title' under project: in myst.yml."),
        ("myst.yml", "The preprint has no authors: neither myst.yml's project: nor paper.md's "
         "front matter gives one.", "Add authors: [{name: Your Name}] (one name per author) "
         "under project: in myst.yml."),
    ]  # fmt: skip
    # paper.md's front matter counts too (it is the page's metadata, over the project's)
    edit(
        repo,
        "paper.md",
        "numbering:",
        "title: From paper.md\nauthors:\n  - name: A. Author\nnumbering:",
    )
    assert errors(repo) == []


def test_citations_count_only_in_prose(preprint):
    (preprint / "paper.md").write_text((preprint / "paper.md").read_text() + """
Write `[@author:2021]` for "(Author et al., 2021)"; `@author:2021` inline.

```
[@fenced:2020]
```

    [@indented:2019]

<!-- [@commented:2018] -->
Mail info@example.org, escaped \\@escaped, a link [see @linked](https://example.org).
A real one [@missing:2021; @harris2020array] and a bare
@alsomissing here.
""")  # fmt: skip
    found = errors(preprint)
    lines = (preprint / "paper.md").read_text().splitlines()
    assert [(f.line, f.message) for f in found] == [
        (lines.index("A real one [@missing:2021; @harris2020array] and a bare") + 1,
         "Citation @missing:2021 is not in paper.bib."),
        (lines.index("@alsomissing here.") + 1, "Citation @alsomissing is not in paper.bib."),
    ]  # fmt: skip
    assert found[0].fix == "Add an entry with key missing:2021 to paper.bib, or correct the key."


def notebook(cells: list[tuple[str, str]]) -> str:
    return json.dumps({"cells": [{"cell_type": kind, "metadata": {}, "source": source,
                                  **({"outputs": [], "execution_count": None} if kind == "code" else {})}
                                 for kind, source in cells],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})  # fmt: skip


def test_citations_in_notebooks_markdown_cells_are_checked_too(preprint):
    (preprint / "content" / "more.ipynb").write_text(notebook([
        ("markdown", "As {cite:p}`harris2020array, nobody2020` showed; syntax: `{cite}`x``, "
                     "`[@author:2021]`."),
        ("code", "print('[@notacitation]')"),
        ("markdown", "Also [@harris2020array] and [@ghost:2019]; @handle is plain text in "
                     "Jupyter Book 1."),
    ]))  # fmt: skip
    found = errors(preprint)
    assert [(f.file, f.line, f.message) for f in found] == [
        ("content/more.ipynb", None, "Markdown cell 1: citation @nobody2020 is not in paper.bib."),
        ("content/more.ipynb", None, "Markdown cell 3: citation @ghost:2019 is not in paper.bib."),
    ]  # fmt: skip


def test_bibtex_is_parsed_not_pattern_matched(preprint):
    (preprint / "paper.bib").write_text("""\
@string{nat = "Nature"}
@comment{ @article{only_in_a_comment, title={x}} }
@Article{harris2020array,
  title = {Array programming with {NumPy {and {nested}} braces}},
  journal = nat # " 585",
}
@book(parens:2020, title="Parenthesised")
@article{broken, title={never closed
@misc{after, title={x}}
""")  # fmt: skip
    edit(
        preprint,
        "paper.md",
        "[@harris2020array]",
        "[@harris2020array; @parens:2020; @after; @only_in_a_comment]",
    )
    found = errors(preprint)
    assert [(f.file, f.line, f.message) for f in found] == [
        ("paper.bib", 8, "The entry here is not valid BibTeX: Unexpected block start: `@misc`. "
         "Was still looking for field-value closing `}`"),
        ("paper.md", 19, "Citation @only_in_a_comment is not in paper.bib."),
    ]  # fmt: skip
    assert "@only_in_a_comment" in (preprint / "paper.md").read_text().splitlines()[19 - 1]
    # the parser's own log never reaches the author's terminal: the findings say it
    run = subprocess.run([sys.executable, "-m", "neurolibre_service.cli", "check", str(preprint)],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1 and run.stderr == ""


def test_a_missing_bibliography_matters_only_when_something_is_cited(preprint):
    (preprint / "paper.bib").unlink()
    edit(preprint, "paper.md", " [@harris2020array]", "")
    assert [(f.level, f.message, f.fix) for f in check(preprint)] == [
        ("warning", "The bibliography paper.bib is missing (paper.md's front matter names it).",
         "Add paper.bib, or remove it from paper.md's front matter."),
    ]  # fmt: skip
    edit(preprint, "paper.md", "bibliography: paper.bib\n", "")
    assert check(preprint) == []


def test_requirement_lines_are_read_as_the_builder_reads_them(preprint):
    from neurolibre_service.environments.requirements import parse_requirements

    text = "numpy==2.4.6\nmatplotlib==3.10.8\njupyter-book<2.0.0\n./mylib\n"
    (preprint / "binder" / "requirements.txt").write_text(text)
    (refused,) = parse_requirements({"requirements.txt": text.encode()}, prefix="binder/").errors
    found = check(preprint)
    assert [(f.level, f.line, f.message, f.fix) for f in found] == [
        # the local builder's refusal, in its own words
        ("error", 4, f"'./mylib' {refused.reason}.", refused.fix[0].upper() + refused.fix[1:] + "."),
        # a pin for a line with a specifier is well formed (not jupyter-book<2.0.0==X.Y.Z)
        ("warning", 3, "'jupyter-book<2.0.0' is not pinned: a later release may change your "
         "results or break the build.", "Pin the version you tested with, e.g. "
         "jupyter-book==X.Y.Z (`pip show jupyter-book` prints it)."),
    ]  # fmt: skip
    # repo2docker (docker, binderhub) reads the file itself: the local builder's refusals stay out
    assert [f.level for f in check(preprint, local_builder=False)] == ["warning"]
    # Jupyter Book 2 builds MyST projects, not content/_toc.yml
    (preprint / "binder" / "requirements.txt").write_text("numpy==2.4.6\njupyter-book>=2\n")
    (found,) = errors(preprint)
    assert found.message.startswith("'jupyter-book>=2' asks for Jupyter Book 2 or later")
    assert (found.line, found.fix) == (2, "Pin Jupyter Book 1: jupyter-book==1.0.4.post1.")


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ("Python-3.8\n", []),  # NeuroLibre's own template
        ("python-3.10.12", []),
        ("PYTHON-3.12", []),
        ("r-4.1-2022-01-01", []),  # the builder says which backend builds R
        ("python3.8\n", [("error", "binder/runtime.txt", 1, "runtime.txt says 'python3.8', which "
                          "is not a Python version the builders read (python-X.Y).",
                          "Write python-3.8 as the file's only line, or delete the file to use "
                          "the service's default Python.")]),
    ],
)  # fmt: skip
def test_runtime_txt_is_read_case_insensitively(preprint, runtime, expected):
    (preprint / "binder" / "runtime.txt").write_text(runtime)
    assert [(f.level, f.file, f.line, f.message, f.fix) for f in check(preprint)] == expected


@pytest.mark.parametrize(
    ("neurolibre", "toc"),
    [
        # NeuroLibre's traditional layout: the single page is the whole book, no ToC needed
        ("book_layout: traditional\nsingle_page: analysis.ipynb\n", None),
        # a ToC root NeuroLibre resolved through single_page
        ("single_page: analysis.ipynb\n", "format: jb-article\n"),
        ("book_layout: traditional\nsingle_page: analysis.ipynb\n", "format: jb-article\nroot: index\n"),
    ],
)  # fmt: skip
def test_content_neurolibre_yml_is_honoured(preprint, neurolibre, toc):
    (preprint / "content" / "_toc.yml").unlink()
    if toc is not None:
        (preprint / "content" / "_toc.yml").write_text(toc)
    (preprint / "content" / "_neurolibre.yml").write_text(neurolibre)
    assert check(preprint) == []
    (preprint / "content" / "_neurolibre.yml").unlink()
    assert errors(preprint)  # without it, each of these is an error


def test_a_single_page_that_does_not_exist_is_an_error(preprint):
    (preprint / "content" / "_neurolibre.yml").write_text(
        "book_layout: traditional\nsingle_page: index.ipynb\n"
    )
    (found,) = errors(preprint)
    assert (found.file, found.message) == ("content/_neurolibre.yml",
                                           "single_page 'index.ipynb' is not a file in content/.")  # fmt: skip


def test_a_jupyter_book_at_the_repository_root_is_found_there(preprint):
    for name in ("_toc.yml", "_config.yml", "intro.md", "analysis.ipynb"):
        (preprint / "content" / name).rename(preprint / name)
    (preprint / "content").rmdir()
    assert errors(preprint) == []  # it builds there (test_books: a book at the root)
    (found,) = [f for f in check(preprint) if "repository root" in f.message]
    assert found.level == "warning"
    assert found.message == ("The Jupyter Book is at the repository root (_config.yml, _toc.yml): "
                             "it builds there, but NeuroLibre's handbook keeps the book in content/.")  # fmt: skip
    assert found.fix.startswith("Move _config.yml, _toc.yml and the pages they list into content/")


def test_an_old_list_style_toc_is_an_error_with_the_fix(preprint):
    (preprint / "content" / "_toc.yml").write_text("- file: intro\n- file: analysis\n")
    (found,) = errors(preprint)
    assert found.message.startswith("content/_toc.yml is in the old list format")
    assert "jupyter-book toc migrate content/_toc.yml -o content/_toc.yml" in found.fix


def test_yaml_errors_point_at_the_files_own_lines(preprint):
    edit(preprint, "paper.md", "title: 'A living preprint: sine waves'", 'title: "unterminated')
    (found,) = errors(preprint)
    lines = (preprint / "paper.md").read_text().splitlines()
    assert lines[found.line - 1] == 'title: "unterminated'
    assert f"while scanning a quoted scalar (line {found.line})" in found.message
    (preprint / "content" / "_toc.yml").write_text(
        "root: intro\nchapters:\n  - file: a\n   - file: b\n"
    )
    found = [f for f in errors(preprint) if f.file == "content/_toc.yml"]
    assert [f.line for f in found] == [4] and "(line 4, column 4)" in found[0].message


def test_a_myst_page_with_code_cells_needs_a_jupytext_header_in_jupyter_book_1(preprint):
    page = preprint / "content" / "intro.md"
    page.write_text("# Intro\n\n```{code-cell} python\nprint(1)\n```\n")
    assert [(f.level, f.file, f.message) for f in check(preprint)] == [
        ("warning", "content/intro.md", "content/intro.md has {code-cell} blocks but no Jupytext "
         "header, so Jupyter Book 1 shows them as code and never runs them."),
    ]  # fmt: skip
    page.write_text("---\njupytext: {text_representation: {format_name: myst}}\nkernelspec: "
                    "{name: python3, display_name: Python 3}\n---\n" + page.read_text())  # fmt: skip
    assert check(preprint) == []
    # a code cell shown as an example inside a longer fence is not a code cell
    page.write_text("# Intro\n\n````md\n```{code-cell} python\nprint(1)\n```\n````\n")
    assert check(preprint) == []


def test_markdown_past_the_parsing_budget_is_not_parsed(preprint):
    # pathological Markdown parses at ~30 us/char: 2 MB of '[' took markdown-it-py ~40 s
    (preprint / "paper.md").write_text((preprint / "paper.md").read_text() + "[" * (2 << 20))
    started = time.monotonic()
    found = check(preprint)
    assert time.monotonic() - started < 10
    assert [(f.level, f.message) for f in found] == [
        ("warning", "Citations were not checked in paper.md: the check reads at most 1.0 MB of "
         "Markdown."),
    ]  # fmt: skip


def test_a_bibliography_over_its_cap_is_not_parsed(preprint):
    bib = preprint / "paper.bib"
    bib.write_text(bib.read_text() + "@article{x,\n" * (300 << 10))  # ~3.5 MB of broken entries
    started = time.monotonic()
    found = check(preprint)
    assert time.monotonic() - started < 10
    assert [(f.level, f.file) for f in found] == [("warning", "paper.bib")]
    assert "the check reads files up to 2.0 MB, so it was not checked" in found[0].message


def test_myst_doi_citations_and_remote_bibliographies_are_not_looked_up_in_paper_bib(tmp_path):
    repo = real_preprint(tmp_path, "mystical-article")
    edit(
        repo,
        "paper.md",
        "citations @Boudreau2023.",
        "citations @Boudreau2023 and @10.55458/neurolibre.00014.",
    )
    edit(
        repo,
        "myst.yml",
        "    - paper.bib\n",
        "    - paper.bib\n    - https://example.org/more.bib\n",
    )
    assert errors(repo) == []
    edit(repo, "paper.md", "and @10.55458", "and @Nobody2024 @10.55458")
    assert [f.message for f in errors(repo)] == ["Citation @Nobody2024 is not in paper.bib."]


def test_a_root_config_yml_alone_is_not_taken_for_a_jupyter_book(preprint):
    # GitHub Pages (Jekyll) keeps a _config.yml at the root: that is not a book there
    shutil.rmtree(preprint / "content")
    (preprint / "_config.yml").write_text("theme: minima\n")
    assert [f.message for f in errors(preprint)] == [
        "No book: content/_toc.yml and content/_config.yml (Jupyter Book) or a myst.yml (MyST) "
        "are needed.",
        "No executable content (a notebook or a MyST code cell).",
    ]


def test_build_myst_with_a_myst_yml_makes_the_myst_project_the_book(preprint):
    """content/_neurolibre.yml's `build_myst: true` beside content/'s Jupyter Book and a
    myst.yml at the root (a published preprint's layout): NeuroLibre built the MyST project,
    and so do the check and the builder (booklayout.find_book, one function for both)."""
    (preprint / "content" / "_neurolibre.yml").write_text("build_myst: true\n")
    (found,) = check(preprint)  # no myst.yml: the Jupyter Book is built, the author is told
    assert found.message.startswith("build_myst asks NeuroLibre to build this book with MyST")
    (preprint / "myst.yml").write_text(
        "version: 1\nproject:\n  title: 'A living preprint: sine waves'\n  toc:\n"
        "    - file: paper.md\n    - file: content/analysis.ipynb\n"
    )
    assert check(preprint) == []
