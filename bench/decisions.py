"""A decision through Redis (part `redis`): Guard.check(record=True) through Store on a local
redis-server at concurrency 1, 10 and 100, against a bare PING, the snapshot script alone and the
guard's own Redis calls made without its Python.

The snapshot script alone is timed twice: through redis-py's client as Store.connect builds it
(issue #20's baseline: how the guard sent it when the issue was filed) and as the store sends it
now (Store.run_script: pipelined on the store's own connection), the stricter floor."""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench import workload
from bench.common import LEVELS, Sizes, connect, e164, flushdb, ms, outcome, profiled, ratio
from bench.measure import Samples, Stats, process_cpu_seconds, time_async, warm_up
from npv_guard.core.model import Basis, ConsentEvent
from npv_guard.heap import settle as settle_heap
from npv_guard.journal import RefusalJournal
from npv_guard.service import Guard
from npv_guard.store import ATTEMPTS_KEEP, ATTEMPTS_TTL, CONSENT_EVENTS_READ, REFUSALS_TTL, SCRIPTS, Store

TARGET_P99_FACTOR = 2.0  # issue #20: guard p99 <= 2x the snapshot script's p99 at every level
REDIS_PY_FLOOR = "snapshot script, redis-py EVALSHA"
PIPELINED_FLOOR = "snapshot script, pipelined as sent"
EXPECTED = {"open": "allow", "capped": "FREQUENCY_CAP", "no_consent": "NO_CONSENT"}


async def seed(url: str, store: Store, pairs: list[workload.Pair]) -> Counter[str]:
    """Empty the database and store the pairs' consents and earlier attempts."""
    await flushdb(url)
    by_professional: dict[str, list[tuple[str, ConsentEvent]]] = {}
    consent = ConsentEvent(workload.CONSENT_AT, granted=True, basis=Basis.CONSENT, proof="bench web form")
    for pair in pairs:
        if pair.kind != "no_consent":
            by_professional.setdefault(pair.professional, []).append((e164(pair.consumer), consent))
    for professional, rows in by_professional.items():
        for start in range(0, len(rows), 2000):
            await store.record_consents(professional, rows[start : start + 2000])
    pipe = store.client.pipeline(transaction=False)
    for index, pair in enumerate(pairs):
        keys = store.keys(pair.professional, e164(pair.consumer))
        for j, at in enumerate(workload.seeded_attempts(pair, index)):
            at_ms = int(at.timestamp() * 1000)
            pipe.zadd(keys.attempts, {f"{at_ms}:seed{j}": at_ms})
            pipe.incr(keys.version)
        if len(pipe) >= 6000:
            await pipe.execute()
    await pipe.execute()
    return Counter(pair.kind for pair in pairs)


