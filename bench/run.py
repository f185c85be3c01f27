"""How many calls per second can one guard handle? `python -m bench.run [--quick] [--only core,redis,import]`.

Three parts, each against the floor it cannot beat:

- core:   prepare() + decide() in-process (offline rules), against phonenumbers.parse of the same two numbers;
- redis:  Guard.check(record=True) through Store on a local redis-server, at concurrency 1, 10 and 100, against
          a bare PING, the snapshot script alone (EVALSHA) and the guard's own Redis calls without the Python;
- import: `npv-guard consent import` of a generated CSV, against the same rows piped into Redis raw;
- sip:    post-dial delay through the lab Asterisk, plain Dial() against the ARI and FastAGI guards;
- api:    `POST /v1/check` of `npv-guard serve` at 100 concurrent clients, against its /healthz (bench/api.py);
- scrub:  `npv-guard scrub` of a generated lead list at a daytime and a night instant (bench/scrub.py);
- report: `npv-guard report` over 1,000,000 generated audit lines (bench/report.py).

It starts its own redis-server (persistence off) on a free loopback port and stops it, prints a table
with the ratios first, and writes bench/results/latest.json. Absolute times drift on a shared
machine; the ratios are the headline.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import phonenumbers
import redis.asyncio as aioredis

from bench import api as bench_api
from bench import report as bench_report
from bench import scrub as bench_scrub
from bench import workload
from bench.measure import Samples, Stats, process_cpu_seconds, time_async, time_sync, warm_up
from bench.sip import render_sip, run_sip
from npv_guard.core.decide import decide, prepare
from npv_guard.core.model import Basis, ConsentEvent
from npv_guard.core.numbering import parse as parse_number
from npv_guard.journal import RefusalJournal
from npv_guard.service import Guard
from npv_guard.store import (
    _RECORD_ATTEMPT,
    _RECORD_CONSENT,
    _SNAPSHOT,
    ATTEMPTS_KEEP,
    ATTEMPTS_TTL,
    CONSENT_EVENTS_READ,
    REFUSALS_TTL,
    ConsumerHasher,
    Store,
)
from tests.support.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-secret-0123456789abcdef"
PARTS = ("core", "redis", "import", "sip", "api", "scrub", "report")
LEVELS = (1, 10, 100)
TIMEOUT_S = 0.2  # redis.timeout_ms default, for the guard and the floors alike
IMPORT_TIMEOUT_S = 1800
TARGET_P99_FACTOR = 2.0
TARGET_DECISIONS_PER_S = 5000.0


@dataclass(frozen=True, slots=True)
class Sizes:
    core_inputs: int
    core_count: int
    core_budget_s: float
    pairs: int
    redis_count: int  # per row and level; at most 3 calls per pair so the mix stays what it was seeded
    redis_budget_s: float
    import_rows: int
    rounds: int  # each part's rows are measured in this many interleaved rounds


FULL = Sizes(20_000, 200_000, 20.0, 10_000, 20_000, 15.0, 1_000_000, 4)
QUICK = Sizes(5_000, 20_000, 4.0, 2_000, 3_000, 4.0, 100_000, 2)


# ---------------------------------------------------------------------------------------------- core


def bench_core(sizes: Sizes, profile_dir: Path | None) -> dict[str, Any]:
    calls = workload.core_calls(sizes.core_inputs)
    policy = workload.POLICY
    state = workload.in_memory_state()

    def floor(call: workload.Call) -> None:
        phonenumbers.parse(call.caller, "FR")
        phonenumbers.parse(call.callee, "FR")

    def offline(call: workload.Call) -> None:
        decide(prepare(call.request, policy), None, policy)

    def with_state(call: workload.Call) -> None:
        decide(prepare(call.request, policy), state, policy)

    verdicts = Counter(_outcome(decide(prepare(c.request, policy), None, policy).codes) for c in calls)
    ops = (("phonenumbers.parse x2 (floor)", floor), ("decision, offline rules", offline),
           ("decision, rules + in-memory state", with_state))  # fmt: skip
    for _, op in ops:  # warm the caches, as a running guard has them
        time_sync(Samples("warm-up"), op, calls, 0, min(len(calls), 2000), 2.0)
    rows = [Samples(name) for name, _ in ops]
    chunk = -(-sizes.core_count // sizes.rounds)
    for round_ in range(sizes.rounds):
        for samples, (_, op) in zip(rows, ops, strict=True):
            gc.collect()
            time_sync(samples, op, calls, round_ * chunk, chunk, sizes.core_budget_s / sizes.rounds)
    if profile_dir:
        with _profiled(profile_dir / "profile-core.txt", "core: decide(prepare()) offline"):
            time_sync(Samples("profiled"), offline, calls, 0, sizes.core_count, sizes.core_budget_s)
    floor_row, offline_row, state_row = (samples.stats() for samples in rows)
    return {
        "rows": [row.as_dict() for row in (floor_row, offline_row, state_row)],
        "inputs": len(calls),
        "verdict_mix": dict(verdicts.most_common()),
        "ratios": {
            "offline_vs_floor_mean": _ratio(offline_row.mean_us, floor_row.mean_us),
            "offline_vs_floor_p50": _ratio(offline_row.p50_us, floor_row.p50_us),
            "offline_vs_floor_p99": _ratio(offline_row.p99_us, floor_row.p99_us),
            "state_vs_floor_mean": _ratio(state_row.mean_us, floor_row.mean_us),
        },
        "decisions_per_s": round(offline_row.per_second, 1),
        "decisions_per_s_with_state": round(state_row.per_second, 1),
    }


# --------------------------------------------------------------------------------------------- redis


def _connect(url: str) -> Store:
    """A store exactly as the guard builds one (Store.connect: same redis-py client and options)."""
    return Store.connect(url, ConsumerHasher(SECRET), timeout=TIMEOUT_S)


def _raw_client(store: Store) -> Any:
    # The floors run on a client built by Store.connect itself, so that they pay what the guard's
    # client pays (socket options, health checks) and nothing else.
    return store._client


async def _seed(url: str, client: Any, store: Store, pairs: list[workload.Pair]) -> Counter[str]:
    """Empty the database and store the pairs' consents and earlier attempts."""
    await _flushdb(url)
    by_professional: dict[str, list[tuple[str, ConsentEvent]]] = {}
    consent = ConsentEvent(workload.CONSENT_AT, granted=True, basis=Basis.CONSENT, proof="bench web form")
    for pair in pairs:
        if pair.kind != "no_consent":
            by_professional.setdefault(pair.professional, []).append((_e164(pair.consumer), consent))
    for professional, rows in by_professional.items():
        for start in range(0, len(rows), 2000):
            await store.record_consents(professional, rows[start : start + 2000])
    pipe = client.pipeline(transaction=False)
    for index, pair in enumerate(pairs):
        keys = store.keys(pair.professional, _e164(pair.consumer))
        for j, at in enumerate(workload.seeded_attempts(pair, index)):
            ms = int(at.timestamp() * 1000)
            pipe.zadd(keys.attempts, {f"{ms}:seed{j}": ms})
            pipe.incr(keys.version)
        if len(pipe) >= 6000:
            await pipe.execute()
    await pipe.execute()
    return Counter(pair.kind for pair in pairs)


