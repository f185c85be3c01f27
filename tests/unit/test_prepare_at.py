"""`prepare_at` (a re-decision at another instant) prepares exactly what `prepare` does at that instant."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from npv_guard.core.decide import prepare, prepare_at
from npv_guard.core.model import CallRequest, Medium, Policy, Professional

CALLERS = ("0162000001", "+33948000003", "0612345678", "0937000001", "", "abc", "+590590123456")
CALLEES = ("0612345678", "+33698765432", "0696123456", "0690123456", "0800123456", "", "+4915112345678")
POSTCODES = (None, "75011", "67000", "97200", "99999")
POLICIES = (
    Policy(),
    Policy(professionals=(Professional("acme", npvs=("0162000001", "0948000003", "0937000001")),)),
    Policy(local_holidays=False),
)


def instant(rng: random.Random) -> datetime:
    return datetime(2022, 12, 1, tzinfo=UTC) + timedelta(days=rng.randrange(1800), seconds=rng.randrange(86400))


@pytest.mark.parametrize("seed", range(4))
def test_prepare_at_is_prepare_at_that_instant(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(1000):
        policy = rng.choice(POLICIES)
        request = CallRequest(
            rng.choice(CALLERS),
            rng.choice(CALLEES),
            instant(rng),
            rng.choice((None, "acme", "ghost")),
            rng.choice(POSTCODES),
            medium=rng.choice((Medium.VOICE, Medium.VOICE, Medium.SMS)),
        )
        later = instant(rng)
        expected = prepare(replace(request, at=later), policy)
        assert prepare_at(prepare(request, policy), later, policy) == expected
        # Equal as data, and in what the verdict shows.
        assert prepare_at(prepare(request, policy), later, policy).calendar_reasons == expected.calendar_reasons


def test_prepare_at_refuses_a_naive_instant() -> None:
    prepared = prepare(CallRequest("0162000001", "0612345678", datetime(2026, 12, 1, 10, tzinfo=UTC)), Policy())
    with pytest.raises(ValueError):
        prepare_at(prepared, datetime(2026, 12, 1, 11), Policy())
