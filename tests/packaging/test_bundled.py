"""`npv-guard dialplan|systemd show|install` as a subprocess, and the shipped systemd units checked
by systemd's own tools (systemd-analyze verify, systemd-sysusers)."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from npv_guard.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXE = shutil.which("npv-guard", path=str(Path(sys.executable).parent)) or "npv-guard"
UNITS = ("npv-guard-run@.service", "npv-guard-agi@.service", "npv-guard-serve@.service")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False)


def dialplan_sources() -> dict[str, str]:
    return {
        str(path.relative_to(ROOT / "dialplan")): path.read_text(encoding="utf-8")
        for path in sorted((ROOT / "dialplan").rglob("*.conf"))
    }


# --- dialplan ------------------------------------------------------------------------------------


def test_dialplan_show_lists_every_include_of_the_tree() -> None:
    result = run("dialplan", "show")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[1] for line in result.stdout.splitlines()}
    assert listed == set(dialplan_sources())
    assert {"ari", "agi", "sms"} <= {line.split()[0] for line in result.stdout.splitlines()}


@pytest.mark.parametrize("mode", ["ari", "agi", "sms"])
def test_dialplan_show_mode_prints_the_file_verbatim(mode: str) -> None:
    result = run("dialplan", "show", "--mode", mode)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "dialplan" / f"npv-guard-{mode}.conf").read_text(encoding="utf-8")


def test_dialplan_show_unknown_mode_exit_2_names_the_known_ones() -> None:
    result = run("dialplan", "show", "--mode", "ari", "--mode", "pots")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "'pots'" in result.stderr and "ari" in result.stderr and "agi" in result.stderr


def test_dialplan_install_writes_every_include_then_identical_is_fine(tmp_path: Path) -> None:
    first = run("dialplan", "install", "--dest", str(tmp_path))
    assert first.returncode == 0, first.stderr
    written = {str(p.relative_to(tmp_path)): p.read_text(encoding="utf-8") for p in tmp_path.rglob("*.conf")}
    assert written == dialplan_sources()
    assert all(line.startswith("written ") for line in first.stdout.splitlines())
    assert not list(tmp_path.rglob(".*tmp")), "no partial file left"

    again = run("dialplan", "install", "--dest", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert all(line.startswith("unchanged ") for line in again.stdout.splitlines())


def test_dialplan_install_mode_writes_only_that_include(tmp_path: Path) -> None:
    result = run("dialplan", "install", "--dest", str(tmp_path), "--mode", "agi")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["npv-guard-agi.conf"]


def test_dialplan_install_refuses_a_changed_file_and_writes_nothing(tmp_path: Path) -> None:
    changed = tmp_path / "npv-guard-ari.conf"
    changed.write_text("; the admin's own edit\n", encoding="utf-8")
    result = run("dialplan", "install", "--dest", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert str(changed) in result.stderr and "--force" in result.stderr
    assert changed.read_text(encoding="utf-8") == "; the admin's own edit\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["npv-guard-ari.conf"], "nothing else written"


def test_dialplan_install_force_replaces_the_changed_file(tmp_path: Path) -> None:
    changed = tmp_path / "npv-guard-ari.conf"
    changed.write_text("; the admin's own edit\n", encoding="utf-8")
    result = run("dialplan", "install", "--dest", str(tmp_path), "--force")
    assert result.returncode == 0, result.stderr
    assert f"replaced  {changed}" in result.stdout
    assert changed.read_text(encoding="utf-8") == (ROOT / "dialplan" / "npv-guard-ari.conf").read_text()


def test_dialplan_install_missing_dest_exit_2(tmp_path: Path) -> None:
    result = run("dialplan", "install", "--dest", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "no such directory" in result.stderr
    assert not (tmp_path / "nope").exists()


def test_dialplan_install_directory_in_the_way_exit_2_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "npv-guard-agi.conf"
    blocker.mkdir()  # a directory where the file should go: fails even as root
    result = run("dialplan", "install", "--dest", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is a directory" in result.stderr


# --- systemd -------------------------------------------------------------------------------------


def test_systemd_show_lists_the_units_user_and_sample() -> None:
    result = run("systemd", "show")
    assert result.returncode == 0, result.stderr
    targets = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert targets == {
        "run": "etc/systemd/system/npv-guard-run@.service",
        "agi": "etc/systemd/system/npv-guard-agi@.service",
        "serve": "etc/systemd/system/npv-guard-serve@.service",
        "sysusers": "etc/sysusers.d/npv-guard.conf",
        "config": "etc/npv-guard/example.toml",
    }


def test_systemd_show_points_execstart_at_this_npv_guard() -> None:
    result = run("systemd", "show", "agi")
    assert result.returncode == 0, result.stderr
    exec_start = [line for line in result.stdout.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == [f"ExecStart={Path(sys.executable).parent / 'npv-guard'} agi "
                          "--config /etc/npv-guard/%i.toml --drain-seconds 10"]  # fmt: skip
    shipped = (ROOT / "systemd" / "npv-guard-agi@.service").read_text(encoding="utf-8")
    here = str(Path(sys.executable).parent / "npv-guard")
    assert result.stdout == shipped.replace("/opt/npv-guard/bin/npv-guard", here)


@pytest.mark.parametrize("bad", ["npv-guard", "/opt/my venv/bin/npv-guard", "/opt/%i/npv-guard"])
def test_systemd_executable_must_be_a_plain_absolute_path(bad: str) -> None:
    result = run("systemd", "show", "run", "--executable", bad)
    assert result.returncode == 2
    assert "--executable" in result.stderr and result.stdout == ""


def test_systemd_show_unknown_name_exit_2() -> None:
    result = run("systemd", "show", "sip")
    assert result.returncode == 2
    assert "'sip'" in result.stderr and "serve" in result.stderr


def test_systemd_install_then_identical_then_refuse_then_force(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "npv-guard")
    first = run("systemd", "install", "--dest", str(tmp_path), "--executable", exe)
    assert first.returncode == 0, first.stderr
    unit = tmp_path / "etc/systemd/system/npv-guard-run@.service"
    for relative in ("etc/systemd/system/npv-guard-agi@.service", "etc/systemd/system/npv-guard-serve@.service",
                     "etc/sysusers.d/npv-guard.conf", "etc/npv-guard/example.toml"):  # fmt: skip
        assert (tmp_path / relative).is_file(), relative
    assert f"ExecStart={exe} run " in unit.read_text()
    assert "systemctl daemon-reload" in first.stdout

    again = run("systemd", "install", "--dest", str(tmp_path), "--executable", exe)
    assert again.returncode == 0, again.stderr
    assert [line.split()[0] for line in again.stdout.splitlines() if line.startswith(("written", "unchanged"))] == [
        "unchanged"
    ] * 5

    unit.write_text(unit.read_text() + "Nice=5\n")
    refused = run("systemd", "install", "--dest", str(tmp_path), "--executable", exe)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and str(unit) in refused.stderr
    assert unit.read_text().endswith("Nice=5\n")

    forced = run("systemd", "install", "--dest", str(tmp_path), "--executable", exe, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Nice=5" not in unit.read_text()


def test_systemd_install_warns_when_protecthome_hides_the_executable(tmp_path: Path) -> None:
    result = run("systemd", "install", "--dest", str(tmp_path), "--executable", "/home/admin/venv/bin/npv-guard")
    assert result.returncode == 0, result.stderr
    assert "ProtectHome" in result.stderr


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "systemd" / name, encoding="utf-8")
    return parser


def test_units_share_one_hardening_and_stop_after_the_drain() -> None:
    sections = {name: dict(_unit(name)["Service"]) for name in UNITS}
    run_service = sections[UNITS[0]]
    for name, service in sections.items():
        assert {k: v for k, v in service.items() if k != "ExecStart"} == {
            k: v for k, v in run_service.items() if k != "ExecStart"
        }, f"{name} drifted from {UNITS[0]}"
        drain = re.search(r"--drain-seconds (\d+)", service["ExecStart"])
        assert drain and int(service["TimeoutStopSec"]) > int(drain.group(1)) + 5, name
    assert run_service["User"] == "npv-guard" and run_service["KillSignal"] == "SIGTERM"
    assert run_service["Restart"] == "on-failure"
    assert run_service["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert run_service["CapabilityBoundingSet"] == ""
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
                       "PrivateTmp": "yes", "StateDirectory": "npv-guard", "LogsDirectory": "npv-guard",
                       "ConfigurationDirectory": "npv-guard"}.items():  # fmt: skip
        assert run_service[key] == value, key


def test_sample_config_loads_and_its_journal_is_in_the_state_directory() -> None:
    settings = load_settings(str(ROOT / "systemd" / "guard.example.toml"), {})
    assert settings.journal_path.startswith("/var/lib/npv-guard/")  # StateDirectory=npv-guard
    assert [p.id for p in settings.professionals] == ["acme"]


# --- systemd's own tools -------------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def verify(unit_dir: Path, unit: str) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify of one instance of a template; any message counts as a failure
    (an unknown or misspelt directive only warns, with exit status 0)."""
    instance = unit.replace("@.", "@guard1.")
    return subprocess.run(
        [SYSTEMD_ANALYZE or "systemd-analyze", "verify", "--man=no", str(unit_dir / instance)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def installed_units(tmp_path: Path) -> Path:
    if SYSTEMD_ANALYZE is None:
        pytest.fail("systemd-analyze is missing: scripts/bootstrap installs the systemd package")
    # ExecStart= must name an existing executable: the npv-guard of this venv.
    result = run("systemd", "install", "--dest", str(tmp_path), "--executable", str(Path(EXE).absolute()))
    assert result.returncode == 0, result.stderr
    return tmp_path / "etc/systemd/system"


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_accepts_each_unit(installed_units: Path, unit: str) -> None:
    result = verify(installed_units, unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("ProtectSystem=strict", "ProtectSytem=strict"), "Unknown key"),
        (("RestrictAddressFamilies=AF_UNIX", "RestrictAddressFamilies=AF_BOGUS"), "address family"),
        (("\nExecStart=/", "\nExecStart=/nonexistent/"), "not executable"),
    ],
)
def test_systemd_analyze_verify_catches_a_broken_unit(
    installed_units: Path, change: tuple[str, str], message: str
) -> None:
    """The check above can fail: the same unit with one mistake does."""
    unit = installed_units / UNITS[0]
    unit.write_text(unit.read_text().replace(*change, 1))
    result = verify(installed_units, UNITS[0])
    assert message in result.stdout + result.stderr
    assert (result.returncode, result.stdout + result.stderr) != (0, "")


def test_systemd_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.fail("systemd-sysusers is missing: scripts/bootstrap installs the systemd package")
    assert run("systemd", "install", "--dest", str(tmp_path)).returncode == 0
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(tmp_path / "etc/sysusers.d/npv-guard.conf")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text().splitlines()
    user = [line.split(":") for line in passwd if line.startswith("npv-guard:")]
    assert len(user) == 1
    assert user[0][5:] == ["/var/lib/npv-guard", "/usr/sbin/nologin"]
    assert any(line.startswith("npv-guard:") for line in (tmp_path / "etc/group").read_text().splitlines())


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_security_exposure_at_most_2(installed_units: Path, unit: str) -> None:
    """systemd's own hardening score (0 best, 10 worst): 1.4 when written; a lost directive shows."""
    result = subprocess.run(
        [SYSTEMD_ANALYZE or "systemd-analyze", "security", "--offline=yes", "--threshold=20", "--no-pager",
         str(installed_units / unit.replace("@.", "@guard1."))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr
    assert re.search(r"Overall exposure level for npv-guard-\w+@guard1\.service: [01]\.\d OK", result.stdout)
