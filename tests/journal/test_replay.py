"""Replaying journals into a real redis-server: once per refusal, whatever crashed when, and the
orphaned journal of a dead peer adopted only once its writer is gone."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from npv_guard.clock import parse_instant
from npv_guard.core.model import Policy, Refusal, RefusalSource
from npv_guard.journal import RefusalJournal
from npv_guard.service import Guard
from npv_guard.store import ConsumerHasher, Store
from tests.support.redis_servers import REDIS_CLI, RedisServer

pytestmark = pytest.mark.redis

CONSUMER = "+33612345678"
REFUSAL = Refusal(parse_instant("2026-12-01T10:31:00"), RefusalSource.OPERATOR, "call-1")


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[Store]:
    hasher = ConsumerHasher("replay-secret-0123456789")
    store = Store.connect(redis_server.url, hasher, prefix="j" + uuid.uuid4().hex[:8])
    yield store
    await store.close()


async def test_a_replay_repeated_after_a_crash_stores_the_refusal_once(store: Store, tmp_path: Path) -> None:
    """The crash between the Redis write and the `done` line: the next start replays it again."""
    path = tmp_path / "refusals.journal"
    journal = RefusalJournal(str(path), writer=True)
    entry = journal.add("acme", store.digest(CONSUMER), REFUSAL, None)
    await store.record_refusal(entry.professional, entry.digest, entry.refusal, entry.withdrawal, entry.id)
    journal.close()  # the crash: Redis has it, the journal still says pending
    restarted = RefusalJournal(str(path), writer=True)
    assert await Guard(Policy(), store, restarted).replay_journal() == 1
    history = await store.history("acme", CONSUMER)
    assert [(r.at, r.source) for r in history.state.refusals] == [(REFUSAL.at, REFUSAL.source)]
    assert len(restarted) == 0 and path.read_bytes() == b""
    restarted.close()


async def test_a_peer_journal_is_adopted_once_its_writer_is_gone(store: Store, tmp_path: Path) -> None:
    peer = RefusalJournal(str(tmp_path / "agi.journal"), writer=True)
    peer.add("acme", store.digest(CONSUMER), REFUSAL, None)
    guard = Guard(Policy(), store, RefusalJournal(str(tmp_path / "api.journal"), writer=True))
    assert guard.journal is not None and guard.journal.pending_for("acme", store.digest(CONSUMER))
    assert await guard.replay_journal() == 0  # its writer is alive: the refusal is its to replay
    assert (await store.history("acme", CONSUMER)).state.refusals == ()
    peer.close()  # the peer's process died
    assert await guard.replay_journal() == 1
    assert await guard.replay_journal() == 0
    assert len((await store.history("acme", CONSUMER)).state.refusals) == 1
    assert (tmp_path / "agi.journal").read_bytes() == b""
    assert not guard.journal.pending_for("acme", store.digest(CONSUMER))  # re-read: nothing waits
    assert len(RefusalJournal(str(tmp_path / "agi.journal"), writer=True)) == 0  # its restart: nothing to replay
    guard.journal.close()


# Keeps the server busy for 800 ms: commands sent meanwhile wait, then run.
BUSY = """local t0 = redis.call('TIME')
while true do
  local t = redis.call('TIME')
  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 800000 then return 1 end
end"""


async def test_a_refusal_whose_write_landed_after_a_timeout_is_stored_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis answers too late: the guard journals the refusal, yet the write it sent does land.
    The journal keeps the write's id, so its replay adds nothing (it used to add a second one)."""
    hasher = ConsumerHasher("replay-secret-0123456789")
    store = Store.connect(redis_server.url, hasher, prefix="j" + uuid.uuid4().hex[:8], timeout=0.2)
    journal = RefusalJournal(str(tmp_path / "refusals.journal"), writer=True)
    guard = Guard(Policy(), store, journal)
    try:
        # The refusal script loaded into Redis: during the busy spell it goes out as one EVALSHA.
        await store.record_refusal("beta", store.digest(CONSUMER), REFUSAL, None, "warm-up")
        busy = await asyncio.create_subprocess_exec(
            REDIS_CLI, "-p", str(redis_server.port), "EVAL", BUSY, "0", stdout=asyncio.subprocess.DEVNULL
        )
        while not _busy(redis_server.port):
            pass
        outcome = await guard.record_refusal("acme", CONSUMER, REFUSAL.at, REFUSAL.source, "call-1")
        assert outcome.journaled
        await busy.wait()
        assert len((await store.history("acme", CONSUMER)).state.refusals) == 1  # the late write landed
        assert await guard.replay_journal() == 1
        assert len((await store.history("acme", CONSUMER)).state.refusals) == 1
    finally:
        journal.close()
        await store.close()


def _busy(port: int) -> bool:
    """Whether the server leaves a PING unanswered for 50 ms (a plain socket: no client retries)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
        probe.sendall(b"PING\r\n")
        probe.settimeout(0.05)
        try:
            probe.recv(16)
        except TimeoutError:
            return True
    return False
