"""The local builder on real preprints' runtime files: any Python runtime.txt names (found where
the operator keeps Pythons), and binder/postBuild run as repo2docker runs it, confined.

Real parts: uv, bubblewrap as the unprivileged build user, pyenv's Pythons under /root (which
the build user cannot enter: the sandbox exposes the interpreter's prefix alone), the package
index on 127.0.0.1. The builder is driven directly, with a job context that keeps the log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupyterhub
import pytest

from neurolibre_service.environments.local import LocalBuilder, base_prefixes
from neurolibre_service.environments.runtime import RuntimeError_, find_runtime
from neurolibre_service.jobs import JobFailed
from neurolibre_service.processes import run_streaming
from neurolibre_service.sandbox import Sandbox

from .conftest import need
from .support.pkgindex import add_wheels, cache_dir
from .support.preprints import preprint
from .support.repos import make_repo

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]

PYENV = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def pyenv_python(xy: str) -> Path | None:
    found = sorted(PYENV.glob(f"versions/{xy}.*/bin/python{xy}"))
    return found[-1] if found else None


class Ctx:
    """What LocalBuilder.build uses of a job: its owner, its log, a way to run processes."""

    owner = "alice"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        self.lines += text.splitlines() or [""]

    async def stage(self, stage: str) -> None:
        self.say(f"==> {stage}")

    async def run(self, argv, *, cwd=None, env=None) -> int:
        return await run_streaming(argv, on_line=self.lines.append, cwd=cwd, env=env)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


def server_wheels_312(cache: Path) -> Path:
    """The server packages for Python 3.12 (the suite's wheels are the service's 3.11's)."""
    target = cache / f"wheels-python-3.12-server-{jupyterhub.__version__}"
    if not (target / ".complete").exists():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                        "--python-version", "3.12", "-d", str(target),
                        f"jupyterhub=={jupyterhub.__version__}", "ipykernel", "jupyterlab"],
                       check=True)  # fmt: skip
        (target / ".complete").write_text("ok\n")
    return target


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def builder(tmp_path, pkg_index, uv_cache):
    need("bubblewrap", bool(shutil.which("bwrap")))

    def make(**traits) -> LocalBuilder:
        sandbox = Sandbox("bwrap", extra_env={"UV_DEFAULT_INDEX": pkg_index.url})
        return LocalBuilder(environments_dir=str(tmp_path / "environments"),
                            uv_cache_dir=str(uv_cache), sandbox=sandbox,
                            hub_version=jupyterhub.__version__, **traits)  # fmt: skip

    return make


def runtime_of(tmp_path: Path, files: dict[str, str], name: str = "repo") -> tuple[Path, object]:
    repo = tmp_path / name
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    return repo, find_runtime(repo)


async def build(builder: LocalBuilder, runtime) -> tuple[Path, Ctx]:
    ctx = Ctx()
    key = runtime.digest(await builder.recipe(runtime))
    built = await builder.build(ctx, runtime, key)
    return Path(built.location), ctx


def confined_python(builder: LocalBuilder, env_dir: Path, code: str) -> str:
    """Run code in the environment as later stages do: the build user, the home hidden."""
    argv = builder.sandbox.wrap([str(env_dir / "bin/python"), "-c", code], network=False,
                                readable=[env_dir, *base_prefixes(env_dir)])  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, env=builder.sandbox.env())
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


# --- runtime.txt: any spelling repo2docker accepts, any Python the operator has ---------------


@pytest.mark.parametrize("text, xy", [
    ("Python-3.12\n", "3.12"),  # NeuroLibre's official template
    ("python-3.12", "3.12"),
    ("  python-3.10.12  # the patch is not held to\n", "3.10"),
    ("# pinned for the paper\n\npython-3.11\n", "3.11"),
])  # fmt: skip
async def test_runtime_txt_in_the_spellings_authors_use(builder, tmp_path, text, xy):
    if pyenv_python(xy) is None and xy != f"{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip(f"no Python {xy} here")
    _repo, runtime = runtime_of(tmp_path, {"binder/runtime.txt": text})
    assert (await builder().recipe(runtime))["python"] == xy


