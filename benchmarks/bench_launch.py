"""Launch latency: from clicking a direct link to the server answering, through a real hub.

Two layouts of a server, measured in the same run and hub, launches interleaved:

  after    the server stack lives apart (the service's layout): the environment's
           requirements.txt names a new empty sdist, so it holds that and ipykernel; the server
           runs jupyterhub-singleuser from the service's shared server environment
           (c.NeuroLibre.server_packages, built once at the service's start), with the author's
           share/jupyter on JUPYTER_PATH.
  before   the layout before that change, reproduced: the environment's requirements.txt names
           the sdist and what every environment used to get (jupyterhub==<hub's version>,
           ipykernel, jupyterlab), and a benchmark-only spawner subclass (in the hub's config,
           not in the service) runs that environment's own jupyterhub-singleuser with its bin
           first on PATH, as the local spawner did.

One hub (the embedded config: the local process spawner; for `both` and `before`, the subclass
above, which behaves as the service's spawner for environments without a jupyterhub-singleuser),
both environments built first through the API and ready. Then, as alice logged in through the
hub's form (a browser session: cookies), --launches times per layout (alternating which layout
goes first), cycling over --names server names per layout:

  cold     stop and remove the server first (service API
           DELETE /services/neurolibre/api/servers/NAME?remove=true with the session's
           X-XSRFToken, then wait until the hub no longer lists it), then
           t0 = send GET /services/neurolibre/servers?name=NAME&environment=ID&path=...
           (no redirects followed): the service answers 302 to /hub/spawn-pending/...;
           from the 302 on, GET /user/alice/NAME/api/status with alice's hub API token
           (Authorization: token ..., through the hub's proxy, no redirects followed) every
           50 ms (sleep 50 ms after each answer that is not 200; bounded by --timeout) until 200.
           launch = t0 -> api/status 200; "link" = t0 -> 302; "after 302" = 302 -> 200.
  reopen   the server is running: the same link, --reopens times after each cold launch; the
           302 goes straight to /user/alice/NAME/lab/tree/...; timed the same way.

From the hub's log (millisecond timestamps; the single-user servers log there too), per cold
launch, as times after the link's t0: a. the hub runs the server process (its "Spawning ..."
line), b. the server's first ServerApp line (interpreter start and imports), c. its "Jupyter
Server ... is running at" line, d. the hub's "User alice:NAME took X seconds to start", e.
api/status answering 200.

Also: how long the service took to build its server environment at start (from the hub
becoming healthy to the environment's marker), and afterwards, with no server running, the
server's python (the server environment's, or the before-environment's) timed starting
(`-c pass`) and importing the server stack (`import jupyterhub.singleuser, jupyterlab`).

Usage: python benchmarks/bench_launch.py [--layout both|after|before] [--launches 8]
       [--names 3] [--reopens 2] [--import-reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Hub,
    hub_args,
    load,
    make_repo,
    median,
    package_index,
    pct,
    require_tools,
    table,
    uptime,
    workspace,
)

from tests.conftest import build  # importable once _common has set sys.path
from tests.support.hub import SERVICE

USER = "alice"
NOTEBOOK = "analysis.ipynb"
POLL = 0.05
STACK = "import jupyterhub.singleuser, jupyterlab"
LAYOUTS = ("after", "before")
# the hub's config for the "before" layout (benchmark only): an environment that has its own
# jupyterhub-singleuser runs it, with its bin first on PATH, as the local spawner did before
BEFORE_SPAWNER = """
import os
from neurolibre_service.spawner import NeuroLibreSimpleLocalProcessSpawner


class BenchBeforeSpawner(NeuroLibreSimpleLocalProcessSpawner):
    async def _use_environment(self, spec):
        await super()._use_environment(spec)
        own = os.path.join(spec["location"], "bin", "jupyterhub-singleuser")
        self._bench_before = os.path.exists(own)
        if self._bench_before:
            self.cmd = [own]

    def get_env(self):
        env = super().get_env()
        if getattr(self, "_bench_before", False):
            env.pop("JUPYTER_PATH", None)
            env["PATH"] = self._nl_venv + "/bin" + os.pathsep + env["PATH"]
            env["VIRTUAL_ENV"] = self._nl_venv
        return env


