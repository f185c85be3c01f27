"""Small builders for the pure rule tests."""

from __future__ import annotations

from datetime import datetime

from npv_guard.clock import parse_instant
from npv_guard.core.decide import Verdict, decide, prepare
from npv_guard.core.model import CallRequest, PairState, Policy, StateUnavailable

NPV = "+33162000001"
MOBILE = "+33612345678"
# A Tuesday within the hours, after opt-in.
TUESDAY_MORNING = "2026-12-01T10:30:00+01:00"


def at(text: str) -> datetime:
    return parse_instant(text)


def verdict(
    when: str = TUESDAY_MORNING,
    *,
    caller: str | None = NPV,
    callee: str | None = MOBILE,
    state: PairState | StateUnavailable | None = None,
    policy: Policy | None = None,
    **facts: object,
) -> Verdict:
    policy = policy or Policy()
    request = CallRequest(caller=caller, callee=callee, at=at(when), **facts)  # type: ignore[arg-type]
    return decide(prepare(request, policy), state, policy)


def codes(result: Verdict) -> set[str]:
    return set(result.codes)
