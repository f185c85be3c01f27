"""The refusal journal under kill -9, torn bytes and several guards, with real `npv-guard serve`
processes and a real redis-server that comes and goes (issue 17, items 1, 4 and 8)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_api_redis_down import wait_for
from tests.support.api_server import ApiServer
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

CHECK = {"caller": "0162000001", "at": "2026-12-01T10:30:00"}
LATER = "2026-12-02T10:30:00"  # a day after the refusals: inside their 60-day block


@pytest.fixture
def servers() -> Iterator[Callable[..., ApiServer]]:
    made: list[ApiServer] = []

    def make(*args: Any, **kwargs: Any) -> ApiServer:
        # The servers' clock replays Tuesday morning: refusals are dated by it (issue 17, item 3).
        kwargs.setdefault("now", "2026-12-01T10:30:00")
        made.append(ApiServer(*args, redis_timeout_ms=200, **kwargs))
        return made[-1]

    yield make
    for server in made:
        server.cleanup()


def refuse(api: ApiServer, callee: str) -> None:
    status, _, answer = api.request("POST", "/v1/refusals", {"callee": callee})
    assert status == 200 and answer["journaled"] is True, answer


def codes(api: ApiServer, callee: str, at: str = LATER) -> set[str]:
    status, _, answer = api.request("POST", "/v1/check", {**CHECK, "callee": callee, "at": at})
    assert status == 200, answer
    return {reason["code"] for reason in answer["reasons"]}


def refusals(api: ApiServer, callee: str) -> list[dict[str, Any]]:
    status, _, history = api.request("GET", f"/v1/history?callee={callee}")
    return list(history["refusals"]) if status == 200 else []


def gauge(api: ApiServer, name: str) -> float:
    status, _, body = api.request("GET", "/metrics", professional=None)
    assert status == 200
    found = re.search(rf"^{name} (\S+)$", body.decode(), re.MULTILINE)
    assert found, name
    return float(found.group(1))


def test_a_torn_line_does_not_swallow_the_next_refusal(own_redis: RedisServer, servers: Any) -> None:
    """The issue's repro: Redis down, two refusals journaled, kill -9, torn bytes at the end of the
    journal (and a line of invalid UTF-8), restart, one more refusal, kill -9, Redis back, start:
    all three are replayed."""
    callees = ["0612350001", "0612350002", "0612350003"]
    own_redis.kill()
    api = servers(own_redis.url).start()
    refuse(api, callees[0])
    refuse(api, callees[1])
    assert gauge(api, "npv_guard_journal_pending") == 2  # serve's /metrics used to say 0
    api.kill()
    with api.journal_path.open("ab") as handle:
        handle.write(b"\xc3\x28 not UTF-8\n")  # used to crash serve at start
        handle.write(b'{"op": "refusal", "id": "torn0000", "dig')
    api.start()
    refuse(api, callees[2])  # before the fix: glued to the torn bytes, lost at the next load
    assert gauge(api, "npv_guard_journal_pending") == 3
    assert gauge(api, "npv_guard_journal_unreadable_lines") == 2  # the bad line, the torn tail (cut)
    api.kill()
    own_redis.start()  # same port, empty: only the replay brings the refusals back
    api.start()
    for callee in callees:
        assert [r["source"] for r in wait_for(lambda c=callee: refusals(api, c))] == ["operator"]
        assert "REFUSAL_BLOCK" in codes(api, callee)
    wait_for(lambda: api.journal_path.read_bytes() == b"")  # replayed, then compacted
    assert gauge(api, "npv_guard_journal_pending") == 0


def test_fail_open_guard_sees_a_peers_journaled_refusal(own_redis: RedisServer, servers: Any, tmp_path: Path) -> None:
    """Two guards of one host, their journals in one directory: B (fail_open) rejects a pair A
    journaled while Redis is down; once A is dead and Redis back, B replays it, exactly once."""
    refused, other = "0612360001", "0612360002"
    a = servers(own_redis.url, journal_path=tmp_path / "a.journal").start()
    b = servers(own_redis.url, journal_path=tmp_path / "b.journal", fail_open=True).start()
    own_redis.kill()
    assert codes(b, refused, CHECK["at"]) == set()  # fail-open: allowed, stateful rules not evaluated
    refuse(a, refused)
    assert codes(b, refused, CHECK["at"]) == {"STATE_UNAVAILABLE"}  # before: allowed
    assert codes(b, other, CHECK["at"]) == set()  # fail-open still holds for the other consumers
    a.kill()
    assert codes(b, refused, CHECK["at"]) == {"STATE_UNAVAILABLE"}  # a dead writer's refusals count too
    own_redis.start()
    wait_for(lambda: a.journal_path.read_bytes() == b"")  # B adopted A's journal: replayed, compacted
    assert [r["source"] for r in refusals(b, refused)] == ["operator"]
    assert "REFUSAL_BLOCK" in codes(b, refused)
    assert "adopted the journal" in b.log()
    a.start()  # A's lock is free again: it starts, finds nothing to replay
    assert "still to replay" not in a.log().split("API listening")[-1]
    assert [r["source"] for r in refusals(a, refused)] == ["operator"]  # once, not twice
    assert "REFUSAL_BLOCK" in codes(a, refused)
