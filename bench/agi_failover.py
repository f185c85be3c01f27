"""FastAGI failover through the real lab Asterisk: what npv-guard-agi.conf's list of servers
(NPV_GUARD_AGI=HOST:PORT&HOST:PORT) costs and how long a killed server leaves calls undecided.

`python -m bench.agi_failover [--calls 400] [--kills 8] [--json FILE]` (under
`flock /tmp/npv-lab.lock`: it starts the lab Asterisk). Two `npv-guard agi` processes share one
Redis; sipp calls from 127.0.0.3 at 20 calls/s, consumers without consent, so every call is
decided (Redis read, rules) and rejected 403 with no carrier leg: sipp's "verdict" counter,
INVITE to the final response, is the post-dial delay the guard path adds.

  pdd   the same calls three ways: one server (the plain include), the list with its first
        server up, the list with its first server down (connection refused, then the second);
  gap   calls stream through the list while the first server is SIGKILLed every 3 s and
        restarted 1.5 s later: per kill, the longest verdict time of the calls answered within
        1 s after it (a call cut mid-session is retried on the next server), p50/max over kills,
        and the calls that failed (none should: 0 rejected for want of a guard).

For bench/run.py: `run_agi_failover(calls, kills) -> dict` and `render_agi_failover(dict) -> list[str]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.guard import GuardProcess
from tests.support.lab import DIALER_AGI_IP, AsteriskLab, SippResult, ensure_lab_root, run_sipp
from tests.support.redis_servers import RedisServer, free_tcp_port

RATE = 20.0
NOW = "2026-12-01T10:30:00"
KILL_PERIOD_S = 3.0
RESTART_AFTER_S = 1.5


def _rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


class FailoverBench:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="npv-bench-agi-failover-"))
        self.lab = AsteriskLab()
        self.redis = RedisServer()
        self.guards: list[GuardProcess] = []
        self.next_consumer = 0

    def __enter__(self) -> FailoverBench:
        ensure_lab_root()
        self.lab.start()
        self.redis.start()
        for _ in range(2):
            guard = GuardProcess(
                redis_url=self.redis.url,
                carrier_port=5070,
                key_prefix="benchfailover",
                now=NOW,
                mode="agi",
                agi_port=free_tcp_port(),
            )
            guard.config.write_text(guard.config.read_text().replace('level = "debug"', 'level = "info"'))
            self.guards.append(guard.start())
        return self

    def __exit__(self, *exc: object) -> None:
        for guard in self.guards:
            guard.stop()
        self.lab.rx("dialplan set global NPV_GUARD_AGI ")
        self.redis.cleanup()
        self.lab.stop()

    def port(self, index: int) -> int:
        guard = self.guards[index]
        return int(
            next(line for line in guard.config.read_text().splitlines() if line.startswith("port = ")).split()[-1]
        )

    def servers(self, ports: list[int]) -> None:
        self.lab.rx("dialplan set global NPV_GUARD_AGI " + "&".join(f"127.0.0.1:{port}" for port in ports))

    def stream(self, calls: int) -> tuple[SippResult, float]:
        """`calls` rejected calls at RATE; the sipp result and its start (epoch s)."""
        numbers = [f"06{50000000 + self.next_consumer + i:08d}" for i in range(calls)]
        self.next_consumer += calls
        injection = self.workdir / f"calls-{self.next_consumer}.csv"
        injection.write_text("SEQUENTIAL\n" + "".join(f"{n};403;\n" for n in numbers))
        started = time.time()
        result = run_sipp(
            "uac_verdicts.xml",
            local_ip=DIALER_AGI_IP,
            calls=calls,
            rate=RATE,
            variables={"caller": "0162000001", "carrier_port": "5070"},
            timeout_s=calls / RATE + 40,
            extra_args=("-inf", str(injection), "-l", "100", "-trace_rtt", "-rtt_freq", "1"),
        )
        return result, started


def _verdicts(result: SippResult) -> list[tuple[float, float]]:
    """(response instant as sipp dates it, ms; verdict time, ms) per call."""
    rows: list[tuple[float, float]] = []
    for path in result.workdir.glob("*_rtt.csv"):
        with path.open() as handle:
            for row in csv.DictReader(handle, delimiter=";"):
                if row.get("rtd_no") == "verdict":
                    rows.append((float(row["Date_ms"]), float(row["response_time_ms"])))
    return rows


def _summary(values: list[float]) -> dict[str, float]:
    return {"count": len(values), "p50": _rank(values, 0.5), "p99": _rank(values, 0.99), "max": max(values)}


def _unavailable(lab: AsteriskLab, since: int) -> int:
    return len(re.findall(r"\] WARNING\[.*: guard unavailable", lab.log_text(since)))


def run_agi_failover(calls: int = 400, kills: int = 8) -> dict[str, Any]:
    with FailoverBench() as bench:
        first, second, dead = bench.port(0), bench.port(1), free_tcp_port()
        bench.servers([first])
        bench.stream(40)  # warm: connections, scripts, caches
        pdd: dict[str, Any] = {}
        for way, ports in (
            ("plain", [first]),
            ("list, first up", [first, second]),
            ("list, first down", [dead, first]),
        ):
            bench.servers(ports)
            mark = bench.lab.log_mark()
            result, _ = bench.stream(calls)
            times = [ms for _, ms in _verdicts(result)]
            pdd[way] = {**_summary(times), "failed": result.failed, "unavailable": _unavailable(bench.lab, mark)}
        bench.servers([first, second])
        mark = bench.lab.log_mark()
        killed: list[float] = []
        victim = bench.guards[0]

        def fault() -> None:
            time.sleep(2.0)
            for _ in range(kills):
                killed.append(time.time())
                victim.kill()
                time.sleep(RESTART_AFTER_S)
                victim.start()
                time.sleep(max(0.0, KILL_PERIOD_S - RESTART_AFTER_S))

        injector = threading.Thread(target=fault)
        stream_calls = int(RATE * (2.0 + kills * KILL_PERIOD_S + 1.0))
        injector.start()
        result, started = bench.stream(stream_calls)
        injector.join(120)
        rows = _verdicts(result)
        # sipp dates its rtt rows in ms since its own start; the kills are wall-clock instants.
        gaps = []
        for instant in killed:
            offset = (instant - started) * 1000
            around = [ms for at, ms in rows if offset <= at <= offset + 1000]
            if around:
                gaps.append(max(around))
        steady = [ms for at, ms in rows if not any(0 <= at - (k - started) * 1000 <= 1000 for k in killed)]
        gap = {
            "kills": len(killed),
            "p50": _rank(gaps, 0.5) if gaps else None,
            "max": max(gaps) if gaps else None,
            "steady_p50": _rank(steady, 0.5) if steady else None,
            "calls": stream_calls,
            "failed": result.failed,
            "unavailable": _unavailable(bench.lab, mark),
        }
        return {"rate": RATE, "calls": calls, "pdd": pdd, "gap": gap}


def render_agi_failover(data: dict[str, Any]) -> list[str]:
    lines = [f"  agi failover: INVITE to 403 through npv-guard-agi.conf at {data['rate']:.0f} calls/s, ms"]
    plain = data["pdd"]["plain"]
    for way, row in data["pdd"].items():
        added = (
            ""
            if way == "plain"
            else f"  adds p50 {row['p50'] - plain['p50']:+.0f} / p99 {row['p99'] - plain['p99']:+.0f}"
        )
        lines.append(
            f"    {way:<17} {row['count']:>5} calls {row['failed']:>2} failed {row['unavailable']:>2} unavailable  "
            f"p50 {row['p50']:.0f} p99 {row['p99']:.0f} max {row['max']:.0f}{added}"
        )
    gap = data["gap"]
    lines.append(
        f"    gap over {gap['kills']} SIGKILLs of the first server: longest verdict within 1 s of a kill "
        f"p50 {gap['p50']} max {gap['max']} ms (steady p50 {gap['steady_p50']} ms); "
        f"{gap['calls']} calls, {gap['failed']} failed, {gap['unavailable']} rejected for want of a guard"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per post-dial-delay way")
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs of the first server in the gap run")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    data = run_agi_failover(args.calls, args.kills)
    print("\n".join(render_agi_failover(data)))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
