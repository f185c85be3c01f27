"""`npv-guard report`: the compliance report an inspector reads, from the audit trail alone.

It reads audit files (JSON lines, as npv_guard/audit.py writes them), sums them up over a period
and writes one self-contained HTML page (charts as inline SVG, no script, no network) and
optionally a CSV of the same aggregates.

Days. A decision's day and hour are the consumer's local ones (its `local_time`): the legal
calendar of D. 223-9 is the consumer's, so that is the day and hour an inspector checks. A line
without a consumer-local time (refusals, consents, decisions on numbers that could not be placed)
falls on its Europe/Paris day. `--from` and `--to` are inclusive days in that sense.

Lapsed consents: a pair whose last consent event is a grant older than `rules.consent_max_age_days`
at some day of the period counts once, on the day it lapsed (grants before the period are read
too, since a consent granted last year lapses this year).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import html
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

from npv_guard import __version__
from npv_guard.clock import PARIS
from npv_guard.progress import Progress

if TYPE_CHECKING:
    from npv_guard.cli import Context
    from npv_guard.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_CONSENT_MAX_AGE_DAYS = 365
EXAMPLES_PER_REASON = 3
TOP_REASONS = 10
MALFORMED_SHOWN = 5
NO_CAMPAIGN = "(none)"
# D. 223-9: the hours, consumer time, at which a call may be placed (Monday to Friday).
LEGAL_HOURS = frozenset(range(10, 13)) | frozenset(range(14, 20))
VERDICTS = ("allow", "reject")


class ReportUsage(Exception):
    """A bad argument: exit 2 with this one line."""


def consent_max_age_days(settings: Settings) -> int:
    """The one place the report reads how long a consent lasts (rules.consent_max_age_days)."""
    value = getattr(settings.rules, "consent_max_age_days", None)
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_CONSENT_MAX_AGE_DAYS


@dataclass
class Example:
    ts: str
    call_id: str
    professional: str
    campaign: str
    consumer: str
    local_time: str
    message: str


@dataclass
class Report:
    start: date
    end: date
    professional: str | None = None
    campaign: str | None = None
    consent_max_age_days: int = DEFAULT_CONSENT_MAX_AGE_DAYS
    files: list[str] = field(default_factory=list)
    lines: int = 0
    in_period: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)  # verdict -> count
    per_day: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    reasons: Counter[str] = field(default_factory=Counter)
    per_campaign: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_hour: defaultdict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    allowed_outside_hours: int = 0
    refusals: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    consents: Counter[str] = field(default_factory=Counter)  # granted / withdrawn / lapsed
    examples: defaultdict[str, list[Example]] = field(default_factory=lambda: defaultdict(list))
    # (professional, consumer) -> (instant, granted) of its latest consent event, any day.
    _last_consent: dict[tuple[str, str], tuple[datetime, bool]] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {
            "lines": self.lines,
            "lines_in_period": self.in_period,
            "malformed_lines": self.malformed,
            "decisions": sum(self.decisions.values()),
            "allowed": self.decisions["allow"],
            "rejected": self.decisions["reject"],
            "allowed_outside_legal_hours": self.allowed_outside_hours,
            "refusals": sum(sum(c.values()) for c in self.refusals.values()),
            "refusals_lost": sum(c["lost"] for c in self.refusals.values()),
            "consents_granted": self.consents["granted"],
            "consents_withdrawn": self.consents["withdrawn"],
            "consents_lapsed": self.consents["lapsed"],
        }

    def days(self) -> list[str]:
        """Every day of the period (zeros included) when it is short enough to draw, else the days seen."""
        span = (self.end - self.start).days + 1
        if span <= 400:
            return [(self.start + timedelta(days=n)).isoformat() for n in range(span)]
        return sorted(self.per_day)


# --- reading --------------------------------------------------------------------------------


class _Malformed(ValueError):
    pass


def _paris_day(instant: str) -> str:
    # Most instants are UTC: their Paris day depends only on the UTC hour, so cache on that.
    if instant.endswith(("Z", "+00:00")) and len(instant) >= 13 and instant[10] == "T":
        return _paris_day_of_utc_hour(instant[:13])
    return _parse_paris_day(instant)


@lru_cache(maxsize=8192)
def _paris_day_of_utc_hour(hour: str) -> str:
    return _parse_paris_day(hour + ":00:00+00:00")


def _parse_paris_day(instant: str) -> str:
    try:
        parsed = datetime.fromisoformat(instant)
    except ValueError:
        raise _Malformed(f"instant {instant[:40]!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(PARIS).date().isoformat()


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(line: dict[str, Any], key: str) -> str:
    value = line.get(key)
    return value if isinstance(value, str) else ""


class Reader:
    """Sums up audit lines into a Report; every line is either counted or reported as malformed."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self._start = report.start.isoformat()
        self._end = report.end.isoformat()

    def read_files(self, paths: list[Path], progress: Progress | None = None) -> Report:
        total = sum(path.stat().st_size for path in paths) or 1
        done_bytes = 0
        for path in paths:
            self.report.files.append(str(path))
            with _open(path) as handle:
                for number, raw in enumerate(handle, start=1):
                    done_bytes += len(raw)
                    self.line(raw, f"{path.name}:{number}")
                    if progress is not None and not number % 8192:
                        progress.show(self.report.lines, "lines", done_bytes / total)
            if progress is not None:
                progress.show(self.report.lines, "lines", done_bytes / total)
        self.finish()
        return self.report

    def line(self, raw: bytes | str, where: str) -> None:
        report = self.report
        report.lines += 1
        if not raw.strip():
            report.lines -= 1  # a blank line (an editor's final newline) is no line at all
            return
        try:
            line = json.loads(raw)
            if not isinstance(line, dict):
                raise _Malformed("not a JSON object")
            self._dispatch(line)
        except (ValueError, TypeError, KeyError, RecursionError) as error:  # JSONDecodeError is a ValueError
            report.malformed += 1
            if len(report.malformed_examples) < MALFORMED_SHOWN:
                report.malformed_examples.append(f"{where}: {str(error)[:120]}")

    def _dispatch(self, line: dict[str, Any]) -> None:
        report = self.report
        event = line.get("event")
        if not isinstance(event, str) or not event:
            raise _Malformed("no event")
        if report.professional is not None and line.get("professional") != report.professional:
            return
        if event == "consent":
            self._consent(line)  # a consent belongs to the pair, whatever the campaign
            return
        if report.campaign is not None and line.get("campaign") != report.campaign:
            return
        local = _text(line, "local_time")
        if event == "decision" and len(local) >= 13 and local[10] == "T":
            day, hour = local[:10], int(local[11:13])
        else:
            instant = _text(line, "at") or _text(line, "ts")
            if not instant:
                raise _Malformed(f"{event} line without an instant")
            day, hour = _paris_day(instant), -1
        if not self._start <= day <= self._end:
            return
        if event == "decision":
            self._decision(line, day, hour)
        elif event == "refusal":
            source = _text(line, "source") or "unknown"
            journaled = "journaled" if line.get("journaled") else "recorded"
            outcome = "lost" if line.get("recorded") is False else journaled
            report.refusals[source][outcome] += 1
        report.in_period += 1  # counted once the line proved whole: a bad line counts as malformed only
        report.events[event] += 1

    def _decision(self, line: dict[str, Any], day: str, hour: int) -> None:
        report = self.report
        verdict = line.get("verdict")
        if verdict not in VERDICTS:
            raise _Malformed(f"decision with verdict {str(verdict)[:20]!r}")
        reasons = line.get("reasons")
        if verdict == "reject" and not isinstance(reasons, list):
            raise _Malformed("rejection without a reasons list")
        report.decisions[verdict] += 1
        report.per_day[day][verdict] += 1
        campaign = _text(line, "campaign") or NO_CAMPAIGN
        report.per_campaign[campaign][verdict] += 1
        if hour >= 0:
            report.per_hour[hour][verdict] += 1
            if verdict == "allow" and hour not in LEGAL_HOURS:
                report.allowed_outside_hours += 1
        if not isinstance(reasons, list) or verdict == "allow":
            return
        messages = [m for m in line.get("messages") or [] if isinstance(m, str)]
        for cited in reasons:
            code = str(cited)[:40]
            report.reasons[code] += 1
            examples = report.examples[code]
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append(
                    Example(
                        ts=_text(line, "ts"),
                        call_id=_text(line, "call_id")[:64],
                        professional=_text(line, "professional"),
                        campaign=_text(line, "campaign"),
                        consumer=_text(line, "consumer"),  # the keyed hash: the trail holds no number
                        local_time=_text(line, "local_time"),
                        message="; ".join(messages)[:200],
                    )
                )

    def _consent(self, line: dict[str, Any]) -> None:
        report = self.report
        instant_text = _text(line, "at") or _text(line, "ts")
        if not instant_text:
            raise _Malformed("consent line without an instant")
        granted = line.get("granted")
        if not isinstance(granted, bool):
            action = _text(line, "action")
            if action not in {"grant", "withdraw"}:
                raise _Malformed("consent line neither granted nor withdrawn")
            granted = action == "grant"
        instant = _instant(instant_text)
        pair = (_text(line, "professional"), _text(line, "consumer"))
        previous = report._last_consent.get(pair)
        if previous is None or previous[0] <= instant:
            report._last_consent[pair] = (instant, granted)
        day = _paris_day(instant_text)
        if self._start <= day <= self._end:
            report.in_period += 1
            report.events["consent"] += 1
            report.consents["granted" if granted else "withdrawn"] += 1

    def finish(self) -> None:
        report = self.report
        age = timedelta(days=report.consent_max_age_days)
        for (_, consumer), (instant, granted) in report._last_consent.items():
            if granted and consumer and self._start <= _paris_day((instant + age).isoformat()) <= self._end:
                report.consents["lapsed"] += 1


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


