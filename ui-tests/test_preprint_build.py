"""An author checks and builds a preprint from the test form, follows its stages live, and opens
the preview of the rendered book, in Chromium."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.dataserver import DataServer, tar_gz_bytes
from tests.support.hub import PASSWORD, SERVICE
from tests.support.preprints import notebook, preprint

pytestmark = pytest.mark.timeout(900)
BUILD_TIMEOUT = 600_000  # ms: the first build of a session installs Jupyter Book and friends
STAGES = ("check", "environment", "data", "book")

# the value is only in the rendered book if the notebook ran: the source does not contain it
ANALYSIS = notebook(
    "# md:# Analysis\n\nA value computed when the book is built.",
    "squares = sum(i * i for i in range(12))\nprint('computed value:', squares)",
)
COMPUTED = "computed value: 506"


def log_in(hub, page, user: str, path: str) -> None:
    """Log in through the hub's form; OAuth brings the browser back to the service's page."""
    page.goto(f"{hub.url}/hub/login?next={SERVICE}{path}")
    page.locator("#username_input").fill(user)
    page.locator("#password_input").fill(PASSWORD)
    page.locator("#login_submit").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(SERVICE)}{re.escape(path)}$"))
    expect(page.locator("header .who")).to_contain_text(user)


def open_form(hub, page, repo, email: str = ""):
    """Log in as alice and fill the test form."""
    log_in(hub, page, "alice", "preprints/new")
    expect(page.get_by_role("heading", name="Build a preprint")).to_be_visible()
    expect(page.locator("header nav")).to_contain_text("Preprints")
    form = page.locator("form#preprint-form")
    form.get_by_label("Repository URL").fill(str(repo))
    form.get_by_label("Branch, tag or commit").fill("main")
    form.get_by_label("Email").fill(email)
    return form


def test_check_build_and_preview_a_preprint(hub, new_repo, page, tmp_path):
    repo, sha = new_repo(preprint({"analysis": ANALYSIS}))
    form = open_form(hub, page, repo, "ada@example.org")

    # the layout check: a summary, and no errors
    form.get_by_role("button", name="Check layout").click()
    expect(page.locator("#check-results")).to_be_visible(timeout=60_000)
    expect(page.locator("#check-summary")).to_have_text(re.compile(r"^No (problems found|errors)"))
    expect(page.locator("#check-commit")).to_contain_text(sha[:10])
    expect(page.locator("#findings li.finding-error")).to_have_count(0)
    expect(page.locator("#form-error")).to_be_empty()

    # the build: the browser lands on the preprint's page
    form.get_by_role("button", name="Build preprint").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(SERVICE)}preprints/\d+$"))
    preprint_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#build-status")).to_have_text(re.compile("queued|running|succeeded"))
    expect(page.locator("#pipeline li")).to_have_count(4)
    assert page.locator("#pipeline li .step-name").all_text_contents() == list(STAGES)

    # each stage's panel follows its own log and ends; the environment's lines come while the
    # build still runs (the book has not been built yet)
    env_log = page.locator("#log-environment pre.log")
    expect(env_log).to_contain_text("Runtime key", timeout=BUILD_TIMEOUT)
    seen = page.evaluate(
        """() => ({
            main: document.getElementById('log-main').dataset.state,
            book: document.getElementById('log-book').dataset.state,
            status: document.getElementById('build-status').textContent,
        })"""
    )
    assert seen["main"] == "live" and seen["book"] != "ended", seen
    assert seen["status"] in ("queued", "running"), seen
    for stage, text in [("environment", "Runtime key"), ("data", "needs no data"),
                        ("book", "Building the book"), ("main", "The preview is at")]:  # fmt: skip
        panel = page.locator(f"#log-{stage}")
        expect(panel).to_have_attribute("data-end", "succeeded", timeout=BUILD_TIMEOUT)
        expect(panel.locator(".log-status")).to_have_text("succeeded")
        expect(panel.locator("pre.log")).to_contain_text(text)

    # the page updates itself when the build ends: every stage succeeded, no failure box
    expect(page.locator("#build-status")).to_have_text("succeeded")
    for stage in STAGES:
        expect(page.locator(f'#pipeline li[data-stage="{stage}"]')).to_have_attribute(
            "data-state", "succeeded"
        )
    expect(page.locator("#failure")).to_be_hidden()
    expect(page.locator("#cancel-button")).to_be_hidden()
    expect(page.locator("#fact-book")).to_contain_text("1 notebook(s) executed")
    # the check read the title from paper.md; the email went to the hub's mail sink
    expect(page.locator("#preprint-title")).to_have_text("A test preprint")
    expect(page.locator("#fact-email")).to_have_text("sent to ada@example.org", timeout=20_000)
    expect(page.locator("#findings-summary")).to_have_text(re.compile("^No (problems|errors)"))
    expect(page.locator("#build-preview")).to_be_visible()
    preview = page.locator("#preview-link")
    expect(preview).to_be_visible()
    page.screenshot(path=tmp_path / "preprint.png", full_page=True)
    # what the service's own pages did wrong (the book's scripts run sandboxed, and may complain)
    problems = list(page.problems)

    # the preview: the rendered book, with the notebook's output, its styles and scripts
    book_files: list[tuple[int, str]] = []
    page.on(
        "response", lambda r: book_files.append((r.status, r.url)) if "/preview/" in r.url else None
    )
    preview.click()
    expect(page).to_have_url(re.compile(rf"{re.escape(SERVICE)}preprints/\d+/preview/"))
    expect(page.locator("body")).to_contain_text("Introduction")
    page.get_by_role("link", name="Analysis").first.click()
    expect(page.locator("body")).to_contain_text(COMPUTED)
    page.screenshot(path=tmp_path / "preview.png", full_page=True)
    assert any("/_static/" in url for _, url in book_files), book_files
    # a stylesheet or script the book cannot load (refused, or sent to the login page) shows an
    # unstyled page without its scripts; the only redirect is the reader's URL being signed
    assert "/preview/~" in page.url
    failed = [(st, url) for st, url in book_files if st not in (200, 304)]
    assert all(st == 302 and "/preview/~" not in url for st, url in failed), failed
    assert len(failed) <= 2, failed

    # the gallery lists it with its status and preview
    page.goto(f"{hub.url}{SERVICE}preprints")
    row = page.locator(f'#preprints tbody tr[data-id="{preprint_id}"]')
    expect(row.locator("td.title")).to_have_text("A test preprint")
    expect(row.locator("td.status .badge")).to_have_text("succeeded")
    expect(row.locator("td.preview a")).to_have_text("Preview")

    assert problems == []


def test_a_layout_error_fails_the_check_stage_and_says_why(hub, new_repo, page, tmp_path):
    files = preprint({"analysis": ANALYSIS})
    del files["paper.bib"]
    repo, _ = new_repo(files)
    form = open_form(hub, page, repo)

    # the check lists the error first, with where it is and how to fix it
    form.get_by_role("button", name="Check layout").click()
    expect(page.locator("#check-summary")).to_have_text(re.compile(r"^1 error\(s\) to fix"))
    first = page.locator("#findings li").first
    expect(first).to_have_class(re.compile(r"\bfinding-error\b"))
    expect(first.locator(".where")).to_have_text("paper.bib")
    expect(first.locator(".fix")).to_contain_text("Add paper.bib")
    page.screenshot(path=tmp_path / "check.png", full_page=True)

    # building anyway: the build stops at the check stage, before installing anything
    form.get_by_role("button", name="Build preprint").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(SERVICE)}preprints/\d+$"))
    expect(page.locator("#build-status")).to_have_text("failed", timeout=120_000)
    failure = page.locator("#failure")
    expect(failure).to_be_visible()
    expect(failure).to_contain_text(re.compile(r"Failed at the check stage: .*paper\.bib"))
    expect(page.locator('#pipeline li[data-stage="check"]')).to_have_attribute(
        "data-state", "failed"
    )
    for stage in ("environment", "data", "book"):
        expect(page.locator(f'#pipeline li[data-stage="{stage}"]')).to_have_attribute(
            "data-state", "skipped"
        )
        panel = page.locator(f"#log-{stage}")
        expect(panel).to_have_attribute("data-end", "skipped")
        expect(panel.locator("pre.log")).to_have_attribute(
            "data-placeholder", "This stage did not run."
        )
    expect(page.locator("#log-main")).to_have_attribute("data-end", "failed")
    expect(page.locator("#log-main pre.log")).to_contain_text(
        "The bibliography paper.bib is missing"
    )
    expect(page.locator("#build-findings li.finding-error")).to_have_count(1)
    expect(page.locator("#cancel-button")).to_be_hidden()
    expect(page.locator("#rebuild-button")).to_be_enabled()
    expect(page.locator("#preview-link")).to_be_hidden()
    page.screenshot(path=tmp_path / "failed.png", full_page=True)
    assert page.problems == []


def test_an_admin_sees_datasets_and_deletes_one_no_longer_used(hub, new_repo, page, tmp_path):
    name = f"uidata{time.time_ns() % 10**8}"
    server = DataServer()
    try:
        url = server.add(f"/{name}.tar.gz", tar_gz_bytes({"values.txt": b"1\n2\n3\n"}))
        nb = notebook(
            "from pathlib import Path\n"
            f"print('values', len(Path('../data/{name}/values.txt').read_text().split()))"
        )
        repo, _ = new_repo(
            preprint({"analysis": nb}, data={"src": url, "dst": "./data", "projectName": name})
        )
        # alice's build, through the API (the sync browser API owns this thread's event loop)
        headers = {"Authorization": f"token {hub.api_token('alice')}"}
        with httpx.Client(base_url=hub.api, timeout=60, headers=headers) as alice:
            p = alice.post("preprints", json={"repository": str(repo), "ref": "main"}).json()
            b = p["latest_build"]
            deadline = time.monotonic() + 600
            while b["status"] in ("queued", "running") and time.monotonic() < deadline:
                time.sleep(0.5)
                b = alice.get(f"builds/{b['id']}").json()
            assert b["status"] == "succeeded", b["error"]
            key = b["datasets"][0]["key"]

            # the administrator's gallery shows every author's preprints; the nav has Datasets
            log_in(hub, page, "admin", "preprints")
            row = page.locator(f'#preprints tbody tr[data-id="{p["id"]}"]')
            expect(row).to_contain_text("alice")
            expect(row.locator("td.status .badge")).to_have_text("succeeded")
            page.screenshot(path=tmp_path / "gallery.png", full_page=True)
            page.locator("header nav").get_by_role("link", name="Datasets").click()
            expect(page.get_by_role("heading", name="Datasets", exact=True)).to_be_visible()
            ds = page.locator(f'#datasets tbody tr[data-key="{key}"]')
            expect(ds.locator("td.name")).to_contain_text(name)
            expect(ds.locator("td.source")).to_have_text(url)
            expect(ds.locator("td.status")).to_contain_text("ready")
            expect(ds.locator("td.size")).to_have_text(re.compile(r"^\d+(\.\d)? (bytes|KB)$"))
            # the preprint's latest build uses it: it cannot be deleted
            expect(ds.locator("td.in-use")).to_have_text("yes")
            expect(ds.get_by_role("button", name="Delete")).to_have_count(0)
            page.screenshot(path=tmp_path / "datasets.png", full_page=True)

            # once the preprint is gone, the dataset is unused and can go
            assert alice.delete(f"preprints/{p['id']}").status_code == 204
        page.reload()
        expect(ds.locator("td.in-use")).to_have_text("no")
        page.once("dialog", lambda d: d.accept())
        ds.get_by_role("button", name="Delete").click()
        expect(ds).to_have_count(0)
        expect(page.locator("#datasets-error")).to_be_empty()
        page.reload()
        expect(page.locator(f'#datasets tbody tr[data-key="{key}"]')).to_have_count(0)
        assert page.problems == []
    finally:
        server.close()


def test_cancel_a_running_build(hub, pkg_index, new_repo, page, tmp_path):
    # a package whose build takes long enough to be cancelled while the environment installs
    slow = pkg_index.add_sdist(pkg_index.sdists, f"nl-ui-slow-book-{time.time_ns()}", "1.0",
                               "import time; time.sleep(120)")  # fmt: skip
    files = preprint({"analysis": ANALYSIS})
    files["binder/requirements.txt"] += f"{slow}\n"
    repo, _ = new_repo(files)
    form = open_form(hub, page, repo)
    form.get_by_role("button", name="Build preprint").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(SERVICE)}preprints/\d+$"))

    cancel = page.locator("#cancel-button")
    expect(cancel).to_be_visible()
    expect(page.locator("#rebuild-button")).to_be_disabled()
    expect(page.locator("#log-environment pre.log")).to_contain_text(
        "==> installing packages", timeout=BUILD_TIMEOUT
    )
    cancel.click()

    expect(page.locator("#build-status")).to_have_text("cancelled", timeout=60_000)
    expect(page.locator("#failure")).to_contain_text("Cancelled at the environment stage")
    env_step = page.locator('#pipeline li[data-stage="environment"]')
    expect(env_step).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#log-environment")).to_have_attribute("data-end", "cancelled")
    for stage in ("data", "book"):
        expect(page.locator(f"#log-{stage}")).to_have_attribute("data-end", "skipped")
    expect(cancel).to_be_hidden()
    expect(page.locator("#rebuild-button")).to_be_enabled()
    page.screenshot(path=tmp_path / "cancelled.png", full_page=True)
    assert page.problems == []
