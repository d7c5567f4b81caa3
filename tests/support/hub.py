"""A real JupyterHub (with configurable-http-proxy) running the NeuroLibre service, for tests.

It loads the project's own jupyterhub_config.py (the embedded default) and changes only what
tests need: ports, a temporary data directory, a role layout with a user lacking access, a
service token to create users' API tokens, and builds that install from a local index.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "test-password"
SERVICE = "/services/neurolibre/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int, avoid: tuple[int, ...] = ()) -> list[int]:
    """n different free ports: each socket stays bound until all are picked (one at a time,
    the kernel can hand out the same port twice, and two services then fight over it)."""
    sockets = []
    try:
        while len(sockets) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in avoid:
                s.close()
                continue
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


CONFIG = """
load_subconfig({embedded!r})
c.JupyterHub.load_roles = [r for r in c.JupyterHub.load_roles if r["name"] != "user"] + [
    {{"name": "user", "scopes": ["self"]}},
    {{"name": "neurolibre-users", "scopes": ["access:services!service=neurolibre"],
      "users": ["alice", "bob", "dave"]}},
    {{"name": "test-admin", "scopes": ["admin:users", "tokens", "admin:servers", "list:users"],
      "services": ["test-admin"]}},
]
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {token!r}}})
c.DummyAuthenticator.password = {password!r}
c.JupyterHub.log_level = "INFO"
"""


class Hub:
    def __init__(self, workdir: Path, *, service_args: list[str] = (), name: str = "hub",
                 extra_config: str = ""):  # fmt: skip
        self.workdir = workdir / name
        self.data = self.workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.service_args = list(service_args)
        self.extra_config = extra_config
        self.log_path = self.workdir / "jupyterhub.log"
        self.proc: subprocess.Popen | None = None
        self.ports: list[int] | None = None  # hub API, proxy API, service, mail sink

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}{SERVICE}api/"

    @property
    def service_data(self) -> Path:
        return self.data / "neurolibre"

    def mails(self) -> list:
        """Emails the hub's mail sink received (email.message.EmailMessage), in no order."""
        import email
        import email.policy
        import mailbox

        if not (self.data / "mail" / "new").is_dir():
            return []  # the sink creates its Maildir with the first message
        box = mailbox.Maildir(self.data / "mail", create=False)
        return [email.message_from_bytes(m.as_bytes(), policy=email.policy.default) for m in box]

    def start(self, timeout: float = 60) -> None:
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(CONFIG.format(embedded=str(REPO / "jupyterhub_config.py"),
                                        token=self.token, password=PASSWORD)
                          + self.extra_config)  # fmt: skip
        # a restarted hub keeps its ports, as a deployment's would
        if self.ports is None:
            self.ports = free_ports(4, avoid=(self.port,))
        hub_api, proxy_api, service, mail_sink = self.ports
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "NEUROLIBRE_DATA": str(self.data),
            "NEUROLIBRE_HUB_PORT": str(self.port),
            "NEUROLIBRE_HUB_API_PORT": str(hub_api),
            "NEUROLIBRE_PROXY_API_PORT": str(proxy_api),
            "NEUROLIBRE_SERVICE_PORT": str(service),
            "NEUROLIBRE_MAIL_SINK_PORT": str(mail_sink),
            "NEUROLIBRE_EXTRA_ARGS": "\n".join(self.service_args),
        }
        self.log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config)],
            cwd=self.workdir, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterHub exited; see {self.log_path}:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.api}health", timeout=2)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the hub or service did not come up:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the hub process alone (a crash, or an operator's kill), and wait for it to
        end. What it started (proxy, services) is left to fend for itself; start() again to
        restart the hub on the same data directory and ports."""
        os.kill(self.proc.pid, sig)
        self.proc.wait(30)
        self.log_file.close()

    def service_pid(self) -> int | None:
        marker = f"--NeuroLibre.data_dir={self.service_data}".encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"neurolibre_service" in cmd and marker in cmd:
                    return int(entry.name)
        return None

    # -- identities -----------------------------------------------------------------------

    def admin_api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/hub/api/",
                            headers={"Authorization": f"token {self.token}"}, timeout=30)  # fmt: skip

    def api_token(self, user: str) -> str:
        with self.admin_api() as c:
            r = c.get(f"users/{user}")
            if r.status_code == 404:
                c.post(f"users/{user}").raise_for_status()
            r = c.post(f"users/{user}/tokens", json={"note": "test"})
            r.raise_for_status()
            return r.json()["token"]

    def token_client(self, user: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api, timeout=60,
                                 headers={"Authorization": f"token {self.api_token(user)}"})  # fmt: skip

    async def browser_client(self, user: str) -> BrowserSession:
        """Log in through the hub's form and the service's OAuth, like a browser."""
        c = httpx.AsyncClient(base_url=self.url, follow_redirects=True, timeout=60)
        await c.get("/hub/login")
        xsrf = c.cookies.get("_xsrf", path="/hub/")
        r = await c.post(f"/hub/login?next={SERVICE}environments",
                         data={"username": user, "password": PASSWORD, "_xsrf": xsrf})  # fmt: skip
        return BrowserSession(c, r)


class BrowserSession:
    def __init__(self, client: httpx.AsyncClient, landing: httpx.Response):
        self.client = client
        self.landing = landing

    @property
    def xsrf(self) -> str | None:
        return self.client.cookies.get("_xsrf", path=SERVICE)

    async def request(self, method: str, path: str, *, xsrf: bool = True, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        # a browser's fetch() sends these; the hub's XSRF rules depend on them
        headers.setdefault("Sec-Fetch-Mode", "cors")
        headers.setdefault("Sec-Fetch-Site", "same-origin")
        if xsrf and self.xsrf:
            headers["X-XSRFToken"] = self.xsrf
        return await self.client.request(method, f"{SERVICE}{path}", headers=headers, **kw)

    async def aclose(self) -> None:
        await self.client.aclose()


def service_config_args(**traits) -> list[str]:
    """Command-line options for the service; Class__name=value sets another class's trait."""
    args = []
    for k, v in traits.items():
        name = k.replace("__", ".") if "__" in k else f"NeuroLibre.{k}"
        args.append(f"--{name}={json.dumps(v) if not isinstance(v, str) else v}")
    return args
