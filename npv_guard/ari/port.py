"""The ARI operations the guard uses, over `aioari`, with every failure caught and logged.

Asterisk answers 404 when a channel hung up a moment ago; a call service must keep going, so
each operation returns whether it worked instead of raising.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from npv_guard.observability import Metrics

log = logging.getLogger("npv_guard.ari")


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
    """`AriPort` on an initialised `aioari` client."""

    def __init__(self, client: Any, metrics: Metrics | None = None) -> None:
        self._client = client
        self._requests = (metrics or Metrics()).ari_requests

    async def _run(self, what: str, operation: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        try:
            result = await operation()
        except Exception as error:  # aioari surfaces HTTP errors as assorted exception types
            self._requests.labels(what, "failed").inc()
            log.debug("ARI %s failed: %s: %s", what, type(error).__name__, error)
            return False, None
        self._requests.labels(what, "ok").inc()
        return True, result

    async def set_var(self, channel: str, name: str, value: str) -> bool:
        ok, _ = await self._run(
            "setChannelVar",
            lambda: self._client.channels.setChannelVar(channelId=channel, variable=name, value=value),
        )
        return ok

    async def hangup(self, channel: str, cause: int | None = None) -> bool:
        params: dict[str, Any] = {"channelId": channel}
        if cause is not None:
            params["reason_code"] = str(cause)
        ok, _ = await self._run("hangup", lambda: self._client.channels.hangup(**params))
        return ok

    async def ring(self, channel: str) -> bool:
        ok, _ = await self._run("ring", lambda: self._client.channels.ring(channelId=channel))
        return ok

    async def answer(self, channel: str) -> bool:
        ok, _ = await self._run("answer", lambda: self._client.channels.answer(channelId=channel))
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
        ok, _ = await self._run(
            "originate",
            lambda: self._client.channels.originateWithId(
                channelId=channel_id,
                endpoint=endpoint,
                app=app,
                appArgs=app_args,
                callerId=caller_id,
                timeout=ring_timeout_s,
                originator=originator,
            ),
        )
        return ok

    async def create_bridge(self, bridge_id: str) -> bool:
        # dtmf_events: without it Asterisk forwards RFC 4733 natively and the app never sees it.
        ok, _ = await self._run(
            "createBridge",
            lambda: self._client.bridges.createWithId(bridgeId=bridge_id, type="mixing,dtmf_events", name=bridge_id),
        )
        return ok

    async def add_to_bridge(self, bridge_id: str, channels: list[str]) -> bool:
        ok, _ = await self._run(
            "addChannel", lambda: self._client.bridges.addChannel(bridgeId=bridge_id, channel=",".join(channels))
        )
        return ok

    async def destroy_bridge(self, bridge_id: str) -> bool:
        ok, _ = await self._run("destroyBridge", lambda: self._client.bridges.destroy(bridgeId=bridge_id))
        return ok

    async def play(self, channel: str, media: str, playback_id: str | None = None) -> bool:
        options = {"playbackId": playback_id} if playback_id else {}
        ok, _ = await self._run("play", lambda: self._client.channels.play(channelId=channel, media=media, **options))
        return ok

    async def get_var(self, channel: str, name: str) -> str | None:
        ok, result = await self._run(
            "getChannelVar", lambda: self._client.channels.getChannelVar(channelId=channel, variable=name)
        )
        if not ok:
            return None
        value = result.get("value") if isinstance(result, dict) else getattr(result, "json", {}).get("value")
        return value if isinstance(value, str) else None

    async def channels(self) -> list[dict[str, Any]] | None:
        ok, result = await self._run("channels.list", self._client.channels.list)
        return [getattr(item, "json", item) for item in result] if ok else None

    async def bridges(self) -> list[dict[str, Any]] | None:
        ok, result = await self._run("bridges.list", self._client.bridges.list)
        return [getattr(item, "json", item) for item in result] if ok else None

    async def send_message(self, to: str, sender: str, body: str) -> bool:
        # "from" is a Python keyword: the swagger client takes it by name from a mapping.
        ok, _ = await self._run(
            "sendMessage", lambda: self._client.endpoints.sendMessage(to=to, body=body, **{"from": sender})
        )
        return ok

    async def subscribe(self, app: str, sources: list[str]) -> bool:
        ok, _ = await self._run(
            "subscribe",
            lambda: self._client.applications.subscribe(applicationName=app, eventSource=",".join(sources)),
        )
        return ok

    async def unsubscribe(self, app: str, sources: list[str]) -> bool:
        ok, _ = await self._run(
            "unsubscribe",
            lambda: self._client.applications.unsubscribe(applicationName=app, eventSource=",".join(sources)),
        )
        return ok

    async def subscribed_endpoints(self, app: str) -> list[str] | None:
        ok, result = await self._run("applications.get", lambda: self._client.applications.get(applicationName=app))
        data = getattr(result, "json", result) if ok else None
        endpoints = data.get("endpoint_ids") if isinstance(data, dict) else None
        return [str(e) for e in endpoints] if isinstance(endpoints, list) else None


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
