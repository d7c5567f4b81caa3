"""The OpenAPI 3.1 description of the JSON API (served at api/openapi.json).

Its response schemas are what the service really sends: tests/test_schemathesis.py checks every
answer of a property-based client against them.
"""

from __future__ import annotations

from typing import Any

from .handlers.base import MAX_ID, MAX_PAGE_SIZE, PAGE_SIZE

_ERROR = {"$ref": "#/components/schemas/Error"}
_ENV = {"$ref": "#/components/schemas/Environment"}
_PREPRINT = {"$ref": "#/components/schemas/Preprint"}
_BUILD = {"$ref": "#/components/schemas/Build"}
_DATASET = {"$ref": "#/components/schemas/Dataset"}


def _resp(desc: str, schema: dict | None = None, ctype: str = "application/json") -> dict:
    r: dict[str, Any] = {"description": desc}
    if schema is not None:
        r["content"] = {ctype: {"schema": schema}}
    return r


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


_STR, _INT, _NUM, _BOOL = (
    {"type": "string"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
)
_STR_OR_NULL, _INT_OR_NULL = {"type": ["string", "null"]}, {"type": ["integer", "null"]}
# API times are UTC with their offset ("2026-11-30T01:51:03.123456+00:00")
_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_OBJ = {"type": "object"}
_JOB_STATUS = {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}
_STAGE_STATE = {"enum": ["pending", "running", "succeeded", "failed", "cancelled", "skipped"]}

_ERRORS = {
    "403": _resp("Not authenticated, or not allowed", _ERROR),
    "404": _resp("No such thing (or not yours)", _ERROR),
}
_BAD = {"400": _resp("Bad request: the message says what to fix", _ERROR)}
# ids are integers that can name a row; any other number is a 404 like a missing row
_ID = {"name": "id", "in": "path", "required": True,
       "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}  # fmt: skip
_ENV_ID = [_ID]
_PAGING = [
    {"name": "limit", "in": "query",
     "schema": {"type": "integer", "default": PAGE_SIZE, "minimum": 1, "maximum": MAX_PAGE_SIZE}},
    {"name": "offset", "in": "query",
     "schema": {"type": "integer", "default": 0, "minimum": 0, "maximum": MAX_ID}},
]  # fmt: skip
_PAGED = "X-Total-Count gives the number in all; a Link header (rel=next) the next page."
_LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0},
                  "description": "With Accept: text/event-stream, resume after this line"}  # fmt: skip
_LOG = {
    "200": {"description": "The log", "content": {"text/plain": {"schema": _STR},
                                                  "text/event-stream": {"schema": _STR}}},
    **_BAD,
    **_ERRORS,
}  # fmt: skip


