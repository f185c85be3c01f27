"""The HTTP pre-check API under load: `python -m bench.api [--requests N] [--concurrency C]`.

Starts its own redis-server and a real `npv-guard serve` on free loopback ports, seeds consents
with `npv-guard consent import`, then times `POST /v1/check` from C concurrent aiohttp clients
(one keep-alive connection each), with `record: false` and `record: true`, against the HTTP floor
of the same server (`GET /healthz`: no token, no Redis), the three rows in interleaved rounds
(ROUNDS), each after a warm-up outside the timed span. Latency is what a client sees, from
sending the request to reading the whole answer. Prints a table and writes
bench/results/api.json.

The client runs on the same machine as the server and Redis: on 2 shared cores the three compete,
so absolute numbers drift from run to run; compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.measure import Samples, process_cpu_seconds, time_async, warm_up
from npv_guard.heap import settle as settle_heap
from tests.support.api_server import ApiServer
from tests.support.process import EXE
from tests.support.redis_servers import RedisServer

RESULTS = Path(__file__).parent / "results" / "api.json"
AT = "2026-12-01T10:30:00"  # a Tuesday morning, Paris time, under the opt-in regime
CALLER = "0162000001"  # an NPV of the test professional `acme`
BUDGET_S = 120.0
ROUNDS = 2  # each row is timed in this many rounds, interleaved with the others


def consumer(index: int) -> str:
    return f"06{20_000_000 + index:08d}"


def seed_consents(api: ApiServer, count: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as handle:
        handle.writelines(f"{consumer(i)},2026-11-01T12:00:00+01:00,consent,bench\n" for i in range(count))
        path = handle.name
    try:
        subprocess.run(
            [EXE, "consent", "import", "--professional", "acme", path],
            env=api.env(), check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        os.unlink(path)


async def run_row(
    samples: Samples,
    op: Callable[[int], Awaitable[object]],
    start: int,
    count: int,
    pids: dict[str, int],
    cpu: dict[str, float | None],
) -> int:
    """Time one round of a row (indexes start..start+count-1); add the CPU the server and Redis
    spent on it to `cpu` (seconds; None once a reading failed). Returns the requests made."""
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    done = await time_async(samples, op, start, count, BUDGET_S / ROUNDS)
    after = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    for name in pids:
        begun, ended, so_far = before[name], after[name], cpu.get(name, 0.0)
        cpu[name] = None if begun is None or ended is None or so_far is None else so_far + ended - begun
    return done


async def bench(api: ApiServer, redis_pid: int, requests: int, concurrency: int) -> list[dict[str, Any]]:
    assert api.process is not None
    pids = {"server": api.process.pid, "redis": redis_pid}
    headers = {"Authorization": f"Bearer {api.tokens['acme']}"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    rows: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(api.base_url, connector=connector, headers=headers) as session:
        outcomes: Counter[str] = Counter()

        async def healthz(_: int) -> None:
            async with session.get("/healthz") as response:
                await response.read()
                outcomes[str(response.status)] += 1

        def check(record: bool) -> Callable[[int], Awaitable[None]]:
            async def call(i: int) -> None:
                # A recorded attempt is dated by the server's clock (started at AT): no `at`.
                body = {"caller": CALLER, "callee": consumer(i), "record": record, **({} if record else {"at": AT})}
                async with session.post("/v1/check", json=body) as response:
                    answer = await response.json()
                if response.status != 200:
                    outcomes[f"http {response.status}"] += 1
                elif answer["verdict"] == "allow":
                    outcomes["allow"] += 1
                else:
                    outcomes["+".join(reason["code"] for reason in answer["reasons"])] += 1

            return call

        await warm_up(healthz, concurrency)
        await warm_up(check(False), concurrency)
        settle_heap()  # the client's own collector, as the server's: not a pause inside the spans
        ops = (
            ("GET /healthz (HTTP floor)", healthz),
            ("POST /v1/check record=false", check(False)),
            ("POST /v1/check record=true", check(True)),
        )
        # Interleaved rounds, as the other parts: a machine that drifts meanwhile drifts for the
        # floor and the checks alike. Each round's requests start where the last one's ended (a
        # recorded check names a new consumer each time).
        row_samples = [Samples(name, concurrency) for name, _ in ops]
        row_cpu: list[dict[str, float | None]] = [{} for _ in ops]
        row_outcomes: list[Counter[str]] = [Counter() for _ in ops]
        chunk = -(-requests // ROUNDS)
        for round_ in range(ROUNDS):
            for samples, cpu, counted, (_, op) in zip(row_samples, row_cpu, row_outcomes, ops, strict=True):
                outcomes.clear()
                gc.collect()  # this process's garbage, before the span rather than in it
                await run_row(samples, op, round_ * chunk, min(chunk, requests - round_ * chunk), pids, cpu)
                counted.update(outcomes)
        for samples, cpu, counted in zip(row_samples, row_cpu, row_outcomes, strict=True):
            row: dict[str, Any] = samples.stats().as_dict()
            for name in pids:
                seconds = cpu.get(name)
                row[f"{name}_cpu_us"] = (
                    round(seconds / row["count"] * 1e6, 1) if seconds is not None and row["count"] else None
                )
            row["client_cpu_us"] = row.pop("cpu_us")
            row["outcomes"] = dict(counted)
            rows.append(row)
            print(f"  {samples.name}: {row['count']} requests, {row['per_second']:,.0f}/s", flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'what':<30} {'c':>4} {'requests':>8} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'server cpu us':>13} {'redis cpu us':>12}  outcomes"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row['name']:<30} {row['concurrency']:>4} {row['count']:>8} {row['per_second']:>8,.0f} "
            f"{row['p50_us'] / 1000:>8.2f} {row['p99_us'] / 1000:>8.2f} {row['server_cpu_us'] or 0:>13,.0f} "
            f"{row['redis_cpu_us'] or 0:>12,.0f}  {row['outcomes']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per row (default 4000)")
    parser.add_argument("--concurrency", type=int, default=100, help="concurrent clients (default 100)")
    args = parser.parse_args(argv)
    redis = RedisServer().start()
    api = ApiServer(redis.url, key_prefix="bench-api", log_level="info", now=AT)
    try:
        api.start()
        print(f"redis-server on 127.0.0.1:{redis.port}, npv-guard serve on {api.base_url}", flush=True)
        seed_consents(api, args.requests + args.concurrency * 5)
        assert redis.process is not None
        rows = asyncio.run(bench(api, redis.process.pid, args.requests, args.concurrency))
    finally:
        api.cleanup()
        redis.cleanup()
    print()
    print(table(rows))
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "concurrency": args.concurrency,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
