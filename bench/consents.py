"""The consent import (part `import`): `npv-guard consent import` of a generated CSV, against the
same rows piped raw into Redis (three plain commands per row, and the consent script itself)."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import workload
from bench.common import ROOT, Sizes, connect, flush, flushdb, guard_command, guard_env, ms, ratio
from npv_guard.core.model import DEFAULT_CONSENT_MAX_AGE_DAYS, DEFAULT_CONSENT_PROOF_DAYS
from npv_guard.store import REFUSALS_TTL, SCRIPTS

IMPORT_TIMEOUT_S = 1800


def bench_import(url: str, sizes: Sizes, profile_dir: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="npv-bench-import-"))
    try:
        path = work / "consents.csv"
        started = time.perf_counter()
        workload.write_consent_csv(path, sizes.import_rows)
        generated = time.perf_counter() - started
        plain_seconds = asyncio.run(import_floor(url, path, script=False))
        floor_seconds = asyncio.run(import_floor(url, path, script=True))
        flush(url)
        command = [*guard_command(), "consent", "import", "--professional", "acme", "--json", str(path)]
        started = time.perf_counter()
        result = subprocess.run(
            command, env=guard_env(url), capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=False
        )
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"consent import failed ({result.returncode}): {result.stderr[-2000:]}")
        summary = json.loads(result.stdout)
        if summary["imported"] != sizes.import_rows:
            raise RuntimeError(f"consent import stored {summary['imported']} of {sizes.import_rows} rows")
        stored = asyncio.run(count_keys(url))
        if stored != 2 * sizes.import_rows:  # per consumer: the consents set and the version
            raise RuntimeError(f"consent import left {stored} keys for {sizes.import_rows} distinct consumers")
        if profile_dir:
            flush(url)
            profile_import(url, path, profile_dir / "profile-import.txt")
        rows = sizes.import_rows
        return {
            "rows": rows,
            "csv_bytes": path.stat().st_size,
            "csv_generation_s": round(generated, 2),
            "seconds_wall": round(wall, 3),
            "seconds_reported": summary["seconds"],
            "rows_per_s": round(rows / wall, 1),
            "keys_stored": stored,
            "floor": {
                "what": "csv.reader, then per row one EVALSHA of the consent script, pipelined by 2000, on the "
                "client Store.connect builds; no number parsing, no hashing, no JSON",
                "seconds": round(floor_seconds, 3),
                "rows_per_s": round(rows / floor_seconds, 1),
            },
            "plain_commands": {
                "what": "the same with ZADD + INCR + PEXPIRE per row (what the import sent before)",
                "seconds": round(plain_seconds, 3),
                "rows_per_s": round(rows / plain_seconds, 1),
            },
            "ratio_vs_floor": ratio(wall, floor_seconds),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def import_floor(url: str, path: Path, *, script: bool) -> float:
    """The rows straight into Redis, batched as the CLI batches, without the guard's work on them."""
    store = connect(url)  # the client `consent import` gets
    client = store.client
    record = client.register_script(SCRIPTS["record_consent"])
    try:
        await flushdb(url)
        ttl = ms(REFUSALS_TTL)
        retention = [ms(timedelta(days=DEFAULT_CONSENT_PROOF_DAYS)), ms(timedelta(days=DEFAULT_CONSENT_MAX_AGE_DAYS))]
        started = time.perf_counter()
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            while True:
                batch = [row for _, row in zip(range(2000), reader, strict=False)]
                if not batch:
                    break
                pipe = client.pipeline(transaction=False)
                for row in batch:
                    key = f"floor:{{{row[0]}}}"
                    if script:
                        # A member the script can read (it decodes every event for the proof retention).
                        member = f'{{"granted":true,"basis":"{row[2]}","proof":"{row[3]}","at":"{row[1]}"}}'
                        args = [0, member, ttl, *retention]
                        await record(keys=[key + ":c", key + ":v"], args=args, client=pipe)
                    else:
                        pipe.zadd(key + ":c", {",".join(row[1:]): 0})
                        pipe.incr(key + ":v")
                        pipe.pexpire(key + ":v", ttl)
                await pipe.execute()
        return time.perf_counter() - started
    finally:
        await store.close()


async def count_keys(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()


def profile_import(url: str, path: Path, output: Path) -> None:
    """The import under pyinstrument: the call tree, then the functions by their own time."""
    flat = output.with_name(output.stem + "-flat.txt")
    import_args = [*guard_command(), "consent", "import", "--professional", "acme", "--json", str(path)]
    for target, options in ((output, []), (flat, ["-p", "flat=true", "-p", "flat_time=self"])):
        flush(url)
        command = [sys.executable, "-m", "pyinstrument", "-r", "text", *options, "-o", str(target), *import_args]
        subprocess.run(command, env=guard_env(url), capture_output=True, timeout=IMPORT_TIMEOUT_S, check=True)
    print(f"  profiles written to {output.relative_to(ROOT)} and {flat.relative_to(ROOT)}", flush=True)