# --- writing --------------------------------------------------------------------------------


def csv_rows(report: Report) -> list[tuple[str, str, str, int]]:
    """The aggregates as (section, key, series, count), the same numbers as the HTML page."""
    rows: list[tuple[str, str, str, int]] = [("summary", key, "", value) for key, value in report.summary().items()]
    for day in sorted(report.per_day):
        rows.extend(("decisions_per_day", day, v, report.per_day[day][v]) for v in VERDICTS)
    rows.extend(("rejections_by_reason", code, "", count) for code, count in report.reasons.most_common())
    for campaign in sorted(report.per_campaign):
        rows.extend(("decisions_by_campaign", campaign, v, report.per_campaign[campaign][v]) for v in VERDICTS)
    for hour in sorted(report.per_hour):
        rows.extend(("decisions_by_local_hour", f"{hour:02d}", v, report.per_hour[hour][v]) for v in VERDICTS)
    for source in sorted(report.refusals):
        rows.extend(("refusals_by_source", source, o, n) for o, n in sorted(report.refusals[source].items()))
    rows.extend(("consents", kind, "", report.consents[kind]) for kind in ("granted", "withdrawn", "lapsed"))
    rows.extend(("events", event, "", count) for event, count in sorted(report.events.items()))
    return rows


def write_csv(report: Report, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("section", "key", "series", "count"))
    writer.writerows(csv_rows(report))


