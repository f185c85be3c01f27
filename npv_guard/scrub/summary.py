"""What a scrub run found: the counts printed at the end (text or --json)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    """The counts of some decided leads: one batch's, or the whole run's."""

    leads: int = 0
    now: int = 0
    later: int = 0
    never: int = 0
    later_by_day: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    caller_rejected: int = 0

    def add(self, other: Tally) -> None:
        self.leads += other.leads
        self.now += other.now
        self.later += other.later
        self.never += other.never
        self.later_by_day.update(other.later_by_day)
        self.reasons.update(other.reasons)
        self.caller_rejected += other.caller_rejected


@dataclass
class Summary(Tally):
    blank_lines: int = 0
    seconds: float = 0.0
    at: str = ""
    professional: str = ""
    campaign: str | None = None
    caller: str = ""
    out: str = ""
    columns: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "leads": self.leads,
            "callable_now": self.now,
            "callable_later": self.later,
            "callable_later_by_day": dict(sorted(self.later_by_day.items())),
            "day_is": "consumer-local date of next_allowed_at",
            "never": self.never,
            "reasons": dict(self.reasons.most_common()),
            "blank_lines_skipped": self.blank_lines,
            "at": self.at,
            "professional": self.professional,
            "campaign": self.campaign,
            "caller": self.caller,
            "columns": self.columns,
            "out": self.out,
            "seconds": round(self.seconds, 3),
            "leads_per_second": round(self.leads / self.seconds) if self.seconds else None,
        }

    def text(self) -> str:
        rate = f"{self.leads / self.seconds:,.0f}/s" if self.seconds else "-"
        lines = [
            f"scrubbed {self.leads:,} leads in {self.seconds:.1f} s ({rate}) as at {self.at}, "
            f"professional {self.professional}, caller {self.caller}",
            f"  callable now    {self.now:>10,}",
            f"  callable later  {self.later:>10,}   by the consumer's local date of npv_next_allowed_at:",
        ]
        lines += [f"    {day}    {count:>10,}" for day, count in sorted(self.later_by_day.items())]
        lines.append(f"  never           {self.never:>10,}")
        if self.reasons:
            lines.append("  reasons: " + ", ".join(f"{code} {count:,}" for code, count in self.reasons.most_common()))
        if self.blank_lines:
            lines.append(f"  blank lines skipped: {self.blank_lines:,}")
        lines.append(f"  written to {self.out}")
        return "\n".join(lines) + "\n"
