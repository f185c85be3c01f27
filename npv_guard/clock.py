"""Instants from outside: the real clock, a replay clock started at NPV_GUARD_NOW, and `--at`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
# Instants outside this range are refused: the calendar and the regimes mean nothing there, and
# the date arithmetic of the rules (blocks of 61 days, windows of 30) must not overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def parse_instant(text: str, zone: ZoneInfo = PARIS) -> datetime:
    """ISO 8601. With an offset or Z it is that instant; without one, wall time in `zone` (Paris)."""
    raw = text.strip()
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{raw[:64]!r} is not an ISO 8601 instant (e.g. 2026-12-01T10:30:00+01:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:  # year 9999 with a negative offset
        instant = LATEST
    if not EARLIEST <= instant < LATEST:
        raise ValueError(f"{raw[:64]!r} is outside 1970-2099")
    return instant


def parse_slot(text: str, zone: ZoneInfo = PARIS) -> tuple[datetime, datetime]:
    """`START/END`, two ISO 8601 instants (each as `parse_instant`), START before END."""
    start_text, sep, end_text = text.strip().partition("/")
    if not sep or not start_text.strip() or not end_text.strip():
        raise ValueError(f"slot {text[:80]!r} is not START/END (e.g. 2026-12-05T09:00/2026-12-05T09:30)")
    start, end = parse_instant(start_text, zone), parse_instant(end_text, zone)
    if not start < end:
        raise ValueError(f"slot {text[:80]!r} ends before it starts")
    return start, end


class Clock:
    """Now. Started at a given instant, it runs on in real time from there (replay mode)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.start = start
        self._started = time.monotonic()

    @property
    def replay(self) -> bool:
        return self.start is not None

    def now(self) -> datetime:
        if self.start is None:
            return datetime.now(UTC)
        return self.start + timedelta(seconds=time.monotonic() - self._started)