def _schemas() -> dict:
    job = {"type": "object", "required": ["id", "status", "attempts", "created_at"], "properties": {
        "id": _INT, "status": _JOB_STATUS, "attempts": _INT, "created_at": _TIME,
        "started_at": _TIME_OR_NULL, "finished_at": _TIME_OR_NULL}}  # fmt: skip
    return {
        "Error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": _INT, "message": _STR},
        },
        "NewEnvironment": {
            "type": "object",
            "required": ["name", "repository"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                "repository": {"type": "string", "description": "https:// Git URL"},
                "ref": {"type": "string", "default": "HEAD"},
                "profile": {"type": ["string", "null"]},
                "cpu_limit": {"type": ["number", "null"]},
                "mem_limit": {"type": ["string", "null"], "examples": ["2G"]},
            },
        },
        "Environment": {
            "type": "object",
            "required": ["id", "name", "owner", "status", "created_at"],
            "properties": {
                "id": _INT, "name": _STR, "owner": _STR, "repository": _STR, "ref": _STR,
                "commit": _STR_OR_NULL,
                "status": {"enum": ["new", "queued", "building", "ready", "failed", "cancelled",
                                    "missing"]},
                "stage": _STR_OR_NULL, "error": _STR_OR_NULL, "profile": _STR_OR_NULL,
                "cpu_limit": {"type": ["number", "null"]}, "mem_limit": _STR_OR_NULL,
                "created_at": _TIME,
                "runtime": _nullable({"type": "object", "properties": {
                    "key": _STR, "backend": _STR, "python_version": _STR_OR_NULL,
                    "size_bytes": _INT_OR_NULL}}),
                "job": _nullable(job),
            },
        },
        "EnvironmentDeleted": {
            "type": "object",
            "required": ["id", "deleted", "servers_stopped", "servers_not_stopped"],
            "properties": {
                "id": _INT, "deleted": {"const": True},
                "servers_stopped": {**_array(_STR), "description": "the owner's servers that ran "
                                    "on it, stopped and removed"},
                "servers_not_stopped": _array({"type": "object", "properties": {
                    "name": _STR, "reason": _STR}}),
            },
        },
        "Build": {
            "type": "object",
            "required": ["id", "preprint", "status", "stages", "created_at"],
            "properties": {
                "id": _INT, "preprint": _INT, "ref": _STR, "commit": _STR_OR_NULL,
                "status": _JOB_STATUS, "stage": _STR_OR_NULL, "error": _STR_OR_NULL,
                "stages": {"type": "object", "additionalProperties": _STAGE_STATE},
                "failed_stage": _STR_OR_NULL,
                "findings": {"type": ["array", "null"], "items": _OBJ},
                "runtime_key": _STR_OR_NULL,
                "datasets": _array({"type": "object", "properties": {
                    "key": _STR, "project_name": _STR, "size_bytes": _INT_OR_NULL}}),
                "book_engine": _STR_OR_NULL, "executed": _INT_OR_NULL, "cached": _INT_OR_NULL,
                "notified": _STR_OR_NULL,
                "created_at": _TIME, "started_at": _TIME_OR_NULL, "finished_at": _TIME_OR_NULL,
                "preview_url": _STR_OR_NULL,
                "logs": {"type": "object", "additionalProperties": _STR},
            },
        },
        "Preprint": {
            "type": "object",
            "required": ["id", "owner", "repository", "created_at", "latest_build"],
            "properties": {
                "id": _INT, "owner": _STR, "repository": _STR, "ref": _STR,
                "title": _STR_OR_NULL, "email": _STR_OR_NULL, "created_at": _TIME,
                "latest_build": _nullable(_BUILD),
                "builds": {**_array(_BUILD), "description": "GET api/preprints/{id} only"},
                "preview_url": _STR_OR_NULL,
            },
        },
        "Dataset": {
            "type": "object",
            "required": ["key", "project_name", "status", "in_use", "created_at"],
            "properties": {
                "key": _STR, "project_name": _STR, "requirement": _OBJ,
                "status": {"enum": ["fetching", "ready", "failed"]},
                "size_bytes": _INT_OR_NULL, "size": _STR_OR_NULL, "error": _STR_OR_NULL,
                "in_use": _BOOL, "created_at": _TIME, "fetched_at": _TIME_OR_NULL,
                "last_used_at": _TIME_OR_NULL,
            },
        },
        "Server": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {
                "name": _STR, "ready": _BOOL, "pending": _STR_OR_NULL, "url": _STR_OR_NULL,
                "environment": {"description": "the environment's id it was started on"},
                "started": _TIME_OR_NULL, "last_activity": _TIME_OR_NULL,
            },
        },
        "Findings": {
            "type": "object",
            "required": ["errors", "findings"],
            "properties": {
                "repository": _STR, "ref": _STR, "commit": _STR, "errors": _INT,
                "findings": _array({"type": "object", "properties": {
                    "level": _STR, "file": _STR_OR_NULL, "line": _INT_OR_NULL,
                    "message": _STR, "fix": _STR}}),
            },
        },
    }  # fmt: skip