async def test_python_3_8_is_accepted_now_that_the_server_runs_apart(builder, tmp_path):
    # the hub's server stack (jupyterhub 6: Python >= 3.10) is no longer installed here
    need("pyenv's Python 3.8", pyenv_python("3.8") is not None)
    _repo, runtime = runtime_of(tmp_path, {"binder/runtime.txt": "Python-3.8\n"})
    recipe = await builder().recipe(runtime)
    assert recipe["python"] == "3.8" and recipe["kernel_packages"] == ["ipykernel", "nbformat"]
    assert "server_packages" not in recipe


async def test_a_python_nowhere_is_refused_with_the_places_searched_and_the_pythons_found(
    builder, tmp_path
):
    need("pyenv's Python 3.12", pyenv_python("3.12") is not None)
    lb = builder(python_search_paths=["PATH", f"{PYENV}/versions/*/bin", "uv-managed"])
    _repo, runtime = runtime_of(tmp_path, {"binder/runtime.txt": "python-3.5\n"})
    with pytest.raises(RuntimeError_) as e:
        await lb.recipe(runtime)
    msg = str(e.value)
    assert "binder/runtime.txt asks for Python 3.5, which this machine does not have" in msg
    assert f"PATH ({os.environ['PATH']})" in msg
    assert f"{PYENV}/versions/*/bin" in msg and "uv-managed Pythons (" in msg
    assert "c.LocalBuilder.python_downloads = 'never'" in msg
    found = msg.split("Pythons found there: ")[1].split(". To fix")[0].split(", ")
    assert pyenv_python("3.12").resolve().parent.parent.name in found  # e.g. 3.12.1
    assert "uv python install 3.5" in msg and "python_downloads = 'automatic'" in msg


async def test_the_operator_chooses_where_pythons_are_found(builder, tmp_path):
    need("pyenv's Python 3.12", pyenv_python("3.12") is not None)
    shelf = tmp_path / "pythons" / "bin"
    shelf.mkdir(parents=True)
    (shelf / "python3.12").symlink_to(pyenv_python("3.12"))
    lb = builder(python_search_paths=[str(tmp_path / "pythons" / "*")])
    _repo, runtime = runtime_of(tmp_path, {"binder/runtime.txt": "python-3.12\n"})
    assert (await lb.recipe(runtime))["python"] == "3.12"
    # the service's own Python is on PATH, which this operator did not list
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    _repo, runtime = runtime_of(tmp_path, {"binder/runtime.txt": f"python-{mine}\n"}, "other")
    with pytest.raises(RuntimeError_) as e:
        await lb.recipe(runtime)
    assert f"looks for Pythons: {tmp_path}/pythons/*." in str(e.value)
    found = str(e.value).split("Pythons found there: ")[1].split(". To fix")[0]
    assert found.startswith("3.12.")


async def test_python_3_12_from_pyenv_builds_and_its_kernel_runs_as_the_build_user(
    builder, tmp_path, pkg_index
):
    need("pyenv's Python 3.12", pyenv_python("3.12") is not None)
    add_wheels(pkg_index, server_wheels_312(cache_dir()))
    lb = builder()
    _repo, runtime = runtime_of(tmp_path, {"binder/runtime.txt": "Python-3.12\n",
                                           "binder/requirements.txt": ""})  # fmt: skip
    env_dir, ctx = await build(lb, runtime)
    assert "Python 3.12." in ctx.log and "Environment ready" in ctx.log
    # /root is hidden from builds: the interpreter's prefix alone is exposed to the kernel
    out = confined_python(lb, env_dir, "import ipykernel, os, sys; "
                          "print(os.getuid(), '%d.%d' % sys.version_info[:2])")  # fmt: skip
    uid, version = out.split()
    assert version == "3.12" and uid != "0"


# --- postBuild ---------------------------------------------------------------------------------


