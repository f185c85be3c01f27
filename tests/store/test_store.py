"""The store on a real redis-server and a real 3-master Redis Cluster (never a fake)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot

from npv_guard.clock import Clock, parse_instant
from npv_guard.core.model import Attempt, Basis, CallRequest, ConsentEvent, Policy, RefusalSource, Slot
from npv_guard.core.reasons import ReasonCode
from npv_guard.service import Guard
from npv_guard.store import CONSENT_EVENTS_READ, ConsumerHasher, Store
from tests.support.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis

SECRET = "test-secret-0123456789abcdef"
NPV = "+33162000001"
CONSUMER = "+33612345678"
SPELLINGS_OF_CONSUMER = ("+33612345678", "33612345678", "0612345678", "612345678", "12345678")


@dataclass
class Backend:
    url: str
    cluster: bool
    prefix: str

    def store(
        self, secret: str = SECRET, previous: tuple[str, ...] = (), timeout: float = 0.5, now: str | None = None
    ) -> Store:
        """`now`: the guard's clock starts there (TTLs run from each fact's instant on it)."""
        hasher = ConsumerHasher(secret, previous)
        clock = Clock(parse_instant(now)).now if now else None
        return Store.connect(self.url, hasher, cluster=self.cluster, prefix=self.prefix, timeout=timeout, clock=clock)

    def raw(self) -> aioredis.Redis | AsyncRedisCluster:
        if self.cluster:
            return AsyncRedisCluster.from_url(self.url)
        return aioredis.Redis.from_url(self.url)


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    prefix = "t" + uuid.uuid4().hex[:8]
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Backend(server.url, False, prefix)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    return Backend(cluster.url, True, prefix)


@pytest.fixture
async def guard(backend: Backend) -> AsyncIterator[Guard]:
    store = backend.store()
    yield Guard(Policy(), store)
    await store.close()


def call(when: str, callee: str = CONSUMER, caller: str = NPV, professional: str | None = None) -> CallRequest:
    return CallRequest(caller, callee, parse_instant(when), professional)


async def consent(
    guard: Guard, professional: str = NPV, callee: str = CONSUMER, when: str = "2026-09-01T12:00"
) -> None:
    await guard.grant_consent(professional, callee, parse_instant(when), Basis.CONSENT, "signed web form #42")


async def test_four_attempts_then_the_cap(guard: Guard) -> None:
    await consent(guard)
    days = ["2026-11-16T11:00", "2026-11-17T11:00", "2026-11-18T11:00", "2026-11-19T11:00"]
    for day in days:
        assert (await guard.check(call(day), record=True)).allowed
    fifth = await guard.check(call("2026-11-20T11:00"), record=True)
    assert fifth.codes == (ReasonCode.FREQUENCY_CAP,)


async def test_rejected_calls_are_not_attempts(guard: Guard) -> None:
    await consent(guard)
    for _ in range(6):  # Saturday: rejected, never counted
        assert not (await guard.check(call("2026-11-14T11:00"), record=True)).allowed
    for day in ["2026-11-16T11:00", "2026-11-17T11:00", "2026-11-18T11:00", "2026-11-19T11:00"]:
        assert (await guard.check(call(day), record=True)).allowed


async def test_check_without_record_counts_nothing(guard: Guard) -> None:
    await consent(guard)
    for _ in range(6):
        assert (await guard.check(call("2026-11-16T11:00"), record=False)).allowed


async def test_window_slides_across_its_edge(guard: Guard) -> None:
    await consent(guard)
    for day in ["2026-11-02T11:00", "2026-11-20T11:00", "2026-11-24T11:00", "2026-11-27T11:00"]:
        assert (await guard.check(call(day), record=True)).allowed
    # D-29 of 2026-12-01 is 2026-11-02: still counted; on 2026-12-02 it has left the window.
    assert not (await guard.check(call("2026-12-01T11:00"), record=False)).allowed
    assert (await guard.check(call("2026-12-02T11:00"), record=False)).allowed


async def put_attempt(store: Store, when: str, professional: str = NPV) -> None:
    instant = parse_instant(when)
    snapshot = await store.snapshot(professional, CONSUMER, instant)
    assert await store.record_attempt(professional, CONSUMER, Attempt(instant), snapshot.version)


@pytest.mark.parametrize(("oldest", "capped"), [("2026-10-24T22:00:00Z", True), ("2026-10-24T21:59:59Z", False)])
async def test_window_across_dst(backend: Backend, guard: Guard, oldest: str, capped: bool) -> None:
    # D-29 of Monday 2026-11-23 is Sunday 2026-10-25, the autumn change: it starts at 22:00Z the 24th.
    await consent(guard)
    store = backend.store()
    try:
        for when in [oldest, "2026-11-02T11:00", "2026-11-09T11:00", "2026-11-16T11:00"]:
            await put_attempt(store, when)
    finally:
        await store.close()
    result = await guard.check(call("2026-11-23T11:00"), record=False)
    assert (result.codes == (ReasonCode.FREQUENCY_CAP,)) is capped
    assert result.allowed is not capped


async def test_refusal_block_edges(guard: Guard) -> None:
    # Before opt-in: a 60-day block, no consent needed.
    outcome = await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-01-05T15:00"), RefusalSource.AGENT)
    assert not outcome.withdraws_consent
    assert outcome.blocked_until == parse_instant("2026-03-07T00:00")
    before = await guard.check(call("2026-03-06T23:59:59"), record=False)
    at_end = await guard.check(call("2026-03-07T00:00:00"), record=False)
    assert ReasonCode.REFUSAL_BLOCK in before.codes
    assert ReasonCode.REFUSAL_BLOCK not in at_end.codes
    assert (await guard.check(call("2026-03-09T11:00"), record=False)).allowed


async def test_refusal_since_opt_in_withdraws_consent_for_good(guard: Guard) -> None:
    await consent(guard)
    assert (await guard.check(call("2026-09-10T11:00"), record=True)).allowed
    outcome = await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-09-10T11:05"), RefusalSource.CONSUMER)
    assert outcome.withdraws_consent
    later = await guard.check(call("2027-03-02T11:00"), record=False)
    assert later.codes == (ReasonCode.CONSENT_WITHDRAWN,)
    # The consent given before the refusal still shows when replaying the morning of the call.
    assert (await guard.check(call("2026-09-10T11:01"), record=False)).allowed
    await consent(guard, when="2027-03-03T09:00")
    assert (await guard.check(call("2027-03-03T11:00"), record=False)).allowed


async def test_consent_grant_and_withdraw(guard: Guard) -> None:
    assert (await guard.check(call("2026-11-16T11:00"), record=False)).codes == (ReasonCode.NO_CONSENT,)
    await consent(guard, when="2026-11-16T10:00")
    assert (await guard.check(call("2026-11-16T11:00"), record=False)).allowed
    await guard.withdraw_consent(NPV, CONSUMER, parse_instant("2026-11-16T12:00"), "email")
    assert (await guard.check(call("2026-11-16T14:00"), record=False)).codes == (ReasonCode.CONSENT_WITHDRAWN,)
    assert (await guard.check(call("2026-11-16T11:00"), record=False)).allowed  # replay: before withdrawal


async def test_contract_basis(guard: Guard) -> None:
    await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONTRACT, "contract C-1")
    request = CallRequest(NPV, CONSUMER, parse_instant("2026-11-16T11:00"), sector="energy_renovation")
    assert (await guard.check(request, record=False)).allowed


async def test_professionals_do_not_share_counters(backend: Backend) -> None:
    store = backend.store()
    guard = Guard(Policy(), store)
    try:
        for professional in ("acme", "globex"):
            await consent(guard, professional=professional)
        for day in ["2026-11-16T11:00", "2026-11-17T11:00", "2026-11-18T11:00", "2026-11-19T11:00"]:
            assert (await guard.check(call(day, professional="acme"), record=True)).allowed
        assert not (await guard.check(call("2026-11-20T11:00", professional="acme"), record=True)).allowed
        assert (await guard.check(call("2026-11-20T11:00", professional="globex"), record=True)).allowed
        await guard.record_refusal("acme", CONSUMER, parse_instant("2026-11-20T11:30"), RefusalSource.AGENT)
        assert (await guard.check(call("2026-11-23T11:00", professional="globex"), record=False)).allowed
    finally:
        await store.close()


async def test_ttls_and_no_clear_text_number(backend: Backend) -> None:
    store = backend.store(now="2026-11-16T11:05")
    guard = Guard(Policy(), store)
    await consent(guard)
    assert (await guard.check(call("2026-11-16T11:00"), record=True)).allowed
    await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-11-16T11:05"), RefusalSource.AGENT)
    raw = backend.raw()
    try:
        keys = [key async for key in raw.scan_iter(match=f"{backend.prefix}:*")]
        assert len(keys) == 4
        dump = ""
        for key in keys:
            name = key.decode()
            ttl = await raw.pttl(name)
            if name.endswith(":a"):
                assert timedelta(days=30) < timedelta(milliseconds=ttl) <= timedelta(days=31)
            elif name.endswith((":r", ":v")):
                assert timedelta(days=61) < timedelta(milliseconds=ttl) <= timedelta(days=62)
            else:
                # Proof of consent (R. 223-2): three years from the grant's own instant (it used to
                # have no TTL at all: changed with the consent lifetime of décret 2026-662).
                assert name.endswith(":c")
                assert timedelta(days=1095) < timedelta(milliseconds=ttl) <= timedelta(days=1096)
            kind = (await raw.type(name)).decode()
            if kind == "zset":
                dump += repr(await raw.zrange(name, 0, -1, withscores=True))
            else:
                dump += repr(await raw.get(name))
            dump += name
        for spelling in SPELLINGS_OF_CONSUMER:
            assert spelling not in dump
    finally:
        await raw.aclose()
        await store.close()


async def test_ttls_run_from_each_facts_own_instant(backend: Backend) -> None:
    """A refusal made at T lives until T + 62 days, whenever it reaches Redis (a journal replay
    after an outage); a late back-dated write never shortens a key that holds a newer fact."""
    store = backend.store(now="2026-11-16T11:05")
    guard = Guard(Policy(), store)
    raw = backend.raw()
    try:
        ten_days_ago = parse_instant("2026-11-06T11:05")
        await guard.record_refusal(NPV, CONSUMER, ten_days_ago, RefusalSource.AGENT)
        refusals = store.keys(NPV, CONSUMER).refusals
        assert timedelta(days=51) < timedelta(milliseconds=await raw.pttl(refusals)) <= timedelta(days=52)
        await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-11-16T11:05"), RefusalSource.AGENT)
        assert timedelta(days=61) < timedelta(milliseconds=await raw.pttl(refusals)) <= timedelta(days=62)
        await guard.record_refusal(NPV, CONSUMER, ten_days_ago - timedelta(days=1), RefusalSource.AGENT)
        assert timedelta(days=61) < timedelta(milliseconds=await raw.pttl(refusals)) <= timedelta(days=62)
        # Older than its retention: not counted by any rule, kept a little for the history.
        other = "+33612345699"
        await guard.record_refusal(NPV, other, parse_instant("2026-08-01T11:00"), RefusalSource.AGENT)
        left = timedelta(milliseconds=await raw.pttl(store.keys(NPV, other).refusals))
        assert timedelta(minutes=59) < left <= timedelta(hours=1)
        third = "+33612345698"
        await consent(guard, callee=third)
        assert (await guard.check(call("2026-11-06T11:00", callee=third), record=True)).allowed
        attempts = store.keys(NPV, third).attempts
        assert timedelta(days=20) < timedelta(milliseconds=await raw.pttl(attempts)) <= timedelta(days=21)
        assert (await guard.check(call("2026-11-16T11:05", callee=third), record=True)).allowed
        assert timedelta(days=30) < timedelta(milliseconds=await raw.pttl(attempts)) <= timedelta(days=31)
    finally:
        await raw.aclose()
        await store.close()


async def test_relayed_sms_are_history_only(backend: Backend) -> None:
    store = backend.store(now="2026-11-16T11:05")
    guard = Guard(Policy(), store)
    await consent(guard)
    for minute in range(1, 6):
        await guard.record_message(NPV, CONSUMER, parse_instant(f"2026-11-16T11:0{minute}"), f"sms-{minute}")
    await guard.record_message(NPV, CONSUMER, parse_instant("2026-11-16T11:02"), "sms-2")  # replayed: once
    _, history = await guard.history(NPV, CONSUMER)
    assert [m.message_id for m in history.messages] == [f"sms-{n}" for n in range(1, 6)]
    assert history.state.attempts == () and timedelta(days=61) < timedelta(seconds=history.ttl_seconds["messages"])
    # Five messages, yet the next call is allowed: the 4-in-30-days cap counts calls only.
    assert (await guard.check(call("2026-11-16T11:30"), record=True)).allowed
    await store.close()


async def test_a_repeated_stop_is_not_a_first_stop(guard: Guard) -> None:
    await consent(guard)
    first = await guard.record_stop(NPV, CONSUMER, parse_instant("2026-11-16T11:00"), "sms-a")
    again = await guard.record_stop(NPV, CONSUMER, parse_instant("2026-11-16T11:01"), "sms-b")
    assert first.first and not again.first and first.refusal.withdraws_consent
    verdict = await guard.check(call("2026-11-16T11:30"), record=False)
    assert {ReasonCode.REFUSAL_BLOCK, ReasonCode.CONSENT_WITHDRAWN} <= {r.code for r in verdict.reasons}


async def test_all_keys_of_a_pair_share_one_cluster_slot(backend: Backend) -> None:
    store = backend.store()
    try:
        keys = store.keys("acme", CONSUMER)
        pair = (keys.attempts, keys.refusals, keys.consents, keys.messages, keys.version)
        slots = {key_slot(k.encode()) for k in pair}
        assert len(slots) == 1
    finally:
        await store.close()


@pytest.mark.parametrize("concurrency", [60])
async def test_concurrent_guards_let_exactly_four_through(backend: Backend, concurrency: int) -> None:
    stores = [backend.store(timeout=5.0) for _ in range(6)]  # six guards, one Redis
    guards = [Guard(Policy(), store) for store in stores]
    try:
        await consent(guards[0])
        request = call("2026-11-16T11:00")
        results = await asyncio.gather(
            *(guards[i % len(guards)].check(request, record=True, call_id=f"c{i}") for i in range(concurrency))
        )
        allowed = [r for r in results if r.allowed]
        rejected_codes = {r.codes for r in results if not r.allowed}
        assert len(allowed) == 4
        assert rejected_codes == {(ReasonCode.FREQUENCY_CAP,)}
        _, history = await guards[0].history(NPV, CONSUMER)
        assert len(history.state.attempts) == 4
    finally:
        for store in stores:
            await store.close()


async def test_guards_with_clocks_apart_still_let_exactly_four_through(backend: Backend) -> None:
    # Each guard stamps its decision with its own clock: instants a few ms apart, in any order.
    stores = [backend.store(timeout=5.0) for _ in range(4)]
    guards = [Guard(Policy(), store) for store in stores]
    try:
        await consent(guards[0])
        base = parse_instant("2026-11-16T11:00")
        offsets = [(i * 7919) % 40 for i in range(40)]  # a scrambled order of 0..39 ms
        requests = [CallRequest(NPV, CONSUMER, base + timedelta(milliseconds=offset)) for offset in offsets]
        results = await asyncio.gather(
            *(guards[i % 4].check(request, record=True, call_id=f"c{i}") for i, request in enumerate(requests))
        )
        assert sum(r.allowed for r in results) == 4
        assert {r.codes for r in results if not r.allowed} == {(ReasonCode.FREQUENCY_CAP,)}
    finally:
        for store in stores:
            await store.close()


async def _evalsha_calls(server: RedisServer) -> int:
    client = aioredis.Redis.from_url(server.url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_an_allowed_call_is_one_round_trip_and_a_rejected_one_writes_nothing(redis_server: RedisServer) -> None:
    store = Backend(redis_server.url, False, "t" + uuid.uuid4().hex[:8]).store()
    guard = Guard(Policy(), store)
    try:
        await consent(guard)
        assert (await guard.check(call("2026-11-16T11:00"), record=True, call_id="c1")).allowed  # loads it
        before = await _evalsha_calls(redis_server)
        assert (await guard.check(call("2026-11-17T11:00"), record=True)).allowed
        assert await _evalsha_calls(redis_server) - before == 1  # read and record in one script
        for day in ("2026-11-18T11:00", "2026-11-19T11:00"):
            assert (await guard.check(call(day), record=True)).allowed
        fifth = await guard.check(call("2026-11-20T11:00"), record=True, call_id="c5")
        assert fifth.codes == (ReasonCode.FREQUENCY_CAP,)
        _, history = await guard.history(NPV, CONSUMER)
        assert history.state.attempts[0].call_id == "c1"
        assert len(history.state.attempts) == 4  # the fifth call's hold was released
    finally:
        await store.close()


async def test_a_call_recorded_twice_keeps_its_attempt_when_the_second_check_is_rejected(guard: Guard) -> None:
    await consent(guard)
    assert (await guard.check(call("2026-11-16T11:00"), record=True, call_id="c1")).allowed
    await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-11-16T11:00"), RefusalSource.AGENT)
    again = await guard.check(call("2026-11-16T11:00"), record=True, call_id="c1")  # the same call, retried
    assert ReasonCode.REFUSAL_BLOCK in again.codes
    _, history = await guard.history(NPV, CONSUMER)
    assert [a.call_id for a in history.state.attempts] == ["c1"]  # counted once, and not taken back


async def test_recording_under_a_secret_rotation_reads_and_counts_every_secret(backend: Backend) -> None:
    old = backend.store(secret="old-secret-0123456789abc")
    guard_old = Guard(Policy(), old)
    try:
        await consent(guard_old)
        for day in ("2026-11-16T11:00", "2026-11-17T11:00", "2026-11-18T11:00"):
            assert (await guard_old.check(call(day), record=True)).allowed
    finally:
        await old.close()
    rotated = backend.store(secret="new-secret-0123456789abc", previous=("old-secret-0123456789abc",))
    guard = Guard(Policy(), rotated)
    try:
        assert (await guard.check(call("2026-11-19T11:00"), record=True)).allowed
        capped = await guard.check(call("2026-11-20T11:00"), record=True)
        assert capped.codes == (ReasonCode.FREQUENCY_CAP,)
    finally:
        await rotated.close()


async def test_recording_before_a_stored_later_attempt_is_refused(guard: Guard) -> None:
    await consent(guard)
    assert (await guard.check(call("2026-11-18T11:00"), record=True)).allowed
    replay = await guard.check(call("2026-11-16T11:00"), record=True)
    assert replay.codes == (ReasonCode.STATE_UNAVAILABLE,)
    assert (await guard.check(call("2026-11-16T11:00"), record=False)).allowed  # reading the past is fine


async def test_rotation_keeps_old_facts_readable(backend: Backend) -> None:
    old = backend.store(secret="old-secret-0123456789abc")
    guard_old = Guard(Policy(), old)
    await guard_old.record_refusal(NPV, CONSUMER, parse_instant("2026-11-16T11:05"), RefusalSource.AGENT)
    await old.close()
    rotated = backend.store(secret="new-secret-0123456789abc", previous=("old-secret-0123456789abc",))
    forgotten = backend.store(secret="new-secret-0123456789abc")
    try:
        still_blocked = await Guard(Policy(), rotated).check(call("2026-11-17T11:00"), record=False)
        assert ReasonCode.REFUSAL_BLOCK in still_blocked.codes
        lost = await Guard(Policy(), forgotten).check(call("2026-11-17T11:00"), record=False)
        assert ReasonCode.REFUSAL_BLOCK not in lost.codes
        # The history reads what the decision reads: the refusal stored under the old secret.
        _, history = await Guard(Policy(), rotated).history(NPV, CONSUMER)
        assert [(r.at, r.source) for r in history.state.refusals] == [
            (parse_instant("2026-11-16T11:05"), RefusalSource.AGENT)
        ]
        assert [c.granted for c in history.state.consents] == [False]  # the withdrawal it implied
    finally:
        await rotated.close()
        await forgotten.close()


async def test_bulk_consents(guard: Guard, backend: Backend) -> None:
    store = backend.store(timeout=5.0)
    try:
        rows = [
            (f"+336{n:08d}", ConsentEvent(parse_instant("2026-09-01T12:00"), True, Basis.CONSENT, f"form {n}"))
            for n in range(500)
        ]
        assert await store.record_consents(NPV, rows) == 500
        verdict = await Guard(Policy(), store).check(call("2026-11-16T11:00", callee="06 00 00 01 23"), record=False)
        assert verdict.allowed
    finally:
        await store.close()


# --- consent events: contract ends, slots, proof retention (R. 223-2), the read limit ---------------

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


async def test_a_withdrawal_by_refusal_is_kept_as_proof_then_expires(backend: Backend) -> None:
    store = backend.store(now="2026-11-16T11:05")  # the proof's retention runs from its own instant
    guard = Guard(Policy(), store)
    await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-11-16T11:05"), RefusalSource.AGENT)
    assert 1095 * DAY_MS < await consents_ttl(backend, guard) <= 1096 * DAY_MS
    # Beside an open-ended contract the key keeps no expiry: the contract still counts.
    other = Guard(Policy(), guard.store)
    await grant(other, "2026-11-17T12:00", Basis.CONTRACT)
    await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-11-18T11:05"), RefusalSource.AGENT)
    assert await consents_ttl(backend, guard) == -1
    await store.close()
