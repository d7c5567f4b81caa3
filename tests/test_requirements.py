"""binder/requirements.txt is parsed, and everything but packages from the operator's indexes or
https URLs is refused with the file, the line and a fix (issue 11, item 9).

Each refused line is an attack: the local builder once ran `localpkg @ pkgdir`'s setup.py, and
took `pkgdir/`, `--find-links /abs/host/path` and `--index-url http://...`. Fast: no network but
one package index and uv on 127.0.0.1 for the last tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from uv import find_uv_bin

from neurolibre_service.environments.requirements import (
    MAX_DEPTH,
    Requirements,
    parse_requirements,
)

from .support.pkgindex import PackageIndex

FIX = "list the package by name from PyPI, e.g. `numpy==1.26.4`"


def check(text: str, others: dict[str, str] | None = None, **kwargs) -> Requirements:
    files = {"requirements.txt": text, **(others or {})}
    return parse_requirements({k: v.encode() for k, v in files.items()}, **kwargs)


def only_error(result: Requirements):
    assert len(result.errors) == 1, result.message()
    return result.errors[0]


# -- what authors write is accepted, as uv will read it -------------------------------------


SCIENTIFIC = """\
# analysis stack
numpy==1.21.6
jupyter-book==0.13.*   # the book engine
nilearn>=0.9

nilearn[plotting]>=0.9 ; python_version >= "3.8"
scipy==1.10.1; sys_platform == "linux"
git+https://github.com/org/repo@v1#egg=x
sub @ git+https://github.com/org/mono@v2#subdirectory=python/sub
mylib @ git+https://github.com/org/mylib@0123abc
tool @ https://files.example.org/tool-1.0-py3-none-any.whl
pandas==2.0.3 \\
    --hash=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \\
    --hash sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210
