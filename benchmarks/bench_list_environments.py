"""GET /services/neurolibre/api/environments with 10,000 environments, 50 concurrent clients.

A real hub with the service starts in a temporary directory; the environments (each with one
finished build job, sharing 50 runtimes, owned by 500 users of whom "alice" owns 20) are
inserted straight into the service's SQLite database with its SQLAlchemy models. Clients
use hub API tokens and go through the hub's proxy, like scripts do. Two identities:

  admin  (custom:neurolibre:admin scope): the listing holds all 10,000 environments
  alice  (an ordinary user): the listing holds her 20

Each identity runs a fixed number of requests at concurrency 1 (the service time of one
request) and at concurrency 50; latency is from sending the request to having the whole body.
Then, in this process, the service's own query (EnvironmentManager._listing), to_dict and
json.dumps run against the same database file, to show where an admin request's time goes.

Usage: python benchmarks/bench_list_environments.py [--envs 10000] [--concurrency 50]
           [--admin-requests 100] [--user-requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    median,
    package_index,
    pct,
    populate,
    require_tools,
    running_hub,
    table,
    workspace,
)

from neurolibre_service.db.models import Environment
from neurolibre_service.environments.manager import EnvironmentManager


async def load(url: str, token: str, requests: int, concurrency: int,
               expect: int) -> tuple[list[float], float, int, list[str]]:  # fmt: skip
    """`requests` GETs by `concurrency` workers.

    Returns (latencies s of the good answers, wall s, body bytes, errors).
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers={"Authorization": f"token {token}"}, limits=limits,
                                 timeout=600) as client:  # fmt: skip
        # once, outside the timing: the service's first look-up of a token asks the hub
        r = await client.get(url)
        r.raise_for_status()
        got = len(r.json())
        if got != expect:
            raise RuntimeError(f"listing has {got} environments, expected {expect}")
        size = len(r.content)
        remaining = requests
        latencies: list[float] = []
        errors: list[str] = []

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    r = await client.get(url)
                    body = r.content  # the whole body is read; parsing it is not timed
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__} after {time.perf_counter() - t0:.1f} s")
                    continue
                if r.status_code != 200 or len(body) < size // 2:
                    errors.append(f"{r.status_code} after {time.perf_counter() - t0:.1f} s: "
                                  f"{body[:120]!r}")  # fmt: skip
                else:
                    latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - t0, size, errors


async def probe(url: str, token: str, stop: asyncio.Event, cap: int = 10_000) -> list[float]:
    """One client's sequential requests until `stop` is set (or `cap` requests)."""
    latencies: list[float] = []
    async with httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=600) as c:
        (await c.get(url)).raise_for_status()
        while not stop.is_set() and len(latencies) < cap:
            t0 = time.perf_counter()
            r = await c.get(url)
            if r.status_code != 200:
                print(f"  probe: {r.status_code} after {time.perf_counter() - t0:.1f} s: "
                      f"{r.text[:120]!r}")  # fmt: skip
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
    return latencies


