"""`npv-guard scrub`: a dialer's lead list, each lead with the verdict `check` would give it.

Every lead is decided by the Guard exactly as `npv-guard check` without `--record` decides it
(`Guard.decide_many`: the pair's snapshot plus journaled refusals, the core's `decide`, then
`next_allowed_at`); the scrubber only reads the file, batches the leads, sorts and writes. It
records nothing: the only Redis commands it sends are PING, SCRIPT LOAD and EVALSHA of the
read-only batch snapshot script (`Store.read_snapshots`; on a Cluster, EXISTS and the snapshot
script). Its Guard's store is `ScrubReads`, whose writes raise.

The input's own bytes are kept: each record is written back as it was read (quotes, spacing,
accents, embedded line breaks), followed by the added columns, in the input's encoding, BOM and
delimiter. The output is written to a temporary file beside `--out` and renamed only once
everything is decided, so a failure (Redis gone, a broken file, Ctrl-C) never leaves a partial
lead list behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Protocol, TextIO

from npv_guard.config import Settings
from npv_guard.core.model import PROFESSIONAL_ID, valid_label
from npv_guard.journal import JournalUnreadable, RefusalJournal, fsync_directory
from npv_guard.progress import Progress
from npv_guard.scrub.batch import (
    BATCH,
    BatchDecider,
    Campaign,
    Decided,
    ScrubFailed,
    ScrubReads,
    WorkerSetup,
    decide_in_worker,
    start_worker,
    worker_count,
)
from npv_guard.scrub.leads import ADDED_COLUMNS, LeadFile, Row, ScrubUsage
from npv_guard.scrub.summary import Summary
from npv_guard.service import Guard, ProfessionalError
from npv_guard.store import ConsumerHasher, Store, StoreUnavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Context(Protocol):
    """What `npv_guard.cli.Context` provides (not imported: the CLI imports this module)."""

    args: argparse.Namespace
    settings: Settings

    def at(self) -> datetime: ...

    def store(self) -> Store: ...


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `scrub` on the CLI's subparsers."""
    scrub = commands.add_parser(
        "scrub",
        help="decide a whole lead list (read-only): verdict, reasons and next_allowed_at per lead",
        description="Decide every lead of a CSV file as `check` would, without recording anything.",
    )
    scrub.add_argument("file", metavar="LEADS.csv", help="the dialer's lead file, with a header line")
    scrub.add_argument("--professional", required=True, metavar="ID", help="professional the campaign calls for")
    scrub.add_argument("--out", required=True, metavar="OUT.csv", help="where to write the decided leads")
    scrub.add_argument(
        "--caller", metavar="NUMBER", help="caller ID the campaign uses (default: the professional's first NPV)"
    )
    scrub.add_argument("--phone-column", metavar="NAME", help="header of the phone column (default: detected)")
    scrub.add_argument(
        "--postcode-column", metavar="NAME", help="header of the consumer postcode column (default: detected)"
    )
    scrub.add_argument("--no-postcode", action="store_true", help="ignore any postcode column")
    scrub.add_argument("--sector", metavar="NAME", help="what the campaign sells (see rules.banned_sectors)")
    scrub.add_argument("--campaign", metavar="ID", help="the campaign these leads are for (named in the summary)")
    scrub.add_argument("--automated", action="store_true", help="recorded-message campaign (needs consent)")
    scrub.add_argument(
        "--encoding", default="utf-8", metavar="NAME",
        help="input encoding, kept in the output (default: utf-8; cp1252 for Excel on Windows)",
    )  # fmt: skip
    scrub.add_argument(
        "--delimiter", choices=[",", ";", "tab"], metavar=",|;|tab", help="field delimiter (default: sniffed)"
    )
    scrub.add_argument("--config", metavar="FILE", help="TOML config file (default: $NPV_GUARD_CONFIG)")
    scrub.add_argument("--redis", metavar="URL", help="Redis URL (default: $NPV_GUARD_REDIS_URL or the config)")
    scrub.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    scrub.add_argument(
        "--at", metavar="INSTANT", help="ISO 8601 instant; without offset: Europe/Paris wall time (default: now)"
    )


