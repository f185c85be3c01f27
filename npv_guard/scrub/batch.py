"""Deciding leads in batches, through the Guard (read-only) and on as many processes as cores.

A batch is a list of leads as read (record, phone cell, postcode cell). `BatchDecider.decide`
prepares each lead's call request with the core, has `Guard.decide_many` read the pairs' snapshots
in one pipelined round trip (`ScrubReads`: a few runs of the batch snapshot script) and decide
them, and formats the output lines. On a large file, the
batches are decided by worker processes, each with its own Store and Guard: the rules are pure
and the reads are independent, so the verdicts are the same wherever a batch is decided.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from npv_guard.core.decide import Verdict, prepare
from npv_guard.core.model import Attempt, CallRequest, ConsentEvent, PairState, Policy, Refusal
from npv_guard.core.numbering import parse as parse_number
from npv_guard.core.schedule import next_allowed_at
from npv_guard.core.territories import Place
from npv_guard.journal import JournalUnreadable, RefusalJournal
from npv_guard.scrub.leads import Row
from npv_guard.scrub.summary import Tally
from npv_guard.service import Guard
from npv_guard.store import Hold, PairHistory, SentMessage, Snapshot, Store

# Leads decided per pipelined Redis round trip: large enough that the round trip is amortised,
# small enough that several batches are in flight at once (one preparing while another is read).
BATCH = 2000


class ScrubFailed(Exception):
    """The run could not be completed (Redis, the refusal journal): exit 1, nothing written."""


@dataclass(frozen=True)
class Campaign:
    professional: str
    caller: str
    at: datetime
    policy: Policy
    sector: str | None = None
    automated: bool = False
    campaign: str | None = None  # a label: it never changes a verdict


@dataclass(frozen=True, slots=True)
class When:
    """A `next_allowed_at`, formatted once (it is shared by many leads through the memo)."""

    instant: datetime
    utc: str
    local: str
    timestamp: float  # the sort key of the "later" leads

    @property
    def local_day(self) -> str:
        return self.local[:10]


class NextAllowed:
    """The core's `next_allowed_at`, memoised for pairs with nothing stored.

    With no attempt, refusal or consent, the answer depends only on the consumer's places (time
    zones, holiday subdivisions) and the verdict's reasons, given what one run holds fixed: the
    instant, caller, professional, sector, campaign type and policy. One instance serves one such
    run; a pair with stored facts is always computed.
    """

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._memo: dict[tuple[tuple[Place, ...], tuple[str, ...]], When | None] = {}

    def __call__(self, verdict: Verdict, state: PairState | None) -> When | None:
        if state is None or state.attempts or state.refusals or state.consents:
            return self._compute(verdict, state)
        key = (verdict.prepared.places, verdict.codes)
        try:
            return self._memo[key]
        except KeyError:
            when = self._memo[key] = self._compute(verdict, state)
            return when

    def _compute(self, verdict: Verdict, state: PairState | None) -> When | None:
        instant = next_allowed_at(verdict, state, self._policy)
        if instant is None:
            return None
        zone = verdict.prepared.places[0].territory.zone
        utc = instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return When(instant, utc, instant.astimezone(zone).isoformat(), instant.timestamp())


@dataclass(slots=True)
class Decided:
    """A decided batch: its counts and its output lines, by where they go in the output."""

    tally: Tally = field(default_factory=Tally)
    now: list[str] = field(default_factory=list)  # in the input's order
    later: list[tuple[float, str]] = field(default_factory=list)  # sorted by instant at the end
    never: list[str] = field(default_factory=list)


class ScrubReads:
    """The Store as the scrub's Guard sees it: `snapshots` is `Store.read_snapshots` (one script
    run per few hundred pairs), the other reads are the Store's, and every write raises (a scrub
    records nothing; `Guard.decide_many` writes nothing anyway)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def digest(self, consumer: str) -> str:
        return self.store.digest(consumer)

    async def ping(self) -> bool:
        return await self.store.ping()

    async def close(self) -> None:
        await self.store.close()

    async def snapshot(self, professional: str, consumer: str, at: datetime) -> Snapshot:
        return await self.store.snapshot(professional, consumer, at)

    async def snapshots(self, professional: str, consumers: Sequence[str], at: datetime) -> list[Snapshot]:
        return await self.store.read_snapshots(professional, consumers, at)

    async def history(self, professional: str, consumer: str) -> PairHistory:
        return await self.store.history(professional, consumer)

    @staticmethod
    def _records_nothing() -> RuntimeError:
        return RuntimeError("a scrub records nothing")

    async def record_attempt(self, professional: str, consumer: str, attempt: Attempt, expected_version: str) -> bool:
        raise self._records_nothing()

    async def snapshot_and_hold(
        self, professional: str, consumer: str, attempt: Attempt
    ) -> tuple[Snapshot, Hold | None]:
        raise self._records_nothing()

    async def release(self, hold: Hold) -> None:
        raise self._records_nothing()

    async def record_refusal(
        self, professional: str, digest: str, refusal: Refusal, withdrawal: ConsentEvent | None, refusal_id: str
    ) -> None:
        raise self._records_nothing()

    async def record_message(self, professional: str, consumer: str, message: SentMessage) -> None:
        raise self._records_nothing()

    async def record_consent(self, professional: str, consumer: str, event: ConsentEvent) -> None:
        raise self._records_nothing()

    async def record_consents(self, professional: str, rows: Iterable[tuple[str, ConsentEvent]]) -> int:
        raise self._records_nothing()


