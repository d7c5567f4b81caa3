"""An author submits, an editor screens and assigns a reviewer, the reviewer comments, the author
answers, the editor publishes: readers without an account find the preprint in the gallery, read
its landing page (what Google Scholar and Zotero read) and its book, and a published version
never changes afterwards.

Everything is real: the hub and the service, Git, uv builds from the local index, repo2data
from an HTTP server on 127.0.0.1, Jupyter Book executing the notebook, and the hub's mail sink.
The tests of this module are one story, in order, on one preprint built twice (v1 and v2).

Attacks tried (each defence was removed once to see its test fail, see the report):
- a title with <script> and an "ORCID" that is a javascript: URL, from the author's paper.md:
  the pages show them as text; no script, no javascript: link (test_readers_...);
- a stranger (a hub user with access to the service) asks for the preview, the review, acts as
  an editor: 404 / 403; a reviewer decides: 403; an editor decides on their own preprint: 403;
- a published version rewritten: by a second version (v1's files and JSON stay byte-identical),
  by SQL (UPDATE and DELETE refused by triggers), by deleting its environment or its dataset
  (409 naming the version), by deleting the preprint (the version stays public);
- a built book holding links out of it (to /etc/passwd, to a directory) and a FIFO: the
  published copy holds none of them (test_a_published_book_copy_...);
- ../ and %2e%2e in a published book's path, a version past the integer range, a bad slug: 404;
- comments past the length limit: 400.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from neurolibre_service.metadata import authors_and_affiliations, iso_date, orcid
from neurolibre_service.publishing import MAX_COMMENT, copy_book, make_slug, tree_digest

from .conftest import follow_log
from .support.dataserver import DataServer, tar_gz_bytes
from .support.hub import SERVICE
from .support.preprints import PAPER, notebook, preprint
from .support.repos import commit

pytestmark = pytest.mark.timeout(900)

AUTHOR_MAIL = "ada.publishing@example.org"
REVIEWER_MAIL = "bob.reviewer@example.org"
VALID_ORCID = "0000-0002-1825-0097"  # ORCID's own example iD (its check digit holds)
HOSTILE_PAPER = PAPER.replace("title: 'A test preprint'", (
    "title: 'Living <script>alert(1)</script> signals'"
)).replace("""authors:
  - name: Ada Researcher
    affiliation: 1
""", f"""authors:
  - name: Ada Researcher
    orcid: {VALID_ORCID}
    affiliation: 1
  - name: Eve <img src=x onerror=alert(2)>
    orcid: "javascript:alert(3)"
    affiliation: 1
keywords:
  - signals
  - neuroimaging
license: CC-BY-4.0
""")  # fmt: skip


@pytest.fixture(scope="module")
def data_server():
    server = DataServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def story() -> dict:
    """What the story's steps hand to the next ones."""
    return {}


def anonymous(hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub.url + SERVICE, timeout=30)


async def finish(client: httpx.AsyncClient, build_id: int) -> dict:
    _lines, status = await follow_log(client, f"builds/{build_id}/logs/main", timeout=800)
    assert status is not None
    return (await client.get(f"builds/{build_id}")).json()


