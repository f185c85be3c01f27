"""Lead-list scrubbing at scale: `python -m bench.scrub [--rows N] [--profile]`.

Starts its own redis-server (persistence off) on a free loopback port, stores the history of 5% of
the pairs (consents, attempts up to the cap, refusals) through the guard's own Store, writes a
lead file the way a French CRM exports one (`;`, UTF-8 with a BOM, accents, quoted fields, some
invalid, foreign and overseas numbers, some duplicates), then runs the real `npv-guard scrub`
command as a subprocess at two instants:

- day:   Tuesday 2026-06-02 11:00 Paris, most leads callable now (metropolitan), overseas ones later;
- night: Wednesday 2026-06-03 02:00 Paris, every territory outside its hours, so every valid lead
         gets a `next_allowed_at` (the path that costs most per lead).

Both instants are before the opt-in regime (2026-08-11), so a lead without consent is not "never"
for that reason alone. Reports leads/s and seconds for each, spot-checks a sample of the output
against Guard.check(record=False), and writes bench/results/scrub.json. The machine is shared:
the load average before and after each run is recorded with it.

Just before each scrub, the floor: the same snapshot reads the scrub needs (the batch snapshot
script, one run per 500 pairs, every pair's four keys; see Store.read_snapshots) pipelined raw with
redis-py in batches of the scrub's size, on keys computed beforehand, with no reply decoded and no
decision. Until issue #20 the scrub sent one EXISTS per pair and the snapshot script per pair with
keys, and so did the floor: this floor is much faster (a few commands per batch, not one per lead). The target
(issue #20): 1 million leads in under 60 s, or at least 0.5x the floor's rate in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from bench import workload
from npv_guard.core.model import Attempt, Basis, CallRequest, ConsentEvent, Policy, Professional, RefusalSource
from npv_guard.core.numbering import parse as parse_number
from npv_guard.scrub import BATCH
from npv_guard.service import Guard
from npv_guard.store import ConsumerHasher, Store
from tests.support.redis_servers import RedisServer

PARIS = ZoneInfo("Europe/Paris")
RESULTS = Path(__file__).parent / "results"
SECRET = "bench-scrub-secret-0123456789"
PROFESSIONAL = Professional("acme", "ACME", "123456789", ("0162000001",))
POLICY = Policy(professionals=(PROFESSIONAL,))
CALLER = "0162000001"
INSTANTS = {
    "day": datetime(2026, 6, 2, 11, 0, tzinfo=PARIS),
    "night": datetime(2026, 6, 3, 2, 0, tzinfo=PARIS),
}
STATE_SHARE = 0.05
SEED = 20260602
TARGET_SECONDS_PER_MILLION = 60.0
TARGET_FLOOR_RATIO = 0.5

_FIRST = ("Émilie", "Jean", "Zoé", "François", "Anaïs", "Loïc", "Hélène", "Noël", "Mathéo", "Inès")
_LAST = ("Dupont", "Müller", "Lefèvre", "N'Diaye", "Gauthier", "Bérénice", "O'Neil", "Da Silva", "Kœnig")
_CITIES = (
    ("75011", "Paris"), ("13001", "Marseille"), ("69003", "Lyon"), ("67000", "Strasbourg"),
    ("68100", "Mulhouse"), ("57000", "Metz"), ("33000", "Bordeaux"), ("59000", "Lille"), ("", ""),
)  # fmt: skip
_INVALID = ("n/a", "", "+44 20 7946 0958", "0800 123 456", "12345", "06 12 34", "+1 415 555 0100", "tel: inconnu")


@dataclass(frozen=True)
class Leads:
    path: Path
    rows: int
    stateful: list[str]  # national numbers of the pairs with stored history
    kinds: dict[str, int]


def generate(path: Path, rows: int) -> Leads:
    """The lead file: 2% invalid or foreign, 1% duplicates, the rest as workload.consumer_numbers."""
    rng = random.Random(SEED)
    consumers = workload.consumer_numbers(rows, SEED)
    kinds = {"valid": 0, "invalid": 0, "duplicate": 0}
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
        writer.writerow(["id", "prénom", "nom", "téléphone", "code_postal", "ville", "commentaire"])
        for i in range(rows):
            roll = rng.random()
            national = consumers[i]
            if roll < 0.02:
                phone = rng.choice(_INVALID)
                kinds["invalid"] += 1
            elif roll < 0.03 and i:
                national = consumers[rng.randrange(i)]
                phone = workload._spell_national(national, rng.randrange(4))
                kinds["duplicate"] += 1
            else:
                phone = workload._spell_national(national, rng.randrange(4))
                kinds["valid"] += 1
            postcode, city = rng.choice(_CITIES) if national[:3] not in ("069", "063") else ("", "")
            note = rng.choice(("", "", "rappeler après 18h, merci", 'a dit "peut-être"', "client; fidèle"))
            writer.writerow([i + 1, rng.choice(_FIRST), rng.choice(_LAST), phone, postcode, city, note])
    stateful = consumers[: int(rows * STATE_SHARE)]
    return Leads(path, rows, stateful, kinds)


async def seed(url: str, prefix: str, numbers: list[str]) -> dict[str, int]:
    """History for the given consumers, through the guard's own Store: 60% consent only, 15% consent
    and 4 attempts (capped on 2026-06-02), 15% consent and 2 attempts, 10% a refusal."""
    store = Store.connect(url, ConsumerHasher(SECRET), prefix=prefix, timeout=5.0)
    guard = Guard(POLICY, store)
    consent = ConsentEvent(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), True, Basis.CONSENT, "formulaire web")
    counts = {"consent": 0, "capped": 0, "two_attempts": 0, "refused": 0}
    try:
        e164 = [parse_number(n).e164 or "" for n in numbers]
        for start in range(0, len(e164), 2000):
            await store.record_consents("acme", [(n, consent) for n in e164[start : start + 2000]])

        async def history(index: int, consumer: str) -> None:
            roll = index % 20
            if roll < 3:  # capped: four attempts in the 30 days before 2026-06-02
                days = (1, 4, 8, 12)
                counts["capped"] += 1
            elif roll < 6:
                days = (3, 9)
                counts["two_attempts"] += 1
            elif roll < 8:
                await guard.record_refusal(
                    "acme", consumer, datetime(2026, 5, 12, 9, 30, tzinfo=UTC), RefusalSource.AGENT
                )
                counts["refused"] += 1
                return
            else:
                counts["consent"] += 1
                return
            for day in sorted(days, reverse=True):
                at = datetime(2026, 6, 2, 8, 0, tzinfo=UTC) - timedelta(days=day)
                snapshot = await store.snapshot("acme", consumer, at)
                await store.record_attempt("acme", consumer, Attempt(at, f"seed-{index}-{day}"), snapshot.version)

        for start in range(0, len(e164), 50):  # within the client's connection pool
            await asyncio.gather(*(history(i, e164[i]) for i in range(start, min(start + 50, len(e164)))))
    finally:
        await store.close()
    return counts


def _process_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def scrub(
    env: dict[str, str], leads: Path, out: Path, at: datetime, profile: Path | None, pid: int | None
) -> dict[str, Any]:
    exe = shutil.which("npv-guard", path=str(Path(sys.executable).parent)) or "npv-guard"
    command = [exe, "scrub", str(leads), "--professional", "acme", "--out", str(out), "--at", at.isoformat(), "--json"]
    if profile is not None:
        command = [sys.executable, "-m", "pyinstrument", "--outfile", str(profile), *command]
    load_before = os.getloadavg()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = _process_cpu(pid)
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # The child's own peak (VmHWM): RUSAGE_CHILDREN's maxrss also counts the pages a fork shares
    # with this process, which holds the generated leads.
    peak_kb = 0
    while process.poll() is None:
        peak_kb = max(peak_kb, _peak_kb(process.pid))
        time.sleep(0.1)
    stdout, stderr = process.communicate()
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"npv-guard scrub exited {process.returncode}: {stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after = _process_cpu(pid)
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {
        "at": at.isoformat(),
        "leads": summary["leads"],
        "seconds_wall": round(wall, 2),
        "seconds_reported": summary["seconds"],
        "leads_per_s": round(summary["leads"] / wall),
        "cpu_seconds": round((after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime), 2),
        "redis_cpu_seconds": round(server_after - server_cpu, 2) if server_cpu is not None and server_after else None,
        "peak_rss_mb": round(peak_kb / 1024),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "callable_now": summary["callable_now"],
        "callable_later": summary["callable_later"],
        "never": summary["never"],
        "reasons": summary["reasons"],
        "profiled": profile is not None,
    }


async def spot_check(url: str, prefix: str, out: Path, at: datetime, leads: int, sample: int) -> dict[str, int]:
    """`sample` output rows decided again by Guard.check(record=False): verdict, reasons and
    next_allowed_at must be the same."""
    wanted = set(random.Random(SEED).sample(range(leads), min(sample, leads)))
    with out.open(encoding="utf-8-sig", newline="") as handle:
        picked = [row for index, row in enumerate(csv.DictReader(handle, delimiter=";")) if index in wanted]
    store = Store.connect(url, ConsumerHasher(SECRET), prefix=prefix, timeout=5.0)
    guard = Guard(POLICY, store)
    mismatches = 0
    try:
        for row in picked:
            request = CallRequest(CALLER, row["téléphone"], at.astimezone(UTC), "acme", row["code_postal"] or None)
            verdict = await guard.check(request, record=False)
            expected = (verdict.verdict, "|".join(verdict.codes), verdict.retry_after)
            got = (row["npv_verdict"], row["npv_reasons"], row["npv_next_allowed_at"])
            mismatches += expected != got
    finally:
        await store.close()
    return {"sampled": len(picked), "mismatches": mismatches}


def _pair_keys(url: str, prefix: str, leads: Path) -> list[tuple[str, ...]]:
    """The snapshot script's keys for each lead of the file that has a pair (not timed)."""
    store = Store.connect(url, ConsumerHasher(SECRET), prefix=prefix, timeout=5.0)
    keys: list[tuple[str, ...]] = []
    with leads.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            e164 = parse_number(row["téléphone"]).e164
            if e164 is not None:
                pair = store.keys("acme", e164)
                # The snapshot script's KEYS, in its order (store._snapshot_keys).
                keys.append((pair.attempts, pair.refusals, pair.consents, pair.version))
    return keys


