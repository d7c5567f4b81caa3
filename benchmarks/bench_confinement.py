"""What the confinement costs by itself, outside a build: lending an environment to the build
user and reclaiming it, and starting a step through bubblewrap + prlimit + setpriv.

1. Lend / reclaim. A real environment (built through a hub with the default sandbox, or an
   existing one given with --env) is copied (cp -a, owned by root as the service leaves it),
   then, --reps times on that copy:
     walk      os.walk + lstat of every entry (what reclaim costs when nothing changes: the
               service also reclaims with sandbox = 'none', and a tree it already owns)
     lend      Sandbox.lend: chown -R to the build user (before a step that writes the tree)
     reclaim   Sandbox.reclaim: chown -R back to the service, drop group/other write and
               set-id bits (after the step)
   lend is a no-op unless the service is root (steps then run as the service's own user).

2. Start overhead. `true` run --starts times through subprocess.run, each variant once per
   round (interleaved, so the machine's load hits all alike):
     direct          /usr/bin/true
     prlimit         prlimit <the default limits> -- true
     setpriv         setpriv <to the build user, no capabilities> -- true (root only)
     bwrap           bwrap <the mounts a book step gets> -- true
     wrap, network   Sandbox.wrap(['true']) as an install step gets it (bwrap, prlimit, setpriv)
     wrap, no net    the same with --unshare-net, as a book or a layout check gets it
   The wrapped command lines are sliced from Sandbox.wrap's own output.

3. A book build (--book N): a Jupyter Book 1 preprint of five notebooks (each computes for
   1 s), as bench_preprint.py builds it, in an environment with jupyter-book built through a
   hub. N rounds, each running on a fresh copy of the checkout (empty execution cache, so all
   five notebooks execute), in turn:
     direct          `jupyter-book build --all content` as root, unconfined (sandbox 'none')
     bwrap           inside the same bubblewrap mounts (no prlimit, no setpriv: root)
     wrap            Sandbox.wrap as the book stage runs it: bwrap, prlimit, setpriv to the
                     build user, --unshare-net; the checkout lent before and reclaimed after
   Environment variables as the service sets them for a book (Sandbox.env, BOOK_ENV).

Usage: python benchmarks/bench_confinement.py [--env DIR] [--reps 5] [--starts 50] [--book 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    make_repo,
    median,
    package_index,
    pct,
    ratio,
    require_tools,
    running_hub,
    sse_events,
    table,
    uptime,
    workspace,
)
from bench_preprint import EXECUTED

from neurolibre_service.sandbox import Sandbox


async def build_environment(root: Path, requirements: str = "", name: str = "hub") -> Path:
    """Build one environment through a hub (sandbox bwrap); its directory in the hub's data."""
    repos = root / f"repos-{name}"
    repos.mkdir()
    with package_index(root) as index:
        req = index.add_sdist(index.sdists, f"nlbench-confine-{name}-{os.getpid()}", "1.0", "")
        repo = repos / "confine"
        make_repo(repo, {"binder/requirements.txt": f"{req}\n{requirements}",
                         "content/a.md": "# A\n"})  # fmt: skip
        with running_hub(root, index, repos, name=name, sandbox="bwrap") as hub:
            async with hub.token_client("alice") as alice:
                r = await alice.post("environments", json={"name": "confine",
                                                          "repository": str(repo)})  # fmt: skip
                r.raise_for_status()
                env_id = r.json()["id"]
                t0 = time.perf_counter()
                async for kind, data, _ in sse_events(alice, f"environments/{env_id}/log"):
                    if kind == "end":
                        if json.loads(data)["status"] != "succeeded":
                            raise RuntimeError(f"build failed: {data}")
                        break
                print(f"environment built in {time.perf_counter() - t0:.1f} s", flush=True)
                key = (await alice.get(f"environments/{env_id}")).json()["runtime"]["key"]
            return hub.service_data / "environments" / key


def copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def tree_stats(top: Path) -> tuple[int, int, int]:
    """(directories, other entries, bytes of regular files)."""
    dirs, other, size = 1, 0, 0
    for root, ds, fs in os.walk(top):
        dirs += len(ds)
        other += len(fs)
        for f in fs:
            st = os.lstat(os.path.join(root, f))
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return dirs, other, size


