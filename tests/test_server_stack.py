"""Two environments per server: the Jupyter server stack is the service's, the kernel the author's.

A preprint pinned for Python 3.8 with packages the hub's own stack cannot share (jsonschema 3,
SQLAlchemy 1.3; jupyterhub 6 needs Python >= 3.10, jsonschema >= 4, SQLAlchemy >= 1.4) builds
with the local builder. A server launched through the hub on it runs jupyterhub-singleuser
from the service's server environment; its kernel (Python 3.8, the pinned packages), its
terminals and the widgets' lab extension come from the author's environment.

The attack next to it: the author's environment (its postBuild) ships a jupyterhub-singleuser,
Jupyter server config files, a python3 kernelspec of its own and programs the server runs by
name (JupyterLab runs `node` and `npm` at start, Python's platform module `uname`). None of them
may run in, or be run by, the server process: the server must not run the author's code.

Real parts: the session's hub (local process spawner), uv builds from the package index on
127.0.0.1 (Python 3.8 wheels added from PyPI by the test setup), pyenv's Python 3.8.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from .conftest import build, need
from .support.kernel import run_in_kernel
from .support.pkgindex import PY38_REQUIREMENTS, cache_dir
from .support.procs import host_pid
from .support.wheelhouse import resolved_distributions, serve
from .test_environments_local import pyenv_python
from .test_servers import wait_ready

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

WIDGETS = "@jupyter-widgets/jupyterlab-manager"  # jupyterlab_widgets' prebuilt lab extension
PROGRAMS = ("node", "npm", "jlpm", "yarn", "git", "uname")

# the author's postBuild ($VIRTUAL_ENV is the environment being built; LOG is replaced)
HOSTILE_POST_BUILD = r"""#!/bin/sh
set -e
cd "$VIRTUAL_ENV"
for prog in PROGRAMS; do
  cat > "bin/$prog" <<EOF
#!/bin/sh
echo "$prog <- \$(/usr/bin/tr '\\0' ' ' < /proc/\$PPID/cmdline)" >> LOG
EOF
  chmod +x "bin/$prog"
done
cat > bin/jupyterhub-singleuser <<EOF
#!/bin/sh
echo "author's jupyterhub-singleuser ran" >> LOG
exit 1
EOF
chmod +x bin/jupyterhub-singleuser
mkdir -p etc/jupyter/jupyter_server_config.d share/jupyter/kernels/python3
for f in etc/jupyter/jupyter_server_config.py etc/jupyter/jupyter_notebook_config.py \
         share/jupyter/jupyter_server_config.py; do
  echo "print(\"author's config $f ran\", file=open('LOG', 'a'))" > "$f"
done
echo '{"ServerApp": {"jpserver_extensions": {"author_extension": true}}}' \
  > etc/jupyter/jupyter_server_config.d/author.json
cat > share/jupyter/kernels/python3/kernel.json <<EOF
{"argv": ["/bin/sh", "-c", "echo \"author's kernelspec ran\" >> LOG"],
 "display_name": "Python 3", "language": "python"}
