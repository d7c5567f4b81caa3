"""The local builder's environment build of a typical NeuroLibre runtime against a bare
`uv venv && uv pip install -r requirements.txt` of the same requirements, same warm uv cache.

The runtime is binder/requirements.txt as an author pins it (RUNTIME below: jupyter-book,
numpy, matplotlib, nilearn, pandas), Python = the builder's default (the service's).

Variants, each run once per round; the order rotates from round to round, so the machine's
load and the page cache hit all of them alike:

  builder          LocalBuilder.build as the service calls it, confined as in production:
                   uv venv and uv pip install through Sandbox.wrap (bubblewrap, prlimit, setpriv
                   to the unprivileged build user), UV_LINK_MODE=copy, UV_COMPILE_BYTECODE=1,
                   the environment lent before and reclaimed after, sealed, measured (du).
                   Installs requirements.txt plus the packages the builder adds to every
                   environment (its server_packages or kernel_packages trait, whichever this
                   version of the code has; left at their defaults)
  bare             uv venv + uv pip install -r requirements.txt + the same added packages, as
                   root, unconfined, uv's defaults (link mode hardlink on Linux, no bytecode)
  bare+compile     the same with --compile-bytecode
  bare+copy        the same with --link-mode copy
  bare+copy+compile  both: the builder's uv settings without the confinement and service steps
  bare, reqs only  uv venv + uv pip install -r requirements.txt (what an author runs at home)

All use the same uv cache (the builder's, LocalBuilder.cache_dir of the owner) and the same
interpreter (the one the builder finds). The cache is warm: with --cold (the default) a first
builder build fills it and is reported as "cold", and one bare install into a separate, empty
cache is reported as "cold bare"; otherwise a first builder build warms it untimed. Bare
installs run as root and may write into the cache; before each builder build the cache is lent
back to the build user (chown -R, untimed), as the service leaves it.

Timed: the whole LocalBuilder.build call (it includes its recipe: the Python look-up), split
into the steps it runs (from JobContext.run) and what happens around them; for a bare variant
uv venv + uv pip install. uv's own phase times (Resolved / Prepared / Installed / Bytecode
compiled) come from its output. "sync" (not part of the totals) is `sync -f` on the
environment's filesystem right after each variant: the written data the kernel still had to
flush (copy mode writes every file; hard links write almost nothing). Per variant, untimed:
files, .pyc files, size, and the bytes the environment holds alone (regular files with one
link: not shared with the cache). In builder, bare and bare+compile: the wall time of importing what a
notebook of this runtime imports (IMPORTS), with PYTHONDONTWRITEBYTECODE=1, since a built
environment is read-only to the kernels that run in it.

Packages come from a local index on 127.0.0.1 (the tests' PackageIndex, serving wheels
downloaded once from PyPI into ~/.cache/neurolibre-tests: no network in the timings; its pages
carry no cache headers, so every install re-fetches ~220 index and metadata pages, ~2-4 s of
"Resolved" in every variant), or with --index pypi from PyPI itself, as production installs
(its pages may be cached for 10 minutes: a warm resolve takes ~1 s).

Usage: python benchmarks/bench_envbuild.py [--reps 6] [--no-cold] [--index local|pypi]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jupyterhub

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PackageIndex, load, median, ratio, table, uptime, workspace
from bench_rebuild import UV_PHASES, uv_phases

from neurolibre_service.environments.local import LocalBuilder
from neurolibre_service.environments.runtime import find_runtime
from neurolibre_service.processes import run_streaming
from neurolibre_service.sandbox import Sandbox
from tests.support.pkgindex import _wheels, cache_dir, server_wheels

# a typical NeuroLibre runtime, pinned as an author pins it (the direct dependencies only):
# Jupyter Book 1 (NeuroLibre's book format), the scientific stack, nilearn (which brings
# scipy, scikit-learn, nibabel, joblib, lxml, requests)
RUNTIME = ["jupyter-book==1.0.4.post1", "numpy==2.3.5", "matplotlib==3.10.8", "nilearn==0.12.1",
           "pandas==2.3.3"]  # fmt: skip
OWNER = "bench"
BARE = {  # variant -> (extra uv pip install flags, with the builder's added packages)
    "bare": ([], True),
    "bare+compile": (["--compile-bytecode"], True),
    "bare+copy": (["--link-mode", "copy"], True),
    "bare+copy+compile": (["--link-mode", "copy", "--compile-bytecode"], True),
    "bare, reqs only": ([], False),
}
VARIANTS = ["builder", *BARE]
# what a notebook of this runtime imports at its first cell, and its kernel's start
IMPORTS = "import ipykernel.kernelapp, numpy, pandas, matplotlib.pyplot, nilearn.plotting"
IMPORT_TIMED = ("builder", "bare", "bare+compile")
ADDED_TRAITS = ("kernel_packages", "server_packages")  # the newer name first
UV_COLS = [f"uv {p.lower()}" for p in UV_PHASES]


class Ctx:
    """What LocalBuilder.build uses of a job (owner, log, stages, a way to run processes),
    keeping the log and when each step ran."""

    owner = OWNER

    def __init__(self, uv: str) -> None:
        self.uv = uv
        self.lines: list[str] = []
        self.steps: list[tuple[str, float, float]] = []

    def say(self, text: str) -> None:
        self.lines += text.splitlines() or [""]

    async def stage(self, stage: str) -> None:
        self.say(f"==> {stage}")

    async def run(self, argv, *, cwd=None, env=None) -> int:
        t0 = time.perf_counter()
        try:
            return await run_streaming(argv, on_line=self.lines.append, cwd=cwd, env=env)
        finally:
            self.steps.append((step_name(argv, self.uv), t0, time.perf_counter()))


def step_name(argv: list[str], uv: str) -> str:
    """`uv venv`, `uv pip`, ... out of a wrapped command line (bwrap ... -- prlimit ... --)."""
    for i, a in enumerate(argv):
        if a == uv and i + 1 < len(argv):
            return f"uv {argv[i + 1]}"
    after = argv[max((i for i, a in enumerate(argv) if a == "--"), default=-1) + 1 :]
    return Path(after[0]).name if after else "?"


def added_packages(builder: LocalBuilder) -> tuple[str, list[str]]:
    """The packages the builder puts into every environment, from whichever trait it has."""
    for name in ADDED_TRAITS:
        if builder.has_trait(name):
            pkgs = [p.format(hub_version=builder.hub_version) for p in getattr(builder, name)]
            return name, pkgs
    return "(none)", []


def tree_facts(top: Path) -> dict[str, float]:
    files = pyc = size = own = 0
    for root, _dirs, names in os.walk(top):
        for n in names:
            st = os.lstat(os.path.join(root, n))
            files += 1
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
                own += st.st_size if st.st_nlink == 1 else 0
                pyc += n.endswith(".pyc")
    return {"files": files, ".pyc": pyc, "MB": size / 1e6, "own MB": own / 1e6}


def sync_time(path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sync", "-f", str(path)], check=True)
    return time.perf_counter() - t0


class Bench:
    def __init__(self, root: Path, index_url: str | None, reps: int, cold: bool) -> None:
        self.root, self.reps, self.cold = root, reps, cold
        data = root / "data"  # the service's data directory: hidden from steps, as in production
        self.repo = root / "paper"
        (self.repo / "binder").mkdir(parents=True)
        self.requirements = self.repo / "binder" / "requirements.txt"
        self.requirements.write_text("\n".join(RUNTIME) + "\n")
        extra = {"UV_DEFAULT_INDEX": index_url} if index_url else {}
        self.sandbox = Sandbox("bwrap", hidden=[data], extra_env=extra)
        self.sandbox.check()
        self.builder = LocalBuilder(environments_dir=str(data / "environments"),
                                    uv_cache_dir=str(data / "cache" / "uv"), sandbox=self.sandbox,
                                    hub_version=jupyterhub.__version__)  # fmt: skip
        self.trait, self.added = added_packages(self.builder)
        self.cache = self.builder.cache_dir(OWNER)
        self.bare_dir = root / "bare"
        self.bare_dir.mkdir()
        # what the builder's steps get of the service's environment (certificates, proxies)
        passed = {k: os.environ[k] for k in self.sandbox.passthrough if k in os.environ}
        self.bare_env = {**passed, "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(root),
                         "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never",
                         "UV_NO_PROGRESS": "1", "NO_COLOR": "1", **extra}  # fmt: skip
        self.results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        self.extra: dict[str, dict[str, float]] = {}
        self.interpreter: Path | None = None
        self.parts: list[list[tuple[str, float]]] = []  # per builder build, timed rounds only
        self.n = 0

    async def run_builder(self) -> dict[str, float]:
        runtime = find_runtime(self.repo)
        self.n += 1
        key = f"{runtime.digest(await self.builder.recipe(runtime))[:16]}-{self.n}"
        if self.cache.is_dir():  # bare installs ran as root in it: the service's state again
            await asyncio.to_thread(self.sandbox.lend, self.cache)
        ctx = Ctx(self.builder.uv)
        t0 = time.perf_counter()
        try:
            built = await self.builder.build(ctx, runtime, key)
        except Exception:
            print("\n".join(ctx.lines[-40:]), file=sys.stderr)
            raise
        t1 = time.perf_counter()
        env = Path(built.location)
        out = {"total": t1 - t0, "sync": sync_time(env), **uv_phases(ctx.lines)}
        # the confined steps in the order they ran, and the builder's own work around them
        parts: list[tuple[str, float]] = []
        last, prev = t0, "start"
        for name, start, end in ctx.steps:
            parts += [(f"({prev} -> {name})", start - last), (name, end - start)]
            last, prev = end, name
        self.parts.append([*parts, (f"({prev} -> end)", t1 - last)])
        out.update(tree_facts(env))
        out["import"] = await asyncio.to_thread(self.import_time, env)
        if self.interpreter is None:
            self.interpreter = Path(os.path.realpath(env / "bin" / "python"))
        await self.builder.remove(str(env))
        return out

    def run_bare(self, variant: str, cache: Path | None = None) -> dict[str, float]:
        flags, with_added = BARE[variant]
        env_dir = self.bare_dir / "env"
        env = {**self.bare_env, "UV_CACHE_DIR": str(cache or self.cache)}
        uv = self.builder.uv
        out: dict[str, float] = {}
        venv = [uv, "venv", "--no-project", "--python", str(self.interpreter), str(env_dir)]
        install = [uv, "pip", "install", "--python", str(env_dir / "bin" / "python"),
                   "-r", str(self.requirements), *(self.added if with_added else []), *flags]  # fmt: skip
        lines: list[str] = []
        for name, argv in (("uv venv", venv), ("uv pip", install)):
            t0 = time.perf_counter()
            done = subprocess.run(argv, env=env, cwd=self.bare_dir, capture_output=True, text=True)
            out[name] = time.perf_counter() - t0
            lines += (done.stdout + done.stderr).splitlines()
            if done.returncode:
                raise RuntimeError(f"{variant}: {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
        out["total"] = out["uv venv"] + out["uv pip"]
        out["sync"] = sync_time(env_dir)
        out.update(uv_phases(lines))
        out.update(tree_facts(env_dir))
        if variant in IMPORT_TIMED and cache is None:
            out["import"] = self.import_time(env_dir)
        shutil.rmtree(env_dir)
        return out

    def import_time(self, env_dir: Path, times: int = 3) -> float:
        """Median wall time of IMPORTS in the environment, after one untimed run (matplotlib's
        font cache). Nothing is written: a built environment is read-only to kernels (owned by
        the service after reclaim), so what was not compiled at build time is compiled again
        by every process that imports it."""
        env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(self.root),
               "MPLCONFIGDIR": str(self.root / "mplconfig"), "MPLBACKEND": "Agg",
               "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
        argv = [str(env_dir / "bin" / "python"), "-c", IMPORTS]
        walls = []
        for n in range(times + 1):
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, cwd=self.root, check=True, capture_output=True)
            if n:
                walls.append(time.perf_counter() - t0)
        return median(walls)

    async def variant(self, name: str) -> dict[str, float]:
        if name == "builder":
            return await self.run_builder()
        return await asyncio.to_thread(self.run_bare, name)

    async def run(self) -> None:
        print(f"requirements.txt: {', '.join(RUNTIME)}")
        print(f"the builder adds ({self.trait}): {', '.join(self.added) or 'nothing'}")
        first = await self.run_builder()  # fills the cache (and finds the interpreter)
        self.parts.clear()
        print(f"interpreter: {self.interpreter}")
        print(f"first builder build (empty cache): {first['total']:.1f} s", flush=True)
        if self.cold:
            self.extra["cold"] = first
            cold_cache = self.root / "data" / "cache" / "cold-bare"
            self.extra["cold bare"] = await asyncio.to_thread(self.run_bare, "bare", cold_cache)
            shutil.rmtree(cold_cache)
            print(f"cold bare (empty cache): {self.extra['cold bare']['total']:.1f} s", flush=True)
        for r in range(self.reps):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            print(f"round {r + 1}/{self.reps} ({load()}):", end="", flush=True)
            for name in order:
                res = await self.variant(name)
                self.results[name].append(res)
                print(f" {name} {res['total']:.1f}s", end=",", flush=True)
            print()

    def report(self) -> None:
        rows = []
        for name, runs in [*self.results.items(), *((k, [v]) for k, v in self.extra.items())]:
            m = {k: median([r[k] for r in runs if k in r])
                 for k in ("total", *UV_COLS, "sync", "files", ".pyc", "MB", "own MB", "import")}  # fmt: skip
            rows.append([name, len(runs), m["total"], min(r["total"] for r in runs),
                         max(r["total"] for r in runs), *(m[c] for c in UV_COLS), m["sync"],
                         int(m["files"]), int(m[".pyc"]), m["MB"], m["own MB"], m["import"]])  # fmt: skip
        print(f"\nEnvironment build, {self.reps} rounds (s; medians; cold: one run)")
        print(table(["variant", "n", "median", "min", "max", *UV_COLS, "sync after", "files",
                     ".pyc", "MB", "own MB", "import s"], rows))  # fmt: skip

        print("\nRatios, each round's variant / its own round's reference (median of pairs)")
        rows = []
        for a, b, what in (
            ("builder", "bare", "the builder vs a bare install of the same packages"),
            ("builder", "bare, reqs only", "the builder vs what an author runs at home"),
            ("bare+compile", "bare", "byte-compilation alone"),
            ("bare+copy", "bare", "copy mode alone"),
            ("bare+copy+compile", "bare", "both (the builder's uv settings)"),
            ("builder", "bare+copy+compile", "the rest: confinement, lend/reclaim, seal, du"),
            ("bare", "bare, reqs only", "the packages the builder adds"),
        ):  # fmt: skip
            ta = [r["total"] for r in self.results[a]]
            tb = [r["total"] for r in self.results[b]]
            pairs = [ratio(x, y) for x, y in zip(ta, tb, strict=True)]
            rows.append([f"{a} / {b}", what, median(pairs), median(ta) - median(tb),
                         ", ".join(f"{p:.2f}" for p in pairs)])  # fmt: skip
        print(table(["ratio", "what it isolates", "median of pairs", "+ s (medians)",
                     "per round"], rows))  # fmt: skip
        imp = {v: [r["import"] for r in self.results[v]] for v in ("bare", "bare+compile")}
        saved = median(imp["bare"]) - median(imp["bare+compile"])
        cost = median([r["total"] for r in self.results["bare+compile"]]) - median(
            [r["total"] for r in self.results["bare"]])  # fmt: skip
        pairs = [ratio(a, b) for a, b in zip(imp["bare"], imp["bare+compile"], strict=True)]
        print(f"importing the notebook's stack ({IMPORTS}), read-only environment: without .pyc "
              f"{median(imp['bare']):.2f} s, with {median(imp['bare+compile']):.2f} s "
              f"(x{median(pairs):.2f}, median of pairs; -{saved:.2f} s per process); "
              f"compiling at build time costs {cost:.1f} s = {ratio(cost, saved):.0f} such imports")  # fmt: skip
        if "cold" in self.extra:
            c, cb = self.extra["cold"]["total"], self.extra["cold bare"]["total"]
            print(f"cold: builder {c:.1f} s / bare {cb:.1f} s = {ratio(c, cb):.2f}; "
                  f"cold / warm builder {ratio(c, median([r['total'] for r in self.results['builder']])):.2f}")  # fmt: skip

        labels = [label for label, _ in self.parts[0]] if self.parts else []
        total = median([r["total"] for r in self.results["builder"]])
        rows = []
        for label in labels:
            m = median([dict(p).get(label, 0.0) for p in self.parts])
            rows.append([label, m, ratio(m, total)])
        print("\nWhere the builder's time goes (median s over rounds): its confined steps, and in "
              "parentheses\nthe builder's own work between them (before the first: recipe, the "
              "Python look-up, lending\nthe new directory; after the install: reclaim (chown -R, "
              "chmod go-w), seal; du at the end)")  # fmt: skip
        print(table(["part", "median s", "share"], rows))


@contextlib.contextmanager
def index_for(choice: str) -> Iterator[str | None]:
    if choice == "pypi":
        yield None
        return
    cache = cache_dir()
    runtime = _wheels(cache, [*RUNTIME, f"jupyterhub=={jupyterhub.__version__}", "ipykernel",
                              "jupyterlab"])  # fmt: skip
    index = PackageIndex([server_wheels(cache), runtime])
    try:
        yield index.url
    finally:
        index.close()


async def main_async(args) -> None:
    if not shutil.which("bwrap"):
        sys.exit("missing tool: bwrap (see scripts/install.sh)")
    print(f"start: {uptime()}", flush=True)
    with workspace(args.keep) as root, index_for(args.index) as url:
        print(f"packages from {url or 'PyPI'}")
        bench = Bench(root, url, args.reps, args.cold)
        await bench.run()
        bench.report()
    print(f"\nend: {uptime()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=6, help="rounds (each runs every variant once)")
    ap.add_argument("--cold", action=argparse.BooleanOptionalAction, default=True,
                    help="report the first (empty-cache) build and one bare cold install")  # fmt: skip
    ap.add_argument("--index", choices=("local", "pypi"), default="local",
                    help="local: the tests' index on 127.0.0.1 (default); pypi: PyPI")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
