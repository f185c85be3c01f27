"""`npv-guard`: the command line. Exit status: 0 allow / done, 1 reject / failed, 2 usage error."""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import math
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NoReturn, TextIO

from npv_guard import __version__, bundled, report, scrub
from npv_guard import audit as audit_trail
from npv_guard.audit import AuditLog, consent_fields
from npv_guard.callpath import CallPath
from npv_guard.clock import Clock, parse_instant, parse_slot
from npv_guard.config import ConfigError, Settings, load_settings
from npv_guard.core.decide import Verdict, grant_event, place_consumer
from npv_guard.core.model import Basis, CallRequest, ConsentEvent, RefusalSource, Slot, label_problem
from npv_guard.core.reasons import SUMMARY, ReasonCode
from npv_guard.journal import JournalUnreadable, RefusalJournal
from npv_guard.progress import Progress
from npv_guard.service import Guard, InputError
from npv_guard.store import ConsumerHasher, Store, StoreUnavailable
from npv_guard.views import check_payload, consent_payload, history_payload, refusal_payload

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
IMPORT_BATCH = 2000


class UsageError(Exception):
    pass


def _common(parser: argparse.ArgumentParser, *, at: bool = True) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $NPV_GUARD_CONFIG)")
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: $NPV_GUARD_REDIS_URL or the config)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    if at:
        parser.add_argument(
            "--at", metavar="INSTANT", help="ISO 8601 instant; without offset: Europe/Paris wall time (default: now)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npv-guard", description="French telemarketing compliance guard for Asterisk."
    )
    parser.add_argument("--version", action="version", version=f"npv-guard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="may this call be placed?")
    check.add_argument("--caller", required=True, metavar="NUMBER", help="caller ID as the dialer sends it")
    check.add_argument("--callee", required=True, metavar="NUMBER", help="number as dialled")
    check.add_argument("--professional", metavar="ID", help="professional the call is made for")
    check.add_argument("--consumer-postcode", metavar="CODE", help="consumer's postcode or department")
    check.add_argument("--sector", metavar="NAME", help="what the campaign sells (see rules.banned_sectors)")
    check.add_argument("--automated", action="store_true", help="recorded-message call (needs consent)")
    check.add_argument("--offline", action="store_true", help="only the rules that need no stored state")
    check.add_argument("--record", action="store_true", help="count an allowed call as an attempt (atomic)")
    _labels(check)
    _common(check)

    refusal = commands.add_parser("refusal", help="record a consumer's refusal").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    record = refusal.add_parser("record", help="the consumer refused during a call")
    _pair_arguments(record)
    record.add_argument(
        "--source", choices=[s.value for s in RefusalSource], default=RefusalSource.OPERATOR.value,
        help="who signalled the refusal (default: operator)",
    )  # fmt: skip
    _labels(record)
    _common(record)

    consent = commands.add_parser("consent", help="consents and contracts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    grant = consent.add_parser("grant", help="record a consent or a contract in progress")
    _pair_arguments(grant)
    grant.add_argument(
        "--basis", choices=[b.value for b in Basis], default=Basis.CONSENT.value,
        help="consent (one year at most), contract (until --until), callback_request (5 working days)",
    )  # fmt: skip
    grant.add_argument("--proof", default="", metavar="TEXT", help="how, when and where it was given")
    grant.add_argument(
        "--outside-hours", action="store_true",
        help="blanket consent to calls outside the legal days and hours (lifts them before 2026-08-11 only)",
    )  # fmt: skip
    grant.add_argument(
        "--slot", metavar="START/END",
        help="a callback slot the consumer agreed to, two ISO 8601 instants (as --at): lifts days and hours in it",
    )  # fmt: skip
    grant.add_argument(
        "--until", metavar="INSTANT", help="with --basis contract: the contract's end (as --at); it counts until then"
    )
    _common(grant)
    withdraw = consent.add_parser("withdraw", help="record a withdrawal of consent")
    _pair_arguments(withdraw)
    withdraw.add_argument("--proof", default="", metavar="TEXT", help="how the withdrawal reached you")
    _common(withdraw)
    bulk = consent.add_parser(
        "import", help="bulk import a CSV: number,date[,basis[,proof[,outside_hours[,slot[,until]]]]]"
    )
    bulk.add_argument("--professional", required=True, metavar="ID")
    bulk.add_argument("file", metavar="FILE.csv", help="CSV file ('-' for standard input)")
    _common(bulk, at=False)

    audit = commands.add_parser("audit", help="check and search the audit trail").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    verify = audit.add_parser("verify", help="exit 0 when the hash chain of the audit files is intact")
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit files, oldest first (rotated ones first)")
    verify.add_argument(
        "--anchor", action="append", default=[], metavar="SEQ:HASH",
        help="a head printed by an earlier verify, kept elsewhere: that line must still be there, unchanged",
    )  # fmt: skip
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    find = audit.add_parser("find", help="one consumer's audit lines, found by its keyed hash")
    find.add_argument("--callee", required=True, metavar="NUMBER", help="the consumer's number")
    find.add_argument("--professional", metavar="ID", help="only this professional's lines")
    find.add_argument("files", nargs="+", metavar="FILE", help="audit files")
    find.add_argument("--config", metavar="FILE", help="TOML config file (default: $NPV_GUARD_CONFIG)")
    find.add_argument("--json", action="store_true", help="one JSON object per line found, with file and line")

    evidence = commands.add_parser("evidence", help="the evidence pack for one consumer: consents, calls, refusals")
    _pair_arguments(evidence)
    evidence.add_argument(
        "--audit", action="append", default=[], metavar="FILE",
        help="audit file, oldest first (repeat; default: log.audit_file)",
    )  # fmt: skip
    evidence.add_argument("--html", metavar="OUT.html", help="also write a printable, self-contained HTML page")
    _common(evidence)

    history = commands.add_parser("history", help="what is stored for a (professional, consumer) pair")
    _pair_arguments(history)
    _common(history, at=False)
    scrub.add_parser(commands)
    report.add_parser(commands)

    _server(commands.add_parser("run", help="run the guard as an ARI (Stasis) application"))
    _server(
        commands.add_parser("agi", help="run the guard as a FastAGI server"),
        listen=("agi.host, 127.0.0.1", "agi.port, 4573"),
    )
    _server(
        commands.add_parser("serve", help="serve the HTTP pre-check API for dialers"),
        listen=("from api.listen, 127.0.0.1", "from api.listen, 8470"),
    )

    api_token = commands.add_parser("api-token", help="mint a bearer token for the HTTP API")
    api_token.add_argument("--professional", required=True, metavar="ID", help="the professional it acts for")
    api_token.add_argument("--config", metavar="FILE", help="TOML config file (default: $NPV_GUARD_CONFIG)")
    api_token.add_argument("--json", action="store_true", help="print one JSON object")

    health = commands.add_parser("health", help="exit 0 when the running guard reports ready (/healthz)")
    health.add_argument("--config", metavar="FILE", help="TOML config file (default: $NPV_GUARD_CONFIG)")
    health.add_argument("--url", metavar="URL", help="the guard's /healthz (default: from http.listen)")

    doctor = commands.add_parser("doctor", help="check the installation and say what is wrong")
    doctor.add_argument("--config", metavar="FILE", help="TOML config file (default: $NPV_GUARD_CONFIG)")
    doctor.add_argument("--redis", metavar="URL", help="Redis URL (default: $NPV_GUARD_REDIS_URL or the config)")
    doctor.add_argument(
        "--mode", choices=["auto", "ari", "agi"], default="auto", help="which call-path mode must be complete"
    )

    reasons = commands.add_parser("reasons", help="list the reason codes")
    reasons.add_argument("--json", action="store_true")
    bundled.add_parsers(commands)
    return parser


def _server(parser: argparse.ArgumentParser, listen: tuple[str, str] | None = None) -> None:
    """The options of a long-running guard process; `listen`: where its defaults come from."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $NPV_GUARD_CONFIG)")
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: $NPV_GUARD_REDIS_URL or the config)")
    if listen:
        parser.add_argument("--host", metavar="ADDRESS", help=f"listen address (default: {listen[0]})")
        parser.add_argument("--port", type=int, metavar="PORT", help=f"listen port (default: {listen[1]})")
    parser.add_argument("--drain-seconds", type=float, default=10.0, metavar="S", help="SIGTERM drain deadline")


def _labels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", metavar="ID", help="campaign id for the audit trail and the attempt")
    parser.add_argument("--lead", metavar="ID", help="lead id for the audit trail and the attempt")


def _label_args(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The operator typed them: a malformed id is a usage error, not a silent drop."""
    for name in ("campaign", "lead"):
        value = getattr(args, name, None)
        if value is not None and (problem := label_problem(value, args.callee)) is not None:
            raise UsageError(f"--{name}: {problem}")
    return getattr(args, "campaign", None), getattr(args, "lead", None)


def _pair_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--professional", required=True, metavar="ID")
    parser.add_argument("--callee", required=True, metavar="NUMBER", help="the consumer's number")


class Context:
    """What a command needs, built once from the settings."""

    def __init__(self, args: argparse.Namespace, environ: dict[str, str] | None = None) -> None:
        self.args = args
        settings = load_settings(getattr(args, "config", None), environ)
        if getattr(args, "redis", None):
            settings = replace(settings, redis=replace(settings.redis, url=args.redis))
        self.settings: Settings = settings
        self.clock = Clock(settings.now)
        self._audit: AuditLog | None = None

    def at(self) -> datetime:
        raw = getattr(self.args, "at", None)
        if raw:
            try:
                return parse_instant(raw)
            except ValueError as error:
                raise UsageError(f"--at: {error}") from None
        return self.clock.now()

    def audit(self, err: TextIO) -> AuditLog:
        """Where the CLI's writes are audited: log.audit_file, shared with the running guards
        (appends are serialized), or standard error, never standard output (it holds --json)."""
        if self._audit is None:
            self._audit = AuditLog.open(self.settings.log.audit_file, fallback=err)
        return self._audit

    def hasher(self) -> ConsumerHasher:
        settings = self.settings
        return ConsumerHasher(settings.require_hash_secret(), settings.previous_hash_secrets)

    def store(self) -> Store:
        return Store.from_settings(self.settings.redis, self.hasher(), rules=self.settings.rules, clock=self.clock.now)

    def guard(self, store: Store | None, journal: RefusalJournal | None = None) -> Guard:
        """The service on the guard's clock: writes of facts are bounded by it."""
        skew = timedelta(seconds=self.settings.rules.max_write_skew_s)
        return Guard(self.settings.policy(), store, journal, clock=self.clock.now, max_write_skew=skew)


def _print_json(payload: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(payload, ensure_ascii=False) + "\n")


async def _check(ctx: Context, out: TextIO, err: TextIO) -> int:
    args = ctx.args
    campaign, lead = _label_args(args)
    request = CallRequest(
        caller=args.caller,
        callee=args.callee,
        at=ctx.at(),
        professional=args.professional,
        consumer_postcode=args.consumer_postcode,
        sector=args.sector,
        automated=args.automated,
        campaign=campaign,
        lead=lead,
    )
    if args.offline and args.record:
        raise UsageError("--record needs the stored state: drop --offline")
    store = None if args.offline else ctx.store()
    # Refusals a guard on this machine could not hand to Redis yet count here too, as in the call path.
    journal = None if args.offline else RefusalJournal.if_present(ctx.settings.journal_path)
    guard = ctx.guard(store, journal)
    # Opened before the write: an audit file this user cannot append to fails the command first.
    audit = ctx.audit(err) if args.record else None
    call_id = uuid.uuid4().hex if args.record else ""
    path = CallPath(guard, audit)
    try:
        decision = await path.decide_call(
            request, mode="cli", call_id=call_id, record=args.record, offline=args.offline, audited=False
        )
    finally:
        if store:
            await store.close()
    verdict = decision.verdict
    if audit is not None:  # a write: audited like the call path's (a query is not)
        path.audit_decision(decision, record=True, recorded=verdict.allowed)
    if args.json:
        _print_json(check_payload(verdict, record=args.record), out)
    else:
        out.write(_explain(verdict, offline=args.offline, recorded=args.record and verdict.allowed))
    return EXIT_OK if verdict.allowed else EXIT_FAILED


def _explain(verdict: Verdict, *, offline: bool, recorded: bool) -> str:
    data = verdict.as_dict()
    lines = [
        f"{verdict.verdict.upper()}  {data['caller'] or verdict.prepared.caller.raw[:40]!s} -> "
        f"{data['callee'] or verdict.prepared.callee.raw[:40]!s}"
    ]
    if data["local_time"]:
        lines.append(f"  consumer time: {data['local_time']} ({data['timezone']})")
    lines.append(f"  professional: {data['professional'] or '-'}")
    lines.extend(f"  {reason.code.value}: {reason.message}" for reason in verdict.reasons)
    if verdict.not_evaluated:
        why = "offline" if offline else "state unavailable or not needed"
        lines.append(f"  not evaluated ({why}): {', '.join(verdict.not_evaluated)}")
    if recorded:
        lines.append("  attempt recorded")
    return "\n".join(lines) + "\n"


async def _refusal(ctx: Context, out: TextIO, err: TextIO) -> int:
    args = ctx.args
    campaign, lead = _label_args(args)
    store = ctx.store()
    guard = ctx.guard(store)
    path = CallPath(guard, ctx.audit(err))  # opened before the write: an audit file it cannot append to fails first
    try:
        # Lost, as in the call path: the trail says so (the operator is told to retry).
        signalled = await path.record_refusal(
            mode="cli", source=RefusalSource(args.source), professional=args.professional, callee=args.callee,
            at=ctx.at(), call_id=uuid.uuid4().hex, lost_on=(StoreUnavailable,), describe=str, campaign=campaign,
            lead=lead,
        )  # fmt: skip
    finally:
        await store.close()
    if signalled.error is not None:
        raise signalled.error
    assert signalled.outcome is not None
    outcome = signalled.outcome
    payload = refusal_payload(args.professional, outcome)
    if args.json:
        _print_json(payload, out)
    else:
        until = "until a new consent is recorded" if outcome.withdraws_consent else f"until {payload['blocked_until']}"
        out.write(f"refusal recorded at {payload['at']}: {args.professional} may not call this consumer {until}\n")
    return EXIT_OK


async def _consent(ctx: Context, out: TextIO, err: TextIO) -> int:
    args = ctx.args
    audit = ctx.audit(err)
    store = ctx.store()
    guard = ctx.guard(store)
    path = CallPath(guard, audit)
    try:
        if args.action == "grant":
            slot, until = _grant_options(args)
            try:
                event = await path.grant_consent(
                    mode="cli", professional=args.professional, callee=args.callee, at=ctx.at(),
                    basis=Basis(args.basis), proof=args.proof, outside_hours=args.outside_hours, until=until,
                    slot=slot,
                )  # fmt: skip
            except InputError:
                raise
            except ValueError as error:
                raise UsageError(str(error)) from None
        else:
            event = await path.withdraw_consent(
                mode="cli", professional=args.professional, callee=args.callee, at=ctx.at(), proof=args.proof
            )
    finally:
        await store.close()
    payload = consent_payload(args.professional, event)
    if args.json:
        _print_json(payload, out)
    else:
        what = f"{event.basis.value if event.basis else ''} granted" if event.granted else "consent withdrawn"
        terms = f", until {payload['until']}" if payload["until"] else ""
        if payload["slot"]:
            terms += f", callback slot {payload['slot']['start']}/{payload['slot']['end']}"
        out.write(f"{what} for {args.professional} at {payload['at']}{terms}\n")
    return EXIT_OK


def _grant_options(args: argparse.Namespace) -> tuple[Slot | None, datetime | None]:
    """`--slot` and `--until` of `consent grant`, read like `--at`."""
    try:
        slot = Slot(*parse_slot(args.slot)) if args.slot else None
    except ValueError as error:
        raise UsageError(f"--slot: {error}") from None
    try:
        until = parse_instant(args.until) if args.until else None
    except ValueError as error:
        raise UsageError(f"--until: {error}") from None
    return slot, until


async def _consent_import(ctx: Context, out: TextIO, err: TextIO) -> int:
    args = ctx.args
    guard = ctx.guard(None)
    guard.professional_id(args.professional)
    store = ctx.store()
    # A command-line tool reading its own input file: blocking reads are what we want here.
    handle: TextIO = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8-sig", newline="")  # noqa: SIM115, ASYNC230
    imported = rejected = 0
    progress = Progress(err)
    pending: list[tuple[str, ConsentEvent]] = []
    audit = ctx.audit(err)
    import_id = uuid.uuid4().hex
    digest = hashlib.sha256()

    def stored(batch: list[tuple[str, ConsentEvent]]) -> None:
        # One line per row: an inspector finds one consumer's proof by its hash, whatever file
        # brought it; the import's own line ties the rows to the file's digest. Without an audit
        # file only that import line is written (to stderr, where the row errors go).
        if not ctx.settings.log.audit_file:
            return
        audit.consents(
            {**consent_fields("cli-import", args.professional, store.digest(consumer), event), "import_id": import_id}
            for consumer, event in batch
        )

    def lines() -> Iterator[str]:
        for text in handle:
            digest.update(text.encode())
            yield text

    try:
        reader = csv.reader(lines())
        for line_number, row in enumerate(reader, start=1):
            if line_number == 1 and row and row[0].strip().lower() in {"number", "phone", "numero", "numéro", "msisdn"}:
                continue
            try:
                consumer, event = _consent_row(row)
                # Grants carry their collection instant: the past is fine, the future is not.
                guard.write_instant(event.at, "date", past=True)
                pending.append((consumer, event))
            except ValueError as problem:
                rejected += 1
                err.write(f"{args.file}:{line_number}: {problem}\n")
            if len(pending) >= IMPORT_BATCH:
                imported += await store.record_consents(args.professional, pending)
                stored(pending)
                pending.clear()
                progress.show(imported, "imported", extra=f"  {rejected} rejected")
        if pending:
            imported += await store.record_consents(args.professional, pending)
            stored(pending)
    except StoreUnavailable as error:
        progress.done()
        _import_line(audit, args, import_id, digest.hexdigest(), imported, rejected, str(error))
        err.write(f"npv-guard: {error}; {imported} rows imported before the failure, re-run to finish\n")
        return EXIT_FAILED
    finally:
        if handle is not sys.stdin:
            handle.close()
        await store.close()
    progress.done()
    _import_line(audit, args, import_id, digest.hexdigest(), imported, rejected)
    summary = {"imported": imported, "rejected": rejected, "seconds": round(progress.elapsed(), 3)}
    if args.json:
        _print_json(summary, out)
    else:
        out.write(f"imported {imported} consents, rejected {rejected} rows in {summary['seconds']} s\n")
    return EXIT_OK if rejected == 0 else EXIT_FAILED


def _import_line(
    audit: AuditLog,
    args: argparse.Namespace,
    import_id: str,
    digest: str,
    imported: int,
    rejected: int,
    error: str = "",
) -> None:
    audit.write(
        "consent_import", mode="cli", professional=args.professional, import_id=import_id,
        file=None if args.file == "-" else os.path.basename(args.file), text_sha256=digest,
        imported=imported, rejected=rejected, complete=not error, error=error[:200] or None,
    )  # fmt: skip


def _consent_row(row: Sequence[str]) -> tuple[str, ConsentEvent]:
    if len(row) < 2:
        raise ValueError("expected number,date[,basis[,proof[,outside_hours[,slot[,until]]]]]")
    cells = [cell.strip() for cell in row] + [""] * (7 - len(row))
    try:
        consumer, places = place_consumer(cells[0])
    except ValueError as error:
        raise ValueError(f"number {cells[0][:40]!r}: {error}") from None
    try:
        instant = datetime.fromisoformat(cells[1])
    except ValueError:
        raise ValueError(f"date {cells[1][:40]!r} is not ISO 8601 (2026-09-01 or 2026-09-01T10:00:00+02:00)") from None
    if instant.tzinfo is None:  # a bare date or wall time is the consumer's own
        instant = instant.replace(tzinfo=places[0].territory.zone)
    try:
        basis = Basis(cells[2] or Basis.CONSENT.value)
    except ValueError:
        choices = ", ".join(repr(b.value) for b in Basis)
        raise ValueError(f"basis {cells[2][:20]!r} is not one of {choices}") from None
    flag = cells[4].lower()
    if flag not in {"", "0", "1", "true", "false", "yes", "no"}:
        raise ValueError(f"outside_hours {cells[4][:20]!r} is not true/false")
    zone = places[0].territory.zone  # like the date, instants without offset are the consumer's wall time
    slot = Slot(*parse_slot(cells[5], zone)) if cells[5] else None
    try:
        until = parse_instant(cells[6], zone) if cells[6] else None
    except ValueError as error:
        raise ValueError(f"until: {error}") from None
    event = grant_event(
        instant.astimezone(UTC), basis, cells[3], outside_hours=flag in {"1", "true", "yes"}, until=until, slot=slot
    )
    return consumer, event


async def _history(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    store = ctx.store()
    try:
        consumer, history = await ctx.guard(store).history(args.professional, args.callee)
    finally:
        await store.close()
    del consumer
    payload = history_payload(args.professional, history)
    if args.json:
        _print_json(payload, out)
        return EXIT_OK
    out.write(f"professional {args.professional}, consumer {args.callee} (stored under a keyed hash)\n")
    for name in ("attempts", "refusals", "consents", "messages"):
        items = payload[name]
        out.write(f"{name}: {len(items)}\n")
        for item in items:
            detail = ", ".join(
                f"{k}={v['start']}/{v['end']}" if isinstance(v, dict) else f"{k}={v}"
                for k, v in item.items()
                if k != "at" and v not in ("", None)
            )
            out.write(f"  {item['at']}  {detail}\n")
    return EXIT_OK


def _audit_verify(args: argparse.Namespace, out: TextIO) -> int:
    anchors = []
    for raw in args.anchor:
        seq, _, digest = raw.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise UsageError(f"--anchor: expected SEQ:SHA256 (as verify prints it), got {raw[:80]!r}")
        anchors.append((int(seq), digest.lower()))
    result = audit_trail.verify(args.files, anchors=anchors)
    if args.json:
        _print_json(result.as_dict(), out)
    elif result.ok:
        out.writelines(f"note: {note}\n" for note in result.notes)
        if result.unchained:
            out.write(f"note: {result.unchained} line(s) written before the chain existed (not covered)\n")
        out.write(
            f"OK  {result.lines} lines, seq {result.first_seq}..{result.head_seq}\n"
            f"head (keep it elsewhere, check it later with --anchor): {result.head_seq}:{result.head_hash}\n"
        )
    else:
        out.write(f"TAMPERED  {result.problem}\n")
    return EXIT_OK if result.ok else EXIT_FAILED


def _audit_find(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    try:
        consumer, _ = place_consumer(args.callee)
    except ValueError as error:
        raise UsageError(f"--callee: {error}") from None
    hasher = ctx.hasher()
    found = 0
    for line in audit_trail.find(
        args.files, [hasher.digest(consumer), *hasher.previous_digests(consumer)], args.professional
    ):
        found += 1
        if args.json:
            _print_json({"file": line.file, "line": line.number, "entry": line.data or {}}, out)
        else:
            out.write(f"{line.ref}: {line.text}\n")
    return EXIT_OK if found else EXIT_FAILED


async def _evidence(ctx: Context, out: TextIO) -> int:
    from npv_guard import evidence  # noqa: PLC0415

    args = ctx.args
    files = args.audit or ([ctx.settings.log.audit_file] if ctx.settings.log.audit_file else [])
    if not files:
        raise UsageError("--audit: no audit file given and log.audit_file is not set")
    store = ctx.store()
    try:
        consumer, history = await Guard(ctx.settings.policy(), store).history(args.professional, args.callee)
    finally:
        await store.close()
    hasher = ctx.hasher()
    pack = evidence.build(
        args.professional,
        [hasher.digest(consumer), *hasher.previous_digests(consumer)],
        history,
        files,
        ctx.at(),
    )
    if args.html:
        with open(args.html, "w", encoding="utf-8") as page:  # noqa: ASYNC230 - a CLI writing its output
            page.write(evidence.html(pack))
    if args.json:
        _print_json(pack, out)
    else:
        out.write(evidence.summary(pack))
    return EXIT_OK if pack["audit"]["chain_ok"] else EXIT_FAILED


async def _run_guard(ctx: Context, mode: str) -> int:
    # Imported here so that `check` does not pay for aiohttp and panoramisk at every start.
    from npv_guard import logs  # noqa: PLC0415
    from npv_guard.runner import run_agi, run_ari  # noqa: PLC0415

    _check_server_options(ctx.args)
    logs.setup(ctx.settings.log.level)
    settings = ctx.settings
    if mode == "agi":
        host, port = getattr(ctx.args, "host", None), getattr(ctx.args, "port", None)
        settings = replace(
            settings, agi=replace(settings.agi, host=host or settings.agi.host, port=port or settings.agi.port)
        )
        return await run_agi(settings, drain_s=ctx.args.drain_seconds)
    return await run_ari(settings, drain_s=ctx.args.drain_seconds)


async def _serve(ctx: Context) -> int:
    from npv_guard import logs  # noqa: PLC0415
    from npv_guard.runner import run_api  # noqa: PLC0415

    args, settings = ctx.args, ctx.settings
    host, _, port = settings.api.listen.rpartition(":")
    _check_server_options(args)
    host = args.host or host.strip("[]")
    listen = f"[{host}]:{args.port or port}" if ":" in host else f"{host}:{args.port or port}"
    logs.setup(settings.log.level)
    return await run_api(replace(settings, api=replace(settings.api, listen=listen)), drain_s=args.drain_seconds)


def _check_server_options(args: argparse.Namespace) -> None:
    port = getattr(args, "port", None)
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--port: must be 1-65535, got {port}")
    if not (math.isfinite(args.drain_seconds) and 0 <= args.drain_seconds <= 3600):
        raise UsageError(f"--drain-seconds: expected 0-3600 seconds, got {args.drain_seconds}")


async def _api_token(ctx: Context, out: TextIO) -> int:
    from npv_guard.api.auth import mint_token, token_digest  # noqa: PLC0415

    professional = ctx.guard(None).professional_id(ctx.args.professional)
    token = mint_token()
    digest = token_digest(token)
    if ctx.args.json:
        _print_json({"professional": professional, "token": token, "api_token_sha256": digest}, out)
        return EXIT_OK
    out.write(
        f"token for {professional} (give it to the dialer; it is shown once and stored nowhere):\n"
        f"  {token}\n"
        f'in the config, [[professionals]] entry with id = "{professional}" (append to an existing list):\n'
        f'  api_token_sha256 = ["{digest}"]\n'
        f"or in NPV_GUARD_PROFESSIONALS (JSON), that entry's key:\n"
        f'  "api_token_sha256": ["{digest}"]\n'
    )
    return EXIT_OK


async def _health(ctx: Context, out: TextIO) -> int:
    listen = ctx.settings.http.listen
    url = ctx.args.url or (f"http://{listen}/healthz" if listen else "")
    if not url:
        raise UsageError("http.listen is empty: the guard serves no /healthz (give --url)")

    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as error:
            return 0, f"unreachable: {getattr(error, 'reason', error)}"

    status, body = await asyncio.to_thread(fetch)
    out.write(f"{status or 'no answer'} {body.strip()}\n")
    return EXIT_OK if status == 200 else EXIT_FAILED


async def _doctor(ctx: Context, out: TextIO) -> int:
    from npv_guard.doctor import FAIL, Doctor, report  # noqa: PLC0415 - panoramisk only here

    findings = await Doctor(ctx.settings, ctx.args.mode).run()
    out.write(report(findings))
    return EXIT_FAILED if any(f.level == FAIL for f in findings) else EXIT_OK


def _reasons(args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        _print_json({code.value: SUMMARY[code] for code in ReasonCode}, out)
    else:
        out.writelines(f"{code.value:<20} {SUMMARY[code]}\n" for code in ReasonCode)
    return EXIT_OK


async def _sync(result: int) -> int:
    return result


def _fail(message: str, code: int, err: TextIO) -> int:
    err.write(f"npv-guard: {message}\n")
    return code


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> NoReturn:
    sys.exit(run(argv, out=out, err=err))


def run(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command == "reasons":
        return _reasons(args, out)
    # Commands that need no settings: the files shipped with the package, and verifying a trail
    # (anyone may verify it).
    standalone: Callable[[], int] | None = None
    if args.command in {"dialplan", "systemd"}:
        standalone = partial(bundled.run, args, out, err)
    elif args.command == "audit" and args.action == "verify":
        standalone = partial(_audit_verify, args, out)
    if standalone is not None:
        try:
            return standalone()
        except (bundled.Refused, UsageError) as error:
            return _fail(str(error), EXIT_USAGE, err)
        except OSError as error:
            return _fail(f"{error.filename or ''}: {error.strerror}", EXIT_USAGE, err)
    try:
        ctx = Context(args)
        commands: dict[str, Callable[[], Coroutine[Any, Any, int]]] = {
            "check": lambda: _check(ctx, out, err),
            "refusal": lambda: _refusal(ctx, out, err),
            "consent": lambda: _consent_import(ctx, out, err) if args.action == "import" else _consent(ctx, out, err),
            "audit": lambda: _sync(_audit_find(ctx, out)),
            "evidence": lambda: _evidence(ctx, out),
            "history": lambda: _history(ctx, out),
            "scrub": lambda: scrub.run(ctx, out, err),
            "report": lambda: report.run(ctx, out, err),
            "run": lambda: _run_guard(ctx, "ari"),
            "agi": lambda: _run_guard(ctx, "agi"),
            "serve": lambda: _serve(ctx),
            "api-token": lambda: _api_token(ctx, out),
            "doctor": lambda: _doctor(ctx, out),
            "health": lambda: _health(ctx, out),
        }
        return asyncio.run(commands[args.command]())
    except (ConfigError, UsageError) as error:
        return _fail(str(error), EXIT_USAGE, err)
    except InputError as error:
        return _fail(str(error), EXIT_USAGE, err)
    except StoreUnavailable as error:
        return _fail(f"{error}: nothing was recorded", EXIT_FAILED, err)
    except JournalUnreadable as error:
        return _fail(str(error), EXIT_FAILED, err)
    except OSError as error:
        return _fail(f"{error.filename or ''}: {error.strerror}", EXIT_USAGE, err)
    except KeyboardInterrupt:
        return 130
