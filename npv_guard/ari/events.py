"""ARI's events websocket, read by a lean RFC 6455 client.

aioari read the events over aiohttp's websocket client, one awaited message and one listener
walk per event: after the REST requests, most of the guard's CPU per call went there. Here one
`asyncio.Protocol` parses every frame a read brought and hands each event, decoded, to the
callback at once (`CallService.dispatch` never blocks).

As much of RFC 6455 as Asterisk's res_http_websocket speaks, client side: unmasked text frames
from the server (fragmented ones are put together), ping answered with pong, close answered
with close. Anything else (a masked or reserved-bit frame, an unknown opcode, a message larger
than MAX_MESSAGE_BYTES) ends the connection, and the supervisor reconnects and reconciles. A
message that is not a JSON object is logged and skipped: bad input never ends the guard.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import ssl
import struct
import urllib.parse
from collections.abc import Callable
from typing import Any

log = logging.getLogger("npv_guard.ari")

HANDSHAKE_TIMEOUT_S = 10.0
MAX_HANDSHAKE_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # an event is a few KB; a channel with huge variables, less than this
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

EventCallback = Callable[[dict[str, Any]], None]


class WebsocketError(Exception):
    """The server did not upgrade, or broke the websocket protocol."""


class EventStream:
    """The app's event websocket: `connect()` upgrades (raises when Asterisk refuses), `run()`
    returns once the connection is closed (by either side or a protocol error), `close()` ends it."""

    def __init__(self, url: str, username: str, password: str, app: str, on_event: EventCallback) -> None:
        parts = urllib.parse.urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._tls else 80)
        query = urllib.parse.urlencode({"app": app, "subscribeAll": "false"})
        self._target = parts.path.rstrip("/") + "/ari/events?" + query
        self._credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._on_event = on_event
        self._protocol: _EventProtocol | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        request = (
            f"GET {self._target} HTTP/1.1\r\nHost: {netloc}:{self._port}\r\n"
            f"Authorization: Basic {self._credentials}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode("ascii")
        context = ssl.create_default_context() if self._tls else None
        protocol = _EventProtocol(self._on_event, _accept_of(key))
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            transport, _ = await loop.create_connection(lambda: protocol, self._host, self._port, ssl=context)
            try:
                transport.write(request)
                await protocol.upgraded
            except BaseException:
                transport.abort()
                raise
        self._protocol = protocol

    async def run(self) -> None:
        if self._protocol is None:
            raise WebsocketError("not connected")
        await self._protocol.closed

    async def close(self) -> None:
        protocol = self._protocol
        if protocol is not None:
            protocol.close(1000)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(protocol.closed), 1.0)


def _accept_of(key: str) -> bytes:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest())


class _EventProtocol(asyncio.Protocol):
    def __init__(self, on_event: EventCallback, accept: bytes) -> None:
        loop = asyncio.get_running_loop()
        self._on_event = on_event
        self._accept = accept
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._fragments: list[bytes] | None = None  # a fragmented text message being put together
        self._fragment_bytes = 0
        self._closing = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or WebsocketError("connection closed during the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            if not self.upgraded.done() and not self._handshake():
                return
            self._frames()
        except WebsocketError as error:
            log.warning("ARI websocket: %s: closing it", error)
            if not self.upgraded.done():
                self.upgraded.set_exception(error)
            self.close(1002)

    # ------------------------------------------------------------------ parsing

    def _handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HANDSHAKE_BYTES:
                raise WebsocketError("upgrade answer too large")
            return False
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        status, *lines = head.split("\r\n")
        parts = status.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "101":
            raise WebsocketError(f"upgrade refused: {status[:80]!r}")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept", "").encode("latin-1") != self._accept:
            raise WebsocketError("upgrade answer without the right Sec-WebSocket-Accept")
        self.upgraded.set_result(None)
        return True

    def _frames(self) -> None:
        buffer = self._buffer
        start = 0
        try:
            while not self._closing:
                available = len(buffer) - start
                if available < 2:
                    return
                first, second = buffer[start], buffer[start + 1]
                if first & 0x70:
                    raise WebsocketError("frame with reserved bits set")
                if second & 0x80:
                    raise WebsocketError("masked frame from the server")
                length = second & 0x7F
                offset = 2
                if length == 126:
                    if available < 4:
                        return
                    (length,) = struct.unpack_from("!H", buffer, start + 2)
                    offset = 4
                elif length == 127:
                    if available < 10:
                        return
                    (length,) = struct.unpack_from("!Q", buffer, start + 2)
                    offset = 10
                if length > MAX_MESSAGE_BYTES:
                    raise WebsocketError(f"frame of {length} bytes, more than {MAX_MESSAGE_BYTES}")
                if available < offset + length:
                    return
                payload = bytes(buffer[start + offset : start + offset + length])
                start += offset + length
                self._frame(first & 0x80 != 0, first & 0x0F, payload)
        finally:
            del buffer[:start]

    def _frame(self, final: bool, opcode: int, payload: bytes) -> None:
        if opcode >= _CLOSE:  # control frames: never fragmented, at most 125 bytes
            if not final or len(payload) > 125:
                raise WebsocketError("fragmented or oversized control frame")
            if opcode == _PING:
                self._send(_PONG, payload)
            elif opcode == _CLOSE:
                self.close(1000)
            elif opcode != _PONG:
                raise WebsocketError(f"unknown control opcode {opcode:#x}")
            return
        if opcode == _CONTINUATION:
            if self._fragments is None:
                raise WebsocketError("continuation frame without a message")
            self._fragment_bytes += len(payload)
            if self._fragment_bytes > MAX_MESSAGE_BYTES:
                raise WebsocketError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
            self._fragments.append(payload)
            if final:
                payload, self._fragments = b"".join(self._fragments), None
                self._message(payload)
            return
        if self._fragments is not None:
            raise WebsocketError("new message inside a fragmented one")
        if opcode not in (_TEXT, _BINARY):
            raise WebsocketError(f"unknown opcode {opcode:#x}")
        if not final:
            self._fragments, self._fragment_bytes = [payload], len(payload)
            return
        self._message(payload)

    def _message(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            log.warning("ARI websocket: a message that is not JSON (%d bytes): skipped", len(payload))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            log.warning("ARI websocket: a message that is not an event: skipped")
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("ARI event %s could not be handled", event["type"])

    # ------------------------------------------------------------------ writing

    def _send(self, opcode: int, payload: bytes) -> None:
        """A client frame: final, masked (RFC 6455 5.3), control-sized."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        transport.write(bytes((0x80 | opcode, 0x80 | len(masked))) + mask + masked)

    def close(self, code: int) -> None:
        """Send a close frame (once) and close the connection."""
        if self._closing:
            return
        self._closing = True
        if self.upgraded.done():
            self._send(_CLOSE, struct.pack("!H", code))
        if self._transport is not None:
            self._transport.close()
        elif not self.closed.done():
            self.closed.set_result(None)
