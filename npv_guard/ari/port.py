"""The ARI operations the guard uses, over ARI's REST API, with every failure caught and logged.

Asterisk answers 404 when a channel hung up a moment ago; a call service must keep going, so
each operation returns whether it worked instead of raising.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.parse
from collections.abc import Iterable
from typing import Any, Protocol

import aiohttp

from npv_guard.observability import Metrics

log = logging.getLogger("npv_guard.ari")

REQUEST_TIMEOUT_S = 10.0
# Asterisk serves each HTTP connection on its own thread, within http.conf's sessionlimit (100).
MAX_CONNECTIONS = 32


class AriPort(Protocol):
    async def set_var(self, channel: str, name: str, value: str) -> bool: ...
    async def hangup(self, channel: str, cause: int | None = None) -> bool: ...
    async def ring(self, channel: str) -> bool: ...
    async def answer(self, channel: str) -> bool: ...
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
    ) -> bool: ...
    async def create_bridge(self, bridge_id: str) -> bool: ...
    async def add_to_bridge(self, bridge_id: str, channels: list[str]) -> bool: ...
    async def destroy_bridge(self, bridge_id: str) -> bool: ...
    async def play(self, channel: str, media: str, playback_id: str | None = None) -> bool: ...
    async def get_var(self, channel: str, name: str) -> str | None: ...
    async def channels(self) -> list[dict[str, Any]] | None: ...
    async def bridges(self) -> list[dict[str, Any]] | None: ...
    async def send_message(self, to: str, sender: str, body: str) -> bool: ...
    async def subscribe(self, app: str, sources: list[str]) -> bool: ...
    async def unsubscribe(self, app: str, sources: list[str]) -> bool: ...
    async def subscribed_endpoints(self, app: str) -> list[str] | None: ...


class AioAriPort:
    """`AriPort` as a lean ARI REST client: one keep-alive aiohttp session, ARI's JSON as it comes.

    A swagger client (aioari over aioswagger11) validated every request and wrapped every reply in
    model objects: most of the guard's CPU per call. The paths and parameters here are ARI's own
    (Asterisk's rest-api/*.json); `connect()` reads which optional operations the server has.
    """

    def __init__(self, url: str, username: str, password: str, metrics: Metrics | None = None) -> None:
        self._base = url.rstrip("/") + "/ari"
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Basic {credentials}"},
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
        )
        self._requests = (metrics or Metrics()).ari_requests
        # Asterisk 20.20, 22.10 and 23.4 set several variables in one request; older ones do not.
        self.multi_set = False
        self._batches: dict[str, dict[str, str]] = {}
        self._batch_done: dict[str, asyncio.Future[bool]] = {}

    async def connect(self) -> bool:
        """Whether ARI answers with these credentials; learns the server's optional operations."""
        ok, channels = await self._request("api-docs", "GET", "/api-docs/channels.json")
        if not ok or not isinstance(channels, dict):
            return False
        paths = {str(api.get("path")) for api in channels.get("apis", []) if isinstance(api, dict)}
        self.multi_set = "/channels/{channelId}/variables" in paths
        return True

    async def close(self) -> None:
        await self._session.close()

    async def _request(
        self, what: str, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> tuple[bool, Any]:
        try:
            async with self._session.request(method, self._base + path, params=params, json=body) as response:
                payload = await response.read()  # read to the end: the connection goes back to the pool
                status = response.status
            data = json.loads(payload) if payload else None
        except Exception as error:  # refused, reset, timed out, not JSON: the operation failed
            self._requests.labels(what, "failed").inc()
            log.debug("ARI %s failed: %s: %s", what, type(error).__name__, error)
            return False, None
        if status >= 300:  # 404: the channel hung up a moment ago; 409: not in Stasis any more
            self._requests.labels(what, "failed").inc()
            message = data.get("message") if isinstance(data, dict) else None
            log.debug("ARI %s failed: HTTP %d %s", what, status, message or "")
            return False, None
        self._requests.labels(what, "ok").inc()
        return True, data

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
            "getChannelVar", "GET", f"/channels/{_segment(channel)}/variable", {"variable": name}
        )
        value = result.get("value") if ok and isinstance(result, dict) else None
        return value if isinstance(value, str) else None

    async def channels(self) -> list[dict[str, Any]] | None:
        ok, result = await self._request("channels.list", "GET", "/channels")
        return [item for item in result if isinstance(item, dict)] if ok and isinstance(result, list) else None

    async def bridges(self) -> list[dict[str, Any]] | None:
        ok, result = await self._request("bridges.list", "GET", "/bridges")
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
        ok, data = await self._request("applications.get", "GET", f"/applications/{_segment(app)}")
        endpoints = data.get("endpoint_ids") if ok and isinstance(data, dict) else None
        return [str(e) for e in endpoints] if isinstance(endpoints, list) else None

    async def filter_events(self, app: str, types: Iterable[str]) -> bool:
        """Have Asterisk send the app only these event types (ARI since 13.26 / 16.3)."""
        body = {"allowed": [{"type": kind} for kind in types], "disallowed": []}
        ok, _ = await self._request("eventFilter", "PUT", f"/applications/{_segment(app)}/eventFilter", body=body)
        return ok


def _segment(value: str) -> str:
    """One path segment: an id can never reach another resource."""
    return urllib.parse.quote(value, safe="")


class NoAri:
    """Stands in for ARI while disconnected: every operation fails at once."""

    async def set_var(self, channel: str, name: str, value: str) -> bool:
        return False

    async def hangup(self, channel: str, cause: int | None = None) -> bool:
        return False

    async def ring(self, channel: str) -> bool:
        return False

    async def answer(self, channel: str) -> bool:
        return False

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
        return False

    async def create_bridge(self, bridge_id: str) -> bool:
        return False

    async def add_to_bridge(self, bridge_id: str, channels: list[str]) -> bool:
        return False

    async def destroy_bridge(self, bridge_id: str) -> bool:
        return False

    async def play(self, channel: str, media: str, playback_id: str | None = None) -> bool:
        return False

    async def get_var(self, channel: str, name: str) -> str | None:
        return None

    async def channels(self) -> list[dict[str, Any]] | None:
        return None

    async def bridges(self) -> list[dict[str, Any]] | None:
        return None

    async def send_message(self, to: str, sender: str, body: str) -> bool:
        return False

    async def subscribe(self, app: str, sources: list[str]) -> bool:
        return False

    async def unsubscribe(self, app: str, sources: list[str]) -> bool:
        return False

    async def subscribed_endpoints(self, app: str) -> list[str] | None:
        return None
