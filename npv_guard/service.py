"""The one service every adapter (CLI, ARI, AGI) shares: rules plus store, and nothing more."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from npv_guard.core.decide import (
    Prepared,
    Verdict,
    consent_at,
    decide,
    grant_event,
    place_consumer,
    prepare,
    prepare_at,
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
    Slot,
    StateUnavailable,
    label_problem,
    professional_problem,
)
from npv_guard.core.schedule import next_allowed_at
from npv_guard.core.territories import Place
from npv_guard.journal import JournalEntry, RefusalJournal
from npv_guard.store import Hold, PairHistory, PairStore, SentMessage, Snapshot, StoreUnavailable

log = logging.getLogger("npv_guard.service")

# Each lost race means another guard just wrote this pair; a handful of rounds settles any
# realistic contention (at most 4 writers can win before the cap rejects everyone else).
MAX_RECORD_ROUNDS = 16
# How far apart the clocks of a call centre's guards may be: an attempt stored at most this much
# after a decision's instant is taken as concurrent, not as a fact from the future.
MAX_CLOCK_SKEW = timedelta(seconds=5)
# How far from the guard's clock a fact being recorded (attempt, refusal, withdrawal, STOP) may be
# dated, by default (setting rules.max_write_skew_s).
DEFAULT_WRITE_SKEW = timedelta(seconds=5)


def call_labels(campaign: str | None, lead: str | None, callee: str | None) -> tuple[str | None, str | None, list[str]]:
    """The campaign and lead ids a call path received, each kept only when well formed.

    A call path cannot answer an error: a malformed label is dropped with a warning (and named in
    the audit line) rather than failing a call that the rules allow; the rules never read it.
    """
    dropped: list[str] = []
    kept: list[str | None] = []
    for name, value in (("campaign", campaign), ("lead", lead)):
        if not value:
            kept.append(None)
        elif (problem := label_problem(value, callee)) is None:
            kept.append(value)
        else:
            log.warning("%s id dropped: %s", name, problem)  # never the value: it may be the number
            dropped.append(name)
            kept.append(None)
    return kept[0], kept[1], dropped


class InputError(ValueError):
    """Input refused before anything is read or stored. `code`: the API's stable error code."""

    code = "BAD_REQUEST"


class PairError(InputError):
    """A refusal or consent command whose consumer number cannot be placed."""

    code = "INVALID_NUMBER"


class ProfessionalError(InputError):
    """A professional id that is malformed, or not one of the configured professionals."""

    code = "UNKNOWN_PROFESSIONAL"