def _e164(national: str) -> str:
    """The consumer's E.164 number as the guard keys it (our own plan: 0696 is +596, not +33)."""
    e164 = parse_number(national).e164
    if e164 is None:
        raise ValueError(f"bench consumer {national} is not a French number")
    return e164


_EXPECTED = {"open": "allow", "capped": "FREQUENCY_CAP", "no_consent": "NO_CONSENT"}


async def bench_redis(url: str, server_pid: int | None, sizes: Sizes, profile_dir: Path | None) -> dict[str, Any]:
    # Two populations with the same mix: the guard's pairs, and the floors' pairs (the floors write
    # attempts too, which must not push the guard's pairs to their cap).
    everyone = workload.redis_pairs(2 * sizes.pairs)
    pairs, floor_pairs = everyone[: sizes.pairs], everyone[sizes.pairs :]
    n = len(pairs)
    count = min(sizes.redis_count, 3 * n)  # at most 3 calls per pair: an open pair never reaches its cap
    journal_dir = Path(tempfile.mkdtemp(prefix="npv-bench-journal-"))
    store = _connect(url)
    # A writer, as in the guards: it watches its peers' journals at every decision.
    journal = RefusalJournal(str(journal_dir / "refusals.journal"), writer=True)
    guard = Guard(workload.POLICY, store, journal)
    floor_store = _connect(url)
    floor = _raw_client(floor_store)
    snapshot_script = floor.register_script(_SNAPSHOT)
    record_script = floor.register_script(_RECORD_ATTEMPT)
    # What the guard's Store computes per call (keys, consumer E.164), computed once for the floors.
    floor_keys = [store.keys(pair.professional, _e164(pair.consumer)) for pair in floor_pairs]
    floor_open = [pair.kind == "open" for pair in floor_pairs]

    def read_args(index: int) -> list[int | str]:
        until = int(workload.redis_request(floor_pairs[index % n], index).at.timestamp() * 1000)
        return [until - _ms(ATTEMPTS_KEEP), until - _ms(REFUSALS_TTL), until, CONSENT_EVENTS_READ]

    async def ping(_: int) -> None:
        await floor.ping()

    async def script(index: int) -> None:
        k = floor_keys[index % n]
        await snapshot_script(keys=[k.attempts, k.refusals, k.consents, k.version], args=read_args(index))

    async def redis_work(index: int) -> None:
        """The guard's Redis calls without the guard: the snapshot, then the record for an allowed pair."""
        k = floor_keys[index % n]
        args = read_args(index)
        raw = await snapshot_script(keys=[k.attempts, k.refusals, k.consents, k.version], args=args)
        if floor_open[index % n]:
            at = int(args[2])
            record = [raw[0], at, f"{at}:w{index}", _ms(ATTEMPTS_TTL), at - _ms(ATTEMPTS_KEEP), _ms(REFUSALS_TTL)]
            await record_script(keys=[k.attempts, k.version], args=record)

    outcomes: Counter[str] = Counter()

    async def check(index: int) -> None:
        pair = pairs[index % n]
        verdict = await guard.check(workload.redis_request(pair, index), record=True, call_id=f"b{index}")
        outcomes[_outcome(verdict.codes)] += 1

    async def store_ping(_: int) -> None:
        await store.ping()

    ops = (("PING (floor)", ping, ping), ("snapshot script alone (EVALSHA)", script, ping),
           ("guard's Redis calls, no Python", redis_work, ping),
           ("Guard.check(record=True)", check, store_ping))  # fmt: skip
    levels: dict[str, Any] = {}
    mix: Counter[str] = Counter()
    chunk = -(-count // sizes.rounds)
    try:
        for concurrency in LEVELS:
            await _seed(url, floor, store, everyone)
            mix = Counter(pair.kind for pair in pairs)
            rows = [Samples(name, concurrency) for name, _, _ in ops]
            outcomes.clear()
            done = 0
            for round_ in range(sizes.rounds):
                for samples, (_, op, warm) in zip(rows, ops, strict=True):
                    await warm_up(warm, concurrency)  # the connections this level needs are open
                    gc.collect()
                    server_cpu = process_cpu_seconds(server_pid) if server_pid else None
                    made = await time_async(samples, op, round_ * chunk, chunk, sizes.redis_budget_s / sizes.rounds)
                    server_after = process_cpu_seconds(server_pid) if server_pid else None
                    if server_cpu is not None and server_after is not None:
                        samples.server_cpu_seconds = (samples.server_cpu_seconds or 0.0) + server_after - server_cpu
                    if op is check:
                        done += made
            expected = Counter(_EXPECTED[pairs[i % n].kind] for i in _done_indexes(done, chunk, sizes.rounds))
            levels[str(concurrency)] = _level_result([r.stats() for r in rows], outcomes, expected)
            if profile_dir and concurrency == 10:
                await _seed(url, floor, store, everyone)
                with _profiled(profile_dir / "profile-redis.txt", "redis: Guard.check(record=True), concurrency 10"):
                    await time_async(Samples("profiled", concurrency), check, 0, count, sizes.redis_budget_s)
        info = await floor.info("server")
        memory = await floor.info("memory")
    finally:
        await store.close()
        await floor_store.close()
        journal.close()
        shutil.rmtree(journal_dir, ignore_errors=True)
    return {
        "pairs": n,
        "pair_mix": dict(mix),
        "calls_per_row": count,
        "rounds": sizes.rounds,
        "levels": levels,
        "redis_version": info.get("redis_version"),
        "redis_used_memory": memory.get("used_memory_human"),
    }


def _done_indexes(done: int, chunk: int, rounds: int) -> list[int]:
    """The indexes the guard row went through (each round starts at round * chunk), when no budget cut it."""
    indexes = [i for round_ in range(rounds) for i in range(round_ * chunk, (round_ + 1) * chunk)]
    return indexes[:done] if done == len(indexes) else []


def _level_result(rows: list[Stats], outcomes: Counter[str], expected: Counter[str]) -> dict[str, Any]:
    ping, script, work, guard = rows
    bound = TARGET_P99_FACTOR * script.p99_us
    return {
        "rows": [row.as_dict() for row in rows],
        "guard_outcomes": dict(outcomes.most_common()),
        "ratios": {
            "guard_vs_ping_p50": _ratio(guard.p50_us, ping.p50_us),
            "guard_vs_ping_p99": _ratio(guard.p99_us, ping.p99_us),
            "guard_vs_script_p99": _ratio(guard.p99_us, script.p99_us),
            "guard_vs_redis_work_p99": _ratio(guard.p99_us, work.p99_us),
            "ping_vs_guard_throughput": _ratio(ping.per_second, guard.per_second),
        },
        "targets": {
            "p99_bound_us": round(bound, 1),
            "p99_within_2x_of_floor_plus_script": guard.p99_us <= bound,
            "decisions_per_s": round(guard.per_second, 1),
            "at_least_5000_per_s": guard.per_second >= TARGET_DECISIONS_PER_S,
            # What the process would do with a core to itself: its CPU time per decision, inverted.
            "decisions_per_cpu_s": round(1e6 / guard.cpu_us, 1) if guard.cpu_us else None,
        },
        "expected_outcomes": dict(expected.most_common()) if expected else None,
        "outcomes_as_expected": outcomes == expected if expected else None,
    }


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


# -------------------------------------------------------------------------------------------- import


def _command() -> list[str]:
    script = Path(sys.executable).parent / "npv-guard"
    if script.exists():
        return [str(script)]
    found = shutil.which("npv-guard")
    if not found:
        raise SystemExit("bench: npv-guard is not installed (run scripts/bootstrap)")
    return [found]


def _guard_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    env.update(NPV_GUARD_REDIS_URL=url, NPV_GUARD_HASH_SECRET=SECRET)
    return env


def bench_import(url: str, sizes: Sizes, profile_dir: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="npv-bench-import-"))
    try:
        path = work / "consents.csv"
        started = time.perf_counter()
        workload.write_consent_csv(path, sizes.import_rows)
        generated = time.perf_counter() - started
        plain_seconds = asyncio.run(_import_floor(url, path, script=False))
        floor_seconds = asyncio.run(_import_floor(url, path, script=True))
        _flush(url)
        command = [*_command(), "consent", "import", "--professional", "acme", "--json", str(path)]
        started = time.perf_counter()
        result = subprocess.run(
            command, env=_guard_env(url), capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=False
        )
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"consent import failed ({result.returncode}): {result.stderr[-2000:]}")
        summary = json.loads(result.stdout)
        if summary["imported"] != sizes.import_rows:
            raise RuntimeError(f"consent import stored {summary['imported']} of {sizes.import_rows} rows")
        stored = asyncio.run(_count_keys(url))
        if stored != 2 * sizes.import_rows:  # per consumer: the consents set and the version
            raise RuntimeError(f"consent import left {stored} keys for {sizes.import_rows} distinct consumers")
        if profile_dir:
            _flush(url)
            _profile_import(url, path, profile_dir / "profile-import.txt")
        rows = sizes.import_rows
        return {
            "rows": rows,
            "csv_bytes": path.stat().st_size,
            "csv_generation_s": round(generated, 2),
            "seconds_wall": round(wall, 3),
            "seconds_reported": summary["seconds"],
            "rows_per_s": round(rows / wall, 1),
            "keys_stored": stored,
            "floor": {
                "what": "csv.reader, then per row one EVALSHA of the consent script, pipelined by 2000, on the "
                "client Store.connect builds; no number parsing, no hashing, no JSON",
                "seconds": round(floor_seconds, 3),
                "rows_per_s": round(rows / floor_seconds, 1),
            },
            "plain_commands": {
                "what": "the same with ZADD + INCR + PEXPIRE per row (what the import sent before)",
                "seconds": round(plain_seconds, 3),
                "rows_per_s": round(rows / plain_seconds, 1),
            },
            "ratio_vs_floor": _ratio(wall, floor_seconds),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _import_floor(url: str, path: Path, *, script: bool) -> float:
    """The rows straight into Redis, batched as the CLI batches, without the guard's work on them."""
    store = _connect(url)  # the client `consent import` gets
    client = _raw_client(store)
    record = client.register_script(_RECORD_CONSENT)
    try:
        await _flushdb(url)
        ttl = _ms(REFUSALS_TTL)
        started = time.perf_counter()
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            while True:
                batch = [row for _, row in zip(range(2000), reader, strict=False)]
                if not batch:
                    break
                pipe = client.pipeline(transaction=False)
                for row in batch:
                    key = f"floor:{{{row[0]}}}"
                    if script:
                        await record(keys=[key + ":c", key + ":v"], args=[0, ",".join(row[1:]), ttl], client=pipe)
                    else:
                        pipe.zadd(key + ":c", {",".join(row[1:]): 0})
                        pipe.incr(key + ":v")
                        pipe.pexpire(key + ":v", ttl)
                await pipe.execute()
        return time.perf_counter() - started
    finally:
        await store.close()


async def _count_keys(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()


async def _flushdb(url: str) -> None:
    # Its own client, without the guard's 200 ms socket timeout: emptying millions of keys takes longer.
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def _flush(url: str) -> None:
    asyncio.run(_flushdb(url))


def _profile_import(url: str, path: Path, output: Path) -> None:
    """The import under pyinstrument: the call tree, then the functions by their own time."""
    flat = output.with_name(output.stem + "-flat.txt")
    import_args = [*_command(), "consent", "import", "--professional", "acme", "--json", str(path)]
    for target, options in ((output, []), (flat, ["-p", "flat=true", "-p", "flat_time=self"])):
        _flush(url)
        command = [sys.executable, "-m", "pyinstrument", "-r", "text", *options, "-o", str(target), *import_args]
        subprocess.run(command, env=_guard_env(url), capture_output=True, timeout=IMPORT_TIMEOUT_S, check=True)
    print(f"  profiles written to {output.relative_to(ROOT)} and {flat.relative_to(ROOT)}", flush=True)


# ------------------------------------------------------------------------------------------- helpers


def _outcome(codes: tuple[str, ...]) -> str:
    return "+".join(sorted(codes)) if codes else "allow"


def _ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 2) if baseline else float("nan")


@contextmanager
def _profiled(output: Path, title: str) -> Iterator[None]:
    try:
        from pyinstrument import Profiler  # noqa: PLC0415 (only with --profile)
        from pyinstrument.renderers import ConsoleRenderer  # noqa: PLC0415
    except ImportError:
        raise SystemExit("bench: --profile needs pyinstrument (pip install -e '.[dev]')") from None
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        tree = profiler.output_text(unicode=True, show_all=False)
        flat = profiler.output(ConsoleRenderer(unicode=True, flat=True, flat_time="self"))
        output.write_text(f"# {title}\n{tree}\n# where the time is spent (self time)\n{flat}", encoding="utf-8")
        print(f"  profile written to {output.relative_to(ROOT)}", flush=True)


def machine(redis_version: str | None) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("npv-guard", "phonenumbers", "holidays", "redis", "hiredis"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "redis_server": redis_version,
        "packages": versions,
    }


# -------------------------------------------------------------------------------------------- output


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    m = results["machine"]
    lines.append(
        f"npv-guard benchmark{' (--quick)' if results['quick'] else ''}: {m['date']}, {m['cpu_count']} CPU "
        f"({m['cpu_model'] or 'unknown'}), Python {m['python']}, redis-server {m['redis_server'] or '-'}, "
        f"redis-py {m['packages']['redis']}{', hiredis' if m['packages']['hiredis'] else ''}"
    )
    lines.append("")
    lines.append("HEADLINE: ratios, guarded / baseline (absolute times drift on a shared machine)")
    core, redis_part, imported = results.get("core"), results.get("redis"), results.get("import")
    if core:
        r = core["ratios"]
        lines.append(
            f"  core        decision / phonenumbers.parse x2: mean {r['offline_vs_floor_mean']}x, "
            f"p99 {r['offline_vs_floor_p99']}x; {_fmt(core['decisions_per_s'])} decisions/s on one core"
        )
    if redis_part:
        for level, data in redis_part["levels"].items():
            r, t = data["ratios"], data["targets"]
            verdict = "ok" if t["p99_within_2x_of_floor_plus_script"] else "MISSED"
            rate = "ok" if t["at_least_5000_per_s"] else "MISSED"
            lines.append(
                f"  redis c={level:<4} guard p99 / PING p99 {r['guard_vs_ping_p99']}x, / snapshot script p99 "
                f"{r['guard_vs_script_p99']}x (target <= 2x: {verdict}), / its own Redis calls "
                f"{r['guard_vs_redis_work_p99']}x; {_fmt(t['decisions_per_s'])} decisions/s (target >= 5,000: {rate}; "
                f"{_fmt(t['decisions_per_cpu_s'] or 0)} per CPU-second)"
            )
    if imported:
        lines.append(
            f"  import      {_fmt(imported['rows'])} rows: {_fmt(imported['rows_per_s'])} consents/s; "
            f"import / the same rows piped raw into the same script {imported['ratio_vs_floor']}x"
        )
    api = results.get("api")
    if api:
        floor = next((r for r in api["rows"] if "healthz" in r["name"]), None)
        for r in api["rows"]:
            if r is floor:
                continue
            ratio = f"; p99 / GET /healthz p99 {r['p99_us'] / floor['p99_us']:.1f}x" if floor else ""
            lines.append(
                f"  api c={r['concurrency']:<5}{r['name']}: {_fmt(r['per_second'])}/s, "
                f"p50 {r['p50_us'] / 1000:.1f} ms, p99 {r['p99_us'] / 1000:.1f} ms{ratio}"
            )
    scrub = results.get("scrub")
    if scrub:
        for name, run in scrub["runs"].items():
            lines.append(
                f"  scrub {name:<6}{_fmt(run['leads'])} leads in {run['seconds_wall']} s: {_fmt(run['leads_per_s'])}/s "
                f"(target: 1,000,000 in < 120 s); spot check {run['spot_check']}"
            )
    report = results.get("report")
    if report:
        lines.append(
            f"  report      {_fmt(report['lines'])} audit lines in {report['seconds_wall']} s: "
            f"{_fmt(report['lines_per_s'])}/s (target: 1,000,000 in < 60 s)"
        )
    lines.append("")
    header = (
        f"  {'part':<8} {'c':>4}  {'what':<36} {'calls':>8} {'per s':>10} {'p50 us':>9} {'p99 us':>9} {'cpu us':>8}"
        f" {'redis us':>8}"
    )
    lines.append(header)
    lines.append("  " + "-" * (len(header) - 2))

    def row(part: str, stat: dict[str, Any]) -> None:
        lines.append(
            f"  {part:<8} {stat['concurrency']:>4}  {stat['name']:<36} {stat['count']:>8} "
            f"{_fmt(stat['per_second']):>10} {_fmt(stat['p50_us'], 1):>9} {_fmt(stat['p99_us'], 1):>9} "
            f"{_fmt(stat['cpu_us'], 1):>8} {'' if stat['redis_cpu_us'] is None else _fmt(stat['redis_cpu_us'], 1):>8}"
        )

    if core:
        for stat in core["rows"]:
            row("core", stat)
    if redis_part:
        for data in redis_part["levels"].values():
            for stat in data["rows"]:
                row("redis", stat)
    if imported:
        for name, rate in (
            ("CSV rows, 3 plain commands each", imported["plain_commands"]["rows_per_s"]),
            ("CSV rows, consent script (floor)", imported["floor"]["rows_per_s"]),
            ("npv-guard consent import", imported["rows_per_s"]),
        ):
            lines.append(f"  {'import':<8} {1:>4}  {name:<36} {imported['rows']:>8} {_fmt(rate):>10}")
    if redis_part:
        lines.append("")
        lines.append(f"  redis: {redis_part['pairs']} pairs {redis_part['pair_mix']}; guard outcomes per level:")
        for level, data in redis_part["levels"].items():
            check = "as seeded" if data["outcomes_as_expected"] else f"NOT as seeded: {data['expected_outcomes']}"
            lines.append(f"    c={level}: {data['guard_outcomes']} ({check})")
    sip = results.get("sip")
    if sip:
        lines.extend(render_sip(sip))
    for name, error in results.get("failed", {}).items():
        lines.append(f"  {name}: FAILED: {error}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main


def _standalone(main: Callable[[list[str]], int], argv: list[str], output: Path) -> dict[str, Any]:
    """A part that is its own program (bench/api.py, bench/scrub.py): run it, keep its JSON."""
    if main(argv) != 0:
        raise RuntimeError(f"{main.__module__} {' '.join(argv)} failed")
    result: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (import 100,000 rows): a minute or two")
    parser.add_argument("--import-rows", type=int, help="rows of the generated CSV (default 1,000,000; quick 100,000)")
    parser.add_argument("--output", type=Path, help="JSON results file (default bench/results/latest.json)")
    parser.add_argument(
        "--profile", action="store_true",
        help="also profile each part with pyinstrument into bench/results/profile-*.txt (timings then not final)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        parser.error(f"--only: choose among {', '.join(PARTS)}")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.import_rows:
        sizes = dataclasses.replace(sizes, import_rows=args.import_rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    profile_dir = RESULTS if args.profile else None
    output = args.output or RESULTS / ("profiled.json" if args.profile else "latest.json")
    results: dict[str, Any] = {"quick": args.quick, "profiled": args.profile, "sizes": dataclasses.asdict(sizes)}
    server = None
    failed: dict[str, str] = {}

    def part(name: str, title: str, run: Callable[[], dict[str, Any]]) -> None:
        # A part that fails is reported and the others still run: a long run is not lost to one error.
        print(title, flush=True)
        try:
            results[name] = run()
        except Exception as error:
            traceback.print_exc()
            failed[name] = f"{type(error).__name__}: {error}"[:500]

    try:
        if "core" in args.parts:
            part("core", "core: decision core in-process ...", lambda: bench_core(sizes, profile_dir))
        if {"redis", "import"} & set(args.parts):
            server = RedisServer().start()
            print(f"redis-server on 127.0.0.1:{server.port} (no persistence)", flush=True)
            url, pid = server.url, server.process.pid if server.process else None
        if server and "redis" in args.parts:
            part("redis", "redis: Guard.check(record=True) at concurrency 1, 10, 100 ...",
                 lambda: asyncio.run(bench_redis(url, pid, sizes, profile_dir)))  # fmt: skip
        if server and "import" in args.parts:
            part("import", f"import: npv-guard consent import of {sizes.import_rows:,} rows ...",
                 lambda: bench_import(url, sizes, profile_dir))  # fmt: skip
        redis_version = server.cli("INFO", "server") if server else ""
        if "sip" in args.parts:
            part("sip", "sip: post-dial delay through the lab Asterisk, baseline / ARI / FastAGI ...",
                 lambda: run_sip(args.quick))  # fmt: skip
        if "api" in args.parts:
            requests = ["--requests", "1000"] if args.quick else []
            part("api", "api: POST /v1/check at 100 concurrent clients ...",
                 lambda: _standalone(bench_api.main, requests, bench_api.RESULTS))  # fmt: skip
        if "scrub" in args.parts:
            rows = ["--rows", "100000"] if args.quick else []
            part("scrub", "scrub: npv-guard scrub of a generated lead list, day and night ...",
                 lambda: _standalone(bench_scrub.main, [*rows, "--output", str(RESULTS / "scrub.json")],
                                     RESULTS / "scrub.json"))  # fmt: skip
        if "report" in args.parts:
            audit_lines = ["--lines", "100000"] if args.quick else []
            part("report", "report: npv-guard report of generated audit lines ...",
                 lambda: _standalone(bench_report.main, [*audit_lines, "--output", str(RESULTS / "report.json")],
                                     RESULTS / "report.json"))  # fmt: skip
    finally:
        if server:
            server.cleanup()
    results["failed"] = failed
    version = next(
        (line.split(":", 1)[1].strip() for line in redis_version.splitlines() if line.startswith("redis_version")), None
    )
    results["machine"] = machine(version)
    text = render(results)
    print()
    print(text)
    output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nresults written to {output}")
    for name, error in failed.items():
        print(f"bench: part {name} FAILED: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
