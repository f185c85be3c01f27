"""The JSON shapes the guard answers with, shared by `npv-guard ... --json` and the HTTP API.

One function per answer, so the command line and the API can never drift apart.
"""

from __future__ import annotations

from typing import Any

from npv_guard.core.calendar import utc_iso
from npv_guard.core.decide import Verdict
from npv_guard.core.model import ConsentEvent
from npv_guard.service import RefusalOutcome
from npv_guard.store import PairHistory


def check_payload(verdict: Verdict, *, record: bool, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """`check --json` and `POST /v1/check`: the verdict, plus `recorded` when asked to record.
    `data`: the verdict's `as_dict()` already computed (copied, not changed)."""
    payload = verdict.as_dict() if data is None else dict(data)
    if record:
        # Only an allowed call is counted as an attempt.
        payload["recorded"] = verdict.allowed
    return payload


def refusal_payload(professional: str, outcome: RefusalOutcome) -> dict[str, Any]:
    """`refusal record --json`; the API adds `journaled`."""
    return {
        "recorded": True,
        "professional": professional,
        "at": utc_iso(outcome.refusal.at),
        "source": outcome.refusal.source.value,
        "blocked_until": utc_iso(outcome.blocked_until),
        "withdraws_consent": outcome.withdraws_consent,
    }


def consent_payload(professional: str, event: ConsentEvent) -> dict[str, Any]:
    """`consent grant|withdraw --json` and `POST|DELETE /v1/consents`."""
    return {
        "recorded": True,
        "professional": professional,
        "granted": event.granted,
        "basis": event.basis.value if event.basis else None,
        "at": utc_iso(event.at),
        "outside_hours": event.outside_hours,
        **_grant_terms(event),
    }


def _grant_terms(event: ConsentEvent) -> dict[str, Any]:
    """A contract's end and an agreed callback slot, null when the grant has none."""
    slot = event.slot
    return {
        "until": utc_iso(event.until) if event.until else None,
        "slot": {"start": utc_iso(slot.start), "end": utc_iso(slot.end)} if slot else None,
    }


def history_payload(professional: str, history: PairHistory) -> dict[str, Any]:
    """`history --json` and `GET /v1/history`: what is stored for the pair, oldest first."""
    state = history.state
    return {
        "professional": professional,
        "attempts": [
            {"at": utc_iso(a.at), "call_id": a.call_id, "campaign": a.campaign or None, "lead": a.lead or None}
            for a in sorted(state.attempts, key=lambda a: a.at)
        ],
        "refusals": [
            {"at": utc_iso(r.at), "source": r.source.value, "call_id": r.call_id}
            for r in sorted(state.refusals, key=lambda r: r.at)
        ],
        "consents": [
            {
                "at": utc_iso(c.at),
                "granted": c.granted,
                "basis": c.basis.value if c.basis else None,
                "proof": c.proof,
                "outside_hours": c.outside_hours,
                **_grant_terms(c),
            }
            for c in sorted(state.consents, key=lambda c: c.at)
        ],
        "messages": [
            {"at": utc_iso(m.at), "message_id": m.message_id} for m in sorted(history.messages, key=lambda m: m.at)
        ],
        "ttl_seconds": history.ttl_seconds,
    }
