"""The hash chain of the audit trail: `audit verify` passes intact files and names the first
line edited, removed, inserted or reordered; rotation, restarts and concurrent writers keep it."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from npv_guard.audit import GENESIS, AuditLog, line_hash, verify

EXE = shutil.which("npv-guard", path=str(Path(sys.executable).parent)) or "npv-guard"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "audit", *args], capture_output=True, text=True, timeout=60, check=False)


def trail(path: Path, count: int, start: int = 0) -> AuditLog:
    log = AuditLog.open(str(path))
    for index in range(start, start + count):
        log.write("decision", call_id=f"c{index}", verdict="allow", consumer="ab" * 16)
    return log


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_lines_chain_from_genesis(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trail(path, 3).close()
    entries = [json.loads(line) for line in lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == GENESIS
    assert entries[1]["prev"] == line_hash(lines(path)[0]) and entries[2]["prev"] == line_hash(lines(path)[1])
    assert all("campaign" in e and "lead" in e for e in entries)


def test_intact_file_verifies_and_prints_its_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trail(path, 5).close()
    result = cli("verify", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    head = f"5:{line_hash(lines(path)[-1])}"
    assert "OK  5 lines" in result.stdout and head in result.stdout
    assert cli("verify", "--anchor", head, str(path)).returncode == 0


def _tampered(tmp_path: Path, change: str) -> tuple[Path, list[str]]:
    path = tmp_path / "audit.log"
    trail(path, 6).close()
    original = lines(path)
    text = list(original)
    if change == "edit":
        text[2] = text[2].replace('"allow"', '"reject"')
    elif change == "delete":
        del text[3]
    elif change == "insert":
        text.insert(2, text[1])  # a copy of a real line: well formed, out of place
    elif change == "insert_forged":
        # A forger who chains the new line correctly to line 2: line 3 then no longer follows.
        forged = json.loads(text[1])
        forged.update(seq=3, prev=line_hash(text[1]), call_id="forged")
        text.insert(2, json.dumps(forged) + "\n")
    elif change == "swap":
        text[2], text[3] = text[3], text[2]
    elif change == "garbage":
        text.insert(4, "not json at all\n")
    path.write_text("".join(text))
    return path, original


@pytest.mark.parametrize(
    ("change", "bad_line", "words"),
    [
        ("edit", 3, "edited"),
        ("delete", 4, "removed"),
        ("insert", 3, "insert"),
        ("insert_forged", 3, "inserted"),
        ("swap", 3, "reordered"),
        ("garbage", 5, "not a JSON line"),
    ],
)
def test_tampering_is_caught_at_the_first_bad_line(tmp_path: Path, change: str, bad_line: int, words: str) -> None:
    path, _ = _tampered(tmp_path, change)
    result = cli("verify", str(path))
    assert result.returncode == 1, result.stdout
    assert f"{path}:{bad_line}:" in result.stdout and words in result.stdout, result.stdout
    report = json.loads(cli("verify", "--json", str(path)).stdout)
    assert report["ok"] is False and report["bad_line"] == f"{path}:{bad_line}"


def test_an_edited_last_line_is_caught_by_the_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trail(path, 4).close()
    anchor = f"4:{line_hash(lines(path)[-1])}"
    text = lines(path)
    text[-1] = text[-1].replace('"allow"', '"reject"')
    path.write_text("".join(text))
    assert cli("verify", str(path)).returncode == 0  # nothing follows it: only an anchor tells
    result = cli("verify", "--anchor", anchor, str(path))
    assert result.returncode == 1 and f"{path}:4:" in result.stdout and "anchor" in result.stdout


def test_a_cut_trail_misses_its_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trail(path, 4).close()
    anchor = f"4:{line_hash(lines(path)[-1])}"
    path.write_text("".join(lines(path)[:3]))
    result = cli("verify", "--anchor", anchor, str(path))
    assert result.returncode == 1 and "anchor seq 4 not found" in result.stdout


def test_restart_resumes_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trail(path, 3).close()
    trail(path, 3, start=3).close()  # a new process: reads the head from the file
    assert [json.loads(line)["seq"] for line in lines(path)] == [1, 2, 3, 4, 5, 6]
    assert verify([str(path)]).ok


def test_restart_without_the_side_file_resumes_from_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trail(path, 3).close()
    os.unlink(str(path) + ".chain")
    trail(path, 2, start=3).close()
    result = verify([str(path)])
    assert result.ok and result.head_seq == 5


def test_copytruncate_rotation_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = trail(path, 3)
    shutil.copy(path, tmp_path / "audit.log.1")
    os.truncate(path, 0)  # logrotate copytruncate
    for index in range(2):
        log.write("decision", call_id=f"after{index}")
    log.close()
    first = json.loads(lines(path)[0])
    assert first["seq"] == 4 and first["prev"] == line_hash(lines(tmp_path / "audit.log.1")[-1])
    assert cli("verify", str(tmp_path / "audit.log.1"), str(path)).returncode == 0
    alone = cli("verify", str(path))
    assert alone.returncode == 0 and "give the previous file first" in alone.stdout
    # Out of order, the link is seen broken.
    assert cli("verify", str(path), str(tmp_path / "audit.log.1")).returncode == 1


def test_rename_rotation_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = trail(path, 3)
    os.rename(path, tmp_path / "audit.log.1")  # logrotate create: the writer notices the new file
    log.write("decision", call_id="after")
    log.close()
    assert path.exists() and json.loads(lines(path)[0])["seq"] == 4
    assert verify([str(tmp_path / "audit.log.1"), str(path)]).ok


def test_a_removed_rotated_file_is_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = trail(path, 2)
    for suffix in (".2", ".1"):
        os.rename(path, str(path) + suffix)
        log.write("decision", call_id=suffix)
    log.close()
    assert verify([str(path) + ".2", str(path) + ".1", str(path)]).ok
    result = verify([str(path) + ".2", str(path)])
    assert not result.ok and "removed" in result.problem


def _writer(path: str, name: str, count: int, start: Any) -> None:
    log = AuditLog.open(path)
    start.wait()  # both writers append at the same time
    for index in range(count):
        log.write("decision", call_id=f"{name}-{index}")
    log.close()


def test_two_processes_appending_to_one_file_keep_one_chain(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.log")
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_writer, args=(path, name, 1000, start)) for name in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    result = verify([path])
    assert result.ok, result.problem
    assert result.lines == 2000 and result.head_seq == 2000
    assert {json.loads(line)["call_id"].split("-")[0] for line in lines(Path(path))} == {"a", "b"}


def test_a_stale_writer_after_copytruncate_continues_from_the_shared_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    stale = AuditLog.open(str(path))
    stale.write("decision", call_id="stale-1")
    busy = trail(path, 5)  # another process writes after the stale one's last line
    shutil.copy(path, tmp_path / "audit.log.1")
    os.truncate(path, 0)
    stale.write("decision", call_id="stale-2")  # first line of the emptied file
    busy.write("decision", call_id="busy-last")
    stale.close()
    busy.close()
    assert json.loads(lines(path)[0])["seq"] == 7
    assert verify([str(tmp_path / "audit.log.1"), str(path)]).ok


def test_lines_older_than_the_chain_are_reported_not_failed(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"ts": "2026-01-01T00:00:00Z", "event": "decision"}\n')
    trail(path, 2).close()
    first = json.loads(lines(path)[1])
    assert first["seq"] == 1 and first["prev"] == line_hash(lines(path)[0])
    result = verify([str(path)])
    assert result.ok and result.unchained == 1


def test_verify_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("verify", str(tmp_path / "nope.log"))
    assert result.returncode == 2 and "nope.log" in result.stderr
