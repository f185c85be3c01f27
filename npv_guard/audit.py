"""The audit trail: one JSON line per write, consumers as keyed hashes only, in a hash chain.

Every line carries `seq` (1, 2, 3, ...) and `prev`, the SHA-256 of the previous line's exact
bytes (without its newline); the first line of a trail has `prev` = 64 zeros. Editing, removing,
inserting or reordering a line breaks the chain at that line; `verify` names it. The chain is
plain SHA-256, not keyed: an inspector verifies it without any secret of ours. A forger who can
rewrite the whole file can recompute a plain chain, and could a keyed one too when the key sits
on the same host; what stops them is an anchor, the head `seq`/hash printed by `npv-guard audit
verify`, kept somewhere they cannot edit (a ticket, a mail, WORM storage): `--anchor` checks it.

Several processes (run, agi, serve, the CLI) may append to one file. Appends are serialized by
an `flock` on a side file `<audit_file>.chain`, which also holds the head (seq and hash) of the
chain. That side file is never rotated, so the head survives both logrotate modes: with
`copytruncate` the file is emptied in place, with `create` it is renamed and a new one appears;
either way the next line, written to the empty file, continues from the head and carries the last
hash of the previous file. When the file is not empty and another writer appended since our last
write (its size or inode changed), the head is read again from the file's own last line, so a
restart resumes the chain too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from npv_guard.core.calendar import utc_iso
from npv_guard.core.decide import Verdict
from npv_guard.core.model import ConsentEvent
from npv_guard.journal import JournalEntry
from npv_guard.service import RefusalOutcome

GENESIS = "0" * 64
TAIL_BYTES = 64 * 1024  # an audit line is far shorter; a longer one is not ours

# json.dumps with options builds a new encoder at every call: one, built once (the same text).
_LINE_JSON = json.JSONEncoder(ensure_ascii=False, default=str).encode


def line_hash(text: str | bytes) -> str:
    """The hash the next line's `prev` carries: SHA-256 of the line's bytes without the newline."""
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data.rstrip(b"\n")).hexdigest()


def text_digest(text: str) -> str:
    """A digest standing for a text kept elsewhere (a consent's proof, an imported file's rows)."""
    return hashlib.sha256(text.encode()).hexdigest()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    def __init__(self, stream: TextIO | None = None, *, path: str = "") -> None:
        self._stream = stream if stream is not None or path else sys.stdout
        self._path = path
        self._lock = threading.Lock()
        self._seq = 0
        self._prev = GENESIS
        self._fd: int | None = None
        self._chain_fd: int | None = None
        self._ino = -1
        self._end = -1
        if path:
            self._chain_fd = os.open(path + ".chain", os.O_RDWR | os.O_CREAT, 0o640)
            self._reopen()

    @classmethod
    def open(cls, path: str, *, fallback: TextIO | None = None) -> AuditLog:
        """The trail at `path`; without a path, `fallback` (default standard output)."""
        if not path:
            return cls(fallback)
        return cls(path=path)

    @property
    def head(self) -> tuple[int, str]:
        """The seq and hash of the last line this process knows of."""
        return self._seq, self._prev

    def close(self) -> None:
        for fd in (self._fd, self._chain_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._chain_fd = None

    def _reopen(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)  # read: its tail
        self._ino = os.fstat(self._fd).st_ino
        self._end = -1  # unknown: read the head again before the next line

    def write(self, event: str, **fields: Any) -> None:
        with self._lock:
            if self._path:
                self._append_file(event, fields)
            else:
                text = self._compose(event, fields)
                assert self._stream is not None
                self._stream.write(text + "\n")
                self._stream.flush()

    def _compose(self, event: str, fields: dict[str, Any]) -> str:
        line: dict[str, Any] = {"seq": self._seq + 1, "prev": self._prev, "ts": _now_iso(), "event": event}
        line.update(fields)
        line.setdefault("campaign", None)
        line.setdefault("lead", None)
        text = _LINE_JSON(line)
        self._seq, self._prev = self._seq + 1, line_hash(text)
        return text

    def _append_file(self, event: str, fields: dict[str, Any]) -> None:
        assert self._chain_fd is not None
        fcntl.flock(self._chain_fd, fcntl.LOCK_EX)
        try:
            try:
                replaced = os.stat(self._path).st_ino != self._ino
            except FileNotFoundError:
                replaced = True  # renamed away by logrotate, not created again yet
            if replaced:
                self._reopen()
            assert self._fd is not None
            size = os.fstat(self._fd).st_size
            if size == 0:
                self._seq, self._prev = self._read_chain_head() or (self._seq, self._prev)
            elif size != self._end:
                self._seq, self._prev, torn = _tail_head(self._fd, size, self._read_chain_head())
                if torn:
                    os.write(self._fd, b"\n")  # end a line torn by a crash: verify will show it
                    size += 1
            data = (self._compose(event, fields) + "\n").encode()
            os.write(self._fd, data)
            self._end = size + len(data)
            os.pwrite(self._chain_fd, f"{self._seq} {self._prev}\n".ljust(96).encode(), 0)
        finally:
            fcntl.flock(self._chain_fd, fcntl.LOCK_UN)

    def _read_chain_head(self) -> tuple[int, str] | None:
        assert self._chain_fd is not None
        raw = os.pread(self._chain_fd, 96, 0).decode(errors="replace").split()
        if len(raw) == 2 and raw[0].isdigit() and len(raw[1]) == 64:
            return int(raw[0]), raw[1]
        return None

    # ------------------------------------------------------------------ the lines

    def decision(
        self,
        verdict: Verdict,
        *,
        call_id: str,
        consumer_ref: str | None,
        mode: str,
        data: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """`data`: the verdict's `as_dict()` when the caller has it already (it is not changed)."""
        data = verdict.as_dict() if data is None else data
        request = verdict.prepared.request
        extra.setdefault("campaign", request.campaign)
        extra.setdefault("lead", request.lead)
        self.write(
            "decision",
            call_id=call_id,
            mode=mode,
            verdict=data["verdict"],
            reasons=list(verdict.codes),
            messages=[
                reason.message for reason in verdict.reasons if reason.code.value.startswith(("CALLER", "STATE"))
            ],
            caller=data["caller"],
            professional=data["professional"],
            consumer=consumer_ref,
            territory=data["territory"],
            local_time=data["local_time"],
            at=data["at"],
            not_evaluated=data["not_evaluated"],
            next_allowed_at=data["next_allowed_at"],
            **extra,
        )

    def refusal(
        self,
        *,
        call_id: str,
        mode: str,
        source: str,
        professional: str | None,
        consumer_ref: str | None,
        outcome: RefusalOutcome | None = None,
        error: str = "",
        **extra: Any,
    ) -> None:
        """One line per refusal signalled in the call path: recorded (or journaled), or lost and why."""
        fields: dict[str, Any] = {"recorded": outcome is not None}
        if outcome is not None:
            fields.update(
                journaled=outcome.journaled,
                at=outcome.refusal.at.isoformat(),
                withdraws_consent=outcome.withdraws_consent,
                blocked_until=outcome.blocked_until.isoformat(),
            )
        else:
            fields["error"] = error[:200]
        self.write(
            "refusal",
            call_id=call_id,
            mode=mode,
            professional=professional,
            consumer=consumer_ref,
            source=source,
            **fields,
            **extra,
        )

    def consent(
        self, *, mode: str, professional: str, consumer_ref: str | None, event: ConsentEvent, **extra: Any
    ) -> None:
        """A grant or a withdrawal. The proof itself stays in Redis (it may name the consumer): the
        line carries its SHA-256, which the evidence pack checks against the stored proof."""
        self.write("consent", **consent_fields(mode, professional, consumer_ref, event), **extra)

    def consents(self, rows: Iterable[dict[str, Any]]) -> None:
        """Many consent lines (an import) under one lock."""
        with self._lock:
            for fields in rows:
                if self._path:
                    self._append_file("consent", fields)
                else:
                    assert self._stream is not None
                    self._stream.write(self._compose("consent", fields) + "\n")
            if self._stream is not None:
                self._stream.flush()

    def replayed(self, entry: JournalEntry) -> None:
        """A journaled refusal that Redis now holds."""
        refusal = entry.refusal
        self.write(
            "journal_replay",
            call_id=refusal.call_id,
            mode="journal",
            professional=entry.professional,
            consumer=entry.digest,
            source=refusal.source.value,
            at=refusal.at.isoformat(),
            journal_id=entry.id,
            withdraws_consent=entry.withdrawal is not None,
        )


