"""SMS through the platform: real SIP MESSAGEs through the lab Asterisk, decided by `npv-guard run`.

sipp plays the SMS platform (127.0.0.4 -> 5060), the carrier bringing consumers' replies
(127.0.0.5 -> 5060) and, on this test's carrier port, the consumer's side receiving messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CONSUMER, NPV, TUESDAY, Scene, codes
from tests.support.guard import GuardProcess
from tests.support.lab import AsteriskLab, SippProcess, SippResult, free_udp_port, run_sipp
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.e2e

PLATFORM_IP = "127.0.0.4"
CARRIER_IN_IP = "127.0.0.5"
SENDER = "0937000001"
TEXT = "Bonjour Élodie, votre devis « été » est prêt 😀 — répondez STOP pour ne plus recevoir de SMS"


class SmsScene:
    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.guards: list[GuardProcess] = []

    def guard(self, now: str | None = TUESDAY, **sms: Any) -> GuardProcess:
        port = self.scene.carrier_port
        options = {"enabled": True, "carrier": f"pjsip:carrier/sip:{{number}}@127.0.0.1:{port}", **sms}
        professional = options.pop("professional", None)
        return self.scene.guard(now=now, sms=options, professional=professional)

    def receiver(self, port: int | None = None, count: int = 5) -> SippProcess:
        return run_sipp(
            "uas_message.xml", local_port=port or self.scene.carrier_port, calls=count, timeout_s=30, background=True
        )

    def send(
        self, to: str = CONSUMER, body: str = TEXT, sender: str = SENDER, expect: int = 202, **more: str
    ) -> SippResult:
        """The platform sends one SMS."""
        variables = {"sender": sender, "body": body, "expect_code": str(expect), **more}
        return run_sipp("uac_message.xml", local_ip=PLATFORM_IP, service=to, variables=variables, timeout_s=15)

    def reply(self, body: str, consumer: str = "+33612345678", to: str = SENDER, expect: int = 202) -> SippResult:
        """The carrier brings one reply of the consumer to the platform number."""
        variables = {"sender": consumer, "body": body, "expect_code": str(expect)}
        return run_sipp("uac_message.xml", local_ip=CARRIER_IN_IP, service=to, variables=variables, timeout_s=15)


@pytest.fixture
def sms(scene: Scene) -> Iterator[SmsScene]:
    yield SmsScene(scene)


def bodies(received: SippResult) -> list[str]:
    return [message.body for message in received.received("MESSAGE")]


def wait_decisions(guard: GuardProcess, count: int) -> list[dict[str, Any]]:
    return [d for d in guard.wait_audit("decision", count) if d["mode"] == "sms"]


# --- allowed: relayed with its body intact ----------------------------------------------------


def test_allowed_message_reaches_the_carrier_with_its_body_intact(sms: SmsScene) -> None:
    guard = sms.guard()
    sms.scene.consent(guard)
    carrier = sms.receiver()
    sent = sms.send()
    assert sent.ok, sent.describe()
    decision = wait_decisions(guard, 1)[0]
    assert decision["verdict"] == "allow" and decision["relayed"] is True, decision
    received = carrier.stop()
    assert bodies(received) == [TEXT], received.describe()
    message = received.received("MESSAGE")[0]
    assert "+33612345678" in message.first_line
    assert "+33937000001" in (message.header("From") or "")
    assert "612345678" not in json.dumps(guard.audit())  # only the keyed hash is logged
    history = json.loads(guard.cli("history", "--professional", "lab", "--callee", CONSUMER, "--json").stdout)
    assert len(history["messages"]) == 1 and history["attempts"] == []


# --- rejected: dropped with a reason, never reaches the carrier -----------------------------------


@pytest.mark.parametrize(
    ("case", "to", "sender", "now", "consent", "reason"),
    [
        ("voice NPV as sender", CONSUMER, NPV, TUESDAY, True, "SENDER_NOT_PLATFORM_NUMBER"),
        ("mobile as sender", CONSUMER, "0611111111", TUESDAY, True, "SENDER_NOT_PLATFORM_NUMBER"),
        ("platform number of nobody", CONSUMER, "0938000009", TUESDAY, True, "CALLER_NOT_ASSIGNED"),
        ("no consent on record", "0612345679", SENDER, TUESDAY, False, "NO_CONSENT"),
        ("not a consumer number", "3615", SENDER, TUESDAY, True, "CONSUMER_INVALID"),
        ("late evening", CONSUMER, SENDER, "2026-12-01T20:30:00", True, "OUTSIDE_HOURS"),
        ("Sunday", CONSUMER, SENDER, "2026-12-06T11:00:00", True, "WEEKEND"),
        ("Christmas", CONSUMER, SENDER, "2026-12-25T11:00:00", True, "PUBLIC_HOLIDAY"),
    ],
)
def test_each_rejection_never_reaches_the_carrier(
    sms: SmsScene, case: str, to: str, sender: str, now: str, consent: bool, reason: str
) -> None:
    guard = sms.guard(now=now)
    if consent:
        sms.scene.consent(guard)
    carrier = sms.receiver()
    sent = sms.send(to=to, sender=sender)
    assert sent.ok, sent.describe()  # Asterisk answers 202 before the guard decides
    decision = wait_decisions(guard, 1)[0]
    assert decision["verdict"] == "reject" and reason in codes(decision), (case, decision)
    assert decision["relayed"] is False
    time.sleep(0.5)  # a relay, if any, would have reached the carrier by now
    assert bodies(carrier.stop()) == [], case
    _, metrics = guard.http("/metrics")
    assert 'npv_guard_decisions_total{mode="sms",verdict="reject"} 1.0' in metrics
    assert f'npv_guard_decision_reasons_total{{mode="sms",reason="{reason}"}} 1.0' in metrics


def test_a_banned_sector_declared_in_the_message_header_is_dropped(sms: SmsScene) -> None:
    """The platform names the campaign's sector in X-NPV-Sector: the SMS ban (2025-07-02) applies."""
    guard = sms.guard()
    sms.scene.consent(guard)
    carrier = sms.receiver()
    assert sms.send(sector="energy_renovation").ok
    assert sms.send(sector="press").ok
    first, second = wait_decisions(guard, 2)
    assert codes(first) == {"SECTOR_BANNED"} and first["relayed"] is False, first
    assert second["verdict"] == "allow" and second["relayed"] is True, second
    assert bodies(carrier.stop()) == [TEXT]


