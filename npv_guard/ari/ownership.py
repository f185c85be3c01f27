"""Redundant guards, on the ARI side: who may act on which call, takeovers and handovers.

Every guard registers under its app name (npv_guard/leases.py) and renews that entry every third
of `ari.guard_lease_s`. A call belongs to the guard whose Stasis app holds it while that guard's
entry holds; once ownership is in question (that guard died or is stopping, or a guard adopts
calls again after its own restart) it takes a lease with a fencing token. A surviving guard scans
Asterisk's channels and bridges, takes the lease of each call of a dead guard, subscribes its own
app to the call's channels and bridge (POST /applications/{app}/subscription: Asterisk then sends
it their events although they stay in the dead app's Stasis) and adopts it with the same code as
a reconciliation after a restart. A guard that cannot renew its entry for a whole lease while
another guard is alive, or whose lease on a call was taken, stops acting on those calls: two live
guards never both act on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from npv_guard.config import ConfigError, Settings
from npv_guard.leases import GuardEntry, Registry, new_instance, pbx_of
from npv_guard.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from npv_guard.ari.calls import Call, CallService

log = logging.getLogger("npv_guard.ari")

RECENT_S = 60.0  # a call this guard ended is never adopted again by its scans for so long


class GuardConflict(ConfigError):
    """Another live guard serves this app name."""


class Ownership:
    def __init__(self, settings: Settings, service: CallService, store: Store) -> None:
        self.app = settings.ari.app
        self.lease_s = settings.ari.guard_lease_s
        self.standby = settings.ari.standby
        self.registry = Registry(store, self.app, new_instance(), self.lease_s, pbx=pbx_of(settings.ari.url))
        self.service = service
        self.state = "disconnected"
        self.leases: dict[str, int] = {}  # dialer -> our fencing token
        self.offered: set[str] = set()  # stopping: leases kept takeable until another guard takes them
        self.peers: dict[str, GuardEntry] = {}  # app -> entry, as of the last heartbeat
        self.fenced = False
        self._renewed_at = time.monotonic()
        self._recent: dict[str, float] = {}
        self.lost_app = asyncio.Event()  # another instance took our app: this guard must stop
        self.taken_over = 0
        service.on_forget = self._forgotten
        service.fence = self.may_act

    # ------------------------------------------------------------------ start

    async def claim_app(self, say: Callable[[str], None] | None = None) -> None:
        """Register as the guard of our app. Refused (GuardConflict) while another live guard
        renews it, unless this guard is its standby: then wait until that guard is gone.

        The entry of a guard that was just killed still holds for up to one lease: it is told from
        a live one by whether it is renewed meanwhile."""
        first_seen: int | None = None
        waited_from = time.monotonic()
        while True:
            try:
                ok, entry = await self.registry.register("standby" if self.standby else "disconnected", 0, claim=True)
            except StoreUnavailable as error:
                # Redis down: the guard starts anyway and fails closed call by call (STATE_UNAVAILABLE);
                # its first renewal once Redis is back stops it if another guard holds the app.
                log.warning("guard registry unreachable (%s): starting without checking app %r", error, self.app)
                return
            if ok:
                self._renewed_at = time.monotonic()
                log.info("registered as the guard of app %r (%s)", self.app, self.registry.instance)
                return
            if first_seen is None:
                first_seen = entry.seen_ms
                log.info("app %r is registered by %s: waiting to see whether it is alive", self.app, entry.instance)
            renewed = entry.seen_ms != first_seen
            if renewed and not self.standby:
                raise GuardConflict(
                    f"ari.app: {self.app!r} is already served by a live guard ({entry.instance}, state "
                    f"{entry.state}); give this guard its own app name, or set ari.standby = true"
                )
            if renewed and say is not None and time.monotonic() - waited_from > self.lease_s:
                say(f"standby of {entry.instance} for app {self.app!r}")
                waited_from = time.monotonic()
            await asyncio.sleep(min(self.lease_s / 3, 1.0))

    # ------------------------------------------------------------------ heartbeat

    async def heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_s / 3)

    async def beat(self) -> None:
        sent = time.monotonic()
        try:
            ok, entry = await self.registry.register(self.state, self.service.active_calls(), claim=False)
            if not ok:
                log.critical(
                    "app %r was taken over by %s: this guard stops acting on its calls", self.app, entry.instance
                )
                self._fence()
                self.lost_app.set()
                return
            self._renewed_at = sent
            if self.fenced:
                log.warning("guard registry reachable again: this guard acts on its calls again")
                self.fenced = False
            for dialer, token in list(self.leases.items()):
                if not await self.registry.renew(dialer, token, offer=dialer in self.offered):
                    self._abandon(dialer, "its lease was taken by another guard")
            self.peers = {guard.app: guard for guard in await self.registry.guards()}
        except StoreUnavailable as error:
            # Fenced only when another guard was alive to take the calls over: a lone guard keeps
            # ending both legs of its calls and journaling their refusals while Redis is away.
            if not self.fenced and time.monotonic() - self._renewed_at > self.lease_s and self._live_peers():
                log.error("guard registry unreachable for a whole lease (%s): not acting on any call", error)
                self._fence()

    def _live_peers(self) -> bool:
        """Whether another guard of this Asterisk was alive at the last heartbeat that reached Redis."""
        return any(app != self.app and entry.alive for app, entry in self.peers.items())

    def _fence(self) -> None:
        """Stop acting on every call (they stay up in Asterisk): other guards may take them now."""
        self.fenced = True
        for dialer in {call.dialer for call in self.service.calls.values()}:
            self._abandon(dialer, "this guard is fenced")

    def _abandon(self, dialer: str, why: str) -> None:
        self.leases.pop(dialer, None)
        self.offered.discard(dialer)
        call = self.service.calls.get(dialer)
        if call is not None:
            log.warning("call %s: no longer acting on it (%s)", dialer, why)
            self.service.abandon(call)

    def _forgotten(self, call: Call) -> None:
        now = time.monotonic()
        recent = self._recent
        recent.pop(call.dialer, None)
        recent[call.dialer] = now  # kept in time order: the expired ones are at the front
        while True:  # not a sweep of every recent call per call (9,000 of them at 150 calls/s)
            oldest = next(iter(recent))
            if now - recent[oldest] <= RECENT_S:
                break
            del recent[oldest]
        token = self.leases.pop(call.dialer, None)
        if token is not None and call.finished:
            asyncio.get_running_loop().create_task(self._release(call.dialer, token))

    async def _release(self, dialer: str, token: int) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.registry.release(dialer, token)

    async def may_act(self, call: Call) -> bool:
        """Checked before a refusal is recorded: our lease still holds (fencing)."""
        if self.fenced:
            return False
        token = self.leases.get(call.dialer)
        if token is None:
            return True  # a call of our own app, never in question
        try:
            lease = await self.registry.lease(call.dialer)
        except StoreUnavailable:
            return True  # the refusal goes to the journal: recording it twice is harmless, losing it is not
        return lease is not None and lease.owner == self.registry.instance and lease.token == token

    # ------------------------------------------------------------------ which calls are ours

    def guard_apps(self) -> set[str]:
        return {self.app, *self.peers}

    def alive(self, app: str) -> bool:
        entry = self.peers.get(app)
        return entry is not None and entry.alive

    async def claim(self, dialer: str, app: str | None, sources: list[str], *, scan: bool) -> bool:
        """Whether this guard takes charge of the call (reconciliation and takeover scans).

        `scan`: a periodic takeover scan, where the calls of our own app that we do not know are
        being decided or ended right now (not taken unless their lease says otherwise)."""
        if self.fenced or dialer in self.leases or dialer in self._recent:
            return False
        if app is None:
            return False
        mine = app == self.app
        peer = self.peers.get(app)
        if not mine and (peer is None or (peer.alive and peer.state != "draining")):
            return False  # another app's guard is alive, or the app is no guard's
        if (mine and scan) or (not mine and peer is not None and peer.alive):
            # Only a lease that was offered or has run out makes the call takeable.
            try:
                lease = await self.registry.lease(dialer)
            except StoreUnavailable:
                return False
            if lease is None or lease.live:
                log.debug("call %s of app %r: not takeable (lease %s)", dialer, app, lease)
                return False
        try:
            token = await self.registry.acquire(dialer)
        except StoreUnavailable:
            return False
        if token is None:
            return False
        self.leases[dialer] = token
        if not mine:
            for source in sources:  # the first must work: the call's dialer channel
                if not await self.service.port.subscribe(self.app, [source]) and source == sources[0]:
                    log.warning("call %s: could not subscribe to %s; leaving it", dialer, source)
                    self.leases.pop(dialer, None)
                    with contextlib.suppress(StoreUnavailable):
                        await self.registry.release(dialer, token)
                    return False
            self.taken_over += 1
            self.service.metrics.calls_taken_over.inc()
            log.warning("call %s: taken over from app %r (lease token %d)", dialer, app, token)
        return True

    # ------------------------------------------------------------------ stop

    def others_alive(self) -> bool:
        return any(app != self.app and entry.alive for app, entry in self.peers.items())

    async def hand_over(self, deadline: float) -> None:
        """On SIGTERM, when other guards are alive: offer each call as soon as it is bridged (calls
        being decided or ringing finish that here first) and keep acting on it until another guard
        has taken it or it ends, at most until `deadline`."""
        handed = 0
        while time.monotonic() < deadline and not self.fenced:
            calls = {c for c in self.service.calls.values() if not c.finished}
            if not calls:
                break
            for call in calls:
                if call.dialer in self.offered:
                    await self._taken(call.dialer)
                elif call.bridged:
                    await self._offer(call.dialer)
                    handed += 1
            await asyncio.sleep(0.1)
        left = {c for c in self.service.calls.values() if not c.finished}
        log.info("handed %d call(s) over; %d left up in Asterisk for the next guard", handed, len(left))

    async def _offer(self, dialer: str) -> None:
        try:
            token = self.leases.get(dialer) or await self.registry.acquire(dialer)
            if token is None:
                return
            self.leases[dialer] = token
            self.offered.add(dialer)
            await self.registry.renew(dialer, token, offer=True)
        except StoreUnavailable:
            return

    async def _taken(self, dialer: str) -> None:
        try:
            lease = await self.registry.lease(dialer)
        except StoreUnavailable:
            return
        if lease is not None and lease.owner != self.registry.instance:
            self._abandon(dialer, f"handed over to {lease.app}")

    async def unregister(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.registry.register("stopped", 0, claim=False)
