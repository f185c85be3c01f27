"""One guard process deciding calls through Redis, for the scale-out and before/after rows.

`python -m bench.worker --url URL --first N --pairs N --calls N --concurrency C`: builds a Store
and a Guard exactly as `npv-guard run` does (Store.connect, a journal writer), warms up (its
connections, and read-only decisions on pairs outside its slice), settles its heap as the guard
processes do (npv_guard/heap.py; the tree before #20 had no such step), prints
`ready`, waits for one line on stdin (so that several workers start together), makes the calls
on its own slice of the seeded pairs, and prints one JSON line: calls, monotonic start and end,
its own CPU seconds, the outcomes, and which npv_guard it ran (a baseline runs an older tree put
first on PYTHONPATH). The requests are built before `ready`: the CPU counted is the guard's
decisions and the timing loop's, not the building of the bench's requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import npv_guard
from bench import workload
from bench.common import TIMEOUT_S, outcome, secret_hasher
from bench.measure import Samples, time_async, warm_up
from npv_guard.journal import RefusalJournal
from npv_guard.service import Guard
from npv_guard.store import Store

try:
    from npv_guard.heap import settle as settle_heap  # as `npv-guard run` does once started
except ImportError:  # the tree before issue #20 (the baseline row) had no such step

    def settle_heap() -> None:
        pass


async def run(args: argparse.Namespace) -> dict[str, object]:
    population = workload.redis_pairs(args.population)
    pairs = population[args.first : args.first + args.pairs]
    # Pairs outside this worker's slice, for its first (read-only, untimed) decisions.
    others = population[: args.first] + population[args.first + args.pairs :]
    n = len(pairs)
    journal_dir = Path(tempfile.mkdtemp(prefix="npv-bench-worker-"))
    store = Store.connect(args.url, secret_hasher(), timeout=TIMEOUT_S)
    journal = RefusalJournal(str(journal_dir / "refusals.journal"), writer=True)
    guard = Guard(workload.POLICY, store, journal)
    outcomes: Counter[str] = Counter()
    # The driver's own work (building each request and its call id) is done before the clock starts,
    # so that the process's CPU per decision is the guard's, not the bench's.
    calls = [(workload.redis_request(pairs[i % n], i), f"w{i}") for i in range(args.calls)]

    async def check(index: int) -> None:
        request, call_id = calls[index]
        verdict = await guard.check(request, record=True, call_id=call_id)
        outcomes[outcome(verdict.codes)] += 1

    async def ping(_: int) -> None:
        await store.ping()

    try:
        await warm_up(ping, args.concurrency)
        # The first decisions import each territory's holiday tables: before the clock starts.
        for i, pair in enumerate(others[:300]):
            await guard.check(workload.redis_request(pair, i), record=False)
        settle_heap()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        samples = Samples("worker", args.concurrency)
        started = time.monotonic()
        await time_async(samples, check, 0, args.calls, args.budget)
        ended = time.monotonic()
    finally:
        await store.close()
        journal.close()
        shutil.rmtree(journal_dir, ignore_errors=True)
    stats = samples.stats()
    return {
        "calls": stats.count,
        "started": started,
        "ended": ended,
        "cpu_seconds": stats.cpu_seconds,
        "p50_us": stats.p50_us,
        "p99_us": stats.p99_us,
        "outcomes": dict(outcomes),
        "npv_guard": str(Path(npv_guard.__file__).parent),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--population", type=int, required=True, help="pairs seeded (workload.redis_pairs)")
    parser.add_argument("--first", type=int, default=0, help="this worker's first pair")
    parser.add_argument("--pairs", type=int, required=True, help="this worker's pairs")
    parser.add_argument("--calls", type=int, required=True, help="at most 3 per pair keeps the seeded mix")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds at most")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