c.JupyterHub.spawner_class = BenchBeforeSpawner
"""
# "[I 2026-11-22 00:27:01.123 JupyterHub base:1193] User alice:x took 2.345 seconds to start"
LOG_TS = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def _log_time(line: str) -> float | None:
    m = LOG_TS.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp() if m else None


class HubLog:
    """Reads what the hub (and the servers it spawns) logged since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_lines(self) -> list[str]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return data.decode(errors="replace").splitlines()


def spawn_figures(lines: list[str], name: str, wall0: float) -> dict:
    """Hub-side times of one spawn, from the hub's log, as seconds after the link's t0."""
    out: dict[str, float] = {}
    took = re.compile(rf"User {USER}:{re.escape(name)} took ([\d.]+) seconds to start")
    marks = {
        "process": lambda line: (
            "JupyterHub spawner:" in line
            and "Spawning " in line
            and "jupyterhub-singleuser" in line
        ),
        "first log": lambda line: "ServerApp]" in line,
        "server up": lambda line: "ServerApp]" in line and "is running at" in line,
        "hub noticed": lambda line: took.search(line) is not None,
    }
    for line in lines:
        m = took.search(line)
        if m:
            out["hub spawn"] = float(m.group(1))
        t = _log_time(line)
        if t is None:
            continue
        for key, hit in marks.items():
            if key not in out and hit(line):
                out[key] = t - wall0
    return out


def import_times(python: Path, reps: int) -> dict[str, list[float]]:
    """Wall times (s) of a server's python: starting and exiting, importing the server stack."""
    codes = {"python -c pass": "pass", STACK: STACK}
    out: dict[str, list[float]] = {k: [] for k in codes}
    for _ in range(reps):
        for label, code in codes.items():
            t0 = time.perf_counter()
            subprocess.run([str(python), "-c", code], capture_output=True, timeout=120,
                           check=True)  # fmt: skip
            out[label].append(time.perf_counter() - t0)
    return out


def count_pyc(venv: Path) -> int:
    return sum(1 for _ in venv.rglob("*.pyc"))


async def server_model(admin: httpx.AsyncClient, name: str) -> dict | None:
    r = await admin.get(f"users/{USER}")
    r.raise_for_status()
    return (r.json().get("servers") or {}).get(name)


async def wait_gone(admin: httpx.AsyncClient, name: str, timeout: float) -> float:
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        if await server_model(admin, name) is None:
            return time.perf_counter() - t0
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server {name!r} still listed {timeout} s after DELETE")


async def stop_and_remove(session, admin: httpx.AsyncClient, name: str, timeout: float) -> float:
    """Service API stop + remove; returns the seconds until the hub no longer lists it."""
    if await server_model(admin, name) is None:
        return 0.0
    t0 = time.perf_counter()
    r = await session.request("DELETE", f"api/servers/{name}", params={"remove": "true"})
    if r.status_code not in (204, 404):
        raise RuntimeError(f"DELETE api/servers/{name}: {r.status_code} {r.text}")
    await wait_gone(admin, name, timeout)
    return time.perf_counter() - t0


async def timed_link(session, status_client: httpx.AsyncClient, name: str, env_id: int,
                     expect: str, timeout: float) -> dict:  # fmt: skip
    """Time a direct link: sent -> 302 (checked) -> api/status 200, polled every POLL s."""
    link = f"{SERVICE}servers?name={name}&environment={env_id}&path={NOTEBOOK}"
    wall0 = time.time()
    t0 = time.perf_counter()
    r = await session.client.get(link, follow_redirects=False, timeout=timeout)
    t_302 = time.perf_counter()
    location = r.headers.get("location", "")
    if r.status_code != 302:
        raise RuntimeError(f"GET {link}: {r.status_code} {r.text[-500:]}")
    if expect == "cold":
        ok = location.startswith(f"/hub/spawn-pending/{USER}/{name}?next=")
    else:
        ok = location == f"/user/{USER}/{name}/lab/tree/{NOTEBOOK}"
    if not ok:
        raise RuntimeError(f"{expect} launch of {name!r}: unexpected 302 to {location!r}")
    status_url = f"/user/{USER}/{name}/api/status"
    polls, codes = 0, {}
    deadline = t_302 + timeout
    while True:
        polls += 1
        try:
            s = await status_client.get(status_url)
            code = s.status_code
        except httpx.HTTPError as e:
            code = type(e).__name__
        codes[code] = codes.get(code, 0) + 1
        if code == 200:
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{status_url} not 200 after {timeout} s: {codes}")
        await asyncio.sleep(POLL)
    t_ok = time.perf_counter()
    return {"name": name, "kind": expect, "wall0": wall0, "total": t_ok - t0,
            "link": t_302 - t0, "after": t_ok - t_302, "polls": polls, "codes": codes}  # fmt: skip


