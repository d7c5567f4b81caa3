"""Rebuild of an unchanged runtime vs a cold build, through a real hub.

Each repetition starts a fresh hub (a new service data directory: empty uv cache, no
runtimes), then, as alice through the hub's proxy:

  cold      build an environment whose requirements.txt names a new sdist (first build of
            that runtime key; the uv cache is empty, so jupyterhub, jupyterlab, ipykernel and
            their dependencies are all fetched from the local index and installed)
  rebuild   POST .../rebuild on it (same commit, same runtime files: the service finds the
            runtime and installs nothing), --rebuilds times
  warm      another environment with another new sdist on the same hub: a new runtime key,
            but the uv cache is warm (only that sdist is built; the rest is copied from cache)
  rebuild   of the warm one too

Timed per job: "client" is from sending the POST to receiving the log's end event (what a
user waits for); "job" is the job's started_at -> finished_at as the service records it.
The package index is a local HTTP server on 127.0.0.1 serving wheels from disk (the OS page
cache is warm: "cold" means the service's uv cache, not the machine's disk).

--sandbox picks the service's confinement (--NeuroLibre.sandbox): bwrap (the default: steps
run as the unprivileged build user through setpriv inside bubblewrap, with prlimit limits;
environments lent to that user before a step and reclaimed after), none (unconfined), or
both: each repetition then runs one fresh hub per sandbox, back to back, alternating which
goes first, and the script prints bwrap / none per phase and stage (same machine state).

Usage: python benchmarks/bench_rebuild.py [--reps 3] [--rebuilds 3] [--sandbox bwrap|none|both]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    COMPARE_HEADERS,
    SANDBOXES,
    compare_rows,
    load,
    make_repo,
    median,
    package_index,
    ratio,
    require_tools,
    running_hub,
    sandbox_order,
    sse_events,
    table,
    uptime,
    workspace,
)

STAGES = ("cloning", "creating environment", "installing packages")
UV_PHASES = ("Resolved", "Prepared", "Installed", "Bytecode compiled")
AFTER_UV = "after uv (reclaim, seal, du)"
# what the stage tables show: the stages, uv's reports of its phases inside "installing
# packages", and the gap after uv's last line
PARTS = (*STAGES, *(f"uv {p.lower()}" for p in UV_PHASES), AFTER_UV)
UV_LINE = re.compile(r"(Resolved|Prepared|Installed|Bytecode compiled) \d+ \w+ in ([\d.]+)(ms|s)$")


def uv_phases(lines) -> dict[str, float]:
    out = {}
    for line in lines:
        if m := UV_LINE.match(line.strip()):
            out[f"uv {m[1].lower()}"] = float(m[2]) / (1000 if m[3] == "ms" else 1)
    return out


def _seconds(job: dict, a: str, b: str) -> float:
    return (datetime.fromisoformat(job[b]) - datetime.fromisoformat(job[a])).total_seconds()


async def timed_job(client: httpx.AsyncClient, method: str, path: str,
                    body: dict | None = None) -> dict:  # fmt: skip
    t0 = time.perf_counter()
    r = await client.request(method, path, json=body)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
    env_id = r.json()["id"]
    # the stage lines ("==> cloning", ...) arrive within milliseconds of being written, so
    # their arrival times split the job into stages
    stages: list[tuple[float, str]] = []
    lines: list[tuple[float, str]] = []
    status = None
    async for kind, data, _ in sse_events(client, f"environments/{env_id}/log", timeout=900):
        if kind == "message":
            lines.append((time.perf_counter(), data))
        if kind == "message" and data.startswith("==> "):
            stages.append((time.perf_counter(), data[4:]))
        elif kind == "end":
            status = json.loads(data)["status"]
            break
    client_s = time.perf_counter() - t0
    durations: dict[str, float] = {}
    for (t, name), (t_next, _) in itertools.pairwise(stages):
        if name in STAGES:
            durations[name] = t_next - t
    env = (await client.get(f"environments/{env_id}")).json()
    if status != "succeeded" or env["status"] != "ready":
        log = (await client.get(f"environments/{env_id}/log")).text
        raise RuntimeError(f"build of {env_id} ended {status}: {env['error']}\n{log[-3000:]}")
    job = env["job"]
    log = (await client.get(f"environments/{env_id}/log")).text
    # uv's own timings, and what follows uv's last line until "Environment ready" (the
    # service reclaims the environment, seals it and measures its size in that gap)
    durations.update(uv_phases(line for _, line in lines))
    ready = [i for i, (_, line) in enumerate(lines) if line.startswith("Environment ready")]
    if ready and ready[0] > 0:
        durations[AFTER_UV] = lines[ready[0]][0] - lines[ready[0] - 1][0]
    return {"env": env_id, "client": client_s, "job": _seconds(job, "started_at", "finished_at"),
            "queued": _seconds(job, "created_at", "started_at"),
            "installed": "==> installing packages" in log,
            "reused": "Reusing the environment built earlier" in log,
            "runtime": env["runtime"]["key"], "stages": durations,
            "size": env["runtime"]["size_bytes"] or 0}  # fmt: skip


async def one_rep(root: Path, index, repos: Path, rep: int, rebuilds: int,
                  sandbox: str) -> list[tuple]:  # fmt: skip
    tag = f"{os.getpid()}-{rep}-{sandbox}"
    out: list[tuple] = []
    print(f"  rep {rep + 1} sandbox {sandbox}: starting a hub ({load()})", flush=True)
    with running_hub(root, index, repos, name=f"hub{rep}-{sandbox}", sandbox=sandbox) as hub:
        async with hub.token_client("alice") as alice:
            for kind in ("cold", "warm"):
                req = index.add_sdist(index.sdists, f"nlbench-{kind}-{tag}", "1.0", "")
                repo = repos / f"{kind}-{tag}"
                make_repo(repo, {"binder/requirements.txt": f"{req}\n", "content/a.md": "# A\n"})
                first = await timed_job(alice, "POST", "environments",
                                        {"name": f"{kind}-{rep}-{sandbox}",
                                         "repository": str(repo)})  # fmt: skip
                assert first["installed"] and not first["reused"], first
                out.append((rep, sandbox, kind, first))
                print(f"  rep {rep + 1} {sandbox} {kind}: client {first['client']:.1f} s, "
                      f"job {first['job']:.1f} s", flush=True)  # fmt: skip
                times = []
                for _ in range(rebuilds):
                    again = await timed_job(alice, "POST", f"environments/{first['env']}/rebuild")
                    assert again["reused"] and not again["installed"], again
                    assert again["runtime"] == first["runtime"]
                    out.append((rep, sandbox, f"rebuild ({kind})", again))
                    times.append(f"{again['client']:.2f}")
                print(f"  rep {rep + 1} {sandbox} rebuilds of {kind}: client {', '.join(times)} s",
                      flush=True)  # fmt: skip
    return out


def summary(results: list[tuple], sandbox: str, reps: int, rebuilds: int) -> None:
    def values(kind: str, key: str) -> list[float]:
        return [r[key] for _, sb, k, r in results if sb == sandbox and k.startswith(kind)]

    rows = []
    for kind in ("cold", "warm", "rebuild"):
        c, j, q = values(kind, "client"), values(kind, "job"), values(kind, "queued")
        rows.append([kind, len(c), median(c), min(c), max(c), median(j), median(q)])
    print()
    print(f"sandbox {sandbox}: environment build wall times (s), {reps} fresh hubs, "
          f"{rebuilds} rebuilds per environment")  # fmt: skip
    print(table(["build", "n", "client median", "client min", "client max", "job median",
                 "queued median"], rows))  # fmt: skip
    print()
    print("Stages (median s, from the arrival of each stage's first log line to the next's),")
    print("uv's own timings of its phases, and the gap from uv's last line to 'Environment ready':")
    srows = []
    for kind in ("cold", "warm", "rebuild"):
        found = [r["stages"] for _, sb, k, r in results if sb == sandbox and k.startswith(kind)]
        srows.append([kind] + [median([d[s] for d in found if s in d]) for s in PARTS])
    print(table(["build", *PARTS], srows))
    sizes = values("cold", "size")
    print(f"environment size (installed by copying, UV_LINK_MODE=copy): median "
          f"{median(sizes) / 1e6:.0f} MB")  # fmt: skip
    cold, warm, reb = (median(values(k, "client")) for k in ("cold", "warm", "rebuild"))
    cold_j, warm_j, reb_j = (median(values(k, "job")) for k in ("cold", "warm", "rebuild"))
    print()
    print(f"cold / rebuild: {ratio(cold, reb):.0f}x (client), {ratio(cold_j, reb_j):.0f}x (job)")
    print(f"warm cache, new runtime / rebuild: {ratio(warm, reb):.0f}x (client), "
          f"{ratio(warm_j, reb_j):.0f}x (job)")  # fmt: skip
    print(f"cold / warm: {ratio(cold, warm):.1f}x (client), {ratio(cold_j, warm_j):.1f}x (job)")
    per_rep = []
    for rep in range(reps):
        c = [r["client"] for n, sb, k, r in results if sb == sandbox and n == rep and k == "cold"]
        rb = [r["client"] for n, sb, k, r in results
              if sb == sandbox and n == rep and k.startswith("rebuild")]  # fmt: skip
        per_rep.append(f"{ratio(c[0], median(rb)):.0f}x")
    print(f"cold / rebuild per repetition (client): {', '.join(per_rep)}")


def comparison(results: list[tuple], reps: int) -> None:
    """bwrap / none for each phase and stage, paired by repetition (run back to back)."""

    def per_rep(sandbox: str, kind: str, get) -> list[float]:
        out = []
        for rep in range(reps):
            vals = [v for n, sb, k, r in results
                    if n == rep and sb == sandbox and k == kind and (v := get(r)) is not None]  # fmt: skip
            out.append(median(vals))
        return out

    metrics = []
    for kind in ("cold", "warm", "rebuild (cold)", "rebuild (warm)"):
        for key in ("client", "job"):
            metrics.append((f"{kind}: {key}", *(per_rep(sb, kind, lambda r, key=key: r[key])
                                                for sb in SANDBOXES)))  # fmt: skip
        for stage in PARTS:
            get = lambda r, stage=stage: r["stages"].get(stage)  # noqa: E731
            if any(r["stages"].get(stage) is not None for _, _, k, r in results if k == kind):
                metrics.append((f"{kind}: {stage}", *(per_rep(sb, kind, get)
                                                            for sb in SANDBOXES)))  # fmt: skip
    print()
    print("bwrap / none, same run (each repetition: one fresh hub per sandbox, back to back); "
          "rebuild = median of that repetition's rebuilds")  # fmt: skip
    print(table(COMPARE_HEADERS, compare_rows(metrics)))


async def main_async(args) -> None:
    require_tools()
    print(f"start: {uptime()}", flush=True)
    results: list[tuple] = []
    with workspace(args.keep) as root, package_index(root) as index:
        repos = root / "repos"
        repos.mkdir()
        for rep in range(args.reps):
            for sandbox in sandbox_order(args.sandbox, rep):
                results += await one_rep(root, index, repos, rep, args.rebuilds, sandbox)
    print(f"end: {uptime()}")
    for sandbox in SANDBOXES:
        if any(sb == sandbox for _, sb, _, _ in results):
            summary(results, sandbox, args.reps, args.rebuilds)
    if args.sandbox == "both":
        comparison(results, args.reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="fresh hubs (cold builds)")
    ap.add_argument("--rebuilds", type=int, default=3, help="rebuilds of each environment")
    ap.add_argument("--sandbox", choices=[*SANDBOXES, "both"], default="bwrap",
                    help="the service's confinement; both: alternate, and compare")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
