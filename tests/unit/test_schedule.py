"""next_allowed_at: the first instant a rejected call becomes legal, exact to the second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from npv_guard.core.decide import decide, prepare
from npv_guard.core.model import Attempt, Basis, CallRequest, ConsentEvent, PairState, Policy, Refusal
from npv_guard.core.schedule import next_allowed_at

from .helpers import at

CONSENT = (ConsentEvent(at("2026-09-01T12:00"), True, Basis.CONSENT, "form"),)


def when(instant: str, callee: str = "0612345678", state: PairState | None = None, **facts: object) -> datetime | None:
    policy = Policy()
    stored = state if state is not None else PairState(consents=CONSENT)
    request = CallRequest("0162000001", callee, at(instant), **facts)  # type: ignore[arg-type]
    return next_allowed_at(decide(prepare(request, policy), stored, policy), stored, policy)


def test_evening_becomes_next_morning() -> None:
    assert when("2026-12-01T20:30:00") == at("2026-12-02T10:00:00")


def test_lunch_break_ends_at_14() -> None:
    assert when("2026-12-01T13:00:00") == at("2026-12-01T14:00:00")


def test_saturday_becomes_monday_morning() -> None:
    assert when("2026-12-05T11:00:00") == at("2026-12-07T10:00:00")


def test_christmas_friday_becomes_monday() -> None:
    assert when("2026-12-24T21:00:00") == at("2026-12-28T10:00:00")  # 25 Dec holiday, then a weekend


def test_overseas_consumer_in_her_own_time() -> None:
    # 05:30 in Martinique (10:30 Paris): her 10:00 is 14:00 UTC.
    assert when("2026-12-01T10:30:00", callee="0596123456") == at("2026-12-01T14:00:00Z")


def test_cap_lifts_when_the_oldest_attempt_leaves_the_window() -> None:
    attempts = tuple(Attempt(at(f"2026-11-{day}T11:00")) for day in ("10", "16", "23", "30"))
    state = PairState(attempts, (), CONSENT)
    # The 10 Nov attempt counts up to D = 9 Dec; from 00:00 on 10 Dec it is out.
    assert when("2026-12-01T11:00:00", state=state) == at("2026-12-10T10:00:00")


def test_refusal_block_then_the_hours() -> None:
    state = PairState((), (Refusal(at("2026-01-05T15:00")),), ())
    # Blocked until 2026-03-07T00:00 (a Saturday): Monday 9 March 10:00.
    assert when("2026-01-06T11:00:00", state=state) == at("2026-03-09T10:00:00")


def test_reasons_time_cannot_lift_have_no_answer() -> None:
    assert when("2026-12-01T20:30:00", state=PairState()) is None  # no consent
    assert when("2026-12-01T11:00:00", callee="0800123456") is None
    assert when("2026-12-01T11:00:00") is None  # allowed already: nothing to wait for


def test_the_law_changing_on_the_way_ends_the_search() -> None:
    # Saturday 8 Aug 2026 without consent: Monday 10 Aug is still opt-out... the 11th is not.
    assert when("2026-08-08T11:00:00", state=PairState()) == at("2026-08-10T10:00:00")


instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))
callees = st.sampled_from(["0612345678", "0596123456", "0692123456", "0269601234", "0690123456", "0590271234"])


@settings(max_examples=400, deadline=None)
@given(
    instant=instants,
    callee=callees,
    postcode=st.sampled_from([None, "67000", "75011"]),
    attempt_days=st.lists(st.integers(0, 40), max_size=7),
    refusal_days=st.lists(st.integers(0, 80), max_size=2),
)
def test_allowed_at_the_answer_and_not_one_second_before(
    instant: datetime, callee: str, postcode: str | None, attempt_days: list[int], refusal_days: list[int]
) -> None:
    policy = Policy()
    state = PairState(
        tuple(Attempt(instant - timedelta(days=d, hours=1)) for d in attempt_days),
        tuple(Refusal(instant - timedelta(days=d, hours=2)) for d in refusal_days),
        CONSENT,
    )
    request = CallRequest("0162000001", callee, instant, consumer_postcode=postcode)
    verdict = decide(prepare(request, policy), state, policy)
    answer = next_allowed_at(verdict, state, policy)
    if answer is None:
        return
    assert answer > instant
    then = decide(prepare(CallRequest("0162000001", callee, answer, consumer_postcode=postcode), policy), state, policy)
    assert then.allowed, (answer, then.codes)
    before = answer - timedelta(seconds=1)
    earlier = decide(
        prepare(CallRequest("0162000001", callee, before, consumer_postcode=postcode), policy), state, policy
    )
    assert not earlier.allowed or before <= instant, (answer, before)