COLOURS = {"allow": "#2e7d32", "reject": "#c62828", "recorded": "#1565c0", "journaled": "#6a1b9a", "lost": "#ef6c00"}
CONSENT_COLOURS = {"granted": "#2e7d32", "withdrawn": "#c62828", "lapsed": "#9e9e9e"}


def _figure(width: float = 8.0, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure  # noqa: PLC0415 - the optional extra, only for this command

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.add_subplot()


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline in HTML


def _counts(axes: Any, axis: str = "y") -> None:
    """Counts are whole: no 0.5 decision on the scale."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    (axes.yaxis if axis == "y" else axes.xaxis).set_major_locator(MaxNLocator(integer=True))


def _empty(axes: Any, what: str) -> None:
    axes.text(0.5, 0.5, f"no {what} in this period", ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])


def _stacked(
    axes: Any, labels: list[str], series: dict[str, list[int]], colours: dict[str, str], *, horizontal: bool
) -> None:
    base = [0] * len(labels)
    for name, values in series.items():
        if horizontal:
            axes.barh(labels, values, left=base, color=colours.get(name), label=name)
        else:
            axes.bar(labels, values, bottom=base, color=colours.get(name), label=name)
        base = [a + b for a, b in zip(base, values, strict=True)]
    _counts(axes, "x" if horizontal else "y")
    # Outside the plot, on the right: inside it would hide the tallest bars.
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def charts(report: Report) -> dict[str, str]:
    """Six charts, each an inline SVG string, keyed by their id in the page."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "npv-guard", "font.size": 9})
    out: dict[str, str] = {}

    figure, axes = _figure()
    days = report.days()
    if sum(report.decisions.values()):
        labels = [d[5:] for d in days] if len(days) > 1 else days
        _stacked(axes, labels, {v: [report.per_day[d][v] for d in days] for v in VERDICTS}, COLOURS, horizontal=False)
        axes.set_ylabel("decisions")
        if len(days) > 14:
            axes.set_xticks(range(0, len(days), max(1, len(days) // 14)))
        axes.tick_params(axis="x", labelrotation=45)
    else:
        _empty(axes, "decisions")
    out["per-day"] = _svg(figure)

    figure, axes = _figure(height=max(2.4, 0.35 * len(report.reasons) + 1))
    if report.reasons:
        codes = [code for code, _ in report.reasons.most_common()][::-1]
        axes.barh(codes, [report.reasons[c] for c in codes], color=COLOURS["reject"])
        axes.set_xlabel("rejected decisions citing the reason")
        _counts(axes, "x")
    else:
        _empty(axes, "rejections")
    out["by-reason"] = _svg(figure)

    campaigns = sorted(report.per_campaign, key=lambda c: -sum(report.per_campaign[c].values()))[:20][::-1]
    figure, axes = _figure(height=max(2.4, 0.35 * len(campaigns) + 1))
    if campaigns:
        series = {v: [report.per_campaign[c][v] for c in campaigns] for v in VERDICTS}
        _stacked(axes, campaigns, series, COLOURS, horizontal=True)
        axes.set_xlabel("decisions")
    else:
        _empty(axes, "decisions")
    out["by-campaign"] = _svg(figure)

    figure, axes = _figure()
    for first, last in ((10, 13), (14, 20)):
        axes.axvspan(first - 0.5, last - 0.5, color="#c8e6c9", zorder=0)
    hours = list(range(24))
    _stacked(axes, [str(h) for h in hours], {v: [report.per_hour[h][v] for h in hours] for v in VERDICTS},
             COLOURS, horizontal=False)  # fmt: skip
    axes.set_xlabel("consumer-local hour (green: legal windows 10:00-13:00 and 14:00-20:00, Mon-Fri)")
    axes.set_ylabel("decisions")
    out["by-hour"] = _svg(figure)

    figure, axes = _figure(width=5.0)
    sources = sorted(report.refusals)
    if sources:
        outcomes = ("recorded", "journaled", "lost")
        _stacked(axes, sources, {o: [report.refusals[s][o] for s in sources] for o in outcomes}, COLOURS,
                 horizontal=False)  # fmt: skip
        axes.set_ylabel("refusals")
    else:
        _empty(axes, "refusals")
    out["refusals"] = _svg(figure)

    figure, axes = _figure(width=5.0)
    kinds = ["granted", "withdrawn", "lapsed"]
    axes.bar(kinds, [report.consents[k] for k in kinds], color=[CONSENT_COLOURS[k] for k in kinds])
    axes.set_ylabel("consents")
    _counts(axes)
    out["consents"] = _svg(figure)
    return out


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#212121}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#616161}
figure{margin:1em 0;break-inside:avoid}figcaption{font-weight:600;margin-bottom:.3em}
figure svg{max-width:100%;height:auto}.grid{display:flex;flex-wrap:wrap;gap:1em}
.alert{color:#c62828;font-weight:600}code{font-size:.9em}
@media print{body{margin:0;max-width:none}}
"""

CHART_TITLES = {
    "per-day": "Decisions per day, by verdict (consumer-local day)",
    "by-reason": "Rejections by reason",
    "by-campaign": "Decisions by campaign",
    "by-hour": "Decisions by consumer-local hour, against the legal windows",
    "refusals": "Refusals by source",
    "consents": "Consents granted, withdrawn and lapsed",
}
SUMMARY_LABELS = {
    "lines": "audit lines read",
    "lines_in_period": "lines in the period (after filters)",
    "malformed_lines": "malformed lines",
    "decisions": "decisions",
    "allowed": "allowed",
    "rejected": "rejected",
    "allowed_outside_legal_hours": "allowed outside 10-13 / 14-20 (consumer time)",
    "refusals": "refusals",
    "refusals_lost": "refusals lost (not recorded)",
    "consents_granted": "consents granted",
    "consents_withdrawn": "consents withdrawn",
    "consents_lapsed": f"consents lapsed (older than the maximum age, default {DEFAULT_CONSENT_MAX_AGE_DAYS} days)",
}


def render_html(report: Report, generated_at: datetime) -> str:
    e = html.escape
    svgs = charts(report)
    summary = report.summary()
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>npv-guard compliance report {report.start} to {report.end}</title><style>{CSS}</style></head><body>",
        f"<h1>Telemarketing compliance report</h1><p class='meta'>Period <b>{report.start}</b> to "
        f"<b>{report.end}</b> (inclusive; consumer-local days for decisions, Europe/Paris otherwise)"
        f" · professional <b>{e(report.professional or 'all')}</b> · campaign <b>{e(report.campaign or 'all')}</b>"
        f" · consent maximum age {report.consent_max_age_days} days<br>"
        f"Generated {generated_at.astimezone(UTC).isoformat(timespec='seconds')} by npv-guard {e(__version__)} from "
        f"{len(report.files)} audit file(s): {e(', '.join(Path(f).name for f in report.files))}."
        " Consumers appear only as their keyed hash.</p>",
        "<h2>Summary</h2><table id='summary'>",
    ]
    for key, value in summary.items():
        alert = " class='n alert'" if value and key in {"malformed_lines", "refusals_lost",
                                                         "allowed_outside_legal_hours"} else " class='n'"  # fmt: skip
        parts.append(f"<tr><th>{e(SUMMARY_LABELS[key])}</th><td{alert} data-key='{key}'>{value}</td></tr>")
    parts.append("</table>")
    if report.malformed_examples:
        parts.append("<p class='alert'>Malformed lines (first ones): " +
                     "; ".join(e(m) for m in report.malformed_examples) + "</p>")  # fmt: skip
    parts.append("<h2>Charts</h2><div class='grid'>")
    for chart_id, title in CHART_TITLES.items():
        parts.append(f"<figure id='chart-{chart_id}'><figcaption>{e(title)}</figcaption>{svgs[chart_id]}</figure>")
    parts.append("</div><h2>Top rejection reasons</h2>")
    if report.reasons:
        parts.append("<table id='top-reasons'><tr><th>reason</th><th>count</th><th>examples (consumer hash, call, "
                     "consumer-local time, campaign)</th></tr>")  # fmt: skip
        for code, count in report.reasons.most_common(TOP_REASONS):
            examples = "<br>".join(
                f"<code>{e(x.consumer or '-')}</code> call <code>{e(x.call_id or '-')}</code> "
                f"{e(x.local_time or x.ts)} {e(x.campaign or '')} {e(x.message)}"
                for x in report.examples[code]
            )
            parts.append(f"<tr><td><b>{e(code)}</b></td><td class='n' data-reason='{e(code)}'>{count}</td>"
                         f"<td>{examples}</td></tr>")  # fmt: skip
        parts.append("</table>")
    else:
        parts.append("<p>No rejection in this period.</p>")
    if report.events:
        parts.append("<h2>Audit lines by event</h2><table id='events'>")
        parts.extend(f"<tr><th>{e(k)}</th><td class='n'>{v}</td></tr>" for k, v in sorted(report.events.items()))
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


# --- command --------------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `report` on the CLI's subparsers."""
    parser = commands.add_parser(
        "report",
        help="compliance report (HTML with charts, CSV) from audit files",
        description="Sum up audit files over a period into one self-contained HTML page and a CSV.",
    )
    parser.add_argument("files", nargs="+", metavar="AUDIT_FILE", help="audit JSON-lines files (.gz too)")
    parser.add_argument("--from", dest="start", required=True, metavar="DAY", help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", required=True, metavar="DAY", help="last day (inclusive), YYYY-MM-DD")
    parser.add_argument("--professional", metavar="ID", help="only this professional's lines")
    parser.add_argument("--campaign", metavar="ID", help="only this campaign's decisions and refusals")
    parser.add_argument("--html", required=True, metavar="OUT.html", help="where to write the report")
    parser.add_argument("--csv", metavar="OUT.csv", help="also write the aggregates as CSV")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $NPV_GUARD_CONFIG)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ReportUsage(f"{flag}: {text[:40]!r} is not a day (YYYY-MM-DD)") from None


def build(args: argparse.Namespace, settings: Settings, err: TextIO) -> Report:
    start, end = _day(args.start, "--from"), _day(args.end, "--to")
    if end < start:
        raise ReportUsage(f"--to {end} is before --from {start}")
    paths = [Path(name) for name in args.files]
    for path in paths:
        if not path.is_file():
            raise ReportUsage(f"{path}: no such audit file")
    report = Report(start, end, args.professional, args.campaign, consent_max_age_days(settings))
    progress = Progress(err)
    Reader(report).read_files(paths, progress)
    progress.done()
    return report


def _write(path: str, text: str) -> None:
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)  # never a half-written report where the officer looks


def _run(ctx: Context, out: TextIO, err: TextIO) -> int:
    args = ctx.args
    try:
        report = build(args, ctx.settings, err)
    except ReportUsage as error:
        err.write(f"npv-guard: {error}\n")
        return EXIT_USAGE
    try:
        page = render_html(report, ctx.clock.now())
    except ImportError:
        err.write("npv-guard: the report needs matplotlib: pip install 'npv-guard[report]'\n")
        return EXIT_FAILED
    _write(args.html, page)
    if args.csv:
        buffer = io.StringIO()
        write_csv(report, buffer)
        _write(args.csv, buffer.getvalue())
    summary = report.summary()
    if args.json:
        out.write(json.dumps({"html": args.html, "csv": args.csv, **summary}) + "\n")
    else:
        out.write(
            f"report {report.start} to {report.end}: {summary['decisions']} decisions "
            f"({summary['allowed']} allowed, {summary['rejected']} rejected), {summary['refusals']} refusals, "
            f"{summary['malformed_lines']} malformed lines of {summary['lines']} -> {args.html}\n"
        )
    return EXIT_OK


async def run(ctx: Context, out: TextIO, err: TextIO) -> int:
    """The `report` command: 0 with the files written, 1 on failure, 2 on a usage error."""
    return await asyncio.to_thread(_run, ctx, out, err)
