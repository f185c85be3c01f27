"""The installed `npv-guard` command, run as a subprocess: the contract other tools depend on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from npv_guard.clock import parse_instant
from npv_guard.core.model import Refusal, RefusalSource
from npv_guard.journal import RefusalJournal
from npv_guard.store import ConsumerHasher
from tests.support.redis_servers import RedisServer, free_tcp_port

EXE = shutil.which("npv-guard", path=str(Path(sys.executable).parent)) or "npv-guard"
SECRET = "cli-test-secret-0123456789"


def clock(instant: str) -> dict[str, str]:
    """The guard's clock set to `instant`: writes of facts must be dated near it."""
    return {"NPV_GUARD_NOW": instant}


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, env={**base, **(env or {})}, input=stdin, timeout=60, check=False
    )


# --- check --offline: no store needed ------------------------------------------------------------


def test_allow_exit_0_and_json_shape() -> None:
    result = run("check", "--caller", "01 62 00 00 01", "--callee", "06 12 34 56 78",
                 "--at", "2026-12-01T10:00:00", "--offline", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "allow"
    assert data["reasons"] == []
    assert data["caller"] == "+33162000001" and data["callee"] == "+33612345678"
    assert data["timezone"] == "Europe/Paris"
    assert data["local_time"] == "2026-12-01T10:00:00+01:00"
    assert data["not_evaluated"] == ["frequency_cap", "refusal_block", "consent"]


def test_reject_exit_1_lists_every_reason() -> None:
    result = run("check", "--caller", "0612345678", "--callee", "0612345679",
                 "--at", "2026-12-06T21:00:00", "--offline", "--json")  # fmt: skip
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["verdict"] == "reject"
    assert {r["code"] for r in data["reasons"]} == {"CALLER_NOT_NPV", "WEEKEND", "OUTSIDE_HOURS"}
    assert all(r["message"] for r in data["reasons"])


@pytest.mark.parametrize(
    ("at", "local"),
    [
        ("2026-12-01T10:00:00Z", "2026-12-01T11:00:00+01:00"),
        ("2026-12-01T10:00:00+01:00", "2026-12-01T10:00:00+01:00"),
        ("2026-12-01T10:00:00", "2026-12-01T10:00:00+01:00"),  # Paris wall time
        ("2026-07-01T10:00:00", "2026-07-01T10:00:00+02:00"),
    ],
)
def test_at_offset_or_paris_wall_time(at: str, local: str) -> None:
    result = run("check", "--caller", "0162000001", "--callee", "0612345678", "--at", at, "--offline", "--json")
    assert json.loads(result.stdout)["local_time"] == local


@pytest.mark.parametrize(
    ("at", "problem"),
    [
        ("9999-12-31T23:59:59-05:00", "outside 1970-2099"),  # would overflow the date arithmetic
        ("1900-01-01T10:00:00", "outside 1970-2099"),
        ("tomorrow", "not an ISO 8601 instant"),
    ],
)
def test_instants_out_of_range_are_usage_errors(at: str, problem: str) -> None:
    result = run("check", "--caller", "0162000001", "--callee", "0612345678", "--at", at, "--offline")
    assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr


def test_human_output_explains() -> None:
    result = run("check", "--caller", "anonymous", "--callee", "0612345678", "--at", "2026-12-01T11:00", "--offline")
    assert result.returncode == 1
    assert "REJECT" in result.stdout and "CALLER_MISSING" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--callee", "0612345678"],
        ["check", "--caller", "0162000001", "--callee", "0612345678", "--at", "tomorrow", "--offline"],
        ["check", "--caller", "0162000001", "--callee", "0612345678", "--offline", "--record"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.strip()


def test_broken_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[redis]\ntimeout_ms = "soon"\n')
    result = run("check", "--caller", "0162000001", "--callee", "0612345678", "--offline", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "redis.timeout_ms" in result.stderr


def test_npv_guard_now_sets_the_clock() -> None:
    env = {"NPV_GUARD_NOW": "2026-12-01T10:30:00+01:00"}
    result = run("check", "--caller", "0162000001", "--callee", "0612345678", "--offline", "--json", env=env)
    assert json.loads(result.stdout)["local_time"].startswith("2026-12-01T10:30")


def test_professional_directory_from_config(tmp_path: Path) -> None:
    config = tmp_path / "guard.toml"
    config.write_text('[[professionals]]\nid = "acme"\nnpvs = ["0162000001"]\n')
    base = [
        "check",
        "--callee",
        "0612345678",
        "--at",
        "2026-12-01T11:00",
        "--offline",
        "--json",
        "--config",
        str(config),
    ]
    ok = run(*base, "--caller", "0162000001")
    assert json.loads(ok.stdout)["professional"] == "acme"
    stranger = run(*base, "--caller", "0162000002")
    assert stranger.returncode == 1
    assert [r["code"] for r in json.loads(stranger.stdout)["reasons"]] == ["CALLER_NOT_ASSIGNED"]


def test_reasons_lists_every_code() -> None:
    result = run("reasons", "--json")
    assert set(json.loads(result.stdout)) >= {"CALLER_MISSING", "FREQUENCY_CAP", "STATE_UNAVAILABLE"}


# --- stateful commands on a real Redis -------------------------------------------------------------


@pytest.fixture
def env(redis_server: RedisServer) -> dict[str, str]:
    # A fresh key prefix per test keeps tests apart on the shared server.
    return {
        "NPV_GUARD_REDIS_URL": redis_server.url,
        "NPV_GUARD_HASH_SECRET": SECRET,
        "NPV_GUARD_REDIS_KEY_PREFIX": "cli" + uuid.uuid4().hex[:8],
    }


@pytest.mark.redis
def test_consent_check_record_cap_history(env: dict[str, str]) -> None:
    pair = ["--professional", "acme", "--callee", "06 12 34 56 78"]
    check = ["check", "--caller", "0162000001", "--callee", "+33612345678", "--professional", "acme", "--json"]
    assert json.loads(run(*check, "--at", "2026-11-16T11:00", env=env).stdout)["reasons"][0]["code"] == "NO_CONSENT"
    granted = run("consent", "grant", *pair, "--at", "2026-09-01T12:00", "--proof", "web form", "--json", env=env)
    assert granted.returncode == 0, granted.stderr
    for day in ("16", "17", "18", "19"):
        result = run(*check, "--at", f"2026-11-{day}T11:00", "--record", env={**env, **clock(f"2026-11-{day}T11:00")})
        assert result.returncode == 0, result.stdout
        assert json.loads(result.stdout)["recorded"] is True
    fifth = run(*check, "--at", "2026-11-20T11:00", "--record", env={**env, **clock("2026-11-20T11:00")})
    assert fifth.returncode == 1
    assert [r["code"] for r in json.loads(fifth.stdout)["reasons"]] == ["FREQUENCY_CAP"]
    history = json.loads(run("history", *pair, "--json", env=env).stdout)
    assert len(history["attempts"]) == 4
    assert history["consents"][0]["proof"] == "web form"
    assert "612345678" not in json.dumps(history)


@pytest.mark.redis
def test_next_allowed_at_in_check_json(env: dict[str, str]) -> None:
    run("consent", "grant", "--professional", "acme", "--callee", "0612345678", "--at", "2026-09-01T12:00", env=env)
    check = ["check", "--caller", "0162000001", "--callee", "0612345678", "--professional", "acme", "--json"]
    friday_night = json.loads(run(*check, "--at", "2026-12-04T20:00:00", env=env).stdout)
    assert friday_night["next_allowed_at"] == {"utc": "2026-12-07T09:00:00Z", "local": "2026-12-07T10:00:00+01:00"}
    # Offline, from the calendar rules alone (it used to be null: changed with issue 15); the
    # stateful rules are still listed as not evaluated.
    offline = json.loads(run(*check, "--at", "2026-12-04T20:00:00", "--offline", env=env).stdout)
    assert offline["next_allowed_at"] == friday_night["next_allowed_at"]
    assert offline["not_evaluated"] == ["frequency_cap", "refusal_block", "consent"]
    banned = json.loads(run(*check, "--at", "2026-12-04T20:00:00", "--offline", "--sector", "renewable_energy",
                            env=env).stdout)  # fmt: skip
    assert banned["next_allowed_at"] is None  # a sector ban does not expire


@pytest.mark.redis
def test_refusal_record_blocks(env: dict[str, str]) -> None:
    pair = ["--professional", "acme", "--callee", "0612345678"]
    run("consent", "grant", *pair, "--at", "2026-09-01T12:00", env=env)
    recorded = run("refusal", "record", *pair, "--source", "agent", "--json", env={**env, **clock("2026-11-16T11:05")})
    assert recorded.returncode == 0, recorded.stderr
    data = json.loads(recorded.stdout)
    assert data["withdraws_consent"] is True and data["blocked_until"] == "2027-01-15T23:00:00Z"
    check = ["check", "--caller", "0162000001", "--callee", "0612345678", "--professional", "acme", "--json"]
    codes = {r["code"] for r in json.loads(run(*check, "--at", "2026-11-17T11:00", env=env).stdout)["reasons"]}
    assert codes == {"REFUSAL_BLOCK", "CONSENT_WITHDRAWN"}


@pytest.mark.redis
def test_check_counts_refusals_waiting_in_the_journal(env: dict[str, str], tmp_path: Path) -> None:
    """A refusal a guard on this machine journaled while Redis was down blocks `check` too."""
    journal_path = tmp_path / "refusals.journal"
    env = {**env, "NPV_GUARD_JOURNAL_PATH": str(journal_path)}
    run("consent", "grant", "--professional", "acme", "--callee", "0612345678", "--at", "2026-09-01T12:00", env=env)
    check = ["check", "--caller", "0162000001", "--callee", "0612345678", "--professional", "acme", "--json"]
    assert run(*check, "--at", "2026-11-17T11:00", env=env).returncode == 0
    refusal = Refusal(parse_instant("2026-11-16T11:05"), RefusalSource.AGENT, "call-1")
    RefusalJournal(str(journal_path)).add("acme", ConsumerHasher(SECRET).digest("+33612345678"), refusal, None)
    blocked = run(*check, "--at", "2026-11-17T11:00", env=env)
    assert blocked.returncode == 1
    assert {r["code"] for r in json.loads(blocked.stdout)["reasons"]} == {"REFUSAL_BLOCK"}


@pytest.mark.redis
def test_consent_withdraw(env: dict[str, str]) -> None:
    pair = ["--professional", "acme", "--callee", "0612345678"]
    run("consent", "grant", *pair, "--at", "2026-09-01T12:00", env=env)
    assert run("consent", "withdraw", *pair, env={**env, **clock("2026-11-01T12:00")}).returncode == 0
    check = ["check", "--caller", "0162000001", "--callee", "0612345678", "--professional", "acme", "--json"]
    data = json.loads(run(*check, "--at", "2026-11-17T11:00", env=env).stdout)
    assert [r["code"] for r in data["reasons"]] == ["CONSENT_WITHDRAWN"]


@pytest.mark.redis
def test_consent_import_reports_bad_rows_by_line(env: dict[str, str], tmp_path: Path) -> None:
    rows = tmp_path / "consents.csv"
    rows.write_text(
        "number,date,basis,proof\n"
        "0612345678,2026-09-01,consent,web form\n"
        "not-a-number,2026-09-01,consent,x\n"
        "0612345679,yesterday,consent,x\n"
        "0612345680,2026-09-01,maybe,x\n"
        "+33612345681,2026-09-01T10:00:00+02:00,contract,contract 7\n",
        encoding="utf-8",
    )
    result = run("consent", "import", "--professional", "acme", str(rows), "--json", env=env)
    assert result.returncode == 1  # some rows were rejected
    assert json.loads(result.stdout)["imported"] == 2
    assert json.loads(result.stdout)["rejected"] == 3
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # not the audit line
    assert [line.split(":")[1] for line in errors] == ["3", "4", "5"]
    check = ["check", "--caller", "0162000001", "--professional", "acme", "--at", "2026-11-17T11:00", "--json"]
    assert run(*check, "--callee", "0612345678", env=env).returncode == 0
    assert run(*check, "--callee", "0612345681", env=env).returncode == 0
    assert run(*check, "--callee", "0612345679", env=env).returncode == 1


CHECK_ACME = ["check", "--caller", "0162000001", "--callee", "0612345678", "--professional", "acme", "--json"]
PAIR_ACME = ["--professional", "acme", "--callee", "0612345678"]


def verdict_at(when: str, env: dict[str, str], *extra: str) -> dict[str, Any]:
    result = run(*CHECK_ACME, "--at", when, *extra, env=env)
    assert result.returncode in (0, 1), result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.redis
def test_a_slot_consent_is_stored_and_lifts_the_calendar_inside_it_only(env: dict[str, str]) -> None:
    granted = run("consent", "grant", *PAIR_ACME, "--at", "2026-11-20T12:00", "--slot",
                  "2026-12-05T09:00/2026-12-05T09:30", "--json", env=env)  # fmt: skip
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["slot"] == {"start": "2026-12-05T08:00:00Z", "end": "2026-12-05T08:30:00Z"}
    assert verdict_at("2026-12-05T08:59:59", env)["verdict"] == "reject"
    assert verdict_at("2026-12-05T09:00:00", env)["verdict"] == "allow"
    assert verdict_at("2026-12-05T09:29:59", env)["verdict"] == "allow"
    assert verdict_at("2026-12-05T09:30:00", env)["verdict"] == "reject"
    # The rejection just before the slot points at the slot's first second.
    before = verdict_at("2026-12-05T08:00:00", env)
    assert before["next_allowed_at"]["utc"] == "2026-12-05T08:00:00Z"
    history = json.loads(run("history", *PAIR_ACME, "--json", env=env).stdout)
    assert history["consents"][0]["slot"] == {"start": "2026-12-05T08:00:00Z", "end": "2026-12-05T08:30:00Z"}
    assert 1095 * 86400 < history["ttl_seconds"]["consents"] <= 1096 * 86400


@pytest.mark.redis
def test_a_contract_end_is_stored_and_ends_the_contract(env: dict[str, str]) -> None:
    granted = run("consent", "grant", *PAIR_ACME, "--at", "2026-09-01T12:00", "--basis", "contract",
                  "--until", "2026-12-01T11:00", "--json", env=env)  # fmt: skip
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["until"] == "2026-12-01T10:00:00Z"
    assert verdict_at("2026-12-01T10:59:59", env, "--sector", "energy_renovation")["verdict"] == "allow"
    ended = verdict_at("2026-12-01T11:00:00", env, "--sector", "energy_renovation")
    assert {r["code"] for r in ended["reasons"]} == {"NO_CONSENT", "SECTOR_BANNED"}
    assert "ended at 2026-12-01T10:00:00Z" in ended["reasons"][0]["message"]


@pytest.mark.redis
@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--until", "2027-01-01T00:00"], "--basis contract"),
        (["--basis", "contract", "--until", "tomorrow"], "--until:"),
        (["--slot", "2026-12-05T09:00"], "--slot:"),
        (["--slot", "2026-12-05T09:30/2026-12-05T09:00"], "ends before it starts"),
    ],
)
def test_bad_grant_terms_are_a_usage_error(env: dict[str, str], options: list[str], problem: str) -> None:
    result = run("consent", "grant", *PAIR_ACME, "--at", "2026-11-20T12:00", *options, env=env)
    assert result.returncode == 2 and problem.replace("--basis contract", "contract basis only") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.redis
def test_a_callback_request_lasts_five_working_days(env: dict[str, str]) -> None:
    # Requested on Wednesday 23 Dec 2026: Wed, Thu, (Christmas), Mon 28, Tue 29, Wed 30.
    requested = {**env, **clock("2026-12-23T11:00")}  # a grant is never dated after the guard's clock
    assert run("consent", "grant", *PAIR_ACME, "--basis", "callback_request", env=requested).returncode == 0
    assert verdict_at("2026-12-30T19:59:59", env, "--sector", "home_adaptation")["verdict"] == "allow"
    late = verdict_at("2026-12-31T10:00:00", env, "--sector", "home_adaptation")
    assert {r["code"] for r in late["reasons"]} == {"NO_CONSENT", "SECTOR_BANNED"}
    assert "expired at 2026-12-30T23:00:00Z" in late["reasons"][0]["message"]


@pytest.mark.redis
def test_a_consent_lapses_a_year_after_its_collection(env: dict[str, str]) -> None:
    run("consent", "grant", *PAIR_ACME, "--at", "2025-12-01T10:30:00", env=env)
    assert verdict_at("2026-12-01T10:30:00", env)["verdict"] == "allow"
    lapsed = verdict_at("2026-12-01T10:30:01", env)
    assert [r["code"] for r in lapsed["reasons"]] == ["NO_CONSENT"] and "lapsed" in lapsed["reasons"][0]["message"]


@pytest.mark.redis
def test_consent_import_takes_slots_and_contract_ends(env: dict[str, str], tmp_path: Path) -> None:
    rows = tmp_path / "consents.csv"
    rows.write_text(
        "number,date,basis,proof,outside_hours,slot,until\n"
        "0612345678,2026-11-20T12:00,consent,phone,,2026-12-05T09:00/2026-12-05T09:30,\n"
        "0612345679,2026-09-01,contract,contract 7,,,2026-12-01T11:00\n"
        "0612345680,2026-09-01,consent,x,,2026-12-05T09:00,\n"
        "0612345681,2026-09-01,consent,x,,,2027-01-01\n"
        "0612345682,2026-12-01,callback_request,asked by phone\n",
        encoding="utf-8",
    )
    result = run("consent", "import", "--professional", "acme", str(rows), "--json", env=env)
    assert json.loads(result.stdout) == {**json.loads(result.stdout), "imported": 3, "rejected": 2}
    problems = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # audit lines
    assert [line.split(":")[1] for line in problems] == ["4", "5"]
    check = ["check", "--caller", "0162000001", "--professional", "acme", "--json"]
    assert run(*check, "--callee", "0612345678", "--at", "2026-12-05T09:10", env=env).returncode == 0
    assert run(*check, "--callee", "0612345679", "--at", "2026-12-01T10:59", env=env).returncode == 0
    assert run(*check, "--callee", "0612345679", "--at", "2026-12-01T11:00", env=env).returncode == 1
    assert run(*check, "--callee", "0612345682", "--at", "2026-12-07T11:00", env=env).returncode == 0
    assert run(*check, "--callee", "0612345682", "--at", "2026-12-08T11:00", env=env).returncode == 1


@pytest.mark.redis
def test_separate_guard_processes_let_exactly_four_through(env: dict[str, str]) -> None:
    pair = ["--professional", "acme", "--callee", "0612345678"]
    run("consent", "grant", *pair, "--at", "2026-09-01T12:00", env=env)
    check = ["check", "--caller", "0162000001", "--callee", "0612345678", "--professional", "acme",
             "--at", "2026-11-16T11:00", "--record"]  # fmt: skip
    env = {**env, **clock("2026-11-16T11:00"), "NPV_GUARD_REDIS_TIMEOUT_MS": "3000"}
    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(lambda _: run(*check, env=env).returncode, range(12)))
    assert sorted(codes) == [0] * 4 + [1] * 8


