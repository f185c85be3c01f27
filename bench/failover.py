"""Redundant ARI guards (docs/redundancy.md): failover gap and the failover include's cost.

    flock /tmp/npv-lab.lock .venv/bin/python -m bench.failover [--kills N] [--calls N] [--json FILE]

Through the real lab Asterisk with two guards (apps npv-guard and npv-guard-b), calls to
consumers without consent (decided, rejected 403: no media, so only the call path is measured):

  pdd     post-dial delay (INVITE to the final response) at 20 calls/s, the plain include
          ([npv-guard-ari], app npv-guard) against the failover include ([npv-guard-ari-ha],
          npv-guard&npv-guard-b), same guards, same rate
  gap     sipp at 20 calls/s while one guard after the other is SIGKILLed and restarted: for
          each kill, the longest time a call placed around it waited for its decision (calls the
          dead guard held wait for the takeover; new calls skip the dead app at once), and the
          calls that failed

Standalone on purpose (bench/run.py is being split): `run_failover(kills, calls)` returns the
JSON-ready result and `render_failover(result)` its Markdown lines, for the runner to call.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.guard import GuardProcess
from tests.support.lab import AsteriskLab, SippResult, ensure_lab_root, free_udp_port, run_sipp
from tests.support.redis_servers import RedisServer

NOW = "2026-12-01T10:30:00"
RATE = 20.0
APPS = ("npv-guard", "npv-guard-b")


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def rank(fraction: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]

    return {"count": len(ordered), "p50": rank(0.5), "p99": rank(0.99), "max": ordered[-1]}


def _calls(result: SippResult) -> list[tuple[float, float]]:
    """(start instant in s, INVITE-to-final-response in ms) per call, from sipp's rtt file."""
    rows = []
    for path in result.workdir.glob("*_rtt.csv"):
        with path.open() as handle:
            for row in csv.DictReader(handle, delimiter=";"):
                if row.get("rtd_no") == "ring":
                    date = next(v for k, v in row.items() if k and k.lower().startswith("date"))
                    done_s = float(date) / 1000
                    spent = float(row["response_time_ms"])
                    rows.append((done_s - spent / 1000, spent))
    return sorted(rows)


class FailoverBench:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="npv-bench-failover-"))
        self.lab = AsteriskLab()
        self.redis = RedisServer()
        self.carrier_port = free_udp_port()
        self.guards: dict[str, GuardProcess] = {}
        self.next_number = 0

    def __enter__(self) -> FailoverBench:
        ensure_lab_root()
        self.lab.start()
        self.redis.start()
        for app in APPS:
            guard = GuardProcess(redis_url=self.redis.url, carrier_port=self.carrier_port, key_prefix="failover",
                                 now=NOW, app=app, ari={"guard_lease_s": 1.0})  # fmt: skip
            guard.config.write_text(guard.config.read_text().replace('level = "debug"', 'level = "info"'))
            self.guards[app] = guard.start()
        self.sipp(5, 20, "&".join(APPS))  # warm: connections, scripts
        return self

    def __exit__(self, *exc: object) -> None:
        for guard in self.guards.values():
            guard.stop()
        self.redis.cleanup()
        self.lab.stop()

    def sipp(self, rate: float, calls: int, guards: str) -> SippResult:
        numbers = [f"06{50000000 + self.next_number + i:08d}" for i in range(calls)]
        self.next_number += calls
        injection = self.workdir / f"numbers-{self.next_number}.csv"
        injection.write_text("SEQUENTIAL\n" + "".join(f"{n}\n" for n in numbers))
        return run_sipp(
            "uac_ha.xml",
            service="x",
            calls=calls,
            rate=rate,
            variables={"guards": guards, "caller": "0162000001"},
            timeout_s=calls / rate + 40,
            extra_args=("-inf", str(injection), "-l", "200", "-trace_rtt", "-rtt_freq", "1"),
        )

    def pdd(self, calls: int) -> dict[str, Any]:
        plain = self.sipp(RATE, calls, "")
        failover = self.sipp(RATE, calls, "&".join(APPS))
        return {
            "plain": {"failed": plain.failed, "ms": _summary([ms for _, ms in _calls(plain)])},
            "failover": {"failed": failover.failed, "ms": _summary([ms for _, ms in _calls(failover)])},
        }

    def gap(self, kills: int) -> dict[str, Any]:
        period_s = 6.0
        holder: dict[str, SippResult] = {}
        total = int(RATE * (period_s * kills + 4))
        dialer = threading.Thread(target=lambda: holder.update(r=self.sipp(RATE, total, "&".join(APPS))))
        started = time.time()  # sipp's rtt instants count from its own start
        dialer.start()
        time.sleep(2.0)
        kill_instants = []
        for index in range(kills):
            guard = self.guards[APPS[index % 2]]
            kill_instants.append(time.time() - started)
            guard.kill()
            time.sleep(1.0)
            guard.start()  # waits for the dead instance's entry to expire (one lease)
            time.sleep(max(0.0, started + kill_instants[-1] + period_s - time.time()))
        dialer.join(total / RATE + 60)
        result = holder["r"]
        calls = _calls(result)
        gaps = []
        for instant in kill_instants:
            around = [ms for start, ms in calls if instant - 0.5 <= start <= instant + period_s - 1]
            gaps.append(max(around) if around else 0.0)
        return {
            "kills": kills,
            "calls": total,
            "failed": result.failed,
            "gap_ms": _summary(gaps),
            "per_kill_ms": gaps,
            "slowest_ms": _summary([ms for _, ms in calls]),
        }


def run_failover(kills: int = 6, calls: int = 400) -> dict[str, Any]:
    with FailoverBench() as bench:
        return {"rate": RATE, "pdd": bench.pdd(calls), "gap": bench.gap(kills)}


def render_failover(result: dict[str, Any]) -> list[str]:
    pdd, gap = result["pdd"], result["gap"]

    def cell(summary: dict[str, float] | None, key: str) -> str:
        return "-" if summary is None else f"{summary[key]:.0f}"

    lines = [
        f"Post-dial delay at {result['rate']:.0f} calls/s (INVITE to the final 403, ms):",
        "",
        "| include | p50 | p99 | max | failed |",
        "|---|---|---|---|---|",
    ]
    for way in ("plain", "failover"):
        row = pdd[way]
        ms = row["ms"]
        lines.append(f"| {way} | {cell(ms, 'p50')} | {cell(ms, 'p99')} | {cell(ms, 'max')} | {row['failed']} |")
    lines += [
        "",
        f"Failover gap over {gap['kills']} SIGKILLs at {result['rate']:.0f} calls/s ({gap['calls']} calls, "
        f"{gap['failed']} failed): longest wait for a decision around a kill p50 {cell(gap['gap_ms'], 'p50')} ms, "
        f"max {cell(gap['gap_ms'], 'max')} ms.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--calls", type=int, default=400, help="calls per include for the post-dial delay")
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    result = run_failover(args.kills, args.calls)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(render_failover(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
