"""The HTTP listeners' connection discipline (`serve`'s API, the /healthz and /metrics server).

aiohttp has no read timeout of its own: a client that sends half a request line, or one byte a
second, keeps its connection (and a file descriptor) as long as it likes. `GuardedRunner` gives
every connection a deadline for what it is doing:

- idle (no byte of a request yet, or after an answer): `idle_timeout_s`;
- headers (from the first byte of a request to its last header): `header_timeout_s`, counted from
  that first byte, so trickling does not extend it;
- body (from the headers to the last byte of the body): `body_timeout_s`.

Past its deadline the connection is closed. At `max_connections`, a new connection first evicts
the connection that has waited longest without a request in its handler (idle or still sending
headers); when every connection is being answered, the newcomer gets a JSON 503 and is closed.

aiohttp's own refusals (unparsable request line, oversized header) are answered here too: JSON
with a stable code, never the input echoed back, and logged as one line without the request's
text (a request line or a header may carry a consumer number).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

log = logging.getLogger("npv_guard.http")

# aiohttp's own refusals, by status: the codes of the API's error vocabulary.
HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN_PROFESSIONAL",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    503: "STATE_UNAVAILABLE",
}
# Fixed texts for aiohttp's parser errors: theirs quote the offending bytes.
_PARSER_MESSAGES = {
    "BAD_REQUEST": "the request is not valid HTTP/1.1",
    "PAYLOAD_TOO_LARGE": "the request is larger than this server accepts",
}


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    max_connections: int = 512


def error_json(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


_BUSY_BODY = error_json("TOO_MANY_CONNECTIONS", "too many open connections: retry")
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Retry-After: 1\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class GuardedServer(Server):
    """aiohttp's connection manager, making `GuardedHandler`s and enforcing the connection cap."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        # What Server.__call__ does, with our handler class.
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def make_room(self) -> bool:
        """Room for one more connection: true when under the cap, or after closing the one that
        has waited longest without a request being answered."""
        handlers = [h for h in self.connections if isinstance(h, GuardedHandler) and not h.closing]
        if len(handlers) < self.limits.max_connections:
            return True
        waiting = [h for h in handlers if not h.answering]
        if not waiting:
            return False
        min(waiting, key=lambda h: h.since).expire("evicted at api.max_connections")
        return True


class GuardedHandler(RequestHandler):
    """One connection: aiohttp's request handler with a deadline for each phase."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.limits = manager.limits
        self.answering = False  # a request is in the application's hands
        self.closing = False
        self.refused = False
        self.since = 0.0
        self._phase = "idle"
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if isinstance(manager, GuardedServer) and not manager.make_room():
            self.refused = True
            log.warning("refused a connection: %d open, all being answered", manager.limits.max_connections)
            assert isinstance(transport, asyncio.Transport)
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._arm("idle", self.limits.idle_timeout_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        # aiohttp keeps the handler listed until its task ends: it no longer counts to the cap.
        self.closing = True
        self._disarm()
        if self.refused:
            return  # never registered with the manager nor started
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle" and not self.answering and data:
            self._arm("headers", self.limits.header_timeout_s)
        super().data_received(data)

    async def _handle_request(
        self, request: BaseRequest, start_time: float | None, request_handler: Any
    ) -> tuple[web.StreamResponse, bool]:
        self.answering = True
        if request.content.is_eof():
            self._disarm()
        else:
            self._arm("body", self.limits.body_timeout_s, request)
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self.answering = False
            if not self.closing:
                # aiohttp then reads or discards what is left of the body, or the next request
                # (pipelined, or after keep-alive): both bounded from here.
                self._arm("idle", self.limits.idle_timeout_s)

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """aiohttp's parser errors and unhandled exceptions: JSON, and a log line with the error's
        type only (its text quotes the request)."""
        if isinstance(exc, ConnectionError):
            # The client left (or its deadline closed the connection) while its request was read.
            raise ConnectionError("the client is gone")
        if status >= 500:
            log.error("internal error answering a request: %s", type(exc).__name__)
        else:
            log.info("refused a malformed request (HTTP %d, %s)", status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started: the connection is closed")
        code = HTTP_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL")
        text = _PARSER_MESSAGES.get(code, "the request could not be handled")
        if status >= 500:
            text = "internal error: see the guard's log"
        response = web.Response(body=error_json(code, text), status=status, content_type="application/json")
        response.force_close()
        return response

    # ---------------------------------------------------------------- deadlines

    def _arm(self, phase: str, seconds: float, request: BaseRequest | None = None) -> None:
        self._disarm()
        self._phase = phase
        self.since = self._loop.time()
        self._timer = self._loop.call_later(seconds, self._deadline, phase, request)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self, phase: str, request: BaseRequest | None) -> None:
        self._timer = None
        if phase == "body":
            if request is not None and request.content.is_eof():
                return  # the body is in; the application's own time is not ours to bound
            self.expire("body not received within api.body_timeout_s")
        elif phase == "headers":
            self.expire("request headers not received within api.header_timeout_s")
        elif not self.answering:
            self.expire("idle past api.idle_timeout_s")

    def expire(self, why: str) -> None:
        log.debug("closing a connection: %s", why)
        self.closing = True
        self._disarm()
        self.force_close()


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` whose connections are `GuardedHandler`s under `limits`."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        # aiohttp's keep-alive timer only ever closes idle connections: ours does that too.
        kwargs.setdefault("keepalive_timeout", limits.idle_timeout_s)
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self.limits,
            **plain._kwargs,
        )


async def start_site(runner: GuardedRunner, listen: str) -> None:
    """Bind HOST:PORT (IPv6 in brackets); the runner is set up first."""
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
