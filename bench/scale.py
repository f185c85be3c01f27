"""Guard processes on one Redis (part `scale`): one process, then two at once, each deciding its
own pairs at the same concurrency (bench/worker.py); and, when the tree is a git checkout, one
process of the code as it was before issue #20 (BASELINE_REF, extracted to a temporary tree and
put first on PYTHONPATH), interleaved with today's, for the decisions per CPU-second.

Throughput of a row is its calls over the span from the first worker's start to the last one's
end; CPU is each worker's own CPU time (process_time), so it holds on a busy machine too. The
redis-server's CPU per decision gives the ceiling more processes tend to: one Redis core.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import workload
from bench.common import ROOT, Sizes, connect, ratio
from bench.decisions import seed
from bench.measure import process_cpu_seconds

# The commit issue #20 was measured on: its Guard.check read, decided, then recorded (two round trips).
BASELINE_REF = "c98d71d599e5a382b0dc6632f6ff08db4222b74d"
CONCURRENCY = 50  # per process: enough calls in flight to keep one process busy
TARGET_SCALE = 1.7
TARGET_CPU_GAIN = 2.0


def baseline_tree(ref: str = BASELINE_REF) -> Path | None:
    """`npv_guard/` as it was at `ref`, in a temporary directory; None outside a git checkout."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    work = Path(tempfile.mkdtemp(prefix="npv-bench-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "npv_guard"], capture_output=True, timeout=60, check=False
    )
    if archive.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        return None
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True, timeout=60)
    return work