def mails(hub, address: str, subject: str, count: int = 1, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in hub.mails() if m["To"] == address and subject in m["Subject"]]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def files_of(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


# -- the story ---------------------------------------------------------------------------------


async def test_an_author_cannot_submit_a_preprint_whose_build_failed(hub, alice, new_repo):
    files = preprint()
    del files["paper.bib"]  # a layout error: the build stops at the check, in seconds
    repo, _ = new_repo(files)
    r = await alice.post("preprints", json={"repository": str(repo), "ref": "main"})
    p = r.json()
    build = await finish(alice, p["latest_build"]["id"])
    assert build["status"] == "failed"
    r = await alice.post(f"preprints/{p['id']}/submit", json={})
    assert r.status_code == 409
    message = r.json()["message"]
    assert f"The latest build ({build['id']}) failed at the check stage" in message
    assert "prerequisite for submission" in message
    # from a browser session, a write without the XSRF token is refused like an anonymous one
    session = await hub.browser_client("alice")
    try:
        r = await session.request("POST", f"api/preprints/{p['id']}/submit", json={}, xsrf=False)
        assert r.status_code == 403 and "X-XSRFToken" in r.json()["message"]
        r = await session.request("POST", f"api/preprints/{p['id']}/submit", json={})
        assert r.status_code == 409 and "prerequisite for submission" in r.json()["message"]
    finally:
        await session.aclose()


async def test_an_author_submits_and_an_editor_publishes(hub, alice, new_repo, data_server, story):
    url = data_server.add("/pub/signal.tar.gz", tar_gz_bytes({"signal.txt": b"1.5\n2.5\n"}))
    nb = notebook(
        "from pathlib import Path\n"
        "values = [float(x) for x in Path('../data/pubsignal/signal.txt').read_text().split()]\n"
        "print('answer', 6 * 7, 'signal', sum(values))"
    )
    repo, sha = new_repo(preprint({"analysis": nb}, extra={"paper.md": HOSTILE_PAPER},
                                  data={"src": url, "dst": "./data", "projectName": "pubsignal"}))  # fmt: skip
    r = await alice.post("preprints", json={"repository": str(repo), "ref": "main",
                                            "email": AUTHOR_MAIL})  # fmt: skip
    assert r.status_code == 201, r.text
    p = r.json()
    build = await finish(alice, p["latest_build"]["id"])
    assert build["status"] == "succeeded", build["error"]
    pid, bid = p["id"], build["id"]
    story.update(repo=repo, preprint=pid, build=bid, commit=sha)

    async with hub.token_client("editor") as editor, hub.token_client("bob") as bob, \
            hub.token_client("dave") as dave:  # fmt: skip
        # nobody but the author sees it before it is submitted: not even an editor's queue
        assert (await dave.get(f"preprints/{pid}/review")).status_code == 404
        queue = (await editor.get("reviews")).json()
        assert pid not in [i["preprint"] for i in queue]

        # the author submits the build that succeeded
        r = await alice.post(f"preprints/{pid}/submit", json={"comment": "Ready for review."})
        assert r.status_code == 200, r.text
        review = r.json()
        assert (review["status"], review["build"], review["role"]) == ("submitted", bid, "author")
        assert review["events"][0]["kind"] == "submit"
        assert (review["events"][0]["from"], review["events"][0]["to"]) == (None, "submitted")
        assert mails(hub, AUTHOR_MAIL, "submitted for review")
        # submitting the same build again says it is under review already
        r = await alice.post(f"preprints/{pid}/submit", json={})
        assert r.status_code == 409 and "under review already" in r.json()["message"]
        # the author may withdraw it (and submit it again); a withdrawn one cannot be screened
        r = await alice.post(f"preprints/{pid}/withdraw", json={"comment": "One more check."})
        assert r.json()["status"] == "withdrawn" and r.json()["events"][0]["kind"] == "withdraw"
        assert mails(hub, AUTHOR_MAIL, "withdrawn")
        r = await editor.post(f"preprints/{pid}/decision", json={"decision": "screen"})
        assert r.status_code == 409 and "This preprint is withdrawn" in r.json()["message"]
        r = await alice.post(f"preprints/{pid}/submit", json={})
        assert r.json()["status"] == "submitted"

        # the editors' queue has it (and their page); someone without the scope cannot edit
        queue = (await editor.get("reviews")).json()
        assert [i["status"] for i in queue if i["preprint"] == pid] == ["submitted"]
        async with httpx.AsyncClient(headers=editor.headers, timeout=30) as c:
            page = await c.get(f"{hub.url}{SERVICE}reviews")
        assert page.status_code == 200 and "Editorial queue" in page.text
        assert f'data-preprint="{pid}"' in page.text and "&lt;script&gt;" in page.text
        r = await alice.post(f"preprints/{pid}/decision", json={"decision": "accept"})
        assert r.status_code == 403 and "custom:neurolibre:review" in r.json()["message"]
        r = await dave.post(f"preprints/{pid}/decision", json={"decision": "accept"})
        assert r.status_code == 404 and r.json()["message"] == f"No preprint {pid}."

        # the editor assigns bob (a hub user; his address is kept for emails); not a ghost
        r = await editor.post(f"preprints/{pid}/reviewers", json={"reviewer": "nobody-here"})
        assert r.status_code == 400 and "no hub user named 'nobody-here'" in r.json()["message"]
        r = await editor.post(f"preprints/{pid}/reviewers", json={"reviewer": "alice"})
        assert r.status_code == 400 and "cannot review it" in r.json()["message"]
        r = await editor.post(f"preprints/{pid}/reviewers",
                              json={"reviewer": "bob", "email": REVIEWER_MAIL})  # fmt: skip
        assert r.status_code == 201, r.text
        assert [a["name"] for a in r.json()["reviewers"]] == ["bob"]
        assert mails(hub, REVIEWER_MAIL, "reviewer assigned")
        # the author sees who reviews, not their address
        mine = (await alice.get(f"preprints/{pid}/review")).json()
        assert mine["reviewers"][0]["name"] == "bob" and "email" not in mine["reviewers"][0]

        # a reviewer's queue has it; a reviewer cannot decide
        assert pid in [i["preprint"] for i in (await bob.get("reviews")).json()]
        r = await bob.post(f"preprints/{pid}/decision", json={"decision": "accept"})
        assert r.status_code == 403

        r = await editor.post(f"preprints/{pid}/decision", json={"decision": "screen"})
        assert r.status_code == 200 and r.json()["status"] == "in_review"

        # bob comments, alice answers; comments are bounded
        r = await bob.post(f"preprints/{pid}/comments",
                           json={"comment": "Figure 1 needs axis labels."})  # fmt: skip
        assert r.status_code == 201, r.text
        asked = r.json()["events"][0]
        assert (asked["actor"], asked["role"], asked["kind"]) == ("bob", "reviewer", "comment")
        r = await alice.post(f"preprints/{pid}/comments",
                             json={"comment": "Added them.", "reply_to": asked["id"]})  # fmt: skip
        assert r.status_code == 201 and r.json()["events"][0]["reply_to"] == asked["id"]
        assert mails(hub, REVIEWER_MAIL, "comment from alice")
        r = await bob.post(f"preprints/{pid}/comments", json={"comment": "x" * (MAX_COMMENT + 1)})
        assert r.status_code == 400 and f"at most {MAX_COMMENT} characters" in r.json()["message"]

        # changes need a reason; the author answers by submitting again
        r = await editor.post(f"preprints/{pid}/decision", json={"decision": "request_changes"})
        assert r.status_code == 400 and "Say why" in r.json()["message"]
        r = await editor.post(f"preprints/{pid}/decision",
                              json={"decision": "request_changes", "comment": "See bob's note."})  # fmt: skip
        assert r.json()["status"] == "changes_requested"
        assert mails(hub, AUTHOR_MAIL, "changes requested")
        r = await editor.post(f"preprints/{pid}/decision", json={"decision": "accept"})
        assert r.status_code == 409 and "changes requested" in r.json()["message"]
        r = await alice.post(f"preprints/{pid}/submit", json={"comment": "Labels added."})
        assert r.json()["status"] == "in_review"

        # the editor accepts: version 1 is published
        r = await editor.post(f"preprints/{pid}/decision",
                              json={"decision": "accept", "comment": "Welcome to NeuroLibre."})  # fmt: skip
        assert r.status_code == 200, r.text
        review = r.json()
        assert review["status"] == "published"
        accepted = review["events"][0]
        assert (accepted["kind"], accepted["from"], accepted["to"], accepted["version"]) == (
            "accept", "in_review", "published", 1)  # fmt: skip
        slug = review["publication"]["slug"]
        assert re.fullmatch(rf"living-script-alert-1-script-signals-{pid}", slug), slug
        assert [v["version"] for v in review["publication"]["versions"]] == [1]
        story["slug"] = slug
        published = mails(hub, AUTHOR_MAIL, "published as version 1")
        assert published and f"/p/{slug}/v1/" in published[0].get_content()
        assert mails(hub, REVIEWER_MAIL, "published as version 1")

        # every transition, with who and when, on the author's page
        page = await httpx.AsyncClient(headers=alice.headers, timeout=30).get(
            f"{hub.url}{SERVICE}preprints/{pid}")  # fmt: skip
        assert page.status_code == 200
        assert 'id="review"' in page.text and 'data-status="published"' in page.text
        events = page.text[page.text.index('id="review-events"') :]
        for kind in ("accept", "submit", "request changes", "screen", "comment", "assign"):
            assert kind in events, kind
        assert "in review &rarr; published" in events and "Figure 1 needs axis labels." in events


async def test_reviewers_see_the_preview_and_strangers_do_not(hub, story):
    pid, bid = story["preprint"], story["build"]
    async with hub.token_client("bob") as bob, hub.token_client("dave") as dave:
        for who, expected in ((bob, 200), (dave, 404)):
            async with httpx.AsyncClient(headers=who.headers, timeout=30,
                                         follow_redirects=True) as c:  # fmt: skip
                r = await c.get(f"{hub.url}{SERVICE}builds/{bid}/preview/analysis.html")
                assert r.status_code == expected, (who.headers, r.text[:200])
                if expected == 200:
                    assert "answer 42" in r.text
                r = await c.get(f"{hub.url}{SERVICE}preprints/{pid}")
                assert r.status_code == expected
                if expected == 200:  # the reviewers' page: the build under review and the review
                    assert f"builds/{bid}/preview/" in r.text and 'id="comment-form"' in r.text
                    assert 'id="rebuild-button"' not in r.text
        assert (await dave.get(f"preprints/{pid}/review")).status_code == 404
        assert (
            await dave.post(f"preprints/{pid}/comments", json={"comment": "hi"})
        ).status_code == 404


async def test_readers_find_read_and_cite_it_without_an_account(hub, story, data_server):
    slug = story["slug"]
    async with anonymous(hub) as anon:
        gallery = await anon.get("p/")
        assert gallery.status_code == 200 and "set-cookie" not in gallery.headers
        entry = gallery.text[gallery.text.index(f'data-slug="{slug}"') :]
        assert "Living &lt;script&gt;alert(1)&lt;/script&gt; signals" in entry
        assert "Ada Researcher" in entry
        assert "<script>alert" not in gallery.text and "<img src=x" not in gallery.text
        for query, found in (("ada signals", True), ("neuroimaging", True), ("nomatch", False)):
            r = await anon.get("p/", params={"q": query})
            assert (f'data-slug="{slug}"' in r.text) is found, query

        landing = await anon.get(f"p/{slug}/")
        assert landing.status_code == 200
        html = landing.text
        assert (
            '<meta name="citation_title" content="Living &lt;script&gt;alert(1)&lt;/script&gt; signals">'
            in html
        )
        assert '<meta name="citation_author" content="Ada Researcher">' in html
        assert f'<a class="orcid" href="https://orcid.org/{VALID_ORCID}"' in html
        # the hostile "ORCID" is no link, the hostile names no markup
        assert "javascript:" not in html and "<script>alert" not in html and "<img" not in html
        ld = re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
        doc = json.loads(ld.group(1))
        assert doc["@type"] == "ScholarlyArticle" and doc["name"].startswith("Living <script>")
        assert doc["author"][0]["sameAs"] == f"https://orcid.org/{VALID_ORCID}"
        assert "sameAs" not in doc["author"][1]
        assert doc["keywords"] == ["signals", "neuroimaging"] and doc["license"] == "CC-BY-4.0"
        assert doc["dateCreated"] == "2026-11-22"
        assert "@misc{neurolibre-" in html and "Researcher, A." in html  # cite this
        assert story["commit"] in html and "pubsignal" in html
        assert "jupyter-book==1.0.4.post1" in html  # the runtime files
        assert "no-cache" in landing.headers["cache-control"]

        book = await anon.get(f"p/{slug}/book/analysis.html")
        assert book.status_code == 200 and "answer 42 signal 4.0" in book.text
        assert "sandbox" in book.headers["content-security-policy"]
        assert "no-cache" in book.headers["cache-control"]
        again = await anon.get(f"p/{slug}/book/analysis.html",
                               headers={"If-None-Match": book.headers["etag"]})  # fmt: skip
        assert again.status_code == 304
        pinned = await anon.get(f"p/{slug}/v1/book/analysis.html")
        assert pinned.status_code == 200 and pinned.text == book.text
        assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert (await anon.get(f"p/{slug}/v1/book/")).status_code == 200
        log = await anon.get(f"p/{slug}/v1/logs/book.log")
        assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
        assert "analysis" in log.text

        # bad slugs and versions are 404s, not errors
        for bad in (f"p/{slug}/v9/", f"p/{slug}/v{2**40}/book/index.html",
                    "p/no-such-preprint-1/", f"p/{slug}/v1/book/nothing.html"):  # fmt: skip
            r = await anon.get(bad)
            assert r.status_code == 404, (bad, r.status_code)
    # paths stay inside the book: sent to the service itself, as written (the proxy and
    # httpx would resolve the dots first)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ports[2]}", timeout=30) as raw:
        for bad in (b"v1/book/%2e%2e/logs/main.log", b"v1/book/..%2f..%2f..%2fneurolibre.sqlite",
                    b"book/%2e%2e/%2e%2e/v1/logs/book.log", b"v1/book/%2e%2e"):  # fmt: skip
            url = raw.base_url.copy_with(raw_path=f"{SERVICE}p/{slug}/".encode() + bad)
            r = await raw.send(raw.build_request("GET", url))
            assert r.status_code in (403, 404), (bad, r.status_code)  # (tornado's own: 403)
        url = raw.base_url.copy_with(raw_path=f"{SERVICE}p/{slug}/v1/book/index.html".encode())
        assert (await raw.send(raw.build_request("GET", url))).status_code == 200
    async with anonymous(hub) as anon:
        # the same, as JSON
        listed = (await anon.get("api/published")).json()
        mine = next(v for v in listed if v["slug"] == slug)
        assert mine["version"] == 1 and mine["authors"][1]["orcid"] is None
        detail = (await anon.get(f"api/published/{slug}")).json()
        assert detail["latest"] == 1
        v1 = detail["versions"][0]
        assert v1["commit"] == story["commit"]
        [ds] = v1["datasets"]
        assert ds["project_name"] == "pubsignal" and ds["source"].endswith("/pub/signal.tar.gz")
        on_disk = hub.service_data / "datasets" / ds["key"] / "pubsignal"
        assert ds["sha256"] == tree_digest(on_disk)[0] and ds["files"] >= 1
        book_dir = hub.service_data / "published" / slug / "v1" / "book"
        assert v1["book"]["sha256"] == tree_digest(book_dir)[0]
        story["v1"] = v1

        # launching is tests/test_launch.py's (anyone may launch; a launch starts a server):
        # a version that does not exist is a 404 for anyone
        r = await anon.get(f"launch/{slug}?version=9")
        assert r.status_code == 404


async def test_a_new_version_goes_through_the_editor_and_leaves_v1_as_it_was(hub, alice, story):
    slug, pid = story["slug"], story["preprint"]
    v1_dir = hub.service_data / "published" / slug / "v1"
    v1_files = files_of(v1_dir)
    assert "book/analysis.html" in v1_files and "runtime/requirements.txt" in v1_files
    # the repository's files at the commit, without .git: the version outlives the repository
    assert "source/content/analysis.ipynb" in v1_files and "source/paper.md" in v1_files
    assert not [name for name in v1_files if name.startswith("source/.git")]

    # the same commit again: nothing new to publish
    r = await alice.post(f"preprints/{pid}/submit", json={})
    assert r.status_code == 409 and "already published as version 1" in r.json()["message"]

    sha2 = commit(story["repo"], {"content/intro.md": "# Introduction\n\nSecond version."})
    r = await alice.post(f"preprints/{pid}/builds")
    build = await finish(alice, r.json()["id"])
    assert build["status"] == "succeeded", build["error"]
    r = await alice.post(f"preprints/{pid}/submit", json={})
    assert r.json()["status"] == "submitted"  # a published preprint's new version: the editor again
    async with hub.token_client("editor") as editor:
        r = await editor.post(f"preprints/{pid}/decision", json={"decision": "accept"})
    assert r.status_code == 200, r.text
    assert [v["version"] for v in r.json()["publication"]["versions"]] == [2, 1]

    assert files_of(v1_dir) == v1_files  # byte for byte
    async with anonymous(hub) as anon:
        detail = (await anon.get(f"api/published/{slug}")).json()
        assert detail["latest"] == 2 and detail["versions"][1] == story["v1"]
        assert detail["versions"][0]["commit"] == sha2
        assert "Second version" in (await anon.get(f"p/{slug}/book/intro.html")).text
        assert "Second version" not in (await anon.get(f"p/{slug}/v1/book/intro.html")).text
        old = await anon.get(f"p/{slug}/v1/")
        assert 'id="older-version"' in old.text and f"p/{slug}/v2/" in old.text
        assert old.headers["cache-control"] == "public, max-age=300"

    # not even SQL rewrites a version (migration 0004's triggers)
    db = sqlite3.connect(hub.service_data / "neurolibre.sqlite", timeout=30)
    try:
        for statement in ("UPDATE published_versions SET title = 'rewritten'",
                          "DELETE FROM published_versions",
                          "DELETE FROM published_datasets"):  # fmt: skip
            with pytest.raises(sqlite3.DatabaseError, match="published versions are immutable"):
                db.execute(statement)
        db.rollback()
    finally:
        db.close()


async def test_what_a_version_needs_cannot_be_deleted(hub, alice, story):
    slug, v1 = story["slug"], story["v1"]
    env = v1["environment"]["environment_id"]
    for method, path in (("DELETE", f"environments/{env}"),
                         ("POST", f"environments/{env}/rebuild")):  # fmt: skip
        r = await alice.request(method, path)
        assert r.status_code == 409, r.text
        assert f"published version {slug} v1" in r.json()["message"]
    # the author deletes the preprint: what was published stays published, data included
    assert (await alice.delete(f"preprints/{story['preprint']}")).status_code == 204
    async with hub.token_client("admin") as admin:
        r = await admin.delete(f"datasets/{v1['datasets'][0]['key']}")
        assert r.status_code == 409 and f"published version {slug} v1" in r.json()["message"]
    async with anonymous(hub) as anon:
        r = await anon.get(f"p/{slug}/v1/book/analysis.html")
        assert r.status_code == 200 and "answer 42" in r.text
        assert (await anon.get(f"api/published/{slug}")).json()["versions"][1] == v1
    r = await alice.delete(f"environments/{env}")
    assert r.status_code == 409


async def test_an_editor_cannot_handle_their_own_preprint(hub, new_repo):
    files = preprint()
    del files["paper.bib"]  # fails at the check: nothing is installed for the editor
    repo, _ = new_repo(files)
    async with hub.token_client("editor") as editor:
        r = await editor.post("preprints", json={"repository": str(repo), "ref": "main"})
        p = r.json()
        for body in ({"decision": "accept"}, {"decision": "screen"}):
            r = await editor.post(f"preprints/{p['id']}/decision", json=body)
            assert r.status_code == 403 and "own preprint" in r.json()["message"]
        r = await editor.post(f"preprints/{p['id']}/reviewers", json={"reviewer": "bob"})
        assert r.status_code == 403
        await finish(editor, p["latest_build"]["id"])


# -- the parts, without a hub ------------------------------------------------------------------


def test_a_published_book_copy_holds_no_link_out_and_nothing_special(tmp_path):
    book = tmp_path / "html"
    (book / "_static").mkdir(parents=True)
    (book / "index.html").write_text("<p>index</p>")
    (book / "_static" / "style.css").write_text("p {}")
    (book / "passwd.html").symlink_to("/etc/passwd")  # a link out of the book
    (book / "up").symlink_to("..")  # a link to a directory
    (book / "alias.html").symlink_to("index.html")  # a link inside: copied as the file
    os.mkfifo(book / "pipe.html")  # a read would never end
    dest = tmp_path / "published"
    files, size = copy_book(book, dest, limit=1 << 20)
    got = {str(p.relative_to(dest)) for p in dest.rglob("*")}
    assert got == {"index.html", "_static", "_static/style.css", "alias.html"}
    assert (files, size) == (3, len("<p>index</p>") * 2 + len("p {}"))
    assert not (dest / "alias.html").is_symlink()
    assert oct((dest / "index.html").stat().st_mode & 0o777) == oct(0o444)


def test_checksums_and_slugs():
    assert make_slug("Living <script>alert(1)</script> signals", 7) == (
        "living-script-alert-1-script-signals-7")  # fmt: skip
    assert make_slug("", 3) == "preprint-3" and make_slug("Ünïcödé ☃", 4) == "unicode-4"
    assert len(make_slug("word " * 40, 12)) <= 52


def test_tree_digests_are_sha256sum_manifests(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_bytes(b"bee\n")
    (tmp_path / "d" / "sub" / "a.txt").write_bytes(b"ay\n")
    manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in
                       (("b.txt", b"bee\n"), ("sub/a.txt", b"ay\n")))  # fmt: skip
    assert tree_digest(tmp_path / "d") == (hashlib.sha256(manifest.encode()).hexdigest(), 2, 7)


def test_metadata_from_hostile_front_matter():
    assert orcid(VALID_ORCID) == VALID_ORCID
    assert orcid(f"https://orcid.org/{VALID_ORCID}") == VALID_ORCID
    assert orcid("0000-0002-1825-0098") is None  # its check digit is wrong
    assert orcid("javascript:alert(1)//0000-0002-1825-0097") is None
    front = {
        "authors": [{"name": "A\u202eB\nC", "orcid": "javascript:x", "affiliation": "1, 9"},
                    "Plain Name", {"name": {"given": "Ada", "family": "Lovelace"},
                                   "affiliations": ["inst"]}],
        "affiliations": [{"name": "One", "index": 1}, {"id": "inst", "institution": "Two"}],
    }  # fmt: skip
    authors, affiliations = authors_and_affiliations(front)
    assert [a["name"] for a in authors] == ["A B C", "Plain Name", "Ada Lovelace"]
    assert authors[0]["orcid"] is None and authors[0]["affiliations"] == [1, 2]
    assert affiliations == ["One", "9", "Two"]
    assert iso_date("22 November 2026") == "2026-11-22" and iso_date("soon") is None
