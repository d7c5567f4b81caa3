"""Hostile repositories, built through the real service and with `neurolibre build`.

Each attack is one a session tried against the embedded default (issue 11): a notebook that
unmounts the sandbox's /tmp to read the hub's cookie secret, remounts / read-write, reads a
root-only file, allocates more memory than allowed, calls the hub; a package whose setup.py
points the new environment at the hub's data directory; a symbolic link that publishes a file
of the host; a dataset's code that changes what the next author's dataset code runs with.

Each test asserts what the user sees (the preview, the logs, the email) and that nothing
escaped: a canary file outside the sandbox is never read or written, and the hub's secrets
appear nowhere.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import follow_log
from .support.dataenv import serve_data_wheels
from .support.preprints import notebook, preprint
from .support.repos import make_repo

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def canary():
    """A root-only file and a root-only directory the sandbox can see but must not touch."""
    if os.geteuid() != 0:
        pytest.skip("the canary is a root-only file: run as root")
    top = Path("/var/tmp") / f"nl-canary-{secrets.token_hex(4)}"
    top.mkdir(mode=0o755)
    secret = top / "secret.txt"
    text = f"CANARY-{secrets.token_hex(12)}"
    secret.write_text(text)
    secret.chmod(0o600)
    yield {"dir": top, "file": secret, "text": text, "pwned": top / "pwned"}
    shutil.rmtree(top, ignore_errors=True)


def attack_notebook(hub_secret: Path, canary: dict, hub_port: int) -> str:
    """The cells an attacker's notebook runs; each prints what it achieved."""
    return notebook(
        "import os, socket, subprocess\n"
        "caps = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status')\n"
        "        if l.startswith('Cap') or l.startswith('NoNewPrivs')}\n"
        "print('CapEff', caps['CapEff'], 'CapBnd', caps['CapBnd'],\n"
        "      'NoNewPrivs', caps['NoNewPrivs'], 'root', os.getuid() == 0)",
        # issue 11, attack 1: uncover the hidden /tmp, then make / writable
        "def sh(cmd):\n"
        "    r = subprocess.run(['sh', '-c', cmd], capture_output=True, text=True)\n"
        "    return r.returncode, (r.stdout + r.stderr)[-400:]\n"
        f"print('umount attack', sh(\"unshare --mount --propagation private sh -c "
        f"'umount -l /tmp && cat {hub_secret}'\"))\n"
        f"print('userns attack', sh(\"unshare -Ur --mount sh -c 'umount -l /tmp; "
        f"cat {hub_secret}; mount -o remount,bind,rw / && echo x > {canary['pwned']}'\"))",
        "try:\n"
        f"    print('canary read', open({str(canary['file'])!r}).read())\n"
        "except OSError as e:\n"
        "    print('canary unreadable', type(e).__name__)\n"
        "try:\n"
        f"    open({str(canary['pwned'])!r}, 'w').write('x')\n"
        "    print('canary written')\n"
        "except OSError as e:\n"
        "    print('canary dir unwritable', type(e).__name__)",
        # issue 11, attack 10: no memory limit
        "try:\n"
        "    big = bytearray(6 * 2**30)\n"
        "    print('allocated 6 GiB')\n"
        "except MemoryError:\n"
        "    print('memory limit held')",
        # the hub's API from a notebook
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {hub_port}), timeout=3).close()\n"
        "    print('reached the hub')\n"
        "except OSError as e:\n"
        "    print('hub unreachable', type(e).__name__)\n"
        f"print('hub data visible', os.path.exists({str(hub_secret)!r}))",
        # issue 11, attack 4, past the layout check: a link made while the book builds, for
        # Sphinx to copy into the published _static/
        "os.makedirs('_static', exist_ok=True)\n"
        f"os.symlink({str(canary['file'])!r}, '_static/leak.txt')\n"
        "print('link made')",
    )


# setup.py of a package: find the environment being built (the sandbox's writable bind) and
# point it at the hub's data directory, as the attack 2 did
EVIL_SETUP = """
import os
for line in open('/proc/self/mountinfo'):
    fields = line.split()
    where, options = fields[4], fields[5]
    cfg = os.path.join(where, 'pyvenv.cfg')
    if options.startswith('rw') and os.path.isfile(cfg):
        lines = [l for l in open(cfg) if not l.startswith('home')]
        open(cfg, 'w').write('home = {hub_data}/bin\\n' + ''.join(lines))
        open(os.path.join(where, 'EVIL-RAN'), 'w').write(cfg)
"""

