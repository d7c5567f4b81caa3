"""A reader who is not logged in clicks a direct launch link and lands in a running JupyterLab."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import expect

from tests.support.hub import PASSWORD, SERVICE


def test_a_logged_out_user_follows_a_direct_link_into_jupyterlab(hub, pkg_index, new_repo, page):
    req = pkg_index.add_sdist(pkg_index.sdists, f"nl-ui-lab-{time.time_ns()}", "1.0", "")
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})

    # the author's build, through the API (the sync browser API owns this thread's event loop)
    with httpx.Client(base_url=hub.api, timeout=60,
                      headers={"Authorization": f"token {hub.api_token('alice')}"}) as alice:  # fmt: skip
        env = alice.post("environments", json={"name": f"ui-lab-{time.time_ns() % 10**8}",
                                               "repository": str(repo), "ref": "main"}).json()  # fmt: skip
        deadline = time.monotonic() + 300
        while env["status"] in ("queued", "building") and time.monotonic() < deadline:
            time.sleep(0.5)
            env = alice.get(f"environments/{env['id']}").json()
    assert env["status"] == "ready", env
    link = f"{hub.url}{SERVICE}servers?name=uilab&environment={env['id']}"

    page.goto(link)
    # not logged in: the hub asks who we are, then OAuth brings us back to the link
    expect(page.locator("#username_input")).to_be_visible()
    page.locator("#username_input").fill("alice")
    page.locator("#password_input").fill(PASSWORD)
    page.locator("#login_submit").click()

    expect(page).to_have_url(re.compile(r"/user/alice/uilab/lab"), timeout=120_000)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
    expect(page).to_have_title(re.compile("JupyterLab"))
    page.screenshot(path=str(hub.workdir / "jupyterlab.png"))
