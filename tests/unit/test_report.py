"""The report's aggregation on synthetic audit lines: days, hours, filters, lapses, bad lines."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from npv_guard.config import RulesSettings, Settings
from npv_guard.report import Reader, Report, consent_max_age_days, csv_rows, write_csv


def decision(local_time: str | None, verdict: str = "allow", *reasons: str, **extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "ts": "2026-12-01T09:30:00.000Z", "event": "decision", "call_id": "c1", "mode": "ari", "verdict": verdict,
        "reasons": list(reasons), "messages": [], "professional": "acme", "consumer": "ab12",
        "at": "2026-12-01T09:30:00Z", "local_time": local_time,
    }  # fmt: skip
    line.update(extra)
    return line


def consent(at: str, granted: bool = True, consumer: str = "c-1", **extra: Any) -> dict[str, Any]:
    line = {"ts": at, "event": "consent", "mode": "api", "professional": "acme", "consumer": consumer,
            "granted": granted, "at": at}  # fmt: skip
    line.update(extra)
    return line


def summed(lines: list[Any], start: str = "2026-12-01", end: str = "2026-12-01", **options: Any) -> Report:
    report = Report(date.fromisoformat(start), date.fromisoformat(end), **options)
    reader = Reader(report)
    for number, line in enumerate(lines, start=1):
        reader.line(line if isinstance(line, str) else json.dumps(line), f"audit:{number}")
    reader.finish()
    return report


def test_a_decision_counts_on_the_consumers_local_day_and_hour() -> None:
    # 23:30 UTC on 30 November is already 1 December 00:30 in Paris and 03:30 in Réunion.
    report = summed(
        [
            decision("2026-12-01T00:30:00+01:00", "reject", "OUTSIDE_HOURS", at="2026-11-30T23:30:00Z"),
            decision("2026-12-01T03:30:00+04:00", "reject", "OUTSIDE_HOURS", at="2026-11-30T23:30:00Z"),
            decision("2026-11-30T19:30:00-04:00", "reject", "OUTSIDE_HOURS", at="2026-11-30T23:30:00Z"),  # Martinique
        ]
    )
    assert report.decisions == {"reject": 2}
    assert dict(report.per_day) == {"2026-12-01": {"reject": 2}}
    assert {hour: dict(c) for hour, c in report.per_hour.items()} == {0: {"reject": 1}, 3: {"reject": 1}}


def test_lines_without_a_local_time_fall_on_their_paris_day() -> None:
    refusal = {"event": "refusal", "source": "agent", "recorded": True, "journaled": False, "professional": "acme"}
    report = summed(
        [
            {**refusal, "ts": "x", "at": "2026-11-30T23:00:00+00:00"},  # 00:00 in Paris on 1 December: in
            {**refusal, "ts": "x", "at": "2026-11-30T22:59:59Z"},  # 23:59:59 in Paris on 30 November: out
            {**refusal, "ts": "2026-12-01T22:59:00.000Z"},  # no `at`: the line's own instant; 23:59 Paris
            {**refusal, "ts": "x", "at": "2026-12-01T23:00:00Z"},  # 2 December in Paris: out
            decision(None, "reject", "CONSUMER_INVALID", at="2026-11-30T23:10:00Z"),  # unplaceable number: Paris day
        ]
    )
    assert report.refusals["agent"]["recorded"] == 2
    assert report.decisions["reject"] == 1 and report.per_hour == {}  # no consumer-local hour to draw


def test_one_decision_counts_once_and_each_reason_it_cites_once() -> None:
    report = summed(
        [
            decision("2026-12-01T10:30:00+01:00"),
            decision("2026-12-01T21:00:00+01:00", "reject", "OUTSIDE_HOURS", "NO_CONSENT", messages=["why"]),
            decision("2026-12-01T11:00:00+01:00", "reject", "NO_CONSENT", call_id="c2"),
        ]
    )
    assert report.decisions == {"allow": 1, "reject": 2}
    assert report.reasons == {"NO_CONSENT": 2, "OUTSIDE_HOURS": 1}
    assert [e.call_id for e in report.examples["NO_CONSENT"]] == ["c1", "c2"]
    assert report.examples["OUTSIDE_HOURS"][0].consumer == "ab12"  # the hash, never a number
    assert report.allowed_outside_hours == 0


def test_an_allowed_call_outside_the_legal_windows_is_flagged() -> None:
    report = summed(
        [
            decision("2026-12-01T13:15:00+01:00"),  # the lunch gap
            decision("2026-12-01T20:00:00+01:00"),  # the end of the afternoon window is exclusive
            decision("2026-12-01T19:59:00+01:00"),
            decision("2026-12-01T10:00:00+01:00"),
        ]
    )
    assert report.allowed_outside_hours == 2
    assert report.summary()["allowed_outside_legal_hours"] == 2


def test_malformed_lines_are_counted_and_named_never_raised() -> None:
    report = summed(
        [
            '{"event": "decision", "verdict": ',  # cut by a crash
            "[1, 2]",
            "not json at all",
            json.dumps({"ts": "2026-12-01T10:00:00Z"}),  # no event
            json.dumps(decision("2026-12-01T10:30:00+01:00", "maybe")),
            json.dumps(decision("2026-12-01T10:30:00+01:00", "reject", reasons="NO_CONSENT")),
            json.dumps({"event": "refusal", "at": "yesterday"}),
            json.dumps({"event": "refusal"}),
            json.dumps(consent("2026-12-01T10:00:00Z", granted="yes")),  # type: ignore[arg-type]
            "",  # a blank line is no line
            "[" * 100_000,  # deeper than the JSON parser goes
            json.dumps(decision("2026-12-01T10:30:00+01:00")),
        ]
    )
    assert report.malformed == 10
    assert report.lines == 11
    assert report.decisions == {"allow": 1}
    assert report.malformed_examples[0].startswith("audit:1: ")
    assert len(report.malformed_examples) == 5


def test_extra_fields_and_unknown_events_are_tolerated() -> None:
    chained = {"seq": 7, "prev": "ab" * 32, "hash": "cd" * 32, "campaign": "spring", "lead": "L-1"}
    report = summed(
        [
            decision("2026-12-01T10:30:00+01:00", **chained),
            {"event": "attempt", "ts": "2026-12-01T09:30:00Z", **chained},
            {"event": "replay", "ts": "2026-12-01T09:31:00Z", "professional": "acme", "campaign": "spring"},
            {"event": "something-new", "ts": "2026-12-01T09:31:00Z", "professional": "acme", "campaign": "spring"},
        ]
    )
    assert report.malformed == 0
    assert report.events == {"decision": 1, "attempt": 1, "replay": 1, "something-new": 1}
    assert report.per_campaign == {"spring": {"allow": 1}}


def test_filters_by_professional_and_campaign() -> None:
    lines = [
        decision("2026-12-01T10:30:00+01:00", campaign="spring"),
        decision("2026-12-01T10:31:00+01:00", campaign="autumn"),
        decision("2026-12-01T10:32:00+01:00"),  # no campaign
        decision("2026-12-01T10:33:00+01:00", professional="other", campaign="spring"),
        consent("2026-12-01T10:00:00Z"),  # a consent belongs to the pair, not to a campaign
    ]
    everything = summed(lines)
    assert everything.decisions["allow"] == 4
    assert everything.per_campaign.keys() == {"spring", "autumn", "(none)"}
    acme_spring = summed(lines, professional="acme", campaign="spring")
    assert acme_spring.decisions["allow"] == 1
    assert acme_spring.consents["granted"] == 1


def test_consents_granted_withdrawn_and_lapsed() -> None:
    report = summed(
        [
            consent("2026-12-01T09:00:00Z", consumer="a"),
            consent("2026-12-01T10:00:00Z", granted=False, consumer="b"),
            consent("2025-12-01T09:00:00Z", consumer="c"),  # 365 days later: 1 December 2026, lapses in the period
            consent("2025-11-15T09:00:00Z", consumer="d"),  # lapsed before the period
            consent("2025-12-01T09:00:00Z", consumer="e"),
            consent("2026-06-01T09:00:00Z", granted=False, consumer="e"),  # withdrawn since: no lapse
            consent("2025-12-01T09:00:00Z", consumer="f"),
            consent("2026-03-01T09:00:00Z", consumer="f"),  # renewed: no lapse
        ],
    )
    assert report.consents == {"granted": 1, "withdrawn": 1, "lapsed": 1}
    shorter = summed([consent("2026-11-01T09:00:00Z")], consent_max_age_days=30)
    assert shorter.consents["lapsed"] == 1


def test_the_consent_age_comes_from_the_rules_with_a_default() -> None:
    assert consent_max_age_days(Settings()) == 365
    rules = RulesSettings()
    object.__setattr__(rules, "consent_max_age_days", 180)  # the setting the law's work adds
    assert consent_max_age_days(Settings(rules=rules)) == 180


def test_the_period_is_inclusive_and_days_without_calls_are_zeros() -> None:
    report = summed(
        [
            decision("2026-12-01T10:30:00+01:00"),
            decision("2026-12-03T10:30:00+01:00", "reject", "WEEKEND"),
            decision("2026-12-04T10:30:00+01:00"),
        ],
        start="2026-12-01",
        end="2026-12-03",
    )
    assert report.days() == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert report.decisions == {"allow": 1, "reject": 1}


def test_the_csv_holds_the_same_numbers() -> None:
    report = summed(
        [
            decision("2026-12-01T10:30:00+01:00", campaign="spring"),
            decision("2026-12-01T21:30:00+01:00", "reject", "OUTSIDE_HOURS", campaign="spring"),
            {"event": "refusal", "at": "2026-12-01T10:00:00Z", "source": "sms", "recorded": False},
            consent("2026-12-01T09:00:00Z"),
        ]
    )
    buffer = io.StringIO()
    write_csv(report, buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    table = {(r["section"], r["key"], r["series"]): int(r["count"]) for r in rows}
    assert table[("summary", "decisions", "")] == 2
    assert table[("summary", "refusals_lost", "")] == 1
    assert table[("decisions_per_day", "2026-12-01", "allow")] == 1
    assert table[("decisions_per_day", "2026-12-01", "reject")] == 1
    assert table[("rejections_by_reason", "OUTSIDE_HOURS", "")] == 1
    assert table[("decisions_by_campaign", "spring", "reject")] == 1
    assert table[("decisions_by_local_hour", "21", "reject")] == 1
    assert table[("refusals_by_source", "sms", "lost")] == 1
    assert table[("consents", "granted", "")] == 1
    assert len(rows) == len(csv_rows(report))


def test_gzipped_rotated_files_are_read(tmp_path: Path) -> None:
    import gzip  # noqa: PLC0415

    plain = tmp_path / "audit.log"
    rotated = tmp_path / "audit.log.1.gz"
    plain.write_text(json.dumps(decision("2026-12-01T10:30:00+01:00")) + "\n")
    with gzip.open(rotated, "wt") as handle:
        handle.write(json.dumps(decision("2026-12-01T11:30:00+01:00", "reject", "NO_CONSENT")) + "\n")
    report = Reader(Report(date(2026, 12, 1), date(2026, 12, 1))).read_files([rotated, plain])
    assert report.decisions == {"allow": 1, "reject": 1}
    assert report.files == [str(rotated), str(plain)]


@pytest.mark.parametrize("verdict", ["allow", "reject"])
def test_the_hour_of_a_decision_is_read_from_its_local_time(verdict: str) -> None:
    report = summed([decision("2026-12-01T14:05:00+01:00", verdict, *([] if verdict == "allow" else ["WEEKEND"]))])
    assert report.per_hour[14][verdict] == 1