# Issue 11, attack 3, as datasets are made now: a src that is Python code runs in the service's
# data environment (repo2data, nilearn), shared by every preprint. Bob's code tries to change
# that environment (nilearn, repo2data, a .pth every later python runs) so that the next
# author's code runs his; it is read-only to fetches. (A dataset made by code is keyed by its
# src and the data environment's packages: an author's environment no longer plays a part, so
# the same src text from two preprints is rightly the same dataset, as for a URL.)
BOB_SRC = (
    "import os, sys, nilearn, repo2data;\n"
    "def attempt(path, text, mode):\n"
    "    try:\n"
    "        with open(path, mode) as f:\n"
    "            f.write(text)\n"
    "        return 'written'\n"
    "    except OSError as e:\n"
    "        return type(e).__name__\n"
    "lib = os.path.dirname(os.path.dirname(nilearn.__file__))\n"
    "tries = [attempt(os.path.join(lib, 'nilearn', '__init__.py'), '\\nprint(\"POISONED\")\\n', 'a'),\n"
    "         attempt(os.path.join(lib, 'nl-evil.pth'), 'import sys; print(\"POISONED\")\\n', 'w'),\n"
    "         attempt(os.path.join(os.path.dirname(repo2data.__file__), 'repo2data.py'), '', 'w')]\n"
    "os.makedirs(_dst, exist_ok=True)\n"
    "open(os.path.join(_dst, 'values.txt'), 'w').write(' '.join(['BOB', *tries, sys.prefix]))\n"
)
ALICE_SRC = (
    "from nilearn import datasets; import os, sys, nilearn; os.makedirs(_dst, exist_ok=True); "
    "open(os.path.join(_dst, 'values.txt'), 'w').write('CLEAN nilearn ' + nilearn.__version__);"
)
DATA = {"src": BOB_SRC, "dst": "./data", "projectName": "values"}
READ_DATA = "print('values', open('../data/values/values.txt').read())"
# the author's own kernel has no nilearn: the data's code did not run there
AUTHOR_NILEARN = (
    "import importlib.util\nprint('author nilearn', importlib.util.find_spec('nilearn'))"
)


def secrets_of(hub) -> list[str]:
    found = [hub.token, (hub.data / "neurolibre-service-token").read_text().strip()]
    cookie = hub.data / "jupyterhub_cookie_secret"
    if cookie.exists():
        found.append(cookie.read_text().strip())
    return [s for s in found if s]


async def submit_and_finish(client: httpx.AsyncClient, repo: Path, email: str) -> tuple[dict, str]:
    r = await client.post("preprints", json={"repository": str(repo), "ref": "main",
                                             "email": email})  # fmt: skip
    assert r.status_code == 201, r.text
    build_id = r.json()["latest_build"]["id"]
    lines, status = await follow_log(client, f"builds/{build_id}/logs/main", timeout=800)
    assert status is not None, lines[-20:]
    text = "\n".join(t for _, t in lines)
    for stage in ("environment", "data", "book"):
        text += "\n" + (await client.get(f"builds/{build_id}/logs/{stage}")).text
    return (await client.get(f"builds/{build_id}")).json(), text


def outputs(page: str) -> str:
    """The text of a book page's cell outputs (not its source, which names every result)."""
    found = re.findall(r'class="cell_output.*?<pre>(.*?)</pre>', page, re.S)
    return "\n".join(html.unescape(re.sub(r"<[^>]+>", "", f)) for f in found)


async def preview(hub, client: httpx.AsyncClient, build_id: int, page: str) -> str:
    base = hub.url + "/services/neurolibre/"
    async with httpx.AsyncClient(headers=client.headers, timeout=30, follow_redirects=True) as c:
        r = await c.get(base + f"builds/{build_id}/preview/{page}")
        return r.text if r.status_code == 200 else ""