def _preprint_paths() -> dict:
    """Preprints, builds (stages and their logs), layout checks and datasets."""
    repo = {"type": "object", "required": ["repository"], "properties": {
        "repository": {"type": "string", "description": "https:// Git URL"},
        "ref": {"type": "string", "default": "HEAD"}}}  # fmt: skip
    submit = {"type": "object", "required": ["repository"], "properties": {
        **repo["properties"], "email": {"type": "string", "description": "gets the result"}}}  # fmt: skip
    return {
        "/api/preprints": {
            "get": {"summary": "Your preprints (all for admins), newest first, with their latest build",
                    "parameters": _PAGING, "description": _PAGED,
                    "responses": {"200": _resp("Preprints", _array(_PREPRINT)), **_BAD,
                                  "403": _ERRORS["403"]}},
            "post": {"summary": "Submit a repository: check, environment, data and book, as one build",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": submit}}},
                     "responses": {"201": _resp("Preprint, with its queued build", _PREPRINT),
                                   "400": _resp("Bad URL, ref or email", _ERROR),
                                   "409": _resp("A build of this preprint is still running", _ERROR),
                                   "403": _ERRORS["403"]}},
        },
        "/api/preprints/{id}": {
            "parameters": [_ID],
            "get": {"summary": "A preprint and all its builds (newest first)",
                    "responses": {"200": _resp("", _PREPRINT), **_ERRORS}},
            "delete": {"summary": "Delete a preprint, its builds and their artifacts",
                       "responses": {"204": _resp("Deleted"), "409": _resp("A build is running", _ERROR),
                                     **_ERRORS}},
        },
        "/api/preprints/{id}/builds": {
            "parameters": [_ID],
            "post": {"summary": "Build again (the ref is resolved again)",
                     "responses": {"201": _resp("Queued build", _BUILD), "409": _resp("Busy", _ERROR),
                                   **_BAD, **_ERRORS}},
        },
        "/api/builds/{id}": {
            "parameters": [_ID],
            "get": {"summary": "A build: status, stages, failed stage, findings, datasets, notebooks executed and cached",
                    "responses": {"200": _resp("", _BUILD), **_ERRORS}},
        },
        "/api/builds/{id}/cancel": {
            "parameters": [_ID],
            "post": {"summary": "Cancel a queued or running build",
                     "responses": {"200": _resp("Cancelled", _BUILD), "409": _resp("Already finished", _ERROR), **_ERRORS}},
        },
        "/api/builds/{id}/logs/{stage}": {
            "parameters": [_ID, {"name": "stage", "in": "path", "required": True,
                                 "schema": {"enum": ["main", "environment", "data", "book"]}},
                           _LAST_EVENT_ID],
            "get": {"summary": "One stage's log (main: the check and the summary); text or server-sent events",
                    "description": "A stage the build never reached ends at once with status 'skipped'.",
                    "responses": _LOG},
        },
        "/api/check": {
            "post": {"summary": "The layout checks of a repository, without building (same as `neurolibre check`)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": repo}}},
                     "responses": {"200": _resp("Findings (level, file, line, message, fix) and the error count",
                                                {"$ref": "#/components/schemas/Findings"}),
                                   "400": _resp("Bad URL or ref", _ERROR), "403": _ERRORS["403"]}},
        },
        "/api/datasets": {
            "get": {"summary": "Admins: every fetched dataset, its size, and whether a build uses it",
                    "responses": {"200": _resp("Datasets", _array(_DATASET)), "403": _ERRORS["403"]}},
        },
        "/api/datasets/{key}": {
            "parameters": [{"name": "key", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
            "delete": {"summary": "Admins: delete a dataset no current build uses",
                       "responses": {"204": _resp("Deleted"), "409": _resp("In use", _ERROR), **_ERRORS}},
        },
    }  # fmt: skip


_STATUS = {"enum": ["submitted", "in_review", "changes_requested", "published", "rejected",
                    "withdrawn", None]}  # fmt: skip
_REVIEW = {"$ref": "#/components/schemas/Review"}
_VERSION = {"$ref": "#/components/schemas/PublishedVersion"}


def _publishing_schemas() -> dict:
    """The review of a submission, and published versions (publishing.py)."""
    event = {"type": "object", "required": ["id", "actor", "role", "kind", "created_at"],
             "properties": {
                 "id": _INT, "actor": _STR, "role": {"enum": ["author", "editor", "admin", "reviewer"]},
                 "kind": {"enum": ["submit", "screen", "request_changes", "accept", "reject",
                                   "withdraw", "comment", "assign", "unassign"]},
                 "from": _STATUS, "to": _STATUS, "build": _INT_OR_NULL, "version": _INT_OR_NULL,
                 "reply_to": _INT_OR_NULL, "comment": _STR_OR_NULL, "created_at": _TIME}}  # fmt: skip
    author = {"type": "object", "required": ["name"], "properties": {
        "name": _STR, "orcid": {"type": ["string", "null"], "pattern": r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$"},
        "affiliations": {**_array(_INT), "description": "1-based indexes into affiliations"}}}  # fmt: skip
    return {
        "Review": {
            "type": "object",
            "required": ["preprint", "owner", "status", "role", "reviewers", "events", "can"],
            "properties": {
                "preprint": _INT, "title": _STR, "owner": _STR, "repository": _STR,
                "status": {**_STATUS, "description": "null: never submitted"},
                "role": {"enum": ["author", "editor", "admin", "reviewer"],
                         "description": "the caller's part in this review"},
                "build": {**_INT_OR_NULL, "description": "the build under review"},
                "preview_url": _STR_OR_NULL, "submitted_at": _TIME_OR_NULL,
                "updated_at": _TIME_OR_NULL,
                "reviewers": _array({"type": "object", "required": ["name"], "properties": {
                    "name": _STR, "assigned_by": _STR, "assigned_at": _TIME,
                    "email": {**_STR_OR_NULL, "description": "editors only"}}}),
                "events": {**_array(event), "description": "newest first (the latest 500)"},
                "can": {"type": "object", "properties": {
                    "submit": _BOOL, "withdraw": _BOOL, "comment": _BOOL, "assign": _BOOL,
                    "decide": _array({"enum": ["screen", "request_changes", "accept", "reject"]})}},
                "submit_blocked": {**_STR_OR_NULL, "description": "why the author cannot submit now"},
                "publication": _nullable({"type": "object", "properties": {
                    "slug": _STR, "url": _STR, "versions": _array(_OBJ)}}),
            },
        },
        "ReviewItem": {
            "type": "object",
            "required": ["preprint", "owner", "status", "role"],
            "properties": {
                "preprint": _INT, "title": _STR, "owner": _STR, "repository": _STR,
                "status": _STATUS, "build": _INT_OR_NULL, "preview_url": _STR_OR_NULL,
                "submitted_at": _TIME, "updated_at": _TIME, "reviewers": _array(_STR),
                "role": {"enum": ["author", "editor", "admin", "reviewer"]},
            },
        },
        "PublishedVersion": {
            "type": "object",
            "required": ["slug", "version", "url", "title", "authors", "published_at", "commit",
                         "environment", "datasets", "book", "citation"],
            "properties": {
                "slug": _STR, "version": _INT, "url": _STR, "book_url": _STR, "launch_url": _STR,
                "title": _STR, "subtitle": _STR_OR_NULL, "authors": _array(author),
                "affiliations": _array(_STR), "summary": _STR_OR_NULL, "keywords": _array(_STR),
                "date": {**_STR_OR_NULL, "description": "the authors' date (YYYY-MM-DD)"},
                "license": _STR_OR_NULL, "code_license": _STR_OR_NULL, "published_at": _TIME,
                "repository": _STR, "repository_url": _STR_OR_NULL, "commit": _STR,
                "commit_url": _STR_OR_NULL,
                "environment": {"type": "object", "properties": {
                    "runtime_key": _STR, "backend": _STR, "python_version": _STR_OR_NULL,
                    "environment_id": _INT_OR_NULL, "image": _STR_OR_NULL}},
                "runtime_files": _array({"type": "object", "properties": {
                    "name": _STR, "size_bytes": _INT, "sha256": _STR}}),
                "datasets": _array({"type": "object", "properties": {
                    "key": _STR, "project_name": _STR, "source": _STR_OR_NULL,
                    "size_bytes": _INT_OR_NULL, "files": _INT, "sha256": _STR}}),
                "book": {"type": "object", "properties": {
                    "engine": _STR_OR_NULL, "sha256": _STR, "files": _INT, "size_bytes": _INT}},
                "logs": {"type": "object", "additionalProperties": _STR},
                "citation": {"type": "object", "properties": {
                    "bibtex": _STR, "text": _STR, "url": _STR}},
            },
        },
    }  # fmt: skip


def _publishing_paths() -> dict:
    """Submit, screen, review, publish; and the published versions (public)."""
    comment = {"comment": {"type": "string", "maxLength": 10_000}}

    def body(props: dict, required: tuple = ()) -> dict:
        schema = {"type": "object", "required": list(required), "properties": props}
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    review = {"200": _resp("The review, as the caller sees it", _REVIEW), **_BAD, **_ERRORS,
              "409": _resp("Not possible in the preprint's state (the message says why)", _ERROR)}  # fmt: skip
    slug = {"name": "slug", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,99}$"}}  # fmt: skip
    return {
        "/api/reviews": {
            "get": {"summary": "Submissions: all for editors; yours to review; your own",
                    "parameters": [*_PAGING, {"name": "status", "in": "query", "schema": {
                        "enum": ["", "all", "submitted", "in_review", "changes_requested",
                                 "published", "rejected", "withdrawn"]},
                        "description": "default: the ones under way"}],
                    "description": _PAGED,
                    "responses": {"200": _resp("Submissions", _array({"$ref": "#/components/schemas/ReviewItem"})),
                                  **_BAD, "403": _ERRORS["403"]}},
        },
        "/api/preprints/{id}/review": {
            "parameters": [_ID],
            "get": {"summary": "A preprint's review: status, reviewers, history, what you may do "
                               "(its author, editors and its reviewers)",
                    "responses": {"200": _resp("", _REVIEW), **_ERRORS}},
        },
        "/api/preprints/{id}/submit": {
            "parameters": [_ID],
            "post": {"summary": "The author submits the latest build (it must have succeeded); "
                                "again to put a new build under review or a new version",
                     "requestBody": body(comment), "responses": review},
        },
        "/api/preprints/{id}/withdraw": {
            "parameters": [_ID],
            "post": {"summary": "The author withdraws the submission",
                     "requestBody": body(comment), "responses": review},
        },
        "/api/preprints/{id}/reviewers": {
            "parameters": [_ID],
            "post": {"summary": "An editor assigns a reviewer (a hub user; email optional)",
                     "requestBody": body({"reviewer": {"type": "string"},
                                          "email": {"type": "string"}}, ("reviewer",)),
                     "responses": {**review, "201": review["200"]}},
        },
        "/api/preprints/{id}/reviewers/{reviewer}": {
            "parameters": [_ID, {"name": "reviewer", "in": "path", "required": True,
                                 "schema": {"type": "string"}}],
            "delete": {"summary": "An editor removes a reviewer", "responses": review},
        },
        "/api/preprints/{id}/decision": {
            "parameters": [_ID],
            "post": {"summary": "An editor screens, requests changes, accepts (publishes the build "
                                "under review as the next version) or rejects",
                     "requestBody": body({"decision": {"enum": ["screen", "request_changes", "accept",
                                                               "reject"]},
                                          **comment}, ("decision",)),
                     "responses": review},
        },
        "/api/preprints/{id}/comments": {
            "parameters": [_ID],
            "post": {"summary": "The author, an editor or a reviewer comments (reply_to: answers "
                                "an earlier one)",
                     "requestBody": body({**comment, "reply_to": {"type": "integer"}}, ("comment",)),
                     "responses": {**review, "201": review["200"]}},
        },
        "/api/published": {
            "get": {"summary": "Published preprints (their latest version), newest first "
                               "(no authentication)",
                    "security": [],
                    "parameters": [*_PAGING, {"name": "q", "in": "query", "schema": {"type": "string"},
                                              "description": "words of titles, authors, keywords"}],
                    "description": _PAGED,
                    "responses": {"200": _resp("Versions", _array(_VERSION)), **_BAD}},
        },
        "/api/published/{slug}": {
            "parameters": [slug],
            "get": {"summary": "A published preprint's versions, newest first (no authentication)",
                    "security": [],
                    "responses": {"200": _resp("", {"type": "object", "required": ["slug", "latest", "versions"],
                                                    "properties": {"slug": _STR, "url": _STR, "latest": _INT,
                                                                   "versions": _array(_VERSION)}}),
                                  "404": _ERRORS["404"]}},
        },
    }  # fmt: skip


def openapi_document(base_url: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "NeuroLibre service API",
            "version": "1",
            "description": (
                "Authenticate with the hub: a browser session (writes need the X-XSRFToken "
                "header) or 'Authorization: token <hub API token>'. Users see their own "
                "environments; the custom:neurolibre:admin scope sees all. Errors are JSON "
                "({status, message}); a method a path does not have is a 405 with Allow."
            ),
        },
        "servers": [{"url": base_url.rstrip("/")}],
        "components": {
            "securitySchemes": {
                "hubToken": {"type": "apiKey", "in": "header", "name": "Authorization"}
            },
            "schemas": {**_schemas(), **_publishing_schemas()},
        },
        "security": [{"hubToken": []}],
        "paths": {
            "/api/health": {
                "get": {
                    "summary": "Service health (no authentication)",
                    "security": [],
                    "responses": {
                        "200": _resp("Healthy", {"type": "object", "properties": {
                            "status": {"enum": ["ok", "degraded"]}, "version": _STR,
                            "database": _BOOL, "builder": _STR, "jobs_running": _INT}}),
                        "503": _resp("Database unreachable", _OBJ),
                    },
                }
            },
            "/api/builder": {
                "get": {
                    "summary": "The builder backend and the health of what it depends on (admins)",
                    "description": "health is null for the local builder; for docker the engine's "
                    "version; for binderhub the BinderHub's /health (ok, checks) and version.",
                    "responses": {
                        "200": _resp("Healthy", {"type": "object", "properties": {
                            "backend": {"type": "string", "enum": ["local", "docker", "binderhub"]},
                            "health": {"type": ["object", "null"]}}}),
                        "503": _resp("What the builder depends on is unhealthy or unreachable", _OBJ),
                        "403": _ERRORS["403"],
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _resp("OpenAPI document", _OBJ)},
                }
            },
            "/api/environments": {
                "get": {
                    "summary": "List environments (yours; all for admins), newest first",
                    "parameters": _PAGING,
                    "description": _PAGED,
                    "responses": {
                        "200": _resp("Environments", _array(_ENV)),
                        **_BAD,
                        "403": _ERRORS["403"],
                    },
                },
                "post": {
                    "summary": "Add an environment and queue its build",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/NewEnvironment"}
                            }
                        },
                    },
                    "responses": {
                        "201": _resp("Created; its build is queued", _ENV),
                        "400": _resp("Bad name, URL, ref or limits", _ERROR),
                        "403": _ERRORS["403"],
                        "409": _resp("Name already used", _ERROR),
                    },
                },
            },
            "/api/environments/{id}": {
                "parameters": _ENV_ID,
                "get": {"summary": "One environment", "responses": {"200": _resp("", _ENV), **_ERRORS}},
                "delete": {
                    "summary": "Delete (cancels its build; stops and removes the servers running on it; removes its runtime if unused)",
                    "responses": {"200": _resp("Deleted; the servers it stopped",
                                               {"$ref": "#/components/schemas/EnvironmentDeleted"}),
                                  **_ERRORS},
                },
            },
            "/api/environments/{id}/rebuild": {
                "parameters": _ENV_ID,
                "post": {
                    "summary": "Resolve the ref again and rebuild (reuses identical runtimes)",
                    "responses": {"202": _resp("Queued", _ENV), "409": _resp("Busy", _ERROR), **_BAD, **_ERRORS},
                },
            },
            "/api/environments/{id}/cancel": {
                "parameters": _ENV_ID,
                "post": {
                    "summary": "Cancel the queued or running build",
                    "responses": {"200": _resp("Cancelled", _ENV), "409": _resp("Nothing to cancel", _ERROR), **_ERRORS},
                },
            },
            "/api/environments/{id}/log": {
                "parameters": [*_ENV_ID, _LAST_EVENT_ID],
                "get": {
                    "summary": "Build log of the latest build",
                    "description": (
                        "Plain text, or server-sent events with Accept: text/event-stream: one "
                        "event per line (id = line number), 'status' events while it runs, and "
                        "an 'end' event with the final status."
                    ),
                    "responses": _LOG,
                },
            },
            "/api/servers": {
                "get": {
                    "summary": "Your hub servers, with the environment each runs on",
                    "responses": {"200": _resp("Servers", _array({"$ref": "#/components/schemas/Server"})),
                                  "403": _ERRORS["403"]},
                },
                "post": {
                    "summary": "Start a named server on one of your ready environments",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["name", "environment"],
                        "properties": {"name": {"type": "string"}, "environment": {"type": "integer"}}}}}},
                    "responses": {"202": _resp("Starting", {"type": "object", "properties": {
                                      "name": _STR, "started": _BOOL, "url": _STR}}),
                                  "400": _resp("Bad name", _ERROR), **_ERRORS,
                                  "409": _resp("Environment not ready", _ERROR)},
                },
            },
            "/api/servers/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"}},
                               {"name": "remove", "in": "query", "schema": {"type": "boolean"},
                                "description": "delete the named server, not only stop it"}],
                "delete": {"summary": "Stop (or delete) one of your servers",
                           "responses": {"204": _resp("Stopped"), **_BAD, "403": _ERRORS["403"],
                                         "404": _resp("No such server", _ERROR)}},
            },
            "/api/spawner/environments": {
                "get": {
                    "summary": "For the hub's spawner (the service's own token): a user's ready environments",
                    "parameters": [{"name": "user", "in": "query", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _resp("Environments", _array(_ENV)), **_BAD, "403": _ERRORS["403"]},
                }
            },
            "/api/spawner/environments/{id}": {
                "parameters": [*_ENV_ID, {"name": "user", "in": "query", "required": True, "schema": {"type": "string"}}],
                "get": {
                    "summary": "For the hub's spawner: what a server on this environment runs (venv or image, limits)",
                    "responses": {"200": _resp("Spawn spec", _OBJ), **_BAD, **_ERRORS,
                                  "409": _resp("Not ready", _ERROR)},
                },
            },
            **_preprint_paths(),
            **_publishing_paths(),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (custom:neurolibre:admin unless configured open)",
                    "responses": {"200": _resp("Metrics", _STR, "text/plain"), "403": _ERRORS["403"]},
                }
            },
        },
    }  # fmt: skip
