"""Consent events in Redis: contract ends and slots stored, proof retention (R. 223-2), the read limit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from npv_guard.clock import parse_instant
from npv_guard.core.model import Basis, ConsentEvent, Slot
from npv_guard.core.reasons import ReasonCode
from npv_guard.service import Guard
from npv_guard.store import CONSENT_EVENTS_READ
from tests.store.test_store import CONSUMER, NPV, Backend, backend, call, guard  # noqa: F401

pytestmark = pytest.mark.redis

DAY_MS = 86_400_000


async def grant(guard: Guard, when: str, basis: Basis = Basis.CONSENT, **extra: object) -> ConsentEvent:
    return await guard.grant_consent(NPV, CONSUMER, parse_instant(when), basis, "proof", **extra)  # type: ignore[arg-type]


async def consents_ttl(backend: Backend, guard: Guard) -> int:
    assert guard.store is not None
    raw = backend.raw()
    try:
        return int(await raw.pttl(guard.store.keys(NPV, CONSUMER).consents))
    finally:
        await raw.aclose()


async def test_contract_end_and_slot_round_trip(guard: Guard) -> None:
    until = parse_instant("2027-03-01T00:00")
    slot = Slot(parse_instant("2026-12-05T09:00"), parse_instant("2026-12-05T09:30"))
    await grant(guard, "2026-11-20T12:00", Basis.CONTRACT, until=until)
    await grant(guard, "2026-11-21T12:00", slot=slot)
    assert guard.store is not None
    stored = (await guard.store.snapshot(NPV, CONSUMER, parse_instant("2026-12-01T11:00"))).state.consents
    assert {(e.basis, e.until, e.slot) for e in stored} == {(Basis.CONTRACT, until, None), (Basis.CONSENT, None, slot)}
    assert (await guard.check(call("2026-12-05T09:10"), record=False)).allowed
    assert (await guard.check(call("2027-02-26T11:00"), record=False)).allowed


async def test_proof_is_kept_three_years_and_removed_after(backend: Backend, guard: Guard) -> None:
    await grant(guard, "2022-01-10T12:00")
    assert 1095 * DAY_MS < await consents_ttl(backend, guard) <= 1096 * DAY_MS
    # A grant written more than three years later removes the first one (data minimisation).
    await grant(guard, "2025-01-11T12:00")
    assert guard.store is not None
    history = await guard.store.history(NPV, CONSUMER)
    assert [utc.at for utc in history.state.consents] == [parse_instant("2025-01-11T12:00")]


async def test_an_open_ended_contract_is_kept_as_long_as_it_counts(backend: Backend, guard: Guard) -> None:
    await grant(guard, "2022-01-10T12:00", Basis.CONTRACT)
    assert await consents_ttl(backend, guard) == -1
    await grant(guard, "2026-01-11T12:00")
    assert guard.store is not None
    assert len((await guard.store.history(NPV, CONSUMER)).state.consents) == 2


async def test_a_contract_end_beyond_three_years_extends_the_retention(backend: Backend, guard: Guard) -> None:
    await grant(guard, "2026-01-10T12:00", Basis.CONTRACT, until=parse_instant("2031-01-10T12:00"))
    ttl = await consents_ttl(backend, guard)
    assert 5 * 365 * DAY_MS < ttl <= (5 * 365 + 2) * DAY_MS


async def test_a_withdrawal_is_kept_while_a_grant_it_ended_is(guard: Guard) -> None:
    await grant(guard, "2020-01-10T12:00", Basis.CONTRACT)
    await guard.withdraw_consent(NPV, CONSUMER, parse_instant("2021-01-10T12:00"))
    await grant(guard, "2026-06-01T12:00")  # five years on: both older events still matter
    assert guard.store is not None
    kept = (await guard.store.history(NPV, CONSUMER)).state.consents
    assert len(kept) == 3
    # Without the withdrawal the open-ended contract would count again once the newer consent lapsed.
    late = await guard.check(call("2027-06-02T11:00"), record=False)
    assert late.codes == (ReasonCode.NO_CONSENT,)


async def test_an_old_contract_still_counts_behind_many_newer_lapsed_consents(guard: Guard) -> None:
    # The snapshot reads the latest CONSENT_EVENTS_READ events: 20 re-consents (all lapsed by the
    # call) must not hide the contract in progress (with 16, the old limit, it was hidden).
    await grant(guard, "2025-01-06T12:00", Basis.CONTRACT)
    start = parse_instant("2025-02-03T12:00")
    for week in range(20):
        await guard.grant_consent(NPV, CONSUMER, start + timedelta(weeks=week), Basis.CONSENT, f"form {week}")
    assert CONSENT_EVENTS_READ > 21
    verdict = await guard.check(call("2026-12-01T11:00", professional=None), record=False)
    assert verdict.allowed, verdict.reasons
