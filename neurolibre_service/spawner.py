"""Spawner integration: hub servers run on environments the service built for their user.

`user_options` carry only `environment` (an id). The spawner asks the service what that is
(its venv or image, limits) for this user and refuses anything else: no raw image, command or
path from users. Mix it into a spawner class:

    class NeuroLibreLocalSpawner(NeuroLibreSpawnerMixin, SimpleLocalProcessSpawner): ...

Docker and Kubernetes spawners plug in the same way: only `_use_environment` differs.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
from typing import Any

import httpx
from dockerspawner import DockerSpawner
from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Bool, Unicode, default
from traitlets.config import LoggingConfigurable

ALLOWED_OPTIONS = {"environment", "version"}  # ids only: the service decides the rest
# a terminal of a local server, `/bin/sh -c AUTHOR_SHELL <author env>`: what a login shell
# reads, then the author's environment first on PATH, then the user's shell (interactive)
AUTHOR_SHELL = ('[ -r /etc/profile ] && . /etc/profile; export PATH="$0/bin:$PATH" '
                'VIRTUAL_ENV="$0"; exec "${SHELL:-/bin/sh}" -i')  # fmt: skip


class NeuroLibreSpawnerMixin(LoggingConfigurable):
    neurolibre_url = Unicode(
        "http://127.0.0.1:10101/services/neurolibre/",
        help="The NeuroLibre service's own URL (not through the proxy), ending in /.",
    ).tag(config=True)
    neurolibre_token = Unicode(
        help="The service's API token (the hub's services entry api_token), to ask it about environments."
    ).tag(config=True)
    require_environment = Bool(
        False, help="Refuse servers started without an environment (else they run the default)."
    ).tag(config=True)

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_user_options

    async def _ask(self, path: str, timeout: float = 30, **params: Any) -> httpx.Response:
        async with httpx.AsyncClient(timeout=timeout) as client:
            return await client.get(
                f"{self.neurolibre_url}api/spawner/{path}",
                params=params,
                headers={"Authorization": f"token {self.neurolibre_token}"},
            )

    async def _default_options_form(self) -> str:
        r = await self._ask("environments", user=self.user.name)
        envs = r.json() if r.status_code == 200 else []
        if not envs:
            then = ("it cannot start" if self.require_environment
                    else "this server will run the default environment")  # fmt: skip
            return (
                f"<p>You have no ready NeuroLibre environment, so {then}. Build one on the "
                "NeuroLibre environments page.</p>"
            )
        options = "".join(
            f'<option value="{e["id"]}">{html.escape(e["name"])} '
            f"({html.escape(e['repository'])} @ {html.escape(e['ref'])})</option>"
            for e in envs
        )
        return (
            '<label for="nl-environment">Environment</label>'
            f'<select class="form-control" name="environment" id="nl-environment">{options}</select>'
        )

    @default("options_form")
    def _options_form_default(self):
        return lambda spawner: spawner._default_options_form()

    def options_from_form(self, formdata: dict) -> dict:
        value = (formdata.get("environment") or [""])[0]
        return {"environment": value} if value else {}

    def options_from_query(self, query_data: dict) -> dict:
        return self.options_from_form(query_data)

    async def _use_environment(self, spec: dict) -> None:
        raise NotImplementedError

    def get_env(self) -> dict:
        env = super().get_env()
        if getattr(self, "_nl_venv", None):
            env["NEUROLIBRE_ENVIRONMENT"] = str(self.user_options.get("environment", ""))
        if (getattr(self, "_nl_spec", None) or {}).get("token_in_url"):
            # a temporary reader's browser arrives with its launch's token, once (BinderHub's way)
            env["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] = "1"  # noqa: S105 (a switch)
        return env


async def _apply_user_options(spawner: NeuroLibreSpawnerMixin, user_options: dict) -> None:
    extra = set(user_options or {}) - ALLOWED_OPTIONS
    if extra:
        raise web.HTTPError(400, f"Unsupported server options: {', '.join(sorted(extra))}. "
                                 "Only an environment may be chosen.")  # fmt: skip
    spawner._nl_venv = None
    spawner._nl_spec = {}
    env_id = (user_options or {}).get("environment")
    version = (user_options or {}).get("version")
    if version is not None and not str(version).isdigit():
        raise web.HTTPError(400, f"Unknown published version {version!r}.")
    if env_id in (None, ""):
        if spawner.require_environment:
            raise web.HTTPError(400, "Choose a NeuroLibre environment for this server.")
        return
    if not str(env_id).isdigit():
        raise web.HTTPError(400, f"Unknown environment {env_id!r}.")
    try:
        # the service may still be building its server environment (once, at its start)
        params: dict[str, Any] = {"user": spawner.user.name, "server": spawner.name or ""}
        if version is not None:
            params["version"] = int(version)
        r = await spawner._ask(f"environments/{int(env_id)}",
                               timeout=max(30.0, float(spawner.start_timeout)), **params)  # fmt: skip
    except httpx.HTTPError as e:
        raise web.HTTPError(503, f"The NeuroLibre service did not answer ({type(e).__name__}); "
                                 "try again in a minute.") from None  # fmt: skip
    if r.status_code != 200:
        try:
            message = r.json()["message"]
        except (ValueError, KeyError):
            message = f"The NeuroLibre service answered {r.status_code}."
        raise web.HTTPError(400 if r.status_code < 500 else 503, message)
    spec = r.json()
    spawner.user_options = {"environment": int(env_id)}
    if version is not None:
        spawner.user_options["version"] = int(version)
    spawner._nl_spec = spec
    if spec.get("cpu_limit"):
        spawner.cpu_limit = float(spec["cpu_limit"])
    if spec.get("mem_limit"):
        spawner.mem_limit = spec["mem_limit"]
    await spawner._use_environment(spec)


class NeuroLibreLocalProcessMixin(NeuroLibreSpawnerMixin):
    """Local processes: two environments per server. The server (jupyterhub-singleuser,
    JupyterLab) runs from the service's own server environment; the author's environment
    gives the kernel, and its share/jupyter (kernelspec, widgets, lab extensions) is found
    through JUPYTER_PATH.

    The server process keeps the hub's PATH: it runs programs by name (JupyterLab runs `node`
    and `npm` at start, Python's platform module `uname`), and the author's bin/ must not
    provide them. The author's bin comes first where the author's code runs: in the kernel
    (its kernelspec, written by the service) and in terminals (their shell command below).
    """

    confined = False  # whether servers run under the service's bubblewrap prefix

    async def start(self):
        ip, port = await super().start()
        # The hub checks a new server with growing, random back-off (up to seconds between
        # tries); waiting here for the port to open lets its first check succeed.
        deadline = asyncio.get_running_loop().time() + self.http_timeout
        while asyncio.get_running_loop().time() < deadline:
            if await self.poll() is not None:
                break  # it died: let the hub report that
            try:
                _, writer = await asyncio.open_connection(ip or "127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        return ip, port

    async def _use_environment(self, spec: dict) -> None:
        if spec.get("backend") != "local":
            raise web.HTTPError(400, f"Environment {spec['id']} is not a local environment.")
        if not spec.get("server"):
            raise web.HTTPError(503, "The NeuroLibre service gave no server environment for "
                                     f"environment {spec['id']}.")  # fmt: skip
        self._nl_venv = spec["location"]
        # never the author's environment's: what the server process runs is the service's
        self.cmd = [os.path.join(spec["server"], "bin", "jupyterhub-singleuser")]
        self._nl_workdir = spec.get("workdir")
        if self._nl_workdir:
            # its own directory: the preprint's files, data/<projectName> read-only
            self.notebook_dir = self._nl_workdir
        if self.confined and spec.get("confine"):
            # bubblewrap as the unprivileged build user (the service built the prefix)
            self.cmd = [*spec["confine"], *self.cmd]

    def get_args(self) -> list[str]:
        args = super().get_args()
        venv = getattr(self, "_nl_venv", None)
        if venv:
            # a terminal's shell: the login profile, then the author's environment first
            shell = ["/bin/sh", "-c", AUTHOR_SHELL, venv]
            args.append(f"--ServerApp.terminado_settings=shell_command={json.dumps(shell)}")
        return args

    def get_env(self) -> dict:
        env = super().get_env()
        if getattr(self, "_nl_workdir", None):
            env["HOME"] = self._nl_workdir
        venv = getattr(self, "_nl_venv", None)
        if venv:
            # data files only (kernels, lab extensions): the server's configuration and code
            # come from its own environment (JUPYTER_CONFIG_PATH is not set)
            jupyter_path = os.path.join(venv, "share", "jupyter")
            if env.get("JUPYTER_PATH"):  # the operator's, after the author's
                jupyter_path += os.pathsep + env["JUPYTER_PATH"]
            env["JUPYTER_PATH"] = jupyter_path
        return env


class NeuroLibreLocalProcessSpawner(NeuroLibreLocalProcessMixin, LocalProcessSpawner):
    """Servers as the users' own system accounts (their unix permissions separate them)."""

    confined = False


