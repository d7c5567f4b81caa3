"""Launch latency: from clicking a direct link to the server answering, through a real hub.

One hub (the embedded config: NeuroLibreSimpleLocalProcessSpawner, local processes), one
environment built first (its requirements.txt names a new empty sdist, so the build installs
the server packages from the local index on 127.0.0.1) and ready. Then, as alice logged in
through the hub's form (a browser session: cookies), --launches times, cycling over --names
server names:

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
Server ... is running at" line, d. the hub's "User alice:NAME took X seconds to start" (the hub
polls the new server with exponential backoff and full jitter: sleeps of uniform(0, 0.2),
(0, 0.4), (0, 0.8), ... s), e. api/status answering 200. The first launch after the build is
shown apart too: the environment has no .pyc files until a server has run in it (counted).

Afterwards, with no server running, the environment's python is timed starting (`-c pass`),
importing the server stack (`import jupyterhub.singleuser, jupyterlab`), the same with
rfc3987_syntax blocked (`sys.modules['rfc3987_syntax'] = None`: jsonschema's format checker
then skips the "iri" formats, as when the package is not installed), and importing only
rfc3987_syntax (it builds Lark parsers at import).

Usage: python benchmarks/bench_launch.py [--launches 8] [--names 3] [--reopens 2]
       [--import-reps 5]
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
    make_repo,
    median,
    package_index,
    pct,
    require_tools,
    running_hub,
    table,
    workspace,
)

from tests.conftest import build  # importable once _common has set sys.path
from tests.support.hub import SERVICE

USER = "alice"
NOTEBOOK = "analysis.ipynb"
POLL = 0.05
STACK = "import jupyterhub.singleuser, jupyterlab"
STACK_NO_RFC = "the same, rfc3987_syntax blocked"
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


def import_times(venv: Path, reps: int) -> dict[str, list[float]]:
    """Wall times (s) of the environment's python: starting and exiting, importing the server
    stack, the same with rfc3987_syntax blocked, importing only rfc3987_syntax (which
    jsonschema's format checker pulls in)."""
    codes = {"python -c pass": "pass", STACK: STACK,
             STACK_NO_RFC: f"import sys; sys.modules['rfc3987_syntax'] = None; {STACK}",
             "import rfc3987_syntax": "import rfc3987_syntax"}  # fmt: skip
    out: dict[str, list[float]] = {k: [] for k in codes}
    for _ in range(reps):
        for label, code in codes.items():
            t0 = time.perf_counter()
            subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                           timeout=120, check=True)  # fmt: skip
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


