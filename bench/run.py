"""How many calls per second can one guard handle? `python -m bench.run [--quick] [--only core,redis,...]`.

One module per part, each against the floor it cannot beat:

- core:   prepare() + decide() in-process, against phonenumbers.parse of the same two numbers (bench/core.py);
- redis:  Guard.check(record=True) through Store at concurrency 1, 10 and 100, against a bare PING, the
          snapshot script alone and the guard's own Redis calls without its Python (bench/decisions.py);
- scale:  one guard process, two at once, and one of the code before issue #20 (bench/scale.py);
- import: `npv-guard consent import` of a generated CSV, against the same rows piped raw (bench/consents.py);
- sip:    post-dial delay through the lab Asterisk, plain Dial() against the ARI and FastAGI guards (bench/sip.py);
- api:    `POST /v1/check` of `npv-guard serve` at 100 concurrent clients, against its /healthz (bench/api.py);
- scrub:  `npv-guard scrub` of a generated lead list at a daytime and a night instant (bench/scrub.py);
- report: `npv-guard report` over 1,000,000 generated audit lines (bench/report.py).

It starts its own redis-server (persistence off) on a free loopback port and stops it, prints issue
#20's targets first (each figure with its baseline and ratio, met or not), then every row
(bench/table.py), and writes bench/results/latest.json. Absolute times drift on a shared machine;
the ratios are the headline.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import api as bench_api
from bench import report as bench_report
from bench import scrub as bench_scrub
from bench.common import FULL, QUICK, RESULTS, machine
from bench.consents import bench_import
from bench.core import bench_core
from bench.decisions import bench_redis
from bench.scale import bench_scale
from bench.sip import run_sip
from bench.table import render, targets
from tests.support.redis_servers import RedisServer

PARTS = ("core", "redis", "scale", "import", "sip", "api", "scrub", "report")
REDIS_PARTS = {"redis", "scale", "import"}


def _standalone(main: Callable[[list[str]], int], argv: list[str], output: Path) -> dict[str, Any]:
    """A part that is its own program (bench/api.py, bench/scrub.py, bench/report.py): run it, keep its JSON."""
    if main(argv) != 0:
        raise RuntimeError(f"{main.__module__} {' '.join(argv)} failed")
    result: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (import 100,000 rows): a few minutes")
    parser.add_argument("--import-rows", type=int, help="rows of the generated CSV (default 1,000,000; quick 100,000)")
    parser.add_argument("--output", type=Path, help="JSON results file (default bench/results/latest.json)")
    parser.add_argument(
        "--profile", action="store_true",
        help="also profile each part with pyinstrument into bench/results/profile-*.txt (timings then not final)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        parser.error(f"--only: choose among {', '.join(PARTS)}")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.import_rows:
        sizes = dataclasses.replace(sizes, import_rows=args.import_rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    profile_dir = RESULTS if args.profile else None
    output = args.output or RESULTS / ("profiled.json" if args.profile else "latest.json")
    results: dict[str, Any] = {"quick": args.quick, "profiled": args.profile, "sizes": dataclasses.asdict(sizes)}
    server = None
    failed: dict[str, str] = {}
    redis_version: str | None = None

    def part(name: str, title: str, run: Callable[[], dict[str, Any]]) -> None:
        # A part that fails is reported and the others still run: a long run is not lost to one error.
        print(title, flush=True)
        try:
            results[name] = run()
        except Exception as error:
            traceback.print_exc()
            failed[name] = f"{type(error).__name__}: {error}"[:500]

    try:
        if "core" in args.parts:
            part("core", "core: decision core in-process ...", lambda: bench_core(sizes, profile_dir))
        if REDIS_PARTS & set(args.parts):
            server = RedisServer().start()
            print(f"redis-server on 127.0.0.1:{server.port} (no persistence)", flush=True)
            url, pid = server.url, server.process.pid if server.process else None
            info = server.cli("INFO", "server")
            redis_version = next(
                (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("redis_version")), None
            )
        if server and "redis" in args.parts:
            part("redis", "redis: Guard.check(record=True) at concurrency 1, 10, 100 ...",
                 lambda: asyncio.run(bench_redis(url, pid, sizes, profile_dir)))  # fmt: skip
        if server and "scale" in args.parts:
            part("scale", "scale: one guard process, two at once, and one before #20 ...",
                 lambda: bench_scale(url, pid, sizes))  # fmt: skip
        if server and "import" in args.parts:
            part("import", f"import: npv-guard consent import of {sizes.import_rows:,} rows ...",
                 lambda: bench_import(url, sizes, profile_dir))  # fmt: skip
        if "sip" in args.parts:
            part("sip", "sip: post-dial delay through the lab Asterisk, baseline / ARI / FastAGI ...",
                 lambda: run_sip(args.quick))  # fmt: skip
        if "api" in args.parts:
            requests = ["--requests", "1000"] if args.quick else []
            part("api", "api: POST /v1/check at 100 concurrent clients ...",
                 lambda: _standalone(bench_api.main, requests, bench_api.RESULTS))  # fmt: skip
        if "scrub" in args.parts:
            rows = ["--rows", "100000"] if args.quick else []
            part("scrub", "scrub: npv-guard scrub of a generated lead list, day and night ...",
                 lambda: _standalone(bench_scrub.main, [*rows, "--output", str(RESULTS / "scrub.json")],
                                     RESULTS / "scrub.json"))  # fmt: skip
        if "report" in args.parts:
            audit_lines = ["--lines", "100000"] if args.quick else []
            part("report", "report: npv-guard report of generated audit lines ...",
                 lambda: _standalone(bench_report.main, [*audit_lines, "--output", str(RESULTS / "report.json")],
                                     RESULTS / "report.json"))  # fmt: skip
    finally:
        if server:
            server.cleanup()
    results["failed"] = failed
    results["machine"] = machine(redis_version)
    results["targets"] = targets(results)
    text = render(results)
    print()
    print(text)
    output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nresults written to {output}")
    for name, error in failed.items():
        print(f"bench: part {name} FAILED: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
