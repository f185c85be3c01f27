"""kill -9 at random instants of a journal writer's life, over many rounds: every refusal it
acknowledged (printed after `add` returned) and did not start to replay is found when the
journal is opened again, and no replay it acknowledged (`done` returned) comes back.

The writers are forked from one process that has already imported the journal, so that a round
costs a fork, not an interpreter start. Some rounds also leave torn bytes at the end of the file,
what a crash in the middle of a write leaves (a kill between two syscalls rarely does).
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from npv_guard.journal import RefusalJournal

ROUNDS = 200
BUDGET_S = 90.0  # bounds the test's length on a slow machine; nothing is asserted about time

WRITERS = textwrap.dedent("""
    import os, sys
    from datetime import UTC, datetime, timedelta
    from npv_guard.core.model import Refusal, RefusalSource
    from npv_guard.journal import RefusalJournal

    def say(text):
        os.write(1, (text + "\\n").encode())

    path = sys.argv[1]
    for line in sys.stdin:
        round_ = line.strip()
        pid = os.fork()
        if pid == 0:
            journal = RefusalJournal(path, writer=True, peers=False)
            say(f"{round_} ready {os.getpid()}")
            count = 0
            while True:
                at = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=count)
                entry = journal.add("acme", "ab" * 16, Refusal(at, RefusalSource.AGENT, "c"), None)
                say(f"{round_} add {entry.id}")
                count += 1
                if count % 3 == 0:
                    for entry in journal.pending()[:2]:
                        say(f"{round_} replaying {entry.id}")  # from here it may be gone or not
                        journal.done(entry)
                        say(f"{round_} done {entry.id}")
        os.waitpid(pid, 0)
        say(f"{round_} exit")
""")

TORN = json.dumps({"op": "refusal", "id": "f" * 32, "professional": "acme", "digest": "cd" * 16,
                   "at": "2026-12-01T10:00:00+00:00", "source": "agent", "call_id": ""})  # fmt: skip


def test_every_acknowledged_refusal_survives_kill_9_at_any_instant(tmp_path: Path) -> None:
    path = tmp_path / "refusals.journal"
    chance = random.Random(17)
    writers = subprocess.Popen(
        [sys.executable, "-c", WRITERS, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
    )  # fmt: skip
    assert writers.stdin is not None and writers.stdout is not None
    acknowledged: set[str] = set()
    replaying: set[str] = set()
    replayed: set[str] = set()
    seen = {"add": acknowledged, "replaying": replaying, "done": replayed}
    rounds = waited = 0
    deadline = time.monotonic() + BUDGET_S
    try:
        while rounds < ROUNDS and time.monotonic() < deadline:
            writers.stdin.write(f"{rounds}\n")
            ready = writers.stdout.readline().split()
            assert ready[:2] == [str(rounds), "ready"], ready
            # Let it acknowledge a few refusals (from the fourth on, a replay has run), then kill
            # it a random instant later: in a write, an fsync, a compaction, between two of them.
            adds = chance.randrange(0, 6)
            waited += adds
            while adds:
                line = writers.stdout.readline().split()
                seen[line[1]].add(line[2])
                adds -= line[1] == "add"
            time.sleep(chance.uniform(0, 0.005))
            os.kill(int(ready[2]), signal.SIGKILL)
            while (line := writers.stdout.readline().split()) != [str(rounds), "exit"]:
                assert line[0] == str(rounds), line
                seen[line[1]].add(line[2])
            if chance.random() < 0.3:
                with path.open("ab") as handle:
                    handle.write(TORN[: chance.randrange(1, len(TORN) - 1)].encode())
            pending = {entry.id for entry in RefusalJournal(str(path), peers=False).pending()}
            lost = acknowledged - replaying - pending
            assert not lost, f"round {rounds}: acknowledged, never replayed, yet lost: {lost}"
            assert not pending & replayed, f"round {rounds}: replayed yet pending again {pending & replayed}"
            rounds += 1
    finally:
        writers.stdin.close()
        writers.kill()
        writers.wait(10)
    assert rounds >= 50, rounds  # enough rounds to mean something, however slow the machine
    assert len(acknowledged) >= waited and replayed  # the writers did work between the kills
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
