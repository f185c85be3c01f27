"""Hostile bytes in slow pieces against a real `npv-guard serve` (hypothesis, bounded): whatever
arrives, however split and paused, the server answers HTTP with a JSON error or closes the
connection by itself within its deadlines, never echoes a number, and keeps serving. Examples
per run: NPV_GUARD_FUZZ_HTTP_EXAMPLES (default 25; each lasts up to a couple of seconds)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api_server import ApiServer
from tests.support.redis_servers import RedisServer
from tests.support.sockets import closed_by_server

pytestmark = pytest.mark.redis

EXAMPLES = int(os.environ.get("NPV_GUARD_FUZZ_HTTP_EXAMPLES", "25"))
NUMBER = b"0612345678"
PATIENCE_S = 15.0  # the server's deadlines are 1 s

pieces = st.one_of(
    st.sampled_from([
        b"GET /v1/history?callee=" + NUMBER + b" HTTP/1.1\r\n", b"POST /v1/check HTTP/1.1\r\n", b"Host: x\r\n",
        b"Content-Length: 40\r\n", b"Content-Length: " + NUMBER + b"\r\n", b"Transfer-Encoding: chunked\r\n",
        b"Content-Type: application/json\r\n", b"\r\n", b"\r\n\r\n", b"5\r\nabcde\r\n", b"0\r\n\r\n",
        b'{"callee": "' + NUMBER + b'"}', b"X-" + NUMBER + b": " + NUMBER + b"\r\n", b"Expect: 100-continue\r\n",
        b"Connection: keep-alive\r\n", b"\x00\xff", b" " * 100,
    ]),
    st.binary(max_size=64),
)  # fmt: skip


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[ApiServer]:
    server = ApiServer(
        redis_server.url,
        key_prefix=f"fuzz-{uuid.uuid4().hex[:8]}",
        log_level="info",
        api_settings={"header_timeout_s": 1, "body_timeout_s": 1, "idle_timeout_s": 1, "max_connections": 64},
    ).start()
    yield server
    server.cleanup()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(chunks=st.lists(st.tuples(pieces, st.sampled_from([0.0, 0.0, 0.01, 0.3])), max_size=8))
def test_slow_hostile_clients_are_answered_or_closed(api: ApiServer, chunks: list[tuple[bytes, float]]) -> None:
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    try:
        for data, pause in chunks:
            try:
                sock.sendall(data)
            except OSError:
                break  # closed by the server already: fine
            time.sleep(pause)
        received = closed_by_server(sock, PATIENCE_S)
    finally:
        sock.close()
    assert received is not None, "the server kept the connection open past every deadline"
    if received:
        assert received.startswith(b"HTTP/1."), received[:100]
    rest = received
    while rest:  # one or more answers (pipelined requests), each with its Content-Length
        head, _, rest = rest.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        length = _length(head)
        body, rest = rest[:length], rest[length:]
        assert rest == b"" or rest.startswith(b"HTTP/1."), received[:300]
        if b" 200 " not in status_line:
            assert b"application/json" in head, head
            assert set(json.loads(body)) == {"error"}
            assert NUMBER[2:] not in head + body


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_still_serving_after_the_fuzz(api: ApiServer) -> None:
    status, _, answer = api.request("GET", "/v1/openapi.json")
    assert status == 200 and "paths" in answer
    assert NUMBER[2:].decode() not in api.log()