async def test_post_build_runs_in_the_repository_with_the_environment_active(builder, tmp_path):
    lb = builder()
    repo, runtime = runtime_of(tmp_path, {
        "binder/requirements.txt": "",
        # not executable, no #! line: repo2docker runs it anyway (chmod +x, then /bin/sh)
        "binder/postBuild": 'echo "postBuild in $(pwd) with $(command -v python)"\n'
                            'cat data/notes.txt\n'
                            'python -c "import sys, pathlib; '
                            "(pathlib.Path(sys.prefix) / 'share' / 'added.txt').write_text('ok')\"\n",
        "data/notes.txt": "repository file read\n",
    })  # fmt: skip
    env_dir, ctx = await build(lb, runtime)
    assert "==> running postBuild" in ctx.log
    assert f"postBuild in {repo} with {env_dir}/bin/python" in ctx.log
    assert "repository file read" in ctx.log
    assert (env_dir / "share" / "added.txt").read_text() == "ok"
    # sealed after postBuild, like everything else the build wrote
    assert (env_dir / "share" / "added.txt").stat().st_uid == os.geteuid()


async def test_a_failing_post_build_names_itself_and_its_status(builder, tmp_path):
    lb = builder(kernel_packages=["wheel"])  # not needed to fail: a quick install
    _repo, runtime = runtime_of(tmp_path, {
        "binder/requirements.txt": "",
        "binder/postBuild": "#!/bin/bash\necho 'about to fail'\nexit 3\n",
    })  # fmt: skip
    (runtime.directory / "postBuild").chmod(0o755)  # executable: run in place
    with pytest.raises(JobFailed) as e:
        await build(lb, runtime)
    assert "binder/postBuild failed with exit status 3" in str(e.value)


async def test_post_build_cannot_write_outside_the_environment_or_read_root_files(
    builder, tmp_path, uv_cache
):
    # the attack: a postBuild that reads the host's secrets and plants files where later
    # builds, other authors' environments or the service would pick them up
    lb = builder(kernel_packages=["wheel"])  # a quick install: the build stops at postBuild
    repo = tmp_path / "hostile"
    repo, runtime = runtime_of(tmp_path, {
        "binder/requirements.txt": "",
        "binder/postBuild": f"""#!/bin/sh
            head -c 20 /etc/shadow && echo ESCAPED-read-shadow
            touch {repo}/planted && echo ESCAPED-wrote-repository
            touch {uv_cache}/planted && echo ESCAPED-wrote-cache
            touch {tmp_path}/planted && echo ESCAPED-wrote-service-dir
            touch /var/tmp/planted-by-postbuild && echo ESCAPED-wrote-var-tmp
            echo attempts-done
            exit 3
        """,
    }, "hostile")  # fmt: skip
    ctx = Ctx()
    with pytest.raises(JobFailed) as e:
        await lb.build(ctx, runtime, runtime.digest(await lb.recipe(runtime)))
    assert "postBuild failed with exit status 3" in str(e.value)
    assert "attempts-done" in ctx.log
    assert "ESCAPED" not in ctx.log
    assert not (repo / "planted").exists() and not (uv_cache / "planted").exists()
    assert not Path("/var/tmp/planted-by-postbuild").exists()


# --- other runtimes: the local builder says which backend builds them ---------------------------