def walk(top: Path) -> None:
    os.lstat(top)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lstat(os.path.join(root, name))


def owners(top: Path) -> set[int]:
    out = {os.lstat(top).st_uid}
    for root, dirs, files in os.walk(top):
        out.update(os.lstat(os.path.join(root, n)).st_uid for n in dirs + files)
    return out


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def lend_reclaim(env: Path, reps: int) -> None:
    sandbox = Sandbox("bwrap")
    dirs, other, size = tree_stats(env)
    print(f"\nenvironment copy: {env} ({dirs} directories, {other} files and links, "
          f"{size / 1e6:.0f} MB)")  # fmt: skip
    if not sandbox.switches_user:
        print("not root: lend is a no-op (steps run as the service's own user)")
    uid = sandbox.ids()[0]
    times: dict[str, list[float]] = {"walk": [], "lend": [], "reclaim": []}
    for _ in range(reps):
        times["walk"].append(timed(walk, env))
        times["lend"].append(timed(sandbox.lend, env))
        if sandbox.switches_user:
            assert owners(env) == {uid}, "lend left files to someone else"
        times["reclaim"].append(timed(sandbox.reclaim, env))
        assert owners(env) == {os.geteuid()}, "reclaim left files to someone else"
    rows = [[k, len(v), median(v), min(v), max(v), v[0]] for k, v in times.items()]
    print(f"Lend / reclaim of the environment (s), {reps} times each, in turn "
          f"(walk, lend, reclaim)")  # fmt: skip
    print(table(["step", "n", "median", "min", "max", "first"], rows))
    lr = median(times["lend"]) + median(times["reclaim"])
    print(f"lend + reclaim: {lr:.3f} s per environment build ({lr / (dirs + other) * 1e6:.1f} us "
          f"per entry); walk alone {median(times['walk']):.3f} s; "
          f"(lend + reclaim) / walk {ratio(lr, median(times['walk'])):.1f}x")  # fmt: skip


def variants(root: Path, env: Path) -> dict[str, list[str]]:
    hidden = root / "data"
    hidden.mkdir(exist_ok=True)
    work = root / "work"
    sandbox = Sandbox("bwrap", hidden=[hidden])
    true = shutil.which("true") or "/bin/true"
    args = {"writable": [work], "readable": [env], "cwd": work}
    full_net = sandbox.wrap([true], network=True, **args)
    full = sandbox.wrap([true], network=False, **args)
    seps = [i for i, a in enumerate(full) if a == "--"]
    out = {"direct": [true]}
    # bwrap's options end at the first "--", prlimit's at the second, setpriv's at the third
    out["prlimit"] = [*full[seps[0] + 1 : seps[1] + 1], true]
    if sandbox.switches_user:
        out["setpriv"] = [*full[seps[1] + 1 : seps[2] + 1], true]
    out["bwrap"] = [*full[: seps[0] + 1], true]
    out["wrap, network"] = full_net
    out["wrap, no net"] = full
    return out


def starts(root: Path, env: Path, n: int) -> None:
    cmds = variants(root, env)
    sandbox_env = Sandbox("bwrap").env()
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(n):
        for name, argv in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(argv, env=sandbox_env, check=True)
            times[name].append(time.perf_counter() - t0)
    base = median(times["direct"])
    rows = [[name, len(v), median(v) * 1e3, pct(v, 90) * 1e3, max(v) * 1e3,
             ratio(median(v), base), (median(v) - base) * 1e3]
            for name, v in times.items()]  # fmt: skip
    print(f"\nStarting `true` ({n} times each, interleaved), wall ms")
    print(table(["variant", "n", "median ms", "p90 ms", "max ms", "/ direct", "+ ms"], rows))
    print("full command (no net): " + " ".join(cmds["wrap, no net"]))


def book_checkout(root: Path) -> Path:
    """The preprint of bench_preprint.py, with its dataset already in data/."""
    from bench_preprint import notebooks

    from tests.support.preprints import preprint

    top = root / "book-template"
    for rel, text in preprint(notebooks()).items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(text)
    (top / "data" / "bench").mkdir(parents=True)
    (top / "data" / "bench" / "values.txt").write_text("1 2 3\n" * 1000)
    return top


