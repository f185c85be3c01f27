"""The benchmarks stay runnable: every bench module imports, and the parts that need no lab run
at a tiny size (`make bench` once stopped on an ImportError before measuring anything)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(path.stem for path in BENCH.glob("*.py") if path.stem != "__init__")


def test_every_bench_module_is_listed() -> None:
    assert {"run", "api", "scrub", "sip", "measure", "workload"} <= set(MODULES)


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
    tiny = dataclasses.replace(run.QUICK, core_inputs=200, core_count=400, core_budget_s=0.5, rounds=1)
    result = run.bench_core(tiny, None)
    json.dumps(result)  # what latest.json receives
    assert result
