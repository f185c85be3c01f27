"""The test doubles of npv_guard.testing themselves, and the ARI wiring they make testable:
the port holder, the supervisor's event routing, reconciliation on the call service."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from npv_guard.ari.app import AriSupervisor
from npv_guard.ari.calls import CallService
from npv_guard.audit import AuditLog
from npv_guard.clock import parse_instant
from npv_guard.config import AriSettings, CallsSettings, Settings
from npv_guard.core.model import Attempt, Basis, CallRequest, ConsentEvent, Policy
from npv_guard.core.reasons import ReasonCode
from npv_guard.service import Guard
from npv_guard.store import StoreUnavailable
from npv_guard.telephony import NoAri, PortHolder
from npv_guard.testing import MemoryStore, RecordingPort

NOW = parse_instant("2026-12-01T10:30:00")
NPV, CONSUMER = "+33162000001", "+33612345678"


# ---------------------------------------------------------------------- RecordingPort


async def test_the_recording_port_records_every_operation_in_order_with_its_arguments() -> None:
    port = RecordingPort()
    assert await port.set_var("d1", "NPV_GUARD_VERDICT", "ALLOW")
    assert await port.originate(
        "PJSIP/x@carrier",
        channel_id="d1-carrier",
        app="npv-guard",
        app_args="carrier,d1",
        caller_id=NPV,
        ring_timeout_s=60,
        originator="d1",
    )
    assert await port.hangup("d1", 21)
    assert await port.send_message("pjsip:carrier/sip:x", NPV, "hello")
    assert port.names() == ["set_var", "originate", "hangup", "send_message"]
    assert port.calls("originate") == [("PJSIP/x@carrier", "d1-carrier", "npv-guard", "carrier,d1", NPV, 60, "d1")]
    assert port.ops[2] == ("hangup", "d1", 21)


async def test_the_recording_port_answers_as_scripted() -> None:
    port = RecordingPort()
    await port.set_var("d1", "NPV_GUARD_PROFESSIONAL", "acme")
    assert await port.get_var("d1", "NPV_GUARD_PROFESSIONAL") == "acme"
    assert await port.get_var("d1", "NPV_GUARD_LEAD") is None
    port.channel_list = [{"id": "d1"}]
    assert await port.channels() == [{"id": "d1"}]
    port.fail("hangup", "channels")
    assert await port.hangup("d1") is False  # recorded all the same
    assert await port.channels() is None
    assert port.names()[-2:] == ["hangup", "channels"]


async def test_the_port_holder_forwards_to_the_current_port_and_fails_when_detached() -> None:
    holder = PortHolder()
    assert isinstance(holder.current, NoAri)
    assert await holder.hangup("d1") is False
    port = RecordingPort()
    holder.attach(port)
    assert await holder.play("d1", "tone:1", "p1") and await holder.subscribe("npv-guard", ["endpoint:a"])
    assert port.ops == [("play", "d1", "tone:1", "p1"), ("subscribe", "npv-guard", ("endpoint:a",))]
    holder.detach()
    assert await holder.answer("d1") is False and await holder.channels() is None
    assert len(port.ops) == 2  # the old connection's port is no longer used


# ---------------------------------------------------------------------- MemoryStore


async def test_the_memory_store_decides_through_the_guard() -> None:
    store = MemoryStore()
    guard = Guard(Policy(), store)
    request = CallRequest(NPV, CONSUMER, parse_instant("2026-11-16T11:00"))
    assert (await guard.check(request, record=True)).codes == (ReasonCode.NO_CONSENT,)
    await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONSENT, "form")
    assert (await guard.check(request, record=True, call_id="c1")).allowed
    assert store.recorded_attempts() == [Attempt(request.at, "c1")]
    assert store.pairs == 1
    store.clear()
    assert store.recorded_attempts() == [] and store.pairs == 0


async def test_an_unavailable_memory_store_fails_closed_and_is_counted() -> None:
    store = MemoryStore()
    errors: list[None] = []
    store.on_error = lambda: errors.append(None)
    store.unavailable = "connection refused"
    with pytest.raises(StoreUnavailable, match="connection refused"):
        await store.ping()
    guard = Guard(Policy(), store)
    verdict = await guard.check(CallRequest(NPV, CONSUMER, parse_instant("2026-11-16T11:00")), record=True)
    assert verdict.codes == (ReasonCode.STATE_UNAVAILABLE,) and not verdict.allowed
    assert len(errors) == 2


async def test_the_memory_store_keeps_milliseconds_as_redis_does() -> None:
    store = MemoryStore()
    at = parse_instant("2026-11-16T11:00:00.123456")
    snapshot = await store.snapshot(NPV, CONSUMER, at)
    assert await store.record_attempt(NPV, CONSUMER, Attempt(at), snapshot.version)
    (attempt,) = store.recorded_attempts()
    assert attempt.at.microsecond == 123000


async def test_previous_secrets_are_read_as_the_redis_store_reads_them() -> None:
    from npv_guard.store import ConsumerHasher  # noqa: PLC0415 - local to this test

    old = MemoryStore(ConsumerHasher("old-secret-0123456789"))
    event = ConsentEvent(parse_instant("2026-09-01T12:00"), True, Basis.CONSENT, "form")
    await old.record_consent(NPV, CONSUMER, event)
    rotated = MemoryStore(ConsumerHasher("new-secret-0123456789", ["old-secret-0123456789"]))
    rotated._pairs = old._pairs  # the same data, read with the rotated secrets
    snapshot = await rotated.snapshot(NPV, CONSUMER, parse_instant("2026-11-16T11:00"))
    assert snapshot.state.consents == (event,)
    assert snapshot.version == "0"  # the current secret's pair holds nothing yet


# ---------------------------------------------------------------------- the ARI wiring


def _service(port: Any) -> tuple[CallService, MemoryStore]:
    store = MemoryStore()
    service = CallService(
        port, Guard(Policy(), store), AriSettings(), CallsSettings(), AuditLog(io.StringIO()), lambda: NOW
    )
    return service, store


class Consumer:
    name = "TEST"

    def __init__(self) -> None:
        self.sources = ["endpoint:PJSIP/platform"]
        self.events: list[dict[str, Any]] = []

    def dispatch(self, event: dict[str, Any]) -> None:
        self.events.append(event)


async def test_the_supervisor_routes_consumer_events_and_channel_events() -> None:
    holder = PortHolder()
    service, _ = _service(holder)
    consumer = Consumer()
    supervisor = AriSupervisor(Settings(), service, holder, {"TextMessageReceived": consumer})
    message = {"type": "TextMessageReceived", "message": {}}
    supervisor._on_event(message)
    supervisor._on_event({"type": "StasisStart", "args": ["mystery"], "channel": {"id": "x1"}})
    await asyncio.sleep(0)
    assert consumer.events == [message]
    assert service.active_calls() == 0  # the unknown verb was hung up, not routed to the consumer


async def test_the_supervisor_subscribes_each_consumer_and_gives_the_subscriptions_back() -> None:
    holder, port = PortHolder(), RecordingPort()
    holder.attach(port)
    service, _ = _service(holder)
    supervisor = AriSupervisor(Settings(), service, holder, {"TextMessageReceived": Consumer()})
    port.subscriptions = ["PJSIP/platform", "PJSIP/gone"]
    await supervisor._drop_stale_subscriptions(holder)
    assert port.calls("unsubscribe") == [("npv-guard", ("endpoint:PJSIP/gone",))]
    assert await supervisor._subscribe(Consumer(), holder)
    await supervisor.release_messages()
    assert port.calls("subscribe") == [("npv-guard", ("endpoint:PJSIP/platform",))]
    assert port.calls("unsubscribe")[-1] == ("npv-guard", ("endpoint:PJSIP/platform",))


async def test_reconciliation_adopts_a_bridged_call_and_hangs_up_half_calls() -> None:
    port = RecordingPort()
    service, _ = _service(port)
    stasis = {"app_name": "Stasis", "app_data": "npv-guard,outbound,,,", "exten": "0612345678"}
    port.channel_list = [
        {"id": "d1", "caller": {"number": "0162000001"}, "dialplan": stasis, "state": "Up"},
        {"id": "d1-carrier", "dialplan": {}, "state": "Up"},
        {"id": "d2", "caller": {"number": "0162000001"}, "dialplan": stasis, "state": "Up"},
        {"id": "d3-carrier", "dialplan": {}, "state": "Ringing"},
    ]
    port.bridge_list = [{"id": "npv-d1", "channels": ["d1", "d1-carrier"]}, {"id": "npv-d2", "channels": ["d2"]}]
    port.variables[("d1", "NPV_GUARD_PROFESSIONAL")] = "acme"
    port.variables[("d1", "NPV_GUARD_CAMPAIGN")] = "spring-26"
    await service.reconcile()
    call = service.calls["d1"]
    assert service.calls["d1-carrier"] is call and call.answered and call.bridge == "npv-d1"
    assert (call.professional, call.campaign, call.consumer) == ("acme", "spring-26", CONSUMER)
    assert ("hangup", "d2", None) in port.ops and ("destroy_bridge", "npv-d2") in port.ops
    assert ("hangup", "d3-carrier", None) in port.ops  # its dialer is gone
    await service.close()