def book(root: Path, env: Path, rounds: int) -> None:
    from neurolibre_service.books import BOOK_ENV

    template = book_checkout(root)
    interpreter = (env / "bin" / "python").resolve()
    readable = [env, interpreter.parent.parent]
    hidden = root / "data"
    hidden.mkdir(exist_ok=True)
    confined, bare = Sandbox("bwrap", hidden=[hidden]), Sandbox("none")
    times: dict[str, list[float]] = {"direct": [], "bwrap": [], "wrap": [], "wrap: lend": [],
                                     "wrap: reclaim": []}  # fmt: skip
    executed: dict[str, list[float]] = {k: [] for k in ("direct", "bwrap", "wrap")}
    for n in range(rounds):
        for variant in ("direct", "bwrap", "wrap"):
            checkout = root / f"book-{n}-{variant}"
            subprocess.run(["cp", "-a", str(template), str(checkout)], check=True)
            argv = [str(env / "bin" / "jupyter-book"), "build", "--all", "content"]
            sandbox = bare if variant == "direct" else confined
            wrapped = sandbox.wrap(argv, writable=[checkout], readable=readable, cwd=checkout,
                                   network=False)  # fmt: skip
            if variant == "bwrap":
                wrapped = [*wrapped[: wrapped.index("--") + 1], *argv]
            env_vars = sandbox.env(path_prefix=[str(env / "bin")],
                                   extra={"VIRTUAL_ENV": str(env), **BOOK_ENV})  # fmt: skip
            if variant == "wrap":
                times["wrap: lend"].append(timed(confined.lend, checkout))
            t0 = time.perf_counter()
            done = subprocess.run(wrapped, cwd=checkout, env=env_vars, capture_output=True,
                                  text=True)  # fmt: skip
            times[variant].append(time.perf_counter() - t0)
            if variant == "wrap":
                times["wrap: reclaim"].append(timed(confined.reclaim, checkout))
            if done.returncode != 0:
                raise RuntimeError(f"book ({variant}) failed:\n{done.stdout[-3000:]}"
                                   f"{done.stderr[-3000:]}")  # fmt: skip
            log = done.stdout + done.stderr
            executed[variant].append(sum(float(m[1]) for m in EXECUTED.finditer(log)))
            print(f"  book round {n + 1} {variant}: {times[variant][-1]:.1f} s "
                  f"(notebooks {executed[variant][-1]:.1f} s)", flush=True)  # fmt: skip
            shutil.rmtree(checkout)
    base = median(times["direct"])
    rows = [[k, len(v), median(v), min(v), max(v), ratio(median(v), base) if k in executed
             else float("nan"), median(executed[k]) if k in executed else float("nan")]
            for k, v in times.items()]  # fmt: skip
    print(f"\nBook build (jupyter-book build --all, 5 notebooks executed), {rounds} rounds, s")
    print(table(["variant", "n", "median", "min", "max", "/ direct", "notebooks (myst-nb)"],
                rows))  # fmt: skip
    pairs = [ratio(w + lend + rec, d) for w, lend, rec, d in zip(
        times["wrap"], times["wrap: lend"], times["wrap: reclaim"], times["direct"],
        strict=True)]  # fmt: skip
    print("wrap with lend and reclaim / direct, per round: "
          + ", ".join(f"{p:.2f}" for p in pairs))  # fmt: skip


async def main_async(args) -> None:
    require_tools()
    print(f"start: {uptime()}", flush=True)
    with workspace(args.keep) as root:
        if args.env:
            env = copy(Path(args.env), root / "env")
        else:
            env = copy(await build_environment(root), root / "env")
        lend_reclaim(env, args.reps)
        starts(root, env, args.starts)
        if args.book:
            from tests.support.preprints import BOOK_REQUIREMENTS

            book_env = await build_environment(root, BOOK_REQUIREMENTS, name="book-hub")
            book(root, book_env, args.book)
    print(f"\nend: {uptime()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", help="an environment directory to copy (default: build one)")
    ap.add_argument("--reps", type=int, default=5, help="lend/reclaim repetitions")
    ap.add_argument("--starts", type=int, default=50, help="starts of each variant")
    ap.add_argument("--book", type=int, default=0, help="rounds of the book comparison")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
