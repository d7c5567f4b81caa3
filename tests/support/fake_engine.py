"""A Docker engine's API on 127.0.0.1 that has no images and asks a registry that wants a login.

A test double of dockerd, not of our code: it answers what a real dockerd (Debian's docker.io)
answered, recorded against Debian's docker-registry with an htpasswd login, for
`GET /distribution/{name}/json` (test_binderhub_hub.py checks the real one still does):
no X-Registry-Auth: 500 `Head "http://REGISTRY/v2/NAME/manifests/TAG": no basic auth
credentials`; a wrong login: 401 `unauthorized: authentication required`; the right login: 200
and the image's descriptor, or 404 `manifest unknown: manifest unknown` for an image the
registry does not have. Starting a real dockerd takes a minute; this takes milliseconds.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

API = "1.43"


class FakeEngine:
    def __init__(self, user: str, password: str, images: set[str] = frozenset()) -> None:
        self.user, self.password = user, password
        self.images = set(images)  # names the registry has
        self.asked: list[tuple[str, str | None]] = []  # (name, username or None)
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = unquote(self.path.split("?")[0]).lstrip("/")
                if path.startswith("v1."):
                    path = path.partition("/")[2]
                if path == "version":
                    self._answer(200, {"Version": "fake", "ApiVersion": API})
                elif path.startswith("images/") and path.endswith("/json"):
                    name = path[len("images/") : -len("/json")]
                    self._answer(404, {"message": f"No such image: {name}"})
                elif path.startswith("distribution/") and path.endswith("/json"):
                    self._distribution(path[len("distribution/") : -len("/json")])
                else:
                    self._answer(404, {"message": "page not found"})

            def _distribution(self, name: str) -> None:
                auth = _login(self.headers.get("X-Registry-Auth"))
                engine.asked.append((name, auth.get("username")))
                host, _, rest = name.partition("/")
                repo, _, tag = rest.rpartition(":")
                if not auth:
                    self._answer(500, {"message": f'Head "http://{host}/v2/{repo}/manifests/'
                                       f'{tag}": no basic auth credentials'})  # fmt: skip
                elif (auth.get("username"), auth.get("password")) != (engine.user,
                                                                      engine.password):  # fmt: skip
                    self._answer(401, {"message": "unauthorized: authentication required"})
                elif name not in engine.images:
                    self._answer(404, {"message": "manifest unknown: manifest unknown"})
                else:
                    self._answer(200, {"Descriptor": {"mediaType": "application/vnd.docker."
                                                      "distribution.manifest.v2+json"}})  # fmt: skip

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"tcp://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _login(header: str | None) -> dict:
    if not header:
        return {}
    padded = header + "=" * (-len(header) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        return {}
