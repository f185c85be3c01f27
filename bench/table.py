"""The bench's report: issue #20's targets first (each figure with its baseline and ratio, and
whether it is met), then every row of every part."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.decisions import PIPELINED_FLOOR, REDIS_PY_FLOOR, TARGET_P99_FACTOR
from bench.scale import TARGET_CPU_GAIN, TARGET_SCALE
from bench.sip import added_ms, plain_at_ramp_top, render_sip

TARGET_API_FACTOR = 3.0
TARGET_SCRUB_S = 60.0  # per 1,000,000 leads
TARGET_SCRUB_VS_FLOOR = 0.5
TARGET_ARI_RATE = 0.9
# Added to the time to answer at 50 calls/s against the plain route, ms: (p50, p99).
TARGET_ADDED_MS = {"ari": (5.0, 15.0), "agi": (5.0, 10.0)}


def _target(
    figure: str, value: float | None, baseline: str, base: float | None, rule: str, met: bool | None, unit: str = ""
) -> dict[str, Any]:
    ratio = round(value / base, 2) if value is not None and base else None
    return {"figure": figure, "value": value, "unit": unit, "baseline": baseline, "baseline_value": base,
            "ratio": ratio, "target": rule, "met": met}  # fmt: skip


def _redis_targets(part: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for level, data in part["levels"].items():
        rows = {row["name"]: row for row in data["rows"]}
        guard = rows["Guard.check(record=True)"]
        for floor, label in ((REDIS_PY_FLOOR, "snapshot script p99 (redis-py)"),
                             (PIPELINED_FLOOR, "snapshot script p99 (pipelined)")):  # fmt: skip
            script = rows[floor]
            met = guard["p99_us"] <= TARGET_P99_FACTOR * script["p99_us"]
            out.append(_target(f"decision through Redis p99, c={level}", guard["p99_us"], label,
                               script["p99_us"], f"<= {TARGET_P99_FACTOR:g}x", met, "us"))  # fmt: skip
    return out


def _scale_targets(part: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {row["name"]: row for row in part["rows"]}
    one, two = rows["one guard process"], rows["two guard processes"]
    before = rows.get("one guard process, before #20")
    out = []
    if before:
        gain = part["ratios"]["decisions_per_cpu_s_vs_before"]
        met = gain is not None and gain >= TARGET_CPU_GAIN
        out.append(_target("decisions per CPU-second, one process", one["decisions_per_cpu_s"],
                           f"the same before #20 ({part['baseline_ref'][:8]})", before["decisions_per_cpu_s"],
                           f">= {TARGET_CPU_GAIN:g}x", met))  # fmt: skip
    else:
        out.append(_target("decisions per CPU-second, one process", one["decisions_per_cpu_s"],
                           "before #20: not measured (no git checkout)", None,
                           f">= {TARGET_CPU_GAIN:g}x", None))  # fmt: skip
    scale = part["ratios"]["two_vs_one_processes"]
    met = scale is not None and scale >= TARGET_SCALE
    out.append(_target("decisions/s, two guard processes", two["per_second"], "one guard process",
                       one["per_second"], f">= {TARGET_SCALE:g}x", met, "/s"))  # fmt: skip
    return out


def _api_targets(part: dict[str, Any]) -> list[dict[str, Any]]:
    rows = part["rows"]
    floor = next((r for r in rows if "healthz" in r["name"]), None)
    out = []
    for row in rows:
        if row is floor or floor is None:
            continue
        met = row["p99_us"] <= TARGET_API_FACTOR * floor["p99_us"]
        out.append(_target(f"{row['name']} p99, c={row['concurrency']}", row["p99_us"], "GET /healthz p99",
                           floor["p99_us"], f"<= {TARGET_API_FACTOR:g}x", met, "us"))  # fmt: skip
    return out


def _scrub_targets(part: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, run in part["runs"].items():
        per_million = 1e6 / run["leads_per_s"] if run.get("leads_per_s") else None
        floor = (run.get("floor") or {}).get("leads_per_s")
        fast = per_million is not None and per_million < TARGET_SCRUB_S
        near_floor = bool(floor) and run["leads_per_s"] >= TARGET_SCRUB_VS_FLOOR * floor
        out.append(_target(f"scrub {name}, leads/s", run.get("leads_per_s"),
                           "bare Redis reads it needs" if floor else "(1,000,000 in < 60 s: 16,667/s)",
                           floor or 1e6 / TARGET_SCRUB_S,
                           f"1M < {TARGET_SCRUB_S:g} s or >= {TARGET_SCRUB_VS_FLOOR:g}x the floor",
                           fast or near_floor, "/s"))  # fmt: skip
    return out


def _sip_targets(part: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    clean = part.get("highest_clean_rate", {})
    if "baseline" in clean and "ari" in clean:
        share = clean["ari"] / clean["baseline"]
        plain = "plain Dial()" + (" (clean at the ramp's top)" if plain_at_ramp_top(part) else "")
        out.append(_target("ARI: highest clean call rate", clean["ari"], plain, clean["baseline"],
                           f">= {TARGET_ARI_RATE:g}x", share >= TARGET_ARI_RATE, "/s"))  # fmt: skip
    at50 = {row["way"]: row for row in part.get("rows", []) if row.get("rate") == 50.0}
    for way, (p50_max, p99_max) in TARGET_ADDED_MS.items():
        if way not in at50:
            continue
        delay = added_ms(at50[way], at50.get("baseline"))
        if delay is None:
            continue
        source = "packet capture" if delay["source"] == "capture" else "sipp, 4 ms steps"
        for pct, bound in (("p50", p50_max), ("p99", p99_max)):
            out.append(_target(f"{way}: added to answer at 50/s, {pct}", delay[pct],
                               f"plain Dial() (its own value; {source})", delay[f"base_{pct}"],
                               f"< {bound:g} ms added", delay[pct] < bound, "ms"))  # fmt: skip
    return out


TARGETS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "redis": _redis_targets,
    "scale": _scale_targets,
    "api": _api_targets,
    "scrub": _scrub_targets,
    "sip": _sip_targets,
}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #20's targets the parts of this run measured (a part's unexpected shape: skipped, named)."""
    out: list[dict[str, Any]] = []
    for name, evaluate in TARGETS.items():
        if name in results:
            try:
                out.extend(evaluate(results[name]))
            except (KeyError, TypeError, ZeroDivisionError) as error:
                out.append(
                    _target(f"{name}: cannot evaluate ({type(error).__name__}: {error})", None, "", None, "", None)
                )
    return out


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    digits = 1 if abs(value) < 100 else 0
    return f"{value:,.{digits}f}{' ' + unit if unit else ''}"


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    m = results["machine"]
    lines.append(
        f"npv-guard benchmark{' (--quick)' if results['quick'] else ''}: {m['date']}, {m['cpu_count']} CPU "
        f"({m['cpu_model'] or 'unknown'}), load {m['load_average']}, Python {m['python']}, redis-server "
        f"{m['redis_server'] or '-'}, redis-py {m['packages']['redis']}"
        f"{', hiredis' if m['packages']['hiredis'] else ''}"
    )
    lines.append("")
    lines.append("ISSUE #20 TARGETS: each figure against its baseline in this run (absolute times drift; ratios count)")
    head = f"  {'figure':<44} {'value':>14}  {'baseline':<40} {'value':>12} {'ratio':>6}  {'target':<16} met"
    lines.append(head)
    lines.append("  " + "-" * (len(head) - 2))
    for t in results.get("targets", []):
        met = "-" if t["met"] is None else "yes" if t["met"] else "NO"
        lines.append(
            f"  {t['figure'][:44]:<44} {_num(t['value'], t['unit']):>14}  {t['baseline'][:40]:<40} "
            f"{_num(t['baseline_value'], t['unit']):>12} {_num(t['ratio']) if t['ratio'] is not None else '-':>6}  "
            f"{t['target'][:16]:<16} {met}"
        )
    met = [t for t in results.get("targets", []) if t["met"]]
    judged = [t for t in results.get("targets", []) if t["met"] is not None]
    lines.append(f"  met: {len(met)} of {len(judged)}")
    lines.append("")
    lines.extend(_details(results))
    for name, error in results.get("failed", {}).items():
        lines.append(f"  {name}: FAILED: {error}")
    return "\n".join(lines)