EOF
echo "postBuild planted its files"
"""


@pytest.fixture(scope="module")
async def py38(hub, pkg_index, repos_root, tmp_path_factory):
    """alice's Python 3.8 environment (pins the hub's stack cannot share, ipywidgets, a hostile
    postBuild) and a server running on it."""
    from .support.repos import make_repo

    need("pyenv's Python 3.8", pyenv_python("3.8") is not None)
    serve(pkg_index, resolved_distributions(cache_dir(), ["ipykernel", "nbformat",
                                                          *PY38_REQUIREMENTS], "3.8"))  # fmt: skip
    planted = tmp_path_factory.mktemp("planted")
    log = planted / "ran"
    post_build = HOSTILE_POST_BUILD.replace("PROGRAMS", " ".join(PROGRAMS))
    repo = repos_root / f"py38-{time.time_ns()}"
    make_repo(repo, {
        "binder/runtime.txt": "Python-3.8\n",  # NeuroLibre's template's spelling
        "binder/requirements.txt": "".join(f"{r}\n" for r in PY38_REQUIREMENTS),
        "binder/postBuild": post_build.replace("LOG", str(log)),
        "analysis.ipynb": "{}",
    })  # fmt: skip
    async with hub.token_client("alice") as alice:
        env, lines = await build(alice, f"py38-{time.time_ns()}", repo)
    assert env["status"] == "ready", "\n".join(lines[-40:])
    name = f"py38-{time.time_ns()}"
    token = hub.api_token("alice")
    async with httpx.AsyncClient(timeout=120) as c:
        r = await c.post(f"{hub.url}/hub/api/users/alice/servers/{name}",
                         headers={"Authorization": f"token {token}"},
                         json={"environment": env["id"]})  # fmt: skip
    assert r.status_code in (201, 202), r.text
    await wait_ready(hub, "alice", name)
    yield {
        "env": env, "log": lines, "ran": log, "token": token,
        "url": f"{hub.url}/user/alice/{name}/",
        "location": hub.service_data / "environments" / env["runtime"]["key"],
    }  # fmt: skip
    with hub.admin_api() as c:
        c.delete(f"users/alice/servers/{name}", params={"remove": "true"})


def server_environments(hub) -> list[Path]:
    return sorted((hub.service_data / "service-environments").glob("server-*"))


async def lab_page_config(url: str, token: str) -> dict:
    """The JupyterLab page's configuration (what the browser loads extensions from)."""
    async with httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=60) as c:
        r = await c.get(f"{url}lab")
    assert r.status_code == 200, r.text[-500:]
    m = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                  r.text, re.S)  # fmt: skip
    assert m, r.text[:500]
    return json.loads(m.group(1))


async def run_in_terminal(url: str, token: str, command: str, expect: str,
                          timeout: float = 30) -> str:  # fmt: skip
    """Open a terminal on the server, type a command; the output once `expect` matches."""
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=timeout) as c:
        r = await c.post(f"{url}api/terminals")
        assert r.status_code == 200, r.text
        name = r.json()["name"]
        try:
            ws_url = url.replace("http", "ws", 1) + f"terminals/websocket/{name}"
            ws = await websocket_connect(HTTPRequest(ws_url, headers=headers))
            ws.write_message(json.dumps(["stdin", command + "\r"]))
            out = ""
            deadline = asyncio.get_running_loop().time() + timeout
            while not re.search(expect, out):
                left = deadline - asyncio.get_running_loop().time()
                raw = await asyncio.wait_for(ws.read_message(), max(left, 0.01))
                if raw is None:
                    break
                msg = json.loads(raw)
                if msg[0] == "stdout":
                    out += msg[1]
            ws.close()
            return out
        finally:
            await c.delete(f"{url}api/terminals/{name}")


async def test_a_python_3_8_preprint_pinned_against_the_hubs_stack_runs_on_a_hub_server(hub, py38):
    env, location, url, token = py38["env"], py38["location"], py38["url"], py38["token"]
    assert env["runtime"]["python_version"] == "3.8"
    assert any(re.fullmatch(r"Kernel: ipykernel [\d.]+ on Python 3\.8\.\d+", line)
               for line in py38["log"]), py38["log"][-20:]  # fmt: skip

    # the kernel the server starts by default is the author's: Python 3.8, the pinned packages
    out = await run_in_kernel(url, token, (
        "import os, sys, jsonschema, sqlalchemy, ipywidgets\n"
        "print('%d.%d' % sys.version_info[:2], jsonschema.__version__, sqlalchemy.__version__,"
        " sys.prefix, os.environ['VIRTUAL_ENV'], os.environ['PATH'].split(os.pathsep)[0])"
    ))  # fmt: skip
    assert out.split() == ["3.8", "3.2.0", "1.3.24", str(location), str(location),
                           str(location / "bin")]  # fmt: skip
    async with httpx.AsyncClient(headers={"Authorization": f"token {token}"}) as c:
        specs = (await c.get(f"{url}api/kernelspecs")).json()
    assert specs["default"] == "python3"
    assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == str(location / "bin" / "python")

    # the widgets' lab extension ships in the author's environment, not in the server's, and
    # the browser gets it
    servers = server_environments(hub)
    assert servers and not any((s / "share/jupyter/labextensions/@jupyter-widgets").exists()
                               for s in servers)  # fmt: skip
    assert (location / f"share/jupyter/labextensions/{WIDGETS}").is_dir()
    config = await lab_page_config(url, token)
    extension = next(e for e in config["federated_extensions"] if e["name"] == WIDGETS)
    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as c:
        js = await c.get(f"{config['fullLabextensionsUrl']}/{WIDGETS}/{extension['load']}",
                         headers={"Authorization": f"token {token}"})  # fmt: skip
    assert js.status_code == 200 and len(js.content) > 1000

    # a terminal works in the author's environment
    out = await run_in_terminal(url, token, 'echo "NL=$((6*7)):$VIRTUAL_ENV:$(command -v python)"',
                                r"NL=42:\S+")  # fmt: skip
    assert f"NL=42:{location}:{location}/bin/python" in out