async def run(ctx: Context, out: TextIO, err: TextIO) -> int:
    """The `scrub` command: exit 0 with the file written, 1 on failure, 2 on a usage error."""
    try:
        campaign = _campaign(ctx)
        leads = LeadFile.open(Path(ctx.args.file), ctx.args)
    except ScrubUsage as error:
        err.write(f"npv-guard: {error}\n")
        return EXIT_USAGE
    try:
        target = _target(Path(ctx.args.out), leads.path)
        journal = _journal(ctx.settings.journal_path)
        store = ctx.store()
        try:
            scrubber = Scrubber(campaign, store, journal, err, partial(connect_store, ctx.settings))
            summary = await scrubber.scrub(leads, target)
        finally:
            await store.close()
    except ScrubUsage as error:
        err.write(f"npv-guard: {error}\n")
        return EXIT_USAGE
    except ScrubFailed as error:
        err.write(f"npv-guard: {error}; no output written\n")
        return EXIT_FAILED
    except StoreUnavailable as error:
        err.write(f"npv-guard: {error}: scrub stopped, no output written (nothing is ever recorded)\n")
        return EXIT_FAILED
    finally:
        leads.close()
    out.write(json.dumps(summary.as_dict(), ensure_ascii=False) + "\n" if ctx.args.json else summary.text())
    if summary.caller_rejected == summary.leads and summary.leads:
        err.write("npv-guard: warning: every lead is rejected for the caller ID (see the reasons): check --caller\n")
    return EXIT_OK


# --- the campaign: who calls, from which number, at which instant ---------------------------------


def _campaign(ctx: Context) -> Campaign:
    args = ctx.args
    policy = ctx.settings.policy()
    professional = args.professional.strip()
    try:
        Guard(policy, None).professional_id(professional)
    except ProfessionalError:
        if policy.professionals and PROFESSIONAL_ID.match(professional):
            known = ", ".join(p.id for p in policy.professionals)
            raise ScrubUsage(f"--professional {professional!r} is not configured (known: {known})") from None
        raise ScrubUsage(f"--professional {professional[:64]!r} is malformed (letters, digits, _ . + -)") from None
    caller = args.caller
    entry = policy.professional(professional) if policy.professionals else None
    if caller is None and entry is not None and entry.npvs:
        caller = entry.npvs[0]  # the campaign calls from the professional's first assigned NPV
    if not caller:
        raise ScrubUsage(
            f"give --caller NUMBER: the NPV the campaign calls from (no [[professionals]] entry assigns one to "
            f"{professional!r})"
        )
    if args.campaign is not None and not valid_label(args.campaign):
        raise ScrubUsage(f"--campaign {args.campaign[:64]!r} is malformed (1-64 letters, digits, _ . + -)")
    return Campaign(professional, caller, ctx.at(), policy, args.sector, args.automated, args.campaign)


def _journal(path: str) -> RefusalJournal | None:
    """The local refusal journal, read-only: refusals waiting there for Redis count as refusals."""
    try:
        return RefusalJournal.if_present(path)
    except JournalUnreadable as error:
        raise ScrubFailed(str(error)) from None


def _target(out: Path, source: Path) -> Path:
    if out.exists() and out.is_dir():
        raise ScrubUsage(f"--out {out}: is a directory")
    if out.resolve() == source.resolve() or (out.exists() and os.path.samefile(out, source)):
        raise ScrubUsage(f"--out {out}: is the input file; write the decided leads elsewhere")
    if not out.parent.resolve().is_dir():
        raise ScrubUsage(f"--out {out}: directory {out.parent} does not exist")
    if not os.access(out.parent.resolve(), os.W_OK):
        raise ScrubUsage(f"--out {out}: directory {out.parent} is not writable")
    return out


# --- deciding and writing ----------------------------------------------------------------------


def connect_store(settings: Settings) -> Store:
    """The Store of `settings`, as the CLI's Context builds it, for a worker process (it reads
    only: no clock is needed to date a key's life)."""
    return Store.from_settings(
        settings.redis,
        ConsumerHasher(settings.require_hash_secret(), settings.previous_hash_secrets),
        rules=settings.rules,
    )