"""


def test_a_scientific_requirements_file_validates_and_is_passed_on_as_written():
    result = check(SCIENTIFIC)

    assert result.ok, result.message()
    assert result.requirements == [
        "numpy==1.21.6",
        "jupyter-book==0.13.*",
        "nilearn>=0.9",
        'nilearn[plotting]>=0.9; python_version >= "3.8"',
        'scipy==1.10.1; sys_platform == "linux"',
        "git+https://github.com/org/repo@v1#egg=x",
        "sub @ git+https://github.com/org/mono@v2#subdirectory=python/sub",
        "mylib @ git+https://github.com/org/mylib@0123abc",
        "tool @ https://files.example.org/tool-1.0-py3-none-any.whl",
        "pandas==2.0.3 --hash=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        " --hash=sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
    ]
    assert result.index_url is None and result.extra_index_urls == []
    assert result.uv_options == [] and result.notes == []


# binder/requirements.txt of NeuroLibre's two official templates (as in the repositories: no
# final newline), which must keep building
TEMPLATES = {
    "neurolibre/mystical-article": "plotly\nnetworkx\npandas",
    "neurolibre/template": (
        "plotly==5.14.1\nplotly-express==0.4.1\nrepo2data>=2.6.0\njupyter-book==0.14.0"
    ),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_the_official_templates_validate_clean(name):
    result = check(TEMPLATES[name])

    assert result.ok, result.message()
    assert result.requirements == TEMPLATES[name].splitlines()


def test_harmless_options_become_uv_flags_or_a_note_in_the_log():
    result = check("--pre\n--only-binary :all:\n--no-binary=nl-x,nl-y\n--prefer-binary\n"
                   "--require-hashes\nnumpy\n")  # fmt: skip

    assert result.ok, result.message()
    assert result.requirements == ["numpy"]
    assert result.uv_options == ["--prerelease=allow", "--only-binary", ":all:",
                                 "--no-binary", "nl-x", "--no-binary", "nl-y"]  # fmt: skip
    assert result.notes == [
        "binder/requirements.txt line 4: --prefer-binary is accepted but has no effect here",
        "binder/requirements.txt line 5: --require-hashes is accepted but has no effect here "
        "(hashes given are still checked; the server packages the service adds have none)",
    ]


# -- local paths, in every form pip or uv would take one --------------------------------------

LOCAL = [
    "localpkg @ pkgdir",  # issue 11: ran pkgdir/setup.py
    "pkgdir/",  # issue 11
    "./pkgdir",
    ".",
    "..",
    "../other-checkout",
    "/abs/host/path",
    "~/pkg",
    "C:\\pkg",
    "localpkg @ ./pkgdir",
    "localpkg @ /abs/host/path",
    "pkg @ file:///etc",
    "pkg@file:///etc",
    "pkg @ file://localhost/etc/passwd",
    "FILE://localhost/srv/x-1.0.tar.gz",
    "pkg @ file:pkgdir",
    "file:///etc/x-1.0-py3-none-any.whl",
    "git+file:///x",
    "pkg @ git+file:///srv/git/x",
    "pkg @ https:///etc/passwd",  # no host: a path in disguise
    "dist/x-1.0-py3-none-any.whl",
    "x-1.0-py3-none-any.whl",
    "x-1.0.tar.gz",
    "x.zip",
    "-e .",
    "-e pkgdir",
    "-e.",
    "--editable=.",
    "--editable /abs/host/path",
]


@pytest.mark.parametrize("line", LOCAL)
def test_a_local_path_in_any_form_is_refused_with_the_line_and_a_fix(line):
    result = check(f"numpy==1.26.4\n{line}\n")

    error = only_error(result)
    assert (error.file, error.line, error.text) == ("binder/requirements.txt", 2, line)
    assert "local path" in error.reason
    assert FIX in error.fix and "https Git URL" in error.fix
    assert result.requirements == ["numpy==1.26.4"]
    assert str(error).startswith(f"binder/requirements.txt line 2 ({line!r}): ")


def test_a_bare_name_that_is_a_folder_of_binder_is_refused():
    """pip takes `mypkg` for ./mypkg when that folder exists (uv today does not: not relied on)."""
    result = check("mypkg\n", {"mypkg/setup.py": "import os\n"})

    error = only_error(result)
    assert "'mypkg', which is a file or folder here" in error.reason
    assert check("mypkg==1.0\n", {"mypkg/setup.py": ""}).ok  # a version: a name on an index


# -- URLs: https only ---------------------------------------------------------------------------

URLS = [
    ("pkg @ http://example.org/pkg-1.0.tar.gz", "unencrypted http://"),
    ("http://example.org/pkg-1.0.tar.gz", "unencrypted http://"),
    ("git+http://example.org/org/repo#egg=x", "unencrypted git+http://"),
    ("pkg @ git+ssh://git@localhost/srv/repo", "only https:// and git+https://"),
    ("git+ssh://git@github.com/org/repo#egg=x", "only https:// and git+https://"),
    ("git+git://example.org/repo#egg=x", "only https:// and git+https://"),
    ("pkg @ ftp://example.org/x.tar.gz", "only https:// and git+https://"),
    ("hg+https://example.org/repo#egg=x", "only https:// and git+https://"),
    ("git+https://github.com/org/repo#egg=x&subdirectory=../..", "leaves the fetched tree"),
    ("pkg @ https://example.org/x.zip#subdirectory=/etc", "leaves the fetched tree"),
]


@pytest.mark.parametrize(("line", "reason"), URLS)
def test_urls_other_than_https_are_refused(line, reason):
    error = only_error(check(f"{line}\n"))

    assert reason in error.reason and error.line == 1


# -- options ----------------------------------------------------------------------------------

OPTIONS = [
    ("--find-links /abs/host/path", "--find-links"),  # issue 11
    ("--find-links=/x", "--find-links"),
    ("-f /x", "--find-links"),
    ("-f/x", "--find-links"),
    ("-f https://example.org/wheels/", "--find-links"),
    ("--no-index", "--no-index"),
    ("--trusted-host example.org", "--trusted-host"),
    ("--index-url http://evil.example/simple", "not https"),  # issue 11
    ("-i http://evil", "not https"),
    ("-ihttp://evil", "not https"),
    ("--index-url=https://evil.example/simple", "not allowed"),
    ("--extra-index-url https://evil.example/simple", "not allowed"),
    ("--extra-index-url http://evil.example/simple", "not https"),
    ("--extra-index=https://evil.example/simple", "does not accept"),  # pip's abbreviation
    ("--use-feature=truststore", "does not accept"),
    ("--src /tmp/x", "does not accept"),
    ("--prefix=/usr", "does not accept"),
    ("-Z", "does not accept"),
    ("--pre=1", "takes no value"),
    ("--index-url", "needs a value"),
    ("--hash=sha256:00", "without a requirement"),
    ("--only-binary ../x", "not :all:, :none: or a package name"),
    ("-e git+https://github.com/org/repo#egg=x", "editable (-e) install"),
    ("numpy --global-option=--build-option", "--global-option"),
    ("numpy --install-option=--prefix=/usr", "--install-option"),
    ("numpy --config-settings editable_mode=compat", "--config-settings"),
    ("numpy --hash=md4:00", "malformed hash"),
    ("numpy @ https://example.org/${TOKEN}/numpy.whl", "environment variable"),
    ("${HOME}/pkg", "environment variable"),
    ('--index-url "https://x', "cannot be read"),
]


@pytest.mark.parametrize(("line", "reason"), OPTIONS)
def test_options_that_change_where_packages_come_from_are_refused(line, reason):
    result = check(f"numpy==1.26.4\n{line}\n")

    error = only_error(result)
    assert reason in error.reason and (error.line, error.text) == (2, line)
    assert error.fix
    assert result.index_url is None and result.extra_index_urls == []
    assert result.uv_options == [] and result.requirements == ["numpy==1.26.4"]


def test_an_https_index_is_used_only_when_the_operator_allows_it():
    text = ("--extra-index-url https://Allowed.example/simple/\n"
            "--index-url https://mirror.example/pypi/simple\nnumpy\n")  # fmt: skip

    refused = check(text)
    allowed = check(text, allowed_indexes=["https://allowed.example/simple",
                                           "https://mirror.example/pypi/simple/"])  # fmt: skip

    assert [e.line for e in refused.errors] == [1, 2]
    assert (
        "the operator has not allowed (https://Allowed.example/simple/)" in refused.errors[0].reason
    )
    assert allowed.ok, allowed.message()
    assert allowed.extra_index_urls == ["https://allowed.example/simple"]
    assert allowed.index_url == "https://mirror.example/pypi/simple"


def test_the_allow_list_takes_only_https_indexes():
    with pytest.raises(ValueError, match="is not an https URL"):
        check("numpy\n", allowed_indexes=["http://mirror.example/simple"])


# -- logical lines: comments, continuations, markers, parse errors -------------------------------


def test_a_comment_ending_in_a_backslash_does_not_hide_the_next_line():
    result = check("numpy  # pinned later \\\n-e .\n")

    assert only_error(result).line == 2 and result.requirements == ["numpy"]


def test_a_continued_line_is_checked_whole_and_reported_at_its_first_line():
    result = check("# header\n\nnumpy==1.26.4 \\\n  --find-links=/x\n")

    error = only_error(result)
    assert error.line == 3 and "--find-links" in error.reason


def test_a_line_that_does_not_parse_says_where_and_how_to_write_it():
    result = check("numpy==1.26.4\n\nscipy===\nnot a requirement\npandas ; python_version <\n")

    assert [e.line for e in result.errors] == [3, 4, 5]
    assert all("is not a valid requirement" in e.reason for e in result.errors)
    assert "write `name`, `name==version` or `name @ https-URL`" in result.errors[0].fix
    assert result.requirements == ["numpy==1.26.4"]


def test_an_unnamed_url_takes_only_a_marker_after_it():
    assert check('git+https://github.com/o/r#egg=x ; python_version < "3.12"\n').requirements == [
        'git+https://github.com/o/r#egg=x ; python_version < "3.12"'
    ]
    assert "more than a URL" in only_error(check("https://h/x.whl ./pkgdir\n")).reason
    assert "marker that does not parse" in only_error(check("https://h/x.whl ; nope\n")).reason


# -- -r and -c: files of binder/ only, by the same rules ------------------------------------------

INCLUDES = [
    ("-r ../../etc/passwd", "through '..'"),
    ("--requirement=../requirements.txt", "through '..'"),
    ("-r sub/../../x.txt", "through '..'"),
    ("-r /etc/passwd", "absolute path"),
    ("-r/etc/passwd", "absolute path"),
    ("-c /etc/passwd", "absolute path"),
    ("-r ~/.pip/requirements.txt", "absolute path"),
    ("-r https://example.org/requirements.txt", "from a URL"),
    ("-r file:///etc/passwd", "from a URL"),
    ("-r missing.txt", "not a file in binder/"),
]


@pytest.mark.parametrize(("line", "reason"), INCLUDES)
def test_included_files_must_be_files_of_binder(line, reason):
    error = only_error(check(f"{line}\n"))

    assert reason in error.reason and error.line == 1
    assert "put the file in binder/" in error.fix or "copy that file into binder/" in error.fix


def test_included_files_are_read_relative_to_the_including_file_by_the_same_rules():
    result = check(
        "numpy\n-r reqs/base.txt\n-c reqs/pins.txt\n",
        {"reqs/base.txt": "scipy\n-r ./more.txt\n", "reqs/more.txt": "pkgdir/\npandas\n",
         "reqs/pins.txt": "numpy<2\n-r base.txt\n"},
    )  # fmt: skip

    error = only_error(result)
    assert (error.file, error.line, error.text) == ("binder/reqs/more.txt", 1, "pkgdir/")
    assert result.requirements == ["numpy", "scipy", "pandas"]
    # inside a constraints file, -r lines are constraints too
    assert result.constraints == ["numpy<2", "scipy", "pandas"]


def test_a_file_read_twice_is_read_once_and_a_cycle_is_an_error():
    diamond = check("-r a.txt\n-r b.txt\n", {"a.txt": "-r c.txt\n", "b.txt": "-r c.txt\n",
                                              "c.txt": "numpy\n"})  # fmt: skip
    cycle = check("-r a.txt\n", {"a.txt": "numpy\n-r b.txt\n", "b.txt": "-r a.txt\n"})

    assert diamond.ok and diamond.requirements == ["numpy"]
    error = only_error(cycle)
    assert (error.file, error.line) == ("binder/b.txt", 1)
    assert (
        "(binder/requirements.txt -> binder/a.txt -> binder/b.txt -> binder/a.txt)" in error.reason
    )
    assert only_error(check("-r requirements.txt\n")).reason.startswith("includes a file that")


def test_includes_nest_only_so_deep():
    def chain(n: int) -> dict[str, str]:
        return {f"r{i}.txt": f"-r r{i + 1}.txt\n" for i in range(1, n)} | {f"r{n}.txt": "numpy\n"}

    assert check("-r r1.txt\n", chain(MAX_DEPTH)).requirements == ["numpy"]
    error = only_error(check("-r r1.txt\n", chain(MAX_DEPTH + 1)))
    assert f"more than {MAX_DEPTH} deep" in error.reason


def test_an_included_symlink_is_refused(tmp_path):
    """A link inside binder/ to another file of the repository: only plain files are read."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "extra.txt").write_text("numpy\n")
    (tmp_path / "extra.txt").symlink_to("real/extra.txt")
    (tmp_path / "linked").symlink_to("real")
    files = {"requirements.txt": b"-r extra.txt\n-r linked/extra.txt\n-r real/extra.txt\n",
             "extra.txt": b"numpy\n", "linked/extra.txt": b"numpy\n",
             "real/extra.txt": b"numpy\n"}  # fmt: skip

    result = parse_requirements(files, tmp_path)

    assert [(e.line, e.reason) for e in result.errors] == [
        (1, "reads 'extra.txt', which is a symbolic link"),
        (2, "reads 'linked/extra.txt', which is a symbolic link"),
    ]
    assert result.requirements == ["numpy"]