def test_stateful_check_without_secret_is_a_usage_error() -> None:
    result = run("check", "--caller", "0162000001", "--callee", "0612345678")
    assert result.returncode == 2
    assert "hash_secret" in result.stderr


def test_redis_down_fails_closed(tmp_path: Path) -> None:
    env = {"NPV_GUARD_HASH_SECRET": SECRET, "NPV_GUARD_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run("check", "--caller", "0162000001", "--callee", "0612345678", "--at", "2026-11-16T11:00",
                 "--json", env=env)  # fmt: skip
    assert result.returncode == 1
    assert [r["code"] for r in json.loads(result.stdout)["reasons"]] == ["STATE_UNAVAILABLE"]
    refusal = run("refusal", "record", "--professional", "acme", "--callee", "0612345678", env=env)
    assert refusal.returncode == 1 and "nothing was recorded" in refusal.stderr


def test_one_journal_has_one_writer(tmp_path: Path) -> None:
    """A second guard process on the same refusal journal is refused at start (it would compact
    the file under the first and lose its pending refusals); readers are not affected."""
    from npv_guard.journal import JournalBusy  # noqa: PLC0415

    journal = tmp_path / "refusals.journal"
    first = RefusalJournal(str(journal), writer=True)
    first.add("acme", "ab" * 16, Refusal(parse_instant("2026-11-16T11:05"), RefusalSource.AGENT), None)
    with pytest.raises(JournalBusy, match=f"pid {os.getpid()}"):
        RefusalJournal(str(journal), writer=True)
    assert len(RefusalJournal(str(journal))) == 1  # check and scrub only read it
    port = free_tcp_port()
    env = {"NPV_GUARD_HASH_SECRET": SECRET, "NPV_GUARD_JOURNAL_PATH": str(journal),
           "NPV_GUARD_REDIS_URL": "redis://127.0.0.1:1/0", "NPV_GUARD_HTTP_LISTEN": ""}  # fmt: skip
    busy = run("agi", "--port", str(port), env=env)
    assert busy.returncode == 2 and "is written by a running guard" in busy.stderr, busy.stderr


