"""An author submits a preprint repository and gets a preview, or an exact account of what failed.

Everything is real: the hub and the service, Git, uv builds from a local index, repo2data
downloading from an HTTP server on 127.0.0.1, Jupyter Book executing notebooks under
bubblewrap, and the hub's mail sink (aiosmtpd) receiving the author's email.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from .conftest import follow_log
from .support.dataserver import DataServer, tar_gz_bytes
from .support.preprints import notebook, preprint
from .support.repos import commit

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def data_server():
    server = DataServer()
    yield server
    server.close()


async def submit(client: httpx.AsyncClient, repo, email: str | None = None,
                 ref: str = "main") -> dict:  # fmt: skip
    r = await client.post("preprints", json={"repository": str(repo), "ref": ref,
                                             "email": email or ""})  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


async def finish(client: httpx.AsyncClient, build_id: int) -> tuple[dict, dict[str, list[str]]]:
    """Follow a build's main log to its end; returns the build and each stage's log lines."""
    lines, status = await follow_log(client, f"builds/{build_id}/logs/main", timeout=800)
    assert status is not None, lines[-20:]
    logs = {"main": [t for _, t in lines]}
    for stage in ("environment", "data", "book"):
        r = await client.get(f"builds/{build_id}/logs/{stage}")
        assert r.status_code == 200
        logs[stage] = r.text.splitlines()
    r = await client.get(f"builds/{build_id}")
    return r.json(), logs


async def rebuild(client: httpx.AsyncClient, preprint_id: int) -> tuple[dict, dict]:
    r = await client.post(f"preprints/{preprint_id}/builds")
    assert r.status_code == 201, r.text
    return await finish(client, r.json()["id"])


def mail_to(hub, address: str, count: int, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while True:
        mails = [m for m in hub.mails() if m["To"] == address]
        if len(mails) >= count or time.monotonic() > deadline:
            return mails
        time.sleep(0.2)


async def test_author_gets_a_preview_that_shows_data_and_an_email(hub, alice, new_repo,
                                                                 data_server):  # fmt: skip
    url = data_server.add("/v1/signal.tar.gz", tar_gz_bytes({"signal.txt": b"0.25\n0.5\n"}))
    nb = notebook(
        "from pathlib import Path\n"
        "values = [float(x) for x in Path('../data/signal/signal.txt').read_text().split()]\n"
        "print('total signal', sum(values))"
    )
    repo, sha = new_repo(preprint({"analysis": nb},
                                  data={"src": url, "dst": "./data", "projectName": "signal"}))  # fmt: skip
    p = await submit(alice, repo, email="ada@example.org")
    build, logs = await finish(alice, p["latest_build"]["id"])

    assert build["status"] == "succeeded", (build["error"], logs["book"][-30:])
    assert build["stages"] == {"check": "succeeded", "environment": "succeeded",
                               "data": "succeeded", "book": "succeeded"}  # fmt: skip
    assert build["commit"] == sha
    assert [d["project_name"] for d in build["datasets"]] == ["signal"]
    assert build["datasets"][0]["size_bytes"] > 0
    # each stage wrote its own log
    # (the environment may be reused: another test of alice's built the same runtime files)
    assert any("Runtime key" in line for line in logs["environment"])
    assert any("signal" in line for line in logs["data"])
    assert any("analysis" in line for line in logs["book"])
    assert build["executed"] == 1 and build["cached"] == 0

    # the preview shows the notebook's output, computed from the data
    base = hub.url + "/services/neurolibre/"
    async with httpx.AsyncClient(headers=alice.headers, timeout=30, follow_redirects=True) as c:
        page = await c.get(base + f"builds/{build['id']}/preview/analysis.html")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "total signal 0.75" in page.text
        # the stable URL serves the latest good build, revalidated with its ETag
        stable = await c.get(base + f"preprints/{p['id']}/preview/analysis.html")
        assert stable.status_code == 200 and "total signal 0.75" in stable.text
        assert "no-cache" in stable.headers["cache-control"]
        # the book is served sandboxed, from a URL signed for the reader: its own requests
        # (which carry no cookie from a sandboxed page) work without a login
        assert "sandbox" in stable.headers["content-security-policy"]
        assert "/preview/~" in str(stable.url)
        async with httpx.AsyncClient(timeout=30) as anonymous:
            again = await anonymous.get(str(stable.url),
                                        headers={"If-None-Match": stable.headers["etag"]})  # fmt: skip
            assert again.status_code == 304
            signed = str(stable.url).replace("analysis.html", "intro.html")
            assert "Introduction" in (await anonymous.get(signed)).text
            # a signed URL is for one preprint only, and cannot be forged
            other = signed.replace(f"preprints/{p['id']}/", f"preprints/{p['id'] + 1000}/")
            r = await anonymous.get(other)
            assert r.status_code == 302 and "~" not in r.headers["location"]
            token = signed.split("/~")[1].split("/")[0]
            forged = signed.replace(token, token[:-4] + "AAAA")
            r = await anonymous.get(forged)
            assert r.status_code == 302 and "~" not in r.headers["location"]
        css = await c.get(base + f"preprints/{p['id']}/preview/_static/styles/theme.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        index = await c.get(base + f"preprints/{p['id']}/preview", follow_redirects=True)
        assert index.status_code == 200 and "intro.html" in index.text

    # and the author got an email with the preview link
    mails = mail_to(hub, "ada@example.org", 1)
    assert len(mails) == 1
    body = mails[0].get_content()
    assert f"/services/neurolibre/preprints/{p['id']}/preview/" in body
    assert "built successfully" in body
    r = await alice.get(f"builds/{build['id']}")
    assert r.json()["notified"] == "sent to ada@example.org"


async def test_prose_commit_reexecutes_nothing_and_one_notebook_commit_only_that_one(
    hub, alice, new_repo, data_server
):
    url = data_server.add("/v2/values.tar.gz", tar_gz_bytes({"v.txt": b"1\n"}))
    nbs = {
        "first": notebook("import time\nprint('first ran at', time.time())"),
        "second": notebook("import time\nprint('second ran at', time.time())"),
    }
    files = preprint(nbs, data={"src": url, "dst": "./data", "projectName": "values"})
    repo, _ = new_repo(files)
    p = await submit(alice, repo)
    first, _ = await finish(alice, p["latest_build"]["id"])
    assert first["status"] == "succeeded", first["error"]
    assert (first["executed"], first["cached"]) == (2, 0)
    assert data_server.count("/v2/values.tar.gz") >= 1
    fetches = data_server.count("/v2/values.tar.gz")

    # a commit that changes only prose: same environment, same data, nothing re-executed
    commit(repo, {"content/intro.md": "# Introduction\n\nRevised prose."})
    prose, logs = await rebuild(alice, p["id"])
    assert prose["status"] == "succeeded", prose["error"]
    assert (prose["executed"], prose["cached"]) == (0, 2)
    assert prose["runtime_key"] == first["runtime_key"]
    assert any("Reusing the environment" in line for line in logs["environment"])
    assert data_server.count("/v2/values.tar.gz") == fetches  # the dataset was reused
    async with httpx.AsyncClient(headers=alice.headers, timeout=30, follow_redirects=True) as c:

        def preview(build: dict, page: str) -> str:
            return hub.url + f"/services/neurolibre/builds/{build['id']}/preview/{page}"

        assert "Revised prose" in (await c.get(preview(prose, "intro.html"))).text
        # the output shown is the one computed by the first build, not a new run
        before = (await c.get(preview(first, "second.html"))).text
        after = (await c.get(preview(prose, "second.html"))).text
        assert _ran_at(before, "second") == _ran_at(after, "second")

    # a commit that changes one notebook of two: only that one runs
    commit(repo, {"content/first.ipynb": notebook("import time\nprint('first ran again at', "
                                                  "time.time())")})  # fmt: skip
    one, _ = await rebuild(alice, p["id"])
    assert one["status"] == "succeeded", one["error"]
    assert (one["executed"], one["cached"]) == (1, 1)


def _ran_at(html: str, name: str) -> str:
    marker = f"{name} ran at "
    start = html.index(marker) + len(marker)
    return html[start : start + 18]


async def test_layout_errors_stop_the_build_before_anything_is_installed(hub, alice, new_repo):
    files = preprint()
    files["content/_toc.yml"] += "  - file: missing-chapter\n"
    del files["paper.bib"]
    repo, _ = new_repo(files)
    p = await submit(alice, repo, email="bad-layout@example.org")
    build, logs = await finish(alice, p["latest_build"]["id"])
    assert build["status"] == "failed"
    assert build["failed_stage"] == "check"
    assert build["stages"]["environment"] == "skipped"
    assert "layout check found" in build["error"] and "nothing was installed" in build["error"]
    assert logs["environment"] == [] and logs["book"] == []
    errors = [f for f in build["findings"] if f["level"] == "error"]
    assert {f["file"] for f in errors} >= {"content/_toc.yml"}
    assert all(f["fix"] for f in errors)

    # the email explains, with the two logs attached
    (mail,) = mail_to(hub, "bad-layout@example.org", 1)
    assert "failed at the check stage" in mail.get_body(("plain",)).get_content()
    names = {a.get_filename(): a.get_content() for a in mail.iter_attachments()}
    assert set(names) == {"environment.log", "book.log"}
    assert "did not run" in names["environment.log"]


async def test_a_notebook_missing_its_data_fails_the_book_with_the_notebook_named(
    hub, alice, new_repo
):
    nb = notebook("open('../data/absent/values.csv').read()")
    repo, _ = new_repo(preprint({"reads-data": nb}))
    p = await submit(alice, repo, email="no-data@example.org")
    build, logs = await finish(alice, p["latest_build"]["id"])
    assert build["status"] == "failed"
    assert build["failed_stage"] == "book"
    assert "reads-data" in build["error"]
    assert any("FileNotFoundError" in line for line in logs["book"])
    (mail,) = mail_to(hub, "no-data@example.org", 1)
    names = {a.get_filename(): a.get_content() for a in mail.iter_attachments()}
    assert "FileNotFoundError" in names["book.log"]
    assert "Reusing" in names["environment.log"] or "jupyterhub" in names["environment.log"]
    r = await alice.get(f"builds/{build['id']}")
    assert r.json()["preview_url"] is None
    async with httpx.AsyncClient(headers=alice.headers, timeout=30, follow_redirects=True) as c:
        r = await c.get(hub.url + f"/services/neurolibre/builds/{build['id']}/preview/")
        assert r.status_code == 404


async def test_previews_are_private_and_confined(hub, alice, new_repo):
    repo, _ = new_repo(preprint())
    p = await submit(alice, repo)
    build, _ = await finish(alice, p["latest_build"]["id"])
    assert build["status"] == "succeeded", build["error"]
    html = hub.service_data / "builds" / str(build["id"]) / "html"
    (html / "escape.html").symlink_to("/etc/passwd")
    (html / "secret-dir").symlink_to(hub.service_data)
    base = hub.url + f"/services/neurolibre/builds/{build['id']}/preview/"
    async with httpx.AsyncClient(headers=alice.headers, timeout=30, follow_redirects=True) as c:
        assert (await c.get(base + "index.html")).status_code == 200
        signed = str((await c.get(base + "index.html")).url).removesuffix("index.html")
        for path in ("escape.html", "secret-dir/neurolibre.sqlite", "../../../neurolibre.sqlite"):
            r = await c.get(signed + path)
            assert r.status_code in (403, 404), path
        for path in ("escape.html", "secret-dir/neurolibre.sqlite", "../../../neurolibre.sqlite",
                     "%2e%2e/%2e%2e/neurolibre.sqlite"):  # fmt: skip
            r = await c.get(base + path)
            assert r.status_code in (403, 404), path
            assert "root:" not in r.text
    async with hub.token_client("bob") as bob:
        r = await bob.get(f"builds/{build['id']}")
        assert r.status_code == 404
        r = await bob.get(f"preprints/{p['id']}")
        assert r.status_code == 404
        async with httpx.AsyncClient(headers=bob.headers, timeout=30) as c:
            assert (await c.get(base + "index.html")).status_code == 404
    # not logged in: sent to the hub's login
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(base + "index.html")
        assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["location"]


async def test_check_api_lists_what_to_fix(hub, alice, new_repo):
    files = preprint()
    files["paper.md"] = files["paper.md"].replace("[@doe2020]", "[@nobody1999]")
    repo, sha = new_repo(files)
    r = await alice.post("check", json={"repository": str(repo), "ref": "main"})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["commit"] == sha and result["errors"] >= 1
    missing = [f for f in result["findings"] if "nobody1999" in f["message"]]
    assert missing and missing[0]["file"] == "paper.md" and missing[0]["fix"]
    r = await alice.post("check", json={"repository": "ftp://example.org/x.git"})
    assert r.status_code == 400 and "https://" in r.json()["message"]


async def test_a_book_that_runs_forever_is_stopped_by_the_time_limit(start_hub, new_repo):
    hub = start_hub("slow-books", LocalBookRunner__time_limit=20)
    repo, _ = new_repo(preprint({"forever": notebook("while True:\n    pass")}))
    async with hub.token_client("alice") as alice:
        p = await submit(alice, repo)
        build, _logs = await finish(alice, p["latest_build"]["id"])
    assert build["status"] == "failed"
    assert build["failed_stage"] == "book"
    assert "time limit" in build["error"]
    assert build["stages"]["book"] == "failed"


async def test_admins_see_datasets_and_delete_unused_ones(hub, alice, new_repo, data_server):
    old = data_server.add("/old.tar.gz", tar_gz_bytes({"a.txt": b"old"}))
    new = data_server.add("/new.tar.gz", tar_gz_bytes({"a.txt": b"new"}))
    nb = notebook("print(open('../data/ds/a.txt').read())")
    repo, _ = new_repo(preprint({"nb": nb}, data={"src": old, "projectName": "ds"}))
    p = await submit(alice, repo)
    first, _ = await finish(alice, p["latest_build"]["id"])
    assert first["status"] == "succeeded", first["error"]
    commit(repo, {"binder/data_requirement.json": f'{{"src": "{new}", "projectName": "ds"}}'})
    second, _ = await rebuild(alice, p["id"])
    assert second["status"] == "succeeded", second["error"]
    old_key = first["datasets"][0]["key"]
    new_key = second["datasets"][0]["key"]
    assert old_key != new_key

    assert (await alice.get("datasets")).status_code == 403
    async with hub.token_client("admin") as admin:
        listing = {d["key"]: d for d in (await admin.get("datasets")).json()}
        assert listing[old_key]["in_use"] is False and listing[new_key]["in_use"] is True
        assert listing[new_key]["size_bytes"] >= 3
        r = await admin.delete(f"datasets/{new_key}")
        assert r.status_code == 409
        r = await admin.delete(f"datasets/{old_key}")
        assert r.status_code == 204
        listing = {d["key"] for d in (await admin.get("datasets")).json()}
        assert old_key not in listing and new_key in listing
    assert not (hub.service_data / "datasets" / old_key).exists()
    assert (hub.service_data / "datasets" / new_key / "ds" / "a.txt").read_text() == "new"


async def test_a_second_submission_while_building_is_refused(hub, alice, new_repo):
    repo, _ = new_repo(preprint())
    p = await submit(alice, repo)
    r = await alice.post("preprints", json={"repository": str(repo), "ref": "main"})
    assert r.status_code == 409 and "still running" in r.json()["message"]
    await asyncio.sleep(0)
    r = await alice.post(f"builds/{p['latest_build']['id']}/cancel")
    assert r.status_code == 200
    build, _ = await finish(alice, p["latest_build"]["id"])
    assert build["status"] == "cancelled"


async def test_fixing_a_broken_notebook_reruns_only_that_one(hub, alice, new_repo):
    good = notebook("print('good one')")
    repo, _ = new_repo(preprint({"good": good, "broken": notebook("1 / 0")}))
    p = await submit(alice, repo)
    failed, _ = await finish(alice, p["latest_build"]["id"])
    assert failed["status"] == "failed" and failed["failed_stage"] == "book"
    assert "broken" in failed["error"] and "ZeroDivisionError" in failed["error"]
    commit(repo, {"content/broken.ipynb": notebook("print(1 / 1)")})
    fixed, _ = await rebuild(alice, p["id"])
    assert fixed["status"] == "succeeded", fixed["error"]
    assert (fixed["executed"], fixed["cached"]) == (1, 1)