def test_messages_name_the_runtime_directory_as_the_author_knows_it():
    result = check("-e .\n", prefix="")

    assert str(only_error(result)).startswith("requirements.txt line 1 ('-e .'): ")
    assert "local path" in result.message()


# -- what the builder runs: the sanitized file, through real uv -----------------------------------


def _wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel (no network, nothing to build)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode()},{len(v)}"
              for k, v in files.items()]  # fmt: skip
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return path


def test_uv_installs_the_sanitized_file_and_ignores_the_repositorys_uv_config(tmp_path):
    """A repository's binder/uv.toml points uv at a folder of the host with a higher version of
    the package; the builder's arguments (--no-config) keep uv on the operator's index."""
    good = _wheel(tmp_path / "index", "nl_tiny", "1.0")
    _wheel(tmp_path / "index", "nl_pinned", "1.0")
    _wheel(tmp_path / "host", "nl_tiny", "9.9")
    binder = tmp_path / "repo" / "binder"
    binder.mkdir(parents=True)
    (binder / "uv.toml").write_text(f'find-links = ["{tmp_path / "host"}"]\n')
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    text = f"nl-tiny --hash=sha256:{digest}\n-c pins.txt\n--pre\n"
    result = parse_requirements({"requirements.txt": text.encode(), "pins.txt": b"nl-pinned<2\n"},
                                binder)  # fmt: skip
    assert result.ok, result.message()
    work = tmp_path / "service"
    work.mkdir()
    index = PackageIndex([tmp_path / "index"])
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "UV_CACHE_DIR": str(tmp_path / "c"),
           "UV_DEFAULT_INDEX": index.url, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}  # fmt: skip
    try:
        uv = find_uv_bin()
        venv = tmp_path / "env"
        subprocess.run([uv, "venv", "--no-config", "-q", str(venv)], cwd=binder, env=env,
                       check=True)  # fmt: skip
        argv = [uv, "pip", "install", "--python", str(venv / "bin" / "python"),
                *result.write(work), "nl-pinned"]  # fmt: skip
        proc = subprocess.run(argv, cwd=binder, env=env, capture_output=True, text=True)
    finally:
        index.close()

    assert result.write(work)[:5] == ["--no-config", "-r", str(work / "requirements.txt"),
                                      "-c", str(work / "constraints.txt")]  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "+ nl-tiny==1.0" in proc.stderr and "9.9" not in proc.stderr
    assert (work / "requirements.txt").read_text() == f"nl-tiny --hash=sha256:{digest}\n"


def test_nothing_is_written_for_requirements_that_did_not_validate(tmp_path):
    with pytest.raises(ValueError):
        check("-e .\n").write(tmp_path)
    assert list(tmp_path.iterdir()) == []