async def test_runtimes_a_venv_cannot_be_point_to_the_docker_builder(builder, tmp_path):
    _repo, runtime = runtime_of(tmp_path, {"binder/apt.txt": "libgl1\n"})
    with pytest.raises(RuntimeError_) as e:
        await builder().recipe(runtime)
    assert "binder/apt.txt asks for system packages" in str(e.value)
    assert "neurolibre build --builder docker" in str(e.value)
    assert "c.NeuroLibre.builder = 'docker'" in str(e.value)


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")  # the module's asyncio mark
def test_neurolibre_build_selects_the_docker_builder_for_what_a_venv_cannot_be(tmp_path):
    files = preprint()
    files["binder/apt.txt"] = "libgl1\n"
    make_repo(tmp_path / "repo", files)
    neurolibre = str(Path(sys.executable).parent / "neurolibre")

    def run(*args: str) -> subprocess.CompletedProcess:
        # no Docker engine: the docker builder is reached, and says the engine does not answer
        env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
        return subprocess.run([neurolibre, "build", str(tmp_path / "repo"), "--data-dir",
                               str(tmp_path / "data"), *args], capture_output=True, text=True,
                              env=env, timeout=120)  # fmt: skip

    local = run()
    assert local.returncode == 1
    assert "binder/apt.txt asks for system packages" in local.stderr
    assert "`neurolibre build --builder docker`" in local.stderr
    docker = run("--builder", "docker")
    assert docker.returncode == 1
    assert "(docker builder)" in docker.stdout
    assert "The Docker engine at unix://" in docker.stderr and "apt.txt asks" not in docker.stderr
    bad = run("--builder", "conda")
    assert bad.returncode == 2 and "invalid choice: 'conda'" in bad.stderr


async def test_post_build_is_part_of_the_runtime_key(builder, tmp_path):
    # a changed postBuild must not reuse an environment made by the old one
    lb = builder()
    keys = []
    for n, text in enumerate(["echo one\n", "echo two\n"]):
        _repo, runtime = runtime_of(tmp_path, {"binder/postBuild": text}, f"r{n}")
        keys.append(runtime.digest(await lb.recipe(runtime)))
    _repo, runtime = runtime_of(tmp_path, {}, "none")
    keys.append(runtime.digest(await lb.recipe(runtime)))
    assert len(set(keys)) == 3


# --- the kernel: the service writes its kernelspec --------------------------------------------


async def test_the_service_writes_the_kernelspec_and_a_build_cannot_redirect_it(builder, tmp_path):
    # the attack: postBuild replaces share/jupyter/kernels with a link to a directory of the
    # service's, so that the service, writing the kernelspec as root, writes there instead
    outside = tmp_path / "service-files"
    outside.mkdir()
    lb = builder()
    _repo, runtime = runtime_of(tmp_path, {
        "binder/requirements.txt": "",
        "binder/postBuild": f"""#!/bin/sh
            set -e
            rm -rf "$VIRTUAL_ENV/share/jupyter/kernels"
            ln -s {outside} "$VIRTUAL_ENV/share/jupyter/kernels"
            echo planted
        """,
    })  # fmt: skip
    env_dir, ctx = await build(lb, runtime)
    assert "planted" in ctx.log
    assert list(outside.iterdir()) == []
    kernels = env_dir / "share" / "jupyter" / "kernels"
    assert kernels.is_dir() and not kernels.is_symlink()
    spec = json.loads((kernels / "python3" / "kernel.json").read_text())
    # the environment's own python, by absolute path (a bare "python" would be the server's)
    assert spec["argv"][:3] == [f"{env_dir}/bin/python", "-m", "ipykernel_launcher"]
    assert spec["env"]["PATH"] == f"{env_dir}/bin:${{PATH}}"
    assert spec["env"]["VIRTUAL_ENV"] == str(env_dir)
    assert (kernels / "python3" / "kernel.json").stat().st_uid == os.geteuid()
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert re.search(rf"^Kernel: ipykernel [\d.]+ on Python {version}\.\d+$", ctx.log, re.M)
    assert not (env_dir / "bin" / "jupyterhub-singleuser").exists()  # the server is elsewhere


async def test_an_environment_without_a_kernel_is_refused_with_the_reason(builder, tmp_path):
    lb = builder(kernel_packages=[])  # the operator took ipykernel out; the author has none
    _repo, runtime = runtime_of(tmp_path, {"binder/requirements.txt": "wheel\n"})
    with pytest.raises(JobFailed) as e:
        await build(lb, runtime)
    assert "The environment cannot start a kernel: `import ipykernel` failed" in str(e.value)
    assert "c.LocalBuilder.kernel_packages" in str(e.value)
