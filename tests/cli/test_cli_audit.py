"""Every write of the command line leaves one audit line, in the chain the guards write too;
`audit find` and `evidence` read them back by the consumer's keyed hash."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from npv_guard.audit import AuditLog, text_digest, verify
from npv_guard.clock import parse_instant
from npv_guard.core.model import Refusal, RefusalSource
from npv_guard.journal import RefusalJournal
from npv_guard.service import Guard
from npv_guard.store import ConsumerHasher, Store
from tests.cli.test_cli import SECRET, run
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

CONSUMER = "+33612345678"
DIGEST = ConsumerHasher(SECRET).digest(CONSUMER)
CHECK = ["check", "--caller", "0162000001", "--callee", "06 12 34 56 78", "--professional", "acme", "--json"]
PAIR = ["--professional", "acme", "--callee", "0612345678"]


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path) -> dict[str, str]:
    return {
        "NPV_GUARD_REDIS_URL": redis_server.url,
        "NPV_GUARD_HASH_SECRET": SECRET,
        "NPV_GUARD_REDIS_KEY_PREFIX": "clia" + uuid.uuid4().hex[:8],
        "NPV_GUARD_LOG_AUDIT_FILE": str(tmp_path / "audit.log"),
    }


def audit_lines(env: dict[str, str], event: str | None = None) -> list[dict[str, object]]:
    path = Path(env["NPV_GUARD_LOG_AUDIT_FILE"])
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [line for line in lines if event is None or line["event"] == event]


def test_every_cli_write_is_one_audit_line_in_one_chain(env: dict[str, str]) -> None:
    assert run("consent", "grant", *PAIR, "--at", "2026-09-01T12:00", "--proof", "web form 7", env=env).returncode == 0
    tuesday = {**env, "NPV_GUARD_NOW": "2026-11-16T11:00"}  # writes are dated by the guard's clock
    checked = run(*CHECK, "--record", "--campaign", "spring-26", "--lead", "L-1", env=tuesday)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["recorded"] is True  # stdout is still one JSON object
    assert run(*CHECK, "--at", "2026-11-16T12:00", env=env).returncode == 0  # a query: not audited
    refused = run("refusal", "record", *PAIR, "--source", "agent", "--campaign", "spring-26",
                  env={**env, "NPV_GUARD_NOW": "2026-11-16T11:05"})  # fmt: skip
    assert refused.returncode == 0, refused.stderr
    later = {**env, "NPV_GUARD_NOW": "2026-11-20T12:00"}
    assert run("consent", "withdraw", *PAIR, "--proof", "letter", env=later).returncode == 0

    lines = audit_lines(env)
    assert [line["event"] for line in lines] == ["consent", "decision", "refusal", "consent"]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    assert all(line["consumer"] == DIGEST and line["professional"] == "acme" for line in lines)
    grant, decision, refusal, withdrawal = lines
    assert grant["granted"] is True and grant["basis"] == "consent" and grant["mode"] == "cli"
    assert grant["proof_sha256"] == text_digest("web form 7")
    assert decision["mode"] == "cli" and decision["verdict"] == "allow" and decision["recorded"] is True
    assert (decision["campaign"], decision["lead"]) == ("spring-26", "L-1")
    assert refusal["source"] == "agent" and refusal["recorded"] is True and refusal["campaign"] == "spring-26"
    assert withdrawal["granted"] is False and withdrawal["proof_sha256"] == text_digest("letter")
    text = Path(env["NPV_GUARD_LOG_AUDIT_FILE"]).read_text()
    assert "612345678" not in text and "web form" not in text  # hashes only, no number, no proof
    assert verify([env["NPV_GUARD_LOG_AUDIT_FILE"]]).ok

    history = json.loads(run("history", *PAIR, "--json", env=env).stdout)
    assert history["attempts"][0]["campaign"] == "spring-26" and history["attempts"][0]["lead"] == "L-1"
    assert history["attempts"][0]["call_id"] == decision["call_id"]


def test_malformed_campaign_is_a_usage_error_and_nothing_is_written(env: dict[str, str]) -> None:
    bad = run(*CHECK, "--record", "--campaign", "spring 26; DROP", env={**env, "NPV_GUARD_NOW": "2026-11-16T11:00"})
    assert bad.returncode == 2 and "--campaign" in bad.stderr and bad.stderr.count("\n") == 1
    assert run(*CHECK, "--record", "--lead", "x" * 65, env=env).returncode == 2
    assert audit_lines(env) == []


def test_without_an_audit_file_the_line_goes_to_stderr(env: dict[str, str]) -> None:
    env = {**env, "NPV_GUARD_LOG_AUDIT_FILE": ""}
    result = run("consent", "grant", *PAIR, "--at", "2026-09-01T12:00", "--json", env=env)
    assert result.returncode == 0
    assert json.loads(result.stdout)["recorded"] is True
    assert json.loads(result.stderr.splitlines()[-1])["event"] == "consent"


def test_consent_import_writes_a_line_per_row_and_one_per_file(env: dict[str, str], tmp_path: Path) -> None:
    rows = tmp_path / "consents.csv"
    rows.write_text(
        "number,date,basis,proof\n0612345678,2026-09-01,consent,form A\nbad,2026-09-01,consent,x\n"
        "0612345679,2026-09-02,contract,contract 9\n",
        encoding="utf-8",
    )
    result = run("consent", "import", "--professional", "acme", str(rows), "--json", env=env)
    assert result.returncode == 1 and json.loads(result.stdout)["imported"] == 2
    consents = audit_lines(env, "consent")
    assert [line["mode"] for line in consents] == ["cli-import", "cli-import"]
    assert consents[0]["consumer"] == DIGEST and consents[0]["proof_sha256"] == text_digest("form A")
    (summary,) = audit_lines(env, "consent_import")
    assert summary["imported"] == 2 and summary["rejected"] == 1 and summary["complete"] is True
    assert summary["text_sha256"] == text_digest(rows.read_text(encoding="utf-8"))
    assert {line["import_id"] for line in consents} == {summary["import_id"]}

    found = run("audit", "find", "--callee", "06 12 34 56 78", "--professional", "acme", "--json",
                env["NPV_GUARD_LOG_AUDIT_FILE"], env=env)  # fmt: skip
    assert found.returncode == 0, found.stderr
    (hit,) = [json.loads(line) for line in found.stdout.splitlines()]
    assert hit["line"] == 1 and hit["entry"]["proof_sha256"] == text_digest("form A")
    nobody = run("audit", "find", "--callee", "0699999999", env["NPV_GUARD_LOG_AUDIT_FILE"], env=env)
    assert nobody.returncode == 1 and nobody.stdout == ""


def test_audit_find_knows_the_previous_secret(env: dict[str, str]) -> None:
    old = {**env, "NPV_GUARD_HASH_SECRET": "the-old-secret-0123456789"}
    assert run("consent", "grant", *PAIR, "--at", "2026-09-01T12:00", env=old).returncode == 0
    rotated = {**env, "NPV_GUARD_PREVIOUS_HASH_SECRETS": "the-old-secret-0123456789"}
    found = run("audit", "find", "--callee", "0612345678", env["NPV_GUARD_LOG_AUDIT_FILE"], env=rotated)
    assert found.returncode == 0 and found.stdout.count("\n") == 1


def test_journal_replay_is_audited(env: dict[str, str], redis_server: RedisServer, tmp_path: Path) -> None:
    hasher = ConsumerHasher(SECRET)
    journal = RefusalJournal(str(tmp_path / "refusals.journal"), writer=True)
    refusal = Refusal(parse_instant("2026-11-16T11:05"), RefusalSource.CONSUMER, "call-9")
    entry = journal.add("acme", hasher.digest(CONSUMER), refusal, None)
    audit = AuditLog.open(env["NPV_GUARD_LOG_AUDIT_FILE"])

    async def replay() -> int:
        store = Store.connect(redis_server.url, hasher, prefix=env["NPV_GUARD_REDIS_KEY_PREFIX"], timeout=2)
        try:
            return await Guard(None, store, journal).replay_journal(audit.replayed)  # type: ignore[arg-type]
        finally:
            await store.close()

    assert asyncio.run(replay()) == 1
    (line,) = audit_lines(env)
    assert line["event"] == "journal_replay" and line["journal_id"] == entry.id and line["consumer"] == DIGEST
    assert line["call_id"] == "call-9" and line["source"] == "consumer"


def test_evidence_pack_ties_history_to_audit_lines(env: dict[str, str], tmp_path: Path) -> None:
    proof = '<script>alert("x")</script> web form'
    run("consent", "grant", *PAIR, "--at", "2026-09-01T12:00", "--proof", proof, env=env)
    for day in ("16", "17"):
        run(*CHECK, "--record", "--campaign", "spring-26", env={**env, "NPV_GUARD_NOW": f"2026-11-{day}T11:00"})
    run("refusal", "record", *PAIR, "--source", "consumer", env={**env, "NPV_GUARD_NOW": "2026-11-17T11:05"})
    page = tmp_path / "evidence.html"
    result = run("evidence", *PAIR, "--at", "2026-11-18T10:00", "--json", "--html", str(page), env=env)
    assert result.returncode == 0, result.stderr
    pack = json.loads(result.stdout)
    assert pack["consumer"] == DIGEST and pack["audit"]["chain_ok"] is True
    grant, withdrawal = pack["consents"]  # the refusal withdrew the consent
    assert grant["proof"] == proof and grant["basis"] == "consent"
    assert grant["validity"] == {"in_force": False, "status": "withdrawn", "ended_at": "2026-11-17T10:05:00Z"}
    assert grant["audit"][0]["ref"].endswith("audit.log:1") and grant["audit"][0]["seq"] == 1
    assert withdrawal["granted"] is False
    assert [a["campaign"] for a in pack["attempts"]] == ["spring-26", "spring-26"]
    assert all(len(a["audit"]) == 1 and a["audit"][0]["chain_ok"] for a in pack["attempts"])
    assert len(pack["refusals"]) == 1 and pack["refusals"][0]["audit"][0]["seq"] == 4
    assert [d["verdict"] for d in pack["decisions"]] == ["allow", "allow"]
    text = page.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "spring-26" in text
    human = run("evidence", *PAIR, "--at", "2026-11-18T10:00", env=env)
    assert human.returncode == 0 and "audit chain: intact" in human.stdout and "attempts: 2" in human.stdout

    # An edited line: the pack says the chain is broken from that line on, and exits 1.
    path = Path(env["NPV_GUARD_LOG_AUDIT_FILE"])
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"allow"', '"reject"')
    path.write_text("".join(lines))
    broken = run("evidence", *PAIR, "--at", "2026-11-18T10:00", "--json", env=env)
    assert broken.returncode == 1
    pack = json.loads(broken.stdout)
    assert pack["audit"]["chain_ok"] is False and "audit.log:2" in pack["audit"]["problem"]
    assert pack["consents"][0]["audit"][0]["chain_ok"] is True  # line 1, before the edit
    assert [a["audit"][0]["chain_ok"] for a in pack["attempts"]] == [False, False]


def test_a_refusal_redis_did_not_take_is_audited_as_lost(env: dict[str, str]) -> None:
    down = {**env, "NPV_GUARD_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run("refusal", "record", *PAIR, env={**down, "NPV_GUARD_NOW": "2026-11-16T11:05"})
    assert result.returncode == 1 and "nothing was recorded" in result.stderr
    (line,) = audit_lines(env, "refusal")
    assert line["recorded"] is False and line["consumer"] == DIGEST and "redis" in line["error"]


def test_a_lead_id_holding_the_consumers_number_is_refused(env: dict[str, str]) -> None:
    result = run(*CHECK, "--record", "--lead", "lead-0612345678", env=env)
    assert result.returncode == 2 and "consumer's number" in result.stderr and "0612345678" not in result.stderr
    assert audit_lines(env) == []
