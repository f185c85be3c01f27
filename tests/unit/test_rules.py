"""The decision core: caller, consumer, calendar, regimes and professionals (no stored state)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from npv_guard.core.model import Policy, Professional
from npv_guard.core.numbering import parse

from .helpers import MOBILE, NPV, at, codes, verdict

# --- windows (consumer time, half-open) ---------------------------------------------------


@pytest.mark.parametrize(
    ("wall", "allowed"),
    [
        ("09:59:59", False),
        ("10:00:00", True),
        ("12:59:59", True),
        ("13:00:00", False),
        ("13:59:59", False),
        ("14:00:00", True),
        ("19:59:59", True),
        ("20:00:00", False),
        ("23:30:00", False),
        ("00:00:00", False),
    ],
)
def test_window_boundaries(wall: str, allowed: bool) -> None:
    result = verdict(f"2026-12-01T{wall}+01:00")
    assert result.allowed is allowed
    assert codes(result) == (set() if allowed else {"OUTSIDE_HOURS"})


def test_dst_monday_after_spring_change_uses_summer_time() -> None:
    # 2026-03-29 is the change; 08:00Z on Monday is 10:00 CEST (allowed), 07:59:59Z is 09:59:59.
    assert verdict("2026-03-30T08:00:00Z").allowed
    assert codes(verdict("2026-03-30T07:59:59Z")) == {"OUTSIDE_HOURS"}
    # The Friday before, 09:00Z is 10:00 CET.
    assert verdict("2026-03-27T09:00:00Z").allowed
    assert codes(verdict("2026-03-27T08:59:59Z")) == {"OUTSIDE_HOURS"}


def test_dst_monday_after_autumn_change_uses_winter_time() -> None:
    # 2026-10-25 is the change; on Monday 26th 19:00Z is 20:00 CET.
    assert verdict("2026-10-26T18:59:59Z").allowed
    assert codes(verdict("2026-10-26T19:00:00Z")) == {"OUTSIDE_HOURS"}


def test_weekend_and_hours_are_both_reported() -> None:
    assert codes(verdict("2026-12-05T10:30:00+01:00")) == {"WEEKEND"}
    assert codes(verdict("2026-12-06T22:00:00+01:00")) == {"WEEKEND", "OUTSIDE_HOURS"}


# --- public holidays ------------------------------------------------------------------------

NATIONAL_2026 = [
    date(2026, 1, 1), date(2026, 4, 6), date(2026, 5, 1), date(2026, 5, 8), date(2026, 5, 14),
    date(2026, 5, 25), date(2026, 7, 14), date(2026, 8, 15), date(2026, 11, 1), date(2026, 11, 11),
    date(2026, 12, 25),
]  # fmt: skip


@pytest.mark.parametrize("day", NATIONAL_2026)
def test_the_eleven_national_holidays(day: date) -> None:
    result = verdict(f"{day.isoformat()}T11:00:00", policy=Policy(local_holidays=False))
    assert "PUBLIC_HOLIDAY" in codes(result)


def test_ordinary_days_around_holidays_are_not_holidays() -> None:
    for day in (date(2026, 5, 15), date(2026, 7, 13), date(2026, 11, 10), date(2026, 12, 24)):
        assert "PUBLIC_HOLIDAY" not in codes(verdict(f"{day.isoformat()}T11:00:00"))


@pytest.mark.parametrize("postcode", ["57000", "67000", "68100", "57", "67", "68"])
def test_alsace_moselle_holidays_by_postcode(postcode: str) -> None:
    good_friday, st_stephen = "2026-04-03T11:00:00", "2026-12-26T11:00:00"
    assert codes(verdict(good_friday, consumer_postcode=postcode)) == {"PUBLIC_HOLIDAY"}
    assert verdict(good_friday).allowed  # unknown postcode: national days only
    assert verdict(good_friday, consumer_postcode="75011").allowed
    assert verdict(good_friday, consumer_postcode=postcode, policy=Policy(local_holidays=False)).allowed
    # 26 Dec 2026 is a Saturday: it is both.
    assert codes(verdict(st_stephen, consumer_postcode=postcode)) == {"PUBLIC_HOLIDAY", "WEEKEND"}


@pytest.mark.parametrize(
    ("callee", "day", "local_wall"),
    [
        ("0590123456", "2026-05-27", "11:00"),  # Guadeloupe, abolition
        ("0590871234", "2026-05-28", "11:00"),  # Saint-Martin
        ("0590271234", "2026-10-09", "11:00"),  # Saint-Barthélemy
        ("0596123456", "2026-05-22", "11:00"),  # Martinique
        ("0594123456", "2026-06-10", "11:00"),  # Guyane
        ("0269601234", "2026-04-27", "11:00"),  # Mayotte
    ],
)
def test_overseas_local_holidays(callee: str, day: str, local_wall: str) -> None:
    zone = parse(callee).territories[0].zone
    instant = datetime.fromisoformat(f"{day}T{local_wall}").replace(tzinfo=zone).isoformat()
    result = verdict(instant, callee=callee)
    assert codes(result) == {"PUBLIC_HOLIDAY"}
    assert verdict(instant, callee=callee, policy=Policy(local_holidays=False)).allowed
    assert verdict(instant).allowed  # the same instant is an ordinary day in metropolitan France


def test_reunion_abolition_day() -> None:
    # 20 Dec 2026 is a Sunday; in 2027 it is a Monday.
    assert codes(verdict("2027-12-20T11:00:00+04:00", callee="0692123456")) == {"PUBLIC_HOLIDAY"}


def test_northern_islands_mobile_blocks_each_island_holiday() -> None:
    for day in ("2026-05-27", "2026-05-28", "2026-10-09"):
        assert "PUBLIC_HOLIDAY" in codes(verdict(f"{day}T11:00:00-04:00", callee="0690123456"))


@pytest.mark.parametrize(
    ("callee", "local"),
    [
        ("0612345678", "14:30"),
        ("0590123456", "09:30"),
        ("0596123456", "09:30"),
        ("0594123456", "10:30"),
        ("0262123456", "17:30"),
        ("0269601234", "16:30"),
        ("+508411234", "10:30"),
    ],
)
def test_each_territory_clock(callee: str, local: str) -> None:
    result = verdict("2026-12-01T13:30:00Z", callee=callee)
    assert result.local_time is not None
    assert f"{result.local_time:%H:%M}" == local
    assert result.allowed is (local != "09:30")


def test_postcode_elsewhere_than_the_number_checks_both_clocks() -> None:
    # A Réunion mobile whose consumer lives in Paris: 07:30 Paris / 10:30 Réunion.
    result = verdict("2026-12-01T06:30:00Z", callee="0692123456", consumer_postcode="75001")
    assert codes(result) == {"OUTSIDE_HOURS"}
    assert result.as_dict()["timezone"] == "Europe/Paris"
    assert verdict("2026-12-01T06:30:00Z", callee="0692123456").allowed


def test_postcode_refines_the_northern_islands() -> None:
    assert verdict("2026-05-27T11:00:00-04:00", callee="0690123456", consumer_postcode="97133").allowed


# --- caller ID -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        ("", "CALLER_MISSING"),
        (None, "CALLER_MISSING"),
        ("anonymous", "CALLER_MISSING"),
        ("not a number", "CALLER_INVALID"),
        ("0612345678", "CALLER_NOT_NPV"),
        ("0712345678", "CALLER_NOT_NPV"),
        ("0937123456", "CALLER_NOT_NPV"),
        ("0891234567", "CALLER_NOT_NPV"),
        ("3900", "CALLER_NOT_NPV"),
        ("0123456789", "CALLER_NOT_NPV"),
        ("0912345678", "CALLER_NOT_NPV"),
        ("+442079460958", "CALLER_NOT_NPV"),
    ],
)
def test_caller_rules(caller: str | None, code: str) -> None:
    assert codes(verdict(caller=caller)) == {code}


@pytest.mark.parametrize("caller", ["0947512345", "+596947712345", "0949123456", "0568000000"])
def test_npv_callers_pass(caller: str) -> None:
    assert verdict(caller=caller).allowed


# --- consumer --------------------------------------------------------------------------------


@pytest.mark.parametrize("callee", ["", None, "xyz", "+442079460958", "0800123456", "3900", "0891234567"])
def test_consumer_must_be_a_french_consumer_line(callee: str | None) -> None:
    assert codes(verdict(callee=callee)) == {"CONSUMER_INVALID"}


@pytest.mark.parametrize("postcode", ["ABCDE", "99999", "98000", "00100", "1", "7500"])
def test_bad_postcode_is_a_safe_reject(postcode: str) -> None:
    assert codes(verdict(consumer_postcode=postcode)) == {"CONSUMER_INVALID"}


def test_every_failing_rule_is_reported() -> None:
    result = verdict("2026-12-06T22:00:00+01:00", caller="0612345678", sector="renewable_energy")
    assert codes(result) == {"CALLER_NOT_NPV", "WEEKEND", "OUTSIDE_HOURS", "SECTOR_BANNED"}


def test_without_a_consumer_place_the_calendar_is_not_evaluated() -> None:
    result = verdict("2026-12-06T22:00:00+01:00", caller="0612345678", callee="0800123456")
    assert codes(result) == {"CALLER_NOT_NPV", "CONSUMER_INVALID"}
    assert "calendar" in result.not_evaluated


# --- regimes by date --------------------------------------------------------------------------


def test_before_npv_regime_mobile_caller_ids_were_allowed() -> None:
    assert verdict("2022-12-15T11:00:00", caller="0612345678").allowed
    assert codes(verdict("2023-01-02T11:00:00", caller="0612345678")) == {"CALLER_NOT_NPV"}


def test_premium_caller_ids_are_forbidden_before_npv_too() -> None:
    assert codes(verdict("2022-12-15T11:00:00", caller="0891234567")) == {"CALLER_NOT_NPV"}


def test_days_and_hours_start_on_1_march_2023() -> None:
    assert verdict("2023-02-25T22:00:00").allowed  # a Saturday night, before D. 223-9
    assert codes(verdict("2023-03-04T22:00:00")) == {"WEEKEND", "OUTSIDE_HOURS"}


def test_regime_follows_the_consumer_local_day() -> None:
    result = verdict("2026-08-10T21:30:00Z", callee="0692123456")  # already 11 Aug in Réunion
    assert result.prepared.regime.opt_in
    assert not verdict("2026-08-10T21:30:00Z").prepared.regime.opt_in


# --- professionals ---------------------------------------------------------------------------

DIRECTORY = Policy(
    professionals=(
        Professional("acme", "ACME", "123456789", ("0162000001", "0162000002")),
        Professional("globex", "Globex", None, ("0948000001",)),
    )
)


def test_assigned_npv_resolves_its_professional() -> None:
    result = verdict(policy=DIRECTORY)
    assert result.allowed
    assert result.prepared.professional == "acme"
    assert verdict(policy=DIRECTORY, professional="acme").allowed


def test_npv_of_another_professional_is_rejected() -> None:
    result = verdict(policy=DIRECTORY, professional="globex")
    assert codes(result) == {"CALLER_NOT_ASSIGNED"}
    assert "acme" in result.reasons[0].message


def test_npv_assigned_to_nobody_is_rejected() -> None:
    assert codes(verdict(caller="0162999999", policy=DIRECTORY)) == {"CALLER_NOT_ASSIGNED"}
    assert codes(verdict(caller="0162999999", policy=DIRECTORY, professional="acme")) == {"CALLER_NOT_ASSIGNED"}


def test_unknown_or_malformed_professional_is_rejected() -> None:
    assert codes(verdict(policy=DIRECTORY, professional="nobody")) == {"CALLER_NOT_ASSIGNED"}
    assert codes(verdict(professional="{bad}")) == {"CALLER_NOT_ASSIGNED"}


def test_without_directory_the_caller_number_is_the_professional() -> None:
    assert verdict().prepared.professional == NPV
    assert verdict(professional="acme").prepared.professional == "acme"


def test_sector_ban_applies_offline() -> None:
    assert codes(verdict(sector="energy_renovation")) == {"SECTOR_BANNED"}
    assert verdict(sector="insurance").allowed
    assert verdict(sector="energy_renovation", policy=Policy(banned_sectors=frozenset())).allowed


def test_offline_lists_what_it_did_not_evaluate() -> None:
    result = verdict()
    assert result.not_evaluated == ("frequency_cap", "refusal_block", "consent")


def test_verdict_dict_shape() -> None:
    data = verdict(callee="0596123456", when="2026-12-01T15:00:00Z").as_dict()
    assert data["verdict"] == "allow"
    assert data["caller"] == NPV and data["callee"] == "+596596123456"
    assert data["timezone"] == "America/Martinique"
    assert data["local_time"] == "2026-12-01T11:00:00-04:00"
    assert data["at"] == "2026-12-01T15:00:00Z"


def test_one_second_steps_around_a_window_end() -> None:
    end = at("2026-12-01T13:00:00+01:00")
    for offset, allowed in ((-1, True), (0, False), (1, False)):
        instant = (end + timedelta(seconds=offset)).isoformat()
        assert verdict(instant, callee=MOBILE).allowed is allowed
