"""`npv-guard scrub` as a dialer integrator runs it: the installed command on real files, a real Redis."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from npv_guard.clock import parse_instant
from npv_guard.config import load_settings
from npv_guard.core.model import Attempt, Basis, CallRequest, Refusal, RefusalSource
from npv_guard.core.numbering import parse as parse_number
from npv_guard.journal import RefusalJournal
from npv_guard.scrub import BATCH
from npv_guard.scrub.batch import worker_count
from npv_guard.service import Guard
from npv_guard.store import ConsumerHasher, Store
from tests.support.redis_servers import RedisCluster, RedisServer, free_tcp_port

EXE = shutil.which("npv-guard", path=str(Path(sys.executable).parent)) or "npv-guard"
SECRET = "scrub-test-secret-0123456789"
ADDED = ["npv_verdict", "npv_callable", "npv_reasons", "npv_next_allowed_at", "npv_next_allowed_local"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, env={**base, **env}, timeout=120, check=False
    )  # fmt: skip


@dataclass
class Setup:
    url: str
    cluster: bool
    prefix: str
    config: Path
    journal: Path
    env: dict[str, str]

    def store(self) -> Store:
        return Store.connect(
            self.url, ConsumerHasher(SECRET), cluster=self.cluster, prefix=self.prefix, timeout=2.0
        )  # fmt: skip


def _setup(url: str, cluster: bool, tmp_path: Path) -> Setup:
    prefix = "scrub" + uuid.uuid4().hex[:8]
    journal = tmp_path / "refusals.journal"
    config = tmp_path / "guard.toml"
    config.write_text(
        f'hash_secret = "{SECRET}"\njournal_path = "{journal}"\n'
        f'[redis]\nurl = "{url}"\nkey_prefix = "{prefix}"\ncluster = {"true" if cluster else "false"}\n'
        "timeout_ms = 2000\n"
        '[[professionals]]\nid = "acme"\nnpvs = ["0162000001", "0162000002"]\n'
        '[[professionals]]\nid = "globex"\nnpvs = ["0270000001"]\n',
        encoding="utf-8",
    )
    return Setup(url, cluster, prefix, config, journal, {"NPV_GUARD_CONFIG": str(config)})


@pytest.fixture
def single(redis_server: RedisServer, tmp_path: Path) -> Setup:
    return _setup(redis_server.url, False, tmp_path)


def write(path: Path, text: str, *, encoding: str = "utf-8", bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return path


def rows_of(path: Path, delimiter: str = ",", encoding: str = "utf-8-sig") -> list[dict[str, str]]:
    with path.open(encoding=encoding, newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


# --- the varied sample: every kind of lead a call centre's list holds -------------------------------

# (id, phone, postcode): each is compared with Guard.check(record=False) at several instants.
SAMPLE = [
    ("consented", "06 12 34 56 01", ""),
    ("no-consent", "0612345602", ""),
    ("capped", "+33 6 12 34 56 03", ""),
    ("refused-after-opt-in", "0612345604", ""),
    ("refused-before-opt-in", "0612345605", ""),
    ("alsace-consented", "0612345606", "67000"),
    ("alsace", "0612345607", "68100"),
    ("martinique", "0696 12 34 56", ""),
    ("reunion-consented", "+262 692 12 34 57", "97400"),
    ("antilles-north", "0690 12 34 58", ""),
    ("paris-number-living-in-martinique", "0612345609", "97200"),
    ("bad-postcode", "0612345610", "XYZ"),
    ("outside-hours-consent", "0612345611", ""),
    ("journaled-refusal", "0612345612", ""),
    ("contract", "0612345613", ""),
    ("invalid", "12ab", ""),
    ("foreign", "+44 20 7946 0958", ""),
    ("service", "0800 123 456", ""),
    ("empty-phone", "", "75011"),
    ("duplicate", "06 12 34 56 01", ""),
]
INSTANTS = [
    "2026-06-02T11:00",  # Tuesday, before opt-in: most callable now
    "2026-06-03T02:00",  # night everywhere: every valid lead later
    "2026-04-03T11:00",  # Good Friday: a public holiday in Alsace-Moselle only
    "2026-12-01T11:00",  # after opt-in: consent needed; cap and refusals count
    "2026-12-05T11:00",  # Saturday
    "2026-12-25T11:00",  # Christmas
]


async def seed(setup: Setup) -> None:
    store = setup.store()
    guard = Guard(load_settings(str(setup.config), {}).policy(), store)
    try:
        for phone in ("0612345601", "0612345603", "0612345604", "0612345606", "+262692123457"):
            await guard.grant_consent("acme", phone, parse_instant("2026-03-01T12:00"), Basis.CONSENT, "web form")
        await guard.grant_consent("acme", "0612345611", parse_instant("2026-03-01T12:00"), Basis.CONSENT,
                                  "signed", outside_hours=True)  # fmt: skip
        await guard.grant_consent("acme", "0612345613", parse_instant("2026-03-01T12:00"), Basis.CONTRACT, "n° 7")
        await guard.grant_consent("acme", "0612345612", parse_instant("2026-03-01T12:00"), Basis.CONSENT, "web")
        capped = parse_number("0612345603").e164 or ""
        for day in ("24", "25", "26", "27"):
            at = parse_instant(f"2026-11-{day}T11:00")
            snapshot = await store.snapshot("acme", capped, at)
            assert await store.record_attempt("acme", capped, Attempt(at, f"call-{day}"), snapshot.version)
        await guard.record_refusal("acme", "0612345604", parse_instant("2026-11-20T11:00"), RefusalSource.AGENT)
        await guard.record_refusal("acme", "0612345605", parse_instant("2026-05-20T11:00"), RefusalSource.CONSUMER)
    finally:
        await store.close()


def journal_a_refusal(setup: Setup) -> None:
    """A refusal Redis never got: it waits in the local journal (as after an outage)."""
    digest = ConsumerHasher(SECRET).digest(parse_number("0612345612").e164 or "")
    refusal = Refusal(parse_instant("2026-05-25T11:00"), RefusalSource.AGENT)
    RefusalJournal(str(setup.journal)).add("acme", digest, refusal, None)  # before opt-in: no withdrawal


def sample_file(path: Path) -> Path:
    lines = ["id,nom,telephone,code_postal"]
    lines += [f'{lead},"Nom, {lead}",{phone},{postcode}' for lead, phone, postcode in SAMPLE]
    return write(path, "\n".join(lines) + "\n")


async def expected(setup: Setup, at: str, sector: str | None = None) -> dict[str, tuple[str, str, str, str]]:
    """What Guard.check(record=False), the guard's own path, says for each lead of the sample."""
    settings = load_settings(str(setup.config), {})
    journal = RefusalJournal(str(setup.journal)) if setup.journal.exists() else None
    store = setup.store()
    guard = Guard(settings.policy(), store, journal)
    result = {}
    try:
        for lead, phone, postcode in SAMPLE:
            request = CallRequest("0162000001", phone, parse_instant(at), "acme", postcode or None, sector)
            verdict = await guard.check(request, record=False)
            local = verdict.as_dict()["next_allowed_at"]
            result[lead] = (
                verdict.verdict, "|".join(verdict.codes), verdict.retry_after, local["local"] if local else ""
            )  # fmt: skip
    finally:
        await store.close()
    return result


