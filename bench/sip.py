"""Parts 3 and 4: what the guard adds to call setup, through the real lab Asterisk with sipp.

The same calls (distinct consumers who consented, so the cap never interferes) go three ways
to the same consumer UAS:
  baseline  127.0.0.2 -> a plain dialplan Dial()              (the floor)
  ari       127.0.0.1 -> Stasis -> npv-guard run -> originate  (ARI mode)
  agi       127.0.0.3 -> Gosub/AGI npv-guard agi -> own Dial()  (FastAGI mode)
Per call: post-dial delay (INVITE to the first 180/183) and time to answer (INVITE to 200 OK),
at 1, 10 and 50 calls/s; then a ramp finds the highest rate each way keeps with 0 failed calls
for the step duration (60 s in the full run). The delays come from the SIP packets captured on
`lo` with kernel timestamps (bench/sip_capture.py, root only), which also time the INVITE Asterisk
sends the carrier: the answer delay splits into the decision (dialer INVITE to carrier INVITE),
the carrier's answer and the answer relay (carrier 200 to the dialer's 200). sipp's own figures
(whole ms from its event loop, 4 ms steps on the bench machine) are kept as a cross-check and
are the only ones where capture is not possible.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from bench.sip_capture import CallTiming, LoopbackCapture, pcap_call_timings
from tests.support.guard import GuardProcess
from tests.support.lab import (
    ARI_BASE_URL,
    DIALER_AGI_IP,
    DIALER_IP,
    DIALER_PLAIN_IP,
    SIP_PORT,
    AsteriskLab,
    SippResult,
    ensure_lab_root,
    free_udp_port,
    run_sipp,
)
from tests.support.redis_servers import RedisServer

SCENARIO = Path(__file__).parent / "sipp" / "uac_pdd.xml"
ARI_PORT = urllib.parse.urlsplit(ARI_BASE_URL).port or 8088
AGI_PORT = 4573  # GuardProcess's FastAGI port
WAYS = {"baseline": DIALER_PLAIN_IP, "ari": DIALER_IP, "agi": DIALER_AGI_IP}
NOW = "2026-12-01T10:30:00"


class SipBench:
    def __init__(self, quick: bool, keep_pcap: bool = False, capture: bool = True) -> None:
        self.quick = quick
        self.keep_pcap = keep_pcap
        self.capture = capture
        # Why the delays are sipp's: capture failed, or was turned off (its thread's CPU then
        # goes to the calls, to see what the capture itself costs at the top of the ramp).
        self.capture_error: str | None = None if capture else "capture turned off (--no-capture)"
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

    def _calls(self, way: str, rate: float, calls: int, injection: Path) -> SippResult:
        """The carrier UAS in the background, the dialer's calls, and the lab back to idle."""
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
        return uac

    def run(
        self, way: str, rate: float, calls: int, guard_trace: bool = True, capture_sip: bool = True
    ) -> dict[str, Any]:
        """One row: `calls` calls at `rate` through `way`; with `guard_trace`, the guard's TCP
        exchanges with Asterisk (ARI, FastAGI) are captured too, to split the decision. Without
        `capture_sip` nothing is captured (sipp's figures only): the ramp, where the capture
        thread's own CPU would be taken from the calls it measures."""
        injection = self.consumers(calls)
        pcap = self.workdir / f"{way}-{rate:g}-{self.next_consumer}.pcap"
        ports = {"ari": (ARI_PORT,), "agi": (AGI_PORT,)}.get(way, ()) if guard_trace else ()
        capture = LoopbackCapture(pcap, SIP_PORT, ports)
        if not self.capture or not capture_sip:
            capture.error = self.capture_error or "not captured"
        elif not capture.start():
            self.capture_error = capture.error
        before = self.guard_cost(way)
        try:
            uac = self._calls(way, rate, calls, injection)
        except BaseException:
            if capture.error is None:
                capture.stop()
            raise
        after = self.guard_cost(way)
        captured = None
        if capture.error is None:
            capture.stop()
            captured = _captured(pcap_call_timings(pcap, SIP_PORT, ARI_PORT, AGI_PORT), capture)
            if not self.keep_pcap:
                pcap.unlink()
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
        if captured is not None:
            row["capture"] = captured
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


