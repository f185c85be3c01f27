"""Which rules are in force on a given consumer-local day (REGULATION.md section 9).

A call is judged by the law of its own day, so replaying 2025 gives 2025's answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

NPV_FROM = date(2023, 1, 1)  # ARCEP 2022-1583: NPV caller IDs, 06/07 reserved to persons
D223_9_FROM = date(2023, 3, 1)  # days, hours, 4 attempts in 30 days, 60-day refusal block
OPT_IN_FROM = date(2026, 8, 11)  # L. 223-1 as rewritten by law 2025-594: prior consent
SECTOR_BAN_FROM = date(2020, 7, 24)  # law 2020-901: energy-renovation canvassing banned


@dataclass(frozen=True, slots=True)
class Regime:
    day: date

    @property
    def npv(self) -> bool:
        return self.day >= NPV_FROM

    @property
    def calendar(self) -> bool:
        return self.day >= D223_9_FROM

    @property
    def opt_in(self) -> bool:
        return self.day >= OPT_IN_FROM

    @property
    def sector_ban(self) -> bool:
        return self.day >= SECTOR_BAN_FROM

    def as_dict(self) -> dict[str, bool]:
        return {"npv": self.npv, "d223_9": self.calendar, "opt_in": self.opt_in, "sector_ban": self.sector_ban}
