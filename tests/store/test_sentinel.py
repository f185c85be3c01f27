"""Redis behind Sentinel: a real master, a replica and a redis-sentinel started on loopback. A
primary failover is followed without a restart: exchanges fail (the guard fails closed) only while
the switch lasts, and a refusal taken meanwhile is journaled, then replayed into the new master."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from npv_guard.core.model import Attempt, Refusal, RefusalSource
from npv_guard.doctor import OK, redis_durability
from npv_guard.store import ConsumerHasher, Store, StoreUnavailable
from tests.agi.test_agi_server import FakeAsterisk, headers, port_of
from tests.support.guard import GuardProcess
from tests.support.redis_servers import RedisSentinelSet, RedisServer, free_tcp_port

pytestmark = pytest.mark.redis

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def sentinel_set() -> Iterator[RedisSentinelSet]:
    servers = RedisSentinelSet().start()
    yield servers
    servers.cleanup()


def _store(servers: RedisSentinelSet, prefix: str, wait_replicas: int = 0) -> Store:
    # A dead sentinel listed first: the client must skip it.
    addresses = [("127.0.0.1", free_tcp_port()), ("127.0.0.1", servers.sentinel_port)]
    return Store.connect(
        "redis://127.0.0.1:1/0",  # the host:port of the URL is not used behind Sentinel
        ConsumerHasher("sentinel-test-secret-0123"),
        sentinels=addresses,
        sentinel_master=servers.MASTER_NAME,
        prefix=prefix,
        timeout=0.5,
        wait_replicas=wait_replicas,
    )


def _wait_until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "the sentinel never finished the switchover"
        time.sleep(0.05)


async def test_the_same_store_follows_a_switchover(sentinel_set: RedisSentinelSet) -> None:
    store = _store(sentinel_set, "s" + uuid.uuid4().hex[:6])
    try:
        snapshot = await store.snapshot("lab", "+33612345678", AT)
        assert await store.record_attempt("lab", "+33612345678", Attempt(AT, "c1"), snapshot.version)
        assert sentinel_set.master_port() == sentinel_set.master.port
        # A switchover: the old master stays up as a replica and answers writes with READONLY.
        sentinel_set.sentinel_cli("SENTINEL", "FAILOVER", sentinel_set.MASTER_NAME)
        _wait_until(lambda: sentinel_set.master_port() == sentinel_set.replica.port)
        _wait_until(lambda: "role:slave" in sentinel_set.master.cli("INFO", "replication"))
        deadline = time.monotonic() + 30
        recorded = False
        while not recorded and time.monotonic() < deadline:
            try:
                snapshot = await store.snapshot("lab", "+33612345678", AT)
                recorded = await store.record_attempt(
                    "lab", "+33612345678", Attempt(AT.replace(minute=31), "c2"), snapshot.version
                )
            except StoreUnavailable:
                await asyncio.sleep(0.05)
        assert recorded, "the same Store never wrote to the new master"
        assert sentinel_set.replica.cli("ZCARD", _keys(sentinel_set.replica, "*:a")[0]) == "2"
    finally:
        await store.close()


async def test_a_refusal_no_replica_holds_is_not_acknowledged(sentinel_set: RedisSentinelSet) -> None:
    """With redis.wait_replicas = 1 a refusal counts as stored once a replica holds it: the master
    alone could lose it in a failover. Short of a replica the store fails (the guard journals)."""
    store = _store(sentinel_set, "w" + uuid.uuid4().hex[:6], wait_replicas=1)
    refusal = Refusal(AT, RefusalSource.AGENT, "call-1")
    try:
        digest = store.digest("+33612345678")
        await store.record_refusal("lab", digest, refusal, None, "refusal-1")
        assert sentinel_set.replica.cli("ZCARD", _keys(sentinel_set.replica, "*:r")[0]) == "1"
        sentinel_set.replica.kill()
        with pytest.raises(StoreUnavailable, match="NotReplicated"):
            await store.record_refusal("lab", digest, Refusal(AT, RefusalSource.AGENT, "call-2"), None, "refusal-2")
    finally:
        await store.close()


def _keys(server: RedisServer, pattern: str) -> list[str]:
    keys = server.cli("KEYS", pattern).split()
    assert keys
    return keys


async def test_doctor_checks_durability_on_the_master_and_its_replicas(sentinel_set: RedisSentinelSet) -> None:
    findings = await redis_durability(
        "redis://127.0.0.1:1/0",
        cluster=False,
        socket_s=2.0,
        sentinels=[("127.0.0.1", sentinel_set.sentinel_port)],
        sentinel_master=sentinel_set.MASTER_NAME,
    )
    texts = [text for _, text in findings]
    assert f"master 127.0.0.1:{sentinel_set.master.port}: AOF persistence on (appendonly yes)" in texts
    assert f"replica 127.0.0.1:{sentinel_set.replica.port}: AOF persistence on (appendonly yes)" in texts
    sentinel_set.replica.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    findings = await redis_durability(
        "redis://127.0.0.1:1/0",
        cluster=False,
        socket_s=2.0,
        sentinels=[("127.0.0.1", sentinel_set.sentinel_port)],
        sentinel_master=sentinel_set.MASTER_NAME,
    )
    warned = [text for level, text in findings if level != OK]
    assert warned == [
        f"replica 127.0.0.1:{sentinel_set.replica.port}: maxmemory-policy allkeys-lru: under memory pressure "
        "Redis evicts attempts, refusals and consents (set noeviction: writes then fail, and the guard fails closed)"
    ]


CONSUMERS = [f"06{n:08d}" for n in range(11000000, 11000160)]
REFUSER = "0698765432"


async def test_a_guard_under_load_fails_closed_only_during_a_primary_failover(
    sentinel_set: RedisSentinelSet,
) -> None:
    """`npv-guard agi` behind Sentinel at ~20 checks/s; the master is SIGKILLed mid-run."""
    guard = GuardProcess(
        redis_url="redis://127.0.0.1:1/0",
        carrier_port=5070,
        key_prefix="sen" + uuid.uuid4().hex[:6],
        now="2026-12-01T10:30:00",
        mode="agi",
        agi_port=free_tcp_port(),
        redis={
            "sentinels": sentinel_set.sentinels,
            "sentinel_master": sentinel_set.MASTER_NAME,
            "wait_replicas": 1,
        },
    )
    csv = guard.dir / "consents.csv"
    csv.write_text("".join(f"{number},2026-09-01\n" for number in [*CONSUMERS, REFUSER]))
    imported = guard.cli("consent", "import", "--professional", "lab", str(csv))
    assert imported.returncode == 0, imported.stderr
    guard.start()
    try:
        port = port_of(guard)
        refuser = FakeAsterisk(port)
        await refuser.session(headers(caller="0162000001", args=(REFUSER, "", "", "")))
        assert refuser.variables["NPV_GUARD_VERDICT"] == "ALLOW"

        results: list[tuple[float, str, str]] = []  # (start, verdict, reasons) in call order

        async def call(number: str) -> None:
            asterisk = FakeAsterisk(port)
            started = time.monotonic()
            await asterisk.session(headers(caller="0162000001", args=(number, "", "", "")))
            results.append((started, asterisk.variables["NPV_GUARD_VERDICT"], asterisk.variables["NPV_GUARD_REASONS"]))

        calls: list[asyncio.Task[None]] = []
        killed_at = 0.0
        refusal_done: asyncio.Task[list[str]] | None = None
        for index, number in enumerate(CONSUMERS):
            if index == 40:
                killed_at = time.monotonic()
                sentinel_set.master.kill()
                # The agent's *9 on the allowed call, while no master answers.
                refusal_done = asyncio.create_task(
                    refuser.session(headers(script="refusal", caller="0162000001", args=("agent",)))
                )
            calls.append(asyncio.create_task(call(number)))
            await asyncio.sleep(0.05)
        await asyncio.gather(*calls)
        assert refusal_done is not None
        await refusal_done
        assert refuser.variables["NPV_GUARD_REFUSED"] == "1"
        refusal = guard.wait_audit("refusal")[0]
        assert refusal["recorded"] is True and refusal["journaled"] is True
        assert sentinel_set.master_port() == sentinel_set.replica.port  # the sentinel promoted it

        results.sort()
        before = [verdict for started, verdict, _ in results if started < killed_at]
        assert before == ["ALLOW"] * 40
        after = [(verdict, reasons) for started, verdict, reasons in results if started >= killed_at]
        first_allowed = next(i for i, (verdict, _) in enumerate(after) if verdict == "ALLOW")
        # Rejected while the switch lasted, as the state was unavailable; never again once the
        # new master answered, and never restarted.
        assert all(outcome == ("REJECT", "STATE_UNAVAILABLE") for outcome in after[:first_allowed])
        assert after[first_allowed:] == [("ALLOW", "")] * (len(after) - first_allowed)
        assert first_allowed > 0 and len(after) - first_allowed >= 60

        # The new master has no replica yet: with wait_replicas = 1 the refusal stays journaled
        # (and blocks the pair from there) until the old master is back, as its replica.
        blocked = FakeAsterisk(port)
        await blocked.session(headers(caller="0162000001", args=(REFUSER, "", "", "")))
        assert blocked.variables["NPV_GUARD_VERDICT"] == "REJECT"
        assert not guard.audit("journal_replay")
        sentinel_set.master.start()
        guard.wait_audit("journal_replay", timeout=30)
        again = FakeAsterisk(port)
        await again.session(headers(caller="0162000001", args=(REFUSER, "", "", "")))
        assert again.variables["NPV_GUARD_VERDICT"] == "REJECT"
        assert "REFUSAL_BLOCK" in again.variables["NPV_GUARD_REASONS"]
        refusals = _keys(sentinel_set.replica, "*:r")
        assert len(refusals) == 1 and sentinel_set.replica.cli("ZCARD", refusals[0]) == "1"  # stored once
        assert guard.process is not None and guard.process.poll() is None
    finally:
        guard.stop()
