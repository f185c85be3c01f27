"""The core's memoised pure functions answer exactly what they compute unmemoised.

A lead-list scrub decides every lead at the same instant, so the rules that depend only on the
consumer's places, the instant and the policy are memoised (core/decide.py `calendar_reasons`),
and so is where a consumer may be (`_places`): a memo must never change a verdict, whatever was
asked before.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from npv_guard.core.calendar import CALL_WINDOWS, Window
from npv_guard.core.decide import calendar_reasons, decide, locate_consumer, prepare
from npv_guard.core.model import CallRequest, Medium, PairState, Policy, Professional
from npv_guard.core.numbering import PhoneNumber, parse
from npv_guard.core.reasons import Reason, ReasonCode
from npv_guard.core.territories import ALL, Place, PostcodeError, place_of, place_of_postcode

PARIS = ZoneInfo("Europe/Paris")
PLACES = (
    *(place_of(territory) for territory in ALL),
    *(place_of_postcode(code) for code in ("75011", "57000", "67000", "68100", "97133", "97150", "2A")),
)
WINDOWS = (CALL_WINDOWS, (Window(time(9), time(12)),), (Window(time(8, 30), time(21)), Window(time(22), time(23))))


def instant(rng: random.Random) -> datetime:
    """Any second of 2022-2027 (holidays, weekends, DST changes), in UTC or with an offset."""
    at = datetime(2022, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(6 * 366), seconds=rng.randrange(86400))
    return at if rng.random() < 0.5 else at.astimezone(PARIS)


@pytest.mark.parametrize("seed", range(4))
def test_calendar_reasons_equal_their_unmemoised_answer(seed: int) -> None:
    rng = random.Random(seed)
    at = instant(rng)
    for _ in range(2000):
        if rng.random() < 0.2:
            at = instant(rng)  # mostly the same instant, as in a scrub; sometimes another
        places = tuple(rng.sample(PLACES, rng.choice((1, 1, 2, 3))))
        args = (places, at.astimezone(UTC), rng.choice(WINDOWS), rng.random() < 0.7, rng.choice(tuple(Medium)))
        assert calendar_reasons(*args) == calendar_reasons.__wrapped__(*args)


def test_the_two_instants_of_a_fall_back_hour_are_not_one_memo_entry() -> None:
    # 02:30 happens twice in Paris on 2026-10-25 and the same zone compares them by wall clock
    # alone, but a consumer in La Réunion is at 04:30, then 05:30.
    first = datetime(2026, 10, 25, 2, 30, tzinfo=PARIS)
    second = first.replace(fold=1)
    assert first == second and first.astimezone(UTC) != second.astimezone(UTC)
    policy = Policy()
    verdicts = []
    for at in (first, second):
        request = CallRequest("0162000001", "0692123456", at)
        verdicts.append(decide(prepare(request, policy), PairState(), policy))
    messages = [" ".join(reason.message for reason in verdict.reasons) for verdict in verdicts]
    assert "04:30:00" in messages[0] and "05:30:00" in messages[1]


@pytest.mark.parametrize("seed", range(2))
def test_prepared_calendar_reasons_equal_a_fresh_computation(seed: int) -> None:
    rng = random.Random(seed)
    policies = (
        Policy(),
        Policy(local_holidays=False),
        Policy(professionals=(Professional("acme", npvs=("0937000001",), sms_windows=(Window(time(9), time(18)),)),)),
    )
    callees = ("0612345678", "+33698765432", "0696123456", "0690123456", "0262123456", "0388123456")
    postcodes = (None, "75011", "67000", "97200", "97133", "975")
    at = instant(rng)
    for _ in range(1500):
        if rng.random() < 0.3:
            at = instant(rng)
        medium = rng.choice((Medium.VOICE, Medium.SMS))
        caller = "0937000001" if medium is Medium.SMS else "0162000001"
        request = CallRequest(caller, rng.choice(callees), at, None, rng.choice(postcodes), medium=medium)
        policy = rng.choice(policies)
        prepared = prepare(request, policy)
        calendar_reasons.cache_clear()
        assert prepare(request, policy) == prepared


def _located_as_before(number: PhoneNumber, postcode: str | None) -> tuple[tuple[Place, ...], Reason | None]:
    """`locate_consumer` for a French line as it was written before its places were memoised."""
    from_number = tuple(place_of(territory) for territory in number.territories)
    if not postcode or not postcode.strip():
        return from_number, None
    try:
        declared = place_of_postcode(postcode)
    except PostcodeError as error:
        return (), Reason(ReasonCode.CONSUMER_INVALID, str(error))
    if any(place.territory == declared.territory for place in from_number):
        return (declared,), None
    return (declared, *from_number), None


def test_located_consumers_equal_their_unmemoised_places() -> None:
    callees = ("0612345678", "+590690123456", "0696123456", "0262123456", "+262639123456", "0590271234", "0388123456")
    postcodes = (None, "", "  ", "75011", " 75011 ", "57000", "97133", "97200", "975", "2A", "99999", "abc", "057")
    for _ in range(2):  # the second round answers from the memo
        for callee in callees:
            number = parse(callee)
            for postcode in postcodes:
                assert locate_consumer(number, postcode) == _located_as_before(number, postcode), (callee, postcode)