class Scrubber:
    def __init__(
        self,
        campaign: Campaign,
        store: Store,
        journal: RefusalJournal | None,
        err: TextIO,
        connect: Callable[[], Store] | None = None,
    ) -> None:
        """`connect`: builds a Store like `store` in a worker process; without it, every batch is
        decided in this process."""
        self.campaign = campaign
        self.store = store
        self.guard = Guard(campaign.policy, ScrubReads(store), journal)
        self.journal_path = str(journal.path) if journal is not None else ""
        self.connect = connect
        self.progress = Progress(err)
        self.summary = Summary()

    async def scrub(self, leads: LeadFile, target: Path) -> Summary:
        # Fail before reading a million lines when Redis is not there at all.
        await self.store.ping()
        started = time.monotonic()
        summary = self.summary
        decider = BatchDecider(self.campaign, self.guard, leads.delimiter, leads.newline)
        summary.at = self.campaign.at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        summary.professional = self.campaign.professional
        summary.campaign = self.campaign.campaign
        summary.caller = decider._caller.e164 or self.campaign.caller
        summary.out = str(target)
        summary.columns = {"phone": leads.header[leads.phone].strip()}
        if leads.postcode is not None:
            summary.columns["postcode"] = leads.header[leads.postcode].strip()
        try:
            with _AtomicOutput(target, leads) as output:
                delimiter = leads.delimiter
                output.write(leads.header_body + delimiter + delimiter.join(ADDED_COLUMNS) + leads.newline)
                later: list[tuple[float, str]] = []
                never: list[str] = []
                workers = worker_count(leads.size) if self.connect is not None else 0
                if workers:
                    await self._decide_on_workers(workers, leads, output, later, never)
                else:
                    await self._decide_all(decider.decide, 2, leads, output, later, never)
                later.sort(key=itemgetter(0))  # stable: equal instants keep the input's order
                output.writelines(line for _, line in later)
                output.writelines(never)
        finally:
            self.progress.done()  # end the bar's line before any message
        summary.blank_lines = leads.blank_lines
        summary.seconds = time.monotonic() - started
        return summary

    async def _decide_on_workers(
        self, workers: int, leads: LeadFile, output: TextIO, later: list[tuple[float, str]], never: list[str]
    ) -> None:
        assert self.connect is not None
        setup = WorkerSetup(self.campaign, self.connect, self.journal_path, leads.delimiter, leads.newline)
        # Spawned, not forked: a fork would copy this process's event loop and Redis connections.
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker, initargs=(setup,)
        )
        loop = asyncio.get_running_loop()
        try:
            await self._decide_all(
                lambda rows: loop.run_in_executor(pool, decide_in_worker, rows),
                2 * workers,
                leads,
                output,
                later,
                never,
            )
        finally:
            # A failure leaves at most the batches being decided: they end on their own (reads).
            pool.shutdown(wait=True, cancel_futures=True)

    async def _decide_all(
        self,
        decide: Callable[[list[Row]], Awaitable[Decided]],
        window: int,
        leads: LeadFile,
        output: TextIO,
        later: list[tuple[float, str]],
        never: list[str],
    ) -> None:
        """Read and submit batches while up to `window` of them are being decided, and write them
        in the input's order as they come back."""
        pending: deque[asyncio.Future[Decided]] = deque()
        try:
            for rows in leads.batches(BATCH):
                pending.append(asyncio.ensure_future(decide(rows)))
                await asyncio.sleep(0)  # let it start (send its reads) before reading the next batch
                if len(pending) >= window:
                    self._write(await pending.popleft(), output, later, never, leads)
            while pending:
                self._write(await pending.popleft(), output, later, never, leads)
        finally:
            # A failure (Redis, a bad line, Ctrl-C) leaves batches in flight: end them quietly, the
            # failure that stopped the run is the one reported.
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _write(
        self, decided: Decided, output: TextIO, later: list[tuple[float, str]], never: list[str], leads: LeadFile
    ) -> None:
        self.summary.add(decided.tally)
        output.writelines(decided.now)
        later.extend(decided.later)
        never.extend(decided.never)
        share = leads.position() / leads.size if leads.size else None
        self.progress.show(self.summary.leads, "leads", share)


class _AtomicOutput:
    """A temporary file beside the target, renamed over it only when the with-block succeeds."""

    def __init__(self, target: Path, leads: LeadFile) -> None:
        self.target = target
        self.leads = leads
        self.path: Path | None = None
        self.handle: TextIO | None = None

    def __enter__(self) -> TextIO:
        directory = self.target.resolve().parent
        fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".partial", dir=directory)
        self.path = Path(name)
        # What a plain open() would have given: mkstemp's 0600 is not the user's choice.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        encoding = "utf-8-sig" if self.leads.bom else self.leads.encoding
        self.handle = open(fd, "w", encoding=encoding, newline="", buffering=1 << 20)
        return self.handle

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        assert self.handle is not None and self.path is not None
        try:
            if kind is None:
                self.handle.flush()
                os.fsync(self.handle.fileno())
                self.handle.close()
                os.replace(self.path, self.target)
                fsync_directory(self.target.resolve().parent)  # the new list, not the old, after a power cut
        finally:
            self.handle.close()
            self.path.unlink(missing_ok=True)  # gone once renamed; removed on any failure
