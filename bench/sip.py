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

import csv
import math
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

    def run(self, way: str, rate: float, calls: int) -> dict[str, Any]:
        injection = self.consumers(calls)
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
        ring, answer = _rtt(uac)
        return {
            "way": way,
            "rate": rate,
            "calls": calls,
            "successful": uac.successful,
            "failed": uac.failed,
            "ring_ms": _summary(ring),
            "answer_ms": _summary(answer),
        }


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


def run_sip(quick: bool) -> dict[str, Any]:
    """The table rows of parts 3 and 4 plus the ramp, as JSON-ready data."""
    rates = [(1.0, 10 if quick else 30), (10.0, 50 if quick else 300), (50.0, 150 if quick else 1500)]
    step_s = 10 if quick else 60
    ramp = [50.0, 100.0] if quick else [50.0, 75.0, 100.0, 150.0]
    rows: list[dict[str, Any]] = []
    highest: dict[str, float] = {}
    with SipBench(quick) as bench:
        for rate, calls in rates:
            for way in WAYS:
                rows.append(bench.run(way, rate, calls))
        for way in WAYS:
            for rate in ramp:
                row = bench.run(way, rate, int(rate * step_s))
                if row["failed"] or row["successful"] < row["calls"]:
                    break
                highest[way] = rate
    return {"rows": rows, "highest_clean_rate": highest, "ramp_step_s": step_s}


def render_sip(sip: dict[str, Any]) -> list[str]:
    """Post-dial delay rows, the guarded / baseline ratios first."""
    lines = ["", "  sip: INVITE to 180/183 (ring) and to 200 OK (answer), ms (sipp reports them in 4 ms steps here)"]
    rows = sip["rows"]
    base = {row["rate"]: row for row in rows if row["way"] == "baseline"}
    for row in rows:
        ring, answer = row["ring_ms"] or {}, row["answer_ms"] or {}
        floor = base.get(row["rate"], {}).get("ring_ms") or {}
        added = ""
        if row["way"] != "baseline" and ring and floor:
            p50, p99 = ring["p50"] - floor["p50"], ring["p99"] - floor["p99"]
            added = f"  adds p50 {p50:+.0f} / p99 {p99:+.0f} ms"
        lines.append(
            f"    {row['way']:<9} {row['rate']:>5.0f}/s {row['calls']:>5} calls {row['failed']:>3} failed  "
            f"ring p50 {ring.get('p50', '-')} p99 {ring.get('p99', '-')}  answer p50 {answer.get('p50', '-')} "
            f"p99 {answer.get('p99', '-')}{added}"
        )
    clean = ", ".join(f"{way} {rate:.0f}/s" for way, rate in sip["highest_clean_rate"].items())
    lines.append(f"    highest rate with 0 failed calls over {sip['ramp_step_s']} s: {clean or 'none of the ramp'}")
    return lines
