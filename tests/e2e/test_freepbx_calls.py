"""The FreePBX drop-in on the real lab: dialplan/freepbx/npv-guard-freepbx.conf's predial hook in
a dialplan laid out as FreePBX 17 generates it on Asterisk 22 (from-internal -> outrt-1 ->
macro-dialout-trunk -> macro-dialout-trunk-predial-hook -> the trunk's Dial()), with a real
`npv-guard agi` server and real sipp calls from the lab's FreePBX extension (127.0.0.6).

A rejected call must hang up inside the hook: the lab traps every later step of the generated
route for a call without ALLOW (the trunk bypass, macro-outisbusy, an unmatched number) and its
hangup handler traps a Dial() after a REJECT; the carrier UAS must see no INVITE.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CONSUMER, NPV, TUESDAY, Scene, _world, assert_never_reached_carrier, codes
from tests.support import lab as lab_support
from tests.support.lab import DIALER_FREEPBX_IP, AsteriskLab, SippResult, free_udp_port, run_sipp
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.e2e


class FreePbxScene(Scene):
    """Calls from the FreePBX extension; the guard is the FastAGI server."""

    def __init__(self, lab: AsteriskLab, redis: RedisServer) -> None:
        super().__init__(lab, redis, "agi")

    def call(
        self, scenario: str = "uac.xml", callee: str = CONSUMER, caller: str = NPV, calls: int = 1, **variables: str
    ) -> SippResult:
        variables.setdefault("carrier_port", str(self.carrier_port))
        return run_sipp(
            scenario,
            local_ip=DIALER_FREEPBX_IP,
            service=callee,
            calls=calls,
            variables={"caller": caller, **variables},
            timeout_s=30,
        )


@pytest.fixture
def freepbx(lab: AsteriskLab, redis_server: RedisServer) -> Iterator[FreePbxScene]:
    world = FreePbxScene(lab, redis_server)
    yield from _world(world)


def _rejected(scene: Scene, code: int, **kwargs: Any) -> None:
    uas = scene.uas()
    result = scene.reject(code, **kwargs)
    assert result.ok, result.describe()
    assert_never_reached_carrier(uas)


def test_allowed_call_reaches_the_carrier_through_the_generated_route(freepbx: FreePbxScene) -> None:
    guard = freepbx.guard()
    freepbx.consent(guard)
    uas = freepbx.uas()
    result = freepbx.call(hold_ms="300")
    assert result.ok, result.describe()
    assert uas.wait(30).ok
    decision = guard.wait_audit("decision")[0]
    assert (decision["mode"], decision["verdict"]) == ("agi", "allow")
    # The hook ran where FreePBX calls it, and the trunk's own Dial() placed the call.
    log = freepbx.lab.log_text(freepbx.log_mark)
    step = r'Executing \[s@macro-dialout-trunk:\d+\] {}\("PJSIP/freepbx-phone-[^"]*", "{}'
    assert re.search(step.format("Gosub", r"macro-dialout-trunk-predial-hook,s,1\(\)"), log), log[-3000:]
    assert re.search(step.format("Dial", r"PJSIP/carrier/sip:0612345678@127\.0\.0\.1:"), log), log[-3000:]


@pytest.mark.parametrize(
    ("title", "caller", "now", "reasons"),
    [
        ("mobile caller ID", "0612345670", TUESDAY, {"CALLER_NOT_NPV"}),
        ("anonymous", "anonymous", TUESDAY, {"CALLER_MISSING"}),
        ("Saturday", NPV, "2026-12-05T10:30:00", {"WEEKEND"}),
    ],
)
def test_rejected_call_gets_the_guards_cause_and_never_reaches_the_trunk(
    freepbx: FreePbxScene, title: str, caller: str, now: str, reasons: set[str]
) -> None:
    guard = freepbx.guard(now=now)
    freepbx.consent(guard)
    _rejected(freepbx, 403, caller=caller)
    decision = guard.wait_audit("decision")[0]
    assert decision["verdict"] == "reject" and reasons <= codes(decision), title


def test_configured_cause_reaches_the_extension(freepbx: FreePbxScene) -> None:
    guard = freepbx.guard(now="2026-12-05T10:30:00", calls={"reject_causes": {"WEEKEND": 34}})
    freepbx.consent(guard)
    _rejected(freepbx, 503)  # cause 34 -> SIP 503


def test_guard_down_fails_closed(freepbx: FreePbxScene) -> None:
    guard = freepbx.guard()
    freepbx.consent(guard)
    guard.stop()
    _rejected(freepbx, 403)
    assert "guard unavailable (AGISTATUS=FAILURE)" in freepbx.lab.log_text(freepbx.log_mark)


def test_agent_refusal_code_during_a_freepbx_call_blocks_the_next_call(freepbx: FreePbxScene) -> None:
    guard = freepbx.guard()
    freepbx.consent(guard)
    uas = freepbx.uas(hold_ms="20000")
    uac = freepbx.call("uac_dtmf_info.xml", hold_ms="2500")
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    refusal = guard.wait_audit("refusal")[0]
    assert refusal["recorded"] is True and refusal["source"] == "agent" and refusal["mode"] == "agi"
    _rejected(freepbx, 403)
    assert codes(guard.wait_audit("decision", 2)[-1]) == {"REFUSAL_BLOCK", "CONSENT_WITHDRAWN"}


def test_consumer_key_is_armed_on_the_trunk_leg(freepbx: FreePbxScene) -> None:
    guard = freepbx.guard()
    freepbx.consent(guard)
    uas = freepbx.uas("uas_dtmf_info.xml", hold_ms="20000")
    uac = freepbx.call(hold_ms="2500")
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    assert guard.wait_audit("refusal")[0]["source"] == "consumer"


def _port_pair() -> int:
    """A fresh UDP port whose next port is free and fresh too (the route's second trunk)."""
    for _ in range(50):
        port = free_udp_port()
        fresh = port + 1 not in lab_support._HANDED_OUT
        if port < 65535 and fresh and lab_support._udp_port_free("127.0.0.1", port + 1):
            lab_support._HANDED_OUT.add(port + 1)
            return port
    raise lab_support.LabError("no free pair of UDP ports")


def test_failover_to_the_second_trunk_is_one_checked_call(freepbx: FreePbxScene) -> None:
    freepbx.carrier_port = _port_pair()
    guard = freepbx.guard()
    freepbx.consent(guard)
    first = freepbx.uas("uas_unavailable.xml")
    second = run_sipp("uas_answer.xml", local_port=freepbx.carrier_port + 1, timeout_s=30, background=True)
    result = freepbx.call(hold_ms="300")
    assert result.ok, result.describe()
    assert first.wait(30).ok and second.wait(30).ok
    # The hook ran before each trunk; the guard was asked once, so one attempt counts.
    log = freepbx.lab.log_text(freepbx.log_mark)
    assert len(re.findall(r"\] Gosub\(\"PJSIP/freepbx-phone-[^\"]*\", \"macro-dialout-trunk-predial-hook", log)) == 2
    guard.wait_audit("decision")
    assert [d["verdict"] for d in guard.audit("decision")] == ["allow"]
