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

Usage: python benchmarks/bench_rebuild.py [--reps 3] [--rebuilds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
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
    require_tools,
    running_hub,
    sse_events,
    table,
    workspace,
)

STAGES = ("cloning", "creating environment", "installing packages")


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
    status = None
    async for kind, data, _ in sse_events(client, f"environments/{env_id}/log", timeout=900):
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
    return {"env": env_id, "client": client_s, "job": _seconds(job, "started_at", "finished_at"),
            "queued": _seconds(job, "created_at", "started_at"),
            "installed": "==> installing packages" in log,
            "reused": "Reusing the environment built earlier" in log,
            "runtime": env["runtime"]["key"], "stages": durations,
            "size": env["runtime"]["size_bytes"] or 0}  # fmt: skip


async def one_rep(root: Path, index, repos: Path, rep: int, rebuilds: int) -> list[tuple]:
    tag = f"{os.getpid()}-{rep}"
    out: list[tuple] = []
    with running_hub(root, index, repos, name=f"hub{rep}") as hub:
        async with hub.token_client("alice") as alice:
            for kind in ("cold", "warm"):
                req = index.add_sdist(index.sdists, f"nlbench-{kind}-{tag}", "1.0", "")
                repo = repos / f"{kind}-{tag}"
                make_repo(repo, {"binder/requirements.txt": f"{req}\n", "content/a.md": "# A\n"})
                first = await timed_job(alice, "POST", "environments",
                                        {"name": f"{kind}-{rep}", "repository": str(repo)})  # fmt: skip
                assert first["installed"] and not first["reused"], first
                out.append((rep, kind, first))
                print(f"  rep {rep + 1} {kind}: client {first['client']:.1f} s, "
                      f"job {first['job']:.1f} s")  # fmt: skip
                times = []
                for _ in range(rebuilds):
                    again = await timed_job(alice, "POST", f"environments/{first['env']}/rebuild")
                    assert again["reused"] and not again["installed"], again
                    assert again["runtime"] == first["runtime"]
                    out.append((rep, f"rebuild ({kind})", again))
                    times.append(f"{again['client']:.2f}")
                print(f"  rep {rep + 1} rebuilds of {kind}: client {', '.join(times)} s")
    return out


async def main_async(args) -> None:
    require_tools()
    results: list[tuple] = []
    with workspace(args.keep) as root, package_index(root) as index:
        repos = root / "repos"
        repos.mkdir()
        for rep in range(args.reps):
            results += await one_rep(root, index, repos, rep, args.rebuilds)

    def values(kind: str, key: str) -> list[float]:
        return [r[key] for _, k, r in results if k.startswith(kind)]

    rows = []
    for kind in ("cold", "warm", "rebuild"):
        c, j, q = values(kind, "client"), values(kind, "job"), values(kind, "queued")
        rows.append([kind, len(c), median(c), min(c), max(c), median(j), median(q)])
    print()
    print(f"Environment build wall times (s), {args.reps} fresh hubs, "
          f"{args.rebuilds} rebuilds per environment")  # fmt: skip
    print(table(["build", "n", "client median", "client min", "client max", "job median",
                 "queued median"], rows))  # fmt: skip
    print()
    print("Stages (median s, from the arrival of each stage's first log line to the next's):")
    srows = []
    for kind in ("cold", "warm", "rebuild"):
        found = [r["stages"] for _, k, r in results if k.startswith(kind)]
        srows.append([kind] + [median([d[s] for d in found if s in d]) for s in STAGES])
    print(table(["build", *STAGES], srows))
    sizes = values("cold", "size")
    print(f"environment size (installed by copying, UV_LINK_MODE=copy): median "
          f"{median(sizes) / 1e6:.0f} MB")  # fmt: skip
    cold, warm, reb = (median(values(k, "client")) for k in ("cold", "warm", "rebuild"))
    cold_j, warm_j, reb_j = (median(values(k, "job")) for k in ("cold", "warm", "rebuild"))
    print()
    print(f"cold / rebuild: {cold / reb:.0f}x (client), {cold_j / reb_j:.0f}x (job)")
    print(f"warm cache, new runtime / rebuild: {warm / reb:.0f}x (client), "
          f"{warm_j / reb_j:.0f}x (job)")  # fmt: skip
    print(f"cold / warm: {cold / warm:.1f}x (client), {cold_j / warm_j:.1f}x (job)")
    per_rep = []
    for rep in range(args.reps):
        c = [r["client"] for n, k, r in results if n == rep and k == "cold"]
        rb = [r["client"] for n, k, r in results if n == rep and k.startswith("rebuild")]
        per_rep.append(f"{c[0] / median(rb):.0f}x")
    print(f"cold / rebuild per repetition (client): {', '.join(per_rep)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="fresh hubs (cold builds)")
    ap.add_argument("--rebuilds", type=int, default=3, help="rebuilds of each environment")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