def breakdown(db_path: Path, user: str | None, repeat: int = 5) -> dict[str, float]:
    """Median seconds of the list() steps in this process (sync driver, same SQL)."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(f"sqlite:///{db_path}")
    stmt = EnvironmentManager._listing(None).order_by(Environment.id)
    if user:
        stmt = stmt.where(Environment.owner == user)
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    steps: dict[str, list[float]] = {"SQL only": [], "query+ORM": [], "to_dict": [],
                                     "json.dumps": []}  # fmt: skip
    for _ in range(repeat):
        with engine.connect() as conn:
            t0 = time.perf_counter()
            conn.exec_driver_sql(sql).fetchall()
            steps["SQL only"].append(time.perf_counter() - t0)
        with Session(engine) as s:
            t0 = time.perf_counter()
            rows = s.execute(stmt).all()
            t1 = time.perf_counter()
            data = [EnvironmentManager.to_dict(None, env, job) for env, job in rows]
            t2 = time.perf_counter()
            json.dumps(data)
            t3 = time.perf_counter()
        steps["query+ORM"].append(t1 - t0)
        steps["to_dict"].append(t2 - t1)
        steps["json.dumps"].append(t3 - t2)
    with engine.connect() as conn:
        from sqlalchemy import text

        plan = conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")).all()
    engine.dispose()
    out = {k: median(v) for k, v in steps.items()}
    out["plan"] = "; ".join(row[-1] for row in plan)
    return out


async def main_async(args) -> None:
    require_tools()
    with workspace(args.keep) as root, package_index(root) as index:
        repos = root / "repos"
        repos.mkdir()
        with running_hub(root, index, repos) as hub:
            db_path = hub.service_data / "neurolibre.sqlite"
            t0 = time.perf_counter()
            populate(db_path, args.envs, args.user_envs)
            print(f"inserted {args.envs} environments + jobs in {time.perf_counter() - t0:.1f} s")
            # one page, as the API serves it (limit 100 by default, 1000 at most)
            url = f"{hub.api}environments?limit={args.limit}"
            tokens = {"admin": hub.api_token("admin"), "alice": hub.api_token("alice")}
            expect = {"admin": min(args.envs, args.limit), "alice": min(args.user_envs, args.limit)}
            plan = [
                ("admin", 1, args.admin_requests_c1),
                ("admin", args.concurrency, args.admin_requests),
                ("alice", 1, args.user_requests_c1),
                ("alice", args.concurrency, args.user_requests),
            ]
            results = {}
            probes = {}
            for who, conc, n in plan:
                # while the load runs, one alice client asks for her own list now and then:
                # how much do the others' requests delay hers?
                stop = asyncio.Event()
                if conc > 1:
                    probe_task = asyncio.create_task(probe(url, tokens["alice"], stop))
                try:
                    lat, wall, size, errors = await load(url, tokens[who], n, conc,
                                                         expect[who])  # fmt: skip
                finally:
                    stop.set()
                if conc > 1:
                    probes[who, conc] = await probe_task
                results[who, conc] = (lat, wall, size, errors)
                print(f"  {who} x{conc}: {n} requests in {wall:.1f} s, {len(errors)} failed")
                for e in sorted(set(errors))[:5]:
                    print(f"    failed: {e}")
            idle = await probe(url, tokens["alice"], asyncio.Event(), cap=50)
            steps = {who: breakdown(db_path, None if who == "admin" else "alice")
                     for who in ("admin", "alice")}  # fmt: skip

    rows = []
    for (who, conc), (lat, wall, size, errors) in results.items():
        rows.append([who, expect[who], f"{size / 1e6:.2f} MB" if size > 1e5 else f"{size / 1e3:.1f} kB",
                     conc, len(lat) + len(errors), len(errors), 1000 * median(lat), 1000 * pct(lat, 99), len(lat) / wall])  # fmt: skip
    print()
    print(f"GET /services/neurolibre/api/environments?limit={args.limit}, {args.envs} environments in the store, "
          "through the hub's proxy")  # fmt: skip
    print(table(["user", "envs listed", "body", "clients", "requests", "failed", "p50 ms", "p99 ms",
                 "req/s"], rows))  # fmt: skip
    c = args.concurrency
    a, u = results["admin", c], results["alice", c]
    a1, u1 = results["admin", 1], results["alice", 1]
    print()
    print(f"admin / alice at {c} clients: p50 {median(a[0]) / median(u[0]):.0f}x, "
          f"p99 {pct(a[0], 99) / pct(u[0], 99):.0f}x, req/s {len(u[0]) / u[1] / (len(a[0]) / a[1]):.0f}x fewer")  # fmt: skip
    print(f"admin / alice at 1 client: p50 {median(a1[0]) / median(u1[0]):.0f}x")
    print(f"{c} clients / 1 client, p50: admin {median(a[0]) / median(a1[0]):.1f}x, "
          f"alice {median(u[0]) / median(u1[0]):.1f}x")  # fmt: skip
    print()
    print("One alice client (sequential, 50 ms apart) while the load above runs:")
    prow = [["(no other load)", len(idle), 1000 * median(idle), 1000 * pct(idle, 99), 1.0]]
    for (who, conc), lat in probes.items():
        prow.append([f"{who} x{conc}", len(lat), 1000 * median(lat), 1000 * pct(lat, 99),
                     median(lat) / median(idle)])  # fmt: skip
    print(table(["during", "requests", "p50 ms", "p99 ms", "p50 / no load"], prow))
    print()
    print("Service steps of list(), run in this process on the same database (median ms):")
    print(table(["user", "SQL only", "query+ORM", "to_dict", "json.dumps", "share of c1 p50"],
                [[who, 1000 * s["SQL only"], 1000 * s["query+ORM"], 1000 * s["to_dict"], 1000 * s["json.dumps"],
                  f"{100 * (s['query+ORM'] + s['to_dict'] + s['json.dumps']) / median(results[who, 1][0]):.0f}%"]
                 for who, s in steps.items()]))  # fmt: skip
    for who, s in steps.items():
        print(f"query plan ({who}): {s['plan']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", type=int, default=10_000)
    ap.add_argument("--user-envs", type=int, default=20, help="environments alice owns")
    ap.add_argument("--limit", type=int, default=100, help="page size asked for (API max 1000)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--admin-requests", type=int, default=100)
    ap.add_argument("--user-requests", type=int, default=2000)
    ap.add_argument("--admin-requests-c1", type=int, default=10)
    ap.add_argument("--user-requests-c1", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