class NeuroLibreSimpleLocalProcessSpawner(NeuroLibreLocalProcessMixin, SimpleLocalProcessSpawner):
    """Every server as the hub's user would be root here: each runs confined like a build
    (bubblewrap, the unprivileged build user), writing only its own directory."""

    confined = True


class NeuroLibreDockerMixin(NeuroLibreSpawnerMixin):
    """Containers (DockerSpawner): the server runs on the environment's image, nothing else.

    The image comes from the service (docker or binderhub backends), never from the user; the
    operator's DockerSpawner settings (network, volumes, user) stay as configured.
    """

    async def _use_environment(self, spec: dict) -> None:
        if spec.get("backend") not in ("docker", "binderhub"):
            raise web.HTTPError(400, f"Environment {spec['id']} is not built as an image "
                                     "(it is a local environment; use a local spawner).")  # fmt: skip
        self.image = spec["location"]
        # the preprint's datasets, read-only where its notebooks look: data/<projectName>
        if not hasattr(self, "_nl_volumes"):
            self._nl_volumes = dict(self.volumes)  # the operator's own volumes
        home = self.notebook_dir or "/home/jovyan"
        workdir = {spec["workdir"]: {"bind": home, "mode": "rw"}} if spec.get("workdir") else {}
        self.volumes = {
            **self._nl_volumes,
            **workdir,
            **{d["path"]: {"bind": f"{home}/data/{d['project_name']}", "mode": "ro"}
               for d in spec.get("datasets") or []},
        }  # fmt: skip


