"""The telephony port the call and message services act through, independent of any adapter.

`AriPort` is what a service may ask of Asterisk; every operation returns whether it worked (or
None) instead of raising, since a channel that hung up a moment ago is normal. The aioari
implementation lives in npv_guard/ari/port.py; test doubles in npv_guard/testing.py. `PortHolder`
is the one place whose current port the ARI supervisor swaps on every (re)connection: the call
service and the SMS service share it, so neither is edited from outside.
"""

from __future__ import annotations

from typing import Any, Protocol


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


class EventConsumer(Protocol):
    """A service fed ARI events of its own types (the SMS service: TextMessageReceived), wired
    in the runner so that the ARI supervisor knows no other adapter."""

    name: str  # names it in log lines

    @property
    def sources(self) -> list[str]:
        """The ARI event sources to subscribe to on every connection (endpoint:TECH/RESOURCE)."""
        ...

    def dispatch(self, event: dict[str, Any]) -> None:
        """Take one event. Never blocks, never raises."""
        ...


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


class PortHolder:
    """An `AriPort` that forwards to the port of the current connection (`NoAri` while none)."""

    def __init__(self, port: AriPort | None = None) -> None:
        self.current: AriPort = port if port is not None else NoAri()

    def attach(self, port: AriPort) -> None:
        self.current = port

    def detach(self) -> None:
        self.current = NoAri()

    async def set_var(self, channel: str, name: str, value: str) -> bool:
        return await self.current.set_var(channel, name, value)

    async def hangup(self, channel: str, cause: int | None = None) -> bool:
        return await self.current.hangup(channel, cause)

    async def ring(self, channel: str) -> bool:
        return await self.current.ring(channel)

    async def answer(self, channel: str) -> bool:
        return await self.current.answer(channel)

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
        return await self.current.originate(
            endpoint,
            channel_id=channel_id,
            app=app,
            app_args=app_args,
            caller_id=caller_id,
            ring_timeout_s=ring_timeout_s,
            originator=originator,
        )

    async def create_bridge(self, bridge_id: str) -> bool:
        return await self.current.create_bridge(bridge_id)

    async def add_to_bridge(self, bridge_id: str, channels: list[str]) -> bool:
        return await self.current.add_to_bridge(bridge_id, channels)

    async def destroy_bridge(self, bridge_id: str) -> bool:
        return await self.current.destroy_bridge(bridge_id)

    async def play(self, channel: str, media: str, playback_id: str | None = None) -> bool:
        return await self.current.play(channel, media, playback_id)

    async def get_var(self, channel: str, name: str) -> str | None:
        return await self.current.get_var(channel, name)

    async def channels(self) -> list[dict[str, Any]] | None:
        return await self.current.channels()

    async def bridges(self) -> list[dict[str, Any]] | None:
        return await self.current.bridges()

    async def send_message(self, to: str, sender: str, body: str) -> bool:
        return await self.current.send_message(to, sender, body)

    async def subscribe(self, app: str, sources: list[str]) -> bool:
        return await self.current.subscribe(app, sources)

    async def unsubscribe(self, app: str, sources: list[str]) -> bool:
        return await self.current.unsubscribe(app, sources)

    async def subscribed_endpoints(self, app: str) -> list[str] | None:
        return await self.current.subscribed_endpoints(app)