async def floor(url: str, prefix: str, leads: Path, rows: int, at: datetime) -> dict[str, Any]:
    """The bare Redis reads of a scrub at `at`: see the module's docstring."""
    # No public handle on the script: the floor sends exactly what Store.read_snapshots sends.
    from npv_guard.store import _SNAPSHOT_BATCH, SNAPSHOT_BATCH_PAIRS, _snapshot_args  # noqa: PLC0415

    keys = _pair_keys(url, prefix, leads)
    client = aioredis.Redis.from_url(url)
    try:
        sha = await client.script_load(_SNAPSHOT_BATCH)
        args = _snapshot_args(at)
        stored = 0
        started = time.monotonic()
        cpu = time.process_time()
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            pipe = client.pipeline(transaction=False)
            for first in range(0, len(batch), SNAPSHOT_BATCH_PAIRS):
                flat = [key for pair in batch[first : first + SNAPSHOT_BATCH_PAIRS] for key in pair]
                pipe.execute_command("EVALSHA", sha, len(flat), *flat, *args)
            stored += sum(len(reply) // 2 for reply in await pipe.execute())
        seconds = time.monotonic() - started
        cpu = time.process_time() - cpu
    finally:
        await client.aclose()
    return {
        "pairs": len(keys),
        "pairs_with_keys": stored,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 2),
        "leads_per_s": round(rows / seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrub", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="leads in the file (default 1,000,000)")
    parser.add_argument("--profile", action="store_true", help="run under pyinstrument; profiles in bench/results")
    parser.add_argument("--only", choices=sorted(INSTANTS), help="one instant only")
    parser.add_argument("--output", type=Path, default=RESULTS / "scrub.json")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="npv-bench-scrub-"))
    server = RedisServer().start()
    prefix = "bench"
    results: dict[str, Any] = {"rows": args.rows, "state_share": STATE_SHARE, "runs": {}}
    try:
        print(f"redis-server on 127.0.0.1:{server.port} (no persistence); work dir {work}", flush=True)
        started = time.monotonic()
        leads = generate(work / "leads.csv", args.rows)
        results["lead_file"] = {"bytes": leads.path.stat().st_size, "kinds": leads.kinds,
                                "generation_s": round(time.monotonic() - started, 2)}  # fmt: skip
        print(f"generated {args.rows:,} leads ({leads.kinds}) in {results['lead_file']['generation_s']} s", flush=True)
        started = time.monotonic()
        results["seeded"] = asyncio.run(seed(server.url, prefix, leads.stateful))
        results["seeded"]["seconds"] = round(time.monotonic() - started, 2)
        print(f"seeded {len(leads.stateful):,} pairs: {results['seeded']}", flush=True)
        config = work / "guard.toml"
        config.write_text(f'hash_secret = "{SECRET}"\njournal_path = "{work / "refusals.journal"}"\n'
                          f'[redis]\nurl = "{server.url}"\nkey_prefix = "{prefix}"\n'
                          '[[professionals]]\nid = "acme"\nnpvs = ["0162000001"]\n')  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
        env["NPV_GUARD_CONFIG"] = str(config)
        pid = server.process.pid if server.process else None
        for name, at in INSTANTS.items():
            if args.only and name != args.only:
                continue
            out = work / f"scrubbed-{name}.csv"
            profile = RESULTS / f"profile-scrub-{name}.txt" if args.profile else None
            bare = asyncio.run(floor(server.url, prefix, leads.path, args.rows, at))
            print(f"{name}: floor (bare pipelined reads) {bare['leads_per_s']:,} leads/s; "
                  f"npv-guard scrub at {at.isoformat()} ...", flush=True)  # fmt: skip
            run = scrub(env, leads.path, out, at, profile, pid)
            run["floor"] = bare
            run["ratio_to_floor"] = round(run["leads_per_s"] / bare["leads_per_s"], 3)
            run["seconds_per_million"] = round(1_000_000 / run["leads_per_s"], 1)
            run["target_met"] = (
                run["seconds_per_million"] < TARGET_SECONDS_PER_MILLION or run["ratio_to_floor"] >= TARGET_FLOOR_RATIO
            )
            run["spot_check"] = asyncio.run(spot_check(server.url, prefix, out, at, run["leads"], 2000))
            results["runs"][name] = run
            print(
                f"  {run['leads']:,} leads in {run['seconds_wall']} s: {run['leads_per_s']:,}/s "
                f"(now {run['callable_now']:,}, later {run['callable_later']:,}, never {run['never']:,}); "
                f"spot check {run['spot_check']}; load {run['load_average_before']} -> "
                f"{run['load_average_after']}",
                flush=True,
            )
            print(f"  {run['ratio_to_floor']}x the floor, {run['seconds_per_million']} s per million leads: "
                  f"target (< {TARGET_SECONDS_PER_MILLION:g} s per million or >= {TARGET_FLOOR_RATIO}x the floor) "
                  f"{'met' if run['target_met'] else 'NOT met'}", flush=True)  # fmt: skip
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    results["machine"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    if not args.profile:
        args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"results written to {args.output}")
    bad = [name for name, run in results["runs"].items() if run["spot_check"]["mismatches"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