async def main_async(args) -> None:
    require_tools()
    names = [f"paper{i}" if i else "paper" for i in range(args.names)]
    cold: list[dict] = []
    reopen: list[dict] = []
    stops: list[float] = []
    imports: dict[str, list[float]] = {}
    pyc: list[int] = []
    with workspace(args.keep) as root, package_index(root) as index:
        repos = root / "repos"
        repos.mkdir()
        with running_hub(root, index, repos) as hub:
            req = index.add_sdist(index.sdists, f"nlbench-launch-{time.time_ns()}", "1.0", "")
            repo = repos / "launch"
            make_repo(repo, {"binder/requirements.txt": f"{req}\n", NOTEBOOK: "{}"})
            t = time.perf_counter()
            async with hub.token_client(USER) as alice:
                env, log = await build(alice, "launch-bench", repo)
            if env["status"] != "ready":
                raise RuntimeError(f"build failed: {env.get('error')}\n" + "\n".join(log[-40:]))
            env_id, key = env["id"], env["runtime"]["key"]
            venv = hub.service_data / "environments" / key
            print(f"environment {env_id} ready in {time.perf_counter() - t:.1f} s "
                  f"(runtime {key[:12]}, {'found' if venv.is_dir() else 'NOT found'} at {venv})")  # fmt: skip
            pyc.append(count_pyc(venv))
            token = hub.api_token(USER)
            session = await hub.browser_client(USER)
            admin = httpx.AsyncClient(base_url=f"{hub.url}/hub/api/", timeout=30,
                                      headers={"Authorization": f"token {hub.token}"})  # fmt: skip
            status_client = httpx.AsyncClient(base_url=hub.url, timeout=10,
                                              follow_redirects=False,
                                              headers={"Authorization": f"token {token}"})  # fmt: skip
            hub_log = HubLog(hub.log_path)
            try:
                for i in range(args.launches):
                    name = names[i % len(names)]
                    if await server_model(admin, name) is not None:
                        stops.append(await stop_and_remove(session, admin, name, args.timeout))
                    hub_log.new_lines()
                    res = await timed_link(session, status_client, name, env_id, "cold",
                                           args.timeout)  # fmt: skip
                    model = await server_model(admin, name)
                    if not (model and model.get("ready")):
                        raise RuntimeError(f"{name}: api/status answered but the hub says {model}")
                    if (model.get("user_options") or {}).get("environment") != env_id:
                        raise RuntimeError(f"{name} runs {model.get('user_options')}")
                    await asyncio.sleep(0.3)  # let the hub finish logging this spawn
                    res.update(spawn_figures(hub_log.new_lines(), name, res["wall0"]))
                    cold.append(res)
                    again = []
                    for _ in range(args.reopens):
                        r2 = await timed_link(session, status_client, name, env_id, "reopen",
                                              args.timeout)  # fmt: skip
                        reopen.append(r2)
                        again.append(f"{r2['total'] * 1000:.0f}")
                    print(f"  launch {i + 1} {name}: {res['total']:.2f} s (302 after "
                          f"{res['link']:.2f} s, {res['polls']} poll(s); server up at "
                          f"{res.get('server up', float('nan')):.2f} s, hub spawn "
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
            # no server runs now: the server stack's imports alone, in the same environment
            # (its .pyc files were written by the launches above)
            pyc.append(count_pyc(venv))
            imports = import_times(venv, args.import_reps)
    report(cold, reopen, stops, imports, pyc, len(names))


def report(cold: list[dict], reopen: list[dict], stops: list[float],
           imports: dict[str, list[float]], pyc: list[int], n_names: int) -> None:  # fmt: skip
    def col(rows: list[dict], key: str) -> list[float]:
        return [r[key] for r in rows if key in r]

    def diff(rows: list[dict], a: str, b: str) -> list[float]:
        return [r[b] - (r[a] if a else 0.0) for r in rows if (not a or a in r) and b in r]

    print()
    print(f"Launch latency (s), environment already built, {len(cold)} cold launches over "
          f"{n_names} names, {len(reopen)} reopens; api/status polled every {POLL * 1000:.0f} ms")  # fmt: skip
    rows = [
        summary_row("cold: link -> api/status 200", col(cold, "total")),
        summary_row("  cold, launches 2..n", col(cold[1:], "total")),
        summary_row("  link -> 302 (service + hub spawn)", col(cold, "link")),
        summary_row("  302 -> api/status 200", col(cold, "after")),
        summary_row("  hub: 'took X seconds to start'", col(cold, "hub spawn")),
        summary_row("  a. link -> hub runs the process", diff(cold, "", "process")),
        summary_row("  b. process -> first ServerApp line", diff(cold, "process", "first log")),
        summary_row("  c. first line -> 'is running at'", diff(cold, "first log", "server up")),
        summary_row("  d. 'is running at' -> hub done", diff(cold, "server up", "hub noticed")),
        summary_row(
            "  e. hub done -> api/status 200",
            [r["total"] - r["hub noticed"] for r in cold if "hub noticed" in r],
        ),
        summary_row("reopen: link -> api/status 200", col(reopen, "total")),
        summary_row("  link -> 302", col(reopen, "link")),
        summary_row("  302 -> api/status 200", col(reopen, "after")),
        summary_row("stop+remove: DELETE -> gone from hub", stops),
    ]
    print(table(["what", "n", "median", "p90", "min", "max"], rows))
    print("(a-e from the hub log's millisecond timestamps, the single-user server logs there too)")
    c, o = median(col(cold, "total")), median(col(reopen, "total"))
    print()
    print(f"cold / reopen (median): {c / o:.0f}x ({c:.2f} s / {o * 1000:.0f} ms)")
    link_share = [r["link"] / r["total"] for r in cold]
    print(f"share of a cold launch spent before the 302 arrives: median {median(link_share):.0%}")
    if len(cold) > 1:
        print(f"first launch after the build / median of the others: "
              f"{cold[0]['total'] / median(col(cold[1:], 'total')):.2f}x")  # fmt: skip
    if len(cold) > 1:
        print(f"  .pyc files in the environment: {pyc[0]} after the build, {pyc[-1]} after the "
              f"launches (the first server start compiles them)")  # fmt: skip
    if imports:
        print("In the environment, no server running (wall s, median of "
              f"{len(next(iter(imports.values())))}):")  # fmt: skip
        print(table(["python", "median", "max"],
                    [[k, median(v), max(v)] for k, v in imports.items()]))  # fmt: skip
        stack, no_rfc = median(imports[STACK]), median(imports[STACK_NO_RFC])
        rfc = median(imports["import rfc3987_syntax"]) - median(imports["python -c pass"])
        print(f"server stack import / cold launch: {stack / c:.0%}; rfc3987_syntax import "
              f"(minus interpreter start) / server stack import: {rfc / stack:.0%}; "
              f"stack import with / without rfc3987_syntax: {stack / no_rfc:.2f}x "
              f"({stack - no_rfc:.2f} s)")  # fmt: skip
    aim = 3.0
    print(f"aim < {aim:.0f} s median for a cold start: {'met' if c < aim else 'NOT met'} "
          f"({c:.2f} s, {c / aim:.1f}x the aim)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--launches", type=int, default=8, help="cold launches")
    ap.add_argument("--names", type=int, default=3, help="server names to cycle over")
    ap.add_argument("--reopens", type=int, default=2, help="reopens after each cold launch")
    ap.add_argument("--timeout", type=float, default=120, help="bound on each wait (s)")
    ap.add_argument("--import-reps", type=int, default=5,
                    help="timings of the server stack's imports in the environment")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
