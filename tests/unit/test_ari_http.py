"""The ARI port's own HTTP/1.1 client against a loopback server that answers as scripted.

The real Asterisk is in tests/e2e; these pin what Asterisk rarely does on cue: a kept-alive
connection closed while idle, a chunked answer (a proxy in front of ARI), an error status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from npv_guard.ari.port import AioAriPort
from npv_guard.observability import Metrics

Answer = Callable[[int, bytes], bytes]  # (request number on its connection, request head) -> raw answer


class Server:
    def __init__(self, answer: Answer, close_after: int | None = None) -> None:
        self.answer = answer
        self.close_after = close_after  # requests per connection before the server closes it
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while self.close_after is None or served < self.close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                head += await reader.readexactly(length)
                self.requests.append(head)
                writer.write(self.answer(served, head))
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def no_content(_: int, __: bytes) -> bytes:
    return b"HTTP/1.1 204 No Content\r\nServer: Asterisk\r\nContent-Length: 0\r\n\r\n"


def counted(metrics: Metrics, operation: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "npv_guard_ari_requests_total", {"operation": operation, "outcome": outcome}
    )
    return value or 0.0


async def test_requests_reuse_one_kept_alive_connection_and_say_who_they_are() -> None:
    server = Server(no_content)
    async with server as url:
        port = AioAriPort(url, "npvguard", "secret", Metrics())
        assert await port.answer("1733046600.42")
        assert await port.hangup("1733046600.42", 21)
        assert await port.set_var("chan/../x", "CDR(npv_campaign)", "spring 26")
        await port.close()
    assert server.connections == 1
    first, second, third = server.requests
    assert first.startswith(b"POST /ari/channels/1733046600.42/answer HTTP/1.1\r\n")
    assert b"Authorization: Basic bnB2Z3VhcmQ6c2VjcmV0\r\n" in first
    assert second.startswith(b"DELETE /ari/channels/1733046600.42?reason_code=21 HTTP/1.1\r\n")
    # A channel id is one path segment; values are percent-encoded (a space is not a "+").
    assert third.startswith(
        b"POST /ari/channels/chan%2F..%2Fx/variable?variable=CDR%28npv_campaign%29&value=spring%2026 HTTP/1.1"
    )


async def test_a_connection_closed_while_idle_is_replaced_and_the_request_sent_once_more() -> None:
    server = Server(no_content, close_after=1)
    async with server as url:
        port = AioAriPort(url, "u", "p", metrics := Metrics())
        assert await port.ring("a")
        await asyncio.sleep(0.05)  # the server has closed the first connection by now
        assert await port.ring("b")
        await port.close()
    assert server.connections == 2
    assert [r.split(b" ")[1] for r in server.requests] == [b"/ari/channels/a/ring", b"/ari/channels/b/ring"]
    assert counted(metrics, "ring", "ok") == 2


async def test_a_chunked_answer_is_read_whole_and_the_connection_reused() -> None:
    body = json.dumps({"value": "ALLOW"}).encode()

    def chunked(_: int, __: bytes) -> bytes:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:]))
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"

    server = Server(chunked)
    async with server as url:
        port = AioAriPort(url, "u", "p", Metrics())
        assert await port.get_var("c", "NPV_GUARD_VERDICT") == "ALLOW"
        assert await port.get_var("c", "NPV_GUARD_VERDICT") == "ALLOW"
        await port.close()
    assert server.connections == 1


async def test_an_error_status_fails_the_operation_and_is_counted() -> None:
    def not_found(_: int, __: bytes) -> bytes:
        message = b'{"message": "Channel not found"}'
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message)

    server = Server(not_found)
    async with server as url:
        port = AioAriPort(url, "u", "p", metrics := Metrics())
        assert not await port.hangup("gone")
        assert await port.get_var("gone", "X") is None
        await port.close()
    assert counted(metrics, "hangup", "failed") == 1
    assert counted(metrics, "getChannelVar", "failed") == 1


async def test_nothing_listening_fails_the_operation_without_raising() -> None:
    server = Server(no_content)
    async with server as url:
        pass
    port = AioAriPort(url, "u", "p", metrics := Metrics())
    assert not await port.answer("c")
    await port.close()
    assert counted(metrics, "answer", "failed") == 1


async def test_variables_set_together_go_in_one_request_where_asterisk_has_it() -> None:
    server = Server(no_content)
    async with server as url:
        port = AioAriPort(url, "u", "p", metrics := Metrics())
        port.multi_set = True
        results = await asyncio.gather(
            port.set_var("c", "NPV_GUARD_VERDICT", "ALLOW"),
            port.set_var("c", "NPV_GUARD_REASONS", ""),
            port.set_var("other", "NPV_GUARD_VERDICT", "REJECT"),
        )
        assert await port.set_var("c", "NPV_GUARD_PROFESSIONAL", "lab")  # a later tick: its own request
        await port.close()
    assert results == [True, True, True]
    bodies = [r.split(b"\r\n\r\n", 1) for r in server.requests]
    assert [head.split(b" ")[1] for head, _ in bodies] == [
        b"/ari/channels/c/variables",
        b"/ari/channels/other/variables",
        b"/ari/channels/c/variables",
    ]
    assert json.loads(bodies[0][1]) == {"variables": {"NPV_GUARD_VERDICT": "ALLOW", "NPV_GUARD_REASONS": ""}}
    assert counted(metrics, "setChannelVars", "ok") == 3
