"""Redis stopped mid-run: fail closed (or open when configured), then recover when it is back."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from npv_guard.clock import parse_instant
from npv_guard.core.model import Basis, CallRequest, Policy, RefusalSource
from npv_guard.core.reasons import ReasonCode
from npv_guard.service import Guard
from npv_guard.store import ConsumerHasher, Store, StoreUnavailable
from tests.support.redis_servers import RedisServer, free_tcp_port

pytestmark = pytest.mark.redis

NPV, CONSUMER = "+33162000001", "+33612345678"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


def request(when: str = "2026-11-16T11:00") -> CallRequest:
    return CallRequest(NPV, CONSUMER, parse_instant(when))


async def test_redis_stopped_mid_run_fails_closed_then_recovers(own_redis: RedisServer) -> None:
    store = Store.connect(own_redis.url, ConsumerHasher("s" * 20), timeout=0.2)
    guard = Guard(Policy(), store)
    try:
        await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONSENT, "form")
        assert (await guard.check(request(), record=True)).allowed
        own_redis.kill()
        down = await guard.check(request("2026-11-17T11:00"), record=True)
        assert down.codes == (ReasonCode.STATE_UNAVAILABLE,)
        with pytest.raises(StoreUnavailable):
            await guard.record_refusal(NPV, CONSUMER, parse_instant("2026-11-17T11:00"), RefusalSource.AGENT)
        own_redis.start()  # an empty Redis (no persistence here): the guard reads it again at once
        back = await guard.check(request("2026-11-18T11:00"), record=True)
        assert back.codes == (ReasonCode.NO_CONSENT,)
        await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONSENT, "form")
        assert (await guard.check(request("2026-11-18T11:00"), record=True)).allowed
    finally:
        await store.close()


async def test_a_redis_restarted_between_two_decisions_is_read_again_at_once(own_redis: RedisServer) -> None:
    # The guard's idle connections were closed by the restart: the next decision must not fail on one.
    store = Store.connect(own_redis.url, ConsumerHasher("s" * 20), timeout=0.2)
    guard = Guard(Policy(), store)
    try:
        await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONSENT, "form")
        assert (await guard.check(request(), record=True)).allowed
        own_redis.kill()
        own_redis.start()  # empty, and without the scripts
        assert (await guard.check(request("2026-11-17T11:00"), record=True)).codes == (ReasonCode.NO_CONSENT,)
    finally:
        await store.close()


async def test_a_call_that_timed_out_never_hands_its_late_reply_to_the_next_one(own_redis: RedisServer) -> None:
    # The decisions share one pipelined connection: a late reply must be dropped, not delivered.
    other = "+33698765432"  # no consent: NO_CONSENT, where CONSUMER's reply would allow
    store = Store.connect(own_redis.url, ConsumerHasher("s" * 20), timeout=0.2)
    guard = Guard(Policy(), store)
    assert own_redis.process is not None
    try:
        await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONSENT, "form")
        assert (await guard.check(request(), record=False)).allowed
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            late = await guard.check(request("2026-11-17T11:00"), record=False)
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        assert late.codes == (ReasonCode.STATE_UNAVAILABLE,)
        nobody = await guard.check(CallRequest(NPV, other, parse_instant("2026-11-17T11:00")), record=False)
        assert nobody.codes == (ReasonCode.NO_CONSENT,)
        assert (await guard.check(request("2026-11-17T11:00"), record=False)).allowed
    finally:
        await store.close()


async def test_recovery_keeps_what_redis_persisted(own_redis: RedisServer) -> None:
    own_redis.stop()
    persistent = RedisServer(own_redis.port, appendonly=True)
    persistent.dir = own_redis.dir
    persistent.start()
    store = Store.connect(persistent.url, ConsumerHasher("s" * 20), timeout=0.2)
    guard = Guard(Policy(), store)
    try:
        await guard.grant_consent(NPV, CONSUMER, parse_instant("2026-09-01T12:00"), Basis.CONSENT, "form")
        for day in ("2026-11-16", "2026-11-17", "2026-11-18"):
            assert (await guard.check(request(f"{day}T11:00"), record=True)).allowed
        persistent.stop()  # SIGTERM: AOF flushed
        assert (await guard.check(request("2026-11-19T11:00"), record=True)).codes == (ReasonCode.STATE_UNAVAILABLE,)
        persistent.start()
        assert (await guard.check(request("2026-11-19T11:00"), record=True)).allowed
        assert (await guard.check(request("2026-11-20T11:00"), record=True)).codes == (ReasonCode.FREQUENCY_CAP,)
    finally:
        await store.close()
        persistent.stop()


async def test_fail_open_allows_when_configured(own_redis: RedisServer) -> None:
    store = Store.connect(own_redis.url, ConsumerHasher("s" * 20), timeout=0.2)
    try:
        own_redis.kill()
        verdict = await Guard(Policy(fail_open=True), store).check(request(), record=True)
        # The operator chose availability: the stateful rules are skipped and said to be.
        assert verdict.allowed
        assert "frequency_cap" in verdict.not_evaluated
    finally:
        await store.close()


async def test_unreachable_redis_answers_within_the_timeout() -> None:
    store = Store.connect(f"redis://127.0.0.1:{free_tcp_port()}/0", ConsumerHasher("s" * 20), timeout=0.2)
    try:
        started = time.monotonic()
        verdict = await Guard(Policy(), store).check(request(), record=True)
        assert verdict.codes == (ReasonCode.STATE_UNAVAILABLE,)
        assert time.monotonic() - started < 2.0
    finally:
        await store.close()