def machine_cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (Linux /proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return (total - idle) / ticks, total / ticks


class MachineSampler:
    """The machine's busy CPU seconds sampled every `period` s on the monotonic clock (the workers'
    clock too), so that a row counts the busy CPU of its own timed span, not the workers' start-up."""

    def __init__(self, period: float = 0.05) -> None:
        self.samples: list[tuple[float, float]] = []
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MachineSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            now, cpu = time.monotonic(), machine_cpu_seconds()
            if cpu is not None:
                self.samples.append((now, cpu[0]))
            if self._stop.wait(self._period):
                return

    def busy_between(self, start: float, end: float) -> float | None:
        """Busy CPU seconds of the whole machine from `start` to `end` (the samples just outside)."""
        before = [(t, busy) for t, busy in self.samples if t <= start]
        after = [(t, busy) for t, busy in self.samples if t >= end]
        if not before or not after or after[0][0] <= before[-1][0]:
            return None
        (t0, b0), (t1, b1) = before[-1], after[0]
        return (b1 - b0) * (end - start) / (t1 - t0)  # the samples' rate over the span


def _workers(
    url: str, population: int, slices: list[tuple[int, int]], calls: int, tree: Path | None, concurrency: int
) -> list[Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (tree, ROOT) if p)
    procs = []
    for first, count in slices:
        command = [sys.executable, "-m", "bench.worker", "--url", url, "--population", str(population),
                   "--first", str(first), "--pairs", str(count), "--calls", str(calls),
                   "--concurrency", str(concurrency)]  # fmt: skip
        # `-m` puts the working directory first on sys.path: the baseline's own tree, not ROOT's npv_guard.
        proc = subprocess.Popen(
            command, cwd=tree or ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("bench worker did not start")
        for proc in procs:  # all go together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"bench worker failed ({proc.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


async def _reseed(url: str, pairs: list[workload.Pair]) -> None:
    store = connect(url)
    try:
        await seed(url, store, pairs)
    finally:
        await store.close()


def _row(name: str, runs: list[dict[str, Any]], redis_cpu: float | None) -> dict[str, Any]:
    calls = sum(run["calls"] for run in runs)
    span = max(run["ended"] for run in runs) - min(run["started"] for run in runs)
    cpu = sum(run["cpu_seconds"] for run in runs)
    outcomes: Counter[str] = Counter()
    for run in runs:
        outcomes.update(run["outcomes"])
    return {
        "name": name,
        "processes": len(runs),
        "concurrency_each": CONCURRENCY,
        "calls": calls,
        "per_second": round(calls / span, 1) if span else None,
        "cpu_us_per_decision": round(cpu / calls * 1e6, 1) if calls else None,
        "decisions_per_cpu_s": round(calls / cpu, 1) if cpu else None,
        "redis_cpu_us_per_decision": round(redis_cpu / calls * 1e6, 1) if redis_cpu is not None and calls else None,
        "p99_us_worst": round(max(run["p99_us"] for run in runs), 1),
        "outcomes": dict(outcomes.most_common()),
        "npv_guard": sorted({run["npv_guard"] for run in runs}),
    }


def bench_scale(
    url: str, server_pid: int | None, sizes: Sizes, *, baseline: bool = True, concurrency: int = CONCURRENCY
) -> dict[str, Any]:
    calls = sizes.worker_calls
    per_worker = -(-calls // 3)  # pairs per worker: at most 3 calls each
    population = 2 * per_worker
    pairs = workload.redis_pairs(population)
    tree = baseline_tree() if baseline else None
    configs: list[tuple[str, list[tuple[int, int]], Path | None]] = [
        ("one guard process", [(0, per_worker)], None),
        ("two guard processes", [(0, per_worker), (per_worker, per_worker)], None),
    ]
    if tree is not None:
        configs.append(("one guard process, before #20", [(0, per_worker)], tree))
    runs: dict[str, list[list[dict[str, Any]]]] = {name: [] for name, _, _ in configs}
    redis_cpu: dict[str, float] = {name: 0.0 for name, _, _ in configs}
    # The whole machine's busy CPU seconds during each row: what the guards and Redis left to the rest.
    machine_busy: dict[str, float] = {name: 0.0 for name, _, _ in configs}
    try:
        for _ in range(sizes.rounds):
            for name, slices, code in configs:
                asyncio.run(_reseed(url, pairs))
                before = process_cpu_seconds(server_pid) if server_pid else None
                with MachineSampler() as sampler:
                    round_runs = _workers(url, population, slices, calls, code, concurrency)
                runs[name].append(round_runs)
                after = process_cpu_seconds(server_pid) if server_pid else None
                if before is not None and after is not None:
                    redis_cpu[name] += after - before
                start, end = min(r["started"] for r in round_runs), max(r["ended"] for r in round_runs)
                busy = sampler.busy_between(start, end)
                machine_busy[name] += busy or 0.0
    finally:
        if tree is not None:
            shutil.rmtree(tree, ignore_errors=True)
    rows = {}
    for name, _, _ in configs:
        # Each round's processes are one measurement; the rows sum the rounds' calls, CPU and spans.
        merged = [_merge_round(round_runs) for round_runs in runs[name]]
        rows[name] = _sum_rounds(name, merged, redis_cpu[name] if server_pid else None)
        rows[name]["concurrency_each"] = concurrency
        rows[name].update(_cores(rows[name], merged, machine_busy[name], redis_cpu[name] if server_pid else None))
    one, two = rows["one guard process"], rows["two guard processes"]
    before = rows.get("one guard process, before #20")
    redis_us = one["redis_cpu_us_per_decision"]
    cpus = os.cpu_count() or 1
    return {
        "rows": list(rows.values()),
        "baseline_ref": BASELINE_REF if before else None,
        "ratios": {
            "two_vs_one_processes": ratio(two["per_second"], one["per_second"]),
            "decisions_per_cpu_s_vs_before": ratio(one["decisions_per_cpu_s"], before["decisions_per_cpu_s"])
            if before
            else None,
            "throughput_vs_before": ratio(one["per_second"], before["per_second"]) if before else None,
            # Each of two processes' decisions per CPU-second against one's: about 1 when the guards
            # do not slow each other down beyond sharing the cores.
            "two_vs_one_per_cpu_s": ratio(two["decisions_per_cpu_s"], one["decisions_per_cpu_s"]),
            # The most two processes could reach over one on this machine's cores with the CPU per
            # decision measured (guard + Redis), if nothing else ran on them (the 1.7x target's ceiling).
            "two_vs_one_cpu_ceiling": _ceiling(one, cpus),
        },
        # One Redis core spent on decisions only: the ceiling whatever the number of guard processes.
        "redis_ceiling_per_s": round(1e6 / redis_us, 1) if redis_us else None,
        "cpus": cpus,
    }


def _cores(row: dict[str, Any], rounds: list[dict[str, Any]], busy: float, redis_cpu: float | None) -> dict[str, Any]:
    """Cores busy on average during the row: its guard processes, Redis, and everything else."""
    span = sum(merged["span"] for merged in rounds)
    if not span:
        return {}
    guards = sum(merged["cpu_seconds"] for merged in rounds) / span
    redis = redis_cpu / span if redis_cpu is not None else 0.0
    return {
        "guard_cores": round(guards, 2),
        "redis_cores": round(redis, 2),
        "machine_busy_cores": round(busy / span, 2) if busy else None,
        # The bench parent, other jobs on the machine: CPU the guards could not have.
        "other_cores": round(max(0.0, busy / span - guards - redis), 2) if busy else None,
    }


def _ceiling(one: dict[str, Any], cpus: int) -> float | None:
    """Two processes over one on `cpus` idle cores, from the CPU per decision alone: a process uses
    at most one core (an event loop), and every decision also costs Redis its CPU on the same cores."""
    guard_us, redis_us = one["cpu_us_per_decision"], one["redis_cpu_us_per_decision"] or 0.0
    if not guard_us:
        return None
    all_cores = cpus * 1e6 / (guard_us + redis_us)  # decisions/s with every core busy
    one_most, two_most = min(1e6 / guard_us, all_cores), min(2e6 / guard_us, all_cores)
    return round(two_most / one_most, 2)


def _merge_round(round_runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "calls": sum(r["calls"] for r in round_runs),
        "span": max(r["ended"] for r in round_runs) - min(r["started"] for r in round_runs),
        "cpu_seconds": sum(r["cpu_seconds"] for r in round_runs),
        "p99_us": max(r["p99_us"] for r in round_runs),
        "outcomes": sum((Counter(r["outcomes"]) for r in round_runs), Counter()),
        "npv_guard": round_runs[0]["npv_guard"],
        "processes": len(round_runs),
    }


def _sum_rounds(name: str, rounds: list[dict[str, Any]], redis_cpu: float | None) -> dict[str, Any]:
    fake_runs = []
    start = 0.0
    for merged in rounds:  # laid end to end: the row's span is the sum of its rounds' spans
        fake_runs.append({**merged, "started": start, "ended": start + merged["span"]})
        start += merged["span"]
    row = _row(name, fake_runs, redis_cpu)
    row["processes"] = rounds[0]["processes"] if rounds else 0
    return row