def summary_row(label: str, values: list[float]) -> list:
    if not values:
        return [label, 0, float("nan"), float("nan"), float("nan"), float("nan")]
    return [label, len(values), median(values), pct(values, 90), min(values), max(values)]


def server_env_of(hub: Hub) -> Path | None:
    ready = sorted(
        (hub.service_data / "service-environments").glob("server-*/.neurolibre-service-env")
    )
    return ready[0].parent if ready else None


async def build_env(hub: Hub, index, repos: Path, layout: str, hub_version: str) -> dict:
    req = index.add_sdist(index.sdists, f"nlbench-launch-{layout}-{time.time_ns()}", "1.0", "")
    lines = [req]
    if layout == "before":  # what every environment got before the server stack lived apart
        lines += [f"jupyterhub=={hub_version}", "ipykernel", "jupyterlab"]
    repo = repos / f"launch-{layout}"
    make_repo(repo, {"binder/requirements.txt": "".join(f"{x}\n" for x in lines),
                     NOTEBOOK: "{}"})  # fmt: skip
    t = time.perf_counter()
    async with hub.token_client(USER) as alice:
        env, log = await build(alice, f"launch-{layout}", repo)
    if env["status"] != "ready":
        raise RuntimeError(f"{layout} build failed: {env.get('error')}\n" + "\n".join(log[-40:]))
    venv = hub.service_data / "environments" / env["runtime"]["key"]
    own = (venv / "bin" / "jupyterhub-singleuser").exists()
    if own != (layout == "before"):
        raise RuntimeError(f"{layout}: the environment {'has' if own else 'lacks'} a server")
    print(f"{layout}: environment {env['id']} ready in {time.perf_counter() - t:.1f} s "
          f"({venv}, {du_mb(venv):.0f} MB)")  # fmt: skip
    return {"id": env["id"], "venv": venv}


def du_mb(path: Path) -> float:
    return (
        sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
    )


