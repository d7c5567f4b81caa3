"""The OpenAPI 3.1 description of the JSON API (served at api/openapi.json)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_ENV = {"$ref": "#/components/schemas/Environment"}


def _resp(desc: str, schema: dict | None = None, ctype: str = "application/json") -> dict:
    r: dict[str, Any] = {"description": desc}
    if schema is not None:
        r["content"] = {ctype: {"schema": schema}}
    return r


_ERRORS = {
    "403": _resp("Not authenticated, or not allowed", _ERROR),
    "404": _resp("No such environment (or not yours)", _ERROR),
}
_ENV_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_OBJ = {"type": "object"}
_STAGE_LOG = {
    "200": {"description": "The log", "content": {"text/plain": {}, "text/event-stream": {}}},
    **_ERRORS,
}


def _preprint_paths() -> dict:
    """Preprints, builds (stages and their logs), layout checks and datasets."""
    repo = {"type": "object", "required": ["repository"], "properties": {
        "repository": {"type": "string", "description": "https:// Git URL"},
        "ref": {"type": "string", "default": "HEAD"}}}  # fmt: skip
    submit = {"type": "object", "required": ["repository"], "properties": {
        **repo["properties"], "email": {"type": "string", "description": "gets the result"}}}  # fmt: skip
    return {
        "/api/preprints": {
            "get": {"summary": "Your preprints (all for admins), newest first, paged like environments",
                    "responses": {"200": _resp("Preprints with their latest build", {"type": "array", "items": _OBJ}),
                                  "403": _ERRORS["403"]}},
            "post": {"summary": "Submit a repository: check, environment, data and book, as one build",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": submit}}},
                     "responses": {"201": _resp("Preprint, with its queued build", _OBJ),
                                   "400": _resp("Bad URL, ref or email", _ERROR),
                                   "409": _resp("A build of this preprint is still running", _ERROR),
                                   "403": _ERRORS["403"]}},
        },
        "/api/preprints/{id}": {
            "parameters": [_ID],
            "get": {"summary": "A preprint and all its builds (newest first)", "responses": {"200": _resp("", _OBJ), **_ERRORS}},
            "delete": {"summary": "Delete a preprint, its builds and their artifacts", "responses": {"204": _resp("Deleted"), **_ERRORS}},
        },
        "/api/preprints/{id}/builds": {
            "parameters": [_ID],
            "post": {"summary": "Build again (the ref is resolved again)",
                     "responses": {"201": _resp("Queued build", _OBJ), "409": _resp("Busy", _ERROR), **_ERRORS}},
        },
        "/api/builds/{id}": {
            "parameters": [_ID],
            "get": {"summary": "A build: status, stages, failed stage, findings, datasets, notebooks executed and cached",
                    "responses": {"200": _resp("", _OBJ), **_ERRORS}},
        },
        "/api/builds/{id}/cancel": {
            "parameters": [_ID],
            "post": {"summary": "Cancel a queued or running build",
                     "responses": {"200": _resp("Cancelled", _OBJ), "409": _resp("Already finished", _ERROR), **_ERRORS}},
        },
        "/api/builds/{id}/logs/{stage}": {
            "parameters": [_ID, {"name": "stage", "in": "path", "required": True,
                                 "schema": {"enum": ["main", "environment", "data", "book"]}},
                           {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}}],
            "get": {"summary": "One stage's log (main: the check and the summary); text or server-sent events",
                    "description": "A stage the build never reached ends at once with status 'skipped'.",
                    "responses": _STAGE_LOG},
        },
        "/api/check": {
            "post": {"summary": "The layout checks of a repository, without building (same as `neurolibre check`)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": repo}}},
                     "responses": {"200": _resp("Findings (level, file, line, message, fix) and the error count", _OBJ),
                                   "400": _resp("Bad URL or ref", _ERROR), "403": _ERRORS["403"]}},
        },
        "/api/datasets": {
            "get": {"summary": "Admins: every fetched dataset, its size, and whether a build uses it",
                    "responses": {"200": _resp("Datasets", {"type": "array", "items": _OBJ}), "403": _ERRORS["403"]}},
        },
        "/api/datasets/{key}": {
            "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": {"summary": "Admins: delete a dataset no current build uses",
                       "responses": {"204": _resp("Deleted"), "409": _resp("In use", _ERROR), **_ERRORS}},
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
                "environments; the custom:neurolibre:admin scope sees all."
            ),
        },
        "servers": [{"url": base_url.rstrip("/")}],
        "components": {
            "securitySchemes": {
                "hubToken": {"type": "apiKey", "in": "header", "name": "Authorization"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["status", "message"],
                    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
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
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "owner": {"type": "string"},
                        "repository": {"type": "string"},
                        "ref": {"type": "string"},
                        "commit": {"type": ["string", "null"]},
                        "status": {
                            "enum": ["new", "queued", "building", "ready", "failed", "cancelled"]
                        },
                        "stage": {"type": ["string", "null"]},
                        "error": {"type": ["string", "null"]},
                        "profile": {"type": ["string", "null"]},
                        "cpu_limit": {"type": ["number", "null"]},
                        "mem_limit": {"type": ["string", "null"]},
                        "created_at": {"type": "string", "format": "date-time"},
                        "runtime": {"type": ["object", "null"]},
                        "job": {"type": ["object", "null"]},
                    },
                },
            },
        },
        "security": [{"hubToken": []}],
        "paths": {
            "/api/health": {
                "get": {
                    "summary": "Service health (no authentication)",
                    "security": [],
                    "responses": {"200": _resp("Healthy"), "503": _resp("Database unreachable")},
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
                        "503": _resp("What the builder depends on is unhealthy or unreachable"),
                        "403": _ERRORS["403"],
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _resp("OpenAPI document")},
                }
            },
            "/api/environments": {
                "get": {
                    "summary": "List environments (yours; all for admins), newest first",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}},
                        {"name": "offset", "in": "query", "schema": {"type": "integer", "default": 0}},
                    ],
                    "description": "X-Total-Count gives the number in all; a Link header (rel=next) the next page.",
                    "responses": {
                        "200": _resp("Environments", {"type": "array", "items": _ENV}),
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
                    "summary": "Delete (cancels its build; removes its runtime if unused)",
                    "responses": {"204": _resp("Deleted"), **_ERRORS},
                },
            },
            "/api/environments/{id}/rebuild": {
                "parameters": _ENV_ID,
                "post": {
                    "summary": "Resolve the ref again and rebuild (reuses identical runtimes)",
                    "responses": {"202": _resp("Queued", _ENV), "409": _resp("Busy", _ERROR), **_ERRORS},
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
                "parameters": [
                    *_ENV_ID,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"},
                     "description": "Resume after this line (server-sent events)"},
                ],
                "get": {
                    "summary": "Build log of the latest build",
                    "description": (
                        "Plain text, or server-sent events with Accept: text/event-stream: one "
                        "event per line (id = line number), 'status' events while it runs, and "
                        "an 'end' event with the final status."
                    ),
                    "responses": {
                        "200": {
                            "description": "The log",
                            "content": {"text/plain": {}, "text/event-stream": {}},
                        },
                        **_ERRORS,
                    },
                },
            },
            "/api/servers": {
                "get": {
                    "summary": "Your hub servers, with the environment each runs on",
                    "responses": {"200": _resp("Servers", {"type": "array", "items": {"type": "object"}}), "403": _ERRORS["403"]},
                },
                "post": {
                    "summary": "Start a named server on one of your ready environments",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["name", "environment"],
                        "properties": {"name": {"type": "string"}, "environment": {"type": "integer"}}}}}},
                    "responses": {"202": _resp("Starting"), "400": _resp("Bad name", _ERROR),
                                  "404": _ERRORS["404"], "409": _resp("Environment not ready", _ERROR)},
                },
            },
            "/api/servers/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "remove", "in": "query", "schema": {"type": "boolean"},
                                "description": "delete the named server, not only stop it"}],
                "delete": {"summary": "Stop (or delete) one of your servers",
                           "responses": {"204": _resp("Stopped"), "404": _resp("No such server", _ERROR)}},
            },
            "/api/spawner/environments": {
                "get": {
                    "summary": "For the hub's spawner (the service's own token): a user's ready environments",
                    "parameters": [{"name": "user", "in": "query", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _resp("Environments"), "403": _ERRORS["403"]},
                }
            },
            "/api/spawner/environments/{id}": {
                "parameters": [*_ENV_ID, {"name": "user", "in": "query", "required": True, "schema": {"type": "string"}}],
                "get": {
                    "summary": "For the hub's spawner: what a server on this environment runs (venv or image, limits)",
                    "responses": {"200": _resp("Spawn spec"), "403": _ERRORS["403"], "404": _ERRORS["404"],
                                  "409": _resp("Not ready", _ERROR)},
                },
            },
            **_preprint_paths(),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (custom:neurolibre:admin unless configured open)",
                    "responses": {"200": _resp("Metrics", None), "403": _ERRORS["403"]},
                }
            },
        },
    }  # fmt: skip