async def test_what_the_authors_environment_ships_does_not_run_in_the_server(hub, py38):
    location, url, token = py38["location"], py38["url"], py38["token"]
    # use the server as a reader would: the lab page, its build check, kernels, a terminal
    await lab_page_config(url, token)
    async with httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=60) as c:
        assert (await c.get(f"{url}lab/api/build")).status_code == 200
        assert (await c.get(f"{url}api/kernelspecs")).status_code == 200
    ns_pid = int(await run_in_kernel(url, token, "import os; print(os.getppid())"))
    # (the server runs confined: in its own pid namespace)
    server_pid = host_pid(ns_pid, f"JUPYTERHUB_SERVICE_PREFIX={urlsplit(url).path}")
    await run_in_terminal(url, token, f'echo "NL=$((6*7)) {uuid.uuid4().hex}"', r"NL=42 ")

    # the server process is the service's jupyterhub-singleuser, on the service's Python, with
    # the hub's PATH and no configuration directory of the author's
    argv = Path(f"/proc/{server_pid}/cmdline").read_bytes().decode().split("\0")
    [server_env] = server_environments(hub)
    assert argv[1] == str(server_env / "bin" / "jupyterhub-singleuser"), argv
    assert Path(f"/proc/{server_pid}/exe").resolve() == (server_env / "bin/python").resolve()
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{server_pid}/environ").read_bytes().decode().split("\0") if item)  # fmt: skip
    assert str(location) not in environ["PATH"]
    assert environ["JUPYTER_PATH"] == str(location / "share" / "jupyter")
    assert "JUPYTER_CONFIG_PATH" not in environ and "VIRTUAL_ENV" not in environ

    # nothing the author planted ran in the server or was run by it (the kernel, the author's
    # own code, may run the author's programs)
    ran = py38["ran"].read_text().splitlines() if py38["ran"].exists() else []
    assert [line for line in ran if line.startswith("author's")] == []
    by_server = [line for line in ran if "jupyterhub-singleuser" in line.partition(" <- ")[2]]
    assert by_server == []


async def test_a_server_environment_that_cannot_be_built_refuses_spawns_clearly(
    start_hub, new_repo, pkg_index
):
    # the operator named a package the index does not have: the service stays up, builds go
    # on (authors' environments do not need it), and a spawn gets the reason, not a 500
    hub = start_hub("broken-stack", server_packages=["jupyterlab", "nl-no-such-server-stack==1"])
    req = pkg_index.add_sdist(pkg_index.sdists, f"nl-stackless-{time.time_ns()}", "1.0", "")
    repo, _ = new_repo({"binder/requirements.txt": f"{req}\n"})
    async with hub.token_client("alice") as alice:
        env, lines = await build(alice, "stackless", repo)
        assert env["status"] == "ready", "\n".join(lines[-30:])
        async with httpx.AsyncClient(timeout=120) as c:
            r = await c.post(f"{hub.url}/hub/api/users/alice/servers/x",
                             headers={"Authorization": f"token {hub.api_token('alice')}"},
                             json={"environment": env["id"]})  # fmt: skip
        assert r.status_code == 503, r.text
        message = r.json()["message"]
        assert message.startswith("The service's server environment (jupyterlab "
                                  "nl-no-such-server-stack==1) could not be built")  # fmt: skip
        assert "the operator can see why in the service's log" in message
        assert message.endswith("No server can start until it is built.")
        assert (await alice.get("health")).status_code == 200
    log = hub.log_path.read_text(errors="replace")
    assert (
        "The server environment (jupyterlab nl-no-such-server-stack==1) could not be built" in log
    )
    assert "nl-no-such-server-stack" in log.partition("could not be built")[2]
