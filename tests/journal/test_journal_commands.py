"""`npv-guard check` on the journals of the host: bad bytes are skipped, peers count too."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from npv_guard.clock import parse_instant
from npv_guard.core.model import Refusal, RefusalSource
from npv_guard.journal import RefusalJournal
from npv_guard.store import ConsumerHasher
from tests.cli.test_cli import run
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

SECRET = "journal-cli-secret-0123456789"
CHECK = ["check", "--caller", "0162000001", "--callee", "0612345678", "--professional", "acme",
         "--at", "2026-11-17T11:00", "--json"]  # fmt: skip


def journaled(path: Path) -> None:
    refusal = Refusal(parse_instant("2026-11-16T11:05"), RefusalSource.AGENT, "call-1")
    journal = RefusalJournal(str(path), writer=True)
    journal.add("acme", ConsumerHasher(SECRET).digest("+33612345678"), refusal, None)
    journal.close()


def environment(redis_server: RedisServer, journal: Path) -> dict[str, str]:
    return {
        "NPV_GUARD_REDIS_URL": redis_server.url,
        "NPV_GUARD_HASH_SECRET": SECRET,
        "NPV_GUARD_REDIS_KEY_PREFIX": "jc" + uuid.uuid4().hex[:8],
        "NPV_GUARD_JOURNAL_PATH": str(journal),
    }


def test_check_skips_an_invalid_utf8_line(redis_server: RedisServer, tmp_path: Path) -> None:
    """One bad byte used to make `check` print a traceback (and serve/agi crash at start)."""
    path = tmp_path / "refusals.journal"
    path.write_bytes(b'{"op": "refusal", "id": "\xff"}\n')
    journaled(path)
    result = run(*CHECK, env=environment(redis_server, path))
    assert result.returncode == 1, result.stderr
    assert {r["code"] for r in json.loads(result.stdout)["reasons"]} >= {"REFUSAL_BLOCK"}
    assert "Traceback" not in result.stderr


def test_check_counts_the_refusals_of_a_peers_journal(redis_server: RedisServer, tmp_path: Path) -> None:
    """Another guard of the host journaled it (its own file, same directory): it blocks here too."""
    env = environment(redis_server, tmp_path / "refusals.journal")
    before = run(*CHECK, env=env)
    assert "REFUSAL_BLOCK" not in before.stdout, before.stderr
    journaled(tmp_path / "agi.journal")
    blocked = run(*CHECK, env=env)
    assert blocked.returncode == 1, blocked.stderr
    assert {r["code"] for r in json.loads(blocked.stdout)["reasons"]} >= {"REFUSAL_BLOCK"}
