"""The one service every adapter (CLI, ARI, AGI) shares: rules plus store, and nothing more."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from npv_guard.core.decide import (
    Prepared,
    Verdict,
    consent_at,
    decide,
    place_consumer,
    prepare,
    refusal_block_end,
    refusal_withdrawal,
)
from npv_guard.core.model import (
    Attempt,
    Basis,
    CallRequest,
    ConsentEvent,
    PairState,
    Policy,
    Refusal,
    RefusalSource,
    StateUnavailable,
)
from npv_guard.core.schedule import next_allowed_at
from npv_guard.core.territories import Place
from npv_guard.journal import JournalEntry, RefusalJournal
from npv_guard.store import PairHistory, SentMessage, Snapshot, Store, StoreUnavailable

log = logging.getLogger("npv_guard.service")

# Each lost race means another guard just wrote this pair; a handful of rounds settles any
# realistic contention (at most 4 writers can win before the cap rejects everyone else).
MAX_RECORD_ROUNDS = 16
# How far apart the clocks of a call centre's guards may be: an attempt stored at most this much
# after a decision's instant is taken as concurrent, not as a fact from the future.
MAX_CLOCK_SKEW = timedelta(seconds=5)


class PairError(ValueError):
    """A refusal or consent command whose consumer number cannot be placed."""


@dataclass(frozen=True, slots=True)
class RefusalOutcome:
    refusal: Refusal
    withdraws_consent: bool  # since opt-in: blocked until a new consent
    blocked_until: datetime  # the 60-day block of D. 223-9
    journaled: bool = False  # Redis was unavailable: kept in the local journal until replayed


@dataclass(frozen=True, slots=True)
class StopOutcome:
    refusal: RefusalOutcome
    first: bool  # consent was in force (or unknown) until this STOP: acknowledge it


class Guard:
    def __init__(self, policy: Policy, store: Store | None, journal: RefusalJournal | None = None) -> None:
        self.policy = policy
        self.store = store
        self.journal = journal

    async def check(self, request: CallRequest, *, record: bool, offline: bool = False, call_id: str = "") -> Verdict:
        """Decide on a call; with `record`, an allowed call is counted as an attempt atomically."""
        prepared = prepare(request, self.policy)
        pair = prepared.pair
        if offline or pair is None:
            return decide(prepared, None, self.policy)
        if self.store is None:
            return decide(prepared, StateUnavailable("no store configured"), self.policy)
        professional, consumer = pair
        journaled = self._journaled(professional, consumer)
        for _ in range(MAX_RECORD_ROUNDS):
            try:
                snapshot = await self.store.snapshot(professional, consumer, request.at)
            except StoreUnavailable as error:
                # A refusal waiting in a journal of this host must block even an operator who chose
                # fail-open, and so must a peer journal this process cannot read.
                blind = self.journal is not None and self.journal.blind
                return self._unavailable(prepared, str(error), allow_fail_open=not journaled and not blind)
            newest = snapshot.newest_attempt
            if record and newest is not None and newest >= request.at:
                # Another guard recorded an attempt at a later instant than ours (clocks a few ms
                # or seconds apart): ours comes after it in fact, so it is decided just after it.
                if newest - request.at > MAX_CLOCK_SKEW:
                    return self._unavailable(
                        prepared,
                        f"an attempt later than {request.at.isoformat()} is already stored",
                        allow_fail_open=False,
                    )
                request = replace(request, at=newest + timedelta(milliseconds=1))
                prepared = prepare(request, self.policy, (prepared.caller, prepared.callee))
                continue
            state = _with_journal(snapshot, journaled).state
            verdict = decide(prepared, state, self.policy)
            if not verdict.allowed:
                return replace(verdict, next_allowed_at=next_allowed_at(verdict, state, self.policy))
            if not record:
                return verdict
            try:
                if await self.store.record_attempt(
                    professional, consumer, Attempt(request.at, call_id), snapshot.version
                ):
                    return verdict
            except StoreUnavailable as error:
                # The attempt may or may not be stored: the call must not go ahead uncounted.
                return self._unavailable(prepared, str(error), allow_fail_open=False)
        return self._unavailable(prepared, f"pair kept changing for {MAX_RECORD_ROUNDS} rounds", allow_fail_open=False)

    def _journaled(self, professional: str, consumer: str) -> list[JournalEntry]:
        """The pair's refusals still waiting for Redis in this guard's journal or a peer's."""
        if self.journal is None or self.store is None or not self.journal.has_pending():
            return []  # the usual case: no digest to compute
        return self.journal.pending_for(professional, self.store.digest(consumer))

    def pair_state(self, professional: str, consumer: str, snapshot: Snapshot) -> PairState:
        """The state `check` decides on from a snapshot: journaled refusals count as stored. For
        adapters that read snapshots in batches (lead-list scrubbing)."""
        return _with_journal(snapshot, self._journaled(professional, consumer)).state

    def _unavailable(self, prepared: Prepared, detail: str, *, allow_fail_open: bool = True) -> Verdict:
        log.warning("state unavailable: %s", detail)
        policy = self.policy if allow_fail_open else replace(self.policy, fail_open=False)
        return decide(prepared, StateUnavailable(detail), policy)

    def _store(self) -> Store:
        if self.store is None:
            raise StoreUnavailable("no store configured")
        return self.store

    def consumer_ref(self, consumer: str | None) -> str | None:
        """The keyed hash that stands for a consumer in logs, metrics and Redis."""
        return self.store.digest(consumer) if consumer and self.store else None

    async def record_refusal(
        self, professional: str, callee: str, at: datetime, source: RefusalSource, call_id: str = ""
    ) -> RefusalOutcome:
        """Store a refusal; when Redis cannot take it and a journal is configured, journal it."""
        consumer, places = self._consumer(callee)
        store = self._store()
        refusal = Refusal(at, source, call_id)
        withdrawal = refusal_withdrawal(places, refusal)
        digest = store.digest(consumer)
        journaled = False
        refusal_id = uuid.uuid4().hex
        try:
            await store.record_refusal(professional, digest, refusal, withdrawal, refusal_id)
        except StoreUnavailable:
            if self.journal is None:
                raise
            # The write may have landed before the error (a timeout): same id, stored once.
            self.journal.add(professional, digest, refusal, withdrawal, refusal_id)
            journaled = True
            log.warning("refusal journaled (redis unavailable): %d pending", len(self.journal))
        return RefusalOutcome(refusal, withdrawal is not None, refusal_block_end(places, at), journaled)

    async def record_stop(self, professional: str, consumer: str, at: datetime, message_id: str) -> StopOutcome:
        """A STOP reply: a refusal by SMS, which withdraws consent (see `refusal_withdrawal`).

        `first` is False when consent was already withdrawn before it (a repeated STOP), so the
        consumer is acknowledged once. When the state cannot be read it counts as first: a
        second confirmation is better than none.
        """
        store = self._store()
        first = True
        try:
            latest = consent_at((await store.snapshot(professional, consumer, at)).state.consents, at)
            first = latest is None or latest.granted
        except StoreUnavailable:
            pass
        outcome = await self.record_refusal(professional, consumer, at, RefusalSource.SMS, message_id)
        return StopOutcome(outcome, first)

    async def record_message(self, professional: str, consumer: str, at: datetime, message_id: str) -> None:
        """Note a relayed SMS in the pair's history (no rule counts it)."""
        await self._store().record_message(professional, consumer, SentMessage(at, message_id))

    async def replay_journal(self) -> int:
        """Move journaled refusals into Redis, oldest first; stops at the first failure. Then
        adopt the journals of peers whose writer died: replay them and compact them."""
        if self.journal is None or self.store is None:
            return 0
        replayed, complete = await self._replay(self.journal, self.store)
        if complete:
            replayed += await self._adopt_orphans(self.journal, self.store)
        return replayed

    async def _replay(self, journal: RefusalJournal, store: Store) -> tuple[int, bool]:
        replayed = 0
        for entry in sorted(journal.pending(), key=lambda e: e.refusal.at):
            try:
                # Under the entry's own id: a replay repeated after a crash (Redis written, `done`
                # not yet) stores the refusal once.
                await store.record_refusal(entry.professional, entry.digest, entry.refusal, entry.withdrawal, entry.id)
            except StoreUnavailable:
                return replayed, False
            journal.done(entry)
            replayed += 1
        return replayed, True

    async def _adopt_orphans(self, journal: RefusalJournal, store: Store) -> int:
        orphans = journal.orphans()
        if not orphans:
            return 0
        try:
            if not await store.ping():
                return 0
        except StoreUnavailable:
            return 0  # no point holding a peer's lock (and delaying its restart) for nothing
        replayed = 0
        for path in orphans:
            adopted = RefusalJournal.adopt(path)
            if adopted is None:
                continue  # its writer is alive: it replays them itself
            try:
                count, _ = await self._replay(adopted, store)
            finally:
                adopted.close()
            if count:
                log.warning("adopted the journal %s of a stopped guard: replayed %d refusal(s)", path, count)
            replayed += count
        return replayed

    async def grant_consent(
        self, professional: str, callee: str, at: datetime, basis: Basis, proof: str, outside_hours: bool = False
    ) -> ConsentEvent:
        consumer, _ = self._consumer(callee)
        event = ConsentEvent(at, granted=True, basis=basis, proof=proof, outside_hours=outside_hours)
        await self._store().record_consent(professional, consumer, event)
        return event

    async def withdraw_consent(self, professional: str, callee: str, at: datetime, proof: str = "") -> ConsentEvent:
        consumer, _ = self._consumer(callee)
        event = ConsentEvent(at, granted=False, proof=proof or "withdrawn")
        await self._store().record_consent(professional, consumer, event)
        return event

    async def history(self, professional: str, callee: str) -> tuple[str, PairHistory]:
        consumer, _ = self._consumer(callee)
        return consumer, await self._store().history(professional, consumer)

    def _consumer(self, callee: str) -> tuple[str, tuple[Place, ...]]:
        try:
            return place_consumer(callee)
        except ValueError as error:
            raise PairError(str(error)) from None


def _with_journal(snapshot: Snapshot, entries: list[JournalEntry]) -> Snapshot:
    """The snapshot plus refusals still waiting in the journal: they count as if stored."""
    if not entries:
        return snapshot
    state = snapshot.state
    refusals = state.refusals + tuple(entry.refusal for entry in entries)
    consents = state.consents + tuple(entry.withdrawal for entry in entries if entry.withdrawal)
    return Snapshot(PairState(state.attempts, refusals, consents), snapshot.version)
