"""The ARI call service on npv_guard.testing's recording port and memory store (fast unit tests).

The real-Asterisk behaviour is proven in tests/e2e; these pin the event logic: routing, the DTMF
code matcher, relays and teardown.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from npv_guard.ari.calls import CallService
from npv_guard.audit import AuditLog
from npv_guard.clock import parse_instant
from npv_guard.config import AriSettings, CallsSettings
from npv_guard.core.model import Basis, ConsentEvent, Policy
from npv_guard.service import Guard
from npv_guard.testing import MemoryStore, RecordingPort

NOW = parse_instant("2026-12-01T10:30:00")
PROFESSIONAL, CONSUMER = "+33162000001", "+33612345678"


async def make(calls: CallsSettings | None = None) -> tuple[CallService, RecordingPort, MemoryStore, io.StringIO]:
    port, store, out = RecordingPort(), MemoryStore(), io.StringIO()
    # Without a directory the caller number stands for the professional; the consumers consented
    # (the rejected calls' pair too, so that they are rejected for the caller alone).
    consent = ConsentEvent(parse_instant("2026-09-01T12:00"), True, Basis.CONSENT, "form")
    for professional, consumer in ((PROFESSIONAL, CONSUMER), ("+33612345678", "+33612345679")):
        await store.record_consent(professional, consumer, consent)
    guard = Guard(Policy(), store)
    service = CallService(port, guard, AriSettings(), calls or CallsSettings(), AuditLog(out), lambda: NOW)
    return service, port, store, out


def stasis_start(channel: str, caller: str, exten: str, *args: str) -> dict[str, Any]:
    return {
        "type": "StasisStart",
        "args": list(args),
        "channel": {"id": channel, "caller": {"number": caller}, "dialplan": {"exten": exten}, "state": "Ring"},
    }


def event(kind: str, channel_id: str, state: str | None = None, **fields: Any) -> dict[str, Any]:
    channel = {"id": channel_id, **({"state": state} if state else {})}
    return {"type": kind, "channel": channel, **fields}


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_rejection_hangs_up_with_the_cause_and_never_originates() -> None:
    service, port, _, out = await make()
    service.dispatch(stasis_start("d1", "0612345678", "0612345679", "outbound", "", "", ""))
    await settle()
    assert ("set_var", "d1", "NPV_GUARD_VERDICT", "REJECT") in port.ops
    assert ("set_var", "d1", "NPV_GUARD_REASONS", "CALLER_NOT_NPV") in port.ops
    assert ("hangup", "d1", 21) in port.ops
    assert "originate" not in port.names()
    assert json.loads(out.getvalue().splitlines()[0])["verdict"] == "reject"


async def test_allowed_call_rings_answers_bridges_and_tears_down() -> None:
    service, port, store, _ = await make()
    service.dispatch(stasis_start("d1", "0162000001", "0612345678", "outbound", "", "", ""))
    await settle()
    assert [(c[0], c[1], c[4]) for c in port.calls("originate")] == [
        ("PJSIP/+33612345678@carrier", "d1-carrier", "+33162000001")
    ]
    assert len(store.recorded_attempts()) == 1
    service.dispatch(event("ChannelStateChange", "d1-carrier", state="Ringing"))
    service.dispatch(stasis_start("d1-carrier", "", "", "carrier", "d1"))
    await settle()
    assert ("ring", "d1") in port.ops
    assert ("add_to_bridge", "npv-d1", ("d1", "d1-carrier")) in port.ops
    service.dispatch(event("StasisEnd", "d1"))
    await settle()
    assert ("hangup", "d1-carrier", None) in port.ops
    assert ("destroy_bridge", "npv-d1") in port.ops
    assert service.active_calls() == 0


async def test_the_dialer_is_answered_when_the_carrier_is_up_and_bridged_once_it_is_in_the_app() -> None:
    service, port, _, out = await make()
    service.dispatch(stasis_start("d1", "0162000001", "0612345678", "outbound", "", "", ""))
    await settle()
    service.dispatch(event("ChannelStateChange", "d1", state="Ringing"))  # the dialer's own: not relayed
    service.dispatch(event("ChannelStateChange", "d1-carrier", state="Up"))
    await settle()
    assert ("ring", "d1") not in port.ops
    assert ("answer", "d1") in port.ops and ("create_bridge", "npv-d1") in port.ops
    assert "add_to_bridge" not in port.names()  # the carrier is not in the app yet
    assert '"bridged"' not in out.getvalue()
    service.dispatch(event("ChannelStateChange", "d1-carrier", state="Up"))  # again: nothing twice
    service.dispatch(stasis_start("d1-carrier", "", "", "carrier", "d1"))
    service.dispatch(stasis_start("d1-carrier", "", "", "carrier", "d1"))
    await settle()
    assert port.names().count("answer") == 1 and port.names().count("create_bridge") == 1
    assert port.calls("add_to_bridge") == [("npv-d1", ("d1", "d1-carrier"))]
    assert out.getvalue().count('"bridged"') == 1
    service.dispatch(event("ChannelDestroyed", "d1-carrier", cause=17))  # answered: normal clearing
    await settle()
    assert ("hangup", "d1", 16) in port.ops and ("destroy_bridge", "npv-d1") in port.ops


async def test_busy_carrier_is_relayed_with_its_cause() -> None:
    service, port, _, _ = await make()
    service.dispatch(stasis_start("d1", "0162000001", "0612345678", "outbound", "", "", ""))
    await settle()
    service.dispatch(event("ChannelDestroyed", "d1-carrier", cause=17))
    await settle()
    assert ("hangup", "d1", 17) in port.ops


async def _bridged(service: CallService) -> None:
    service.dispatch(stasis_start("d1", "0162000001", "0612345678", "outbound", "", "", ""))
    await settle()
    service.dispatch(stasis_start("d1-carrier", "", "", "carrier", "d1"))
    await settle()


async def test_agent_code_records_one_refusal_and_acknowledges() -> None:
    service, port, store, out = await make()
    await _bridged(service)
    for digit in "1*9":
        service.dispatch(event("ChannelDtmfReceived", "d1", digit=digit))
    await settle()
    assert len(store.recorded_refusals()) == 1 and store.recorded_refusals()[0].source.value == "agent"
    assert any(op[0] == "play" and op[1] == "d1" for op in port.ops)
    for digit in "*9":  # pressed again: acknowledged, not recorded twice
        service.dispatch(event("ChannelDtmfReceived", "d1", digit=digit))
    await settle()
    assert len(store.recorded_refusals()) == 1
    refusal = next(json.loads(line) for line in out.getvalue().splitlines() if '"refusal"' in line)
    assert refusal["recorded"] is True and refusal["consumer"] == store.digest(CONSUMER)


async def test_agent_code_on_the_consumer_leg_is_not_a_refusal() -> None:
    service, _, store, _ = await make()
    await _bridged(service)
    for digit in "*9":
        service.dispatch(event("ChannelDtmfReceived", "d1-carrier", digit=digit))
    await settle()
    assert (
        store.recorded_refusals() and store.recorded_refusals()[0].source.value == "consumer"
    )  # "9" is the consumer key


async def test_consumer_key_switched_off() -> None:
    service, _, store, _ = await make(CallsSettings(consumer_refusal_key=""))
    await _bridged(service)
    service.dispatch(event("ChannelDtmfReceived", "d1-carrier", digit="9"))
    await settle()
    assert store.recorded_refusals() == []


async def test_unknown_verb_is_rejected() -> None:
    service, port, _, _ = await make()
    service.dispatch(stasis_start("x1", "0162000001", "0612345678", "mystery"))
    await settle()
    assert ("hangup", "x1", 21) in port.ops


async def test_drain_waits_for_decisions_and_close_ends_actors() -> None:
    service, _, _, _ = await make()
    await _bridged(service)
    assert service.active_calls() == 1
    await service.wait_idle_decisions(deadline=0)  # nothing undecided: returns at once
    await service.close()


async def test_announcement_then_hangup_with_the_cause() -> None:
    service, port, _, _ = await make(CallsSettings(reject_announcement="tone:!950/330,!1400/330,!1800/330"))
    service.dispatch(stasis_start("d1", "0612345678", "0612345679", "outbound", "", "", ""))
    await settle()
    assert ("play", "d1", "tone:!950/330,!1400/330,!1800/330", "d1-announcement") in port.ops
    assert ("hangup", "d1", 21) not in port.ops  # not before the announcement ends
    service.dispatch({"type": "PlaybackFinished", "playback": {"id": "d1-announcement", "target_uri": "channel:d1"}})
    await settle()
    assert ("hangup", "d1", 21) in port.ops
    assert "answer" not in port.names() and "originate" not in port.names()


async def test_campaign_and_lead_from_the_stasis_arguments_reach_channel_cdr_attempt_and_audit() -> None:
    service, port, store, out = await make()
    service.dispatch(stasis_start("d1", "0162000001", "0612345678", "outbound", "", "", "", "spring-26", "L-1"))
    await settle()
    for name, value in (("NPV_GUARD_CAMPAIGN", "spring-26"), ("CDR(npv_campaign)", "spring-26"),
                        ("NPV_GUARD_LEAD", "L-1"), ("CDR(npv_lead)", "L-1")):  # fmt: skip
        assert ("set_var", "d1", name, value) in port.ops
    assert [(a.campaign, a.lead) for a in store.recorded_attempts()] == [("spring-26", "L-1")]
    decision = json.loads(out.getvalue().splitlines()[0])
    assert (decision["campaign"], decision["lead"]) == ("spring-26", "L-1") and "labels_dropped" not in decision


async def test_a_malformed_label_is_dropped_and_the_call_still_decided() -> None:
    service, port, store, out = await make()
    service.dispatch(stasis_start("d1", "0162000001", "0612345678", "outbound", "", "", "", "c" * 65, "L-1"))
    await settle()
    assert not [op for op in port.ops if op[0] == "set_var" and "campaign" in op[2].lower()]
    assert ("set_var", "d1", "NPV_GUARD_VERDICT", "ALLOW") in port.ops
    assert [(a.campaign, a.lead) for a in store.recorded_attempts()] == [("", "L-1")]
    decision = json.loads(out.getvalue().splitlines()[0])
    assert decision["campaign"] is None and decision["labels_dropped"] == ["campaign"]


async def test_old_stasis_arguments_without_labels_still_work() -> None:
    service, port, _, out = await make()
    service.dispatch(stasis_start("d1", "0162000001", "0612345678", "outbound", "", "", ""))
    await settle()
    assert ("set_var", "d1", "NPV_GUARD_VERDICT", "ALLOW") in port.ops
    assert json.loads(out.getvalue().splitlines()[0])["campaign"] is None
