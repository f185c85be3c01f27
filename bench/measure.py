"""Timing loops, bounded in count and in time, and their statistics."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis.exceptions import RedisError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Stats:
    name: str
    count: int
    seconds: float
    p50_us: float
    p99_us: float
    mean_us: float
    concurrency: int = 1
    cpu_seconds: float = 0.0  # this process's CPU time over the row (steadier than wall time on a busy machine)
    server_cpu_seconds: float | None = None  # redis-server's CPU time over the row, when measured

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Process CPU time per call, in microseconds."""
        return self.cpu_seconds / self.count * 1e6 if self.count else 0.0

    @property
    def server_cpu_us(self) -> float | None:
        """redis-server's CPU time per call, in microseconds."""
        if self.server_cpu_seconds is None or not self.count:
            return None
        return self.server_cpu_seconds / self.count * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 4),
            "per_second": round(self.per_second, 1),
            "p50_us": round(self.p50_us, 2),
            "p99_us": round(self.p99_us, 2),
            "mean_us": round(self.mean_us, 2),
            "cpu_us": round(self.cpu_us, 2),
            "redis_cpu_us": None if self.server_cpu_us is None else round(self.server_cpu_us, 2),
        }


def _percentile(ordered: Sequence[int], fraction: float) -> float:
    """Nearest rank on sorted nanoseconds, in microseconds."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank] / 1000


def stats(
    name: str,
    latencies_ns: list[int],
    seconds: float,
    concurrency: int = 1,
    cpu_seconds: float = 0.0,
    server_cpu_seconds: float | None = None,
) -> Stats:
    ordered = sorted(latencies_ns)
    mean = sum(ordered) / len(ordered) / 1000 if ordered else 0.0
    p50, p99 = _percentile(ordered, 0.50), _percentile(ordered, 0.99)
    return Stats(name, len(ordered), seconds, p50, p99, mean, concurrency, cpu_seconds, server_cpu_seconds)


class Samples:
    """One row of the table, filled over several rounds interleaved with the other rows of its part,
    so that a machine that drifts during the run drifts for the guard and its floor alike."""

    def __init__(self, name: str, concurrency: int = 1) -> None:
        self.name = name
        self.concurrency = concurrency
        self.latencies: list[int] = []
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.server_cpu_seconds: float | None = None

    def stats(self) -> Stats:
        return stats(
            self.name, self.latencies, self.seconds, self.concurrency, self.cpu_seconds, self.server_cpu_seconds
        )


def time_sync(
    samples: Samples, op: Callable[[T], object], items: Sequence[T], start: int, count: int, budget_s: float
) -> None:
    """Call `op` on items[start:start+count] (cycling), or until `budget_s` is spent, one call at a time."""
    latencies = samples.latencies
    append, clock, n = latencies.append, time.perf_counter_ns, len(items)
    deadline = clock() + int(budget_s * 1e9)
    cpu = time.process_time()
    began = clock()
    for i in range(start, start + count):
        t0 = clock()
        op(items[i % n])
        t1 = clock()
        append(t1 - t0)
        if t1 > deadline:
            break
    samples.seconds += (clock() - began) / 1e9
    samples.cpu_seconds += time.process_time() - cpu


async def time_async(
    samples: Samples, op: Callable[[int], Awaitable[object]], start: int, count: int, budget_s: float
) -> int:
    """`samples.concurrency` worker coroutines share indexes start..start+count-1 (or stop at `budget_s`);
    each awaits `op(i)`. The latency of a call is what its caller sees, event-loop queueing included;
    the throughput is the whole process's. Returns how many calls were made.
    """
    latencies = samples.latencies
    before = len(latencies)
    indexes = itertools.count(start)
    stop = start + count
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)

    async def worker() -> None:
        for i in indexes:
            if i >= stop or clock() > deadline:
                return
            t0 = clock()
            await op(i)
            latencies.append(clock() - t0)

    cpu = time.process_time()
    began = clock()
    await asyncio.gather(*(worker() for _ in range(samples.concurrency)))
    samples.seconds += (clock() - began) / 1e9
    samples.cpu_seconds += time.process_time() - cpu
    return len(latencies) - before


WARM_UP_TRIES = 5


async def warm_up(op: Callable[[int], Awaitable[object]], concurrency: int, rounds: int = 5) -> None:
    """Open the connections a level needs (and warm the code) before timing it."""
    await asyncio.gather(*(_repeat(op, rounds) for _ in range(concurrency)))


async def _repeat(op: Callable[[int], Awaitable[object]], rounds: int) -> None:
    for i in range(rounds):
        for attempt in range(WARM_UP_TRIES):
            try:
                await op(i)
                break
            except (RedisError, OSError, TimeoutError):
                # Opening a level's connections all at once may outlast the guard's 200 ms connect
                # timeout on a busy machine; the warm-up is not timed, so it tries again.
                if attempt == WARM_UP_TRIES - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of another process (Linux /proc), or None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