def test_sending_hours_are_configurable_per_professional(sms: SmsScene) -> None:
    guard = sms.guard(professional={"sms_windows": ["11:00-12:00"]})  # 10:30 on a Tuesday
    sms.scene.consent(guard)
    carrier = sms.receiver()
    assert sms.send().ok
    decision = wait_decisions(guard, 1)[0]
    assert codes(decision) == {"OUTSIDE_HOURS"} and decision["next_allowed_at"]["utc"] == "2026-12-01T10:00:00Z"
    assert bodies(carrier.stop()) == []


# --- STOP: consent withdrawn for SMS and voice, acknowledged once ------------------------------


def test_stop_reply_blocks_the_next_message_and_the_next_call(sms: SmsScene) -> None:
    guard = sms.guard()
    sms.scene.consent(guard)
    carrier = sms.receiver(count=10)
    assert sms.send(body="Offre du jour").ok
    wait_decisions(guard, 1)
    assert sms.reply("Stop SMS").ok
    refusal = guard.wait_audit("refusal")[0]
    assert refusal["source"] == "sms" and refusal["recorded"] and refusal["withdraws_consent"], refusal
    assert sms.reply("STOP").ok  # the same consumer again: recorded, not acknowledged again
    guard.wait_audit("refusal", 2)
    assert sms.send(body="Dernière chance !").ok
    second = wait_decisions(guard, 2)[1]
    assert second["verdict"] == "reject" and {"CONSENT_WITHDRAWN", "REFUSAL_BLOCK"} <= codes(second), second
    time.sleep(0.5)
    received = bodies(carrier.stop())
    assert received[0] == "Offre du jour"
    acknowledgements = [body for body in received if "STOP" in body]
    assert len(acknowledgements) == 1 and len(received) == 2, received
    # The next voice call of the same professional is refused too.
    call = sms.scene.reject(caller=NPV)
    assert call.ok, call.describe()
    voice = next(d for d in guard.audit("decision") if d["mode"] == "ari")
    assert {"CONSENT_WITHDRAWN", "REFUSAL_BLOCK"} <= codes(voice), voice
    history = json.loads(guard.cli("history", "--professional", "lab", "--callee", CONSUMER, "--json").stdout)
    assert [r["source"] for r in history["refusals"]] == ["sms", "sms"]


