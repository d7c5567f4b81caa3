"""An author adds an environment on the environments page and watches it build, in Chromium."""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from tests.support.hub import PASSWORD, SERVICE

BUILD_TIMEOUT = 240_000  # ms: the first build of a session installs JupyterLab and friends


def test_add_an_environment_and_follow_its_build_live(hub, pkg_index, new_repo, page, tmp_path):
    # a package whose build takes a few seconds, so the log is seen while the build runs
    req = pkg_index.add_sdist(pkg_index.sdists, f"nl-ui-slow-{time.time_ns()}", "1.0",
                              "import time; time.sleep(5)")  # fmt: skip
    repo, sha = new_repo({"binder/requirements.txt": f"{req}\n", "content/intro.md": "# Hi\n"})
    name = f"ui-live-{time.time_ns() % 10**8}"

    # log in through the hub's form; OAuth brings the browser back to the service
    page.goto(f"{hub.url}/hub/login?next={SERVICE}environments")
    page.locator("#username_input").fill("alice")
    page.locator("#password_input").fill(PASSWORD)
    page.locator("#login_submit").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(SERVICE)}environments$"))
    expect(page.get_by_role("heading", name="Environments", exact=True)).to_be_visible()
    expect(page.locator("header .who")).to_have_text("alice")

    form = page.locator("form#add-env")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Repository URL").fill(str(repo))
    form.get_by_label("Branch, tag or commit").fill("main")
    form.get_by_role("button", name="Add and build").click()

    # the page reloads with the new row, and follows its build in the log panel
    row = page.locator(f'#environments tbody tr:has(td.name:text-is("{name}"))')
    badge = row.locator("td.status .badge")
    log = page.locator("#log")
    log_status = page.locator("#log-status")
    expect(row).to_have_count(1)
    expect(page.locator("#log-panel")).to_be_visible()
    expect(page.locator("#log-title")).to_have_text(name)
    expect(page.locator("#form-error")).to_be_empty()

    # the first lines (sandbox, resolving) come at once: a dead stream fails here, not later
    expect(log).not_to_be_empty(timeout=60_000)
    expect(log).to_contain_text("==> installing packages", timeout=BUILD_TIMEOUT)
    # one look at the page at that instant: the line arrived while the build still runs
    seen = page.evaluate(
        """(name) => {
            const row = [...document.querySelectorAll('#environments tbody tr')]
                .find((r) => r.querySelector('td.name').textContent === name);
            return {
                log: document.getElementById('log').textContent,
                row: row.querySelector('td.status .badge').textContent,
                panel: document.getElementById('log-status').textContent,
            };
        }""",
        name,
    )
    assert "==> installing packages" in seen["log"]
    assert seen["row"] in ("queued", "building"), seen
    assert seen["panel"] != "ready", seen
    lines_then = seen["log"].count("\n")

    expect(badge).to_have_text("ready", timeout=BUILD_TIMEOUT)
    expect(log_status).to_have_text("ready")
    expect(log_status).to_have_class(re.compile(r"\bbadge-ready\b"))
    expect(row).to_have_attribute("data-status", "ready")
    expect(row.locator("td.commit code")).to_have_text(sha[:10])
    expect(log).to_contain_text("==> succeeded after")
    # more lines came in after the install began: the panel was live, not a replay at the end
    assert log.text_content().count("\n") > lines_then

    page.screenshot(path=tmp_path / "environments.png", full_page=True)
    assert page.problems == []
