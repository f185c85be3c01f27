"""The consumer's local calendar: windows, weekends and public holidays (D. 223-9)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import lru_cache

import holidays

from npv_guard.core.territories import Place


@dataclass(frozen=True, slots=True)
class Window:
    """Half-open [start, end): 10:00:00 is inside 10:00-13:00, 13:00:00 is not (a choice)."""

    start: time
    end: time

    def __contains__(self, moment: time) -> bool:
        return self.start <= moment < self.end

    def __str__(self) -> str:
        # Written into every OUTSIDE_HOURS message: plain integer formatting, not strftime (a
        # quarter of the message's cost in a night-time lead-list scrub); the same text.
        start, end = self.start, self.end
        return f"{start.hour:02d}:{start.minute:02d}-{end.hour:02d}:{end.minute:02d}"

    @classmethod
    def parse(cls, text: str) -> Window:
        start_text, sep, end_text = text.partition("-")
        if not sep:
            raise ValueError(f"window {text!r} is not HH:MM-HH:MM")
        start, end = time.fromisoformat(start_text.strip()), time.fromisoformat(end_text.strip())
        if not start < end:
            raise ValueError(f"window {text!r} ends before it starts")
        return cls(start, end)


CALL_WINDOWS = (Window(time(10), time(13)), Window(time(14), time(20)))


@lru_cache(maxsize=512)
def _holidays(subdivision: str | None, year: int) -> dict[date, str]:
    # The package's national calendar is exactly the 11 days of Code du travail L. 3133-1 for the
    # years we care about; a subdivision adds its own days to those.
    return dict(holidays.country_holidays("FR", subdiv=subdivision, years=year, language="fr"))


def national_holidays(year: int) -> dict[date, str]:
    return _holidays(None, year)


def holiday_name(place: Place, day: date, local_holidays: bool) -> str | None:
    """The public holiday `day` is for a consumer in `place`, or None."""
    name = _holidays(None, day.year).get(day)
    if name or not local_holidays:
        return name
    for subdivision in sorted(place.subdivisions):
        name = _holidays(subdivision, day.year).get(day)
        if name:
            return f"{name} ({subdivision})"
    return None


@dataclass(frozen=True, slots=True)
class LocalCalendarIssues:
    weekend: bool
    outside_hours: bool
    holiday: str | None


def local_issues(
    place: Place, instant: datetime, windows: tuple[Window, ...], local_holidays: bool
) -> tuple[datetime, LocalCalendarIssues]:
    """The consumer's wall clock at `instant` and which calendar rules it breaks."""
    local = instant.astimezone(place.territory.zone)
    moment = local.time()  # the wall-clock time, naive
    weekend, holiday = _day_facts(place, local.date(), local_holidays)
    return local, LocalCalendarIssues(weekend, not any(moment in window for window in windows), holiday)


@lru_cache(maxsize=4096)
def _day_facts(place: Place, day: date, local_holidays: bool) -> tuple[bool, str | None]:
    """Whether `day` is a weekend day and which public holiday it is, in `place`: the same for every
    call of a consumer-local day, so each (place, day) is worked out once."""
    return day.weekday() >= 5, holiday_name(place, day, local_holidays)


def local_midnight(place: Place, day: date) -> datetime:
    """The instant the consumer's `day` starts (a DST change never falls at midnight in France)."""
    return datetime.combine(day, time(0), tzinfo=place.territory.zone)


def utc_iso(instant: datetime) -> str:
    """An instant as ISO 8601 UTC to the second, with Z (messages, CLI output)."""
    return instant.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
