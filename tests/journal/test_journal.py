"""The refusal journal on real files: torn appends, crashes at any byte, compaction, bad bytes.

No Redis here: what is asserted is what a guard finds pending when it (re)opens the file.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from npv_guard.audit import AuditLog
from npv_guard.core.model import Refusal, RefusalSource
from npv_guard.journal import RefusalJournal, parse

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
DIGEST = "ab" * 16


def refusal(minute: int = 0) -> Refusal:
    return Refusal(AT + timedelta(minutes=minute), RefusalSource.OPERATOR, f"call-{minute}")


def pending_ids(path: Path) -> set[str]:
    return {entry.id for entry in RefusalJournal(str(path), peers=False).pending()}


def write_journal(path: Path, count: int) -> list[str]:
    journal = RefusalJournal(str(path), writer=True, peers=False)
    try:
        return [journal.add("acme", DIGEST, refusal(n), None).id for n in range(count)]
    finally:
        journal.close()


def test_torn_line_does_not_swallow_the_next_refusal(tmp_path: Path) -> None:
    """The issue's repro, on the file: two refusals, a crash in the middle of a third append, a
    restart, one more refusal. Before the fix the last one was glued to the torn bytes and lost."""
    path = tmp_path / "refusals.journal"
    before = write_journal(path, 2)
    with path.open("ab") as handle:
        handle.write(b'{"op": "refusal", "id": "torn0000", "dig')
    after = write_journal(path, 1)
    assert pending_ids(path) == {*before, *after}
    assert path.read_bytes().endswith(b"\n") and b"torn0000" not in path.read_bytes()  # cut at open


def test_reader_finds_a_record_glued_to_a_torn_one(tmp_path: Path) -> None:
    """A file written before the writer cut torn tails: the record after the torn bytes counts."""
    path = tmp_path / "refusals.journal"
    kept = write_journal(path, 1)
    glued = json.dumps({"op": "refusal", "id": "c0ffee", "professional": "acme", "digest": DIGEST,
                        "at": AT.isoformat(), "source": "agent", "call_id": "", "withdraws_consent": True})  # fmt: skip
    with path.open("ab") as handle:
        handle.write(b'{"op": "refusal", "id": "torn0000", "digest": "\xc3' + glued.encode() + b"\n")
    journal = RefusalJournal(str(path), peers=False)
    assert {entry.id for entry in journal.pending()} == {*kept, "c0ffee"}
    assert journal.unreadable_lines() == 0
    assert next(e for e in journal.pending() if e.id == "c0ffee").withdrawal is not None


def test_a_crash_at_every_byte_of_the_last_append_keeps_the_earlier_records(tmp_path: Path) -> None:
    """Truncate a real journal at each byte offset of its last record (what a crash, or a disk
    full, leaves): the earlier records survive, and a record appended after reopening is read."""
    source = tmp_path / "source.journal"
    earlier = write_journal(source, 3)
    size_before = source.stat().st_size
    last = write_journal(source, 1)[0]
    data = source.read_bytes()
    for offset in range(size_before, len(data) + 1):
        path = tmp_path / f"cut-{offset}.journal"
        path.write_bytes(data[:offset])
        found = pending_ids(path)
        # Only the torn record itself may be missing; a whole one that lacks its newline counts.
        assert set(earlier) <= found <= {*earlier, last}, offset
        assert (last in found) == (offset >= len(data) - 1), offset
        appended = write_journal(path, 1)[0]
        assert pending_ids(path) == found | {appended}, offset
        assert parse(path.read_bytes()).unreadable == 0, offset


def test_done_lines_and_unknown_ids(tmp_path: Path) -> None:
    path = tmp_path / "refusals.journal"
    journal = RefusalJournal(str(path), writer=True, peers=False)
    first = journal.add("acme", DIGEST, refusal(0), None)
    journal.add("acme", DIGEST, refusal(1), None)
    journal.done(first)
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"op": "done", "id": "never-journaled"}\n')
    assert len(RefusalJournal(str(path), peers=False)) == 1


def test_compaction_keeps_the_files_mode(tmp_path: Path) -> None:
    """The journal is created 0600; compaction used to replace it by a file of the umask's mode."""
    previous = os.umask(0o022)
    try:
        path = tmp_path / "refusals.journal"
        journal = RefusalJournal(str(path), writer=True, peers=False)
        entry = journal.add("acme", DIGEST, refusal(), None)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        journal.done(entry)  # nothing left: compacted
        assert path.read_bytes() == b""
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        os.chmod(path, 0o640)  # an operator's choice (a reading group) is kept too
        journal.done(journal.add("acme", DIGEST, refusal(), None))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert not path.with_name(path.name + ".new").exists()
        journal.close()
    finally:
        os.umask(previous)


def test_an_invalid_utf8_line_is_skipped_with_one_warning_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "refusals.journal"
    first = write_journal(path, 1)
    with path.open("ab") as handle:
        handle.write(b'{"op": "refusal", "id": "\xff\xfe"}\n\xc3\x28 not json either\n')
    second = write_journal(path, 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="npv_guard.journal"):
        journal = RefusalJournal(str(path), peers=False)
    assert {entry.id for entry in journal.pending()} == {*first, *second}
    assert journal.unreadable_lines() == 2
    skipped = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert skipped == [f"journal {path}: skipped 2 unreadable line(s), the first at line 2"]


def test_a_failed_append_leaves_no_torn_line(tmp_path: Path) -> None:
    """A write cut short by a full disk (here the file size limit) is not acknowledged, and is
    taken back: the next refusal, once there is room, is read."""
    path = tmp_path / "refusals.journal"
    kept = write_journal(path, 1)
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from datetime import UTC, datetime
        from npv_guard.core.model import Refusal, RefusalSource
        from npv_guard.journal import RefusalJournal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        journal = RefusalJournal({str(path)!r}, writer=True, peers=False)
        size = {path.stat().st_size}
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
        try:
            journal.add("acme", {DIGEST!r}, Refusal(datetime.now(UTC), RefusalSource.AGENT), None)
        except OSError as error:
            print("refused", error.errno)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print(journal.add("acme", {DIGEST!r}, Refusal(datetime.now(UTC), RefusalSource.AGENT), None).id)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    refused, appended = result.stdout.split("\n")[:2]
    assert refused.startswith("refused")
    assert pending_ids(path) == {*kept, appended}
    assert parse(path.read_bytes()).unreadable == 0


def test_the_audit_file_starts_a_new_line_after_a_torn_one(tmp_path: Path) -> None:
    """The same hole in the audit trail: a line torn by a crash must not swallow the next one."""
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"ts": "2026-12-01T09:30:00Z", "event": "decision", "call_id": "a"}\n{"ts": "2026-12-0')
    AuditLog.open(str(path)).write("refusal", call_id="b")
    last = path.read_text().splitlines()[-1]
    assert json.loads(last)["call_id"] == "b"
    empty = tmp_path / "new.log"
    AuditLog.open(str(empty)).write("refusal", call_id="c")
    assert empty.read_text().count("\n") == 1