async def bench_redis(url: str, server_pid: int | None, sizes: Sizes, profile_dir: Path | None) -> dict[str, Any]:
    # Two populations with the same mix: the guard's pairs, and the floors' pairs (the floors write
    # attempts too, which must not push the guard's pairs to their cap).
    everyone = workload.redis_pairs(2 * sizes.pairs)
    pairs, floor_pairs = everyone[: sizes.pairs], everyone[sizes.pairs :]
    n = len(pairs)
    count = min(sizes.redis_count, 3 * n)  # at most 3 calls per pair: an open pair never reaches its cap
    journal_dir = Path(tempfile.mkdtemp(prefix="npv-bench-journal-"))
    store = connect(url)
    # A writer, as in the guards: it watches its peers' journals at every decision.
    journal = RefusalJournal(str(journal_dir / "refusals.journal"), writer=True)
    guard = Guard(workload.POLICY, store, journal)
    # The floors go out as the guard's own exchanges do (a store of their own, Store.run_script:
    # the same connection handling), so they pay what the guard's Redis calls pay and nothing else.
    floor_store = connect(url)
    floor = floor_store.client
    # Issue #20's floor: the snapshot script through redis-py's client as Store.connect builds it
    # (what the guard itself sent it through when the issue was filed).
    redis_py_script = floor.register_script(SCRIPTS["snapshot"])
    # What the guard's Store computes per call (keys, consumer E.164), computed once for the floors.
    floor_keys = [store.keys(pair.professional, e164(pair.consumer)) for pair in floor_pairs]
    floor_open = [pair.kind == "open" for pair in floor_pairs]

    def read_args(index: int) -> list[int | str]:
        until = int(workload.redis_request(floor_pairs[index % n], index).at.timestamp() * 1000)
        return [until - ms(ATTEMPTS_KEEP), until - ms(REFUSALS_TTL), until, CONSENT_EVENTS_READ]

    async def ping(_: int) -> None:
        await floor_store.ping()

    async def redis_py_ping(_: int) -> None:
        # redis-py's own pool: its row opens up to `concurrency` connections, before it is timed.
        await floor.ping()

    async def redis_py(index: int) -> None:
        k = floor_keys[index % n]
        await redis_py_script(keys=[k.attempts, k.refusals, k.consents, k.version], args=read_args(index))

    async def script(index: int) -> None:
        k = floor_keys[index % n]
        await floor_store.run_script("snapshot", [k.attempts, k.refusals, k.consents, k.version], read_args(index))

    async def redis_work(index: int) -> None:
        """The guard's Redis calls without the guard: read and hold; release for a rejected pair."""
        k = floor_keys[index % n]
        args = read_args(index)
        at = int(args[2])
        member = f"{at}:w{index}"
        hold = [*args, member, ms(ATTEMPTS_TTL), at - ms(ATTEMPTS_KEEP), ms(REFUSALS_TTL)]
        await floor_store.run_script("snapshot_and_hold", [k.attempts, k.refusals, k.consents, k.version], hold)
        if not floor_open[index % n]:
            await floor_store.run_script("release_attempt", [k.attempts, k.version], [member, ms(REFUSALS_TTL)])

    outcomes: Counter[str] = Counter()
    # Built before any row is timed: the guard's row counts its decisions, not the bench's requests.
    indexes = range(-(-count // sizes.rounds) * sizes.rounds)  # every round's chunk, the last one's whole
    requests = [(workload.redis_request(pairs[i % n], i), f"b{i}") for i in indexes]

    async def check(index: int) -> None:
        request, call_id = requests[index]
        verdict = await guard.check(request, record=True, call_id=call_id)
        outcomes[outcome(verdict.codes)] += 1

    async def store_ping(_: int) -> None:
        await store.ping()

    async def first_decisions() -> None:
        """The guard's first decisions, outside any timed span: they import each territory's holiday
        tables and run its code once. Read-only, on the floors' pairs (reseeded before each level):
        the guard's own consumers are not made familiar to it."""
        for i in range(min(len(floor_pairs), 300)):
            await guard.check(workload.redis_request(floor_pairs[i], i), record=False)

    ops = (("PING (floor)", ping, ping), (REDIS_PY_FLOOR, redis_py, redis_py_ping), (PIPELINED_FLOOR, script, ping),
           ("guard's Redis calls, no Python", redis_work, ping),
           ("Guard.check(record=True)", check, store_ping))  # fmt: skip
    levels: dict[str, Any] = {}
    mix: Counter[str] = Counter()
    chunk = -(-count // sizes.rounds)
    try:
        await seed(url, store, everyone)
        await first_decisions()
        # As the guard processes do once started (npv_guard/heap.py): the bench's own data and the
        # modules are frozen, so a collection in a timed row walks only what that row allocates.
        settle_heap()
        for concurrency in LEVELS:
            await seed(url, store, everyone)
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
            expected = Counter(EXPECTED[pairs[i % n].kind] for i in done_indexes(done, chunk, sizes.rounds))
            levels[str(concurrency)] = level_result([r.stats() for r in rows], outcomes, expected)
            if profile_dir and concurrency == 10:
                await seed(url, store, everyone)
                with profiled(profile_dir / "profile-redis.txt", "redis: Guard.check(record=True), concurrency 10"):
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


def done_indexes(done: int, chunk: int, rounds: int) -> list[int]:
    """The indexes the guard row went through (each round starts at round * chunk), when no budget cut it."""
    indexes = [i for round_ in range(rounds) for i in range(round_ * chunk, (round_ + 1) * chunk)]
    return indexes[:done] if done == len(indexes) else []


def level_result(rows: list[Stats], outcomes: Counter[str], expected: Counter[str]) -> dict[str, Any]:
    ping, redis_py, script, work, guard = rows
    return {
        "rows": [row.as_dict() for row in rows],
        "guard_outcomes": dict(outcomes.most_common()),
        "ratios": {
            "guard_vs_ping_p50": ratio(guard.p50_us, ping.p50_us),
            "guard_vs_ping_p99": ratio(guard.p99_us, ping.p99_us),
            "guard_vs_script_p99": ratio(guard.p99_us, redis_py.p99_us),
            "guard_vs_pipelined_script_p99": ratio(guard.p99_us, script.p99_us),
            "guard_vs_redis_work_p99": ratio(guard.p99_us, work.p99_us),
            "ping_vs_guard_throughput": ratio(ping.per_second, guard.per_second),
        },
        "targets": {
            "p99_bound_us": round(TARGET_P99_FACTOR * redis_py.p99_us, 1),
            "p99_within_2x_of_script": guard.p99_us <= TARGET_P99_FACTOR * redis_py.p99_us,
            "p99_within_2x_of_pipelined_script": guard.p99_us <= TARGET_P99_FACTOR * script.p99_us,
            "decisions_per_s": round(guard.per_second, 1),
            # What the process would do with a core to itself: its CPU time per decision, inverted.
            "decisions_per_cpu_s": round(1e6 / guard.cpu_us, 1) if guard.cpu_us else None,
        },
        "expected_outcomes": dict(expected.most_common()) if expected else None,
        "outcomes_as_expected": outcomes == expected if expected else None,
    }
