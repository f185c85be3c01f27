"""The ARI connection: supervision, heartbeat, event routing, endpoint subscriptions.

The events websocket (npv_guard/ari/events.py) returns when it closes and has no heartbeat of its
own, so the connection is supervised here: reconnect with exponential backoff and jitter, confirm
the app really receives events (a user event to itself: Asterisk keeps answering for an app whose
socket is gone), and after every (re)connection let the call service reconcile (GET /channels and
/bridges), since Asterisk replays no missed event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from npv_guard.ari.calls import CallService
from npv_guard.ari.events import EventStream
from npv_guard.ari.port import AioAriPort
from npv_guard.config import Settings, redact_url
from npv_guard.telephony import AriPort, EventConsumer, PortHolder

if TYPE_CHECKING:
    from npv_guard.ari.ownership import Ownership

log = logging.getLogger("npv_guard.ari")

HEARTBEAT_S = 10.0
HEARTBEAT_TIMEOUT_S = 5.0
PING_EVENT = "npv-guard-ping"
# Every event type CallService.dispatch and the heartbeat read; the consumers' own types are
# added. Asterisk sends the app nothing else: a call's dozen other events (dial, bridge, caller
# id, varset...) would cost Asterisk and the guard a JSON encode, a websocket frame and a decode each.
EVENT_TYPES = (
    "StasisStart",
    "StasisEnd",
    "ChannelStateChange",
    "ChannelDtmfReceived",
    "ChannelHangupRequest",
    "ChannelDestroyed",
    "PlaybackFinished",
    "ChannelUserevent",
)


class AriSupervisor:
    """Owns the connection: attaches each new one to the port holder the services share, routes
    the events (channel events to the call service, the `consumers`' event types to them)."""

    def __init__(
        self,
        settings: Settings,
        service: CallService,
        port: PortHolder,
        consumers: Mapping[str, EventConsumer] | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.ownership = ownership  # redundant guards (npv_guard/ari/ownership.py)
        self.port = port
        self.consumers = dict(consumers or {})
        # The consumers whose endpoint subscription failed on this connection (retried at every heartbeat).
        self._unsubscribed: list[EventConsumer] = []
        self.connected = asyncio.Event()
        self.stopping = asyncio.Event()
        self._rest: AioAriPort | None = None  # the connection's own port: the heartbeat's user events
        self._pings: dict[str, asyncio.Future[None]] = {}
        self.reconnects = 0

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "ChannelUserevent" and event.get("eventname") == PING_EVENT:
            token = str((event.get("userevent") or {}).get("token", ""))
            waiter = self._pings.pop(token, None)
            if waiter and not waiter.done():
                waiter.set_result(None)
            return
        consumer = self.consumers.get(str(event.get("type")))
        if consumer is not None:
            consumer.dispatch(event)
            return
        self.service.dispatch(event)

    async def ping(self, within: float = HEARTBEAT_TIMEOUT_S) -> bool:
        """True when a user event posted to the app comes back through its websocket."""
        rest = self._rest
        if rest is None:
            return False
        token = uuid.uuid4().hex
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[token] = waiter
        try:
            sent = await asyncio.wait_for(rest.user_event(self.settings.ari.app, PING_EVENT, {"token": token}), within)
            if not sent:
                return False
            await asyncio.wait_for(waiter, within)
            return True
        except Exception:
            return False
        finally:
            self._pings.pop(token, None)

    async def run(self) -> None:
        ari = self.settings.ari
        delay = 0.5
        scans: asyncio.Task[None] | None = None
        while not self.stopping.is_set():
            stream = None
            port = None
            try:
                port = AioAriPort(ari.url, ari.username, ari.password, self.service.metrics)
                if not await port.connect():
                    raise ConnectionError("ARI REST API did not answer")
                self._rest = port
                stream = EventStream(ari.url, ari.username, ari.password, ari.app, self._on_event)
                await stream.connect()
                run_task = asyncio.create_task(stream.run())
                if not await self._wait_registered(run_task):
                    raise ConnectionError("app did not receive its own events")
                if not await port.filter_events(ari.app, (*EVENT_TYPES, *self.consumers)):
                    log.warning("ARI: could not filter the app's events; receiving all of them")
                self.port.attach(port)
                await self._drop_stale_subscriptions(self.port)
                self._unsubscribed = [c for c in self._subscribers() if not await self._subscribe(c, self.port)]
                self.connected.set()
                self.service.metrics.ari_connected(True)
                log.info("ARI connected to %s as app %r", redact_url(ari.url), ari.app)
                delay = 0.5
                if self.ownership is not None:
                    self.ownership.state = "draining" if self.service.handing_back else "connected"
                    await self.ownership.beat()  # the peers known before anything is adopted
                    await self.service.reconcile(self.ownership)
                    scans = asyncio.create_task(self._scan(run_task), name="takeover-scan")
                else:
                    await self.service.reconcile()
                await self._watch(run_task)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("ARI unavailable (%s: %s)", type(error).__name__, str(error)[:200])
            finally:
                if scans is not None:
                    scans.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await scans
                    scans = None
                self.connected.clear()
                if self.ownership is not None and self.ownership.state == "connected":
                    self.ownership.state = "disconnected"
                self.service.metrics.ari_connected(False)
                self.port.detach()
                self._rest = None
                if stream is not None:
                    with contextlib.suppress(Exception):
                        await stream.close()
                if port is not None:
                    with contextlib.suppress(Exception):
                        await port.close()
            if self.stopping.is_set():
                break
            self.reconnects += 1
            self.service.metrics.ari_reconnects.inc()
            pause = min(delay, ari.reconnect_max_s) * random.uniform(0.5, 1.5)
            log.warning("ARI reconnecting in %.1f s", pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), pause)
            delay = min(delay * 2, ari.reconnect_max_s)

    def _subscribers(self) -> list[EventConsumer]:
        """The consumers that need event sources (endpoints) subscribed, once each."""
        unique: list[EventConsumer] = []
        for consumer in self.consumers.values():
            if consumer.sources and all(consumer is not known for known in unique):
                unique.append(consumer)
        return unique

    def _wanted_sources(self) -> set[str]:
        return {source for consumer in self._subscribers() for source in consumer.sources}

    async def _subscribe(self, consumer: EventConsumer, port: AriPort) -> bool:
        """Ask for a consumer's event sources (the SMS service: the MESSAGEs of the platform and
        carrier endpoints), again on every connection.

        Without the subscription Asterisk has no handler for them and answers 404: nothing is
        relayed, which is the safe failure, and the calls must not suffer from it. A failed
        subscription (an endpoint Asterisk does not know, say) is logged and retried at every
        heartbeat.
        """
        if not await port.subscribe(self.settings.ari.app, consumer.sources):
            log.error(
                "%s: could not subscribe to %s (is each endpoint defined in pjsip.conf?): "
                "no message is relayed until it works; retrying",
                consumer.name,
                ", ".join(consumer.sources),
            )
            return False
        log.info("%s: subscribed to %s", consumer.name, ", ".join(consumer.sources))
        return True

    async def _drop_stale_subscriptions(self, port: AriPort) -> None:
        """Endpoint subscriptions this app does not want any more: left by a guard that crashed
        with another [sms] configuration, or SMS switched off. Asterisk would keep accepting
        those endpoints' messages (202) for an app that drops them; without the subscription it
        answers 404, or the dialplan takes them."""
        app = self.settings.ari.app
        subscribed = await port.subscribed_endpoints(app)
        wanted = self._wanted_sources()
        stale = sorted({f"endpoint:{endpoint}" for endpoint in subscribed or []} - wanted)
        if stale and await port.unsubscribe(app, stale):
            log.warning("ARI: dropped stale subscriptions of app %r to %s", app, ", ".join(stale))

    async def release_messages(self) -> None:
        """On a clean stop: give the endpoints' MESSAGEs back, so that Asterisk answers 404 to
        the platform instead of accepting messages nobody will relay (after a crash the
        subscription outlives the guard: accepted, never relayed)."""
        for consumer in self._subscribers():
            if await self.port.unsubscribe(self.settings.ari.app, consumer.sources):
                log.info("%s: unsubscribed from %s", consumer.name, ", ".join(consumer.sources))

    async def _wait_registered(self, run_task: asyncio.Task[None]) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not run_task.done():
            if await self.ping(within=1.0):
                return True
        return False

    async def _scan(self, run_task: asyncio.Task[None]) -> None:
        """Redundant guards: look for the calls of a dead or stopping guard every half lease, on
        a task of its own (a heartbeat waiting for a slow event never delays a takeover)."""
        ownership = self.ownership
        if ownership is None:
            return
        while not run_task.done() and not self.stopping.is_set():
            await asyncio.sleep(ownership.lease_s / 2)
            try:
                await self.service.reconcile(ownership, scan=True)
            except Exception:
                log.exception("takeover scan failed")

    async def _watch(self, run_task: asyncio.Task[None]) -> None:
        """Until the websocket closes, the heartbeat fails or the guard stops."""
        while not run_task.done():
            stop = asyncio.ensure_future(self.stopping.wait())
            done, _ = await asyncio.wait({run_task, stop}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if self.stopping.is_set() or run_task in done:
                break
            if not await self.ping():
                log.warning("ARI heartbeat lost: reconnecting")
                break
            if self._unsubscribed:
                self._unsubscribed = [c for c in self._unsubscribed if not await self._subscribe(c, self.port)]
        if not run_task.done():
            run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run_task
        elif not self.stopping.is_set():
            log.warning("ARI websocket closed")
