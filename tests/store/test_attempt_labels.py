"""Attempts carry the call's campaign and lead after the call id, and members stored before
(without them) read as before."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from npv_guard.clock import parse_instant
from npv_guard.core.model import Attempt
from npv_guard.store import ConsumerHasher, Store
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

CONSUMER = "+33612345678"


async def test_labels_round_trip_and_old_members_still_read(redis_server: RedisServer) -> None:
    prefix = "lab" + uuid.uuid4().hex[:8]
    store = Store.connect(redis_server.url, ConsumerHasher("label-secret-0123456789"), prefix=prefix, timeout=2)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        at = parse_instant("2026-12-01T10:30:00")
        key = store.keys("acme", CONSUMER).attempts
        await raw.zadd(key, {f"{int(at.timestamp() * 1000) - 60_000}:old-call": int(at.timestamp() * 1000) - 60_000})
        assert await store.record_attempt("acme", CONSUMER, Attempt(at, "c1", "spring-26", "L-1"), "0")
        labelled = Attempt(parse_instant("2026-12-01T10:31:00"), "c2", "spring-26", "")
        assert await store.record_attempt("acme", CONSUMER, labelled, "1")
        history = await store.history("acme", CONSUMER)
        attempts = sorted(history.state.attempts, key=lambda a: a.at)
        assert [(a.call_id, a.campaign, a.lead) for a in attempts] == [
            ("old-call", "", ""),
            ("c1", "spring-26", "L-1"),
            ("c2", "spring-26", ""),
        ]
        # The same call recorded twice is still one member: its labels are part of it, unchanged.
        snapshot = await store.snapshot("acme", CONSUMER, parse_instant("2026-12-01T10:32:00"))
        await store.record_attempt("acme", CONSUMER, labelled, snapshot.version)
        assert len((await store.history("acme", CONSUMER)).state.attempts) == 3
    finally:
        await raw.aclose()
        await store.close()
