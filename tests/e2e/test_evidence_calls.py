"""Campaign and lead ids through real calls (ARI and AGI), into the audit trail, the pair's
history, the CDR, and back out through `npv-guard evidence` and `audit verify`."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import CONSUMER, Scene, assert_never_reached_carrier
from tests.support.lab import AsteriskLab

pytestmark = pytest.mark.e2e

LONG_LEAD = "L" * 70  # passes the dialplan's FILTER, fails the id rule: dropped with a warning


def cdr_rows(lab: AsteriskLab, call_ids: set[str], timeout: float = 15.0) -> dict[str, list[str]]:
    """The lab's cdr_custom lines of these calls, by uniqueid (CDRs are written at hang-up)."""
    path = Path(lab.root) / "var/lib/npv-lab/log/cdr-custom/npv-guard.csv"
    deadline = time.monotonic() + timeout
    rows: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        if path.exists():
            rows = {}
            for row in csv.reader(path.read_text().splitlines()):
                if row and row[0] in call_ids:
                    rows.setdefault(row[0], row)
            if set(rows) == call_ids:
                return rows
        time.sleep(0.1)
    raise AssertionError(f"CDRs of {sorted(call_ids)} not all in {path}: {rows}")


@pytest.mark.parametrize("mode", ["ari", "agi"])
def test_campaign_ids_reach_audit_history_cdr_and_evidence(
    scenes: dict[str, Scene], lab: AsteriskLab, mode: str
) -> None:
    (Path(lab.root) / "var/lib/npv-lab/log/cdr-custom").mkdir(parents=True, exist_ok=True)
    scene = scenes[mode]
    guard = scene.guard()
    scene.consent(guard)  # the CLI appends to the guard's own audit file, in the same chain
    for lead in ("L-1", "L-2"):
        uas = scene.uas()
        result = scene.call(hold_ms="300", campaign="spring-26", lead=lead)
        assert result.ok, result.describe()
        assert uas.wait(30).ok
    uas = scene.uas()
    rejected = scene.reject(403, sector="energy_renovation", campaign="spring-26", lead=LONG_LEAD)
    assert rejected.ok, rejected.describe()
    assert_never_reached_carrier(uas)

    decisions = guard.wait_audit("decision", 3)
    assert [d["verdict"] for d in decisions] == ["allow", "allow", "reject"]
    assert [d["campaign"] for d in decisions] == ["spring-26"] * 3
    assert [d["lead"] for d in decisions] == ["L-1", "L-2", None]
    assert decisions[2]["labels_dropped"] == ["lead"] and "lead id" in guard.log()
    assert all(d["mode"] == mode for d in decisions)

    history = json.loads(guard.cli("history", "--professional", "lab", "--callee", CONSUMER, "--json").stdout)
    assert [(a["campaign"], a["lead"]) for a in history["attempts"]] == [("spring-26", "L-1"), ("spring-26", "L-2")]

    cdrs = cdr_rows(lab, {d["call_id"] for d in decisions})
    for decision in decisions:
        _, _, _, campaign, lead, _ = cdrs[decision["call_id"]]
        assert (campaign, lead) == ("spring-26", decision["lead"] or "")

    guard.stop()
    audit = str(guard.audit_path)
    verified = guard.cli("audit", "verify", audit)
    assert verified.returncode == 0, verified.stdout
    pack_run = guard.cli("evidence", "--professional", "lab", "--callee", CONSUMER, "--audit", audit, "--json")
    assert pack_run.returncode == 0, pack_run.stderr
    pack = json.loads(pack_run.stdout)
    assert pack["audit"]["chain_ok"] is True
    assert len(pack["consents"]) == 1 and pack["consents"][0]["proof"] == "e2e form"
    assert pack["consents"][0]["validity"]["in_force"] is True and len(pack["consents"][0]["audit"]) == 1
    assert len(pack["attempts"]) == 2  # the calls placed and allowed
    assert [a["campaign"] for a in pack["attempts"]] == ["spring-26", "spring-26"]
    assert all(len(a["audit"]) == 1 and a["audit"][0]["chain_ok"] for a in pack["attempts"])
    assert [d["verdict"] for d in pack["decisions"]] == ["allow", "allow", "reject"]
    assert pack["refusals"] == []
    found = guard.cli("audit", "find", "--callee", CONSUMER, audit)
    assert found.returncode == 0 and found.stdout.count("\n") >= 4  # consent + 3 decisions (+ bridged: no consumer)
