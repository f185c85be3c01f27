"""The numbering, placement and sector tables derived from the territory and sector rows equal the
literal tables they replaced (written out once here, as they stood before the rows)."""

from __future__ import annotations

from datetime import date

import pytest

from npv_guard.core import model, numbering, regimes
from npv_guard.core import territories as t
from npv_guard.core.numbering import NumberKind, parse
from npv_guard.core.regimes import SectorBan
from npv_guard.core.territories import PostcodeError, place_of, place_of_postcode

G, M = NumberKind.GEOGRAPHIC, NumberKind.MOBILE
OLD_ANTILLES_NORTH = (t.GUADELOUPE, t.SAINT_BARTHELEMY, t.SAINT_MARTIN)
OLD_INDIAN_OCEAN = (t.REUNION, t.MAYOTTE)
OLD_COUNTRY_CODES = {
    33: (t.METROPOLE,),
    590: OLD_ANTILLES_NORTH,
    594: (t.GUYANE,),
    596: (t.MARTINIQUE,),
    262: OLD_INDIAN_OCEAN,
}
OLD_NPV_METROPOLITAN_PREFIXES = (
    "0162", "0163", "0270", "0271", "0377", "0378",
    "0424", "0425", "0568", "0569", "0948", "0949",
)  # fmt: skip
OLD_NPV_OVERSEAS_PREFIXES = {
    "09475": OLD_ANTILLES_NORTH,
    "09476": (t.GUYANE,),
    "09477": (t.MARTINIQUE,),
    "09478": (t.MAYOTTE,),
    "09479": (t.REUNION,),
}
OLD_OVERSEAS_PREFIXES = {
    "059027": ((t.SAINT_BARTHELEMY,), G),
    "059087": ((t.SAINT_MARTIN,), G),
    "0590": ((t.GUADELOUPE,), G),
    "0690": (OLD_ANTILLES_NORTH, M),
    "0691": (OLD_ANTILLES_NORTH, M),
    "0594": ((t.GUYANE,), G),
    "0694": ((t.GUYANE,), M),
    "0596": ((t.MARTINIQUE,), G),
    "0696": ((t.MARTINIQUE,), M),
    "0697": ((t.MARTINIQUE,), M),
    "0262": ((t.REUNION,), G),
    "0263": ((t.REUNION,), G),
    "0692": ((t.REUNION,), M),
    "0693": ((t.REUNION,), M),
    "0269": ((t.MAYOTTE,), G),
    "0639": ((t.MAYOTTE,), M),
}
OLD_E164_COUNTRY_CODE = {
    "FR": 33,
    "GP": 590,
    "BL": 590,
    "MF": 590,
    "GF": 594,
    "MQ": 596,
    "RE": 262,
    "YT": 262,
    "PM": 508,
}
OLD_DEPARTMENT_TERRITORY = {
    "971": t.GUADELOUPE,
    "972": t.MARTINIQUE,
    "973": t.GUYANE,
    "974": t.REUNION,
    "975": t.SAINT_PIERRE,
    "976": t.MAYOTTE,
}
OLD_ALSACE_MOSELLE = {"57": "57", "67": "6AE", "68": "6AE"}


def test_numbering_tables_derived_from_the_rows_equal_the_old_ones() -> None:
    assert t.COUNTRY_CODES == OLD_COUNTRY_CODES
    assert list(t.COUNTRY_CODES) == list(OLD_COUNTRY_CODES)
    assert (t.ANTILLES_NORTH, t.INDIAN_OCEAN) == (OLD_ANTILLES_NORTH, OLD_INDIAN_OCEAN)
    assert numbering.NPV_METROPOLITAN_PREFIXES == OLD_NPV_METROPOLITAN_PREFIXES
    assert numbering.NPV_OVERSEAS_PREFIXES == OLD_NPV_OVERSEAS_PREFIXES
    assert numbering._OVERSEAS_PREFIXES == OLD_OVERSEAS_PREFIXES
    assert {territory.code: territory.country_code for territory in t.ALL} == OLD_E164_COUNTRY_CODE