class NeuroLibreDockerSpawner(NeuroLibreDockerMixin, DockerSpawner):
    """DockerSpawner on NeuroLibre images; also on a bridge-less engine (network_name "host").

    An image that is not on the engine (built by a BinderHub, pushed to a registry) is pulled
    by DockerSpawner (pull_policy), with `registry_username`/`registry_password` when set.
    """

    registry_username = Unicode(
        "", help="Login for pulling environment images from their registry; empty: no login."
    ).tag(config=True)
    registry_password = Unicode(
        help="Password for that login. Default: the NEUROLIBRE_REGISTRY_PASSWORD variable."
    ).tag(config=True)

    @default("registry_password")
    def _default_registry_password(self) -> str:
        return os.environ.get("NEUROLIBRE_REGISTRY_PASSWORD", "")

    def _docker(self, method, *args, **kwargs):
        # DockerSpawner pulls without credentials; docker-py takes them per call
        if method == "pull" and self.registry_username and "auth_config" not in kwargs:
            kwargs["auth_config"] = {"username": self.registry_username,
                                     "password": self.registry_password}  # fmt: skip
        return super()._docker(method, *args, **kwargs)

    @default("options_form")
    def _options_form_default(self):
        # the environment list, not DockerSpawner's image list: users never pick an image
        return lambda spawner: spawner._default_options_form()

    async def start(self):
        if self.network_name == "host":
            # containers share the host's ports: each server gets a free one, on loopback
            # unless the operator says otherwise
            self.port = random_port()
            self.use_internal_ip = True  # no port publishing on the host network
            if self.ip in ("", "0.0.0.0"):  # noqa: S104 (we replace it, not bind it)
                self.ip = "127.0.0.1"
        return await super().start()

    async def get_ip_and_port(self):
        if self.network_name == "host":
            return self.ip, self.port
        return await super().get_ip_and_port()
