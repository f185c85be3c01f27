"""The FastAGI mode on the real lab: the admin's own Dial() after one Gosub, and the same verdicts
as the ARI mode on the same calls."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import CONSUMER, NPV, TUESDAY, Scene, assert_never_reached_carrier, codes

pytestmark = pytest.mark.e2e

# (title, caller, callee, guard clock, extra SIP headers, expected SIP final code)
SCENARIOS: list[tuple[str, str, str, str, dict[str, str], int]] = [
    ("allowed", NPV, CONSUMER, TUESDAY, {}, 200),
    ("mobile caller ID", "0612345670", CONSUMER, TUESDAY, {}, 403),
    ("anonymous", "anonymous", CONSUMER, TUESDAY, {}, 403),
    ("NPV of nobody", "0162000099", CONSUMER, TUESDAY, {}, 403),
    ("service number", NPV, "0800123456", TUESDAY, {}, 403),
    ("Saturday", NPV, CONSUMER, "2026-12-05T10:30:00", {}, 403),
    ("Christmas", NPV, CONSUMER, "2026-12-25T10:30:00", {}, 403),
    ("Martinique at dawn", NPV, "0596123456", "2026-12-01T11:30:00", {}, 403),
    ("Alsace on Saint Stephen's day", NPV, CONSUMER, "2025-12-26T10:30:00", {"postcode": "67000"}, 403),
    ("banned sector", NPV, CONSUMER, TUESDAY, {"sector": "energy_renovation"}, 403),
    ("no consent", NPV, "0612345699", TUESDAY, {}, 403),
]


def _place(scene: Scene, caller: str, callee: str, headers: dict[str, str], code: int) -> Any:
    uas = scene.uas()
    if code == 200:
        result = scene.call(caller=caller, callee=callee, hold_ms="300", **headers)
        assert result.ok, result.describe()
        assert uas.wait(30).ok
    else:
        result = scene.reject(code, caller=caller, callee=callee, **headers)
        assert result.ok, result.describe()
        assert_never_reached_carrier(uas)
    return result


@pytest.mark.parametrize(("title", "caller", "callee", "now", "headers", "code"), SCENARIOS)
def test_ari_and_agi_give_identical_verdicts(
    scenes: dict[str, Scene], title: str, caller: str, callee: str, now: str, headers: dict[str, str], code: int
) -> None:
    decisions = {}
    for mode, scene in scenes.items():
        guard = scene.guard(now=now)
        scene.consent(guard)
        scene.consent(guard, callee="0596123456")
        _place(scene, caller, callee, headers, code)
        decisions[mode] = guard.wait_audit("decision")[0]
        guard.stop()
    ari, agi = decisions["ari"], decisions["agi"]
    assert (ari["mode"], agi["mode"]) == ("ari", "agi")
    assert ari["verdict"] == agi["verdict"] == ("allow" if code == 200 else "reject"), title
    assert ari["reasons"] == agi["reasons"], title
    assert ari["consumer"] == agi["consumer"]


def test_fifth_call_and_configured_cause(agi_scene: Scene) -> None:
    guard = agi_scene.guard(calls={"reject_causes": {"FREQUENCY_CAP": 34}})
    agi_scene.consent(guard)
    for _ in range(4):
        _place(agi_scene, NPV, CONSUMER, {}, 200)
    _place(agi_scene, NPV, CONSUMER, {}, 503)  # cause 34 -> SIP 503
    assert codes(guard.wait_audit("decision", 5)[-1]) == {"FREQUENCY_CAP"}


def test_agent_refusal_through_the_applicationmap_blocks_the_next_call(agi_scene: Scene) -> None:
    guard = agi_scene.guard()
    agi_scene.consent(guard)
    uas = agi_scene.uas(hold_ms="20000")
    uac = agi_scene.call("uac_dtmf_info.xml", hold_ms="2500")
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    refusal = guard.wait_audit("refusal")[0]
    assert refusal["recorded"] is True and refusal["source"] == "agent" and refusal["mode"] == "agi"
    _place(agi_scene, NPV, CONSUMER, {}, 403)
    assert codes(guard.wait_audit("decision", 2)[-1]) == {"REFUSAL_BLOCK", "CONSENT_WITHDRAWN"}


def test_consumer_key_through_the_pre_dial_feature(agi_scene: Scene) -> None:
    guard = agi_scene.guard()
    agi_scene.consent(guard)
    uas = agi_scene.uas("uas_dtmf_info.xml", hold_ms="20000")
    uac = agi_scene.call(hold_ms="2500")
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    assert guard.wait_audit("refusal")[0]["source"] == "consumer"


def test_agi_server_down_rejects(agi_scene: Scene) -> None:
    guard = agi_scene.guard()
    agi_scene.consent(guard)
    guard.stop()
    _place(agi_scene, NPV, CONSUMER, {}, 403)
