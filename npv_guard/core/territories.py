"""French territories: time zone and `holidays` subdivision, and how a postcode places a consumer.

`phonenumbers` gets some of this wrong (docs/rules.md, "The consumer and where they are"), so the mapping is ours.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo


class Line(StrEnum):
    """What an overseas national prefix is: a fixed line or a mobile (numbering.NumberKind's values)."""

    GEOGRAPHIC = "geographic"
    MOBILE = "mobile"


@dataclass(frozen=True, slots=True)
class Territory:
    """One territory, one row: everything the numbering plan and the postcodes say about it.

    The lookup tables (country codes, prefixes, departments) are derived from the rows in `ALL`; a
    prefix or country code that several rows list stands for all of them, in `ALL` order.
    """

    code: str  # ISO 3166-1 alpha-2 style, "FR" for metropolitan France
    name: str
    timezone: str
    # `holidays` France subdivision whose local days apply to the whole territory (None: national only).
    subdivision: str | None
    # The rest of the row is data the tables below are derived from: a territory is still
    # compared, hashed (place_of's cache, every call) and shown by its four fields above.
    country_code: int = field(compare=False, repr=False)  # the one its E.164 numbers use
    # Its country code is shared with the French ten-digit national plan (not Saint-Pierre's own plan).
    national_plan: bool = field(default=True, compare=False, repr=False)
    # Overseas national prefixes and what they are (docs/rules.md, "The consumer and where they are").
    prefixes: tuple[tuple[str, Line], ...] = field(default=(), compare=False, repr=False)
    # National-digit prefixes of its NPV ranges (ARCEP 2022-1583).
    npv_prefixes: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # Department codes (the first two or three postcode digits), and whole postcodes of a territory
    # that shares its department's digits.
    departments: tuple[str, ...] = field(default=(), compare=False, repr=False)
    postcodes: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # Departments with their own `holidays` subdivision (Alsace-Moselle).
    local_subdivisions: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    # Its time zone, looked up once (read several times per decision).
    zone: ZoneInfo = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", _zone(self.timezone))


_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    zone = _ZONES.get(name)
    if zone is None:
        zone = _ZONES[name] = ZoneInfo(name)
    return zone


G, M = Line.GEOGRAPHIC, Line.MOBILE
# Mobiles and the NPV range are shared by the three northern islands: such a number may be any of them.
_ANTILLES_NORTH_SHARED = (("0690", M), ("0691", M))

METROPOLE = Territory(
    "FR", "France métropolitaine", "Europe/Paris", None, 33,
    npv_prefixes=(
        "0162", "0163", "0270", "0271", "0377", "0378",
        "0424", "0425", "0568", "0569", "0948", "0949",
    ),
    departments=(*(f"{n:02d}" for n in range(1, 96)), "2A", "2B"),
    local_subdivisions=(("57", "57"), ("67", "6AE"), ("68", "6AE")),
)  # fmt: skip
GUADELOUPE = Territory(
    "GP", "Guadeloupe", "America/Guadeloupe", "971", 590,
    prefixes=(("0590", G), *_ANTILLES_NORTH_SHARED), npv_prefixes=("09475",), departments=("971",),
)  # fmt: skip
SAINT_BARTHELEMY = Territory(
    "BL", "Saint-Barthélemy", "America/St_Barthelemy", "BL", 590,
    prefixes=(("059027", G), *_ANTILLES_NORTH_SHARED), npv_prefixes=("09475",), postcodes=("97133",),
)  # fmt: skip
SAINT_MARTIN = Territory(
    "MF", "Saint-Martin", "America/Marigot", "MF", 590,
    prefixes=(("059087", G), *_ANTILLES_NORTH_SHARED), npv_prefixes=("09475",), postcodes=("97150",),
)  # fmt: skip
GUYANE = Territory(
    "GF", "Guyane", "America/Cayenne", "973", 594,
    prefixes=(("0594", G), ("0694", M)), npv_prefixes=("09476",), departments=("973",),
)  # fmt: skip
MARTINIQUE = Territory(
    "MQ", "Martinique", "America/Martinique", "972", 596,
    prefixes=(("0596", G), ("0696", M), ("0697", M)), npv_prefixes=("09477",), departments=("972",),
)  # fmt: skip
REUNION = Territory(
    "RE", "La Réunion", "Indian/Reunion", "974", 262,
    prefixes=(("0262", G), ("0263", G), ("0692", M), ("0693", M)), npv_prefixes=("09479",),
    departments=("974",),
)  # fmt: skip
MAYOTTE = Territory(
    "YT", "Mayotte", "Indian/Mayotte", "976", 262,
    prefixes=(("0269", G), ("0639", M)), npv_prefixes=("09478",), departments=("976",),
)  # fmt: skip
SAINT_PIERRE = Territory(
    "PM", "Saint-Pierre-et-Miquelon", "America/Miquelon", "PM", 508, national_plan=False, departments=("975",),
)  # fmt: skip

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


_K = TypeVar("_K", bound=Hashable)


def _grouped(pairs: list[tuple[_K, Territory]]) -> dict[_K, tuple[Territory, ...]]:
    """Each key with every territory that lists it, in `ALL` order."""
    table: dict[_K, tuple[Territory, ...]] = {}
    for key, territory in pairs:
        table[key] = (*table.get(key, ()), territory)
    return table


# Country codes that stand for French territories of the national plan, with the territories each
# may mean when the national prefix does not say more.
COUNTRY_CODES: dict[int, tuple[Territory, ...]] = _grouped([(t.country_code, t) for t in ALL if t.national_plan])
# National prefixes of the overseas territories: the territories and the kind of line.
OVERSEAS_PREFIXES: dict[str, tuple[tuple[Territory, ...], Line]] = {
    prefix: (places, next(line for p, line in places[0].prefixes if p == prefix))
    for prefix, places in _grouped([(p, t) for t in ALL for p, _ in t.prefixes]).items()
}
NPV_OVERSEAS_PREFIXES: dict[str, tuple[Territory, ...]] = _grouped(
    [(p, t) for t in ALL if t is not METROPOLE for p in t.npv_prefixes]
)
ANTILLES_NORTH = COUNTRY_CODES[590]
INDIAN_OCEAN = COUNTRY_CODES[262]


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


# Department (or whole postcode) -> where it places the consumer, derived from the rows.
_BY_DEPARTMENT: dict[str, tuple[Territory, str | None]] = {
    code: (t, dict(t.local_subdivisions).get(code)) for t in ALL for code in (*t.departments, *t.postcodes)
}


def place_of_postcode(raw: str) -> Place:
    """Place a consumer from a French postcode (5 digits) or department code ("57", "2A", "974")."""
    code = raw.strip().upper()
    if len(code) == 5 and code.isdigit():
        department = code[:3] if code.startswith("97") else code[:2]
        if code in _BY_DEPARTMENT:  # a territory that shares its department's digits (97133, 97150)
            department = code
        if code.startswith("20"):
            department = "2A"  # Corsica: which half does not matter here
    elif code in ("2A", "2B") or (len(code) in (2, 3) and code.isdigit()):
        department = code.zfill(2)
        if department.isdigit() and department not in _BY_DEPARTMENT and department[0] == "0":
            department = f"{int(department):02d}"  # "057" is the Moselle, local days included
    else:
        raise PostcodeError(f"consumer postcode {raw!r} is neither a French postcode nor a department")
    found = _BY_DEPARTMENT.get(department)
    if found is None:
        raise PostcodeError(f"consumer postcode {raw!r} is not in a territory npv-guard covers")
    territory, local = found
    return place_of(territory, frozenset({local}) if local else frozenset())