async def main_async(args) -> None:
    import jupyterhub

    require_tools()
    layouts = list(LAYOUTS) if args.layout == "both" else [args.layout]
    cold: dict[str, list[dict]] = {k: [] for k in layouts}
    reopen: dict[str, list[dict]] = {k: [] for k in layouts}
    stops: list[float] = []
    imports: dict[str, dict[str, list[float]]] = {}
    pyc: dict[str, int] = {}
    info: dict[str, str] = {"uptime before": uptime(), "load before": load()}
    with workspace(args.keep) as root, package_index(root) as index:
        repos = root / "repos"
        repos.mkdir()
        extra = BEFORE_SPAWNER if "before" in layouts else ""
        hub = Hub(root, service_args=hub_args(index, repos), extra_config=extra)
        try:
            t_hub = time.perf_counter()
            hub.start(timeout=120)
            t_healthy = time.perf_counter()
            envs = {k: await build_env(hub, index, repos, k, jupyterhub.__version__)
                    for k in layouts}  # fmt: skip
            # the server environment, built by the service at its start (in the background)
            deadline = time.perf_counter() + args.timeout
            while server_env_of(hub) is None and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
            server_env = server_env_of(hub)
            if server_env is None:
                raise RuntimeError("the service did not build its server environment")
            marker = server_env / ".neurolibre-service-env"
            built_at = marker.stat().st_mtime - (time.time() - (time.perf_counter() - t_healthy))
            print(f"hub healthy {t_healthy - t_hub:.1f} s after its start; the server environment "
                  f"({server_env}, {du_mb(server_env):.0f} MB) was ready {built_at:.1f} s after that")  # fmt: skip
            pythons = {"after": server_env / "bin" / "python",
                       "before": envs.get("before", {}).get("venv", Path()) / "bin" / "python"}  # fmt: skip
            token = hub.api_token(USER)
            session = await hub.browser_client(USER)
            admin = httpx.AsyncClient(base_url=f"{hub.url}/hub/api/", timeout=30,
                                      headers={"Authorization": f"token {hub.token}"})  # fmt: skip
            status_client = httpx.AsyncClient(base_url=hub.url, timeout=10,
                                              follow_redirects=False,
                                              headers={"Authorization": f"token {token}"})  # fmt: skip
            hub_log = HubLog(hub.log_path)
            names = [f"{k}{i}" for k in layouts for i in range(args.names)]
            try:
                for i in range(args.launches):
                    order = layouts if i % 2 == 0 else list(reversed(layouts))
                    for layout in order:
                        name = f"{layout}{i % args.names}"
                        env_id = envs[layout]["id"]
                        if await server_model(admin, name) is not None:
                            stops.append(await stop_and_remove(session, admin, name, args.timeout))
                        hub_log.new_lines()
                        res = await timed_link(session, status_client, name, env_id, "cold",
                                               args.timeout)  # fmt: skip
                        model = await server_model(admin, name)
                        if not (model and model.get("ready")):
                            raise RuntimeError(
                                f"{name}: api/status answered but the hub says {model}"
                            )
                        if (model.get("user_options") or {}).get("environment") != env_id:
                            raise RuntimeError(f"{name} runs {model.get('user_options')}")
                        await asyncio.sleep(0.3)  # let the hub finish logging this spawn
                        lines = hub_log.new_lines()
                        spawned = [ln for ln in lines if "Spawning " in ln]
                        expected = str(envs[layout]["venv"] if layout == "before" else server_env)
                        if not any(expected in ln for ln in spawned):
                            raise RuntimeError(f"{name}: not spawned from {expected}: {spawned}")
                        res.update(spawn_figures(lines, name, res["wall0"]))
                        cold[layout].append(res)
                        again = []
                        for _ in range(args.reopens):
                            r2 = await timed_link(session, status_client, name, env_id, "reopen",
                                                  args.timeout)  # fmt: skip
                            reopen[layout].append(r2)
                            again.append(f"{r2['total'] * 1000:.0f}")
                        print(f"  {layout} launch {i + 1} {name}: {res['total']:.2f} s (server up "
                              f"at {res.get('server up', float('nan')):.2f} s, hub spawn "
                              f"{res.get('hub spawn', float('nan')):.2f} s); reopen "
                              f"{', '.join(again)} ms")  # fmt: skip
            finally:
                for name in names:
                    try:
                        if await server_model(admin, name) is not None:
                            stops.append(await stop_and_remove(session, admin, name,
                                                               args.timeout))  # fmt: skip
                    except Exception as e:  # report, and let the hub's shutdown stop it
                        print(f"  (could not stop {name}: {e})")
                await status_client.aclose()
                await admin.aclose()
                await session.aclose()
            # no server runs now: each layout's server python, importing the server stack
            for layout in layouts:
                pyc[layout] = count_pyc(pythons[layout].parent.parent)
                imports[layout] = import_times(pythons[layout], args.import_reps)
        finally:
            hub.stop()
    info.update({"uptime after": uptime(), "load after": load()})
    report(cold, reopen, stops, imports, pyc, args.names, info)