def _summary(values: list[float], digits: int = 2) -> dict[str, float] | None:
    """Nearest-rank p50/p99 and the mean, in the values' unit."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(fraction: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]

    mean = round(sum(ordered) / len(ordered), digits)
    return {"count": len(ordered), "p50": round(rank(0.5), digits), "p99": round(rank(0.99), digits), "mean": mean}


SPANS = (
    "ring_us", "answer_us", "decision_us", "carrier_us", "relay_us", "ring_relay_us",
    "to_guard_us", "guard_us", "to_carrier_us", "answer_wait_us", "answer_send_us",
)  # fmt: skip


def _captured(timings: list[CallTiming], capture: LoopbackCapture) -> dict[str, Any]:
    """Per-span p50/p99/mean (µs) over the captured calls, with how many calls were matched."""
    values: dict[str, list[float]] = {span: [] for span in SPANS}
    for timing in timings:
        for span, value in timing.spans_us().items():
            if value is not None:
                values[span].append(value)
    out: dict[str, Any] = {"invites": len(timings), "packets": capture.packets, "dropped": capture.dropped}
    out.update({span: _summary(values[span], digits=1) for span in SPANS})
    return out


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


DEFAULT_RAMP = [50.0, 100.0, 150.0, 200.0, 250.0]
QUICK_RAMP = [50.0, 100.0]
# After a route's first failed step, this many more steps halve the gap to its last clean one
# (rounded to 5 calls/s): 150 clean, 200 failed -> 175 -> 165 or 185, so that the ratio to the
# plain route is known to about 5% and not only to the ramp's coarse steps.
DEFAULT_REFINE = 2
REFINE_MIN_GAP = 10.0


def next_ramp_rate(ramp: list[float], tried: list[tuple[float, bool]], refine: int) -> float | None:
    """The ramp's next step for a route, from the (rate, clean) steps it has done: the ramp's rates
    until one fails, then up to `refine` steps halving the gap between the highest clean rate
    below it and the lowest failed one (rounded to 5 calls/s); None when done."""
    failed = [rate for rate, ok in tried if not ok]
    if not failed:
        return ramp[len(tried)] if len(tried) < len(ramp) else None
    first_failure = next(i for i, (_, ok) in enumerate(tried) if not ok)
    if len(tried) - first_failure - 1 >= refine:
        return None
    low = min(failed)
    clean = max((rate for rate, ok in tried if ok and rate < low), default=0.0)
    if low - clean <= REFINE_MIN_GAP:
        return None
    return float(round((clean + low) / 2 / 5) * 5)


def run_sip(
    quick: bool,
    step_s: int | None = None,
    ramp: list[float] | None = None,
    keep_pcap: bool = False,
    rates: list[tuple[float, int]] | None = None,
    capture: bool = True,
    refine: int = DEFAULT_REFINE,
) -> dict[str, Any]:
    """The table rows of parts 3 and 4 plus the ramp, as JSON-ready data (`ramp=[]`: no ramp)."""
    if rates is None:
        rates = [(1.0, 10 if quick else 30), (10.0, 50 if quick else 300), (50.0, 150 if quick else 1500)]
    step_s = step_s or (10 if quick else 60)
    if ramp is None:
        ramp = QUICK_RAMP if quick else DEFAULT_RAMP
    rows: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    highest: dict[str, float] = {}
    with SipBench(quick, keep_pcap, capture) as bench:
        for rate, calls in rates:
            for way in WAYS:
                rows.append(bench.run(way, rate, calls))
        for way in WAYS:
            tried: list[tuple[float, bool]] = []
            while (rate := next_ramp_rate(ramp, tried, refine)) is not None:
                # Not captured: on two cores the capture thread alone turned a clean FastAGI
                # step at 150 calls/s into one with failed calls.
                row = bench.run(way, rate, int(rate * step_s), guard_trace=False, capture_sip=False)
                steps.append(row)
                tried.append((rate, not row["failed"] and row["successful"] >= row["calls"]))
            clean = [rate for rate, ok in tried if ok]
            if clean:
                highest[way] = max(clean)
        clock_note = bench.capture_error
        pcaps = str(bench.workdir) if keep_pcap else None
    return {
        "rows": rows,
        "ramp": steps,
        "highest_clean_rate": highest,
        "ramp_step_s": step_s,
        "ramp_rates": ramp,
        "ramp_refine": refine,
        "clock": "sipp" if clock_note else "capture",
        "clock_note": clock_note,
        "pcap_dir": pcaps,
    }


def _sipp_added(row: dict[str, Any], floor: dict[str, Any] | None, key: str) -> dict[str, float] | None:
    mine, base = row.get(key) or {}, (floor or {}).get(key) or {}
    if not mine or not base:
        return None
    return {"p50": mine["p50"] - base["p50"], "p99": mine["p99"] - base["p99"]}


def added_ms(row: dict[str, Any], floor: dict[str, Any] | None, span: str = "answer") -> dict[str, Any] | None:
    """What a guarded row adds to the plain route's p50 / p99 of `span` ("ring", "answer",
    "decision", "relay") at the same rate, in ms: from the capture (µs precise) where both rows
    have it, else from sipp (whole ms, 4 ms steps here; ring and answer only)."""
    mine, base = (row.get("capture") or {}).get(f"{span}_us"), ((floor or {}).get("capture") or {}).get(f"{span}_us")
    if mine and base:
        return {
            "p50": round((mine["p50"] - base["p50"]) / 1000, 3),
            "p99": round((mine["p99"] - base["p99"]) / 1000, 3),
            "base_p50": round(base["p50"] / 1000, 3),
            "base_p99": round(base["p99"] / 1000, 3),
            "source": "capture",
        }
    sipp = _sipp_added(row, floor, f"{span}_ms") if span in ("ring", "answer") else None
    if sipp is None:
        return None
    base_sipp = (floor or {})[f"{span}_ms"]
    return {**sipp, "base_p50": base_sipp["p50"], "base_p99": base_sipp["p99"], "source": "sipp"}


def _ms(summary: dict[str, float] | None) -> str:
    """p50/p99 of a µs summary, in ms with µs digits."""
    if not summary:
        return "-/-"
    return f"{summary['p50'] / 1000:.3f}/{summary['p99'] / 1000:.3f}"


def _row_lines(row: dict[str, Any], floor: dict[str, Any] | None) -> list[str]:
    head = f"    {row['way']:<9} {row['rate']:>5.0f}/s {row['calls']:>5} calls {row['failed']:>4} failed"
    ring, answer = row.get("ring_ms") or {}, row.get("answer_ms") or {}
    sipp = (
        f"sipp ring {ring.get('p50', '-')}/{ring.get('p99', '-')} answer {answer.get('p50', '-')}/"
        f"{answer.get('p99', '-')}"
    )
    captured = row.get("capture")
    lines = []
    if captured:
        lines.append(
            f"{head}  ring {_ms(captured['ring_us'])}  answer {_ms(captured['answer_us'])}  "
            f"decision {_ms(captured['decision_us'])}  carrier {_ms(captured['carrier_us'])}  "
            f"relay {_ms(captured['relay_us'])}  [{sipp}]{_cost(row)}"
        )
        if captured.get("guard_us"):
            split = (
                f"      decision = to the guard {_ms(captured['to_guard_us'])} + guard {_ms(captured['guard_us'])} "
                f"+ to the carrier {_ms(captured['to_carrier_us'])}"
            )
            if captured.get("answer_wait_us"):
                split += (
                    f"; relay = to the guard's answer {_ms(captured['answer_wait_us'])} + answer sent "
                    f"{_ms(captured['answer_send_us'])}"
                )
            lines.append(split)
        answered = (captured.get("answer_us") or {}).get("count", 0)
        if captured.get("dropped") or answered < row["successful"]:
            lines.append(
                f"      capture: {answered} of {row['successful']} answered calls matched, "
                f"{captured.get('dropped', 0)} packets dropped by the kernel"
            )
    else:
        lines.append(f"{head}  {sipp} (no capture){_cost(row)}")
    if row["way"] != "baseline" and floor is not None:
        parts = []
        for span in ("answer", "ring", "decision", "relay"):
            delay = added_ms(row, floor, span)
            if delay is not None:
                unit = "" if delay["source"] == "capture" else " (sipp)"
                parts.append(f"{span} {delay['p50']:+.3f}/{delay['p99']:+.3f}{unit}")
        if parts:
            lines.append("      added vs plain, p50/p99 ms: " + ", ".join(parts))
    return lines


def render_sip(sip: dict[str, Any]) -> list[str]:
    """Post-dial delay rows, with what the guards add to the plain route and what they spend."""
    if sip.get("clock", "sipp") == "capture":
        clock = "SIP packets on lo, kernel timestamps; p50/p99 in ms, µs digits"
    else:
        clock = f"sipp's figures, 4 ms steps here: {sip.get('clock_note') or 'no capture'}"
    lines = [
        "",
        f"  sip: per call ({clock}): ring = INVITE to 180/183, answer = INVITE to 200 OK,",
        "       decision = dialer INVITE to carrier INVITE, carrier = carrier INVITE to its 200,",
        "       relay = carrier 200 to the dialer's 200; [sipp p50/p99, whole ms] as a cross-check;",
        "       the guard's part from its TCP with Asterisk: to the guard = INVITE to StasisStart sent (ARI) or",
        "       AGI environment sent (FastAGI), guard = that to its originate request or AGI command, to the carrier",
        "       = that to the carrier INVITE; ARI relay = carrier 200 to the guard's answer request, then to the 200",
    ]
    rows = sip["rows"]
    base = {row["rate"]: row for row in rows if row["way"] == "baseline"}
    for row in rows:
        lines.extend(_row_lines(row, base.get(row["rate"])))
    ramp_base = {row["rate"]: row for row in sip.get("ramp", []) if row["way"] == "baseline"}
    for way in WAYS:
        steps = []
        for row in sip.get("ramp", []):
            if row["way"] != way:
                continue
            answer = (row.get("capture") or {}).get("answer_us")
            sipp = row.get("answer_ms")
            delay = f" answer {_ms(answer)} ms" if answer else ""
            if not answer and sipp:
                delay = f" answer {sipp['p50']:g}/{sipp['p99']:g} ms (sipp)"
            added = added_ms(row, ramp_base.get(row["rate"])) if way != "baseline" else None
            if added is not None and added["source"] == "capture":
                delay += f" ({added['p50']:+.3f}/{added['p99']:+.3f})"
            failed = row["failed"] + row["calls"] - row["successful"]
            steps.append(f"{row['rate']:.0f}/s {failed} failed{delay}{_cost(row)}")
        if steps:
            lines.append(f"    ramp {way:<9} " + "; ".join(steps))
    if not sip.get("ramp"):
        return lines
    clean = ", ".join(f"{way} {rate:.0f}/s" for way, rate in sip["highest_clean_rate"].items())
    lines.append(f"    highest rate with 0 failed calls over {sip['ramp_step_s']} s: {clean or 'none of the ramp'}")
    if plain_at_ramp_top(sip):
        lines.append(
            "    (the plain route was clean at the top of the ramp: its own limit is higher, so a guard's "
            "share of it is at most the ratio shown)"
        )
    return lines


def plain_at_ramp_top(sip: dict[str, Any]) -> bool:
    """Whether the plain route kept 0 failed calls up to the ramp's last step (its limit not found)."""
    rates = sip.get("ramp_rates") or [row["rate"] for row in sip.get("ramp", [])]
    plain = sip.get("highest_clean_rate", {}).get("baseline")
    return bool(rates) and plain is not None and plain >= max(rates)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.sip`: this part alone (under `flock /tmp/npv-lab.lock`), for profiling."""
    parser = argparse.ArgumentParser(prog="python -m bench.sip", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per row, 10 s ramp steps")
    parser.add_argument("--step-s", type=int, help="seconds per ramp step (default 60; quick 10)")
    parser.add_argument("--ramp", help="comma-separated calls/s of the ramp (default 50,75,100,150,200; quick 50,100)")
    parser.add_argument("--rows", help="comma-separated rate:calls of the delay rows (default 1:30,10:300,50:1500)")
    parser.add_argument("--no-ramp", action="store_true", help="the delay rows only")
    parser.add_argument(
        "--refine", type=int, default=DEFAULT_REFINE, help="steps halving the gap after a failed step (default 2)"
    )
    parser.add_argument("--keep-pcap", action="store_true", help="keep each row's capture (the path is printed)")
    parser.add_argument("--no-capture", action="store_true", help="sipp's clock only (no packet capture thread)")
    parser.add_argument("--output", type=Path, help="write the JSON results here too")
    args = parser.parse_args(argv)
    ramp = [] if args.no_ramp else [float(r) for r in args.ramp.split(",")] if args.ramp else None
    rows = None
    if args.rows:
        rows = [(float(rate), int(calls)) for rate, calls in (item.split(":") for item in args.rows.split(","))]
    sip = run_sip(args.quick, args.step_s, ramp, args.keep_pcap, rows, not args.no_capture, args.refine)
    # The table imports this module; the targets are defined there, once.
    from bench.table import TARGETS  # noqa: PLC0415

    print("\n".join(render_sip(sip)))
    for target in TARGETS["sip"](sip):
        met = "met" if target["met"] else "NOT met"
        print(
            f"    target {target['figure']}: {target['value']} {target['unit']} ({target['target']}; "
            f"{target['baseline']} {target['baseline_value']}): {met}"
        )
    if sip.get("pcap_dir"):
        print(f"    captures kept in {sip['pcap_dir']}")
    if args.output:
        args.output.write_text(json.dumps(sip, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
