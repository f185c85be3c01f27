"""A real `npv-guard serve` per test module, on the suite's real redis-server."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest

from tests.support.api_server import ApiServer
from tests.support.redis_servers import RedisServer

_numbers = itertools.count(10_000_000)
SERVER_NOW = "2026-12-01T10:30:00"  # Paris wall time, a Tuesday: opt-in regime in force


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[ApiServer]:
    # The server's clock replays a Tuesday morning: facts are recorded at its own instants (a
    # write's `at` may not stray from that clock), and checks read the state at those instants.
    server = ApiServer(redis_server.url, key_prefix=f"api-{uuid.uuid4().hex[:8]}", now=SERVER_NOW).start()
    yield server
    server.cleanup()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop and restart it."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def consumer() -> str:
    """A mobile number no other test uses: each test starts from an empty pair."""
    return f"06{next(_numbers) % 100_000_000:08d}"