class InstantError(InputError):
    """A fact to record dated too far from the guard's clock (or a grant in the future)."""

    code = "INSTANT_OUT_OF_RANGE"


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
    """`clock`: the guard's clock (a replay clock under NPV_GUARD_NOW). With one, every write of a
    fact must be dated within `max_write_skew` of it (grants: not later than that); without one
    (library use, tests replaying fixed instants) instants are taken as given."""

    def __init__(
        self,
        policy: Policy,
        store: PairStore | None,
        journal: RefusalJournal | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        max_write_skew: timedelta = DEFAULT_WRITE_SKEW,
    ) -> None:
        self.policy = policy
        self.store = store
        self.journal = journal
        self.clock = clock
        self.max_write_skew = max_write_skew

    def professional_id(self, professional: str) -> str:
        """The id itself when it may be written under: well formed, and configured when a
        directory of professionals is. A fact stored under any other id would block nothing."""
        problem = professional_problem(professional)
        if problem:
            raise ProfessionalError(f"professional {professional[:64]!r}: {problem}")
        if self.policy.professionals and self.policy.professional(professional) is None:
            raise ProfessionalError(
                f"professional {professional[:64]!r} is not one of the configured [[professionals]]"
            )
        return professional

    def write_instant(self, at: datetime, what: str, *, past: bool = False) -> datetime:
        """`at` if a fact dated then may be recorded now: within the skew of the guard's clock,
        or any earlier instant when `past` (a consent grant carries its collection instant)."""
        if self.clock is None:
            return at
        now = self.clock()
        skew = self.max_write_skew.total_seconds()
        if at - now > self.max_write_skew:
            raise InstantError(
                f"{what}: {at.isoformat()} is in the future (more than {skew:g} s after the guard's clock)"
            )
        if not past and now - at > self.max_write_skew:
            raise InstantError(
                f"{what}: {at.isoformat()} is more than {skew:g} s before the guard's clock; "
                "facts are recorded when they happen"
            )
        return at

    async def check(self, request: CallRequest, *, record: bool, offline: bool = False, call_id: str = "") -> Verdict:
        """Decide on a call; with `record`, an allowed call is counted as an attempt atomically."""
        if record:
            self.write_instant(request.at, "at")
        prepared = prepare(request, self.policy)
        if not record and not offline:
            ((verdict, state),) = await self.decide_many([prepared])
            return self.with_next_allowed(verdict, state)
        pair = prepared.pair
        if offline or pair is None:
            verdict = decide(prepared, None, self.policy)
            if offline and not verdict.allowed:
                return replace(verdict, next_allowed_at=next_allowed_at(verdict, None, self.policy))
            return verdict
        if self.store is None:
            return decide(prepared, StateUnavailable("no store configured"), self.policy)
        professional, consumer = pair
        journaled = self._journaled(professional, consumer)
        for _ in range(MAX_RECORD_ROUNDS):
            hold: Hold | None = None
            try:
                if not prepared.reasons and not prepared.calendar_reasons:
                    # Likely allowed: read and record in one round trip, released if rejected. A
                    # call already rejected by its numbers or its hour only reads (and writes nothing).
                    attempt = Attempt(request.at, call_id, request.campaign or "", request.lead or "")
                    snapshot, hold = await self.store.snapshot_and_hold(professional, consumer, attempt)
                else:
                    snapshot = await self.store.snapshot(professional, consumer, request.at)
            except StoreUnavailable as error:
                # A refusal waiting in a journal of this host must block even an operator who chose
                # fail-open, and so must a peer journal this process cannot read.
                blind = self.journal is not None and self.journal.blind
                return self._unavailable(prepared, str(error), allow_fail_open=not journaled and not blind)
            newest = snapshot.newest_attempt
            if hold is None and newest is not None and newest >= request.at:
                # Another guard recorded an attempt at a later instant than ours (clocks a few ms
                # or seconds apart): ours comes after it in fact, so it is decided just after it.
                if newest - request.at > MAX_CLOCK_SKEW:
                    return self._unavailable(
                        prepared,
                        f"an attempt later than {request.at.isoformat()} is already stored",
                        allow_fail_open=False,
                    )
                request = replace(request, at=newest + timedelta(milliseconds=1))
                prepared = prepare_at(prepared, request.at, self.policy)
                continue
            state = _with_journal(snapshot, journaled).state
            verdict = decide(prepared, state, self.policy)
            if not verdict.allowed:
                if hold is not None:
                    await self._release(self.store, hold)
                return replace(verdict, next_allowed_at=next_allowed_at(verdict, state, self.policy))
            if hold is not None:
                return verdict
            try:
                if await self.store.record_attempt(
                    professional,
                    consumer,
                    Attempt(request.at, call_id, request.campaign or "", request.lead or ""),
                    snapshot.version,
                ):
                    return verdict
            except StoreUnavailable as error:
                # The attempt may or may not be stored: the call must not go ahead uncounted.
                return self._unavailable(prepared, str(error), allow_fail_open=False)
        return self._unavailable(prepared, f"pair kept changing for {MAX_RECORD_ROUNDS} rounds", allow_fail_open=False)

    @staticmethod
    async def _release(store: PairStore, hold: Hold) -> None:
        try:
            await store.release(hold)
        except StoreUnavailable as error:
            # The rejected call stays counted as an attempt: stricter, never laxer.
            log.warning("a rejected call's attempt could not be released: %s", error)

    async def decide_many(
        self, calls: Sequence[Prepared], *, strict: bool = False
    ) -> list[tuple[Verdict, PairState | None]]:
        """Read-only decisions (`check` without `record`), each with the state it was made on
        (None: no pair to read, or the state was unavailable). The pairs' snapshots are read in
        one pipelined batch per professional and instant; journaled refusals count as stored; an
        unavailable state is decided fail-closed as in `check`. A refused verdict carries no
        `next_allowed_at` yet: `with_next_allowed` adds it (a lead-list scrubber memoises it).

        `strict`: raise StoreUnavailable instead (a lead list is stopped, not decided on nothing).
        """
        decided: list[tuple[Verdict, PairState | None] | None] = [None] * len(calls)
        groups: dict[tuple[str, datetime], list[int]] = {}
        for index, prepared in enumerate(calls):
            pair = prepared.pair
            if pair is None:
                decided[index] = (decide(prepared, None, self.policy), None)
            elif self.store is None:
                if strict:
                    raise StoreUnavailable("no store configured")
                decided[index] = (decide(prepared, StateUnavailable("no store configured"), self.policy), None)
            else:
                groups.setdefault((pair[0], prepared.request.at), []).append(index)
        store = self.store
        for (professional, at), indexes in groups.items():
            assert store is not None
            consumers = [calls[i].pair[1] for i in indexes]  # type: ignore[index]
            journaled = [self._journaled(professional, consumer) for consumer in consumers]
            try:
                if len(consumers) == 1:  # one script run: no EXISTS round trip first
                    snapshots = [await store.snapshot(professional, consumers[0], at)]
                else:
                    snapshots = await store.snapshots(professional, consumers, at)
            except StoreUnavailable as error:
                if strict:
                    raise
                # A refusal waiting in a journal of this host must block even an operator who chose
                # fail-open, and so must a peer journal this process cannot read.
                blind = self.journal is not None and self.journal.blind
                for index, entries in zip(indexes, journaled, strict=True):
                    verdict = self._unavailable(calls[index], str(error), allow_fail_open=not entries and not blind)
                    decided[index] = (verdict, None)
                continue
            for index, snapshot, entries in zip(indexes, snapshots, journaled, strict=True):
                state = _with_journal(snapshot, entries).state
                decided[index] = (decide(calls[index], state, self.policy), state)
        return decided  # type: ignore[return-value]

    def with_next_allowed(self, verdict: Verdict, state: PairState | None) -> Verdict:
        """A refused verdict of `decide_many` with its `next_allowed_at`, as `check` answers it:
        none without a state to count from (no pair, state unavailable)."""
        if verdict.allowed or state is None:
            return verdict
        return replace(verdict, next_allowed_at=next_allowed_at(verdict, state, self.policy))

    def _journaled(self, professional: str, consumer: str) -> list[JournalEntry]:
        """The pair's refusals still waiting for Redis in this guard's journal or a peer's."""
        if self.journal is None or self.store is None or not self.journal.has_pending():
            return []  # the usual case: no digest to compute
        return self.journal.pending_for(professional, self.store.digest(consumer))

    def _unavailable(self, prepared: Prepared, detail: str, *, allow_fail_open: bool = True) -> Verdict:
        log.warning("state unavailable: %s", detail)
        policy = self.policy if allow_fail_open else replace(self.policy, fail_open=False)
        return decide(prepared, StateUnavailable(detail), policy)

    def _store(self) -> PairStore:
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
        self.professional_id(professional)
        self.write_instant(at, "at")
        return await self._record_refusal(professional, callee, at, source, call_id)

    async def _record_refusal(
        self, professional: str, callee: str, at: datetime, source: RefusalSource, call_id: str
    ) -> RefusalOutcome:
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
        self.professional_id(professional)
        self.write_instant(at, "at")
        store = self._store()
        first = True
        try:
            latest = consent_at((await store.snapshot(professional, consumer, at)).state.consents, at)
            first = latest is None or latest.granted
        except StoreUnavailable:
            pass
        # Checked once, above: the state read in between must not make the STOP itself too old.
        outcome = await self._record_refusal(professional, consumer, at, RefusalSource.SMS, message_id)
        return StopOutcome(outcome, first)

    async def record_message(self, professional: str, consumer: str, at: datetime, message_id: str) -> None:
        """Note a relayed SMS in the pair's history (no rule counts it)."""
        await self._store().record_message(professional, consumer, SentMessage(at, message_id))

    async def replay_journal(self, replayed_one: Callable[[JournalEntry], None] | None = None) -> int:
        """Move journaled refusals into Redis, oldest first; stops at the first failure. Then
        adopt the journals of peers whose writer died: replay them and compact them.
        `replayed_one` is told of each entry once Redis holds it (its audit line)."""
        if self.journal is None or self.store is None:
            return 0
        replayed, complete = await self._replay(self.journal, self.store, replayed_one)
        if complete:
            replayed += await self._adopt_orphans(self.journal, self.store, replayed_one)
        return replayed

    async def _replay(
        self, journal: RefusalJournal, store: PairStore, replayed_one: Callable[[JournalEntry], None] | None
    ) -> tuple[int, bool]:
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
            if replayed_one is not None:
                replayed_one(entry)
        return replayed, True

    async def _adopt_orphans(
        self, journal: RefusalJournal, store: PairStore, replayed_one: Callable[[JournalEntry], None] | None
    ) -> int:
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
                count, _ = await self._replay(adopted, store, replayed_one)
            finally:
                adopted.close()
            if count:
                log.warning("adopted the journal %s of a stopped guard: replayed %d refusal(s)", path, count)
            replayed += count
        return replayed

    async def grant_consent(
        self,
        professional: str,
        callee: str,
        at: datetime,
        basis: Basis,
        proof: str,
        outside_hours: bool = False,
        *,
        until: datetime | None = None,
        slot: Slot | None = None,
    ) -> ConsentEvent:
        """ValueError (not PairError) when the grant's own facts do not go together."""
        self.professional_id(professional)
        self.write_instant(at, "at", past=True)
        consumer, _ = self._consumer(callee)
        event = grant_event(at, basis, proof, outside_hours=outside_hours, until=until, slot=slot)
        await self._store().record_consent(professional, consumer, event)
        return event

    async def withdraw_consent(self, professional: str, callee: str, at: datetime, proof: str = "") -> ConsentEvent:
        self.professional_id(professional)
        self.write_instant(at, "at")
        consumer, _ = self._consumer(callee)
        event = ConsentEvent(at, granted=False, proof=proof or "withdrawn")
        await self._store().record_consent(professional, consumer, event)
        return event

    async def history(self, professional: str, callee: str) -> tuple[str, PairHistory]:
        self.professional_id(professional)
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