def consent_fields(mode: str, professional: str, consumer_ref: str | None, event: ConsentEvent) -> dict[str, Any]:
    return {
        "mode": mode,
        "recorded": True,
        "professional": professional,
        "consumer": consumer_ref,
        "granted": event.granted,
        "basis": event.basis.value if event.basis else None,
        "at": utc_iso(event.at),
        "outside_hours": event.outside_hours,
        "proof_sha256": text_digest(event.proof),
    }


def _tail_head(fd: int, size: int, fallback: tuple[int, str] | None) -> tuple[int, str, bool]:
    """The seq and hash of a non-empty file's last line, and whether that line is torn."""
    start = max(0, size - TAIL_BYTES)
    tail = os.pread(fd, size - start, start)
    torn = not tail.endswith(b"\n")
    lines = tail.rstrip(b"\n").split(b"\n")
    last = lines[-1] if not (start and len(lines) == 1) else b""
    if torn:
        # The torn fragment is kept (and ended) so that verify reports it; chain from the line before.
        last = lines[-2] if len(lines) > 1 else b""
    seq = fallback[0] if fallback else 0
    try:
        data = json.loads(last)
        if isinstance(data, dict) and isinstance(data.get("seq"), int):
            seq = data["seq"]
    except ValueError:
        pass
    return seq, line_hash(last) if last else (fallback[1] if fallback else GENESIS), torn


# ---------------------------------------------------------------------- reading and verifying