class BatchDecider:
    """Decides the batches of one run: one campaign, one Guard, one output format."""

    def __init__(self, campaign: Campaign, guard: Guard, delimiter: str, newline: str) -> None:
        self.campaign = campaign
        self.guard = guard
        self.delimiter = delimiter
        self.newline = newline
        self.next_allowed = NextAllowed(campaign.policy)
        self._caller = parse_number(campaign.caller)
        # The ends of lines that depend only on what the run holds fixed, formatted once each.
        self._stateless: dict[tuple[tuple[Place, ...], tuple[str, ...]], tuple[float, str, str] | None] = {}
        self._never_ends: dict[tuple[str, ...], str] = {}

    async def decide(self, rows: list[Row]) -> Decided:
        campaign, caller, policy = self.campaign, self._caller, self.campaign.policy
        # The caller is parsed once for the run; given both numbers, `prepare` parses nothing.
        prepared = [
            prepare(
                CallRequest(
                    caller=campaign.caller,
                    callee=number,
                    at=campaign.at,
                    professional=campaign.professional,
                    consumer_postcode=postcode,
                    sector=campaign.sector,
                    automated=campaign.automated,
                    campaign=campaign.campaign,
                ),
                policy,
                (caller, parse_number(number)),
            )
            for _, number, postcode in rows
        ]
        decisions = await self.guard.decide_many(prepared, strict=True)
        return self._lines(rows, decisions)

    def _lines(self, rows: list[Row], decisions: list[tuple[Verdict, PairState | None]]) -> Decided:
        decided = Decided()
        tally, now, later, never = decided.tally, decided.now, decided.later, decided.never
        next_allowed, stateless, never_ends = self.next_allowed, self._stateless, self._never_ends
        d = self.delimiter
        allowed_end = f"{d}allow{d}now{d}{d}{d}{self.newline}"
        by_codes: dict[tuple[str, ...], int] = {}  # counted per reason at the end
        by_day: dict[str, int] = {}
        for (body, _, _), (verdict, state) in zip(rows, decisions, strict=True):
            if verdict.allowed:
                now.append(body + allowed_end)
                continue
            codes = verdict.codes
            by_codes[codes] = by_codes.get(codes, 0) + 1
            if state is None:  # as `Guard.with_next_allowed`: no state to count from (no pair), no next instant
                never.append(body + (never_ends.get(codes) or self._never_end(codes)))
                continue
            if state.attempts or state.refusals or state.consents:
                entry = self._ending(next_allowed(verdict, state), codes)
            else:
                # A pair with nothing stored: the same places and reasons end the same way (see
                # NextAllowed), so the line's end is formatted once per run.
                key = (verdict.prepared.places, codes)
                entry = stateless.get(key, _UNSEEN)
                if entry is _UNSEEN:
                    entry = stateless[key] = self._ending(next_allowed(verdict, state), codes)
            if entry is None:
                never.append(body + (never_ends.get(codes) or self._never_end(codes)))
            else:
                timestamp, day, end = entry
                by_day[day] = by_day.get(day, 0) + 1
                later.append((timestamp, body + end))
        for codes, count in by_codes.items():
            for code in codes:
                tally.reasons[code] += count
            if codes[0].startswith("CALLER_"):
                tally.caller_rejected += count
        tally.later_by_day.update(by_day)
        tally.leads = len(rows)
        tally.now = len(now)
        tally.later = len(later)
        tally.never = len(never)
        return decided

    def _never_end(self, codes: tuple[str, ...]) -> str:
        d = self.delimiter
        end = self._never_ends[codes] = f"{d}reject{d}never{d}{'|'.join(codes)}{d}{d}{self.newline}"
        return end

    def _ending(self, when: When | None, codes: tuple[str, ...]) -> tuple[float, str, str] | None:
        """A `later` line's sort key, local day and end (after the record), or None: `never`."""
        if when is None:
            return None
        d = self.delimiter
        return (
            when.timestamp,
            when.local_day,
            f"{d}reject{d}later{d}{'|'.join(codes)}{d}{when.utc}{d}{when.local}{self.newline}",
        )


_UNSEEN: tuple[float, str, str] = (0.0, "", "")


def worker_count(size: int) -> int:
    """Processes to decide a file of `size` bytes on: one per core (at most 2: the Redis reads
    and this process's reading and writing need the rest), none for a small file, where
    starting them would cost more than they save."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 2) if cores > 1 and size >= PARALLEL_BYTES else 0


# About 15,000 leads of a typical CRM export: below it, one process decides the whole file in
# well under the time it takes to start the workers.
PARALLEL_BYTES = 1 << 20


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs to build its own BatchDecider (everything picklable)."""

    campaign: Campaign
    connect: Callable[[], Store]
    journal_path: str
    delimiter: str
    newline: str


_worker: tuple[asyncio.AbstractEventLoop, BatchDecider] | None = None
_setup: WorkerSetup | None = None


def start_worker(setup: WorkerSetup) -> None:
    """The pool's initializer. Ctrl-C is the command's to handle: a worker finishes its batch."""
    global _setup  # noqa: PLW0603 - a worker process's own state, set once
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _setup = setup


def decide_in_worker(rows: list[Row]) -> Decided:
    """One batch, in a worker process: its Store and Guard are built on the first batch, so a
    failure (the journal unreadable) reaches the command as the batch's error."""
    global _worker  # noqa: PLW0603 - a worker process's own state, set once
    if _worker is None:
        assert _setup is not None
        try:
            journal = RefusalJournal.if_present(_setup.journal_path)
        except JournalUnreadable as error:
            raise ScrubFailed(str(error)) from None
        guard = Guard(_setup.campaign.policy, ScrubReads(_setup.connect()), journal)
        _worker = (asyncio.new_event_loop(), BatchDecider(_setup.campaign, guard, _setup.delimiter, _setup.newline))
    loop, decider = _worker
    return loop.run_until_complete(decider.decide(rows))
