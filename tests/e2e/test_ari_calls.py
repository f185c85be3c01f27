"""Real SIP through a real Asterisk, decided by a real `npv-guard run` (ARI) on a real Redis.

Each test starts its own guard process (its clock set with NPV_GUARD_NOW, its own carrier port
and Redis key prefix) against the module's Asterisk; sipp plays the dialer (127.0.0.1 -> 5060)
and the consumer's phone behind the carrier.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import CONSUMER, NPV, TUESDAY, Scene, assert_never_reached_carrier, codes
from tests.support.guard import GuardProcess
from tests.support.lab import AsteriskLab, SippResult
from tests.support.redis_servers import RedisServer, free_tcp_port

pytestmark = pytest.mark.e2e


# --- allowed ---------------------------------------------------------------------------------


def test_allowed_call_is_bridged_to_the_consumer_with_the_verified_npv(scene: Scene) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas()
    uac = scene.call(caller="33162000001", hold_ms="1500")
    assert uac.ok, uac.describe()
    carrier = uas.wait(30)
    assert carrier.ok, carrier.describe()
    invite = carrier.received("INVITE")[0]
    assert "+33162000001" in (invite.header("From") or "")
    assert "+33612345678" in invite.first_line
    decision = guard.wait_audit("decision")[0]
    assert decision["verdict"] == "allow" and decision["reasons"] == []
    assert decision["consumer"] and "612345678" not in str(decision)
    guard.wait_audit("bridged")
    history = guard.cli("history", "--professional", "lab", "--callee", CONSUMER, "--json")
    assert '"attempts": [{' in history.stdout


def test_the_decision_sets_its_variables_in_one_request_and_the_app_gets_only_its_events(
    scene: Scene, lab: AsteriskLab
) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas()
    assert scene.call(hold_ms="500").ok
    assert uas.wait(30).ok
    guard.wait_audit("bridged")
    _, metrics = guard.http("/metrics")
    # NPV_GUARD_VERDICT, _REASONS and _PROFESSIONAL: one POST /channels/{id}/variables (Asterisk 22.10).
    assert 'npv_guard_ari_requests_total{operation="setChannelVars",outcome="ok"} 1.0' in metrics
    assert 'operation="setChannelVar"' not in metrics
    for operation in ("originate", "answer", "createBridge", "addChannel"):
        assert f'npv_guard_ari_requests_total{{operation="{operation}",outcome="ok"}} 1.0' in metrics
    application = lab.ari("GET", "/applications/npv-guard")
    allowed = {entry["type"] for entry in application["events_allowed"]}
    assert {"StasisStart", "ChannelDtmfReceived", "ChannelDestroyed", "ChannelUserevent"} <= allowed
    assert "ChannelVarset" not in allowed and "Dial" not in allowed


def test_p_asserted_identity_is_the_caller_id(scene: Scene) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas()
    uac = scene.call(caller="0612345670", pai="+33162000002")  # From is a mobile, PAI the NPV
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    assert guard.wait_audit("decision")[0]["caller"] == "+33162000002"


# --- rejected: the dialer gets a final failure, the carrier never sees the call -----------------


@pytest.mark.parametrize(
    ("case", "caller", "callee", "now", "headers", "code"),
    [
        ("mobile caller ID", "0612345670", CONSUMER, TUESDAY, {}, "CALLER_NOT_NPV"),
        ("anonymous", "anonymous", CONSUMER, TUESDAY, {}, "CALLER_MISSING"),
        ("NPV of nobody", "0162000099", CONSUMER, TUESDAY, {}, "CALLER_NOT_ASSIGNED"),
        ("service number", NPV, "0800123456", TUESDAY, {}, "CONSUMER_INVALID"),
        ("Saturday", NPV, CONSUMER, "2026-12-05T10:30:00", {}, "WEEKEND"),
        ("evening", NPV, CONSUMER, "2026-12-01T20:00:00", {}, "OUTSIDE_HOURS"),
        ("Christmas", NPV, CONSUMER, "2026-12-25T10:30:00", {}, "PUBLIC_HOLIDAY"),
        ("Martinique at dawn", NPV, "0596123456", "2026-12-01T11:30:00", {}, "OUTSIDE_HOURS"),
        ("banned sector", NPV, CONSUMER, TUESDAY, {"sector": "energy_renovation"}, "SECTOR_BANNED"),
        ("no consent", NPV, "0612345699", TUESDAY, {}, "NO_CONSENT"),
    ],
)
def test_each_rejection_reason(
    scene: Scene, case: str, caller: str, callee: str, now: str, headers: dict[str, str], code: str
) -> None:
    guard = scene.guard(now=now)
    scene.consent(guard)
    scene.consent(guard, callee="0596123456")
    uas = scene.uas()
    uac = scene.reject(403, caller=caller, callee=callee, **headers)
    assert uac.ok, f"{case}: {uac.describe()}"
    assert_never_reached_carrier(uas)
    decision = guard.wait_audit("decision")[0]
    assert decision["verdict"] == "reject"
    assert code in codes(decision), decision
    # Time lifts the calendar reasons (with consent on record), nothing else: the dialer is told when.
    expires = code in ("WEEKEND", "OUTSIDE_HOURS", "PUBLIC_HOLIDAY") and case != "no consent"
    assert (decision["next_allowed_at"] is not None) is expires, decision


def test_cause_is_configurable_per_reason(scene: Scene) -> None:
    guard = scene.guard(calls={"reject_causes": {"CALLER_NOT_NPV": 34}})
    scene.consent(guard)
    uas = scene.uas()
    assert scene.reject(503, caller="0612345670").ok  # cause 34 -> 503
    assert scene.reject(403, caller="anonymous").ok  # other reasons keep cause 21
    assert_never_reached_carrier(uas)


def test_redis_down_fails_closed(scene: Scene) -> None:
    guard = scene.guard(redis_url=f"redis://127.0.0.1:{free_tcp_port()}/0")
    uas = scene.uas()
    assert scene.reject(403).ok
    assert_never_reached_carrier(uas)
    assert codes(guard.wait_audit("decision")[0]) == {"STATE_UNAVAILABLE"}


def test_app_not_connected_rejects_in_the_dialplan(scene: Scene) -> None:
    uas = scene.uas()
    result = scene.reject(403)  # no guard running: STASISSTATUS=FAILED path
    assert result.ok, result.describe()
    assert_never_reached_carrier(uas)


# --- the cap, busy and unanswered calls --------------------------------------------------------


def test_fifth_call_in_30_days_is_rejected(scene: Scene) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas(calls=4)
    for _ in range(4):
        assert scene.call(hold_ms="200").ok
    assert uas.wait(30).ok
    uas = scene.uas()
    assert scene.reject(403).ok
    assert_never_reached_carrier(uas)
    decisions = guard.wait_audit("decision", 5)
    assert [d["verdict"] for d in decisions] == ["allow"] * 4 + ["reject"]
    assert codes(decisions[-1]) == {"FREQUENCY_CAP"}


def test_busy_consumer_is_relayed_and_still_counts(scene: Scene) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas("uas_busy.xml")
    assert scene.reject(486).ok  # busy, not a compliance rejection
    assert uas.wait(30).ok
    history = guard.cli("history", "--professional", "lab", "--callee", CONSUMER, "--json")
    assert history.stdout.count('"call_id"') == 1


def test_unanswered_consumer_times_out_and_counts(scene: Scene) -> None:
    guard = scene.guard(ari={"ring_timeout_s": 2})
    scene.consent(guard)
    uas = scene.uas("uas_noanswer.xml")
    result = scene.call("uac_reject.xml", expect_code="480")
    assert result.ok, result.describe()
    assert uas.wait(30).ok  # the carrier leg was cancelled
    assert guard.cli("history", "--professional", "lab", "--callee", CONSUMER, "--json").stdout.count('"call_id"') == 1


def test_dialer_hangs_up_while_the_consumer_rings(scene: Scene) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas("uas_noanswer.xml")
    result = scene.call("uac_cancel.xml", cancel_after_ms="800")
    assert result.ok, result.describe()
    carrier = uas.wait(30)
    assert carrier.ok and carrier.received("CANCEL"), carrier.describe()


# --- refusals by DTMF ----------------------------------------------------------------------------


def _refusal_blocks_next_call(scene: Scene, guard: GuardProcess, source: str) -> None:
    refusal = guard.wait_audit("refusal")[0]
    assert refusal["recorded"] is True and refusal["source"] == source
    assert refusal["withdraws_consent"] is True
    uas = scene.uas()
    assert scene.reject(403).ok
    assert_never_reached_carrier(uas)
    last = guard.wait_audit("decision", 2)[-1]
    assert codes(last) == {"REFUSAL_BLOCK", "CONSENT_WITHDRAWN"}


def test_agent_refusal_by_sip_info_blocks_the_next_call(scene: Scene) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas(hold_ms="20000")
    uac = scene.call("uac_dtmf_info.xml", hold_ms="2000")
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    _refusal_blocks_next_call(scene, guard, "agent")


def test_agent_refusal_by_rfc4733_blocks_the_next_call(scene: Scene) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas(hold_ms="20000")
    uac = scene.call("uac_dtmf_2833.xml", hold_ms="2500")
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    _refusal_blocks_next_call(scene, guard, "agent")


def test_consumer_refusal_by_rfc4733_blocks_the_next_call(scene: Scene) -> None:
    guard = scene.guard()
    scene.consent(guard)
    uas = scene.uas("uas_dtmf_2833.xml", hold_ms="20000")
    uac = scene.call(hold_ms="2500")
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    _refusal_blocks_next_call(scene, guard, "consumer")


def test_consumer_refusal_by_sip_info_and_hangup_on_refusal(scene: Scene) -> None:
    guard = scene.guard(calls={"hangup_on_refusal": True})
    scene.consent(guard)
    uas = scene.uas("uas_dtmf_info.xml", hold_ms="20000")
    uac = scene.call(hold_ms="15000")
    assert uac.ok, uac.describe()
    # The guard ended the call: the dialer got the BYE, it never sent its own at the end of the hold.
    assert uac.received("BYE") and not uac.sent("BYE"), uac.describe()
    assert uas.wait(30).ok
    _refusal_blocks_next_call(scene, guard, "consumer")


def test_refusal_switched_off_is_not_recorded(scene: Scene) -> None:
    guard = scene.guard(calls={"agent_refusal_code": ""})
    scene.consent(guard)
    uas = scene.uas(hold_ms="20000")
    assert scene.call("uac_dtmf_info.xml", hold_ms="1500").ok
    assert uas.wait(30).ok
    assert guard.audit("refusal") == []


def test_refusal_while_redis_is_down_is_journaled_then_replayed(scene: Scene) -> None:
    own = RedisServer().start()
    try:
        guard = scene.guard(redis_url=own.url)
        scene.consent(guard)
        uas = scene.uas(hold_ms="20000")
        sipp: Callable[[], SippResult] = lambda: scene.call("uac_dtmf_info.xml", hold_ms="4000")  # noqa: E731
        outcome: list[SippResult] = []
        caller = threading.Thread(target=lambda: outcome.append(sipp()))
        caller.start()
        guard.wait_audit("bridged")
        own.stop()  # Redis goes away while the call is up
        caller.join(30)
        assert outcome and outcome[0].ok, outcome and outcome[0].describe()
        assert uas.wait(30).ok
        refusal = guard.wait_audit("refusal")[0]
        assert refusal["recorded"] is True and refusal["journaled"] is True
        own.start()
        guard.wait_for_log("replayed 1 journaled refusal", timeout=15)
        history = guard.cli("history", "--professional", "lab", "--callee", CONSUMER, "--json")
        assert history.stdout.count('"source": "agent"') == 1
    finally:
        own.cleanup()


# --- restarts ----------------------------------------------------------------------------------------


def test_bridged_call_survives_a_guard_restart(scene: Scene) -> None:
    first = scene.guard()
    scene.consent(first)
    uas = scene.uas(hold_ms="30000")
    outcome: list[SippResult] = []
    caller = threading.Thread(target=lambda: outcome.append(scene.call(hold_ms="6000")))
    caller.start()
    first.wait_audit("bridged")
    first.kill()  # SIGKILL: no goodbye
    second = scene.guard()
    second.wait_for_log("adopted bridged call", timeout=10)
    caller.join(30)
    assert outcome and outcome[0].ok, outcome and outcome[0].describe()
    carrier = uas.wait(30)
    assert carrier.ok and carrier.received("BYE"), carrier.describe()  # hung up by the new guard


def test_guard_reconnects_after_asterisk_restart(scene: Scene, lab: AsteriskLab) -> None:
    guard = scene.guard()
    scene.consent(guard)
    lab.restart()
    guard.wait_for_log("ARI connected", timeout=30, after=len(guard.log()) - 1)
    deadline = time.monotonic() + 30
    while guard.log().count("ARI connected") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guard.log().count("ARI connected") >= 2
    uas = scene.uas()
    assert scene.call().ok
    assert uas.wait(30).ok


def test_sigterm_drains_and_leaves_the_bridged_call_up(scene: Scene) -> None:
    first = scene.guard()
    scene.consent(first)
    uas = scene.uas(hold_ms="30000")
    outcome: list[SippResult] = []
    caller = threading.Thread(target=lambda: outcome.append(scene.call(hold_ms="6000")))
    caller.start()
    first.wait_audit("bridged")
    started = time.monotonic()
    assert first.stop() == 0  # SIGTERM
    assert time.monotonic() - started < 5
    assert "stopping: no new calls" in first.log()
    assert scene.lab.channel_count() == 2  # both legs still up, still bridged
    second = scene.guard()
    second.wait_for_log("adopted bridged call", timeout=10)
    caller.join(30)
    assert outcome and outcome[0].ok, outcome and outcome[0].describe()
    assert uas.wait(30).received("BYE")


def test_rejection_announcement_is_early_media_then_the_failure(scene: Scene) -> None:
    announcement = {"reject_announcement": "tone:950/330,1400/330,1800/330", "reject_announcement_max_s": 2}
    guard = scene.guard(calls=announcement)
    uas = scene.uas()
    started = time.monotonic()
    result = scene.reject(403, caller="0612345670")
    assert 1.5 < time.monotonic() - started < 10  # the tone played its 2 s, then the failure came
    assert result.ok, result.describe()
    assert result.received(183), result.describe()  # the announcement went out as early media
    assert not result.received(200) or result.final_status() == 403
    assert_never_reached_carrier(uas)
    assert codes(guard.wait_audit("decision")[0]) == {"CALLER_NOT_NPV"}
