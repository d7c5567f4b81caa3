"""Preprint builds: what a commit costs after the first build, through a real hub.

A preprint of five notebooks (each computes for about a second) reading one dataset (a
tar.gz served over HTTP on 127.0.0.1 and fetched by repo2data) is built, as alice:

  cold       the first build: environment built (uv, local index), dataset fetched, every
             notebook executed
  prose      a commit that changes only content/intro.md: the environment is reused (same
             runtime files), the dataset is reused (same requirement), nothing re-executes
  one of 5   a commit that changes one notebook: only that notebook executes

Each repetition uses a fresh hub (empty caches). Stage times are taken on the client, from
the build's main log (server-sent events: the moment each "==> stage" line arrives).
Anchors: BinderHub keys images on the commit, so each commit rebuilds the environment
("cold" environment time per commit); RoboNeuro re-executes every notebook on every build.

--sandbox picks the service's confinement (--NeuroLibre.sandbox): bwrap (the default), none,
or both: each repetition then runs one fresh hub per sandbox, back to back, alternating which
goes first, and the script prints bwrap / none per build and stage (same machine state).

Usage: python benchmarks/bench_preprint.py [--reps 2] [--sandbox bwrap|none|both] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    COMPARE_HEADERS,
    REPO,
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

sys.path.insert(0, str(REPO))
from tests.support.dataserver import DataServer, tar_gz_bytes
from tests.support.preprints import notebook, preprint
from tests.support.repos import commit

STAGES = ("check", "environment", "data", "book")
EXEC = "book: notebooks executing"
REST = "book: the rest"
EXECUTED = re.compile(r": Executed notebook in ([\d.]+) seconds")


def notebooks(version: int = 0) -> dict[str, str]:
    code = (
        "import time\nfrom pathlib import Path\n"
        "values = Path('../data/bench/values.txt').read_text().split()\n"
        "t = time.time()\nwhile time.time() - t < 1: sum(range(1000))\n"
        "print('{name}', len(values), {version})"
    )
    return {f"nb{i}": notebook(code.format(name=f"nb{i}", version=version)) for i in range(5)}


async def timed_build(client: httpx.AsyncClient, method: str, path: str, body: dict | None) -> dict:
    t0 = time.perf_counter()
    r = await client.request(method, path, json=body)
    r.raise_for_status()
    data = r.json()
    build_id = (data.get("latest_build") or data)["id"]
    marks = {}
    async for event, text, _id in sse_events(client, f"builds/{build_id}/logs/main"):
        if event == "message" and text.startswith("==> ") and text[4:] in STAGES:
            marks[text[4:]] = time.perf_counter() - t0
        if event == "end":
            break
    total = time.perf_counter() - t0
    build = (await client.get(f"builds/{build_id}")).json()
    if build["status"] != "succeeded":
        raise RuntimeError(f"build {build_id} {build['status']}: {build['error']}")
    bounds = [marks[s] for s in STAGES] + [total]
    times = {s: bounds[i + 1] - bounds[i] for i, s in enumerate(STAGES)}
    # myst-nb reports each notebook's execution (kernel start included): the book stage
    # splits into that and the rest (probe, Sphinx, lend/reclaim of the checkout)
    book_log = (await client.get(f"builds/{build_id}/logs/book")).text
    times[EXEC] = sum(float(m[1]) for m in EXECUTED.finditer(book_log))
    times[REST] = times["book"] - times[EXEC]
    return {"total": total, **times, "executed": build["executed"], "cached": build["cached"]}


async def one_rep(root: Path, index, rep: int, sandbox: str) -> dict[str, dict]:
    repos = root / f"repos{rep}-{sandbox}"
    data = DataServer()
    url = data.add("/bench.tar.gz", tar_gz_bytes({"values.txt": b"1 2 3\n" * 1000}))
    files = preprint(notebooks(), data={"src": url, "dst": "./data", "projectName": "bench"})
    repo = repos / "bench-preprint"
    make_repo(repo, files)
    out = {}
    print(f"rep {rep + 1} sandbox {sandbox}: starting a hub ({load()})", flush=True)
    try:
        with running_hub(root, index, repos, name=f"hub{rep}-{sandbox}", sandbox=sandbox) as hub:
            async with hub.token_client("alice") as c:
                out["cold"] = await timed_build(c, "POST", "preprints",
                                                {"repository": str(repo), "ref": "main"})  # fmt: skip
                pid = (await c.get("preprints")).json()[0]["id"]
                commit(repo, {"content/intro.md": "# Introduction\n\nRevised prose."})
                out["prose"] = await timed_build(c, "POST", f"preprints/{pid}/builds", None)
                changed = notebooks(version=1)
                commit(repo, {"content/nb2.ipynb": changed["nb2"]})
                out["one of 5"] = await timed_build(c, "POST", f"preprints/{pid}/builds", None)
    finally:
        data.close()
    print(f"rep {rep + 1} sandbox {sandbox}: " + ", ".join(
        f"{k} {v['total']:.1f} s" for k, v in out.items()), flush=True)  # fmt: skip
    return out


KINDS = ("cold", "prose", "one of 5")


def summary(runs: list[dict[str, dict]], sandbox: str) -> None:
    rows = []
    for k in KINDS:
        med = {f: median([r[k][f] for r in runs]) for f in ("total", *STAGES)}
        rows.append([k, *(f"{med[f]:.1f}" for f in ("total", *STAGES)),
                     f"{runs[-1][k]['executed']}/{runs[-1][k]['cached']}",
                     f"{median([r['cold']['total'] / r[k]['total'] for r in runs]):.1f}x"])  # fmt: skip
    print()
    print(f"sandbox {sandbox}: median of {len(runs)} fresh hubs")
    print(table(["build", "total s", *(f"{s} s" for s in STAGES), "executed/cached",
                 "cold/this"], rows))  # fmt: skip
    print("book stage, median s: notebooks executing (myst-nb's own times summed) / the rest: "
          + ", ".join(f"{k} {median([r[k][EXEC] for r in runs]):.1f} / "
                      f"{median([r[k][REST] for r in runs]):.1f}" for k in KINDS))  # fmt: skip
    data_first = median([r["cold"]["data"] for r in runs])
    data_again = median([r["prose"]["data"] for r in runs])
    print(f"data stage: first fetch {data_first:.2f} s, reused {data_again:.2f} s "
          f"({ratio(data_first, data_again):.1f}x)")  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--sandbox", choices=[*SANDBOXES, "both"], default="bwrap",
                    help="the service's confinement; both: alternate, and compare")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    require_tools()
    print(f"start: {uptime()}", flush=True)
    runs: dict[str, list[dict[str, dict]]] = {sb: [] for sb in SANDBOXES}
    with workspace(args.keep) as root, package_index(root) as index:
        for rep in range(args.reps):
            for sandbox in sandbox_order(args.sandbox, rep):
                runs[sandbox].append(await one_rep(root, index, rep, sandbox))
            print(f"rep {rep + 1}/{args.reps} done", flush=True)
    print(f"end: {uptime()}")
    for sandbox in SANDBOXES:
        if runs[sandbox]:
            summary(runs[sandbox], sandbox)
    if args.sandbox == "both":
        metrics = [(f"{k}: {f}", *([r[k][f] for r in runs[sb]] for sb in SANDBOXES))
                   for k in KINDS for f in ("total", *STAGES, EXEC, REST)]  # fmt: skip
        print()
        print("bwrap / none, same run (each repetition: one fresh hub per sandbox, back to back)")
        print(table(COMPARE_HEADERS, compare_rows(metrics)))


if __name__ == "__main__":
    asyncio.run(main())
