"""The benchmarks stay runnable: every bench module imports, and the parts that need no lab run
at a tiny size and render (`make bench` once stopped on an ImportError before measuring anything)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import common, core, decisions, run, scale, table
from tests.support.redis_servers import RedisServer

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(path.stem for path in BENCH.glob("*.py") if path.stem != "__init__")
TINY = dataclasses.replace(
    common.QUICK, core_inputs=200, core_count=400, core_budget_s=0.5, pairs=60, redis_count=120,
    redis_budget_s=2.0, rounds=1, worker_calls=90,
)  # fmt: skip


def test_every_bench_module_is_listed() -> None:
    parts = {"run", "core", "decisions", "scale", "worker", "consents", "api", "scrub", "sip", "report", "table"}
    assert parts | {"common", "measure", "workload"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")


def test_bench_run_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--help"],
        cwd=BENCH.parent, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--only" in result.stdout


def test_core_part_runs_at_a_tiny_size() -> None:
    result = core.bench_core(TINY, None)
    json.dumps(result)  # what latest.json receives
    assert result["rows"]


@pytest.mark.redis
def test_redis_and_scale_parts_run_at_a_tiny_size_and_the_table_names_the_targets(redis_server: RedisServer) -> None:
    pid = redis_server.process.pid if redis_server.process else None
    redis_part = asyncio.run(decisions.bench_redis(redis_server.url, pid, TINY, None))
    for level in redis_part["levels"].values():  # every call decided (a loaded machine may time some out)
        guard = next(row for row in level["rows"] if row["name"] == "Guard.check(record=True)")
        assert guard["count"] > 0 and sum(level["guard_outcomes"].values()) == guard["count"]
    scale_part = scale.bench_scale(redis_server.url, pid, TINY, baseline=False, concurrency=5)
    assert [(row["processes"], row["calls"]) for row in scale_part["rows"]] == [(1, 90), (2, 180)]
    assert all(sum(row["outcomes"].values()) == row["calls"] for row in scale_part["rows"])
    results = {"quick": True, "redis": redis_part, "scale": scale_part, "machine": common.machine("7")}
    results["targets"] = table.targets(results)
    json.dumps(results)
    figures = [target["figure"] for target in results["targets"]]
    expected = [f"decision through Redis p99, c={c}" for c in common.LEVELS for _ in ("redis-py", "pipelined")]
    assert [f for f in figures if "p99, c=" in f] == expected
    assert "decisions/s, two guard processes" in figures
    text = table.render(results)
    assert text.index("ISSUE #20 TARGETS") < text.index("Guard.check(record=True)")


def test_parts_are_the_documented_ones() -> None:
    assert set(run.PARTS) == {"core", "redis", "scale", "import", "sip", "api", "scrub", "report"}
