"""Live log latency, end to end through a real hub: build process -> SSE client.

What is measured, from where to where:

  written  = time.time_ns() in a process of a real environment build (the setup.py of an
             sdist that `uv pip install` builds, inside the service's bubblewrap sandbox),
             taken just before it writes the line to the build step's stdout pipe
  arrival  = time.time_ns() in this script when httpx has the complete server-sent event

The line travels: build process -> the stdout pipe of the build step (the same pipe uv's own
output goes to) -> processes.run_streaming -> LogChannel.write (redact, append to the log
file, publish) -> the SSE handler's subscriber queue -> Tornado -> configurable-http-proxy ->
httpx on 127.0.0.1. A second client reads the same stream from the service's own port (no
proxy), so the proxy's share is a ratio of the same lines.

uv captures the output of a package build and shows it only when the build fails (all at
once, at the end). So the setup.py writes to its build step's stdout directly: it finds the
nearest ancestor process whose stdout is a different pipe than its own (uv, whose stdout is
the pipe run_streaming reads) and opens /proc/<pid>/fd/1. Lines uv prints itself follow
exactly that path. The setup.py then exits with an error, so the job ends quickly (no
jupyterlab install) and the log stream ends with its end event.

Usage: python benchmarks/bench_log_latency.py [--reps 3] [--lines 250] [--interval-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    make_repo,
    median,
    package_index,
    pct,
    populate,
    require_tools,
    running_hub,
    service_url,
    table,
    workspace,
)

WRITER = """
import os, time