def scrubbed(setup: Setup, leads: Path, out: Path, at: str, *extra: str) -> dict[str, tuple[str, str, str, str]]:
    result = run("scrub", str(leads), "--professional", "acme", "--out", str(out), "--at", at, "--json", *extra,
                 env=setup.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {
        row["id"]: (row["npv_verdict"], row["npv_reasons"], row["npv_next_allowed_at"], row["npv_next_allowed_local"])
        for row in rows_of(out)
    }


@pytest.mark.redis
def test_verdicts_are_guard_checks_on_a_varied_sample(single: Setup, tmp_path: Path) -> None:
    asyncio.run(seed(single))
    journal_a_refusal(single)
    leads = sample_file(tmp_path / "leads.csv")
    seen = set()
    for at in INSTANTS:
        got = scrubbed(single, leads, tmp_path / "out.csv", at)
        want = asyncio.run(expected(single, at))
        assert got == want, at
        seen |= {code for verdict in got.values() for code in verdict[1].split("|") if code}
    # The sample exercised what it is meant to, at one instant or another.
    assert seen >= {"OUTSIDE_HOURS", "WEEKEND", "PUBLIC_HOLIDAY", "FREQUENCY_CAP", "REFUSAL_BLOCK",
                    "NO_CONSENT", "CONSENT_WITHDRAWN", "CONSUMER_INVALID"}  # fmt: skip
    # A campaign id labels the run (its summary) and never changes a verdict.
    labelled = run("scrub", str(leads), "--professional", "acme", "--out", str(tmp_path / "labelled.csv"),
                   "--at", INSTANTS[0], "--campaign", "spring-26", "--json", env=single.env)  # fmt: skip
    assert labelled.returncode == 0 and json.loads(labelled.stdout)["campaign"] == "spring-26"
    scrubbed(single, leads, tmp_path / "plain.csv", INSTANTS[0])
    assert rows_of(tmp_path / "labelled.csv") == rows_of(tmp_path / "plain.csv")
    sector = "energy_renovation"
    got = scrubbed(single, leads, tmp_path / "out.csv", "2026-12-01T11:00", "--sector", sector)
    assert got == asyncio.run(expected(single, "2026-12-01T11:00", sector))
    assert got["contract"][0] == "allow" and "SECTOR_BANNED" in got["consented"][1]


@pytest.mark.redis
def test_a_journaled_refusal_counts(single: Setup, tmp_path: Path) -> None:
    asyncio.run(seed(single))
    leads = sample_file(tmp_path / "leads.csv")
    before = scrubbed(single, leads, tmp_path / "out.csv", "2026-06-02T11:00")
    journal_a_refusal(single)
    after = scrubbed(single, leads, tmp_path / "out.csv", "2026-06-02T11:00")
    assert before["journaled-refusal"][:2] == ("allow", "")
    assert after["journaled-refusal"][:2] == ("reject", "REFUSAL_BLOCK")
    # Blocked until 00:00 of R+61 (Saturday 2026-07-25, Paris time): Monday 10:00.
    assert after["journaled-refusal"][2] == "2026-07-27T08:00:00Z"


@pytest.mark.redis
def test_invalid_numbers_are_rejected_leads_not_errors(single: Setup, tmp_path: Path) -> None:
    leads = sample_file(tmp_path / "leads.csv")
    got = scrubbed(single, leads, tmp_path / "out.csv", "2026-06-02T11:00")
    for lead in ("invalid", "foreign", "service", "empty-phone", "bad-postcode"):
        assert got[lead] == ("reject", "CONSUMER_INVALID", "", ""), lead
    assert [row["npv_callable"] for row in rows_of(tmp_path / "out.csv") if row["id"] == "invalid"] == ["never"]
    # Duplicates are not merged: each row is decided (the same pair, so the same verdict).
    assert got["duplicate"] == got["consented"]
    assert len(rows_of(tmp_path / "out.csv")) == len(SAMPLE)


# --- bytes, delimiters, encodings -----------------------------------------------------------------

RECORDS = [
    '1,"Dupont, Jean",0612345671,75011,"appel, rappel ""urgent"""',
    "2,Lefèvre Hélène,+33 6 12 34 56 72,67000,  espaces gardés  ",
    '3,"Kœnig\r\nsur deux lignes",0696123456,,é',
    "4,Ïnvalide,pas un numéro,,",
    '5,"Zoé",00 33 6 12 34 56 75,"13001",',
]


@pytest.mark.redis
def test_columns_are_kept_byte_for_byte(single: Setup, tmp_path: Path) -> None:
    header = "id,nom,Téléphone,CP,note"
    # CRLF line breaks, a quoted line break, and no line break after the last record.
    leads = write(tmp_path / "leads.csv", header + "\r\n" + "\r\n".join(RECORDS))
    out = tmp_path / "out.csv"
    # 21:00 Paris: Martinique (15:00) now, metropolitan leads later, the invalid one never.
    result = run("scrub", str(leads), "--professional", "acme", "--out", str(out), "--at", "2026-06-02T21:00",
                 env=single.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert parsed[0] == [*header.split(","), *ADDED]
    by_id = {record.split(",", 1)[0]: record for record in RECORDS}
    rebuilt = (header + "," + ",".join(ADDED) + "\r\n").encode()
    for row in parsed[1:]:
        rebuilt += (by_id[row[0]] + "," + ",".join(row[-5:]) + "\r\n").encode()
    assert data == rebuilt
    assert [row[0] for row in parsed[1:]] == ["3", "1", "2", "5", "4"]  # now, later (all 10:00 Paris), never


@pytest.mark.redis
def test_semicolons_and_a_bom_as_french_tools_write_them(single: Setup, tmp_path: Path) -> None:
    text = (
        "Nom;Prénom;N° client;Téléphone;CP\r\nDupont;Émilie;A-1;06 12 34 56 78;67000\r\nMartin;Noël;A-2;0612345679;\r\n"
    )
    leads = write(tmp_path / "leads.csv", text, bom=True)
    out = tmp_path / "out.csv"
    # Good Friday: a holiday where the Alsace postcode places Émilie, not for Noël.
    result = run("scrub", str(leads), "--professional", "acme", "--out", str(out), "--at", "2026-04-03T11:00",
                 "--json", env=single.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfNom;Pr\xc3\xa9nom;N\xc2\xb0 client;T\xc3\xa9l\xc3\xa9phone;CP;npv_verdict;")
    lines = data[3:].decode().split("\r\n")
    assert lines[1] == "Martin;Noël;A-2;0612345679;;allow;now;;;"
    assert lines[2].startswith("Dupont;Émilie;A-1;06 12 34 56 78;67000;reject;later;PUBLIC_HOLIDAY;")
    assert json.loads(result.stdout)["columns"] == {"phone": "Téléphone", "postcode": "CP"}


@pytest.mark.redis
def test_windows_1252_needs_the_encoding_option(single: Setup, tmp_path: Path) -> None:
    leads = write(tmp_path / "leads.csv", "nom;tel\r\nLefèvre;0612345678\r\n", encoding="cp1252")
    out = tmp_path / "out.csv"
    refused = run("scrub", str(leads), "--professional", "acme", "--out", str(out), env=single.env)
    assert refused.returncode == 2
    assert "not utf-8" in refused.stderr and "--encoding cp1252" in refused.stderr
    assert not out.exists()
    done = run("scrub", str(leads), "--professional", "acme", "--out", str(out), "--encoding", "cp1252",
               "--at", "2026-06-02T11:00", env=single.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == (
        b"nom;tel;npv_verdict;npv_callable;npv_reasons;npv_next_allowed_at;npv_next_allowed_local\r\n"
        b"Lef\xe8vre;0612345678;allow;now;;;\r\n"
    )


# --- order and summary ----------------------------------------------------------------------------


@pytest.mark.redis
def test_sort_order_and_summary_before_opt_in(single: Setup, tmp_path: Path) -> None:
    asyncio.run(seed(single))
    text = "id;tel\nparis-1;0612340001\nbad;0000\ncapped;0612345603\nreunion;0692123456\nmartinique;0696123456\n" \
           "paris-2;0612340002\n\nrefused;0612345605\n;\n"  # fmt: skip
    leads = write(tmp_path / "leads.csv", text)
    out = tmp_path / "out.csv"
    # Tuesday 2026-06-02 21:00 Paris, before opt-in: Martinique (15:00) now; Réunion (23:00) from
    # 10:00 its time (06:00Z), before Paris's 10:00 (08:00Z); the refusal of 2026-05-20 blocks until
    # 00:00 of R+61, then 10:00 that Monday; nothing of the capped pair's November attempts exists yet.
    result = run("scrub", str(leads), "--professional", "acme", "--out", str(out), "--at", "2026-06-02T21:00",
                 "--json", env=single.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = rows_of(out, ";")
    assert [(row["id"], row["npv_callable"], row["npv_next_allowed_at"]) for row in rows] == [
        ("martinique", "now", ""),
        ("reunion", "later", "2026-06-03T06:00:00Z"),
        ("paris-1", "later", "2026-06-03T08:00:00Z"),
        ("capped", "later", "2026-06-03T08:00:00Z"),
        ("paris-2", "later", "2026-06-03T08:00:00Z"),
        ("refused", "later", "2026-07-20T08:00:00Z"),
        ("bad", "never", ""),
    ]
    assert rows[1]["npv_next_allowed_local"] == "2026-06-03T10:00:00+04:00"
    summary = json.loads(result.stdout)
    assert summary == {
        **summary,
        "leads": 7, "callable_now": 1, "callable_later": 5, "never": 1, "blank_lines_skipped": 2,
        "callable_later_by_day": {"2026-06-03": 4, "2026-07-20": 1},
        "reasons": {"OUTSIDE_HOURS": 5, "REFUSAL_BLOCK": 1, "CONSUMER_INVALID": 1},
        "professional": "acme", "caller": "+33162000001", "at": "2026-06-02T19:00:00Z",
    }  # fmt: skip
    human = run("scrub", str(leads), "--professional", "acme", "--out", str(out), "--at", "2026-06-02T21:00",
                env=single.env)  # fmt: skip
    assert "callable now" in human.stdout and "2026-07-20" in human.stdout and "never" in human.stdout


# --- read-only, failures, arguments ----------------------------------------------------------------


def _dump_everything(url: str) -> dict[bytes, bytes | None]:
    client = redis.Redis.from_url(url)
    try:
        return {key: client.dump(key) for key in client.scan_iter(count=1000)}
    finally:
        client.close()


@pytest.mark.redis
def test_records_nothing(single: Setup, tmp_path: Path) -> None:
    asyncio.run(seed(single))
    leads = sample_file(tmp_path / "leads.csv")
    before = _dump_everything(single.url)
    for at in ("2026-06-02T11:00", "2026-12-01T11:00"):  # allowed leads, before and after opt-in
        got = scrubbed(single, leads, tmp_path / "out.csv", at)
        assert any(verdict[0] == "allow" for verdict in got.values())
    assert _dump_everything(single.url) == before  # every key, every value

    async def attempts() -> int:
        store = single.store()
        try:
            guard = Guard(load_settings(str(single.config), {}).policy(), store)
            _, history = await guard.history("acme", "0612345601")
        finally:
            await store.close()
        return len(history.state.attempts)

    assert asyncio.run(attempts()) == 0


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_redis_down_fails_closed_without_output(tmp_path: Path) -> None:
    setup = _setup(f"redis://127.0.0.1:{free_tcp_port()}/0", False, tmp_path)
    leads = sample_file(tmp_path / "leads.csv")
    out = tmp_path / "out.csv"
    result = run("scrub", str(leads), "--professional", "acme", "--out", str(out), env=setup.env)
    assert result.returncode == 1
    assert "no output written" in result.stderr
    assert not out.exists() and _leftovers(tmp_path) == []
    out.write_text("yesterday's list\n")  # a previous output stays as it was
    assert run("scrub", str(leads), "--professional", "acme", "--out", str(out), env=setup.env).returncode == 1
    assert out.read_text() == "yesterday's list\n"


def test_redis_lost_mid_run_leaves_no_partial_file(tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        setup = _setup(server.url, False, tmp_path)
        lines = ["tel"] + [f"06{n:08d}" for n in range(12_340_000, 12_340_000 + 150_000)]
        leads = write(tmp_path / "leads.csv", "\n".join(lines) + "\n")
        out = tmp_path / "out.csv"
        base = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
        process = subprocess.Popen(
            [EXE, "scrub", str(leads), "--professional", "acme", "--out", str(out), "--at", "2026-06-02T11:00"],
            env={**base, **setup.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not _leftovers(tmp_path) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.005)  # the temporary output exists: the scrub is past its first Redis PING
        server.kill()
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 1, stderr
        assert "no output written" in stderr
        assert not out.exists() and _leftovers(tmp_path) == []
    finally:
        server.cleanup()


NO_DIRECTORY = '[[professionals]]\nid = "acme"\nnpvs = []\n'


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-file", "no such file"),
        ("directory", "is a directory"),
        ("out-is-input", "is the input file"),
        ("out-directory-missing", "does not exist"),
        ("unknown-professional", "'nobody' is not configured (known: acme, globex)"),
        ("no-caller", "give --caller"),
        ("no-phone-column", "no phone column found among 'nom', 'ville'"),
        ("two-phone-columns", "several columns could be meant ('telephone', 'mobile')"),
        ("phone-column-not-found", "no column 'gsm'"),
        ("empty-file", "empty file"),
        ("bad-instant", "--at"),
        ("already-scrubbed", "already has npv_verdict"),
        ("unknown-encoding", "unknown encoding"),
        ("bad-campaign", "--campaign 'spring 26' is malformed"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(case: str, message: str, tmp_path: Path) -> None:
    setup = _setup("redis://127.0.0.1:1/0", False, tmp_path)  # never reached: arguments come first
    good = write(tmp_path / "leads.csv", "nom,telephone\nA,0612345678\n")
    out = tmp_path / "out.csv"
    args = [str(good), "--professional", "acme", "--out", str(out)]
    env = setup.env
    if case == "missing-file":
        args[0] = str(tmp_path / "absent.csv")
    elif case == "directory":
        args[0] = str(tmp_path)
    elif case == "out-is-input":
        args[4] = str(tmp_path / "." / "leads.csv")
    elif case == "out-directory-missing":
        args[4] = str(tmp_path / "nowhere" / "out.csv")
    elif case == "unknown-professional":
        args[2] = "nobody"
    elif case == "no-caller":
        (tmp_path / "bare.toml").write_text(f'hash_secret = "{SECRET}"\n' + NO_DIRECTORY)
        env = {"NPV_GUARD_CONFIG": str(tmp_path / "bare.toml")}
    elif case == "no-phone-column":
        args[0] = str(write(tmp_path / "x.csv", "nom,ville\nA,Paris\n"))
    elif case == "two-phone-columns":
        args[0] = str(write(tmp_path / "x.csv", "telephone,mobile\n0612345678,0612345679\n"))
    elif case == "phone-column-not-found":
        args += ["--phone-column", "gsm"]
    elif case == "empty-file":
        args[0] = str(write(tmp_path / "x.csv", ""))
    elif case == "bad-instant":
        args += ["--at", "demain"]
    elif case == "already-scrubbed":
        args[0] = str(write(tmp_path / "x.csv", "telephone,npv_verdict\n0612345678,allow\n"))
    elif case == "unknown-encoding":
        args += ["--encoding", "klingon"]
    elif case == "bad-campaign":
        args += ["--campaign", "spring 26"]
    result = run("scrub", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_no_professional_directory_needs_caller_but_takes_any_id(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {
        "NPV_GUARD_HASH_SECRET": SECRET,
        "NPV_GUARD_REDIS_URL": redis_server.url,
        "NPV_GUARD_JOURNAL_PATH": str(tmp_path / "j"),
        "NPV_GUARD_REDIS_KEY_PREFIX": "nodir" + uuid.uuid4().hex[:6],
    }
    leads = write(tmp_path / "leads.csv", "tel\n0612345678\n")
    out = tmp_path / "out.csv"
    result = run("scrub", str(leads), "--professional", "acme", "--out", str(out), "--caller", "01 62 00 00 01",
                 "--at", "2026-06-02T11:00", "--json", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["callable_now"] == 1
    mobile = run("scrub", str(leads), "--professional", "acme", "--out", str(out), "--caller", "0612345670",
                 "--at", "2026-06-02T11:00", env=env)  # fmt: skip
    assert mobile.returncode == 0
    assert "every lead is rejected for the caller ID" in mobile.stderr
    assert rows_of(out)[0]["npv_reasons"] == "CALLER_NOT_NPV"


# --- Redis Cluster --------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.cluster
def test_cluster_mode_gives_the_same_verdicts(redis_cluster: RedisCluster, tmp_path: Path) -> None:
    setup = _setup(redis_cluster.url, True, tmp_path)
    asyncio.run(seed(setup))
    journal_a_refusal(setup)
    leads = sample_file(tmp_path / "leads.csv")
    for at in ("2026-06-03T02:00", "2026-12-01T11:00"):
        assert scrubbed(setup, leads, tmp_path / "out.csv", at) == asyncio.run(expected(setup, at))


def test_progress_bar_only_on_a_terminal() -> None:
    from npv_guard.progress import Progress  # noqa: PLC0415 - a unit of the command, tested alone

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown, hidden = Terminal(), io.StringIO()
    for err in (shown, hidden):
        progress = Progress(err)
        progress._start -= 2  # two seconds into the run
        progress.show(50_000, "leads", 0.5)
        progress.done()
    assert "50%" in shown.getvalue() and "50,000 leads" in shown.getvalue() and shown.getvalue().endswith("\n")
    assert hidden.getvalue() == ""


@pytest.mark.redis
def test_worker_processes_give_the_same_file_as_one_process(single: Setup, tmp_path: Path) -> None:
    # A file past PARALLEL_BYTES is decided on worker processes: the sample, many times over, with
    # a long comment so that a few batches make the size; each copy's id keeps its kind.
    asyncio.run(seed(single))
    journal_a_refusal(single)
    note = "x" * 480
    lines = ["id,nom,telephone,code_postal,commentaire"]
    for copy in range(2 * BATCH // len(SAMPLE) + 1):
        lines += [f'{lead}#{copy},"Nom, {lead}",{phone},{postcode},{note}' for lead, phone, postcode in SAMPLE]
    leads = write(tmp_path / "leads.csv", "\n".join(lines) + "\n")
    if worker_count(leads.stat().st_size) == 0:
        pytest.skip("one core: no worker processes")
    one_process = [
        sys.executable, "-c",
        "import sys, npv_guard.scrub.batch as b; b.PARALLEL_BYTES = 1 << 62; "
        "from npv_guard.cli import main; main(sys.argv[1:])",
    ]  # fmt: skip
    for at in ("2026-06-02T11:00", "2026-12-01T11:00"):  # the journaled refusal counts; consent counts
        _same_file_and_verdicts(single, leads, len(lines) - 1, at, one_process)


def _same_file_and_verdicts(single: Setup, leads: Path, count: int, at: str, one_process: list[str]) -> None:
    tmp_path = leads.parent
    base = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    outputs = {}
    for name, command in (("workers", [EXE]), ("one", one_process)):
        out = tmp_path / f"out-{name}.csv"
        result = subprocess.run(
            [*command, "scrub", str(leads), "--professional", "acme", "--out", str(out), "--at", at],
            capture_output=True, text=True, env={**base, **single.env}, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs[name] = out.read_bytes()
    assert outputs["workers"] == outputs["one"]
    want = asyncio.run(expected(single, at))
    rows = rows_of(tmp_path / "out-workers.csv")
    assert len(rows) == count
    for row in rows:
        got = (row["npv_verdict"], row["npv_reasons"], row["npv_next_allowed_at"], row["npv_next_allowed_local"])
        assert got == want[row["id"].split("#")[0]], row["id"]
