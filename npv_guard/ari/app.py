"""Wiring of the ARI mode: connection supervision, event routing, reconciliation, drain.

`aioari` returns silently when its websocket closes and has no heartbeat, so the connection is
supervised here: reconnect with exponential backoff and jitter, confirm the app really receives
events (a user event to itself: Asterisk keeps answering for an app whose socket is gone), and
after every (re)connection reconcile with GET /channels and /bridges, since Asterisk replays
no missed event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
import urllib.parse
import uuid
from typing import Any

import aioari
from aioswagger11.http_client import ApiKeyAuthenticator, AsynchronousHttpClient

from npv_guard.ari.calls import BRIDGE_PREFIX, CARRIER_SUFFIX, Call, CallService
from npv_guard.ari.port import AioAriPort, AriPort, NoAri
from npv_guard.config import Settings, redact_url
from npv_guard.sms.service import SmsService

log = logging.getLogger("npv_guard.ari")

HEARTBEAT_S = 10.0
HEARTBEAT_TIMEOUT_S = 5.0
PING_EVENT = "npv-guard-ping"
# Every event type a handler reads (here, CallService.dispatch, SmsService.dispatch). Asterisk
# sends the app nothing else: a call's dozen other events (dial, bridge, caller id, varset...)
# would cost Asterisk and the guard a JSON encode, a websocket frame and a decode each.
EVENT_TYPES = (
    "StasisStart",
    "StasisEnd",
    "ChannelStateChange",
    "ChannelDtmfReceived",
    "ChannelHangupRequest",
    "ChannelDestroyed",
    "PlaybackFinished",
    "ChannelUserevent",
    "TextMessageReceived",
)


class AriSupervisor:
    def __init__(self, settings: Settings, service: CallService, sms: SmsService | None = None) -> None:
        self.settings = settings
        self.service = service
        self.sms = sms
        self._messages_subscribed = False
        self.connected = asyncio.Event()
        self.stopping = asyncio.Event()
        self._client: Any = None
        self._pings: dict[str, asyncio.Future[None]] = {}
        self.reconnects = 0

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "ChannelUserevent" and event.get("eventname") == PING_EVENT:
            token = str((event.get("userevent") or {}).get("token", ""))
            waiter = self._pings.pop(token, None)
            if waiter and not waiter.done():
                waiter.set_result(None)
            return
        if event.get("type") == "TextMessageReceived":
            if self.sms is not None:
                self.sms.dispatch(event)
            return
        self.service.dispatch(event)

    async def ping(self, within: float = HEARTBEAT_TIMEOUT_S) -> bool:
        """True when a user event posted to the app comes back through its websocket."""
        client = self._client
        if client is None:
            return False
        token = uuid.uuid4().hex
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[token] = waiter
        try:
            await asyncio.wait_for(
                client.events.userEvent(
                    eventName=PING_EVENT, application=self.settings.ari.app, variables={"token": token}
                ),
                within,
            )
            await asyncio.wait_for(waiter, within)
            return True
        except Exception:
            return False
        finally:
            self._pings.pop(token, None)

    async def run(self) -> None:
        ari = self.settings.ari
        delay = 0.5
        while not self.stopping.is_set():
            client = None
            port = None
            try:
                client = await _connect(ari.url, ari.username, ari.password)
                client.on_event("*", self._on_event)
                self._client = client
                port = AioAriPort(ari.url, ari.username, ari.password, self.service.metrics)
                if not await port.connect():
                    raise ConnectionError("ARI REST API did not answer")
                run_task = asyncio.create_task(client.run(apps=ari.app))
                if not await self._wait_registered(run_task):
                    raise ConnectionError("app did not receive its own events")
                if not await port.filter_events(ari.app, EVENT_TYPES):
                    log.warning("ARI: could not filter the app's events; receiving all of them")
                self.service.port = port
                await self._drop_stale_subscriptions(self.service.port)
                if self.sms is not None:
                    self._messages_subscribed = await self._subscribe_messages(self.sms, self.service.port)
                self.connected.set()
                self.service.metrics.ari_connected(True)
                log.info("ARI connected to %s as app %r", redact_url(ari.url), ari.app)
                delay = 0.5
                await reconcile(self.service, ari.app)
                await self._watch(run_task)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("ARI unavailable (%s: %s)", type(error).__name__, str(error)[:200])
            finally:
                self.connected.clear()
                self.service.metrics.ari_connected(False)
                self.service.port = NoAri()
                if self.sms is not None:
                    self.sms.port = NoAri()
                self._client = None
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
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

    async def _subscribe_messages(self, sms: SmsService, port: AriPort) -> bool:
        """Ask for the MESSAGEs of the platform and carrier endpoints, again on every connection.

        Without the subscription Asterisk has no handler for them and answers 404: nothing is
        relayed, which is the safe failure, and the calls must not suffer from it. A failed
        subscription (an endpoint Asterisk does not know, say) is logged and retried at every
        heartbeat.
        """
        sms.port = port
        if not await port.subscribe(self.settings.ari.app, sms.sources):
            log.error(
                "SMS: could not subscribe to %s (is each endpoint defined in pjsip.conf?): "
                "no message is relayed until it works; retrying",
                ", ".join(sms.sources),
            )
            return False
        log.info("SMS: subscribed to %s", ", ".join(sms.sources))
        return True

    async def _drop_stale_subscriptions(self, port: AriPort) -> None:
        """Endpoint subscriptions this app does not want any more: left by a guard that crashed
        with another [sms] configuration, or SMS switched off. Asterisk would keep accepting
        those endpoints' messages (202) for an app that drops them; without the subscription it
        answers 404, or the dialplan takes them."""
        app = self.settings.ari.app
        subscribed = await port.subscribed_endpoints(app)
        wanted = set(self.sms.sources) if self.sms is not None else set()
        stale = sorted({f"endpoint:{endpoint}" for endpoint in subscribed or []} - wanted)
        if stale and await port.unsubscribe(app, stale):
            log.warning("ARI: dropped stale subscriptions of app %r to %s", app, ", ".join(stale))

    async def release_messages(self) -> None:
        """On a clean stop: give the endpoints' MESSAGEs back, so that Asterisk answers 404 to
        the platform instead of accepting messages nobody will relay (after a crash the
        subscription outlives the guard: accepted, never relayed)."""
        if self.sms is not None and await self.sms.port.unsubscribe(self.settings.ari.app, self.sms.sources):
            log.info("SMS: unsubscribed from %s", ", ".join(self.sms.sources))

    async def _wait_registered(self, run_task: asyncio.Task[None]) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not run_task.done():
            if await self.ping(within=1.0):
                return True
        return False

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
            if self.sms is not None and not self._messages_subscribed:
                self._messages_subscribed = await self._subscribe_messages(self.sms, self.service.port)
        if not run_task.done():
            run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run_task
        elif not self.stopping.is_set():
            log.warning("ARI websocket closed")


async def reconcile(service: CallService, app: str) -> None:
    """Adopt what Asterisk holds for this app and that the guard does not know (after a restart
    or a lost websocket): bridged calls keep running, ringing carrier legs keep their dialer,
    calls that never got a decision get one, and half-calls are hung up."""
    port: AriPort = service.port
    channels = await port.channels()
    bridges = await port.bridges()
    if channels is None or bridges is None:
        return
    by_id = {channel["id"]: channel for channel in channels}
    in_app = {
        cid: channel
        for cid, channel in by_id.items()
        if (
            (channel.get("dialplan") or {}).get("app_name") == "Stasis"
            and str((channel.get("dialplan") or {}).get("app_data", "")).startswith(app + ",")
        )
        or cid.endswith(CARRIER_SUFFIX)
    }
    bridged: set[str] = set()
    for bridge in bridges:
        if not str(bridge.get("id", "")).startswith(BRIDGE_PREFIX):
            continue
        members = [cid for cid in bridge.get("channels", []) if cid in by_id]
        bridged.update(members)
        dialer = str(bridge["id"])[len(BRIDGE_PREFIX) :]
        carrier = dialer + CARRIER_SUFFIX
        if dialer in service.calls:
            continue
        if set(members) == {dialer, carrier}:
            call = await _adopt(service, by_id[dialer], carrier)
            call.answered, call.bridge = True, str(bridge["id"])
            log.info("adopted bridged call %s", dialer)
            continue
        for cid in members:  # one leg left: the call is over
            await port.hangup(cid)
        await port.destroy_bridge(str(bridge["id"]))
    for cid, channel in in_app.items():
        if cid in bridged or cid in service.calls:
            continue
        if cid.endswith(CARRIER_SUFFIX):
            if cid.removesuffix(CARRIER_SUFFIX) not in in_app:
                await port.hangup(cid)  # its dialer is gone
            continue
        carrier = cid + CARRIER_SUFFIX
        if carrier in by_id:
            call = await _adopt(service, channel, carrier)
            if by_id[carrier].get("state") == "Up":
                call.queue.put_nowait({"type": "StasisStart", "channel": by_id[carrier]})
            log.info("adopted ringing call %s", cid)
        else:
            log.info("deciding call %s that entered Stasis while the guard was away", cid)
            args = str((channel.get("dialplan") or {}).get("app_data", "")).split(",")[1:]
            service.dispatch({"type": "StasisStart", "args": args, "channel": channel})


async def _adopt(service: CallService, channel: dict[str, Any], carrier: str) -> Call:
    professional = await service.port.get_var(channel["id"], "NPV_GUARD_PROFESSIONAL")
    dialplan = channel.get("dialplan") or {}
    call = Call(
        channel["id"],
        args=[],
        caller=str((channel.get("caller") or {}).get("number", "")),
        callee=str(dialplan.get("exten", "")),
    )
    call.carrier = carrier
    call.professional = professional or None
    call.consumer = service.consumer_of(call.callee)
    # Set by the decision, so a refusal after the restart still names the call's campaign.
    call.campaign = await service.port.get_var(channel["id"], "NPV_GUARD_CAMPAIGN") or None
    call.lead = await service.port.get_var(channel["id"], "NPV_GUARD_LEAD") or None
    service.adopt(call)
    return call


async def _connect(url: str, username: str, password: str) -> Any:
    """aioari.connect, without leaking its HTTP session when Asterisk is not there."""
    host = urllib.parse.urlparse(url).hostname or ""
    http_client = AsynchronousHttpClient(auth=ApiKeyAuthenticator(host, f"{username}:{password}"))
    client = aioari.Client(url, http_client)
    try:
        await client.init()
    except BaseException:
        await http_client.close()
        raise
    return client


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
