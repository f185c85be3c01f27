"""Which rules are in force on a given consumer-local day (docs/rules.md, "Key dates").

A call is judged by the law of its own day, so replaying 2025 gives 2025's answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

NPV_FROM = date(2023, 1, 1)  # ARCEP 2022-1583: NPV caller IDs, 06/07 reserved to persons
D223_9_FROM = date(2023, 3, 1)  # days, hours, 4 attempts in 30 days, 60-day refusal block
OPT_IN_FROM = date(2026, 8, 11)  # L. 223-1 as rewritten by law 2025-594: prior consent
# Décret 2026-662 (R. 223-1): a consent counts one year at most; applied with the opt-in it serves.
CONSENT_LIFETIME_FROM = OPT_IN_FROM
# L. 223-1 new and D. 223-9 as rewritten: out of hours only at a slot the consumer agreed to.
SLOT_ONLY_FROM = OPT_IN_FROM


@dataclass(frozen=True, slots=True)
class SectorBan:
    """From which consumer-local day a sector may no longer be canvassed, per medium (None: never)."""

    voice: date | None
    sms: date | None


@dataclass(frozen=True, slots=True)
class Sector:
    """One sector a campaign may declare, one row: adding a sector touches `SECTORS` only."""

    name: str
    ban: SectorBan | None = None  # canvassing banned from these days, outside a contract (L. 223-1)
    consent_exempt: bool = False  # canvassing needs no prior consent (L. 223-5)


# Law 2020-901 (JO of 25 July 2020, in force on the 26th) banned canvassing by phone for
# energy-saving works and renewable energy; law 2025-594 added housing adaptation by phone from
# the opt-in date, and every electronic means (SMS) for the three from 2 July 2025.
ENERGY_BAN = SectorBan(voice=date(2020, 7, 26), sms=date(2025, 7, 2))
SECTORS = (
    Sector("energy_renovation", ban=ENERGY_BAN),
    Sector("renewable_energy", ban=ENERGY_BAN),
    Sector("home_adaptation", ban=SectorBan(voice=date(2026, 8, 11), sms=date(2025, 7, 2))),
    Sector("press", consent_exempt=True),  # newspapers, periodicals and magazines
)
# The default of rules.sector_bans (and rules.banned_sectors, core/model.py, with the exempt ones).
DEFAULT_SECTOR_BANS: dict[str, SectorBan] = {sector.name: sector.ban for sector in SECTORS if sector.ban}
# A sector listed in rules.banned_sectors without its own row in rules.sector_bans.
FALLBACK_SECTOR_BAN = ENERGY_BAN
# The first day any default ban applies: the `sector_ban` flag of a verdict's regime.
SECTOR_BAN_FROM = min(day for ban in DEFAULT_SECTOR_BANS.values() for day in (ban.voice, ban.sms) if day is not None)


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
    def consent_lifetime(self) -> bool:
        return self.day >= CONSENT_LIFETIME_FROM

    @property
    def slot_only(self) -> bool:
        return self.day >= SLOT_ONLY_FROM

    @property
    def sector_ban(self) -> bool:
        return self.day >= SECTOR_BAN_FROM

    def as_dict(self) -> dict[str, bool]:
        return {"npv": self.npv, "d223_9": self.calendar, "opt_in": self.opt_in, "sector_ban": self.sector_ban}
