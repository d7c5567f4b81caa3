"""A property-based client against api/openapi.json: whatever it sends, the real service answers
without a server error, and every answer matches the document (status, content type, schema).

Bounded so it stays under a minute: a few examples per operation, a deadline for each, and only
operations that cannot start real work: every GET, and the creates whose random bodies are
refused before anything is fetched or built (a repository must be an allowed https URL or a Git
repository under the test root, which random text is not). Deletes, rebuilds, cancels and
server starts are left out: small ids are what a fuzzer tries first, and they are the session's
own environments and preprints.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from .conftest import build, need
from .support.hub import SERVICE
from .support.repos import make_repo

try:  # the test extra (pyproject.toml)
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )
except ImportError:
    schemathesis = None

OPERATIONS = [
    "GET /api/health",
    "GET /api/openapi.json",
    "GET /api/builder",
    "GET /metrics",
    "GET /api/environments",
    "GET /api/environments/{id}",
    "GET /api/environments/{id}/log",
    "GET /api/servers",
    "GET /api/spawner/environments",
    "GET /api/spawner/environments/{id}",
    "GET /api/preprints",
    "GET /api/preprints/{id}",
    "GET /api/builds/{id}",
    "GET /api/builds/{id}/logs/{stage}",
    "GET /api/datasets",
    "GET /api/reviews",
    "GET /api/preprints/{id}/review",
    "GET /api/published",
    "GET /api/published/{slug}",
    "POST /api/environments",
    "POST /api/preprints",
    "POST /api/check",
]


@pytest.fixture(scope="module")
async def seeded(hub, repos_root):
    """Something for the client to find at small ids: an environment and a preprint of alice's
    (neither builds anything: no runtime the local builder takes, and no book)."""
    need("schemathesis (pip install -e '.[test]')", schemathesis is not None)
    repo = repos_root / f"fuzzed-{time.time_ns()}"
    make_repo(repo, {"binder/environment.yml": "dependencies: []\n"})
    async with hub.token_client("alice") as alice:
        await build(alice, f"fuzzed-{time.time_ns()}", repo)
        r = await alice.post("preprints", json={"repository": str(repo), "ref": "main"})
        assert r.status_code == 201, r.text
    return {
        "alice": hub.api_token("alice"),
        "service": (hub.data / "neurolibre-service-token").read_text().strip(),
    }


@pytest.fixture(scope="module")
def api_schema(hub, seeded):
    config = schemathesis.Config.from_dict(
        {
            "base-url": hub.url + SERVICE.rstrip("/"),
            "request-timeout": 30,
            # unknown query parameters are ignored, as HTTP APIs do; the token is ours to send
            "generation": {"allow-extra-parameters": False, "with-security-parameters": False},
        }
    )
    return schemathesis.openapi.from_url(hub.api + "openapi.json", config=config)


# hypothesis is driven directly (schemathesis' own pytest plugin does not run under pytest 9.2)
@pytest.mark.parametrize("label", OPERATIONS)
def test_the_api_answers_as_its_openapi_document_says(api_schema, seeded, label):
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is no longer in the document"
    # the spawner's routes answer the service's own token; everything else, a user's
    token = seeded["service"] if "/spawner/" in label else seeded["alice"]
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
        negative_data_rejection,  # invalid requests get a 4xx
    ]
    modes = [GenerationMode.POSITIVE]  # what the document allows
    inputs = (operation.path_parameters, operation.query, operation.headers, operation.body)
    if any(len(part) for part in inputs):
        modes.append(GenerationMode.NEGATIVE)  # wrong types, NULs, numbers out of range
    for mode in modes:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=8, deadline=timedelta(seconds=10), database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])  # fmt: skip
        def call(case) -> None:
            case.call_and_validate(headers={"Authorization": f"token {token}"}, checks=checks)

        try:
            call()
        except Unsatisfiable:
            # schemathesis can express no request that breaks the document here (the spawner
            # list's one input is a required query string): nothing to send
            if mode is not GenerationMode.NEGATIVE:
                raise
