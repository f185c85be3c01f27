"""French territories: time zone and `holidays` subdivision, and how a postcode places a consumer.

`phonenumbers` gets some of this wrong (docs/rules.md, "The consumer and where they are"), so the mapping is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Territory:
    code: str  # ISO 3166-1 alpha-2 style, "FR" for metropolitan France
    name: str
    timezone: str
    # `holidays` France subdivision whose local days apply to the whole territory (None: national only).
    subdivision: str | None

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)


_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    zone = _ZONES.get(name)
    if zone is None:
        zone = _ZONES[name] = ZoneInfo(name)
    return zone


METROPOLE = Territory("FR", "France métropolitaine", "Europe/Paris", None)
GUADELOUPE = Territory("GP", "Guadeloupe", "America/Guadeloupe", "971")
SAINT_BARTHELEMY = Territory("BL", "Saint-Barthélemy", "America/St_Barthelemy", "BL")
SAINT_MARTIN = Territory("MF", "Saint-Martin", "America/Marigot", "MF")
GUYANE = Territory("GF", "Guyane", "America/Cayenne", "973")
MARTINIQUE = Territory("MQ", "Martinique", "America/Martinique", "972")
REUNION = Territory("RE", "La Réunion", "Indian/Reunion", "974")
MAYOTTE = Territory("YT", "Mayotte", "Indian/Mayotte", "976")
SAINT_PIERRE = Territory("PM", "Saint-Pierre-et-Miquelon", "America/Miquelon", "PM")

ALL = (
    METROPOLE,
    GUADELOUPE,
    SAINT_BARTHELEMY,
    SAINT_MARTIN,
    GUYANE,
    MARTINIQUE,
    REUNION,
    MAYOTTE,
    SAINT_PIERRE,
)

# Mobiles and some ranges are shared by the three islands: a number there may be any of them.
ANTILLES_NORTH = (GUADELOUPE, SAINT_BARTHELEMY, SAINT_MARTIN)
INDIAN_OCEAN = (REUNION, MAYOTTE)

# Country codes that stand for French territories, with the territories each may mean when the
# national prefix does not say more.
COUNTRY_CODES: dict[int, tuple[Territory, ...]] = {
    33: (METROPOLE,),
    590: ANTILLES_NORTH,
    594: (GUYANE,),
    596: (MARTINIQUE,),
    262: INDIAN_OCEAN,
}


@dataclass(frozen=True, slots=True)
class Place:
    """One place the consumer may be: a territory and the local-holiday subdivisions that apply."""

    territory: Territory
    subdivisions: frozenset[str]


@lru_cache(maxsize=256)  # a handful of distinct places: build each once
def place_of(territory: Territory, extra: frozenset[str] = frozenset()) -> Place:
    own = frozenset({territory.subdivision}) if territory.subdivision else frozenset()
    return Place(territory, own | extra)


class PostcodeError(ValueError):
    pass


_DEPARTMENT_TERRITORY = {
    "971": GUADELOUPE,
    "972": MARTINIQUE,
    "973": GUYANE,
    "974": REUNION,
    "975": SAINT_PIERRE,
    "976": MAYOTTE,
}
_ALSACE_MOSELLE = {"57": "57", "67": "6AE", "68": "6AE"}


def place_of_postcode(raw: str) -> Place:
    """Place a consumer from a French postcode (5 digits) or department code ("57", "2A", "974")."""
    code = raw.strip().upper()
    if len(code) == 5 and code.isdigit():
        if code == "97133":
            return place_of(SAINT_BARTHELEMY)
        if code == "97150":
            return place_of(SAINT_MARTIN)
        department = code[:3] if code.startswith("97") else code[:2]
        if code.startswith("20"):
            department = "2A"  # Corsica: which half does not matter here
    elif code in ("2A", "2B") or (len(code) in (2, 3) and code.isdigit()):
        department = code.zfill(2)
    else:
        raise PostcodeError(f"consumer postcode {raw!r} is neither a French postcode nor a department")
    if department in _DEPARTMENT_TERRITORY:
        return place_of(_DEPARTMENT_TERRITORY[department])
    if department in ("2A", "2B") or (department.isdigit() and 1 <= int(department) <= 95):
        local = _ALSACE_MOSELLE.get(department)
        return place_of(METROPOLE, frozenset({local}) if local else frozenset())
    raise PostcodeError(f"consumer postcode {raw!r} is not in a territory npv-guard covers")
