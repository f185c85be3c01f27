"""The refusal journal's reader against hostile bytes (hypothesis, bounded): arbitrary bytes and
torn records mixed with valid ones never crash the loader, and never cost a valid complete
record, whether the file is read (check, scrub) or reopened by its writer (which cuts a torn tail).
Examples per run: NPV_GUARD_FUZZ_EXAMPLES (default 4000; a tenth of it for the writer, which fsyncs).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npv_guard.core.model import Refusal, RefusalSource
from npv_guard.journal import RefusalJournal, parse

EXAMPLES = int(os.environ.get("NPV_GUARD_FUZZ_EXAMPLES", "4000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ_WRITER = settings(max_examples=max(EXAMPLES // 10, 50), deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def records(draw: st.DrawFn) -> dict[str, object]:
    """A refusal line as the journal writes it (and as older guards wrote it)."""
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 10**8)))
    return {
        "op": "refusal",
        "id": draw(st.uuids()).hex,
        "professional": draw(st.sampled_from(["acme", "beta", "a-b_c.9"])),
        "digest": draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        "at": at.isoformat(),
        "source": draw(st.sampled_from([s.value for s in RefusalSource])),
        "call_id": draw(st.text(max_size=20)),  # anything, quotes and newlines included: escaped
        "withdraws_consent": draw(st.booleans()),
    }


def line(record: dict[str, object]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


# What else a journal may hold: any bytes, a torn record (no newline), JSON of the wrong shape.
ODD_LINES = [
    b"{}\n", b"[]\n", b"null\n", b'{"op": "done"}\n', b'{"op": "refusal", "id": 1}\n',
    b'{"op": "refusal", "at": "0001-01-01T00:00:00+01:00"}\n', b"[" * 5000 + b"\n",
    b'{"op": "done", "id": []}\n', b"\xff\xfe\x00{", b'{"op"', b"\r\n", b"\n\n",
]  # fmt: skip
garbage = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=60).map(str.encode),
    records().flatmap(lambda r: st.integers(1, len(line(r)) - 1).map(lambda cut: line(r)[:cut])),
    st.sampled_from(ODD_LINES),
)
pieces = st.lists(st.one_of(records().map(lambda r: ("record", r)), garbage.map(lambda g: ("garbage", g))), max_size=12)


def build(items: list[tuple[str, object]]) -> tuple[bytes, set[str]]:
    """The file's bytes and the ids of the valid complete records in it."""
    data, valid = b"", set()
    for kind, item in items:
        if kind == "record":
            assert isinstance(item, dict)
            data += line(item) + b"\n"
            valid.add(str(item["id"]))
        else:
            assert isinstance(item, bytes)
            data += item
    return data, valid


@FUZZ
@given(pieces)
def test_the_reader_never_crashes_nor_drops_a_complete_record(items: list[tuple[str, object]]) -> None:
    data, valid = build(items)
    contents = parse(data)
    assert valid <= set(contents.entries)
    assert contents.complete_end == data.rfind(b"\n") + 1


@FUZZ_WRITER
@given(pieces)
def test_the_writer_reopens_any_file_and_keeps_every_complete_record(items: list[tuple[str, object]]) -> None:
    data, valid = build(items)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "refusals.journal"
        path.write_bytes(data)
        journal = RefusalJournal(str(path), writer=True, peers=False)
        found = {entry.id for entry in journal.pending()}
        assert valid <= found
        new = journal.add("acme", "ab" * 16, Refusal(datetime(2026, 12, 1, tzinfo=UTC), RefusalSource.AGENT), None)
        journal.close()
        reread = RefusalJournal(str(path), peers=False)
        assert {entry.id for entry in reread.pending()} == found | {new.id}
        assert reread.unreadable_lines() == parse(data[: data.rfind(b"\n") + 1]).unreadable
