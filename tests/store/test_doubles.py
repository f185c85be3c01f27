"""npv_guard.testing.MemoryStore against the Redis store: the same scenarios, the same outcomes.

Each scenario drives a Guard (or the store itself) and returns what it observed: verdict codes,
record results, the history's contents. It runs once on a real redis-server and once on the
memory store, and the two transcripts must be equal, so that the double cannot drift from the
store integrators test against.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from npv_guard.clock import parse_instant
from npv_guard.core.model import Attempt, Basis, CallRequest, ConsentEvent, Policy, Refusal, RefusalSource
from npv_guard.core.reasons import ReasonCode
from npv_guard.service import Guard
from npv_guard.store import ConsumerHasher, PairStore, SentMessage, Store
from npv_guard.testing import MemoryStore
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

SECRET = "doubles-secret-0123456789abcdef"
NPV = "+33162000001"
CONSUMER = "+33612345678"
OTHER = "+33612345679"

Transcript = list[Any]
Scenario = Callable[[Guard, PairStore], Awaitable[Transcript]]


def call(when: str, callee: str = CONSUMER, **fields: Any) -> CallRequest:
    return CallRequest(NPV, callee, parse_instant(when), **fields)


async def verdicts(guard: Guard, record: bool, *whens: str) -> Transcript:
    return [(await guard.check(call(when), record=record, call_id=f"c-{when}")).codes for when in whens]


async def frequency_cap_and_its_sliding_window(guard: Guard, store: PairStore) -> Transcript:
    await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONSENT, "form #1")
    seen = await verdicts(guard, True, "2026-11-02T11:00", "2026-11-20T11:00", "2026-11-24T11:00", "2026-11-27T11:00")
    seen += await verdicts(guard, True, "2026-11-30T11:00", "2026-11-14T11:00")  # the cap; a Saturday
    seen += await verdicts(guard, False, "2026-12-01T11:00", "2026-12-02T11:00")  # D-29 leaves the window
    return seen


async def refusal_before_opt_in_blocks_sixty_days(guard: Guard, store: PairStore) -> Transcript:
    outcome = await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-01-05T15:00"), RefusalSource.AGENT)
    await guard.grant_consent(NPV, CONSUMER, parse_instant("2025-09-01T12:00"), Basis.CONSENT, "form #2")
    seen: Transcript = [outcome.withdraws_consent, outcome.blocked_until]
    return seen + await verdicts(guard, False, "2026-03-06T23:59:59", "2026-03-07T00:00:00", "2026-03-09T11:00")


async def refusal_after_opt_in_withdraws_consent(guard: Guard, store: PairStore) -> Transcript:
    await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONSENT, "form #3")
    seen = await verdicts(guard, True, "2026-09-10T11:00")
    outcome = await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-09-10T11:05"), RefusalSource.CONSUMER)
    seen += [outcome.withdraws_consent]
    seen += await verdicts(guard, False, "2027-03-02T11:00", "2026-09-10T11:01")  # later; replayed before
    await guard.grant_consent(NPV, CONSUMER, parse_instant("2027-03-03T09:00"), Basis.CONSENT, "form #4")
    return seen + await verdicts(guard, False, "2027-03-03T11:00")


async def consent_grant_withdraw_and_contract(guard: Guard, store: PairStore) -> Transcript:
    seen = await verdicts(guard, False, "2026-11-16T11:00")
    await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-11-16T10:00"), Basis.CONSENT, "form #5")
    seen += await verdicts(guard, False, "2026-11-16T11:00")
    await guard.withdraw_consent(NPV, CONSUMER, parse_instant("2026-11-16T12:00"), "email")
    seen += await verdicts(guard, False, "2026-11-16T14:00", "2026-11-16T11:00")
    seen.append((await store.snapshot(NPV, CONSUMER, parse_instant("2026-11-16T11:00"))).state)  # not the withdrawal
    until = parse_instant("2026-12-01T00:00")
    await guard.grant_consent(NPV, OTHER, parse_instant("2026-09-01T12:00"), Basis.CONTRACT, "C-1", until=until)
    for when in ("2026-11-16T11:00", "2026-12-02T11:00"):
        request = call(when, callee=OTHER, sector="energy_renovation")
        seen.append((await guard.check(request, record=False)).codes)
    return seen


async def optimistic_versions_and_attempt_order(guard: Guard, store: PairStore) -> Transcript:
    at = parse_instant("2026-11-16T11:00")
    first = await store.snapshot(NPV, CONSUMER, at)
    seen: Transcript = [first.version == (await store.snapshot(NPV, OTHER, at)).version]
    seen.append(await store.record_attempt(NPV, CONSUMER, Attempt(at, "c1"), first.version))
    seen.append(await store.record_attempt(NPV, CONSUMER, Attempt(at, "c2"), first.version))  # stale version
    now = await store.snapshot(NPV, CONSUMER, at)
    seen.append(await store.record_attempt(NPV, CONSUMER, Attempt(at - timedelta(hours=1), "c3"), now.version))
    seen.append(await store.record_attempt(NPV, CONSUMER, Attempt(at, "c1"), now.version))  # same call again
    later = await store.snapshot(NPV, CONSUMER, at - timedelta(minutes=1))  # before the attempt: not read
    seen += [len(later.state.attempts), later.newest_attempt]
    final = await store.snapshot(NPV, CONSUMER, at)
    return [*seen, [(a.at, a.call_id) for a in final.state.attempts], final.newest_attempt]


async def holds_counted_released_and_refused_after_a_later_attempt(guard: Guard, store: PairStore) -> Transcript:
    at = parse_instant("2026-11-16T11:00")
    snapshot, hold = await store.snapshot_and_hold(NPV, CONSUMER, Attempt(at, "h1"))
    seen: Transcript = [snapshot.state.attempts, hold is not None and hold.added]
    again, repeat = await store.snapshot_and_hold(NPV, CONSUMER, Attempt(at, "h1"))  # the same call
    seen += [[a.call_id for a in again.state.attempts], repeat is not None and repeat.added]
    if repeat is not None:
        await store.release(repeat)  # not added: the first hold stays counted
    second, hold2 = await store.snapshot_and_hold(NPV, CONSUMER, Attempt(at, "h2"))
    seen.append([a.call_id for a in second.state.attempts])
    if hold2 is not None:
        await store.release(hold2)
        await store.release(hold2)  # twice: once
    earlier, none = await store.snapshot_and_hold(NPV, CONSUMER, Attempt(at - timedelta(hours=1), "h3"))
    seen += [none is None, earlier.newest_attempt]
    final = await store.snapshot(NPV, CONSUMER, at)
    return [*seen, [a.call_id for a in final.state.attempts]]


async def refusal_ids_stored_once_and_history(guard: Guard, store: PairStore) -> Transcript:
    at = parse_instant("2026-11-16T11:05")
    digest = store.digest(CONSUMER)
    withdrawal = ConsentEvent(at, granted=False, proof="refusal")
    for _ in range(2):  # a journal replay of a refusal that had landed
        await store.record_refusal(NPV, digest, Refusal(at, RefusalSource.AGENT, "c9"), withdrawal, "r-1")
    await store.record_refusal(NPV, digest, Refusal(at, RefusalSource.AGENT, "c9"), None, "r-2")
    await store.record_message(NPV, CONSUMER, SentMessage(at, "m-1"))
    rows = [(CONSUMER, ConsentEvent(parse_instant("2026-09-01T12:00"), True, Basis.CONSENT, "import"))] * 2
    seen: Transcript = [await store.record_consents(NPV, rows)]
    history = await store.history(NPV, CONSUMER)
    seen += [history.state, history.messages, sorted(history.ttl_seconds), (await store.history(NPV, OTHER)).state]
    snapshots = await store.snapshots(NPV, [CONSUMER, OTHER], at)
    return [*seen, [s.state for s in snapshots], snapshots[1].version]


SCENARIOS = [
    frequency_cap_and_its_sliding_window,
    refusal_before_opt_in_blocks_sixty_days,
    refusal_after_opt_in_withdraws_consent,
    consent_grant_withdraw_and_contract,
    optimistic_versions_and_attempt_order,
    holds_counted_released_and_refused_after_a_later_attempt,
    refusal_ids_stored_once_and_history,
]


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[Store]:
    store = Store.connect(redis_server.url, ConsumerHasher(SECRET), prefix="d" + uuid.uuid4().hex[:8], timeout=2)
    yield store
    await store.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_the_memory_store_answers_as_redis_does(scenario: Scenario, redis_store: Store) -> None:
    on_redis = await scenario(Guard(Policy(), redis_store), redis_store)
    memory = MemoryStore(ConsumerHasher(SECRET))
    in_memory = await scenario(Guard(Policy(), memory), memory)
    assert in_memory == on_redis


async def test_the_scenarios_observe_what_the_rules_say(redis_store: Store) -> None:
    # The comparison above is only worth something if the scenarios see the rules at work.
    seen = await frequency_cap_and_its_sliding_window(Guard(Policy(), redis_store), redis_store)
    cap = (ReasonCode.FREQUENCY_CAP,)
    assert seen[:4] == [()] * 4 and seen[4] == cap and seen[5] and seen[6] == cap and seen[7] == ()
    memory = MemoryStore()
    versions = await optimistic_versions_and_attempt_order(Guard(Policy(), memory), memory)
    assert versions[1:5] == [True, False, False, True]
