"""Text messages in the ARI application: outbound SMS checked and relayed, STOP replies recorded.

Asterisk hands the app every MESSAGE from the endpoints it subscribed to, as a
`TextMessageReceived` event, and answers the sender 202 before the app decides: a dropped
message is therefore only visible in the audit log and the metrics, never in SIP.

- From the platform endpoint: an SMS to a consumer. The core decides (medium SMS: 0937-0939
  sender assigned to the professional, valid consumer, consent on record, sending hours, refusal
  block); only an allowed message is sent on to the carrier, with its body untouched.
- From the carrier endpoint: a consumer's reply. A STOP is recorded as a refusal by SMS (consent
  withdrawn for that professional, voice included), acknowledged once, and every reply is passed
  on to `sms.inbound_to` when set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from npv_guard.audit import AuditLog
from npv_guard.callpath import CallPath
from npv_guard.config import SmsSettings
from npv_guard.core.decide import message_verdict, place_consumer
from npv_guard.core.model import CallRequest, Medium
from npv_guard.core.numbering import NumberKind
from npv_guard.core.numbering import parse as parse_number
from npv_guard.logs import CALL_ID
from npv_guard.observability import Metrics
from npv_guard.service import Guard
from npv_guard.sms.text import address_number, declared_sector, is_stop
from npv_guard.telephony import AriPort, NoAri

log = logging.getLogger("npv_guard.sms")

MAX_IN_FLIGHT = 256  # messages decided at once; more wait (Asterisk already answered 202)


class SmsService:
    name = "SMS"  # in the ARI supervisor's log lines

    def __init__(
        self,
        port: AriPort,
        guard: Guard,
        settings: SmsSettings,
        audit: AuditLog,
        now: Callable[[], datetime],
        metrics: Metrics,
    ) -> None:
        self.port = port
        self.guard = guard
        self.settings = settings
        self.audit = audit
        self.now = now
        self.metrics = metrics
        self.path = CallPath(guard, audit, metrics)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        # One STOP at a time: a repeated STOP sees the first one's record (and is not acknowledged
        # again). STOPs are rare enough that a single lock costs nothing.
        self._stop_lock = asyncio.Lock()

    @property
    def sources(self) -> list[str]:
        """The ARI event sources to subscribe to (endpoint:TECH/RESOURCE)."""
        return [f"endpoint:{self.settings.platform_endpoint}", f"endpoint:{self.settings.carrier_endpoint}"]

    def dispatch(self, event: dict[str, Any]) -> None:
        """Take one TextMessageReceived event. Never blocks, never raises."""
        try:
            message = event.get("message")
            endpoint = event.get("endpoint") or {}
            if not isinstance(message, dict) or not isinstance(endpoint, dict):
                log.warning("text message event without a message: ignored")
                return
            source = f"{endpoint.get('technology', '')}/{endpoint.get('resource', '')}".lower()
            if source == self.settings.platform_endpoint.lower():
                handler = self._outbound
            elif source == self.settings.carrier_endpoint.lower():
                handler = self._inbound
            else:
                log.warning("text message from endpoint %s, neither platform nor carrier: dropped", source)
                self.metrics.messages.labels("unknown", "dropped").inc()
                return
            task = asyncio.get_running_loop().create_task(self._guarded(handler, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("could not route a text message event")

    async def _guarded(self, handler: Callable[[dict[str, Any], str], Any], message: dict[str, Any]) -> None:
        message_id = "sms-" + uuid.uuid4().hex[:16]
        CALL_ID.set(message_id)
        async with self._slots:
            try:
                await handler(message, message_id)
            except Exception:
                # Nothing was relayed by a handler that failed before its send: closed by default.
                log.exception("text message %s: error; not relayed", message_id)
                self.metrics.messages.labels("error", "dropped").inc()

    # ------------------------------------------------------------------ platform -> consumer

    async def _outbound(self, message: dict[str, Any], message_id: str) -> None:
        started = time.perf_counter()
        sender, consumer = address_number(message.get("from")), address_number(message.get("to"))
        body = message.get("body")
        # The sector, when the platform declares one (X-NPV-Sector), brings the SMS sector bans.
        sector = declared_sector(message.get("variables"))
        request = CallRequest(caller=sender, callee=consumer, at=self.now(), medium=Medium.SMS, sector=sector)
        # A text that cannot go whatever the pair's history (the core's message rules) is not worth a Redis read.
        verdict = message_verdict(request, body, self.settings.max_body_bytes, self.guard.policy)
        if verdict is None:
            verdict = await self.guard.check(request, record=False, call_id=message_id)
        decision = self.path.decided(verdict, mode="sms", call_id=message_id, started=started)
        prepared = verdict.prepared
        relayed = False
        if verdict.allowed and prepared.professional and prepared.consumer and isinstance(body, str):
            to = self.settings.carrier.replace("{number}", prepared.consumer)
            relayed = await self.port.send_message(to, prepared.caller.e164 or sender, body)
            if relayed:
                with contextlib.suppress(Exception):  # history only: the message is already gone
                    await self.guard.record_message(prepared.professional, prepared.consumer, request.at, message_id)
        outcome = "relayed" if relayed else ("send_failed" if verdict.allowed else "dropped")
        self.metrics.messages.labels("outbound", outcome).inc()
        if verdict.allowed and not relayed:
            log.error("sms allowed but ARI sendMessage failed: not relayed")
        self.path.audit_decision(
            decision,
            relayed=relayed,
            body_bytes=len(body.encode("utf-8", "surrogatepass")) if isinstance(body, str) else 0,
        )

    # ------------------------------------------------------------------ consumer -> platform

    async def _inbound(self, message: dict[str, Any], message_id: str) -> None:
        consumer_text, platform_text = address_number(message.get("from")), address_number(message.get("to"))
        body = message.get("body")
        if is_stop(body, self.settings.stop_words):
            await self._stop(consumer_text, platform_text, message_id)
        else:
            self.metrics.messages.labels("inbound", "reply").inc()
        if self.settings.inbound_to:
            to = self.settings.inbound_to.replace("{to}", platform_text or "unknown")
            text = body if isinstance(body, str) else ""
            passed = await self.port.send_message(to, consumer_text or "anonymous", text)
            if not passed:
                log.error("consumer reply %s could not be passed on to %s", message_id, self.settings.inbound_to)

    async def _stop(self, consumer_text: str, platform_text: str, message_id: str) -> None:
        platform = parse_number(platform_text)
        try:
            consumer: str | None = place_consumer(consumer_text)[0]
        except ValueError:
            consumer = None
        owner = (
            self.guard.policy.owner_of(platform.national)
            if platform.kind is NumberKind.PLATFORM and platform.national
            else None
        )
        if owner is None or consumer is None:
            # Without a professional and a French consumer there is no pair to block: say so loudly.
            log.error("STOP %s to %r from an unplaceable sender: NOT RECORDED", message_id, platform_text[:20])
            self.path.refusal_lost(
                mode="sms", source="sms", call_id=message_id, professional=owner.id if owner else None,
                error="STOP to a number of no known professional, or from an unplaceable number",
            )  # fmt: skip
            return
        async with self._stop_lock:
            # Read once the lock is held: a burst of STOPs waits here, and a STOP dated before
            # that wait could stray past rules.max_write_skew_s and be refused.
            stop = await self.path.record_stop(
                mode="sms", professional=owner.id, consumer=consumer, at=self.now(), call_id=message_id
            )
        if not stop.recorded:
            return
        self.metrics.messages.labels("inbound", "stop").inc()
        log.info("STOP %s recorded for professional %s (%s)", message_id, owner.id, "first" if stop.first else "repeat")
        if stop.first and self.settings.stop_ack:
            text = self.settings.stop_ack.replace("{name}", owner.name or owner.id)
            to = self.settings.carrier.replace("{number}", consumer)
            acknowledged = await self.port.send_message(to, platform.e164 or platform_text, text)
            self.metrics.messages.labels("outbound", "stop_ack" if acknowledged else "send_failed").inc()

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.port = NoAri()
