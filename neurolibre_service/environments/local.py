"""The embedded default backend: a uv virtual environment per runtime, built without Docker."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version
from traitlets import Enum, Instance, List, Unicode, default, validate
from uv import find_uv_bin

from ..sandbox import Sandbox
from ..units import du
from .base import Builder, BuiltRuntime
from .requirements import Requirements, check_allowed_indexes, parse_requirements
from .runtime import RuntimeError_, RuntimeFiles

if TYPE_CHECKING:
    from ..jobs import JobContext

# runtime files that need conda, apt, R, Julia or a Dockerfile: not something a venv can be
# (postBuild is run, as repo2docker runs it: see LocalBuilder.build)
UNSUPPORTED = {
    "environment.yml": "a conda environment",
    "environment.yaml": "a conda environment",
    "Dockerfile": "a Dockerfile",
    "apt.txt": "system packages (apt.txt)",
    "start": "a start script",
    "install.R": "R packages (install.R)",
    "DESCRIPTION": "an R package (DESCRIPTION)",
    "Project.toml": "a Julia environment (Project.toml)",
    "REQUIRE": "a Julia environment (REQUIRE)",
    "Pipfile": "a Pipfile",
    "Pipfile.lock": "a Pipfile",
    "setup.py": "installing the repository itself (setup.py)",
}
# repo2docker's runtime.txt, in any case (`Python-3.8` is NeuroLibre's template's spelling)
RUNTIME_TXT = re.compile(r"python-(\d+\.\d+)(\.\d+)?", re.IGNORECASE)
MARKER = ".neurolibre-complete"
KERNEL_NAME = "python3"  # the name notebooks ask for; the server's default kernel
KERNEL_LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")


@dataclass(frozen=True)
class Interpreter:
    path: Path  # resolved: what the sandbox exposes and the environment links to
    version: str  # X.Y.Z


def _is_version(v: str) -> bool:
    try:
        Version(v)
    except InvalidVersion:
        return False
    return True


class LocalBuilder(Builder):
    backend = "local"
    per_owner = True

    environments_dir = Unicode(help="Where the virtual environments live (set by the service).")
    uv_cache_dir = Unicode(help="uv's package cache, shared by builds (set by the service).")
    sandbox = Instance(Sandbox, help="How build steps are confined (set by the service).")
    hub_version = Unicode(help="The hub's version (set by the service; not used by this builder).")

    default_python = Unicode(
        help="Python version (X.Y) for repositories without runtime.txt. Default: the service's."
    ).tag(config=True)

    @default("default_python")
    def _default_python(self) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"

    kernel_packages = List(
        Unicode(),
        ["ipykernel", "nbformat"],
        help="""Packages every environment gets besides its requirements: the kernel a Jupyter
        server starts in it, and nbformat, which repo2docker's images always have in the
        kernel's environment and which plotly's notebook renderer needs (NeuroLibre's MyST
        article template draws with it and does not list it). The server itself (jupyterhub-singleuser, JupyterLab) runs from
        the service's own environment (c.NeuroLibre.server_packages), so its pins never meet
        the author's. The service writes the environment's `python3` kernelspec itself.""",
    ).tag(config=True)

    allowed_index_urls = List(
        Unicode(),
        help="""https package indexes binder/requirements.txt may name with --index-url or
        --extra-index-url (default: none, only the operator's own index). An extra index is
        searched before the default one, so it can supply any package: list only trusted ones.""",
    ).tag(config=True)

    @validate("allowed_index_urls")
    def _valid_indexes(self, proposal) -> list[str]:
        return check_allowed_indexes(proposal["value"])

    python_search_paths = List(
        Unicode(),
        help="""Where the local builder looks for the Python a runtime.txt asks for, in order:
        directories (shell-style patterns allowed, e.g. /opt/pythons/*/bin), `PATH` (the
        service's PATH) and `uv-managed` (Pythons installed by `uv python install`).
        Default: PATH, $(pyenv root)/versions/*/bin when a pyenv root exists (PYENV_ROOT or
        ~/.pyenv), uv-managed.""",
    ).tag(config=True)

    @default("python_search_paths")
    def _default_search_paths(self) -> list[str]:
        paths = ["PATH"]
        pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
        if (pyenv / "versions").is_dir():
            paths.append(str(pyenv / "versions" / "*" / "bin"))
        return [*paths, "uv-managed"]

    python_downloads = Enum(
        ["never", "automatic"],
        "never",
        help="""Whether the local builder may download a Python that runtime.txt asks for and
        python_search_paths does not have (uv's managed Pythons, python-build-standalone,
        installed where uv keeps them: see `uv python dir`). 'automatic' needs internet
        access: set it in production; the default 'never' suits offline machines.""",
    ).tag(config=True)

    @property
    def uv(self) -> str:
        return find_uv_bin()

    def _packages(self) -> list[str]:
        return list(self.kernel_packages)

    def _python(self, runtime: RuntimeFiles) -> str:
        text = runtime.text("runtime.txt")
        if text is None:
            return self.default_python
        where = "binder/" if runtime.label == "binder" else ""
        # repo2docker reads the first line; tolerate blank lines, comments and spaces around it
        lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        m = RUNTIME_TXT.fullmatch(lines[0]) if len(lines) == 1 else None
        if not m:
            value = " / ".join(lines) or "nothing"
            docker = ("the docker backend (`neurolibre build --builder docker`, "
                      "c.NeuroLibre.builder = 'docker')")  # fmt: skip
            if lines and lines[0].lower().startswith("r-"):
                raise RuntimeError_(f"{where}runtime.txt asks for R ({value!r}): the local builder "
                                    f"understands only python-X.Y. Build R with {docker}.")  # fmt: skip
            raise RuntimeError_(
                f"{where}runtime.txt says {value!r}: the local builder understands one line "
                f"python-X.Y (e.g. python-{self.default_python}). Other runtimes need {docker}."
            )
        return m.group(1)

    def _search_dirs(self) -> list[str]:
        dirs: list[str] = []
        for entry in self.python_search_paths:
            if entry == "PATH":
                found = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
            elif entry == "uv-managed":
                continue
            else:
                found = sorted(glob.glob(os.path.expanduser(entry)))
            dirs += [d for d in found if os.path.isabs(d) and os.path.isdir(d) and d not in dirs]
        return dirs

    def _uv_env(self) -> dict[str, str]:
        env = {"PATH": os.pathsep.join(self._search_dirs()), "UV_PYTHON_DOWNLOADS": "never",
               "HOME": os.environ.get("HOME", "/tmp"), "NO_COLOR": "1"}  # fmt: skip
        for name in ("UV_PYTHON_INSTALL_DIR", "XDG_DATA_HOME"):  # where uv-managed Pythons are
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _uv_python_args(self) -> list[str]:
        # only-system: uv's own Pythons are not searched unless the operator lists them
        pref = "managed" if "uv-managed" in self.python_search_paths else "only-system"
        return ["--no-config", "--python-preference", pref]

    async def _uv_python(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            self.uv, "python", *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=self._uv_env(), cwd="/",
        )  # fmt: skip
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace").strip()

    async def _find_python(self, version: str) -> Interpreter | None:
        """The interpreter for X.Y in python_search_paths (never downloads): its real path
        (sys.executable, not a pyenv shim or a symbolic link) and full version."""
        rc, out = await self._uv_python("find", "--no-project", *self._uv_python_args(), version)
        if rc or not out:
            return None
        proc = await asyncio.create_subprocess_exec(
            out.splitlines()[0], "-I", "-c",
            "import sys; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3])",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd="/",
            env={"PATH": self._uv_env()["PATH"]},
        )  # fmt: skip
        info, _ = await proc.communicate()
        lines = info.decode(errors="replace").split()
        if proc.returncode or len(lines) != 2 or not lines[1].startswith(version + "."):
            return None
        return Interpreter(Path(lines[0]).resolve(), lines[1])

    async def _pythons_found(self) -> list[str]:
        _rc, out = await self._uv_python("list", "--only-installed", "--output-format", "json",
                                        *self._uv_python_args())  # fmt: skip
        try:
            versions = {
                v["version"] for v in json.loads(out) if v.get("implementation") == "cpython"
            }
        except (ValueError, TypeError, KeyError):
            return []
        return sorted(versions, key=lambda v: Version(v) if _is_version(v) else Version("0"))

    async def _places(self) -> list[str]:
        places = []
        for entry in self.python_search_paths:
            if entry == "PATH":
                places.append(f"PATH ({os.environ.get('PATH', '')})")
            elif entry == "uv-managed":
                _rc, where = await self._uv_python("dir", "--no-config")
                places.append(f"uv-managed Pythons ({where or 'uv python dir'})")
            else:
                places.append(entry)
        return places

    async def _not_found(self, python: str, where: str) -> str:
        found = await self._pythons_found()
        places = "; ".join(await self._places())
        usable = ", ".join(found) or "none"
        pick = (f"name one of those in {where}runtime.txt (e.g. python-"
                f"{'.'.join(found[-1].split('.')[:2])}), or " if found else "")  # fmt: skip
        return (
            f"{where}runtime.txt asks for Python {python}, which this machine does not have where "
            f"the local builder looks for Pythons: {places}. Downloading Pythons is off "
            f"(c.LocalBuilder.python_downloads = '{self.python_downloads}'). "
            f"Pythons found there: {usable}. To fix: {pick}ask the operator to install Python "
            f"{python} in one of those places (e.g. `uv python install {python}` or `pyenv "
            f"install {python}`), or to allow downloads (c.LocalBuilder.python_downloads = "
            "'automatic')."
        )

    async def recipe(self, runtime: RuntimeFiles) -> dict:
        where = "binder/" if runtime.label == "binder" else ""
        for name, what in UNSUPPORTED.items():
            if name in runtime.files:
                raise RuntimeError_(
                    f"{where}{name} asks for {what}, which the local builder cannot provide "
                    "(it makes Python virtual environments from requirements.txt, runtime.txt "
                    "and postBuild). Build with the docker backend (repo2docker): "
                    "`neurolibre build --builder docker`, or on the service "
                    "c.NeuroLibre.builder = 'docker' (or a BinderHub: 'binderhub'); or use "
                    "requirements.txt."
                )
        reqs = self._requirements(runtime)
        if not reqs.ok:
            raise RuntimeError_(
                f"{where}requirements.txt cannot be installed as written:\n{reqs.message()}"
            )
        python = self._python(runtime)
        found = await self._find_python(python)
        if found is None and self.python_downloads == "never":
            raise RuntimeError_(await self._not_found(python, where))
        # recipe 2: the server stack no longer goes into authors' environments
        return {"backend": self.backend, "recipe": 2, "python": python,
                "kernel_packages": self._packages()}  # fmt: skip

    def _requirements(self, runtime: RuntimeFiles) -> Requirements:
        where = "binder/" if runtime.label == "binder" else ""
        return parse_requirements(runtime.files, runtime.directory, prefix=where,
                                  allowed_indexes=self.allowed_index_urls)  # fmt: skip

    async def _download_python(self, ctx: JobContext, version: str) -> None:
        """uv installs a managed Python (the operator allowed it): run as the service, since
        it writes where the service keeps its Pythons; it runs no code of the repository."""
        await ctx.stage(f"downloading Python {version}")
        env = {**self._uv_env(), "UV_PYTHON_DOWNLOADS": "automatic", "UV_NO_PROGRESS": "1"}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
                     "UV_PYTHON_INSTALL_MIRROR", "UV_NATIVE_TLS"):  # fmt: skip
            if name in os.environ:
                env[name] = os.environ[name]
        await ctx.run([self.uv, "python", "install", "--no-config", version], cwd=Path("/"),
                      env=env)  # fmt: skip

    async def _post_build(self, ctx: JobContext, runtime: RuntimeFiles, env_dir: Path,
                          work: Path, env: dict[str, str], readable: list[Path]) -> None:  # fmt: skip
        """repo2docker's postBuild: after the install, from the repository root, with the
        environment active. Confined like the install (network allowed), but it may write only
        into the environment: the checkout is read-only and the package cache out of reach."""
        from ..jobs import JobFailed

        where = f"{runtime.label}/" if runtime.label in ("binder", ".binder") else ""
        repo = runtime.directory.parent if where else runtime.directory
        await ctx.stage("running postBuild")
        original = runtime.directory / "postBuild"
        try:  # a regular file (not a link: what runs is what the runtime key hashed)
            mode = original.lstat().st_mode
            executable = stat.S_ISREG(mode) and bool(mode & 0o111)
        except OSError:
            executable = False
        if executable:
            # in place, as repo2docker runs it (`./binder/postBuild`: $0 finds its siblings)
            script = f"./{original.relative_to(repo).as_posix()}"
            scripts: list[Path] = []
        else:
            script = str(await asyncio.to_thread(_post_build_copy, runtime, work))
            scripts = [work]
            ctx.say(f"{where}postBuild is not executable: running it as repo2docker does, "
                    "made executable (chmod +x).")  # fmt: skip
        post_env = {k: v for k, v in env.items() if not k.startswith("UV_CACHE")}
        post_env.update(PATH=os.pathsep.join([str(env_dir / "bin"), "/usr/local/bin", "/usr/bin",
                                              "/bin"]),
                        VIRTUAL_ENV=str(env_dir))  # fmt: skip
        post_env.pop("PYTHONHOME", None)
        tools = [t for t in readable if t != runtime.directory]
        # /bin/sh runs a script without a #! line as a shell script, as Docker's RUN does
        argv = ["/bin/sh", "-c", '"$0"', script]
        wrapped = self.sandbox.wrap(argv, writable=[env_dir], readable=[repo, *tools, *scripts],
                                    cwd=repo)  # fmt: skip
        status = await ctx.run(wrapped, cwd=repo, env=post_env)
        if status:
            raise JobFailed(
                f"{where}postBuild failed with exit status {status}: see its output above. It "
                "runs after the install, from the repository root, with the environment "
                "active, and may write only into the environment (the repository is read-only)."
            )

    async def _check_kernel(self, ctx: JobContext, env_dir: Path) -> None:
        """The environment can start the kernel its kernelspec names: `import ipykernel`, run
        as later stages run the environment (confined, read-only: it is the service's now)."""
        from ..jobs import JobFailed

        code = ("import sys, ipykernel; print('Kernel: ipykernel %s on Python %d.%d.%d' % "
                "((ipykernel.__version__,) + tuple(sys.version_info[:3])))")  # fmt: skip
        argv = [str(env_dir / "bin" / "python"), "-c", code]
        wrapped = self.sandbox.wrap(argv, network=False, cwd=env_dir,
                                    readable=[env_dir, *base_prefixes(env_dir)])  # fmt: skip
        env = self.sandbox.env(extra={"PYTHONDONTWRITEBYTECODE": "1"})
        if await ctx.run(wrapped, cwd=env_dir, env=env):
            packages = ", ".join(self.kernel_packages) or "none"
            raise JobFailed(
                "The environment cannot start a kernel: `import ipykernel` failed (see the log "
                f"above). Every environment gets {packages} (c.LocalBuilder.kernel_packages) "
                "besides requirements.txt; if requirements.txt pins a package ipykernel needs "
                "to a version it cannot use, change that pin."
            )

    def location(self, key: str) -> Path:
        return Path(self.environments_dir) / key

    def cache_dir(self, owner: str) -> Path:
        """uv's cache for one owner's builds: a build can write the cache it uses, so caches
        (and environments, see per_owner) are never shared across owners."""
        return Path(self.uv_cache_dir) / hashlib.sha256(owner.encode()).hexdigest()[:16]

    async def exists(self, location: str) -> bool:
        return (Path(location) / MARKER).is_file() and trusted_record(Path(location)) is not None

    async def remove(self, location: str) -> None:
        await asyncio.to_thread(_record_path(Path(location)).unlink, True)
        await asyncio.to_thread(shutil.rmtree, location, True)

    async def build(self, ctx: JobContext, runtime: RuntimeFiles, key: str) -> BuiltRuntime:
        from ..jobs import JobFailed

        recipe = await self.recipe(runtime)
        where = "binder/" if runtime.label == "binder" else ""
        found = await self._find_python(recipe["python"])
        if found is None and self.python_downloads == "automatic":
            await self._download_python(ctx, recipe["python"])
            found = await self._find_python(recipe["python"])
        if found is None:
            raise JobFailed(await self._not_found(recipe["python"], where))
        # what later stages may run and read is decided now, by the service, from the
        # interpreter it found; never from files the build could rewrite (pyvenv.cfg, bin/)
        interpreter = python = found.path
        ctx.say(f"Python {found.version} ({interpreter})")
        env_dir = self.location(key)
        if env_dir.exists() or _record_path(env_dir).exists():
            ctx.say(f"Removing an unfinished environment at {env_dir}")
            await self.remove(str(env_dir))
        cache = self.cache_dir(ctx.owner)
        work = Path(self.environments_dir) / ".requirements" / key
        await asyncio.to_thread(_prepare_dirs, self.sandbox, env_dir, cache)
        env = self.sandbox.env(
            extra={
                "UV_CACHE_DIR": str(cache),
                "UV_PYTHON_DOWNLOADS": "never",
                "UV_NO_PROGRESS": "1",
                # the repository's uv.toml / pyproject.toml must not choose indexes or sources
                "UV_NO_CONFIG": "1",
                # copies, not hard links: an environment must not share inodes with the
                # cache that later (untrusted) builds can write to
                "UV_LINK_MODE": "copy",
                # compile now, so a server's first start does not (it would write into a
                # runtime other environments share)
                "UV_COMPILE_BYTECODE": "1",
                "NO_COLOR": "1",
            }
        )
        # the sandbox's private /tmp would hide an installation under /tmp: keep the tools visible
        tools = {Path(sys.prefix), Path(sys.base_prefix), Path(self.uv).resolve().parent,
                 interpreter.parent.parent}  # fmt: skip
        readable = [runtime.directory, *sorted(t for t in tools if t != Path("/"))]
        sandbox_args = {"writable": [env_dir, cache], "readable": readable,
                        "cwd": runtime.directory}  # fmt: skip
        if self.sandbox.confined:
            who = (f"as the unprivileged user {self.sandbox.build_user}"
                   if self.sandbox.switches_user else "without capabilities")  # fmt: skip
            ctx.say(f"Build steps run confined (bubblewrap): {who}, with resource limits, "
                    "read-only system, writes only to the environment and the package cache.")  # fmt: skip
        else:
            ctx.say("!! Build steps run unconfined (sandbox = 'none').")

        try:
            await ctx.stage("creating environment")
            argv = [self.uv, "venv", "--no-project", "--no-config", "--python", str(interpreter),
                    str(env_dir)]  # fmt: skip
            wrapped = self.sandbox.wrap(argv, network=False, **sandbox_args)
            if await ctx.run(wrapped, cwd=runtime.directory, env=env):
                raise JobFailed(f"Creating the virtual environment with Python {python} failed.")

            await ctx.stage("installing packages")
            # the service's own copy of what requirements.txt asks, validated; never the file
            reqs = self._requirements(runtime)
            for note in reqs.notes:
                ctx.say(note)
            argv = [self.uv, "pip", "install", "--python", str(env_dir / "bin" / "python"),
                    *await asyncio.to_thread(_write_requirements, reqs, work),
                    *self._packages()]  # fmt: skip
            # the install needs only the service's copy, not the repository
            tools_only = [t for t in readable if t != runtime.directory]
            install_args = {**sandbox_args, "readable": [*tools_only, work], "cwd": work}
            if await ctx.run(self.sandbox.wrap(argv, **install_args), cwd=work, env=env):
                raise JobFailed(
                    "Installing packages failed: see the log above for the package that did not "
                    "install or resolve, and fix requirements.txt."
                )

            if "postBuild" in runtime.files:
                await self._post_build(ctx, runtime, env_dir, work, env, readable)
        finally:
            # from here on the environment is the service's: nothing confined can change it
            await asyncio.to_thread(self.sandbox.reclaim, env_dir)
            await asyncio.to_thread(shutil.rmtree, work, True)
        await asyncio.to_thread(seal_environment, env_dir, interpreter, key)
        await asyncio.to_thread(write_kernelspec, env_dir)
        await self._check_kernel(ctx, env_dir)
        size = await asyncio.to_thread(du, env_dir)
        ctx.say(f"Environment ready: {env_dir} ({size / 1e6:.0f} MB)")
        return BuiltRuntime(str(env_dir), recipe["python"], size)


def _post_build_copy(runtime: RuntimeFiles, work: Path) -> Path:
    """The service's copy of postBuild, executable: repo2docker runs `chmod +x` on it first,
    and the author's checkout (their working tree, for `neurolibre build`) stays untouched."""
    copy = work / "postBuild"
    copy.unlink(missing_ok=True)
    copy.write_bytes(runtime.files["postBuild"])
    copy.chmod(0o755)
    return copy


def _record_path(env_dir: Path) -> Path:
    return env_dir.with_name(env_dir.name + ".json")


def trusted_record(env_dir: Path) -> dict | None:
    """The service's own record of a local environment (written after its build, outside it):
    the interpreter it was made with and that interpreter's installation prefix."""
    try:
        data = json.loads(_record_path(Path(env_dir)).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "python" in data else None


def base_prefixes(env_dir: Path) -> list[Path]:
    """The Python installation a local environment runs on, from the service's record."""
    record = trusted_record(env_dir)
    if record is None:
        return []
    prefix = Path(record["base_prefix"])
    return [prefix] if prefix != Path("/") and prefix.is_dir() else []


def _write_requirements(reqs: Requirements, work: Path) -> list[str]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o755)
    return reqs.write(work)


def _prepare_dirs(sandbox: Sandbox, env_dir: Path, cache: Path) -> None:
    env_dir.mkdir(parents=True)
    sandbox.lend(env_dir)
    if not cache.is_dir():
        cache.mkdir(parents=True)
        sandbox.lend(cache)
    elif sandbox.switches_user and cache.stat().st_uid != sandbox.ids()[0]:
        sandbox.lend(cache)  # a cache made before builds ran unprivileged


def seal_environment(env_dir: Path, interpreter: Path, key: str) -> None:
    """Point the environment at the interpreter the service chose (a build may have relinked
    bin/python or rewritten pyvenv.cfg), then record it outside the environment."""
    bin_dir = env_dir / "bin"
    version = ".".join(interpreter.name.removeprefix("python").split(".")[:2])
    for name in ("python", "python3", f"python{version}" if version else "python3"):
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink()
        link.symlink_to(interpreter)
    cfg = env_dir / "pyvenv.cfg"
    lines = []
    if cfg.is_file() and not cfg.is_symlink():
        lines = [ln for ln in cfg.read_text("utf-8", "replace").splitlines()[:50]
                 if ln.partition("=")[0].strip() not in ("home", "executable", "command")]  # fmt: skip
    cfg.unlink(missing_ok=True)
    cfg.write_text("\n".join([f"home = {interpreter.parent}", *lines]) + "\n")
    base = interpreter.parent.parent
    (env_dir / MARKER).unlink(missing_ok=True)
    (env_dir / MARKER).write_text(key + "\n")
    record = {"python": str(interpreter), "base_prefix": str(base), "key": key}
    _record_path(env_dir).write_text(json.dumps(record) + "\n")


def _real_dir(path: Path) -> None:
    """path as a directory of its own: a symbolic link or a file a build left there is removed
    first, so nothing written below it lands elsewhere."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    path.mkdir(mode=0o755, exist_ok=True)


def kernelspec(env_dir: Path) -> dict:
    """The `python3` kernelspec of an environment: its own interpreter, and its bin first on
    the kernel's PATH (`!cmd`, subprocesses and `VIRTUAL_ENV` are the author's; the server's
    own PATH does not have it, see spawner.py)."""
    bin_dir = str(env_dir / "bin")
    return {
        "argv": [f"{bin_dir}/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
        # string.Template values: jupyter_client fills ${PATH} from the server's environment
        "env": {"PATH": bin_dir.replace("$", "$$") + os.pathsep + "${PATH}",
                "VIRTUAL_ENV": str(env_dir).replace("$", "$$")},
    }  # fmt: skip


def write_kernelspec(env_dir: Path) -> Path:
    """The environment's `python3` kernelspec, written by the service once the environment is
    its own. ipykernel ships one whose argv[0] is a bare "python", which jupyter_client
    replaces with the interpreter of the *server* (the service's server environment), so the
    kernel would run on the wrong Python; this one names the environment's own. The server
    finds it first (the spawner puts <env>/share/jupyter on JUPYTER_PATH)."""
    kernels = env_dir / "share" / "jupyter" / "kernels"
    for d in (env_dir / "share", env_dir / "share" / "jupyter", kernels):
        _real_dir(d)
    spec_dir = kernels / KERNEL_NAME
    logos: dict[str, bytes] = {}  # ipykernel's icons, when they are plain small files
    if spec_dir.is_dir() and not spec_dir.is_symlink():
        for name in KERNEL_LOGOS:
            try:
                st = (spec_dir / name).lstat()
                if stat.S_ISREG(st.st_mode) and st.st_size <= 1 << 20:
                    logos[name] = (spec_dir / name).read_bytes()
            except OSError:
                pass
        shutil.rmtree(spec_dir)
    elif spec_dir.is_symlink() or spec_dir.exists():
        spec_dir.unlink()
    spec_dir.mkdir(mode=0o755)
    (spec_dir / "kernel.json").write_text(json.dumps(kernelspec(env_dir), indent=1) + "\n")
    for name, data in logos.items():
        (spec_dir / name).write_bytes(data)
    return spec_dir / "kernel.json"


def ensure_kernelspec(env_dir: Path) -> None:
    """An environment built before the service wrote kernelspecs gets one (idempotent)."""
    spec = env_dir / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    try:
        current = None if spec.is_symlink() else json.loads(spec.read_text())
    except (OSError, ValueError):
        current = None
    if current != kernelspec(env_dir):
        write_kernelspec(env_dir)
