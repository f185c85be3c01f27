"""`npv-guard scrub`: a dialer's lead list, each lead with the verdict `check` would give it.

Every lead is decided by the core exactly as `npv-guard check` without `--record` decides it
(`prepare`, the pair's snapshot plus journaled refusals, `decide`, `next_allowed_at`); the
scrubber only reads the file, batches the Redis reads, sorts and writes. It records nothing:
the only Redis commands it sends are PING, SCRIPT LOAD, EXISTS and EVALSHA of the read-only
snapshot script.

The input's own bytes are kept: each record is written back as it was read (quotes, spacing,
accents, embedded line breaks), followed by the added columns, in the input's encoding, BOM and
delimiter. The output is written to a temporary file beside `--out` and renamed only once
everything is decided, so a failure (Redis gone, a broken file, Ctrl-C) never leaves a partial
lead list behind.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import csv
import io
import json
import os
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

from npv_guard.config import Settings
from npv_guard.core.decide import Prepared, Verdict, decide, prepare
from npv_guard.core.model import PROFESSIONAL_ID, CallRequest, PairState, Policy, valid_label
from npv_guard.core.numbering import parse as parse_number
from npv_guard.core.schedule import next_allowed_at
from npv_guard.core.territories import Place
from npv_guard.journal import JournalUnreadable, RefusalJournal, fsync_directory
from npv_guard.progress import Progress
from npv_guard.service import Guard
from npv_guard.store import Snapshot, Store, StoreUnavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Header names recognised without --phone-column / --postcode-column, compared without case,
# accents, spaces, dashes or underscores ("Téléphone", "TEL" and "numéro" all match).
PHONE_HEADERS = frozenset(
    {"phone", "telephone", "tel", "mobile", "number", "numero", "phonenumber", "msisdn", "portable"}
)
POSTCODE_HEADERS = frozenset({"postcode", "codepostal", "cp", "zip", "zipcode", "postalcode"})
ADDED_COLUMNS = ("npv_verdict", "npv_callable", "npv_reasons", "npv_next_allowed_at", "npv_next_allowed_local")
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "\t": "\t"}

# Leads decided per pipelined Redis round trip: large enough that the round trip is amortised,
# small enough that the next batch is being prepared while Redis works on this one.
BATCH = 2000
SNIFF_LINES = 50


class ScrubUsage(Exception):
    """A problem with the arguments or the input file: exit 2, nothing written."""


class ScrubFailed(Exception):
    """The run could not be completed (Redis, the refusal journal): exit 1, nothing written."""


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
        leads = _LeadFile.open(Path(ctx.args.file), ctx.args)
    except ScrubUsage as error:
        err.write(f"npv-guard: {error}\n")
        return EXIT_USAGE
    try:
        target = _target(Path(ctx.args.out), leads.path)
        journal = _journal(ctx.settings.journal_path)
        store = ctx.store()
        try:
            summary = await Scrubber(campaign, store, journal, err).scrub(leads, target)
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


@dataclass(frozen=True)
class Campaign:
    professional: str
    caller: str
    at: datetime
    policy: Policy
    sector: str | None = None
    automated: bool = False
    campaign: str | None = None  # a label: it never changes a verdict


def _campaign(ctx: Context) -> Campaign:
    args = ctx.args
    policy = ctx.settings.policy()
    professional = args.professional.strip()
    if not PROFESSIONAL_ID.match(professional):
        raise ScrubUsage(f"--professional {professional[:64]!r} is malformed (letters, digits, _ . + -)")
    caller = args.caller
    if policy.professionals:
        entry = policy.professional(professional)
        if entry is None:
            known = ", ".join(p.id for p in policy.professionals)
            raise ScrubUsage(f"--professional {professional!r} is not configured (known: {known})")
        if caller is None and entry.npvs:
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


# --- the input file ------------------------------------------------------------------------------


def _normalised(header: str) -> str:
    text = unicodedata.normalize("NFKD", header.strip().casefold())
    return "".join(c for c in text if c.isalnum())


@dataclass
class _LeadFile:
    path: Path
    binary: BinaryIO
    text: TextIO
    encoding: str  # codec name to write the output with
    bom: bool
    delimiter: str
    newline: str
    header: list[str]
    header_body: str  # the header line as read, without its line break
    phone: int
    postcode: int | None
    size: int
    lines: Iterator[str]  # the rest of the file, line by line
    head: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path, args: argparse.Namespace) -> _LeadFile:
        try:
            codec = codecs.lookup(args.encoding).name
        except LookupError:
            raise ScrubUsage(f"--encoding {args.encoding!r}: unknown encoding") from None
        if path.is_dir():
            raise ScrubUsage(f"{path}: is a directory, not a lead file")
        try:
            binary = path.open("rb")
        except FileNotFoundError:
            raise ScrubUsage(f"{path}: no such file") from None
        except OSError as error:
            raise ScrubUsage(f"{path}: cannot be read ({error.strerror})") from None
        try:
            return cls._read_header(path, binary, codec, args)
        except BaseException:
            binary.close()
            raise

    @classmethod
    def _read_header(cls, path: Path, binary: BinaryIO, codec: str, args: argparse.Namespace) -> _LeadFile:
        bom = binary.read(3) == codecs.BOM_UTF8
        if bom and codec != "utf-8":
            raise ScrubUsage(f"{path}: starts with a UTF-8 byte order mark but --encoding {args.encoding} was given")
        binary.seek(3 if bom else 0)
        text = io.TextIOWrapper(binary, encoding=codec, errors="strict", newline="")
        head = []
        try:
            for line in text:
                head.append(line)
                if len(head) >= SNIFF_LINES:
                    break
        except UnicodeDecodeError as error:
            raise ScrubUsage(_decode_problem(path, codec, error, len(head) + 1)) from None
        while head and not head[0].strip():
            head.pop(0)  # blank lines before the header
        if not head:
            raise ScrubUsage(f"{path}: empty file (a header line and leads are expected)")
        delimiter = DELIMITERS[args.delimiter] if args.delimiter else _sniff(head)
        header = next(csv.reader([head[0]], delimiter=delimiter))
        header_body = head[0].rstrip("\r\n")
        newline = "\r\n" if head[0].endswith("\r\n") else "\n"
        clash = [name for name in header if name.strip() in ADDED_COLUMNS]
        if clash:
            raise ScrubUsage(f"{path}: already has {', '.join(clash)}: scrub the original lead file")
        phone = _column(header, args.phone_column, PHONE_HEADERS, "--phone-column", path)
        if phone is None:
            found = ", ".join(repr(name) for name in header)
            raise ScrubUsage(f"{path}: no phone column found among {found}: name it with --phone-column")
        postcode = None
        if not args.no_postcode:
            postcode = _column(header, args.postcode_column, POSTCODE_HEADERS, "--postcode-column", path)
        if postcode == phone:
            raise ScrubUsage(f"{path}: the phone and postcode columns are the same column")
        lines = _chain(head[1:], text)
        return cls(
            path, binary, text, codec, bom, delimiter, newline, header, header_body, phone, postcode,
            path.stat().st_size, lines,
        )  # fmt: skip

    def close(self) -> None:
        self.binary.close()

    def position(self) -> int:
        """Bytes read so far (within one buffer): for the progress bar."""
        return self.binary.tell()


def _chain(head: list[str], rest: Iterable[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _decode_problem(path: Path, codec: str, error: UnicodeDecodeError, line: int | str) -> str:
    byte = error.object[error.start : error.start + 1].hex() if isinstance(error.object, bytes) else "?"
    hint = " (a file saved by Excel on Windows is usually cp1252: give --encoding cp1252)" if codec == "utf-8" else ""
    return f"{path}: not {codec} near line {line} (byte 0x{byte}){hint}"


def _sniff(lines: list[str]) -> str:
    """The delimiter that splits the header and the first lines into the same number of fields,
    the most fields winning; `,` when nothing splits (a single column)."""
    best, best_score = ",", (False, 1)
    sample = [line for line in lines if line.strip()]
    for delimiter in (";", ",", "\t"):
        try:
            counts = [len(row) for row in csv.reader(sample, delimiter=delimiter) if row]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        # Records with embedded line breaks make a few short rows: "consistent" is most rows.
        consistent = sum(count == counts[0] for count in counts) * 10 >= len(counts) * 9
        score = (consistent, counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _column(header: list[str], wanted: str | None, known: frozenset[str], option: str, path: Path) -> int | None:
    """The column named `wanted`, else the one header among `known` names, else None."""
    if wanted is not None:
        matches = [i for i, name in enumerate(header) if name.strip().casefold() == wanted.strip().casefold()]
        if not matches:
            found = ", ".join(repr(name) for name in header)
            raise ScrubUsage(f"{path}: no column {wanted!r} ({option}); the header has {found}")
        return matches[0]
    matches = [i for i, name in enumerate(header) if _normalised(name) in known]
    if len(matches) > 1:
        names = ", ".join(repr(header[i]) for i in matches)
        raise ScrubUsage(f"{path}: several columns could be meant ({names}): choose one with {option}")
    return matches[0] if matches else None


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


# --- deciding ------------------------------------------------------------------------------------


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


@dataclass
class Summary:
    leads: int = 0
    now: int = 0
    later: int = 0
    never: int = 0
    later_by_day: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    blank_lines: int = 0
    caller_rejected: int = 0
    seconds: float = 0.0
    at: str = ""
    professional: str = ""
    campaign: str | None = None
    caller: str = ""
    out: str = ""
    columns: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "leads": self.leads,
            "callable_now": self.now,
            "callable_later": self.later,
            "callable_later_by_day": dict(sorted(self.later_by_day.items())),
            "day_is": "consumer-local date of next_allowed_at",
            "never": self.never,
            "reasons": dict(self.reasons.most_common()),
            "blank_lines_skipped": self.blank_lines,
            "at": self.at,
            "professional": self.professional,
            "campaign": self.campaign,
            "caller": self.caller,
            "columns": self.columns,
            "out": self.out,
            "seconds": round(self.seconds, 3),
            "leads_per_second": round(self.leads / self.seconds) if self.seconds else None,
        }

    def text(self) -> str:
        rate = f"{self.leads / self.seconds:,.0f}/s" if self.seconds else "-"
        lines = [
            f"scrubbed {self.leads:,} leads in {self.seconds:.1f} s ({rate}) as at {self.at}, "
            f"professional {self.professional}, caller {self.caller}",
            f"  callable now    {self.now:>10,}",
            f"  callable later  {self.later:>10,}   by the consumer's local date of npv_next_allowed_at:",
        ]
        lines += [f"    {day}    {count:>10,}" for day, count in sorted(self.later_by_day.items())]
        lines.append(f"  never           {self.never:>10,}")
        if self.reasons:
            lines.append("  reasons: " + ", ".join(f"{code} {count:,}" for code, count in self.reasons.most_common()))
        if self.blank_lines:
            lines.append(f"  blank lines skipped: {self.blank_lines:,}")
        lines.append(f"  written to {self.out}")
        return "\n".join(lines) + "\n"


@dataclass(slots=True)
class _Lead:
    body: str  # the record as read, without its line break
    prepared: Prepared


class Scrubber:
    def __init__(self, campaign: Campaign, store: Store, journal: RefusalJournal | None, err: TextIO) -> None:
        self.campaign = campaign
        self.store = store
        self.guard = Guard(campaign.policy, store, journal)
        self.next_allowed = NextAllowed(campaign.policy)
        self.progress = Progress(err)
        self.summary = Summary()
        self._caller = parse_number(campaign.caller)

    async def scrub(self, leads: _LeadFile, target: Path) -> Summary:
        # Fail before reading a million lines when Redis is not there at all.
        await self.store.ping()
        started = time.monotonic()
        summary = self.summary
        summary.at = self.campaign.at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        summary.professional = self.campaign.professional
        summary.campaign = self.campaign.campaign
        summary.caller = self._caller.e164 or self.campaign.caller
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
                await self._decide_all(leads, output, later, never)
                later.sort(key=itemgetter(0))  # stable: equal instants keep the input's order
                output.writelines(line for _, line in later)
                output.writelines(never)
        finally:
            self.progress.done()  # end the bar's line before any message
        summary.seconds = time.monotonic() - started
        return summary

    async def _decide_all(
        self, leads: _LeadFile, output: TextIO, later: list[tuple[float, str]], never: list[str]
    ) -> None:
        """Decide batch k-1 and prepare batch k+1 while Redis answers batch k's snapshots."""
        pending: tuple[list[_Lead], asyncio.Task[list[Snapshot]]] | None = None
        in_flight: set[asyncio.Task[list[Snapshot]]] = set()
        try:
            for batch in self._batches(leads):
                task = asyncio.create_task(self._snapshots(batch))
                in_flight.add(task)
                await asyncio.sleep(0)  # let the task send its pipeline before the CPU-bound work below
                if pending is not None:
                    self._write(pending[0], await pending[1], leads, output, later, never)
                    in_flight.discard(pending[1])
                    share = leads.position() / leads.size if leads.size else None
                    self.progress.show(self.summary.leads, "leads", share)
                pending = (batch, task)
            if pending is not None:
                self._write(pending[0], await pending[1], leads, output, later, never)
                in_flight.discard(pending[1])
        finally:
            # A failure (Redis, a bad line, Ctrl-C) leaves a read in flight: end it quietly, the
            # failure that stopped the run is the one reported.
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    def _batches(self, leads: _LeadFile) -> Iterator[list[_Lead]]:
        raw: list[str] = []
        reader = csv.reader(_captured(leads.lines, raw), delimiter=leads.delimiter)
        campaign, caller, policy = self.campaign, self._caller, self.campaign.policy
        phone, postcode = leads.phone, leads.postcode
        batch: list[_Lead] = []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as error:
                raise ScrubUsage(_decode_problem(leads.path, leads.encoding, error, reader.line_num + 1)) from None
            except csv.Error as error:
                raise ScrubUsage(f"{leads.path}: line {reader.line_num}: {error}") from None
            body = raw[0] if len(raw) == 1 else "".join(raw)
            raw.clear()
            number = row[phone] if phone < len(row) else ""
            if not number.strip() and not any(cell.strip() for cell in row):
                self.summary.blank_lines += 1
                continue
            code = row[postcode] if postcode is not None and postcode < len(row) else None
            request = CallRequest(
                caller=campaign.caller,
                callee=number,
                at=campaign.at,
                professional=campaign.professional,
                consumer_postcode=code or None,
                sector=campaign.sector,
                automated=campaign.automated,
                campaign=campaign.campaign,
            )
            # The caller is parsed once for the run; given both numbers, `prepare` parses nothing.
            prepared = prepare(request, policy, (caller, parse_number(number)))
            batch.append(_Lead(_strip_line_break(body), prepared))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _snapshots(self, batch: list[_Lead]) -> list[Snapshot]:
        """The snapshots of the batch's pairs, in the batch's order of leads that have a pair."""
        by_professional: dict[str, list[int]] = {}
        for index, lead in enumerate(batch):
            pair = lead.prepared.pair
            if pair is not None:
                by_professional.setdefault(pair[0], []).append(index)
        found: dict[int, Snapshot] = {}
        at = self.campaign.at
        for professional, indexes in by_professional.items():
            consumers = [batch[i].prepared.pair[1] for i in indexes]  # type: ignore[index]
            for index, snapshot in zip(indexes, await self.store.snapshots(professional, consumers, at), strict=True):
                found[index] = snapshot
        return [found[i] for i in sorted(found)]

    def _write(
        self,
        batch: list[_Lead],
        snapshots: list[Snapshot],
        leads: _LeadFile,
        output: TextIO,
        later: list[tuple[float, str]],
        never: list[str],
    ) -> None:
        policy, summary, guard = self.campaign.policy, self.summary, self.guard
        d, newline = leads.delimiter, leads.newline
        reasons, by_day = summary.reasons, summary.later_by_day
        states = iter(snapshots)
        now_lines = []
        for lead in batch:
            prepared = lead.prepared
            pair = prepared.pair
            # As in Guard.check(record=False): no pair, no stored state to read (and no promise).
            state = None if pair is None else guard.pair_state(pair[0], pair[1], next(states))
            verdict = decide(prepared, state, policy)
            summary.leads += 1
            if verdict.allowed:
                summary.now += 1
                now_lines.append(f"{lead.body}{d}allow{d}now{d}{d}{d}{newline}")
                continue
            codes = verdict.codes
            reasons.update(codes)
            if codes[0].startswith("CALLER_"):
                summary.caller_rejected += 1
            joined = "|".join(codes)
            when = self.next_allowed(verdict, state) if state is not None else None
            if when is None:
                summary.never += 1
                never.append(f"{lead.body}{d}reject{d}never{d}{joined}{d}{d}{newline}")
            else:
                summary.later += 1
                by_day[when.local_day] += 1
                line = f"{lead.body}{d}reject{d}later{d}{joined}{d}{when.utc}{d}{when.local}{newline}"
                later.append((when.timestamp, line))
        output.writelines(now_lines)


def _captured(lines: Iterator[str], raw: list[str]) -> Iterator[str]:
    """Feed csv.reader line by line, keeping the text of the record being read in `raw` (the
    reader asks for no line beyond the end of its current record)."""
    for line in lines:
        raw.append(line)
        yield line


def _strip_line_break(body: str) -> str:
    if body.endswith("\n"):
        return body[:-2] if body.endswith("\r\n") else body[:-1]
    return body[:-1] if body.endswith("\r") else body


class _AtomicOutput:
    """A temporary file beside the target, renamed over it only when the with-block succeeds."""

    def __init__(self, target: Path, leads: _LeadFile) -> None:
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
