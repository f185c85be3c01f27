"""When a rejected call becomes legal: `next_allowed_at`.

Only for verdicts whose reasons all expire by themselves (hours, weekend, public holiday, the
frequency cap, the 60-day refusal block). Given the stored facts as they are at the call's instant
and no new attempt, it returns the earliest instant at which the same call would be allowed. A
consent that lapses before that instant makes the answer None: the re-decision there says
NO_CONSENT, which time does not lift. Offline (no stored state), only a rejection by the calendar
rules alone gets an answer, computed from those rules; the stateful ones stay not evaluated.

Each failing rule says the earliest instant it can stop failing; the latest of those is a lower
bound of the answer, so the search jumps there and decides again, until the call is allowed or a
reason that time cannot lift appears (a new regime, say).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from npv_guard.core import regimes
from npv_guard.core.calendar import Window, local_issues, local_midnight
from npv_guard.core.decide import (
    ATTEMPT_WINDOW_DAYS,
    MAX_ATTEMPTS,
    Prepared,
    Verdict,
    decide,
    prepare_at,
    refusal_block_end,
)
from npv_guard.core.model import PairState, Policy
from npv_guard.core.reasons import ReasonCode
from npv_guard.core.territories import Place

EXPIRING = frozenset(
    {
        ReasonCode.OUTSIDE_HOURS,
        ReasonCode.WEEKEND,
        ReasonCode.PUBLIC_HOLIDAY,
        ReasonCode.FREQUENCY_CAP,
        ReasonCode.REFUSAL_BLOCK,
    }
)
CALENDAR = frozenset({ReasonCode.OUTSIDE_HOURS, ReasonCode.WEEKEND, ReasonCode.PUBLIC_HOLIDAY})
MAX_STEPS = 400


def next_allowed_at(verdict: Verdict, state: PairState | None, policy: Policy) -> datetime | None:
    """The first instant the rejected call would be allowed, or None when time alone cannot lift it.

    `state` None: the offline verdict of `decide(prepared, None, ...)`; only calendar rejections
    are answered then, since the stateful rules were not evaluated."""
    if verdict.allowed:
        return None
    if state is None:
        offline_ok = "calendar" not in verdict.not_evaluated and all(r.code in CALENDAR for r in verdict.reasons)
        if not offline_ok:
            return None
    elif verdict.not_evaluated or any(r.code not in EXPIRING for r in verdict.reasons):
        return None
    prepared = verdict.prepared
    at = prepared.request.at
    past = None if state is None else _as_of(state, at)
    instant = at
    current = verdict
    for _ in range(MAX_STEPS):
        codes = {reason.code for reason in current.reasons}
        if not codes:
            return instant
        if codes - (EXPIRING if past is not None else CALENDAR):
            return None
        instant = max(_lifted(code, current.prepared, past or PairState(), instant, policy) for code in codes)
        current = decide(prepare_at(prepared, instant, policy), past, policy)
    return None


def _as_of(state: PairState, at: datetime) -> PairState:
    """The facts that existed at the call's instant: no attempt made later is assumed."""
    return PairState(
        tuple(a for a in state.attempts if a.at <= at),
        tuple(r for r in state.refusals if r.at <= at),
        tuple(c for c in state.consents if c.at <= at),
    )


def _lifted(code: ReasonCode, prepared: Prepared, state: PairState, instant: datetime, policy: Policy) -> datetime:
    """The earliest instant >= `instant` at which rule `code` no longer fails (a lower bound of the answer)."""
    places = prepared.places
    if code is ReasonCode.REFUSAL_BLOCK:
        zone = places[0].territory.zone
        ends = [
            refusal_block_end(places, refusal.at)
            for refusal in state.refusals
            if regimes.Regime(refusal.at.astimezone(zone).date()).calendar
        ]
        return max([end for end in ends if end > instant], default=instant)
    if code is ReasonCode.FREQUENCY_CAP:
        exits = sorted(_leaves_window(places, attempt.at) for attempt in state.attempts)
        still = [exit_at for exit_at in exits if exit_at > instant]
        surplus = len(still) - (MAX_ATTEMPTS - 1)
        return still[surplus - 1] if surplus > 0 else instant
    windows = policy.windows_for(prepared.request.medium, prepared.professional)
    by_calendar = max(_calendar_lifted(code, place, instant, windows, policy) for place in places)
    # An agreed slot may open before the next legal window: the search must not jump past it.
    slots = [c.slot.start for c in state.consents if c.granted and c.slot and instant < c.slot.start]
    return min([by_calendar, *slots])


def _leaves_window(places: tuple[Place, ...], attempt_at: datetime) -> datetime:
    """When an attempt stops counting: once day D-29 is after its day, in every place of the consumer."""
    return max(
        local_midnight(place, attempt_at.astimezone(place.territory.zone).date() + timedelta(days=ATTEMPT_WINDOW_DAYS))
        for place in places
    )


def _calendar_lifted(
    code: ReasonCode, place: Place, instant: datetime, windows: tuple[Window, ...], policy: Policy
) -> datetime:
    local, issues = local_issues(place, instant, windows, policy.local_holidays)
    if code is ReasonCode.WEEKEND:
        if not issues.weekend:
            return instant
        return local_midnight(place, local.date() + timedelta(days=7 - local.weekday()))
    if code is ReasonCode.PUBLIC_HOLIDAY:
        return local_midnight(place, local.date() + timedelta(days=1)) if issues.holiday else instant
    if not issues.outside_hours:
        return instant
    moment = local.time().replace(tzinfo=None)
    later_today = [window.start for window in windows if moment < window.start]
    if later_today:
        return _at(place, local, min(later_today))
    return _at(place, local + timedelta(days=1), min(window.start for window in windows))


def _at(place: Place, local: datetime, wall: time) -> datetime:
    return datetime.combine(local.date(), wall, tzinfo=place.territory.zone)
