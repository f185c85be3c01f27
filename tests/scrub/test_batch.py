"""What the scrubber relies on: batched snapshots equal to single ones, and a memo that changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import product

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from npv_guard import store as store_module
from npv_guard.clock import parse_instant
from npv_guard.core.decide import decide, prepare
from npv_guard.core.model import Attempt, Basis, CallRequest, PairState, Policy, Professional, RefusalSource
from npv_guard.core.numbering import parse as parse_number
from npv_guard.core.schedule import next_allowed_at
from npv_guard.scrub import NextAllowed
from npv_guard.service import Guard
from npv_guard.store import ConsumerHasher, Store, StoreUnavailable
from tests.support.redis_servers import RedisCluster, RedisServer

SECRET = "batch-test-secret-0123456789"
OLD_SECRET = "batch-old-secret-0123456789"


@pytest.fixture(params=["single", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, bool, str]]:
    prefix = "b" + uuid.uuid4().hex[:8]
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        yield server.url, False, prefix
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        yield cluster.url, True, prefix


def _store(backend: tuple[str, bool, str], secret: str = SECRET, previous: tuple[str, ...] = ()) -> Store:
    url, cluster, prefix = backend
    return Store.connect(url, ConsumerHasher(secret, previous), cluster=cluster, prefix=prefix, timeout=2.0)


CONSUMERS = [f"+3361234{n:04d}" for n in range(60)]


@pytest.mark.redis
async def test_snapshots_equal_snapshot_pair_by_pair(backend: tuple[str, bool, str]) -> None:
    # Facts written under an old secret, then under the current one: a rotation in progress.
    old = _store(backend, OLD_SECRET)
    store = _store(backend, SECRET, (OLD_SECRET,))
    at = parse_instant("2026-12-01T11:00")
    try:
        await _history(old, store, at, (3, 5, 7, 11))
        one_by_one = [await store.snapshot("acme", consumer, at) for consumer in CONSUMERS]
        batched = await store.snapshots("acme", CONSUMERS, at)
        assert batched == one_by_one
        assert sum(1 for s in batched if s.state != PairState()) > len(CONSUMERS) // 3
        assert await store.snapshots("acme", [], at) == []
    finally:
        await old.close()
        await store.close()


@pytest.mark.redis
async def test_snapshots_survive_a_flushed_script_cache(backend: tuple[str, bool, str]) -> None:
    url, cluster, _ = backend
    store = _store(backend)
    raw: aioredis.Redis | AsyncRedisCluster = (
        AsyncRedisCluster.from_url(url) if cluster else aioredis.Redis.from_url(url)
    )  # fmt: skip
    at = parse_instant("2026-12-01T11:00")
    try:
        await Guard(Policy(), store).grant_consent("acme", CONSUMERS[0], at - timedelta(days=1), Basis.CONSENT, "x")
        first = await store.snapshots("acme", CONSUMERS[:3], at)
        await raw.script_flush()  # a restarted Redis, or a failover to a node that never loaded it
        assert await store.snapshots("acme", CONSUMERS[:3], at) == first
        assert first[0].state.consents
    finally:
        await raw.aclose()
        await store.close()


@pytest.mark.redis
@pytest.mark.parametrize("client", ["lane", "redis-py"])
async def test_read_snapshots_equal_snapshot_pair_by_pair(
    backend: tuple[str, bool, str], client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scrub's batch script, over several runs of it (7 pairs each here), with most pairs
    # missing, facts under an old secret and after the instant; on a Cluster it is `snapshots`.
    monkeypatch.setattr(store_module, "SNAPSHOT_BATCH_PAIRS", 7)
    url, cluster, _ = backend
    old = _store(backend, OLD_SECRET)
    store = _store(backend, SECRET, (OLD_SECRET,))
    if client == "redis-py":
        store._lane = None  # as behind Sentinel: redis-py's pipeline, NOSCRIPT handled by the store
    raw: aioredis.Redis | AsyncRedisCluster = (
        AsyncRedisCluster.from_url(url) if cluster else aioredis.Redis.from_url(url)
    )  # fmt: skip
    at = parse_instant("2026-12-01T11:00")
    try:
        await _history(old, store, at, (4, 9, 13, 17))
        # the last pair stored, its neighbours not: the reply's pair numbers land where they belong
        await Guard(Policy(), store).grant_consent("acme", CONSUMERS[-1], at - timedelta(days=3), Basis.CONSENT, "last")
        one_by_one = [await store.snapshot("acme", consumer, at) for consumer in CONSUMERS]
        await raw.script_flush()  # the first batch after a restart loads the script itself
        batched = await store.read_snapshots("acme", CONSUMERS, at)
        assert batched == one_by_one
        assert sum(1 for s in batched if s.state != PairState()) > len(CONSUMERS) // 4
        assert batched[-1].state.consents and batched[-2].state == PairState()
        assert await store.read_snapshots("acme", CONSUMERS[1:3], at) == one_by_one[1:3]
        assert await store.read_snapshots("acme", [], at) == []
    finally:
        await raw.aclose()
        await old.close()
        await store.close()


@pytest.mark.redis
async def test_read_snapshots_fail_closed() -> None:
    redis_server = RedisServer().start()  # its own: it is stopped
    store = Store.connect(redis_server.url, ConsumerHasher(SECRET), prefix="gone", timeout=0.5)
    try:
        assert len(await store.read_snapshots("acme", CONSUMERS[:3], parse_instant("2026-12-01T11:00"))) == 3
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.read_snapshots("acme", CONSUMERS[:3], parse_instant("2026-12-01T11:00"))
    finally:
        await store.close()
        redis_server.cleanup()


# --- the memo of next_allowed_at ----------------------------------------------------------------------

POLICY = Policy(professionals=(Professional("acme", npvs=("0162000001",)),))
NUMBERS = [
    "0612345678", "0145678901", "0596123456", "0696123456", "0692123456", "0262123456", "0269123456",
    "0639123456", "0690123456", "0590271234", "0590871234", "0594123456", "0694123456", "+508411234",
]  # fmt: skip
POSTCODES = [None, "75011", "67000", "68100", "57000", "97200", "97400", "97133", "2A"]


def _instants() -> list[str]:
    """Hours around the clock over days with every calendar feature: weekends, national, Alsace and
    overseas holidays, both DST changes, the eve of opt-in."""
    days = ["2026-03-27", "2026-03-28", "2026-03-29", "2026-04-03", "2026-04-06", "2026-05-22", "2026-05-27",
            "2026-08-10", "2026-10-24", "2026-10-25", "2026-12-24", "2026-12-26", "2026-12-31"]  # fmt: skip
    return [f"{day}T{hour:02d}:{minute:02d}" for day in days for hour in range(0, 24, 3) for minute in (0, 59)]


def test_memoised_next_allowed_at_is_the_core_s_own() -> None:
    compared = later = 0
    for when in _instants():
        at = parse_instant(when)
        memo = NextAllowed(POLICY)  # one per scrub run: one instant, caller and professional
        for number, postcode in product(NUMBERS, POSTCODES):
            request = CallRequest("0162000001", number, at, "acme", postcode)
            prepared = prepare(request, POLICY, (parse_number("0162000001"), parse_number(number)))
            verdict = decide(prepared, PairState(), POLICY)
            if verdict.allowed:
                continue
            direct = next_allowed_at(verdict, PairState(), POLICY)
            # Twice: the first call fills the memo, the second reads it.
            for _ in range(2):
                got = memo(verdict, PairState())
                assert (got.instant if got else None) == direct, (when, number, postcode)
                if got is not None:  # and written as the guard writes it (NPV_GUARD_RETRY_AFTER, --json)
                    shown = replace(verdict, next_allowed_at=direct)
                    assert (got.utc, got.local) == (shown.retry_after, shown.as_dict()["next_allowed_at"]["local"])
            compared += 1
            later += direct is not None
    assert compared > 3000 and later > 1000  # many verdicts, most of them with an instant


async def _history(old: Store, store: Store, at: datetime, every: tuple[int, int, int, int]) -> None:
    """Facts for every n-th consumer (consent, refusal under the old secret, attempt, a consent after
    the instant), `every` giving each n: a rotation in progress, most pairs left empty."""
    consents, refusals, attempts, later = every
    old_guard, guard = Guard(Policy(), old), Guard(Policy(), store)
    for index, consumer in enumerate(CONSUMERS):
        if index % consents == 0:
            await guard.grant_consent("acme", consumer, at - timedelta(days=90), Basis.CONSENT, "web")
        if index % refusals == 0:
            await old_guard.record_refusal("acme", consumer, at - timedelta(days=10), RefusalSource.AGENT)
        if index % attempts == 0:
            snapshot = await store.snapshot("acme", consumer, at)
            attempt = Attempt(at - timedelta(days=2), f"c{index}")
            assert await store.record_attempt("acme", consumer, attempt, snapshot.version)
        if index % later == 0:  # a fact after the instant: read by neither
            await guard.grant_consent("acme", consumer, at + timedelta(days=1), Basis.CONTRACT, "later")
