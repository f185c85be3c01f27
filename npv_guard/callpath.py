"""The call-path layer every entry point shares: decide, record a refusal or a consent, and do the
side effects of each (metrics, log line, audit line) once.

Adapters (ARI, AGI, SMS, the HTTP API, the CLI) translate their protocol into a request for this
layer and its answer back into protocol actions; none of them times a decision, counts it or
writes its audit line itself. `mode` names the entry point in the metrics and the audit trail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from npv_guard.audit import AuditLog
from npv_guard.core.decide import Verdict, place_consumer
from npv_guard.core.model import Basis, CallRequest, ConsentEvent, RefusalSource, Slot, professional_problem
from npv_guard.logs import failure_text
from npv_guard.observability import Metrics
from npv_guard.service import Guard, InputError, RefusalOutcome

# Each entry point keeps its own logger and wording (operators grep for them); a mode without a
# line here logs nothing for that event.
_DECISION_LINES: dict[str, Callable[[Decision], None]] = {}
_LOST_LINES = {
    "ari": "call %s: REFUSAL NOT RECORDED (%s)",
    "agi": "AGI refusal on %s: REFUSAL NOT RECORDED (%s)",
    "sms": "STOP %s NOT RECORDED (%s)",
}
# The modes whose decision lines carry the decision's latency.
_TIMED_AUDIT = frozenset({"ari", "agi", "api"})


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    mode: str
    call_id: str
    seconds: float
    labels_dropped: tuple[str, ...] = ()
    # The verdict's `as_dict`, computed once for the audit line and the API's answer.
    data: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def latency_ms(self) -> float:
        return round(self.seconds * 1000, 3)


@dataclass(frozen=True, slots=True)
class Signalled:
    """One refusal signalled on a call path: recorded (`outcome`) or lost (`error`)."""

    outcome: RefusalOutcome | None
    error: BaseException | None = None
    first: bool = False  # a STOP: consent was in force until it (acknowledge it)

    @property
    def recorded(self) -> bool:
        return self.outcome is not None


class CallPath:
    """`metrics`: None where there is nothing to expose them (the CLI). `audit`: None only for an
    entry point that writes nothing (a CLI query); any audit line then is a programming error."""

    def __init__(self, guard: Guard, audit: AuditLog | None, metrics: Metrics | None = None) -> None:
        self.guard = guard
        self._audit = audit
        self.metrics = metrics

    @property
    def audit(self) -> AuditLog:
        assert self._audit is not None, "an audit line from a path built without an audit log"
        return self._audit

    # ------------------------------------------------------------------ decisions

    async def decide_call(
        self,
        request: CallRequest,
        *,
        mode: str,
        call_id: str,
        record: bool,
        offline: bool = False,
        started: float | None = None,
        labels_dropped: list[str] | tuple[str, ...] = (),
        audit_fields: dict[str, Any] | None = None,
        audited: bool = True,
    ) -> Decision:
        """Decide on a call (with `record`, an allowed call is counted as an attempt), count the
        decision, log it and audit it (`audit_fields`: the entry point's own fields of the line).
        `started`: the perf_counter instant the entry point took the call, when its own
        translation is part of the latency. Not `audited`: the entry point calls `audit_decision`
        itself, once it knows the rest of the line (or not at all: a CLI query is not audited)."""
        started = time.perf_counter() if started is None else started
        verdict = await self.guard.check(request, record=record, offline=offline, call_id=call_id)
        decision = self.decided(verdict, mode=mode, call_id=call_id, started=started, labels_dropped=labels_dropped)
        if audited:
            self.audit_decision(decision, **(audit_fields or {}))
        return decision

    def decided(
        self,
        verdict: Verdict,
        *,
        mode: str,
        call_id: str,
        started: float,
        labels_dropped: list[str] | tuple[str, ...] = (),
    ) -> Decision:
        """Count and log a decision. An entry point that decides through `decide_call` never calls
        this; one that reached a verdict itself (an SMS refused on its body alone) does, then
        `audit_decision` once it knows the rest of the line (relayed or not)."""
        seconds = time.perf_counter() - started
        decision = Decision(verdict, mode, call_id, seconds, tuple(labels_dropped), verdict.as_dict())
        if self.metrics is not None:
            self.metrics.decision(mode, verdict, decision.seconds)
        line = _DECISION_LINES.get(mode)
        if line is not None:
            line(decision)
        return decision

    def audit_decision(self, decision: Decision, **extra: Any) -> None:
        if decision.mode in _TIMED_AUDIT:
            extra["latency_ms"] = decision.latency_ms
        if decision.labels_dropped:
            extra["labels_dropped"] = list(decision.labels_dropped)
        verdict = decision.verdict
        self.audit.decision(
            verdict,
            call_id=decision.call_id,
            consumer_ref=self.guard.consumer_ref(verdict.prepared.consumer),
            mode=decision.mode,
            data=decision.data,
            **extra,
        )

    # ------------------------------------------------------------------ refusals

    async def record_refusal(
        self,
        *,
        mode: str,
        source: RefusalSource,
        professional: str,
        callee: str,
        at: datetime,
        call_id: str,
        lost_on: tuple[type[Exception], ...] = (Exception,),
        describe: Callable[[Exception], str] = failure_text,
        **audit_extra: Any,
    ) -> Signalled:
        """Record a refusal (journaled when Redis cannot take it). A failure among `lost_on` is
        counted, logged and audited as lost (`describe` says why, in the audit line) and returned;
        any other propagates untouched (the entry point answers it as an input error)."""
        try:
            outcome = await self.guard.record_refusal(professional, callee, at, source, call_id)
        except lost_on as error:
            # Input the guard refused names no consumer: it may not be one.
            consumer_ref = None if isinstance(error, InputError) else self._consumer_ref(callee)
            self._lost(mode, source.value, call_id, professional, consumer_ref, error, describe(error), **audit_extra)
            return Signalled(None, error)
        self._recorded(mode, source.value, call_id, professional, self._consumer_ref(callee), outcome, **audit_extra)
        return Signalled(outcome)

    async def record_stop(
        self, *, mode: str, professional: str, consumer: str, at: datetime, call_id: str
    ) -> Signalled:
        """A STOP reply: a refusal by SMS that withdraws consent (`Guard.record_stop`)."""
        source = RefusalSource.SMS.value
        try:
            stop = await self.guard.record_stop(professional, consumer, at, call_id)
        except Exception as error:
            self._lost(
                mode, source, call_id, professional, self.guard.consumer_ref(consumer), error, failure_text(error)
            )
            return Signalled(None, error)
        self._recorded(mode, source, call_id, professional, self.guard.consumer_ref(consumer), stop.refusal)
        return Signalled(stop.refusal, first=stop.first)

    def refusal_lost(
        self,
        *,
        mode: str,
        source: str,
        call_id: str,
        professional: str | None,
        error: str,
        **audit_extra: Any,
    ) -> None:
        """A refusal the entry point could not even ask to record (no pair to record it for): the
        audit line says why, and it counts as lost: whoever refused is not blocked (an AGI refusal
        on a call `check` never saw is one the call centre lost). The entry point logs it."""
        self._count_lost(mode, source, call_id, professional, None, error, **audit_extra)

    def _lost(
        self,
        mode: str,
        source: str,
        call_id: str,
        professional: str,
        consumer_ref: str | None,
        error: Exception,
        why: str,
        **audit_extra: Any,
    ) -> None:
        if mode in _LOST_LINES:
            logging.getLogger(f"npv_guard.{mode}").error(_LOST_LINES[mode], call_id, why)
        self._count_lost(mode, source, call_id, professional, consumer_ref, why, **audit_extra)

    def _count_lost(
        self,
        mode: str,
        source: str,
        call_id: str,
        professional: str | None,
        consumer_ref: str | None,
        why: str,
        **audit_extra: Any,
    ) -> None:
        if self.metrics is not None:
            self.metrics.refusal(mode, source, "lost")
        self.audit.refusal(
            call_id=call_id, mode=mode, source=source, professional=_shown(professional), consumer_ref=consumer_ref,
            error=why, **audit_extra,
        )  # fmt: skip

    def _recorded(
        self,
        mode: str,
        source: str,
        call_id: str,
        professional: str,
        consumer_ref: str | None,
        outcome: RefusalOutcome,
        **audit_extra: Any,
    ) -> None:
        if self.metrics is not None:
            self.metrics.refusal(mode, source, "journaled" if outcome.journaled else "recorded")
        self.audit.refusal(
            call_id=call_id, mode=mode, source=source, professional=professional, consumer_ref=consumer_ref,
            outcome=outcome, **audit_extra,
        )  # fmt: skip

    # ------------------------------------------------------------------ consents

    async def grant_consent(
        self,
        *,
        mode: str,
        professional: str,
        callee: str,
        at: datetime,
        basis: Basis,
        proof: str,
        outside_hours: bool = False,
        until: datetime | None = None,
        slot: Slot | None = None,
    ) -> ConsentEvent:
        """Record a grant and audit it. ValueError (not an InputError) when its facts clash."""
        event = await self.guard.grant_consent(
            professional, callee, at, basis, proof, outside_hours, until=until, slot=slot
        )
        self._consent(mode, professional, callee, event)
        return event

    async def withdraw_consent(
        self, *, mode: str, professional: str, callee: str, at: datetime, proof: str = ""
    ) -> ConsentEvent:
        event = await self.guard.withdraw_consent(professional, callee, at, proof)
        self._consent(mode, professional, callee, event)
        return event

    def _consent(self, mode: str, professional: str, callee: str, event: ConsentEvent) -> None:
        # The proof itself stays in Redis: the line carries its hash (AuditLog.consent).
        self.audit.consent(mode=mode, professional=professional, consumer_ref=self._consumer_ref(callee), event=event)

    def _consumer_ref(self, callee: str) -> str | None:
        try:
            return self.guard.consumer_ref(place_consumer(callee)[0])
        except ValueError:
            return None


def _shown(professional: str | None) -> str | None:
    """Only a well-formed id goes to an audit line: a channel variable may have been set by anyone."""
    return professional if professional and professional_problem(professional) is None else None


def _ari_decision_line(decision: Decision) -> None:
    verdict = decision.verdict
    logging.getLogger("npv_guard.ari").info(
        "decision %s %s in %.1f ms", verdict.verdict.upper(), ",".join(verdict.codes) or "-", decision.latency_ms
    )


def _sms_decision_line(decision: Decision) -> None:
    verdict = decision.verdict
    logging.getLogger("npv_guard.sms").info(
        "sms %s %s%s in %.1f ms",
        verdict.verdict.upper(),
        ",".join(verdict.codes) or "-",
        "" if verdict.allowed else " (dropped)",
        decision.seconds * 1000,
    )


_DECISION_LINES.update(ari=_ari_decision_line, sms=_sms_decision_line)
