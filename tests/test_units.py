"""The pieces users meet indirectly: redaction, URL rules, the API description, limits."""

from __future__ import annotations

import asyncio

import pytest

from neurolibre_service.handlers import routes
from neurolibre_service.logs import LogEnd, LogLine, LogStore, Redactor
from neurolibre_service.openapi import openapi_document
from neurolibre_service.sources import RepoPolicy, SourceError, validate_ref, validate_url


def test_secrets_are_redacted_before_a_line_is_stored(tmp_path):
    store = LogStore(tmp_path, Redactor(["hub-token-0123456789"]))
    ch = store.channel("job-1")
    ch.write("cloning https://bob:ghp_abcdef@github.com/bob/repo")
    ch.write("env JUPYTERHUB_API_TOKEN=hub-token-0123456789 set")
    ch.write("PASSWORD: hunter2hunter2 and api_key=XYZ123")
    ch.write("an ordinary line about tokenization")
    text = (tmp_path / "job-1.log").read_text()
    assert "ghp_abcdef" not in text and "bob:" not in text
    assert "hub-token-0123456789" not in text
    assert "hunter2" not in text and "XYZ123" not in text
    assert "https://[secret]@github.com/bob/repo" in text
    assert "an ordinary line about tokenization" in text


def test_a_multiline_write_never_shares_an_id(tmp_path):
    ch = LogStore(tmp_path, Redactor()).channel("job-2")
    line = ch.write("one\ntwo")
    assert line == LogLine(1, "one two")
    assert ch.write("three").id == 2


async def test_a_follower_gets_the_file_then_live_lines_then_the_end(tmp_path):
    store = LogStore(tmp_path, Redactor())
    ch = store.channel("job-3")
    for i in range(3):
        ch.write(f"line {i}")
    got: list = []

    async def reader():
        async for batch in store.follow("job-3", after=1):
            got.extend(batch)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    ch.write("line 3")
    ch.close("succeeded")
    await asyncio.wait_for(task, 5)
    assert got == [LogLine(2, "line 1"), LogLine(3, "line 2"), LogLine(4, "line 3"),
                   LogEnd("succeeded")]  # fmt: skip
    # after a restart (a new store), a finished log still ends
    again = [i async for b in LogStore(tmp_path, Redactor()).follow("job-3", 3, "succeeded")
             for i in b]  # fmt: skip
    assert again == [LogLine(4, "line 3"), LogEnd("succeeded")]


POLICY = RepoPolicy(schemes=("https",))


@pytest.mark.parametrize(
    "url",
    ["https://github.com/neurolibre/sample-preprint",
     "https://gitlab.com/group/sub/project.git"],
)  # fmt: skip
def test_public_https_repositories_are_accepted(url):
    assert validate_url(url, POLICY) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("git@github.com:x/y.git", "must start with https://"),
        ("https:///nohost", "no host name"),
        ("ssh://github.com/x/y", "must start with https://"),
        ("https://github.com/x y", "spaces"),
        ("/srv/repos/x", "not allowed on this service"),
    ],
)
def test_other_repository_locations_are_refused(url, message):
    with pytest.raises(SourceError, match=message):
        validate_url(url, POLICY)


def test_local_paths_must_stay_inside_the_allowed_roots(tmp_path):
    root = tmp_path / "repos"
    (root / "ok" / ".git").mkdir(parents=True)
    (tmp_path / "secret" / ".git").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path / "secret")
    policy = RepoPolicy(local_roots=(str(root),))
    assert validate_url(str(root / "ok"), policy) == str(root / "ok")
    for bad in (str(root / "escape"), str(root / ".." / "secret")):
        with pytest.raises(SourceError, match="outside the local repository roots"):
            validate_url(bad, policy)


@pytest.mark.parametrize("ref", ["main", "v1.0", "feature/x", "0" * 40, "HEAD", ""])
def test_ordinary_refs_are_accepted(ref):
    assert validate_ref(ref) == (ref or "HEAD")


@pytest.mark.parametrize("ref", ["-x", "a..b", "a b", "x@{1}", "a//b", "x.", "ref;rm"])
def test_refs_that_could_be_options_or_tricks_are_refused(ref):
    with pytest.raises(SourceError):
        validate_ref(ref)


def test_the_api_description_covers_every_route():
    from openapi_spec_validator import validate

    doc = openapi_document("/services/neurolibre/")
    validate(doc)
    documented = set(doc["paths"])
    for pattern, _handler in routes("/"):
        if pattern.startswith("/api/") or pattern == "/metrics":
            path = (pattern.replace(r"(\d+)", "{id}").replace(r"(rebuild|cancel)", "{action}")
                    .replace(r"([A-Za-z0-9._-]+)", "{name}")
                    .replace("(main|environment|data|book)", "{stage}")
                    .replace("([0-9a-f]{64})", "{key}")
                    .replace("reviewers/([^/]+)", "reviewers/{reviewer}")
                    .replace("([a-z0-9][a-z0-9-]{0,99})", "{slug}"))  # fmt: skip
            candidates = {path} if "{action}" not in path else {
                path.replace("{action}", a) for a in ("rebuild", "cancel")}  # fmt: skip
            assert candidates <= documented, pattern


def test_options_come_from_a_config_file_and_the_command_line_wins(tmp_path):
    from neurolibre_service.app import NeuroLibre

    config = tmp_path / "neurolibre_config.py"
    config.write_text(
        "c.NeuroLibre.build_concurrency = 5\n"
        "c.NeuroLibre.build_time_limit = 60\n"
        "c.LocalBuilder.kernel_packages = ['ipykernel==6.29.5']\n"
        "c.NeuroLibre.server_packages = ['jupyterhub=={hub_version}', 'jupyterlab==4.4.0']\n"
    )
    app = NeuroLibre()
    app.initialize([f"--config={config}", "--time-limit=90", f"--data-dir={tmp_path}/d"])
    assert app.build_concurrency == 5
    assert app.build_time_limit == 90
    assert app.db_url == f"sqlite:///{tmp_path}/d/neurolibre.sqlite"
    assert app.config.LocalBuilder.kernel_packages == ["ipykernel==6.29.5"]
    assert app.server_packages == ["jupyterhub=={hub_version}", "jupyterlab==4.4.0"]
    NeuroLibre.clear_instance()
