"""Test doubles for code that drives the guard: a recording ARI port and an in-memory store.

They ship with the package (as panoramisk ships panoramisk/testing.py) so that an integrator can
test a dialplan integration, a dialer connector or an API client against the real decision
path without Asterisk or Redis:

    from npv_guard.service import Guard
    from npv_guard.testing import MemoryStore, RecordingPort

    store = MemoryStore()
    guard = Guard(policy, store)
    verdict = await guard.check(request, record=True, call_id="c1")

`MemoryStore` implements `npv_guard.store.PairStore` with the Redis store's semantics (a
versioned snapshot, an attempt recorded only on an unchanged version and never before a later
one, a refusal stored once per id, consent events, the history); tests/store/test_doubles.py
runs the same scenarios against both and compares the verdicts. It keeps every fact: the Redis
TTLs only clean up, no decision depends on them. Not for production: nothing is persisted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from npv_guard.core.model import Attempt, ConsentEvent, PairState, Refusal, Slot
from npv_guard.store import (
    ATTEMPTS_KEEP,
    CONSENT_EVENTS_READ,
    REFUSALS_TTL,
    ConsumerHasher,
    Hold,
    PairHistory,
    SentMessage,
    Snapshot,
    StoreUnavailable,
)

__all__ = ["MemoryStore", "RecordingPort"]


# ---------------------------------------------------------------------- the ARI port


class RecordingPort:
    """An `AriPort` that records every operation, in order, and answers as scripted.

    `ops` holds one tuple per operation: its name, then its arguments in the signature's order
    (`("hangup", "d1", 21)`, `("originate", endpoint, channel_id, app, app_args, caller_id,
    ring_timeout_s, originator)`). Every operation succeeds unless `fail("hangup", ...)` says
    otherwise; `get_var` reads `variables[(channel, name)]`; `channels()`, `bridges()` and
    `subscribed_endpoints()` return `channel_list`, `bridge_list` and `subscriptions`.
    """

    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []
        self.failing: set[str] = set()
        self.variables: dict[tuple[str, str], str] = {}
        self.channel_list: list[dict[str, Any]] | None = []
        self.bridge_list: list[dict[str, Any]] | None = []
        self.subscriptions: list[str] | None = []

    def fail(self, *names: str) -> None:
        """Make these operations answer failure (False or None), as ARI does on a 404."""
        self.failing.update(names)

    def names(self) -> list[str]:
        """The operations' names, in order."""
        return [op[0] for op in self.ops]

    def calls(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of every operation of that name, in order."""
        return [op[1:] for op in self.ops if op[0] == name]

    def _note(self, *op: Any) -> bool:
        self.ops.append(op)
        return op[0] not in self.failing

    async def set_var(self, channel: str, name: str, value: str) -> bool:
        ok = self._note("set_var", channel, name, value)
        if ok:
            self.variables[(channel, name)] = value
        return ok

    async def hangup(self, channel: str, cause: int | None = None) -> bool:
        return self._note("hangup", channel, cause)

    async def ring(self, channel: str) -> bool:
        return self._note("ring", channel)

    async def answer(self, channel: str) -> bool:
        return self._note("answer", channel)

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
        return self._note("originate", endpoint, channel_id, app, app_args, caller_id, ring_timeout_s, originator)

    async def create_bridge(self, bridge_id: str) -> bool:
        return self._note("create_bridge", bridge_id)

    async def add_to_bridge(self, bridge_id: str, channels: list[str]) -> bool:
        return self._note("add_to_bridge", bridge_id, tuple(channels))

    async def destroy_bridge(self, bridge_id: str) -> bool:
        return self._note("destroy_bridge", bridge_id)

    async def play(self, channel: str, media: str, playback_id: str | None = None) -> bool:
        return self._note("play", channel, media, playback_id)

    async def get_var(self, channel: str, name: str) -> str | None:
        if not self._note("get_var", channel, name):
            return None
        return self.variables.get((channel, name))

    async def channels(self) -> list[dict[str, Any]] | None:
        return self.channel_list if self._note("channels") else None

    async def bridges(self) -> list[dict[str, Any]] | None:
        return self.bridge_list if self._note("bridges") else None

    async def send_message(self, to: str, sender: str, body: str) -> bool:
        return self._note("send_message", to, sender, body)

    async def subscribe(self, app: str, sources: list[str]) -> bool:
        return self._note("subscribe", app, tuple(sources))

    async def unsubscribe(self, app: str, sources: list[str]) -> bool:
        return self._note("unsubscribe", app, tuple(sources))

    async def subscribed_endpoints(self, app: str) -> list[str] | None:
        return self.subscriptions if self._note("subscribed_endpoints", app) else None


# ---------------------------------------------------------------------- the store


def _ms(instant: datetime) -> datetime:
    """Redis keeps instants as integer milliseconds: so does the double."""
    return datetime.fromtimestamp(int(instant.timestamp() * 1000) / 1000, UTC)


def _consent_ms(event: ConsentEvent) -> ConsentEvent:
    until = _ms(event.until) if event.until is not None else None
    slot = Slot(_ms(event.slot.start), _ms(event.slot.end)) if event.slot is not None else None
    return ConsentEvent(
        _ms(event.at),
        granted=event.granted,
        basis=event.basis,
        proof=event.proof,
        outside_hours=event.outside_hours,
        until=until,
        slot=slot,
    )


@dataclass
class _Pair:
    version: int = 0
    attempts: dict[tuple[datetime, str, str, str], Attempt] = field(default_factory=dict)
    refusals: dict[tuple[str, str, str], Refusal] = field(default_factory=dict)
    consents: set[ConsentEvent] = field(default_factory=set)
    messages: dict[tuple[datetime, str], SentMessage] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.version or self.attempts or self.refusals or self.consents or self.messages)


class MemoryStore:
    """A `PairStore` in memory, with the Redis store's semantics (see the module's docstring).

    Set `unavailable` to a reason to make every exchange raise `StoreUnavailable`, as a Redis
    that is away does: the guard then fails closed (or open, if configured so).
    """

    def __init__(self, hasher: ConsumerHasher | None = None) -> None:
        self._hasher = hasher or ConsumerHasher("npv-guard-memory-store-secret")
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._holds: dict[tuple[str, str, str], tuple[datetime, str, str, str]] = {}
        self.unavailable: str | None = None
        self.on_error: Any = None

    def _check(self, what: str) -> None:
        if self.unavailable is not None:
            if self.on_error is not None:
                self.on_error()
            raise StoreUnavailable(f"redis {what} failed: {self.unavailable}")

    def _pair(self, professional: str, digest: str) -> _Pair:
        return self._pairs.setdefault((professional, digest), _Pair())

    def _digests(self, consumer: str) -> list[str]:
        return [self._hasher.digest(consumer), *self._hasher.previous_digests(consumer)]

    def digest(self, consumer: str) -> str:
        return self._hasher.digest(consumer)

    async def ping(self) -> bool:
        self._check("ping")
        return True

    async def close(self) -> None:
        return None

    def _read(self, pair: _Pair, at: datetime) -> tuple[PairState, datetime | None]:
        # What the snapshot script reads: attempts that may still count, refusals within their
        # retention, the latest consent events (newest first), nothing after `at`.
        at = _ms(at)
        attempts = sorted((a for a in pair.attempts.values() if at - ATTEMPTS_KEEP <= a.at <= at), key=lambda a: a.at)
        refusals = sorted((r for r in pair.refusals.values() if at - REFUSALS_TTL <= r.at <= at), key=lambda r: r.at)
        consents = sorted((c for c in pair.consents if c.at <= at), key=lambda c: c.at, reverse=True)
        newest = max((a.at for a in pair.attempts.values()), default=None)
        state = PairState(tuple(attempts), tuple(refusals), tuple(consents[:CONSENT_EVENTS_READ]))
        return state, newest

    def _snapshot(self, professional: str, consumer: str, at: datetime) -> Snapshot:
        current, *previous = self._digests(consumer)
        pair = self._pairs.get((professional, current), _Pair())
        state, newest = self._read(pair, at)
        for digest in previous:
            old, _ = self._read(self._pairs.get((professional, digest), _Pair()), at)
            state = PairState(
                state.attempts + old.attempts, state.refusals + old.refusals, state.consents + old.consents
            )
        return Snapshot(state, str(pair.version), newest)

    async def snapshot(self, professional: str, consumer: str, at: datetime) -> Snapshot:
        self._check("snapshot")
        return self._snapshot(professional, consumer, at)

    async def snapshots(self, professional: str, consumers: Sequence[str], at: datetime) -> list[Snapshot]:
        self._check("snapshot batch")
        return [self._snapshot(professional, consumer, at) for consumer in consumers]

    async def record_attempt(self, professional: str, consumer: str, attempt: Attempt, expected_version: str) -> bool:
        self._check("record attempt")
        pair = self._pair(professional, self.digest(consumer))
        at = _ms(attempt.at)
        if str(pair.version) != expected_version or any(a.at > at for a in pair.attempts.values()):
            return False
        # As in Redis: with a call id the same call recorded twice counts once.
        call_id = attempt.call_id or "~" + uuid.uuid4().hex[:12]
        key = (at, call_id, attempt.campaign, attempt.lead)
        pair.attempts[key] = Attempt(at, attempt.call_id, attempt.campaign, attempt.lead)
        for old in [k for k, a in pair.attempts.items() if a.at < at - ATTEMPTS_KEEP]:
            del pair.attempts[old]
        pair.version += 1
        return True

    async def snapshot_and_hold(
        self, professional: str, consumer: str, attempt: Attempt
    ) -> tuple[Snapshot, Hold | None]:
        self._check("snapshot and hold")
        snapshot = self._snapshot(professional, consumer, attempt.at)
        digest = self.digest(consumer)
        pair = self._pair(professional, digest)
        at = _ms(attempt.at)
        if self._hasher.has_previous or any(a.at > at for a in pair.attempts.values()):
            return snapshot, None  # as in Redis: the caller records the two-step way
        call_id = attempt.call_id or "~" + uuid.uuid4().hex[:12]
        key = (at, call_id, attempt.campaign, attempt.lead)
        added = key not in pair.attempts
        if added:
            pair.attempts[key] = Attempt(at, attempt.call_id, attempt.campaign, attempt.lead)
            for old in [k for k, a in pair.attempts.items() if a.at < at - ATTEMPTS_KEEP]:
                del pair.attempts[old]
            pair.version += 1
        member = f"{int(at.timestamp() * 1000)}:{call_id}|{attempt.campaign}|{attempt.lead}"
        self._holds[(professional, digest, member)] = key
        return snapshot, Hold(f"{professional}|{digest}", "", member, added=added)

    async def release(self, hold: Hold) -> None:
        self._check("release attempt")
        professional, _, digest = hold.attempts_key.partition("|")
        key = self._holds.pop((professional, digest, hold.member), None)
        pair = self._pairs.get((professional, digest))
        if hold.added and key is not None and pair is not None and pair.attempts.pop(key, None) is not None:
            pair.version += 1

    async def record_refusal(
        self, professional: str, digest: str, refusal: Refusal, withdrawal: ConsentEvent | None, refusal_id: str
    ) -> None:
        self._check("record refusal")
        pair = self._pair(professional, digest)
        # One member per id: the same refusal stored again (a journal replay) stays one.
        pair.refusals[(refusal_id, refusal.source.value, refusal.call_id)] = Refusal(
            _ms(refusal.at), refusal.source, refusal.call_id
        )
        if withdrawal is not None:
            pair.consents.add(_consent_ms(withdrawal))
        pair.version += 1

    async def record_message(self, professional: str, consumer: str, message: SentMessage) -> None:
        self._check("record message")
        pair = self._pair(professional, self.digest(consumer))
        pair.messages[(_ms(message.at), message.message_id)] = SentMessage(_ms(message.at), message.message_id)

    async def record_consent(self, professional: str, consumer: str, event: ConsentEvent) -> None:
        self._check("record consent")
        pair = self._pair(professional, self.digest(consumer))
        pair.consents.add(_consent_ms(event))
        pair.version += 1

    async def record_consents(self, professional: str, rows: Iterable[tuple[str, ConsentEvent]]) -> int:
        batch = list(rows)
        self._check("consent batch")
        for consumer, event in batch:
            await self.record_consent(professional, consumer, event)
        return len(batch)

    async def history(self, professional: str, consumer: str) -> PairHistory:
        """Everything held for the pair; the TTLs are -1 (kept) or -2 (no such fact), since the
        double never expires anything."""
        self._check("history")
        pairs = [self._pairs.get((professional, digest), _Pair()) for digest in self._digests(consumer)]
        state = PairState(
            tuple(sorted((a for p in pairs for a in p.attempts.values()), key=lambda a: a.at)),
            tuple(sorted((r for p in pairs for r in p.refusals.values()), key=lambda r: r.at)),
            tuple(sorted((c for p in pairs for c in p.consents), key=lambda c: c.at)),
        )
        current = pairs[0]
        held = {
            "attempts": bool(current.attempts),
            "refusals": bool(current.refusals),
            "consents": bool(current.consents),
            "messages": bool(current.messages),
        }
        messages = tuple(sorted((m for p in pairs for m in p.messages.values()), key=lambda m: m.at))
        return PairHistory(state, {name: -1 if kept else -2 for name, kept in held.items()}, messages)

    def recorded_attempts(self) -> list[Attempt]:
        """Every attempt held, of every pair, oldest first."""
        return sorted((a for pair in self._pairs.values() for a in pair.attempts.values()), key=lambda a: a.at)

    def recorded_refusals(self) -> list[Refusal]:
        """Every refusal held, of every pair, oldest first."""
        return sorted((r for pair in self._pairs.values() for r in pair.refusals.values()), key=lambda r: r.at)

    def clear(self) -> None:
        """Forget everything (between two tests)."""
        self._pairs.clear()

    @property
    def pairs(self) -> int:
        """How many pairs hold anything."""
        return sum(1 for pair in self._pairs.values() if not pair.empty())


if TYPE_CHECKING:  # mypy proves both doubles implement the interfaces they stand for
    from npv_guard.store import PairStore, Store
    from npv_guard.telephony import AriPort

    def _implements(store: MemoryStore, redis: Store, port: RecordingPort) -> tuple[PairStore, PairStore, AriPort]:
        return store, redis, port