def report(cold: dict[str, list[dict]], reopen: dict[str, list[dict]], stops: list[float],
           imports: dict[str, dict[str, list[float]]], pyc: dict[str, int], n_names: int,
           info: dict[str, str]) -> None:  # fmt: skip
    def col(rows: list[dict], key: str) -> list[float]:
        return [r[key] for r in rows if key in r]

    def diff(rows: list[dict], a: str, b: str) -> list[float]:
        return [r[b] - (r[a] if a else 0.0) for r in rows if (not a or a in r) and b in r]

    def rows_of(c: list[dict], o: list[dict]) -> list[tuple[str, list[float]]]:
        return [
            ("cold: link -> api/status 200", col(c, "total")),
            ("  cold, launches 2..n", col(c[1:], "total")),
            ("  link -> 302 (service + hub spawn)", col(c, "link")),
            ("  hub: 'took X seconds to start'", col(c, "hub spawn")),
            ("  a. link -> hub runs the process", diff(c, "", "process")),
            ("  b. process -> first ServerApp line", diff(c, "process", "first log")),
            ("  c. first line -> 'is running at'", diff(c, "first log", "server up")),
            ("  d. 'is running at' -> hub done", diff(c, "server up", "hub noticed")),
            ("  e. hub done -> api/status 200",
             [r["total"] - r["hub noticed"] for r in c if "hub noticed" in r]),
            ("reopen: link -> api/status 200", col(o, "total")),
        ]  # fmt: skip

    print()
    for k, v in info.items():
        print(f"{k}: {v}")
    layouts = list(cold)
    for layout in layouts:
        print()
        print(f"[{layout}] launch latency (s), {len(cold[layout])} cold launches over {n_names} "
              f"names, {len(reopen[layout])} reopens; api/status polled every {POLL * 1000:.0f} ms")  # fmt: skip
        print(table(["what", "n", "median", "p90", "min", "max"],
                    [summary_row(label, v) for label, v in rows_of(cold[layout], reopen[layout])]))  # fmt: skip
    if stops:
        print(table(["what", "n", "median", "p90", "min", "max"],
                    [summary_row("stop+remove: DELETE -> gone from hub", stops)]))  # fmt: skip
    print("(a-e from the hub log's millisecond timestamps, the single-user server logs there too)")
    if imports:
        print()
        print("The server's python, no server running (wall s, median of "
              f"{len(next(iter(next(iter(imports.values())).values())))}):")  # fmt: skip
        print(table(["layout", "python", "median", "max", ".pyc files"],
                    [[layout, k, median(v), max(v), pyc.get(layout, 0)]
                     for layout, d in imports.items() for k, v in d.items()]))  # fmt: skip
    if set(layouts) == set(LAYOUTS):
        a, b = cold["after"], cold["before"]
        print()
        print("after / before (the same run, launches interleaved):")
        ratio_rows = []
        for (label, va), (_, vb) in zip(rows_of(a, reopen["after"]), rows_of(b, reopen["before"]),
                                        strict=True):  # fmt: skip
            ma, mb = median(va), median(vb)
            ratio_rows.append([label.strip(), ma, mb, ma / mb if mb else float("nan")])
        pairs = [x["total"] / y["total"] for x, y in zip(a, b, strict=False)]
        print(table(["what", "after median", "before median", "after/before"], ratio_rows))
        print(f"cold launch, per interleaved pair (after/before): median {median(pairs):.2f}, "
              f"range {min(pairs):.2f}-{max(pairs):.2f}")  # fmt: skip
        if imports:
            ia, ib = median(imports["after"][STACK]), median(imports["before"][STACK])
            print(f"server stack import, after/before: {ia / ib:.2f} ({ia:.2f} s / {ib:.2f} s)")
    aim = 3.0
    for layout in layouts:
        c = median(col(cold[layout], "total"))
        print(f"[{layout}] aim < {aim:.0f} s median for a cold start: "
              f"{'met' if c < aim else 'NOT met'} ({c:.2f} s, {c / aim:.1f}x the aim)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", choices=("both", *LAYOUTS), default="both",
                    help="the server stack apart (after), in the environment (before), or both")  # fmt: skip
    ap.add_argument("--launches", type=int, default=8, help="cold launches per layout")
    ap.add_argument("--names", type=int, default=3, help="server names per layout to cycle over")
    ap.add_argument("--reopens", type=int, default=2, help="reopens after each cold launch")
    ap.add_argument("--timeout", type=float, default=120, help="bound on each wait (s)")
    ap.add_argument("--import-reps", type=int, default=5,
                    help="timings of the server stack's imports in the server's python")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
