"""Slow and greedy clients against a real `npv-guard serve`: half-sent headers, one byte at a
time, bodies that never end, idle connections by the dozen. The server closes each within its
configured deadline (asserted as behaviour: the connection is closed long before the client is
done, and a fresh client is still served), and aiohttp's own refusals are JSON that echo nothing.

Deadlines are short (1-2 s) and the waits generous (15-20 s): no assertion on how long it took.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support import sockets
from tests.support.api_server import ApiServer
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

PATIENCE_S = 20.0  # far beyond every deadline below
CHECK = {"caller": "0162000001", "callee": "0612340099", "at": "2026-12-01T10:30:00"}


@pytest.fixture(scope="module")
def strict(redis_server: RedisServer) -> Iterator[ApiServer]:
    """Short deadlines, a cap the tests never reach."""
    server = ApiServer(
        redis_server.url,
        key_prefix=f"slow-{uuid.uuid4().hex[:8]}",
        api_settings={"header_timeout_s": 1, "body_timeout_s": 1, "idle_timeout_s": 2, "max_connections": 200},
    ).start()
    yield server
    server.cleanup()


@pytest.fixture
def capped(redis_server: RedisServer) -> Iterator[ApiServer]:
    """Deadlines the tests never reach, a cap of 5 connections."""
    server = ApiServer(
        redis_server.url,
        key_prefix=f"cap-{uuid.uuid4().hex[:8]}",
        api_settings={"header_timeout_s": 120, "body_timeout_s": 120, "idle_timeout_s": 120, "max_connections": 5},
    ).start()
    yield server
    server.cleanup()


def connect(api: ApiServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_server(sock: socket.socket, patience: float = PATIENCE_S) -> bytes | None:
    return sockets.closed_by_server(sock, patience)


def still_open(sock: socket.socket, wait: float) -> bool:
    return closed_by_server(sock, wait) is None


def served(api: ApiServer) -> bool:
    status, _, answer = api.request("GET", "/v1/openapi.json")
    return status == 200 and "paths" in answer


def check_request(api: ApiServer, body: bytes) -> bytes:
    return (
        f"POST /v1/check HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api.tokens['acme']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()


class Trickler(threading.Thread):
    """Sends `data` one byte every `pause` seconds until done or the server closes."""

    def __init__(self, sock: socket.socket, data: bytes, pause: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.data, self.pause = sock, data, pause
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        for byte in self.data:
            if self.stop.wait(self.pause):
                return
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                return
            self.sent += 1


# --- deadlines -----------------------------------------------------------------------------------


def test_partial_headers_are_closed(strict: ApiServer) -> None:
    sockets = [connect(strict) for _ in range(50)]
    try:
        for sock in sockets:
            sock.sendall(b"POST /v1/check HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        assert all(closed_by_server(sock) is not None for sock in sockets)
        assert served(strict)
    finally:
        for sock in sockets:
            sock.close()


def test_headers_trickled_a_byte_at_a_time_are_cut(strict: ApiServer) -> None:
    sock = connect(strict)
    request = b"GET /v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 100 + b"\r\n\r\n"
    trickler = Trickler(sock, request, 0.2)  # 25 s to send it all
    trickler.start()
    try:
        answer = closed_by_server(sock)
        assert answer == b""  # closed, nothing answered
        assert trickler.sent < len(request)  # long before the request was complete
        assert served(strict)
    finally:
        trickler.stop.set()
        sock.close()


def test_a_body_that_never_ends_is_cut(strict: ApiServer) -> None:
    body = json.dumps(CHECK).encode() + b" " * 200
    sock = connect(strict)
    sock.sendall(check_request(strict, body))
    trickler = Trickler(sock, body, 0.2)  # a minute for the body
    trickler.start()
    try:
        answer = closed_by_server(sock)
        assert answer is not None and b"HTTP/1.1 200" not in answer
        assert trickler.sent < len(body)
        assert served(strict)
    finally:
        trickler.stop.set()
        sock.close()


def test_a_whole_body_sent_slowly_within_the_deadline_is_answered(strict: ApiServer) -> None:
    body = json.dumps(CHECK).encode()
    sock = connect(strict)
    try:
        sock.sendall(check_request(strict, body))
        sock.sendall(body[:10])
        time.sleep(0.2)
        sock.sendall(body[10:])
        answer = closed_by_server(sock, 10) or b""
        assert answer.startswith(b"HTTP/1.1 200")  # then closed: idle after the answer
    finally:
        sock.close()


def test_idle_connections_are_closed(strict: ApiServer) -> None:
    sockets = [connect(strict) for _ in range(100)]
    try:
        assert all(closed_by_server(sock) == b"" for sock in sockets)
        assert served(strict)
    finally:
        for sock in sockets:
            sock.close()


def test_a_kept_alive_connection_is_closed_once_idle(strict: ApiServer) -> None:
    sock = connect(strict)
    try:
        sock.sendall(b"GET /v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = closed_by_server(sock)
        assert answer is not None and answer.startswith(b"HTTP/1.1 200")
    finally:
        sock.close()


# --- the connection cap --------------------------------------------------------------------------


def test_at_the_cap_idle_connections_make_room(capped: ApiServer) -> None:
    sockets = [connect(capped) for _ in range(15)]
    try:
        assert served(capped)  # evicts one of them
        open_ones = [sock for sock in sockets if still_open(sock, 0.5)]
        assert len(open_ones) < 5  # idle deadline 120 s: only the cap closed the others
    finally:
        for sock in sockets:
            sock.close()


def test_at_the_cap_with_every_connection_answering_a_newcomer_gets_json_503(capped: ApiServer) -> None:
    body = json.dumps(CHECK).encode()
    sockets = [connect(capped) for _ in range(5)]
    try:
        for sock in sockets:
            sock.sendall(check_request(capped, body) + body[:5])  # in the handler, waiting for the body
        time.sleep(0.5)
        answer = closed_by_server(connect(capped)) or b""
        assert answer.startswith(b"HTTP/1.1 503")
        payload = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert payload["error"]["code"] == "TOO_MANY_CONNECTIONS"
        for sock in sockets:  # the slow ones still get their answer
            sock.sendall(body[5:])
            sock.settimeout(10)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in sockets:
            sock.close()
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline and not served(capped):
        time.sleep(0.2)
    assert served(capped)


# --- aiohttp's own refusals ----------------------------------------------------------------------

NUMBER = "0612345678"


@pytest.mark.parametrize(
    "raw",
    [
        f"GET /v1/history?callee={NUMBER} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Callee {NUMBER}\r\n\r\n".encode(),
        f"GET /v1/history?callee={NUMBER}{'9' * 9000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        f"GET /v1/history?callee={NUMBER} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {NUMBER * 1000}\r\n\r\n".encode(),
        f"G\x01T /v1/history?callee={NUMBER} HTTP/1.1\r\n\r\n".encode(),
        f"GET /v1/history?callee={NUMBER} HTTP/9.9\r\n\r\n".encode(),
        f"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: {NUMBER}x\r\n\r\n".encode(),
    ],
    ids=["header-without-colon", "request-line-too-long", "header-too-long", "bad-method", "bad-version",
         "bad-content-length"],
)  # fmt: skip
def test_malformed_requests_get_json_that_echoes_nothing(strict: ApiServer, raw: bytes) -> None:
    log_before = len(strict.log())
    sock = connect(strict)
    try:
        sock.sendall(raw)
        answer = closed_by_server(sock, 10) or b""
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", head), answer[:200]
    assert b"application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] in {"BAD_REQUEST", "PAYLOAD_TOO_LARGE"}
    assert NUMBER[1:].encode() not in answer
    time.sleep(0.2)
    log = strict.log()[log_before:]
    assert NUMBER[1:] not in log
    assert "Traceback" not in log, log[-3000:]
