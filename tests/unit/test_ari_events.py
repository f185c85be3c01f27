"""The events websocket reader against a loopback server that upgrades and sends frames as scripted.

The real Asterisk is in tests/e2e (every ARI call there comes through this reader); these pin
what Asterisk does not do on cue: fragmented messages, pings, bad frames, a refused upgrade.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from npv_guard.ari.events import MAX_MESSAGE_BYTES, EventStream, WebsocketError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(opcode: int, payload: bytes, *, final: bool = True, masked: bool = False, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if final else 0) | rsv | opcode])
    mask = 0x80 if masked else 0
    if len(payload) < 126:
        head += bytes([mask | len(payload)])
    elif len(payload) < 65536:
        head += bytes([mask | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([mask | 127]) + struct.pack("!Q", len(payload))
    if masked:
        key = b"\x01\x02\x03\x04"
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def text(event: dict[str, Any]) -> bytes:
    return frame(0x1, json.dumps(event).encode())


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    assert second & 0x80, "a client frame is masked"
    length = second & 0x7F
    key = await reader.readexactly(4)
    payload = await reader.readexactly(length)
    return first & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Server:
    def __init__(self, script: Script, *, status: str = "101 Switching Protocols", accept: bool = True) -> None:
        self.script = script
        self.status = status
        self.accept = accept
        self.request = b""
        self.done = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.request = await reader.readuntil(b"\r\n\r\n")
            key = next(
                line.split(b":", 1)[1].strip()
                for line in self.request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest()) if self.accept else b"nope"
            writer.write(
                b"HTTP/1.1 %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                % (self.status.encode(), accept)
            )
            await self.script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.done.set()
            writer.close()


async def run_script(script: Script, **options: Any) -> tuple[list[dict[str, Any]], Server]:
    events: list[dict[str, Any]] = []
    server = Server(script, **options)
    async with server as url:
        stream = EventStream(url, "guard", "secret", "npv-guard", events.append)
        await stream.connect()
        await asyncio.wait_for(stream.run(), 5)  # returns once the connection is closed
        await stream.close()
    return events, server


async def test_events_come_through_whole_split_and_fragmented_and_the_upgrade_authenticates() -> None:
    big = {"type": "StasisStart", "channel": {"id": "c1", "name": "x" * 70000}}

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = text({"type": "A"}) + text({"type": "B"}) + text(big)
        for i in range(0, len(data), 7):  # a frame split over many reads, several frames in one
            writer.write(data[i : i + 7])
            await writer.drain()
        payload = json.dumps({"type": "C", "n": 1}).encode()
        writer.write(frame(0x1, payload[:5], final=False) + frame(0x0, payload[5:9], final=False))
        writer.write(frame(0x9, b"hi"))  # a ping between the fragments: answered, message intact
        writer.write(frame(0x0, payload[9:]))
        assert await read_client_frame(reader) == (0xA, b"hi")
        writer.write(frame(0x8, struct.pack("!H", 1000)))
        assert (await read_client_frame(reader))[0] == 0x8  # the close is answered

    events, server = await run_script(script)
    assert [e["type"] for e in events] == ["A", "B", "StasisStart", "C"]
    assert events[2] == big
    head = server.request.decode()
    assert head.startswith("GET /ari/events?app=npv-guard&subscribeAll=false HTTP/1.1\r\n")
    assert f"Authorization: Basic {base64.b64encode(b'guard:secret').decode()}" in head


async def test_a_message_that_is_not_an_event_is_skipped_and_a_bad_callback_ends_nothing() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(0x1, b"{not json") + frame(0x1, b"[1, 2]") + frame(0x1, b'{"type": 3}'))
        writer.write(frame(0x1, b'{"type": "Boom"}') + text({"type": "After"}))
        writer.write(frame(0x8, b""))
        await read_client_frame(reader)

    seen: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "Boom":
            raise RuntimeError("a consumer bug")
        seen.append(event["type"])

    async with Server(script) as url:
        stream = EventStream(url, "u", "p", "app", on_event)
        await stream.connect()
        await asyncio.wait_for(stream.run(), 5)
    assert seen == ["After"]


@pytest.mark.parametrize(
    "bad",
    [
        frame(0x1, b'{"type": "X"}', masked=True),  # the server must not mask
        frame(0x1, b'{"type": "X"}', rsv=0x40),  # no extension was negotiated
        frame(0x3, b"x"),  # reserved opcode
        frame(0x9, b"x", final=False),  # fragmented control frame
        frame(0x0, b"x"),  # continuation of nothing
        frame(0x1, b"{", final=False) + frame(0x1, b"}"),  # a new message inside a fragmented one
        b"\x81\x7f" + struct.pack("!Q", MAX_MESSAGE_BYTES + 1),  # larger than any event
    ],
)
async def test_a_protocol_error_closes_the_connection_after_the_events_before_it(bad: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(text({"type": "Before"}) + bad + text({"type": "Never"}))
        opcode, payload = await read_client_frame(reader)
        assert (opcode, payload) == (0x8, struct.pack("!H", 1002))
        await reader.read()  # the client closes its side

    events, _ = await run_script(script)
    assert [e["type"] for e in events] == ["Before"]


async def test_the_connection_closed_by_the_server_ends_run() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(text({"type": "Only"}))
        await writer.drain()

    events, _ = await run_script(script)
    assert [e["type"] for e in events] == ["Only"]


@pytest.mark.parametrize(
    "options",
    [{"status": "401 Unauthorized"}, {"status": "200 OK"}, {"accept": False}],
)
async def test_a_refused_or_wrong_upgrade_raises(options: dict[str, Any]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.5)

    async with Server(script, **options) as url:
        stream = EventStream(url, "u", "p", "app", lambda event: None)
        with pytest.raises(WebsocketError):
            await stream.connect()


async def test_nothing_listening_raises_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await EventStream(f"http://127.0.0.1:{port}", "u", "p", "app", lambda event: None).connect()
