"""Parts 3 and 4: what the guard adds to call setup, through the real lab Asterisk with sipp.

The same calls (distinct consumers who consented, so the cap never interferes) go three ways
to the same consumer UAS:
  baseline  127.0.0.2 -> a plain dialplan Dial()              (the floor)
  ari       127.0.0.1 -> Stasis -> npv-guard run -> originate  (ARI mode)
  agi       127.0.0.3 -> Gosub/AGI npv-guard agi -> own Dial()  (FastAGI mode)
sipp measures post-dial delay (INVITE to the first 180/183) and INVITE to 200 OK per call, at 1,
10 and 50 calls/s; then a ramp finds the highest rate each way keeps with 0 failed calls for the
step duration (60 s in the full run). sipp's response times come in 4 ms steps on this machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from tests.support.guard import GuardProcess
from tests.support.lab import (
    DIALER_AGI_IP,
    DIALER_IP,
    DIALER_PLAIN_IP,
    AsteriskLab,
    SippResult,
    ensure_lab_root,
    free_udp_port,
    run_sipp,
)
from tests.support.redis_servers import RedisServer

SCENARIO = Path(__file__).parent / "sipp" / "uac_pdd.xml"
WAYS = {"baseline": DIALER_PLAIN_IP, "ari": DIALER_IP, "agi": DIALER_AGI_IP}
NOW = "2026-12-01T10:30:00"


class SipBench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.workdir = Path(tempfile.mkdtemp(prefix="npv-bench-sip-"))
        self.next_consumer = 0
        self.lab = AsteriskLab()
        self.redis = RedisServer()
        self.guards: dict[str, GuardProcess] = {}
        self.carrier_port = free_udp_port()

    def __enter__(self) -> SipBench:
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> SipBench:
        ensure_lab_root()
        self.lab.start()
        self.redis.start()
        for mode in ("ari", "agi"):
            guard = GuardProcess(
                redis_url=self.redis.url,
                carrier_port=self.carrier_port,
                key_prefix="bench",
                now=NOW,
                mode=mode,
                ari={"ring_timeout_s": 10},
            )
            # The default production log level (info), not the tests' debug.
            guard.config.write_text(guard.config.read_text().replace('level = "debug"', 'level = "info"'))
            self.guards[mode] = guard.start()
        for way in WAYS:  # connections opened, scripts loaded, caches warm: not measured
            self.run(way, 5.0, 5)
        return self

    def __exit__(self, *exc: object) -> None:
        for guard in self.guards.values():
            guard.stop()
        self.redis.cleanup()
        self.lab.stop()

    def consumers(self, count: int) -> Path:
        """`count` fresh consumers with consent recorded, as a sipp injection file."""
        numbers = [f"06{40000000 + self.next_consumer + i:08d}" for i in range(count)]
        self.next_consumer += count
        consents = self.workdir / f"consents-{self.next_consumer}.csv"
        consents.write_text("".join(f"{n},2026-09-01,consent,bench\n" for n in numbers))
        imported = self.guards["ari"].cli("consent", "import", "--professional", "lab", str(consents))
        if imported.returncode != 0:
            raise RuntimeError(f"consent import failed: {imported.stderr[-500:]}")
        injection = self.workdir / f"numbers-{self.next_consumer}.csv"
        injection.write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in numbers))
        return injection

    def guard_cost(self, way: str) -> tuple[float, float] | None:
        """The guard's process CPU seconds so far and, in ARI mode, the ARI requests it made."""
        guard = self.guards.get(way)
        if guard is None or guard.process is None:
            return None
        fields = Path(f"/proc/{guard.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        requests = 0.0
        if way == "ari":
            _, text = guard.http("/metrics")
            for line in text.splitlines():
                if line.startswith("npv_guard_ari_requests_total{"):
                    requests += float(line.rsplit(" ", 1)[1])
        return cpu_s, requests

    def run(self, way: str, rate: float, calls: int) -> dict[str, Any]:
        injection = self.consumers(calls)
        before = self.guard_cost(way)
        uas = run_sipp(
            "uas_answer.xml",
            local_port=self.carrier_port,
            calls=calls,
            variables={"hold_ms": "2000"},
            timeout_s=calls / rate + 60,
            background=True,
        )
        uac: SippResult = run_sipp(
            SCENARIO,
            local_ip=WAYS[way],
            calls=calls,
            rate=rate,
            variables={"caller": "0162000001", "hold_ms": "100", "carrier_port": str(self.carrier_port)},
            timeout_s=calls / rate + 40,
            extra_args=("-inf", str(injection), "-l", str(max(int(rate * 3), 10)), "-trace_rtt", "-rtt_freq", "1"),
        )
        if uas.running():
            uas.stop()
        else:
            uas.wait(30)
        self.lab.wait_no_channels(timeout=30)
        after = self.guard_cost(way)
        ring, answer = _rtt(uac)
        row: dict[str, Any] = {
            "way": way,
            "rate": rate,
            "calls": calls,
            "successful": uac.successful,
            "failed": uac.failed,
            "ring_ms": _summary(ring),
            "answer_ms": _summary(answer),
        }
        if before is not None and after is not None:
            row["guard_cpu_ms_per_call"] = round((after[0] - before[0]) * 1000 / calls, 2)
            if way == "ari":
                row["ari_requests_per_call"] = round((after[1] - before[1]) / calls, 2)
        return row


def _cost(row: dict[str, Any]) -> str:
    """What the guard process spent on the row's calls: CPU, and ARI requests in ARI mode."""
    parts = []
    if "guard_cpu_ms_per_call" in row:
        parts.append(f"guard CPU {row['guard_cpu_ms_per_call']} ms/call")
    if "ari_requests_per_call" in row:
        parts.append(f"{row['ari_requests_per_call']} ARI requests/call")
    return "  (" + ", ".join(parts) + ")" if parts else ""


def _summary(values_ms: list[float]) -> dict[str, float] | None:
    """Nearest-rank p50/p99 and the mean, in milliseconds."""
    if not values_ms:
        return None
    ordered = sorted(values_ms)

    def rank(fraction: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]

    return {"count": len(ordered), "p50": rank(0.5), "p99": rank(0.99), "mean": round(sum(ordered) / len(ordered), 2)}


def _rtt(result: SippResult) -> tuple[list[float], list[float]]:
    ring: list[float] = []
    answer: list[float] = []
    for path in result.workdir.glob("*_rtt.csv"):
        with path.open() as handle:
            for row in csv.DictReader(handle, delimiter=";"):
                bucket = ring if row.get("rtd_no") == "ring" else answer if row.get("rtd_no") == "answer" else None
                if bucket is not None:
                    bucket.append(float(row["response_time_ms"]))
    return ring, answer


def run_sip(quick: bool, step_s: int | None = None, ramp: list[float] | None = None) -> dict[str, Any]:
    """The table rows of parts 3 and 4 plus the ramp, as JSON-ready data."""
    rates = [(1.0, 10 if quick else 30), (10.0, 50 if quick else 300), (50.0, 150 if quick else 1500)]
    step_s = step_s or (10 if quick else 60)
    ramp = ramp or ([50.0, 100.0] if quick else [50.0, 75.0, 100.0, 150.0])
    rows: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    highest: dict[str, float] = {}
    with SipBench(quick) as bench:
        for rate, calls in rates:
            for way in WAYS:
                rows.append(bench.run(way, rate, calls))
        for way in WAYS:
            for rate in ramp:
                row = bench.run(way, rate, int(rate * step_s))
                steps.append(row)
                if row["failed"] or row["successful"] < row["calls"]:
                    break
                highest[way] = rate
    return {"rows": rows, "ramp": steps, "highest_clean_rate": highest, "ramp_step_s": step_s}


def _added(row: dict[str, Any], floor: dict[str, Any] | None, key: str) -> dict[str, float] | None:
    """What a guarded row adds to the plain route's p50 / p99 at the same rate, in ms."""
    mine, base = row.get(key) or {}, (floor or {}).get(key) or {}
    if not mine or not base:
        return None
    return {"p50": mine["p50"] - base["p50"], "p99": mine["p99"] - base["p99"]}


def render_sip(sip: dict[str, Any]) -> list[str]:
    """Post-dial delay rows, with what the guards add to the plain route and what they spend."""
    lines = ["", "  sip: INVITE to 180/183 (ring) and to 200 OK (answer), ms (sipp reports them in 4 ms steps here)"]
    rows = sip["rows"]
    base = {row["rate"]: row for row in rows if row["way"] == "baseline"}
    for row in rows:
        ring, answer = row["ring_ms"] or {}, row["answer_ms"] or {}
        added = ""
        if row["way"] != "baseline":
            delay = _added(row, base.get(row["rate"]), "answer_ms")
            if delay is not None:
                added = f"  answer adds p50 {delay['p50']:+.0f} / p99 {delay['p99']:+.0f} ms"
        lines.append(
            f"    {row['way']:<9} {row['rate']:>5.0f}/s {row['calls']:>5} calls {row['failed']:>3} failed  "
            f"ring p50 {ring.get('p50', '-')} p99 {ring.get('p99', '-')}  answer p50 {answer.get('p50', '-')} "
            f"p99 {answer.get('p99', '-')}{added}{_cost(row)}"
        )
    for way in WAYS:
        steps = [
            f"{row['rate']:.0f}/s {row['failed'] + row['calls'] - row['successful']} failed{_cost(row)}"
            for row in sip.get("ramp", [])
            if row["way"] == way
        ]
        if steps:
            lines.append(f"    ramp {way:<9} " + "; ".join(steps))
    clean = ", ".join(f"{way} {rate:.0f}/s" for way, rate in sip["highest_clean_rate"].items())
    lines.append(f"    highest rate with 0 failed calls over {sip['ramp_step_s']} s: {clean or 'none of the ramp'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.sip`: this part alone (under `flock /tmp/npv-lab.lock`), for profiling."""
    parser = argparse.ArgumentParser(prog="python -m bench.sip", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per row, 10 s ramp steps")
    parser.add_argument("--step-s", type=int, help="seconds per ramp step (default 60; quick 10)")
    parser.add_argument("--ramp", help="comma-separated calls/s of the ramp (default 50,75,100,150; quick 50,100)")
    parser.add_argument("--output", type=Path, help="write the JSON results here too")
    args = parser.parse_args(argv)
    ramp = [float(r) for r in args.ramp.split(",")] if args.ramp else None
    sip = run_sip(args.quick, args.step_s, ramp)
    # The table imports this module; the targets are defined there, once.
    from bench.table import TARGETS  # noqa: PLC0415

    print("\n".join(render_sip(sip)))
    for target in TARGETS["sip"](sip):
        met = "met" if target["met"] else "NOT met"
        print(f"    target {target['figure']}: {target['value']} ({target['target']}): {met}")
    if args.output:
        args.output.write_text(json.dumps(sip, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