def _details(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    header = (
        f"  {'part':<8} {'c':>4}  {'what':<36} {'calls':>8} {'per s':>10} {'p50 us':>9} {'p99 us':>9} {'cpu us':>8}"
        f" {'redis us':>8}"
    )
    lines.append(header)
    lines.append("  " + "-" * (len(header) - 2))

    def row(part: str, stat: dict[str, Any]) -> None:
        redis = stat.get("redis_cpu_us")
        lines.append(
            f"  {part:<8} {stat['concurrency']:>4}  {stat['name'][:36]:<36} {stat['count']:>8} "
            f"{stat['per_second']:>10,.0f} {stat['p50_us']:>9,.1f} {stat['p99_us']:>9,.1f} "
            f"{stat.get('cpu_us') or 0:>8,.1f} {'' if redis is None else f'{redis:,.1f}':>8}"
        )

    core, redis_part, imported = results.get("core"), results.get("redis"), results.get("import")
    if core:
        for stat in core["rows"]:
            row("core", stat)
    if redis_part:
        for data in redis_part["levels"].values():
            for stat in data["rows"]:
                row("redis", stat)
    scale = results.get("scale")
    if scale:
        for r in scale["rows"]:
            lines.append(
                f"  {'scale':<8} {r['concurrency_each']:>4}  {r['name'][:36]:<36} {r['calls']:>8} "
                f"{r['per_second'] or 0:>10,.0f} {'':>9} {r['p99_us_worst']:>9,.1f} "
                f"{r['cpu_us_per_decision'] or 0:>8,.1f} "
                f"{r['redis_cpu_us_per_decision'] or 0:>8,.1f}"
            )
    api = results.get("api")
    if api:
        for r in api["rows"]:
            lines.append(
                f"  {'api':<8} {r['concurrency']:>4}  {r['name'][:36]:<36} {r['count']:>8} {r['per_second']:>10,.0f} "
                f"{r['p50_us']:>9,.1f} {r['p99_us']:>9,.1f} {r.get('server_cpu_us') or 0:>8,.1f} "
                f"{r.get('redis_cpu_us') or 0:>8,.1f}"
            )
    if imported:
        for name, rate in (
            ("CSV rows, 3 plain commands each", imported["plain_commands"]["rows_per_s"]),
            ("CSV rows, consent script (floor)", imported["floor"]["rows_per_s"]),
            ("npv-guard consent import", imported["rows_per_s"]),
        ):
            lines.append(f"  {'import':<8} {1:>4}  {name:<36} {imported['rows']:>8} {rate:>10,.0f}")
    scrub = results.get("scrub")
    if scrub:
        for name, run in scrub["runs"].items():
            lines.append(
                f"  {'scrub':<8} {'':>4}  {name + ': npv-guard scrub':<36} {run['leads']:>8} "
                f"{run['leads_per_s']:>10,.0f}"
                f"   {run['seconds_wall']} s, spot check {run['spot_check']}"
            )
    report = results.get("report")
    if report:
        lines.append(
            f"  {'report':<8} {'':>4}  {'npv-guard report':<36} {report['lines']:>8} {report['lines_per_s']:>10,.0f}"
            f"   {report['seconds_wall']} s (target: 1,000,000 lines in < 60 s)"
        )
    if redis_part:
        lines.append("")
        lines.append(f"  redis: {redis_part['pairs']} pairs {redis_part['pair_mix']}; guard outcomes per level:")
        for level, data in redis_part["levels"].items():
            check = "as seeded" if data["outcomes_as_expected"] else f"NOT as seeded: {data['expected_outcomes']}"
            lines.append(f"    c={level}: {data['guard_outcomes']} ({check})")
    if scale:
        lines.append(
            f"  scale: {scale['cpus']} CPUs; Redis spends {_num(scale['rows'][0]['redis_cpu_us_per_decision'])} us "
            f"per decision: one Redis core caps all guard processes together at about "
            f"{_num(scale['redis_ceiling_per_s'])} decisions/s"
        )
        for r in scale["rows"]:
            lines.append(f"    {r['name']}: {r['outcomes']}")
    sip = results.get("sip")
    if sip:
        lines.extend(render_sip(sip))
    return lines