# --- what the stateful commands refuse before writing anything -----------------------------------

DIRECTORY = '[[professionals]]\nid = "acme"\nnpvs = ["0162000001"]\n'


def _without_ttls(history: dict[str, Any]) -> dict[str, Any]:
    """A pair's history but for its TTLs, which tick between two reads."""
    return {key: value for key, value in history.items() if key != "ttl_seconds"}


def _history(env: dict[str, str], *extra: str) -> dict[str, Any]:
    result = run("history", "--professional", "acme", "--callee", "0612345678", "--json", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _writes(professional: str, rows: Path) -> list[list[str]]:
    pair = ["--professional", professional, "--callee", "0612345678"]
    return [
        ["refusal", "record", *pair],
        ["consent", "grant", *pair, "--at", "2026-09-01T12:00"],
        ["consent", "withdraw", *pair],
        ["consent", "import", "--professional", professional, str(rows)],
        ["history", *pair],
    ]


@pytest.mark.redis
@pytest.mark.parametrize("professional", ["ACME", "ac me}|x"])
def test_unknown_or_malformed_professional_is_a_usage_error(
    env: dict[str, str], tmp_path: Path, professional: str
) -> None:
    """A fact stored under a professional no guard decides for would block nothing."""
    config = tmp_path / "guard.toml"
    config.write_text(DIRECTORY)
    rows = tmp_path / "consents.csv"
    rows.write_text("0612345678,2026-09-01,consent,web form\n")
    env = {**env, **clock("2026-12-01T10:30")}
    for command in _writes(professional, rows):
        result = run(*command, "--config", str(config), env=env)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1 and "professional" in result.stderr and "Traceback" not in result.stderr
    stored = _history(env)
    assert stored["attempts"] == stored["refusals"] == stored["consents"] == []
    assert run("history", "--professional", "ACME", "--callee", "0612345678", env=env).returncode == 0  # no directory


@pytest.mark.redis
def test_malformed_professional_is_refused_even_without_a_directory(env: dict[str, str], tmp_path: Path) -> None:
    rows = tmp_path / "consents.csv"
    rows.write_text("0612345678,2026-09-01,consent,web form\n")
    for command in _writes("ac me}|x", rows):
        result = run(*command, env={**env, **clock("2026-12-01T10:30")})
        assert result.returncode == 2 and "1-64 letters" in result.stderr, (command, result.stderr)


@pytest.mark.redis
@pytest.mark.parametrize(
    "command",
    [
        ["refusal", "record", "--professional", "acme", "--callee", "0612345678", "--at", "2026-12-02T10:30"],
        ["refusal", "record", "--professional", "acme", "--callee", "0612345678", "--at", "2026-12-01T10:00"],
        ["consent", "withdraw", "--professional", "acme", "--callee", "0612345678", "--at", "2026-11-01T10:00"],
        ["consent", "withdraw", "--professional", "acme", "--callee", "0612345678", "--at", "2026-12-01T10:31"],
        ["consent", "grant", "--professional", "acme", "--callee", "0612345678", "--at", "2026-12-01T10:31"],
        ["check", "--caller", "0162000001", "--callee", "0612345678", "--record", "--at", "2026-12-01T10:00"],
        ["check", "--caller", "0162000001", "--callee", "0612345678", "--record", "--at", "2026-12-01T11:00"],
    ],
)
def test_facts_dated_away_from_the_clock_are_refused(env: dict[str, str], command: list[str]) -> None:
    """A refusal dated tomorrow would expire before it counts; an attempt dated this morning would
    be counted where a refusal made since is not seen: writes are dated by the guard's clock."""
    env = {**env, **clock("2026-12-01T10:30")}
    run("consent", "grant", "--professional", "acme", "--callee", "0612345678", "--at", "2026-09-01", env=env)
    before = _history(env)
    result = run(*command, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "guard's clock" in result.stderr
    assert _without_ttls(_history(env)) == _without_ttls(before)  # nothing written
    # Within the skew of the clock the same writes are fine, and a read may look at any instant.
    assert run(*command[:-1], "2026-12-01T10:30:01", env=env).returncode in (0, 1)
    assert run("check", "--caller", "0162000001", "--callee", "0612345678", "--at", "2026-12-01T10:00",
               env=env).returncode in (0, 1)  # fmt: skip


@pytest.mark.redis
def test_write_skew_is_a_setting(env: dict[str, str]) -> None:
    env = {**env, **clock("2026-12-01T10:30"), "NPV_GUARD_RULES_MAX_WRITE_SKEW_S": "3600"}
    pair = ["--professional", "acme", "--callee", "0612345678"]
    assert run("refusal", "record", *pair, "--at", "2026-12-01T10:00", env=env).returncode == 0


@pytest.mark.redis
def test_consent_import_refuses_rows_dated_in_the_future(env: dict[str, str], tmp_path: Path) -> None:
    rows = tmp_path / "consents.csv"
    rows.write_text("0612345678,2020-01-01,consent,old paper form\n0612345679,2026-12-25,consent,x\n")
    env = {**env, **clock("2026-12-01T10:30")}
    result = run("consent", "import", "--professional", "acme", str(rows), "--json", env=env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["imported"] == 1
    assert result.stderr.startswith(f"{rows}:2: date: ") and "future" in result.stderr


@pytest.mark.redis
def test_history_reads_the_previous_secrets_as_the_decision_does(env: dict[str, str]) -> None:
    old = {**env, **clock("2026-11-16T11:05"), "NPV_GUARD_HASH_SECRET": "old-cli-secret-0123456789"}
    pair = ["--professional", "acme", "--callee", "0612345678"]
    assert run("refusal", "record", *pair, "--source", "agent", env=old).returncode == 0
    rotated = {**env, "NPV_GUARD_PREVIOUS_HASH_SECRETS": "old-cli-secret-0123456789"}
    history = _history(rotated)
    assert [(r["at"], r["source"]) for r in history["refusals"]] == [("2026-11-16T10:05:00Z", "agent")]
    check = ["check", "--caller", "0162000001", *pair[:2], "--callee", "0612345678", "--at", "2026-11-17T11:00"]
    assert run(*check, env=rotated).returncode == 1  # the decision sees it too
    assert _history(env)["refusals"] == []  # without the old secret neither does


@pytest.mark.redis
def test_doctor_warns_on_listeners_beyond_loopback_and_secrets_others_can_read(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Only the configuration is read here (nothing listens): Asterisk is pointed at closed ports."""
    config = tmp_path / "guard.toml"
    config.write_text(f'hash_secret = "{SECRET}"\n[agi]\nhost = "0.0.0.0"\n[api]\nlisten = "[::]:8470"\n'
                      '[http]\nlisten = "192.0.2.1:9464"\n')  # fmt: skip
    config.chmod(0o640)
    closed = {"NPV_GUARD_ARI_URL": f"http://127.0.0.1:{free_tcp_port()}", "NPV_GUARD_AMI_PORT": str(free_tcp_port()),
              "NPV_GUARD_JOURNAL_PATH": str(tmp_path / "journal")}  # fmt: skip
    result = run("doctor", "--config", str(config), env={**env, **closed})
    warnings = [line for line in result.stdout.splitlines() if "beyond loopback" in line]
    assert [line.split()[2] for line in warnings] == ["agi.host:", "api.listen:", "http.listen:"], result.stdout
    assert "readable by group or others (mode 0640)" in result.stdout and SECRET not in result.stdout
    config.write_text(f'hash_secret = "{SECRET}"\n')
    config.chmod(0o600)
    quiet = run("doctor", "--config", str(config), env={**env, **closed}).stdout
    assert "beyond loopback" not in quiet and "readable by group" not in quiet


@pytest.mark.parametrize(
    ("command", "options"),
    [
        *((command, ["--port", port]) for command in ("agi", "serve") for port in ("0", "70000")),
        *((command, ["--drain-seconds", s]) for command in ("agi", "serve", "run") for s in ("-1", "nan")),
    ],
)
def test_server_options_out_of_range_are_usage_errors(command: str, options: list[str]) -> None:
    result = run(
        command, *options, env={"NPV_GUARD_HASH_SECRET": SECRET, "NPV_GUARD_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert result.returncode == 2 and options[0] in result.stderr and "Traceback" not in result.stderr, result.stderr
