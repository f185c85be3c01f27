"""The ARI call service: what happens to an outbound call once it is in the guard's Stasis app.

Each call is an actor: its events are queued and handled in order by one task, so a hang-up can
never overtake the decision it follows, and a slow Redis delays only its own call.

    dialer leg enters Stasis (verb "outbound")
        -> decision (atomic check-and-record), NPV_GUARD_VERDICT / NPV_GUARD_REASONS set
        -> reject: hang up with the configured Q.850 cause; the carrier is never dialled
        -> allow: originate the carrier leg into this app (verb "carrier"), relay ringing,
           answer the dialer and bridge both when the consumer answers (mixing,dtmf_events)
    either leg hangs up -> the other is hung up (a carrier failure is relayed with its cause)
    DTMF while bridged -> agent code on the dialer leg or consumer key on the carrier leg:
        refusal recorded once per call, acknowledged with a tone on the agent's leg
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from npv_guard import channel as variables
from npv_guard.audit import AuditLog
from npv_guard.callpath import CallPath
from npv_guard.channel import ACK_TONE as ACK_TONES
from npv_guard.channel import ERROR_TONE as ERROR_TONES
from npv_guard.channel import verdict_vars
from npv_guard.config import AriSettings, CallsSettings
from npv_guard.core.decide import place_consumer
from npv_guard.core.model import CallRequest, RefusalSource
from npv_guard.logs import CALL_ID
from npv_guard.observability import Metrics
from npv_guard.service import Guard, call_labels
from npv_guard.telephony import AriPort

if TYPE_CHECKING:
    from npv_guard.ari.ownership import Ownership

log = logging.getLogger("npv_guard.ari")

CARRIER_SUFFIX = "-carrier"
BRIDGE_PREFIX = "npv-"
DTMF_CODE_WINDOW_S = 3.0
ACK_TONE = "tone:" + ACK_TONES  # the media URI ARI plays
ERROR_TONE = "tone:" + ERROR_TONES
# Causes relayed from a failed carrier leg; anything else becomes "normal clearing".
ANNOUNCEMENT_SUFFIX = "-announcement"
DEFAULT_FAIL_CAUSE = 34  # no circuit available -> SIP 503: the call could not be placed


@dataclass(eq=False)  # a call is itself, whatever its fields: hashable by identity
class Call:
    dialer: str  # dialer channel id
    args: list[str]
    caller: str
    callee: str
    created: float = field(default_factory=time.monotonic)
    professional: str | None = None
    consumer: str | None = None  # E.164, only in memory
    caller_e164: str | None = None
    campaign: str | None = None
    lead: str | None = None
    carrier: str | None = None
    bridge: str | None = None
    answered: bool = False  # the consumer answered: the dialer is answered, the bridge created
    bridged: bool = False  # both legs in the bridge
    finished: bool = False
    refusal_recorded: bool = False
    pending_cause: int | None = None  # rejected, announcement playing: the cause to hang up with
    dtmf: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class CallService:
    def __init__(
        self,
        port: AriPort,
        guard: Guard,
        settings: AriSettings,
        calls: CallsSettings,
        audit: AuditLog,
        now: Callable[[], datetime],
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.port = port
        self.guard = guard
        self.settings = settings
        self.policy = calls
        self.audit = audit
        self.path = CallPath(guard, audit, self.metrics)
        self.now = now
        self.calls: dict[str, Call] = {}  # by dialer and by carrier channel id
        self.draining = False
        # Redundant guards (npv_guard/ari/ownership.py): told of every call the service drops, and
        # asked before a refusal is recorded whether this guard may still act on the call.
        self.on_forget: Callable[[Call], None] | None = None
        self.fence: Callable[[Call], Awaitable[bool]] | None = None
        # Stopping with other guards alive: new calls sent by the failover include ("ha") are given
        # back to it undecided, and it tries the next guard.
        self.handing_back = False

    # ------------------------------------------------------------------ routing

    def dispatch(self, event: dict[str, Any]) -> None:
        """Route one ARI event to its call's queue. Never blocks, never raises."""
        try:
            kind = event.get("type")
            channel = event.get("channel") or {}
            channel_id = channel.get("id") if isinstance(channel, dict) else None
            if kind == "PlaybackFinished":  # a playback names its channel in its target URI
                target = str((event.get("playback") or {}).get("target_uri", ""))
                channel_id = target.removeprefix("channel:") if target.startswith("channel:") else None
            if kind == "StasisStart" and channel_id:
                self._on_stasis_start(event, channel)
                return
            call = self.calls.get(channel_id or "")
            if call is None or call.finished:
                return
            if kind == "ChannelStateChange" and (
                channel_id != call.carrier or call.answered or channel.get("state") not in ("Ringing", "Up")
            ):
                return  # only the carrier's ringing and answer matter: no queue, no task turn for the others
            call.queue.put_nowait(event)
        except Exception:
            log.exception("could not route ARI event %s", event.get("type"))

    def _on_stasis_start(self, event: dict[str, Any], channel: dict[str, Any]) -> None:
        args = [str(a) for a in event.get("args") or []]
        verb = args[0] if args else ""
        channel_id = channel["id"]
        match verb:
            case "outbound":
                if channel_id in self.calls:
                    return
                if self.handing_back and len(args) > 6 and args[6] == "ha":
                    asyncio.get_running_loop().create_task(self._hand_back(channel_id))
                    return
                dialplan = channel.get("dialplan") or {}
                caller = (channel.get("caller") or {}).get("number", "")
                call = Call(channel_id, args, caller=str(caller), callee=str(dialplan.get("exten", "")))
                self._start(call)
            case "carrier":
                owner = self.calls.get(args[1] if len(args) > 1 else "")
                if owner is None or owner.finished:
                    # A carrier leg whose call is gone (guard restarted mid-ring): never leave it up.
                    asyncio.get_running_loop().create_task(self.port.hangup(channel_id))
                    return
                owner.queue.put_nowait(event)
            case _:
                log.warning("channel %s entered Stasis with unknown verb %r: rejecting", channel_id, verb)
                asyncio.get_running_loop().create_task(self.port.hangup(channel_id, self.policy.reject_cause))

    async def _hand_back(self, channel_id: str) -> None:
        if not await self.port.set_var(channel_id, variables.HANDBACK, "1"):
            return
        if not await self.port.continue_in_dialplan(channel_id):
            await self.port.hangup(channel_id, DEFAULT_FAIL_CAUSE)

    def _start(self, call: Call) -> None:
        call.queue.put_nowait({"type": "Decide"})
        self.adopt(call)

    def adopt(self, call: Call) -> None:
        """Take charge of a call: route its legs' events to it and run its actor."""
        self.calls[call.dialer] = call
        if call.carrier:
            self.calls[call.carrier] = call
        call.task = asyncio.get_running_loop().create_task(self._run(call), name=f"call-{call.dialer}")

    def consumer_of(self, callee: str) -> str | None:
        try:
            return place_consumer(callee)[0]
        except ValueError:
            return None

    async def _run(self, call: Call) -> None:
        CALL_ID.set(call.dialer)  # this task's log lines name the call
        try:
            while not call.finished:
                event = await call.queue.get()
                try:
                    await self._handle(call, event)
                except Exception:
                    log.exception("call %s: error handling %s; ending the call", call.dialer, event.get("type"))
                    await self._finish(call, cause=DEFAULT_FAIL_CAUSE)
        finally:
            self._forget(call)

    def _forget(self, call: Call) -> None:
        for key in (call.dialer, call.carrier):
            if key and self.calls.get(key) is call:
                del self.calls[key]
        if self.on_forget is not None:
            self.on_forget(call)

    def abandon(self, call: Call) -> None:
        """Stop acting on a call without touching it: another guard owns it now."""
        if call.task is not None:
            call.task.cancel()
        else:
            self._forget(call)

    # ------------------------------------------------------------------ events of one call

    async def _handle(self, call: Call, event: dict[str, Any]) -> None:
        kind = event["type"]
        channel = (event.get("channel") or {}).get("id")
        match kind:
            case "Decide":
                await self._decide(call)
            case "StasisStart":  # the answered carrier leg entered the app: bridge both legs
                await self._connect(call)
            case "ChannelStateChange" if channel == call.carrier and not call.answered:
                state = (event.get("channel") or {}).get("state")
                if state == "Ringing":
                    await self.port.ring(call.dialer)
                elif state == "Up":
                    await self._answer(call)
            case "ChannelDtmfReceived" if call.bridged:
                await self._dtmf(call, channel, str(event.get("digit", "")))
            case "PlaybackFinished" | "AnnouncementTimeout" if call.pending_cause is not None:
                await self._finish(call, cause=call.pending_cause)
            case "StasisEnd" | "ChannelHangupRequest" | "ChannelDestroyed":
                await self._leg_gone(call, channel, event)
            case _:
                pass

    async def _decide(self, call: Call) -> None:
        # outbound,PROFESSIONAL,SECTOR,POSTCODE[,CAMPAIGN,LEAD]: the labels were appended later.
        args = call.args + [""] * 6
        started = time.perf_counter()
        call.campaign, call.lead, dropped = call_labels(args[4], args[5], call.callee)
        request = CallRequest(
            caller=call.caller,
            callee=call.callee,
            at=self.now(),
            professional=args[1] or None,
            sector=args[2] or None,
            consumer_postcode=args[3] or None,
            campaign=call.campaign,
            lead=call.lead,
        )
        decision = await self.path.decide_call(
            request,
            mode="ari",
            call_id=call.dialer,
            # Draining: no new attempt is counted, the call is turned away whatever the verdict.
            record=not self.draining,
            offline=self.draining,
            started=started,
            labels_dropped=dropped,
        )
        verdict = decision.verdict
        prepared = verdict.prepared
        call.professional, call.consumer = prepared.professional, prepared.consumer
        call.caller_e164 = prepared.caller.e164
        writes = [
            self.port.set_var(call.dialer, name, value)
            for name, value in verdict_vars(verdict, mode="ari", draining=self.draining)
        ]
        if not verdict.allowed or self.draining:
            cause = self.policy.cause_for(verdict.codes) if not verdict.allowed else DEFAULT_FAIL_CAUSE
            await asyncio.gather(*writes)
            if self.policy.reject_announcement and not verdict.allowed:
                await self._announce(call, cause)
                return
            await self._finish(call, cause=cause)
            return
        call.carrier = call.dialer + CARRIER_SUFFIX
        self.calls[call.carrier] = call
        endpoint = self.settings.carrier.replace("{number}", call.consumer or "")
        *_, originated = await asyncio.gather(
            *writes,
            self.port.originate(
                endpoint,
                channel_id=call.carrier,
                app=self.settings.app,
                app_args=f"carrier,{call.dialer}",
                caller_id=call.caller_e164 or "",
                ring_timeout_s=self.settings.ring_timeout_s,
                originator=call.dialer,
            ),
        )
        if not originated:
            log.error("call %s: carrier leg could not be originated to %s", call.dialer, endpoint)
            call.carrier = None
            await self._finish(call, cause=DEFAULT_FAIL_CAUSE)

    async def _answer(self, call: Call) -> bool:
        """The consumer answered: answer the dialer and create the bridge.

        Done on the carrier's ChannelStateChange to Up, which Asterisk sends as the 200 OK comes
        in, a thread hop before the originated channel enters the app (its StasisStart, which
        bridging needs): the dialer hears the consumer that much sooner. The bridge does not need
        the answer: both requests go out together."""
        call.answered = True
        bridge = BRIDGE_PREFIX + call.dialer
        answered, created = await asyncio.gather(self.port.answer(call.dialer), self.port.create_bridge(bridge))
        if created:
            call.bridge = bridge
        if not answered or not created:
            log.error("call %s: could not answer the dialer or create the bridge", call.dialer)
            await self._finish(call, cause=DEFAULT_FAIL_CAUSE)
            return False
        return True

    async def _connect(self, call: Call) -> None:
        if call.bridged or call.carrier is None or call.finished:
            return
        if not call.answered and not await self._answer(call):
            return
        if call.bridge is None or not await self.port.add_to_bridge(call.bridge, [call.dialer, call.carrier]):
            log.error("call %s: could not bridge the answered call", call.dialer)
            await self._finish(call, cause=DEFAULT_FAIL_CAUSE)
            return
        # Only now: a stopping guard offers its bridged calls to the others (ownership.hand_over),
        # and one offered while its legs were still being added would look half-gone to them.
        call.bridged = True
        self.audit.write(
            "bridged", call_id=call.dialer, professional=call.professional, campaign=call.campaign, lead=call.lead
        )

    async def _announce(self, call: Call, cause: int) -> None:
        """Play the rejection announcement as early media, then hang up with the cause.

        The channel is never answered: on an unanswered PJSIP channel the media goes out as early
        media (183), so the dialer still gets the final failure, and the carrier is never dialled.
        """
        call.pending_cause = cause
        playback = call.dialer + ANNOUNCEMENT_SUFFIX
        if not await self.port.play(call.dialer, self.policy.reject_announcement, playback_id=playback):
            await self._finish(call, cause=cause)
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self.policy.reject_announcement_max_s, call.queue.put_nowait, {"type": "AnnouncementTimeout"})

    async def _leg_gone(self, call: Call, channel: str | None, event: dict[str, Any]) -> None:
        if channel == call.carrier and not call.answered:
            # The consumer's side failed before answering: relay busy / no answer / congestion.
            cause = int(event.get("cause") or 0) or None
            if event["type"] == "StasisEnd" and cause is None:
                return  # a ChannelDestroyed with the cause follows
            call.carrier = None
            await self._finish(call, cause=cause or 16)
            return
        if channel == call.carrier:
            call.carrier = None
        await self._finish(call, cause=16, dialer_gone=channel == call.dialer)

    async def _finish(self, call: Call, *, cause: int | None, dialer_gone: bool = False) -> None:
        if call.finished:
            return
        call.finished = True
        hangups = []
        if call.carrier:
            hangups.append(self.port.hangup(call.carrier))
        if not dialer_gone:
            hangups.append(self.port.hangup(call.dialer, cause))
        await asyncio.gather(*hangups)
        if call.bridge:
            await self.port.destroy_bridge(call.bridge)

    # ------------------------------------------------------------------ refusals by DTMF

    async def _dtmf(self, call: Call, channel: str | None, digit: str) -> None:
        if channel is None:
            return
        if channel == call.dialer:
            code, source = self.policy.agent_refusal_code, RefusalSource.AGENT
        elif channel == call.carrier:
            code, source = self.policy.consumer_refusal_key, RefusalSource.CONSUMER
        else:
            return
        if not code or not digit:
            return
        now = time.monotonic()
        recent = [(t, d) for t, d in call.dtmf.get(channel, []) if now - t <= DTMF_CODE_WINDOW_S]
        recent.append((now, digit))
        call.dtmf[channel] = recent[-len(code) :]
        if "".join(d for _, d in call.dtmf[channel]) != code:
            return
        call.dtmf[channel] = []
        await self._refusal(call, source)

    async def _refusal(self, call: Call, source: RefusalSource) -> None:
        if call.refusal_recorded:  # once per call; a repeated code is only acknowledged again
            await self.port.play(call.dialer, ACK_TONE)
            return
        if not call.professional or not call.consumer:
            return
        if self.fence is not None and not await self.fence(call):
            log.warning("call %s: refusal left to the guard that owns the call now", call.dialer)
            return
        signalled = await self.path.record_refusal(
            mode="ari", source=source, professional=call.professional, callee=call.consumer, at=self.now(),
            call_id=call.dialer, campaign=call.campaign, lead=call.lead,
        )  # fmt: skip
        if not signalled.recorded:
            await self.port.play(call.dialer, ERROR_TONE)
            return
        call.refusal_recorded = True
        # Read back by a guard that adopts the call later: the refusal is recorded once per call.
        await asyncio.gather(
            self.port.set_var(call.dialer, variables.REFUSAL, source.value), self.port.play(call.dialer, ACK_TONE)
        )
        if self.policy.hangup_on_refusal:
            await self._finish(call, cause=16)

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self, ownership: Ownership | None = None, *, scan: bool = False) -> None:
        """Adopt what Asterisk holds for this app and that the guard does not know (after a restart
        or a lost websocket): bridged calls keep running, ringing carrier legs keep their dialer,
        calls that never got a decision get one, and half-calls are hung up.

        With redundant guards (`ownership`) the calls of every guard's app are looked at, and only
        those this guard wins the lease of are touched: its own after a restart, a dead or stopping
        guard's (`scan`: the periodic takeover scan)."""
        port = self.port
        app = self.settings.app
        channels = await port.channels()
        bridges = await port.bridges()
        if channels is None or bridges is None:
            return
        by_id = {channel["id"]: channel for channel in channels}
        apps = ownership.guard_apps() if ownership is not None else {app}
        in_app = {
            cid: channel
            for cid, channel in by_id.items()
            if _stasis_app(channel) in apps or cid.endswith(CARRIER_SUFFIX)
        }
        bridge_of = {
            str(b["id"])[len(BRIDGE_PREFIX) :]: str(b["id"])
            for b in bridges
            if str(b.get("id", "")).startswith(BRIDGE_PREFIX)
        }

        async def ours(dialer: str) -> bool:
            if ownership is None:
                return True
            sources = [f"channel:{dialer}"]
            if dialer + CARRIER_SUFFIX in by_id:
                sources.append(f"channel:{dialer}{CARRIER_SUFFIX}")
            if dialer in bridge_of:
                sources.append(f"bridge:{bridge_of[dialer]}")
            return await ownership.claim(dialer, _stasis_app(by_id.get(dialer)), sources, scan=scan)

        bridged: set[str] = set()
        for bridge in bridges:
            if not str(bridge.get("id", "")).startswith(BRIDGE_PREFIX):
                continue
            members = [cid for cid in bridge.get("channels", []) if cid in by_id]
            bridged.update(members)
            dialer = str(bridge["id"])[len(BRIDGE_PREFIX) :]
            carrier = dialer + CARRIER_SUFFIX
            if dialer not in in_app and _stasis_app(by_id.get(dialer)) is not None:
                continue  # a call in another Stasis app on this Asterisk: an independent guard's
            if dialer in self.calls or not await ours(dialer):
                continue
            if set(members) == {dialer, carrier}:
                call = await self._adopt(by_id[dialer], carrier)
                call.answered, call.bridged, call.bridge = True, True, str(bridge["id"])
                log.info("adopted bridged call %s", dialer)
                continue
            for cid in members:  # one leg left: the call is over
                await port.hangup(cid)
            await port.destroy_bridge(str(bridge["id"]))
        for cid, channel in in_app.items():
            if cid in bridged or cid in self.calls:
                continue
            if cid.endswith(CARRIER_SUFFIX):
                # Its dialer gone (or out of Stasis): hung up. A dialer in another Stasis app
                # belongs to a guard this one knows nothing of, which still acts on both legs.
                dialer = cid.removesuffix(CARRIER_SUFFIX)
                if dialer not in in_app and _stasis_app(by_id.get(dialer)) is None:
                    await port.hangup(cid)
                continue
            if not await ours(cid):
                continue
            carrier = cid + CARRIER_SUFFIX
            if carrier in by_id:
                call = await self._adopt(channel, carrier)
                if by_id[carrier].get("state") == "Up":
                    call.queue.put_nowait({"type": "StasisStart", "channel": by_id[carrier]})
                log.info("adopted ringing call %s", cid)
            else:
                log.info("deciding call %s that entered Stasis while the guard was away", cid)
                args = str((channel.get("dialplan") or {}).get("app_data", "")).split(",")[1:]
                self.dispatch({"type": "StasisStart", "args": args, "channel": channel})

    async def _adopt(self, channel: dict[str, Any], carrier: str) -> Call:
        professional = await self.port.get_var(channel["id"], variables.PROFESSIONAL)
        dialplan = channel.get("dialplan") or {}
        call = Call(
            channel["id"],
            args=[],
            caller=str((channel.get("caller") or {}).get("number", "")),
            callee=str(dialplan.get("exten", "")),
        )
        call.carrier = carrier
        call.professional = professional or None
        call.consumer = self.consumer_of(call.callee)
        # Set by the decision, so a refusal after the restart still names the call's campaign.
        call.campaign = await self.port.get_var(channel["id"], variables.CAMPAIGN) or None
        call.lead = await self.port.get_var(channel["id"], variables.LEAD) or None
        call.refusal_recorded = bool(await self.port.get_var(channel["id"], variables.REFUSAL))
        self.adopt(call)
        return call

    # ------------------------------------------------------------------ lifecycle

    def active_calls(self) -> int:
        return len(set(self.calls.values()))

    async def wait_idle_decisions(self, deadline: float) -> None:
        """Let decisions in flight finish (SIGTERM drain); bridged calls stay up."""
        while time.monotonic() < deadline:
            pending = [c for c in set(self.calls.values()) if c.carrier is None and not c.finished]
            if not pending:
                return
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for call in set(self.calls.values()):
            if call.task:
                call.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await call.task


def _stasis_app(channel: dict[str, Any] | None) -> str | None:
    """The Stasis app a channel is in (the first of its app_data), None when not in Stasis."""
    dialplan = (channel or {}).get("dialplan") or {}
    if dialplan.get("app_name") != "Stasis":
        return None
    return str(dialplan.get("app_data", "")).split(",", 1)[0]