async def test_a_hostile_preprint_reaches_nothing_outside_its_sandbox(
    hub, new_repo, pkg_index, canary
):
    hub_secret = hub.data / "jupyterhub_cookie_secret"
    evil = pkg_index.add_sdist(pkg_index.sdists, "nl-evil", "1.0",
                               EVIL_SETUP.replace("{hub_data}", str(hub.data)))  # fmt: skip
    serve_data_wheels(pkg_index)  # the service's data environment installs from it
    nb = attack_notebook(hub_secret, canary, hub.port)
    files = preprint({"analysis": nb, "values": notebook(READ_DATA, AUTHOR_NILEARN)}, data=DATA)
    files["binder/requirements.txt"] += f"{evil}\n"
    repo, _ = new_repo(files)

    async with hub.token_client("bob") as bob:
        build, logs = await submit_and_finish(bob, repo, "bob@example.org")
        assert build["status"] == "succeeded", (build["error"], logs[-3000:])
        page = outputs(await preview(hub, bob, build["id"], "analysis.html"))
        leak = await preview(hub, bob, build["id"], "_static/leak.txt")
        assert leak == ""
        values = outputs(await preview(hub, bob, build["id"], "values.html"))

    # what the reader of the preview sees: every attack failed
    assert "CapEff 0000000000000000 CapBnd 0000000000000000 NoNewPrivs 1 root False" in page
    assert "umount attack (1," in page and "userns attack (" in page
    assert "canary unreadable PermissionError" in page
    assert "canary dir unwritable" in page and "canary written" not in page
    assert "memory limit held" in page
    assert "hub unreachable" in page
    assert "hub data visible False" in page
    # bob's data was made by the data environment's python, which his code could not change;
    # his own kernel has no nilearn
    data_envs = hub.service_data / "service-environments"
    assert re.search(rf"values BOB \w+Error \w+Error \w+Error {data_envs}/data-\w+\n", values), (
        values
    )
    assert "author nilearn None" in values
    # nothing escaped: not the canary, not the hub's secrets, anywhere
    mails = [m for m in hub.mails() if m["To"] == "bob@example.org"]
    seen = page + leak + logs + "".join(m.as_string() for m in mails)
    assert canary["text"] not in seen
    for secret in secrets_of(hub):
        assert secret not in seen
    assert not canary["pwned"].exists()
    assert canary["file"].read_text() == canary["text"]
    # the environment points at the interpreter the service chose, not at the hub's data
    env = hub.service_data / "environments" / build["runtime_key"]
    assert (env / "EVIL-RAN").exists()  # the attack ran, and rewrote pyvenv.cfg
    assert str(hub.data) not in (env / "pyvenv.cfg").read_text()
    record = json.loads(env.with_name(env.name + ".json").read_text())
    assert (env / "bin" / "python").resolve() == Path(record["python"])
    # the finished environment is the service's: the build user can no longer change it
    assert os.stat(env / "pyvenv.cfg").st_uid == 0
    assert not os.stat(env / "bin").st_mode & 0o022

    # the data environment is the service's: owned by it, writable by nobody else
    (data_env,) = [p for p in data_envs.glob("data-*") if p.is_dir()]
    assert os.stat(data_env / "bin").st_uid == 0
    assert not os.stat(data_env / "bin").st_mode & 0o022
    assert not list(data_env.glob("lib/python3*/site-packages/nl-evil.pth"))

    # issue 11, attack 3: alice's dataset code runs next, with nilearn, in the same data
    # environment: nothing of bob's runs
    files = preprint({"values": notebook(READ_DATA)}, data={**DATA, "src": ALICE_SRC})
    repo, _ = new_repo(files)
    async with hub.token_client("alice") as alice:
        mine, logs = await submit_and_finish(alice, repo, "")
        assert mine["status"] == "succeeded", (mine["error"], logs[-3000:])
        values = outputs(await preview(hub, alice, mine["id"], "values.html"))
        assert "values CLEAN nilearn 0." in values, values
    assert "POISONED" not in logs
    assert mine["datasets"][0]["key"] != build["datasets"][0]["key"]


def test_neurolibre_build_of_a_hostile_preprint_escapes_nothing(tmp_path, pkg_index, canary):
    secret = tmp_path / "service-secret"  # a file of the service, outside the sandbox
    secret.write_text(f"SECRET-{secrets.token_hex(8)}")
    secret.chmod(0o600)
    repo = tmp_path / "hostile"
    files = preprint({"analysis": attack_notebook(secret, canary, 9)})
    files["content/_config.yml"] += "sphinx:\n  config:\n    html_static_path: ['_static']\n"
    make_repo(repo, files)
    env = {**os.environ, "UV_DEFAULT_INDEX": pkg_index.url}
    run = subprocess.run(
        [str(Path(sys.executable).parent / "neurolibre"), "build", str(repo),
         "--data-dir", str(tmp_path / "cache")],
        env=env, capture_output=True, text=True, timeout=550,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    index = next(line for line in out.splitlines() if line.startswith("Built: file://"))
    book = Path(index.removeprefix("Built: file://")).parent
    page = outputs((book / "analysis.html").read_text())
    assert "CapEff 0000000000000000" in page and "root False" in page
    assert "canary unreadable PermissionError" in page and "memory limit held" in page
    published = "".join(p.read_text(errors="replace") for p in book.rglob("*") if p.is_file())
    for text in (canary["text"], secret.read_text()):
        assert text not in out and text not in published
    assert not canary["pwned"].exists()
