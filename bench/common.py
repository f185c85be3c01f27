"""What the benchmark parts share: paths, the guard's client settings, small helpers."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from npv_guard.core.numbering import parse as parse_number
from npv_guard.store import ConsumerHasher, Store

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-secret-0123456789abcdef"
TIMEOUT_S = 0.2  # redis.timeout_ms default, for the guard and the floors alike
LEVELS = (1, 10, 100)


def secret_hasher() -> ConsumerHasher:
    return ConsumerHasher(SECRET)


def connect(url: str) -> Store:
    """A store exactly as the guard builds one (Store.connect: same redis-py client and options)."""
    return Store.connect(url, secret_hasher(), timeout=TIMEOUT_S)


def e164(national: str) -> str:
    """The consumer's E.164 number as the guard keys it (our own plan: 0696 is +596, not +33)."""
    number = parse_number(national).e164
    if number is None:
        raise ValueError(f"bench consumer {national} is not a French number")
    return number


def ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


def outcome(codes: tuple[str, ...]) -> str:
    return "+".join(sorted(codes)) if codes else "allow"


def ratio(value: float | None, baseline: float | None) -> float | None:
    return round(value / baseline, 2) if value is not None and baseline else None


async def flushdb(url: str) -> None:
    # Its own client, without the guard's 200 ms socket timeout: emptying millions of keys takes longer.
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def flush(url: str) -> None:
    asyncio.run(flushdb(url))


def guard_command() -> list[str]:
    script = Path(sys.executable).parent / "npv-guard"
    if script.exists():
        return [str(script)]
    found = shutil.which("npv-guard")
    if not found:
        raise SystemExit("bench: npv-guard is not installed (run scripts/bootstrap)")
    return [found]


def guard_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    env.update(NPV_GUARD_REDIS_URL=url, NPV_GUARD_HASH_SECRET=SECRET)
    return env


@contextmanager
def profiled(output: Path, title: str) -> Iterator[None]:
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
    worker_calls: int  # per guard process in the scale-out part


FULL = Sizes(20_000, 200_000, 20.0, 10_000, 20_000, 15.0, 1_000_000, 4, 20_000)
QUICK = Sizes(5_000, 20_000, 4.0, 2_000, 3_000, 4.0, 100_000, 2, 4_000)
