"""The package as it is published: `python -m build` (the sdist, then the wheel built from that
sdist), `twine check`, and the wheel installed into a fresh venv running its commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

from npv_guard import __version__

pytestmark = pytest.mark.packaging  # deselect with -m "not packaging"

ROOT = Path(__file__).resolve().parents[2]
# What a checkout holds that is no part of the source: never copied into the build tree.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", ".*_cache", ".hypothesis", "build", "dist", "*.egg-info", "results"
)
BUILD_TIMEOUT = 600


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NPV_GUARD_", "PYTHON", "VIRTUAL_ENV"))}


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=_env(), cwd=cwd, timeout=timeout, check=False
    )


def _build(tmp: Path) -> Path:
    """Build from a copy of the tree (a build writes egg-info and build/ beside the sources)."""
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp / "dist"
    result = _run(sys.executable, "-m", "build", "--outdir", out, source, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("build"))


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("*.whl")
    return wheel


def _sdist(dist: Path) -> Path:
    (sdist,) = dist.glob("*.tar.gz")
    return sdist


def test_build_makes_one_sdist_and_one_wheel_named_by_the_version(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"npv_guard-{__version__}-py3-none-any.whl",
        f"npv_guard-{__version__}.tar.gz",
    ]


def test_twine_check_passes(dist: Path) -> None:
    result = _run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def _tree_files() -> set[str]:
    """What the wheel must carry, read from the tree itself."""
    package = {str(p.relative_to(ROOT)) for p in (ROOT / "npv_guard").rglob("*") if p.suffix in {".py", ".typed"}}
    # Every include of dialplan/ (not a note beside them); everything in systemd/, so that a new
    # kind of file there fails here until pyproject's package-data ships it.
    dialplan = {p for p in (ROOT / "dialplan").rglob("*") if p.suffix == ".conf" or p.name == "__init__.py"}
    systemd = {p for p in (ROOT / "systemd").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return package | {f"npv_guard/{p.relative_to(ROOT)}" for p in dialplan | systemd}


def test_wheel_carries_the_code_the_dialplan_and_the_systemd_files(dist: Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = wheel.namelist()
        shipped_ari = wheel.read("npv_guard/dialplan/npv-guard-ari.conf").decode()
    payload = {n for n in names if not n.startswith(f"npv_guard-{__version__}.dist-info/")}
    assert payload == _tree_files()
    assert f"npv_guard-{__version__}.dist-info/licenses/LICENSE" in names
    assert shipped_ari == (ROOT / "dialplan" / "npv-guard-ari.conf").read_text(encoding="utf-8")


def test_wheel_metadata(dist: Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        metadata = HeaderParser().parsestr(wheel.read(f"npv_guard-{__version__}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"npv_guard-{__version__}.dist-info/entry_points.txt").decode()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Topic :: Communications :: Telephony" in metadata.get_all("Classifier")
    requires = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert len(requires) == len(project["dependencies"])
    assert "npv-guard = npv_guard.cli:main" in entry_points


def test_sdist_holds_what_a_build_needs(dist: Path) -> None:
    """The wheel above was built from this sdist (`python -m build` does so); here: what it holds."""
    with tarfile.open(_sdist(dist)) as sdist:
        names = {n.partition("/")[2] for n in sdist.getnames()}
    for needed in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "npv_guard/__init__.py",
                   "npv_guard/__main__.py", "dialplan/__init__.py", "systemd/__init__.py"):  # fmt: skip
        assert needed in names, needed
    assert {f"dialplan/{p.relative_to(ROOT / 'dialplan')}" for p in (ROOT / "dialplan").rglob("*.conf")} <= names
    assert {f"systemd/{p.name}" for p in (ROOT / "systemd").iterdir() if p.is_file()} <= names


# --- the wheel in a fresh venv -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    created = _run(sys.executable, "-m", "venv", venv)
    assert created.returncode == 0, created.stderr
    # Dependencies come from pip's cache and the configured indexes, as for any user; no
    # byte-compiling of their thousands of modules, which is most of the time and tests nothing.
    installed = _run(
        venv / "bin/python", "-m", "pip", "install", "-q", "--no-compile", _wheel(dist), timeout=BUILD_TIMEOUT
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return venv


def test_fresh_venv_imports_the_wheel_not_the_tree(fresh_venv: Path, tmp_path: Path) -> None:
    code = (
        "import json, npv_guard, importlib.resources as r; "
        "print(json.dumps([npv_guard.__file__, str(r.files('npv_guard.dialplan')), str(r.files('npv_guard.systemd'))]))"
    )
    result = _run(fresh_venv / "bin/python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for path in json.loads(result.stdout):
        assert Path(path).is_relative_to(fresh_venv), path


def test_fresh_venv_version(fresh_venv: Path, tmp_path: Path) -> None:
    for command in ([fresh_venv / "bin/npv-guard"], [fresh_venv / "bin/python", "-m", "npv_guard"]):
        result = _run(*command, "--version", cwd=tmp_path)
        assert (result.returncode, result.stdout) == (0, f"npv-guard {__version__}\n"), result.stderr


def test_fresh_venv_check_with_the_shipped_sample_config(fresh_venv: Path, tmp_path: Path) -> None:
    exe = fresh_venv / "bin/npv-guard"
    sample = _run(exe, "systemd", "show", "config", cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    config = tmp_path / "acme.toml"
    config.write_text(sample.stdout, encoding="utf-8")
    result = _run(exe, "check", "--offline", "--json", "--config", config, "--caller", "0162000001",
                  "--callee", "0596123456", "--at", "2026-12-01T10:30", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr  # 10:30 in Paris is 05:30 in Martinique
    verdict = json.loads(result.stdout)
    assert verdict["professional"] == "acme"  # the sample's NPV owner
    assert [r["code"] for r in verdict["reasons"]] == ["OUTSIDE_HOURS"]
    allowed = _run(exe, "check", "--offline", "--config", config, "--caller", "0162000001",
                   "--callee", "0612345678", "--at", "2026-12-01T10:30", cwd=tmp_path)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("ALLOW  +33162000001 -> +33612345678\n")


def test_fresh_venv_dialplan_show_and_install(fresh_venv: Path, tmp_path: Path) -> None:
    exe = fresh_venv / "bin/npv-guard"
    listing = _run(exe, "dialplan", "show", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert {line.split()[0] for line in listing.stdout.splitlines()} >= {"ari", "agi", "sms"}
    shown = _run(exe, "dialplan", "show", "--mode", "agi", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (ROOT / "dialplan" / "npv-guard-agi.conf").read_text(encoding="utf-8")
    dest = tmp_path / "asterisk"
    dest.mkdir()
    put = _run(exe, "dialplan", "install", "--dest", dest, cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    assert {p.name for p in dest.rglob("*.conf")} == {p.name for p in (ROOT / "dialplan").rglob("*.conf")}


def test_fresh_venv_systemd_units_run_its_own_npv_guard(fresh_venv: Path, tmp_path: Path) -> None:
    result = _run(fresh_venv / "bin/npv-guard", "systemd", "show", "serve", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"\nExecStart={fresh_venv}/bin/npv-guard serve --config /etc/npv-guard/%i.toml" in result.stdout


# --- the declared setuptools floor ---------------------------------------------------------------

PROBE = "dialplan/probe-pbx/npv-guard-probe.conf"  # an include in a subdirectory, as a FreePBX one may be


@pytest.fixture(scope="module")
def floor_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Wheels built without isolation by the lowest setuptools series build-system.requires
    allows and by the release below it, from a copy of the tree with PROBE added."""
    tmp = tmp_path_factory.mktemp("floor")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    floor = next(int(r.removeprefix("setuptools>=")) for r in requires if r.startswith("setuptools>="))
    venv = tmp / "v"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    (source / PROBE).parent.mkdir()
    (source / PROBE).write_text("; probe\n", encoding="utf-8")
    builds = {}
    for label, series in (("floor", f"setuptools>={floor},<{floor + 1}"), ("below", f"setuptools<{floor}")):
        pinned = _run(venv / "bin/python", "-m", "pip", "install", "-q", series, timeout=BUILD_TIMEOUT)
        assert pinned.returncode == 0, pinned.stderr[-2000:]
        shutil.rmtree(source / "build", ignore_errors=True)
        out = tmp / label
        built = _run(venv / "bin/python", "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                     "-w", out, f"{source}/", timeout=BUILD_TIMEOUT)  # fmt: skip
        builds[label] = (built, out)
    return builds


def test_the_declared_setuptools_floor_builds_and_the_release_below_it_does_not(
    floor_builds: dict[str, tuple[subprocess.CompletedProcess[str], Path]],
) -> None:
    """The issue: a declared floor of 68 promised a build that failed below 77 (PEP 639)."""
    floor, _ = floor_builds["floor"]
    assert floor.returncode == 0, floor.stdout[-2000:] + floor.stderr[-2000:]
    below, _ = floor_builds["below"]
    assert below.returncode != 0
    assert "project.license" in below.stdout + below.stderr


def test_a_conf_in_a_dialplan_subdirectory_is_shipped(
    floor_builds: dict[str, tuple[subprocess.CompletedProcess[str], Path]],
) -> None:
    _, out = floor_builds["floor"]
    with zipfile.ZipFile(_wheel(out)) as wheel:
        assert wheel.read(f"npv_guard/{PROBE}") == b"; probe\n"