def _nlbench():
    try:
        os.close(os.open("/tmp/nlbench-started", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return  # setup.py runs once per build hook; write from the first one only
    mine = os.readlink("/proc/self/fd/1")
    pid, target = os.getppid(), None
    while pid > 1:
        try:
            link = os.readlink(f"/proc/{{pid}}/fd/1")
        except OSError:
            break
        if link.startswith("pipe:") and link != mine:
            target = pid
            break
        with open(f"/proc/{{pid}}/stat") as f:
            stat = f.read()
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    if target is None:
        raise SystemExit("NLBENCH-ERROR no ancestor with a stdout pipe")
    fd = os.open(f"/proc/{{target}}/fd/1", os.O_WRONLY)
    time.sleep({lead:.3f})  # the SSE clients subscribe meanwhile
    def line(phase, seq):
        os.write(fd, f"NLBENCH {{phase}} {{seq}} {{time.time_ns()}}\\n".encode())
    # paced: one line every interval
    for seq in range({lines}):
        line("paced", seq)
        time.sleep({interval:.4f})
    # bursts: lines back to back, as a chatty compiler or pip would write them
    for burst in range({bursts}):
        for seq in range({burst_size}):
            line("burst", burst * {burst_size} + seq)
        time.sleep(0.2)
    os.write(fd, b"NLBENCH done\\n")
    os.close(fd)
    raise SystemExit("nlbench writer finished (this build fails on purpose)")

_nlbench()
"""


async def read_stream(key: tuple, client: httpx.AsyncClient, url: str, samples: dict,
                      timeout: float) -> str | None:  # fmt: skip
    """Collect arrival - written (ms) for every NLBENCH line; returns the end status."""
    headers = {"Accept": "text/event-stream"}
    event: dict[str, str] = {}
    async with client.stream("GET", url, headers=headers, timeout=timeout) as r:
        assert r.status_code == 200, await r.aread()
        connected = time.time_ns()
        async for raw in r.aiter_lines():
            if raw:
                k, _, value = raw.partition(":")
                event[k] = value[1:] if value.startswith(" ") else value
                continue
            kind, data = event.get("event", "message"), event.get("data")
            event = {}
            if data is None:
                continue
            if kind == "end":
                return json.loads(data)["status"]
            if kind == "message" and data.startswith("NLBENCH "):
                arrival = time.time_ns()
                parts = data.split()
                if len(parts) == 4:
                    phase, written = parts[1], int(parts[3])
                    if written >= connected:  # lines read back from the file do not count
                        samples.setdefault((*key, phase), []).append((arrival - written) / 1e6)
    return None


async def admin_listing(url: str, token: str, stop: asyncio.Event, took: list[float],
                        cap: int = 200) -> None:  # fmt: skip
    """One admin client listing all environments again and again until `stop`."""
    async with httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=300) as c:
        while not stop.is_set() and len(took) < cap:
            t0 = time.perf_counter()
            r = await c.get(url)
            r.raise_for_status()
            took.append(time.perf_counter() - t0)


async def one_run(hub, index, repos: Path, rep: int, args, samples: dict,
                  condition: str, admin_token: str | None = None) -> list[float]:  # fmt: skip
    name = f"nlbench-latency-{os.getpid()}-{rep}"
    code = WRITER.format(lead=args.lead, lines=args.lines, interval=args.interval_ms / 1000,
                         bursts=args.bursts, burst_size=args.burst_size)  # fmt: skip
    req = index.add_sdist(index.sdists, name, "1.0", code)
    repo = repos / f"latency{rep}"
    make_repo(repo, {"binder/requirements.txt": f"{req}\n"})
    auth = {"Authorization": f"token {hub.api_token('alice')}"}
    direct = f"{service_url(hub)}/services/neurolibre/api/"
    timeout = 300
    listing: list[float] = []
    async with (
        httpx.AsyncClient(base_url=hub.api, headers=auth, timeout=60) as via_proxy,
        httpx.AsyncClient(base_url=direct, headers=auth, timeout=60) as no_proxy,
    ):
        r = await via_proxy.post("environments", json={"name": f"lat{rep}",
                                                       "repository": str(repo)})  # fmt: skip
        assert r.status_code == 201, r.text
        url = f"environments/{r.json()['id']}/log"
        readers = []
        if "proxy" in args.clients:
            readers.append(read_stream((condition, "proxy"), via_proxy, url, samples, timeout))
        if "direct" in args.clients:
            readers.append(read_stream((condition, "direct"), no_proxy, url, samples, timeout))
        stop = asyncio.Event()
        load = None
        if admin_token:
            load = asyncio.create_task(
                admin_listing(f"{hub.api}environments", admin_token, stop, listing)
            )
        try:
            statuses = await asyncio.wait_for(asyncio.gather(*readers), timeout)
        finally:
            stop.set()
            if load:
                await load
        log = (await via_proxy.get(url)).text
    if "NLBENCH done" not in log:
        raise RuntimeError(f"the writer did not run; build log:\n{log[-3000:]}")
    if "NLBENCH-ERROR" in log:
        raise RuntimeError(f"the writer failed:\n{log[-3000:]}")
    written = sum(1 for line in log.splitlines() if line.startswith("NLBENCH "))
    extra = f", {len(listing)} admin listings meanwhile" if admin_token else ""
    print(f"  {condition} run {rep + 1}: job ended {statuses}; {written} lines in the log{extra}")
    return listing


async def main_async(args) -> None:
    require_tools()
    samples: dict[tuple[str, str, str], list[float]] = {}
    listing: list[float] = []
    with workspace(args.keep) as root, package_index(root) as index:
        repos = root / "repos"
        repos.mkdir()
        with running_hub(root, index, repos) as hub:
            for rep in range(args.reps):
                await one_run(hub, index, repos, rep, args, samples, "idle")
            if args.listing_reps:
                populate(hub.service_data / "neurolibre.sqlite", args.listing_envs, 20)
                admin = hub.api_token("admin")
                for rep in range(args.reps, args.reps + args.listing_reps):
                    listing += await one_run(hub, index, repos, rep, args, samples,
                                             "admin listing", admin)  # fmt: skip
    rows = []
    order = {"idle": 0, "admin listing": 1, "paced": 0, "burst": 1, "proxy": 0, "direct": 1}
    for (cond, client, phase), values in sorted(
        samples.items(), key=lambda kv: [order[x] for x in kv[0]]
    ):
        rows.append([cond, phase, client, len(values), median(values), pct(values, 99),
                     max(values)])  # fmt: skip
    print()
    print(f"Log line latency, build process -> SSE client (ms); paced lines every "
          f"{args.interval_ms:g} ms, bursts of {args.burst_size}")  # fmt: skip
    print(table(["condition", "lines", "client", "n", "median ms", "p99 ms", "max ms"], rows))
    print()
    for phase in ("paced", "burst"):
        p, d = samples.get(("idle", "proxy", phase)), samples.get(("idle", "direct", phase))
        if p and d:
            print(f"idle, {phase}: via proxy / direct: median {median(p) / median(d):.2f}x, "
                  f"p99 {pct(p, 99) / pct(d, 99):.2f}x")  # fmt: skip
    p = samples.get(("idle", "proxy", "paced"), [])
    if p:
        # tljh-repo2docker polls the database every 3 s: a line waits 1.5 s on average, 3 s at worst
        print(f"tljh-repo2docker's 3 s polling vs this (idle, paced, via proxy): mean wait "
              f"1500 ms / median {median(p):.2f} ms = {1500 / median(p):.0f}x; worst 3000 ms / "
              f"p99 {pct(p, 99):.2f} ms = {3000 / pct(p, 99):.0f}x")  # fmt: skip
    for phase in ("paced", "burst"):
        i, a = samples.get(("idle", "proxy", phase)), samples.get(("admin listing", "proxy", phase))
        if i and a:
            print(f"admin listing / idle, {phase}, via proxy: median "
                  f"{median(a) / median(i):.1f}x, p99 {pct(a, 99) / pct(i, 99):.1f}x")  # fmt: skip
    if listing:
        print(f"admin listing of {args.listing_envs} environments meanwhile: {len(listing)} "
              f"requests, median {1000 * median(listing):.0f} ms each")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="builds (each a new environment)")
    ap.add_argument("--lines", type=int, default=250, help="paced lines per build")
    ap.add_argument("--interval-ms", type=float, default=20, help="gap between paced lines")
    ap.add_argument("--bursts", type=int, default=5, help="bursts per build")
    ap.add_argument("--burst-size", type=int, default=200, help="lines per burst")
    ap.add_argument("--lead", type=float, default=1.0, help="seconds before the first line")
    ap.add_argument(
        "--clients",
        default="proxy,direct",
        help="SSE clients reading at once: proxy (through the hub), direct, or both",
    )
    ap.add_argument(
        "--listing-reps",
        type=int,
        default=1,
        help="more builds while an admin client lists all environments (0: none)",
    )
    ap.add_argument(
        "--listing-envs",
        type=int,
        default=10_000,
        help="environments inserted into the database before those builds",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
