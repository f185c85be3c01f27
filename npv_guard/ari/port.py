"""The ARI operations the guard uses, over ARI's REST API, with every failure caught and logged.

Asterisk answers 404 when a channel hung up a moment ago; a call service must keep going, so
each operation returns whether it worked instead of raising.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

from npv_guard.observability import Metrics

log = logging.getLogger("npv_guard.ari")

REQUEST_TIMEOUT_S = 10.0
# Asterisk serves each HTTP connection on its own thread, within http.conf's sessionlimit (100).
MAX_CONNECTIONS = 32
IDLE_S = 10.0  # below Asterisk's http.conf session_keep_alive (15 s by default)
MAX_HEADER_LINES = 64
MAX_BODY_BYTES = 16 * 1024 * 1024  # GET /channels of a busy PBX; api-docs/channels.json is ~100 KB


class AioAriPort:
    """`AriPort` as a lean ARI REST client: keep-alive HTTP/1.1, ARI's JSON as it comes.

    A swagger client (aioari over aioswagger11) validated every request and wrapped every reply in
    model objects, and even aiohttp's client costs several times the few lines ARI needs: most of
    the guard's CPU per call went there. The paths and parameters here are ARI's own (Asterisk's
    rest-api/*.json); `connect()` reads which optional operations the server has.
    """

    def __init__(self, url: str, username: str, password: str, metrics: Metrics | None = None) -> None:
        self._http = _Http(url, username, password)
        self._requests = (metrics or Metrics()).ari_requests
        self._counted: dict[tuple[str, str], Any] = {}  # the counters by (operation, outcome): labels() is slow
        # Asterisk 20.20, 22.10 and 23.4 set several variables in one request; older ones do not.
        self.multi_set = False
        self._batches: dict[str, dict[str, str]] = {}
        self._batch_done: dict[str, asyncio.Future[bool]] = {}

    async def connect(self) -> bool:
        """Whether ARI answers with these credentials; learns the server's optional operations."""
        ok, channels = await self._request("api-docs", "GET", "/api-docs/channels.json", read=True)
        if not ok or not isinstance(channels, dict):
            return False
        paths = {str(api.get("path")) for api in channels.get("apis", []) if isinstance(api, dict)}
        self.multi_set = "/channels/{channelId}/variables" in paths
        return True

    async def close(self) -> None:
        await self._http.close()

    async def _request(
        self,
        what: str,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        *,
        read: bool = False,
    ) -> tuple[bool, Any]:
        """`read`: the caller wants the answer's JSON (otherwise a success's body, the channel an
        originate created say, is not even decoded)."""
        try:
            status, payload = await self._http.request(method, path, params, body)
            data = json.loads(payload) if payload and (read or status >= 300) else None
        except Exception as error:  # refused, reset, timed out, not JSON: the operation failed
            self._count(what, "failed")
            log.debug("ARI %s failed: %s: %s", what, type(error).__name__, error)
            return False, None
        if status >= 300:  # 404: the channel hung up a moment ago; 409: not in Stasis any more
            self._count(what, "failed")
            message = data.get("message") if isinstance(data, dict) else None
            log.debug("ARI %s failed: HTTP %d %s", what, status, message or "")
            return False, None
        self._count(what, "ok")
        return True, data

    def _count(self, what: str, outcome: str) -> None:
        counter = self._counted.get((what, outcome))
        if counter is None:
            counter = self._counted[(what, outcome)] = self._requests.labels(what, outcome)
        counter.inc()

    async def set_var(self, channel: str, name: str, value: str) -> bool:
        if not self.multi_set:
            ok, _ = await self._request(
                "setChannelVar", "POST", f"/channels/{_segment(channel)}/variable", {"variable": name, "value": value}
            )
            return ok
        # The variables a call sets together (asyncio.gather) go in one request: the first set_var
        # of the tick waits one loop turn for the others, then sends them all.
        batch = self._batches.get(channel)
        if batch is not None:
            batch[name] = value
            return await asyncio.shield(self._batch_done[channel])
        batch = self._batches[channel] = {name: value}
        done = self._batch_done[channel] = asyncio.get_running_loop().create_future()
        ok = False
        try:
            await asyncio.sleep(0)
            del self._batches[channel], self._batch_done[channel]
            ok, _ = await self._request(
                "setChannelVars", "POST", f"/channels/{_segment(channel)}/variables", body={"variables": batch}
            )
        finally:
            if self._batches.get(channel) is batch:
                del self._batches[channel], self._batch_done[channel]
            done.set_result(ok)
        return ok

    async def hangup(self, channel: str, cause: int | None = None) -> bool:
        params = {"reason_code": str(cause)} if cause is not None else None
        ok, _ = await self._request("hangup", "DELETE", f"/channels/{_segment(channel)}", params)
        return ok

    async def ring(self, channel: str) -> bool:
        ok, _ = await self._request("ring", "POST", f"/channels/{_segment(channel)}/ring")
        return ok

    async def answer(self, channel: str) -> bool:
        ok, _ = await self._request("answer", "POST", f"/channels/{_segment(channel)}/answer")
        return ok

    async def originate(
        self,
        endpoint: str,
        *,
        channel_id: str,
        app: str,
        app_args: str,
        caller_id: str,
        ring_timeout_s: int,
        originator: str,
    ) -> bool:
        params = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": app_args,
            "callerId": caller_id,
            "timeout": ring_timeout_s,
            "originator": originator,
        }
        ok, _ = await self._request("originate", "POST", f"/channels/{_segment(channel_id)}", params)
        return ok

    async def create_bridge(self, bridge_id: str) -> bool:
        # dtmf_events: without it Asterisk forwards RFC 4733 natively and the app never sees it.
        params = {"type": "mixing,dtmf_events", "name": bridge_id}
        ok, _ = await self._request("createBridge", "POST", f"/bridges/{_segment(bridge_id)}", params)
        return ok

    async def add_to_bridge(self, bridge_id: str, channels: list[str]) -> bool:
        params = {"channel": ",".join(channels)}
        ok, _ = await self._request("addChannel", "POST", f"/bridges/{_segment(bridge_id)}/addChannel", params)
        return ok

    async def destroy_bridge(self, bridge_id: str) -> bool:
        ok, _ = await self._request("destroyBridge", "DELETE", f"/bridges/{_segment(bridge_id)}")
        return ok

    async def play(self, channel: str, media: str, playback_id: str | None = None) -> bool:
        params = {"media": media, **({"playbackId": playback_id} if playback_id else {})}
        ok, _ = await self._request("play", "POST", f"/channels/{_segment(channel)}/play", params)
        return ok

    async def get_var(self, channel: str, name: str) -> str | None:
        ok, result = await self._request(
            "getChannelVar", "GET", f"/channels/{_segment(channel)}/variable", {"variable": name}, read=True
        )
        value = result.get("value") if ok and isinstance(result, dict) else None
        return value if isinstance(value, str) else None

    async def channels(self) -> list[dict[str, Any]] | None:
        ok, result = await self._request("channels.list", "GET", "/channels", read=True)
        return [item for item in result if isinstance(item, dict)] if ok and isinstance(result, list) else None

    async def bridges(self) -> list[dict[str, Any]] | None:
        ok, result = await self._request("bridges.list", "GET", "/bridges", read=True)
        return [item for item in result if isinstance(item, dict)] if ok and isinstance(result, list) else None

    async def send_message(self, to: str, sender: str, body: str) -> bool:
        ok, _ = await self._request(
            "sendMessage", "PUT", "/endpoints/sendMessage", {"to": to, "from": sender, "body": body}
        )
        return ok

    async def subscribe(self, app: str, sources: list[str]) -> bool:
        params = {"eventSource": ",".join(sources)}
        ok, _ = await self._request("subscribe", "POST", f"/applications/{_segment(app)}/subscription", params)
        return ok

    async def unsubscribe(self, app: str, sources: list[str]) -> bool:
        params = {"eventSource": ",".join(sources)}
        ok, _ = await self._request("unsubscribe", "DELETE", f"/applications/{_segment(app)}/subscription", params)
        return ok

    async def subscribed_endpoints(self, app: str) -> list[str] | None:
        ok, data = await self._request("applications.get", "GET", f"/applications/{_segment(app)}", read=True)
        endpoints = data.get("endpoint_ids") if ok and isinstance(data, dict) else None
        return [str(e) for e in endpoints] if isinstance(endpoints, list) else None

    async def continue_in_dialplan(self, channel: str) -> bool:
        ok, _ = await self._request("continue", "POST", f"/channels/{_segment(channel)}/continue")
        return ok

    async def user_event(self, app: str, name: str, variables: dict[str, str]) -> bool:
        """Post a user event to an app (the supervisor's heartbeat: it must come back on the websocket)."""
        params = {"application": app}
        body = {"variables": variables}
        ok, _ = await self._request("userEvent", "POST", f"/events/user/{_segment(name)}", params, body)
        return ok

    async def filter_events(self, app: str, types: Iterable[str]) -> bool:
        """Have Asterisk send the app only these event types (ARI since 13.26 / 16.3)."""
        body = {"allowed": [{"type": kind} for kind in types], "disallowed": []}
        ok, _ = await self._request("eventFilter", "PUT", f"/applications/{_segment(app)}/eventFilter", body=body)
        return ok


class HttpError(Exception):
    """The server's answer is not HTTP/1.1 as Asterisk writes it."""


class _Http:
    """HTTP/1.1 with keep-alive, as much of it as Asterisk's HTTP server speaks (every answer
    carries a Content-Length: ast_http_send), and chunked answers. A pool of connections, each one
    request at a time; a connection idle longer than Asterisk keeps it (http.conf
    session_keep_alive, 15 s by default) is not reused."""

    def __init__(self, url: str, username: str, password: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/") + "/ari"
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        self._headers = f"Host: {netloc}:{self._port}\r\nAuthorization: Basic {credentials}\r\n".encode()
        self._idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._open: set[asyncio.StreamWriter] = set()

    async def request(self, method: str, path: str, params: dict[str, Any] | None, body: Any) -> tuple[int, bytes]:
        query = _query(params) if params else ""
        target = self._prefix + path + ("?" + query if query else "")
        content = b"" if body is None else json.dumps(body).encode()
        kind = b"" if body is None else b"Content-Type: application/json\r\n"
        message = b"%s %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s" % (
            method.encode(),
            target.encode("ascii"),
            self._headers,
            kind,
            len(content),
            content,
        )
        async with self._slots, asyncio.timeout(REQUEST_TIMEOUT_S):
            reused = self._take()
            if reused is not None:
                try:
                    return await self._exchange(*reused, message)
                except _Closed:
                    pass  # closed by the server while idle, before reading the request: send it again
            return await self._exchange(*await self._connect(), message)

    def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self._idle:
            since, reader, writer = self._idle.pop()
            if now - since < IDLE_S and not writer.is_closing():
                return reader, writer
            self._discard(writer)
        return None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._tls or None)
        self._open.add(writer)
        return reader, writer

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes
    ) -> tuple[int, bytes]:
        keep = False
        try:
            try:
                writer.write(message)
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as error:
                if error.partial:
                    raise HttpError("connection closed in the response headers") from None
                raise _Closed() from None
            except ConnectionError:
                raise _Closed() from None
            except asyncio.LimitOverrunError:
                raise HttpError("response headers too large") from None
            status_line, *lines = head[:-4].split(b"\r\n")
            version, _, rest = status_line.partition(b" ")
            if not version.startswith(b"HTTP/1."):
                raise HttpError(f"not an HTTP status line: {status_line[:40]!r}")
            status = int(rest[:3])
            length: int | None = None
            chunked = False
            keep = version == b"HTTP/1.1"
            if len(lines) > MAX_HEADER_LINES:
                raise HttpError(f"more than {MAX_HEADER_LINES} response header lines")
            for line in lines:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    keep = value.strip().lower() == b"keep-alive" or (keep and value.strip().lower() != b"close")
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
            if chunked:  # not Asterisk's own, but a proxy in front of it may re-encode
                payload = await _read_chunked(reader)
            elif length is None:  # only a 204 or 304 may omit it; otherwise the body runs to the close
                keep = keep and status in (204, 304)
                payload = b"" if keep else await reader.read(MAX_BODY_BYTES)
            else:
                if length > MAX_BODY_BYTES:
                    raise HttpError(f"answer larger than {MAX_BODY_BYTES} bytes")
                payload = await reader.readexactly(length)
        except BaseException:
            keep = False
            raise
        finally:
            if keep:
                self._idle.append((time.monotonic(), reader, writer))
            else:
                self._discard(writer)
        return status, payload

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        writer.close()

    async def close(self) -> None:
        self._idle.clear()
        for writer in list(self._open):
            self._discard(writer)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip() or b"x", 16)
        if size == 0:
            while (await reader.readline()).strip():  # trailers, up to the empty line
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise HttpError(f"answer larger than {MAX_BODY_BYTES} bytes")
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the chunk's CRLF


class _Closed(Exception):
    """The server closed a kept-alive connection before answering."""


_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch  # what quote() leaves as it is


def _segment(value: str) -> str:
    """One path segment: an id can never reach another resource."""
    return value if _PLAIN(value) else urllib.parse.quote(value, safe="")


def _query(params: dict[str, Any]) -> str:
    """`urlencode(params, quote_via=quote)`, without its cost for the plain values ARI mostly gets."""
    return "&".join(f"{_value(str(name))}={_value(str(value))}" for name, value in params.items())


def _value(value: str) -> str:
    return value if _PLAIN(value) else urllib.parse.quote(value)