@dataclass(frozen=True, slots=True)
class Line:
    file: str
    number: int  # 1-based line number in its file
    text: str
    data: dict[str, Any] | None  # None: not a JSON object

    @property
    def ref(self) -> str:
        return f"{self.file}:{self.number}"

    @property
    def seq(self) -> int | None:
        value = self.data.get("seq") if self.data else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_lines(paths: Iterable[str]) -> Iterator[Line]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as handle:
            for number, raw in enumerate(handle, start=1):
                text = raw.rstrip("\n")
                try:
                    data = json.loads(text)
                except ValueError:
                    data = None
                yield Line(path, number, text, data if isinstance(data, dict) else None)


@dataclass
class Verification:
    ok: bool = True
    lines: int = 0
    first_seq: int | None = None
    head_seq: int | None = None
    head_hash: str | None = None
    problem: str = ""
    bad_line: str = ""  # file:line of the first line found tampered with
    unchained: int = 0  # lines older than the chain (written before it existed)
    notes: list[str] = field(default_factory=list)
    verified: set[str] = field(default_factory=set)  # refs of lines the chain covers (with keep_refs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "lines": self.lines,
            "first_seq": self.first_seq,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "problem": self.problem or None,
            "bad_line": self.bad_line or None,
            "unchained_lines": self.unchained,
            "notes": self.notes,
        }


def verify(paths: Sequence[str], *, anchors: Sequence[tuple[int, str]] = (), keep_refs: bool = False) -> Verification:
    """Check the chain across `paths`, given oldest first; stops at the first broken link.

    An edit shows as the next line's `prev` not matching the edited line's hash; a removal as a
    gap in `seq`; an insertion or a swap as a `seq` going back or repeating. The last line's own
    content is covered only by an anchor (or by the next line once it is written).
    """
    result = Verification()
    want = dict(anchors)
    recent: deque[tuple[int, str, str]] = deque(maxlen=256)  # (seq, hash, ref) of the last lines
    previous: Line | None = None
    lines = read_lines(paths)

    def fail(line: Line, problem: str) -> Verification:
        result.ok, result.problem, result.bad_line = False, f"{line.ref}: {problem}", line.ref
        return result

    for line in _with_next(lines):
        current, following = line
        result.lines += 1
        seq = current.seq
        prev = current.data.get("prev") if current.data else None
        if seq is None or not isinstance(prev, str):
            if result.head_seq is None and current.data is not None and "seq" not in current.data:
                result.unchained += 1  # a trail started before the chain: its lines predate it
                previous = current
                continue
            what = "not a JSON line" if current.data is None else "no seq/prev"
            return fail(current, f"{what}: edited, or torn by a crash")
        digest = line_hash(current.text)
        if result.head_seq is None:
            result.first_seq = seq
            expected_prev = line_hash(previous.text) if previous is not None else None
            if expected_prev is not None and prev != expected_prev:
                return fail(current, "first chained line does not follow the line before it")
            if expected_prev is None and prev != GENESIS:
                result.notes.append(
                    f"{current.ref}: the chain starts at seq {seq} after hash {prev[:16]}... "
                    "(a rotated file: give the previous file first to verify the link)"
                )
        else:
            expected = result.head_seq + 1
            if seq > expected:
                nxt = following.seq if following is not None else None
                if nxt is not None and nxt == expected:
                    return fail(current, f"seq {seq} comes before seq {expected}: lines reordered")
                return fail(
                    current, f"seq {seq} follows seq {result.head_seq}: {seq - expected} line(s) removed before it"
                )
            if seq < expected:
                copied = next((ref for s, h, ref in recent if s == seq and h == digest), None)
                if copied is not None:
                    return fail(current, f"a copy of {copied} was inserted here")
                inserted = next((ref for s, h, ref in recent if s == seq - 1 and h == prev), None)
                if inserted is not None and previous is not None:
                    return fail(previous, f"a line was inserted here: seq {seq} at {current.ref} follows {inserted}")
                return fail(current, f"seq {seq} after seq {result.head_seq}: a line inserted or reordered")
            if prev != result.head_hash:
                assert previous is not None
                return fail(previous, f"edited: its hash no longer matches the prev of {current.ref}")
        if seq in want and want.pop(seq) != digest:
            return fail(current, f"does not match the anchor for seq {seq}: edited")
        result.head_seq, result.head_hash = seq, digest
        recent.append((seq, digest, current.ref))
        if keep_refs:
            result.verified.add(current.ref)
        previous = current
    if want:
        missing = ", ".join(str(s) for s in sorted(want))
        result.ok, result.problem = False, f"anchor seq {missing} not found: the trail was cut or the wrong files given"
    return result


def _with_next(lines: Iterator[Line]) -> Iterator[tuple[Line, Line | None]]:
    """Each line with the one after it (a one-line lookahead to tell a swap from a removal)."""
    current = next(lines, None)
    while current is not None:
        following = next(lines, None)
        yield current, following
        current = following


def find(paths: Sequence[str], digests: Sequence[str], professional: str | None = None) -> Iterator[Line]:
    """The lines naming one consumer (any of its keyed hashes), optionally for one professional."""
    wanted = set(digests)
    for line in read_lines(paths):
        data = line.data
        if data is None or data.get("consumer") not in wanted:
            continue
        if professional is not None and data.get("professional") != professional:
            continue
        yield line
