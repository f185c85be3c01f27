"""The compliance report at scale: `python -m bench.report [--lines N] [--output FILE.json]`.

Writes N synthetic audit lines (default 1,000,000) shaped as the guard writes them: decisions
(two thirds allowed, rejections with one or two reasons, consumer-local times across the day,
campaign ids), refusals of every source, consent grants and withdrawals, a few lines of events
the report does not know and a few malformed ones. Then runs the real `npv-guard report` command
as a subprocess over a month and reports lines/s and seconds; the target is 1 million lines in
under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "report.json"
TARGET_S = 60.0
REASONS = ("OUTSIDE_HOURS", "WEEKEND", "FREQUENCY_CAP", "REFUSAL_BLOCK", "NO_CONSENT", "CALLER_NOT_NPV")
CAMPAIGNS = ("spring-fibre", "energy-q2", "renewal", "")
SOURCES = ("agent", "consumer", "operator", "sms")
START = datetime(2026, 11, 1, 9, tzinfo=UTC)


def _ts(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def synthetic_lines(count: int, seed: int = 16) -> Any:
    """Yield `count` audit lines as text, spread over November 2026."""
    rng = random.Random(seed)
    span_s = 30 * 86400
    for n in range(count):
        at = START + timedelta(seconds=rng.randrange(span_s))
        consumer = f"{rng.getrandbits(64):016x}"
        common: dict[str, Any] = {"ts": _ts(at), "professional": "acme", "consumer": consumer, "seq": n}
        roll = rng.random()
        if roll < 0.90:
            local = (at + timedelta(hours=1)).isoformat().replace("+00:00", "+01:00")
            allowed = rng.random() < 0.66
            reasons = [] if allowed else rng.sample(REASONS, rng.choice((1, 1, 2)))
            line = {
                "event": "decision", "call_id": f"c{n}", "mode": "ari", "verdict": "allow" if allowed else "reject",
                "reasons": reasons, "messages": [], "caller": "+33948000001", "territory": "FR-MET",
                "local_time": local, "at": _ts(at), "not_evaluated": [], "next_allowed_at": None,
                "campaign": rng.choice(CAMPAIGNS), "latency_ms": 0.8, **common,
            }  # fmt: skip
        elif roll < 0.95:
            recorded = rng.random() < 0.99
            line = {"event": "refusal", "call_id": f"c{n}", "mode": "ari", "source": rng.choice(SOURCES),
                    "recorded": recorded, "journaled": False, "at": _ts(at), **common}  # fmt: skip
        elif roll < 0.99:
            granted = rng.random() < 0.8
            at_consent = at - timedelta(days=rng.randrange(400))
            line = {"event": "consent", "mode": "api", "granted": granted, "basis": "consent" if granted else None,
                    "at": _ts(at_consent), "outside_hours": False, "recorded": True, **common}  # fmt: skip
        elif roll < 0.9995:
            line = {"event": "bridged", "call_id": f"c{n}", **common}
        else:
            yield '{"event": "decision", "verdict": \n'  # a line cut by a crash
            continue
        yield json.dumps(line) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="npv-bench-report-") as tmp:
        audit = Path(tmp) / "audit.jsonl"
        started = time.perf_counter()
        with audit.open("w", encoding="utf-8") as handle:
            handle.writelines(synthetic_lines(args.lines))
        generated_s = time.perf_counter() - started
        command = [
            str(Path(sys.executable).parent / "npv-guard"), "report", "--from", "2026-11-01", "--to", "2026-11-30",
            "--html", str(Path(tmp) / "report.html"), "--csv", str(Path(tmp) / "report.csv"), "--json", str(audit),
        ]  # fmt: skip
        environ = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=environ, check=False, cwd=ROOT)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        summary = json.loads(done.stdout)
        html_bytes = (Path(tmp) / "report.html").stat().st_size
        audit_bytes = audit.stat().st_size
    result = {
        "lines": args.lines,
        "audit_mb": round(audit_bytes / 1e6, 1),
        "generated_s": round(generated_s, 2),
        "seconds_wall": round(seconds, 2),
        "lines_per_s": round(args.lines / seconds),
        "target_s_per_million": TARGET_S,
        "within_target": seconds * 1_000_000 / args.lines < TARGET_S,
        "html_kb": round(html_bytes / 1024),
        "summary": summary,
        "load_average": os.getloadavg(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    verdict = "within" if result["within_target"] else "OVER"
    print(
        f"report: {args.lines:,} audit lines in {seconds:.1f} s ({result['lines_per_s']:,}/s, "
        f"{verdict} the {TARGET_S:.0f} s per million target); HTML {result['html_kb']} KiB, "
        f"{summary['malformed_lines']} malformed lines counted"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
