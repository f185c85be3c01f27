"""The decision core in-process: prepare() + decide() against phonenumbers.parse of the same two numbers."""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path
from typing import Any

import phonenumbers

from bench import workload
from bench.common import Sizes, outcome, profiled, ratio
from bench.measure import Samples, time_sync
from npv_guard.core.decide import decide, prepare


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

    verdicts = Counter(outcome(decide(prepare(c.request, policy), None, policy).codes) for c in calls)
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
        with profiled(profile_dir / "profile-core.txt", "core: decide(prepare()) offline"):
            time_sync(Samples("profiled"), offline, calls, 0, sizes.core_count, sizes.core_budget_s)
    floor_row, offline_row, state_row = (samples.stats() for samples in rows)
    return {
        "rows": [row.as_dict() for row in (floor_row, offline_row, state_row)],
        "inputs": len(calls),
        "verdict_mix": dict(verdicts.most_common()),
        "ratios": {
            "offline_vs_floor_mean": ratio(offline_row.mean_us, floor_row.mean_us),
            "offline_vs_floor_p50": ratio(offline_row.p50_us, floor_row.p50_us),
            "offline_vs_floor_p99": ratio(offline_row.p99_us, floor_row.p99_us),
            "state_vs_floor_mean": ratio(state_row.mean_us, floor_row.mean_us),
        },
        "decisions_per_s": round(offline_row.per_second, 1),
        "decisions_per_s_with_state": round(state_row.per_second, 1),
    }