def _old_place_of_postcode(raw: str) -> t.Place:
    """place_of_postcode as it was written before the rows, over the old tables."""
    code = raw.strip().upper()
    if len(code) == 5 and code.isdigit():
        if code == "97133":
            return place_of(t.SAINT_BARTHELEMY)
        if code == "97150":
            return place_of(t.SAINT_MARTIN)
        department = code[:3] if code.startswith("97") else code[:2]
        if code.startswith("20"):
            department = "2A"
    elif code in ("2A", "2B") or (len(code) in (2, 3) and code.isdigit()):
        department = code.zfill(2)
    else:
        raise PostcodeError("neither")
    if department in OLD_DEPARTMENT_TERRITORY:
        return place_of(OLD_DEPARTMENT_TERRITORY[department])
    if department in ("2A", "2B") or (department.isdigit() and 1 <= int(department) <= 95):
        local = OLD_ALSACE_MOSELLE.get(department)
        return place_of(t.METROPOLE, frozenset({local}) if local else frozenset())
    raise PostcodeError("not covered")


POSTCODES = [
    *(f"{n:05d}" for n in range(0, 100000, 997)),
    *(f"{d}{n:03d}" for d in ("57", "67", "68", "20", "75", "95", "96", "98") for n in (0, 100, 999)),
    *(f"97{n:03d}" for n in range(0, 1000, 7)),
    "97133", "97150", "97100", "97500", "97600",
    *(f"{n:02d}" for n in range(0, 100)),
    *(f"{n:03d}" for n in range(94, 100)), *(str(n) for n in range(970, 980)), "100",
    "2A", "2B", "2a", " 57 ", "2C", "1", "", "ABCDE", "57000 ",
]  # fmt: skip


@pytest.mark.parametrize("raw", POSTCODES)
def test_postcodes_place_consumers_as_the_old_tables_did(raw: str) -> None:
    try:
        expected: t.Place | type[PostcodeError] = _old_place_of_postcode(raw)
    except PostcodeError:
        expected = PostcodeError
    try:
        found: t.Place | type[PostcodeError] = place_of_postcode(raw)
    except PostcodeError:
        found = PostcodeError
    assert found == expected


def test_a_zero_padded_department_gets_its_local_days() -> None:
    # Regression: "057" placed the consumer in metropolitan France without the Moselle's local
    # holidays (Good Friday, 26 December), where "57" and "57000" have them.
    assert place_of_postcode("057") == place_of_postcode("57") == place_of_postcode("57000")
    assert "57" in place_of_postcode("057").subdivisions


@pytest.mark.parametrize(
    ("number", "e164", "codes"),
    [
        ("+590590271234", "+590590271234", ("BL",)),
        ("0690123456", "+590690123456", ("GP", "BL", "MF")),
        ("262692123456", "+262692123456", ("RE",)),
        ("0639123456", "+262639123456", ("YT",)),
        ("+508411234", "+508411234", ("PM",)),
        ("+33947512345", "+590947512345", ("GP", "BL", "MF")),
    ],
)
def test_numbers_are_placed_from_the_rows(number: str, e164: str, codes: tuple[str, ...]) -> None:
    parsed = parse(number)
    assert parsed.e164 == e164
    assert tuple(territory.code for territory in parsed.territories) == codes


def test_the_sector_defaults_derived_from_the_rows_equal_the_old_ones() -> None:
    ban = SectorBan(voice=date(2020, 7, 26), sms=date(2025, 7, 2))
    assert {
        "energy_renovation": ban,
        "renewable_energy": ban,
        "home_adaptation": SectorBan(voice=date(2026, 8, 11), sms=date(2025, 7, 2)),
    } == regimes.DEFAULT_SECTOR_BANS
    assert frozenset({"energy_renovation", "renewable_energy", "home_adaptation"}) == model.DEFAULT_BANNED_SECTORS
    assert frozenset({"press"}) == model.DEFAULT_CONSENT_EXEMPT_SECTORS
    assert date(2020, 7, 26) == regimes.SECTOR_BAN_FROM