def test_replies_are_passed_on_to_the_platform(sms: SmsScene) -> None:
    platform_port = free_udp_port(PLATFORM_IP)
    guard = sms.guard(inbound_to=f"pjsip:platform/sip:{{to}}@{PLATFORM_IP}:{platform_port}", stop_ack="")
    sms.scene.consent(guard)
    platform = run_sipp(
        "uas_message.xml", local_ip=PLATFORM_IP, local_port=platform_port, calls=2, timeout_s=30, background=True
    )
    assert sms.reply("Oui, rappelez-moi demain ☎").ok
    assert sms.reply("arrêt").ok
    guard.wait_audit("refusal")
    received = platform.wait(15)
    assert bodies(received) == ["Oui, rappelez-moi demain ☎", "arrêt"], received.describe()
    assert "+33612345678" in (received.received("MESSAGE")[0].header("From") or "")


# --- malformed or unroutable MESSAGEs are refused cleanly ------------------------------------------


@pytest.mark.parametrize(
    ("case", "body", "ctype", "expect", "reason"),
    [
        ("no body", "", "text/plain", 202, "MESSAGE_INVALID"),
        ("body over Asterisk's 1023 bytes", "é" * 1500, "text/plain;charset=UTF-8", 202, "MESSAGE_INVALID"),
        ("not text/plain", '{"text": "hello"}', "application/json", 415, None),
    ],
)
def test_malformed_messages_are_refused_cleanly(
    sms: SmsScene, case: str, body: str, ctype: str, expect: int, reason: str | None
) -> None:
    guard = sms.guard()
    sms.scene.consent(guard)
    carrier = sms.receiver()
    refused = sms.send(body=body, ctype=ctype, expect=expect)
    assert refused.ok, (case, refused.describe())
    if reason:
        decision = wait_decisions(guard, 1)[0]
        assert reason in codes(decision) and decision["relayed"] is False, decision
    # The guard is still there: the next good message goes through, and only it.
    assert sms.send(body="après").ok
    wait_decisions(guard, 2 if reason else 1)
    time.sleep(0.5)
    assert bodies(carrier.stop()) == ["après"], case


def test_without_the_guard_no_message_reaches_the_carrier(sms: SmsScene, lab: AsteriskLab) -> None:
    guard = sms.guard()
    sms.scene.consent(guard)
    carrier = sms.receiver()
    guard.stop()  # a clean stop gives the messages back: Asterisk has no handler and says so
    refused = sms.send(expect=404)
    assert refused.ok, refused.describe()
    crashed = sms.guard()
    crashed.kill()  # after a crash the subscription outlives the guard: accepted, never relayed
    assert sms.send(expect=202).ok
    time.sleep(0.5)
    assert bodies(carrier.stop()) == []


def test_redis_down_drops_the_message(sms: SmsScene, redis_server: RedisServer) -> None:
    down = RedisServer()  # never started: nothing listens there
    guard = sms.scene.guard(
        redis_url=down.url,
        redis={"fail_open": True},  # not for SMS: an unknown consent is never assumed
        sms={"enabled": True, "carrier": f"pjsip:carrier/sip:{{number}}@127.0.0.1:{sms.scene.carrier_port}"},
    )
    carrier = sms.receiver()
    assert sms.send().ok
    decision = wait_decisions(guard, 1)[0]
    assert "STATE_UNAVAILABLE" in codes(decision), decision
    time.sleep(0.5)
    assert bodies(carrier.stop()) == []


def test_an_unknown_sms_endpoint_never_costs_the_calls(sms: SmsScene) -> None:
    guard = sms.guard(platform_endpoint="PJSIP/no-such-platform")
    guard.wait_for_log("SMS: could not subscribe")
    sms.scene.consent(guard)
    uas = sms.scene.uas()
    call = sms.scene.call(caller=NPV, hold_ms="500")
    assert call.ok, call.describe()
    assert uas.wait(30).ok
    assert sms.send(expect=404).ok  # no handler for the platform's messages: refused, not relayed
