"""Real calls through the lab, then `npv-guard report` on the guard's own audit file: the page,
the CSV and /metrics all count the calls that were placed."""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import CONSUMER, Scene
from tests.support.process import EXE

pytestmark = pytest.mark.e2e

MARTINIQUE = "0596123456"  # 05:30 there when it is 10:30 in Paris


def test_report_counts_the_calls_placed(scene: Scene, tmp_path: Path) -> None:
    guard = scene.guard()
    scene.consent(guard)
    scene.consent(guard, callee=MARTINIQUE)
    uas = scene.uas(hold_ms="20000")
    assert scene.call("uac_dtmf_info.xml", hold_ms="2000").ok  # allowed, then the agent keys the refusal
    assert uas.wait(30).ok
    guard.wait_audit("refusal")
    # A mobile caller ID names no professional: CALLER_NOT_NPV alone, the pair's state is not read.
    assert scene.reject(403, caller="0612345670", callee="0612345699").ok
    assert scene.reject(403, callee=MARTINIQUE).ok  # OUTSIDE_HOURS, consumer time
    assert scene.reject(403, callee=CONSUMER).ok  # REFUSAL_BLOCK and CONSENT_WITHDRAWN, the refusal just made
    decisions = guard.wait_audit("decision", 4)
    # No --professional filter below: a call from a number that is no NPV names no professional.
    assert [d["professional"] for d in decisions].count("lab") == 3
    _, metrics = guard.http("/metrics")

    page, table = tmp_path / "report.html", tmp_path / "report.csv"
    done = subprocess.run(
        [EXE, "report", "--from", "2026-12-01", "--to", "2026-12-01",
         "--html", str(page), "--csv", str(table), str(guard.audit_path)],
        env=guard.env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with table.open(encoding="utf-8") as handle:
        numbers = {(r["section"], r["key"], r["series"]): int(r["count"]) for r in csv.DictReader(handle)}
    text = page.read_text(encoding="utf-8")

    def shown(key: str) -> int:
        found = re.search(rf"data-key='{key}'>(\d+)<", text)
        assert found, key
        return int(found.group(1))

    expected = {"decisions": 4, "allowed": 1, "rejected": 3, "refusals": 1, "malformed_lines": 0,
                "allowed_outside_legal_hours": 0}  # fmt: skip
    for key, count in expected.items():
        assert numbers[("summary", key, "")] == shown(key) == count, key
    reasons = {key: n for (section, key, _), n in numbers.items() if section == "rejections_by_reason"}
    assert reasons == {"CALLER_NOT_NPV": 1, "OUTSIDE_HOURS": 1, "REFUSAL_BLOCK": 1, "CONSENT_WITHDRAWN": 1}
    for code, count in reasons.items():
        assert re.search(rf"data-reason='{code}'>{count}<", text), code
    assert numbers[("refusals_by_source", "agent", "recorded")] == 1
    assert numbers[("decisions_by_local_hour", "10", "allow")] == 1
    assert numbers[("decisions_by_local_hour", "10", "reject")] == 2
    assert numbers[("decisions_by_local_hour", "05", "reject")] == 1  # Martinique's own hour
    assert numbers[("decisions_per_day", "2026-12-01", "reject")] == 3
    assert CONSUMER[1:] not in text  # consumers appear only as their keyed hash

    # The guard's own counters agree: each decision once, each cited reason apart, the refusal as DTMF.
    assert 'npv_guard_decisions_total{mode="ari",verdict="allow"} 1.0' in metrics
    assert 'npv_guard_decisions_total{mode="ari",verdict="reject"} 3.0' in metrics
    for code in reasons:
        assert f'npv_guard_decision_reasons_total{{mode="ari",reason="{code}"}} 1.0' in metrics, code
    assert 'npv_guard_refusals_total{mode="ari",outcome="recorded",source="agent"} 1.0' in metrics
    assert 'npv_guard_dtmf_refusals_total{mode="ari",outcome="recorded",source="agent"} 1.0' in metrics
