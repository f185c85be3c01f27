"""Every spelling, every range and its neighbours, every territory (docs/rules.md, "Caller ID")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npv_guard.core.numbering import NPV_METROPOLITAN_PREFIXES, NumberKind, parse

SPELLINGS = [
    "0162000001",
    "+33162000001",
    "0033162000001",
    "33162000001",
    "01 62 00 00 01",
    "01.62.00.00.01",
    "01-62-00-00-01",
    "+33 1 62 00 00 01",
    "+33 (0)1 62 00 00 01",
    "tel:+33162000001",
    "tel:+33-1-62-00-00-01;phone-context=example.com",
    "sip:+33162000001@carrier.example;user=phone",
    "sips:0162000001@10.0.0.1:5061",
    "sip:+33162000001;npdi@carrier.example",
    '"Call centre" <sip:+33162000001@pbx.example>;tag=abc',
    "<tel:+33162000001>",
    " 0162000001 ",
    "+33\u00a01\u00a062\u00a000\u00a000\u00a001",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_normalises_to_one_e164(spelling: str) -> None:
    number = parse(spelling)
    assert number.e164 == "+33162000001"
    assert number.national == "0162000001"
    assert number.kind is NumberKind.NPV_METROPOLITAN


@pytest.mark.parametrize("prefix", NPV_METROPOLITAN_PREFIXES)
def test_every_metropolitan_npv_range_is_npv(prefix: str) -> None:
    national = prefix + "0" * (10 - len(prefix))
    assert parse(national).kind is NumberKind.NPV_METROPOLITAN
    assert parse("+33" + national[1:]).kind is NumberKind.NPV_METROPOLITAN


@pytest.mark.parametrize(
    "neighbour",
    ["0161", "0164", "0269", "0272", "0376", "0379", "0423", "0426", "0567", "0570", "0947", "0950"],
)
def test_neighbours_of_npv_ranges_are_not_npv(neighbour: str) -> None:
    number = parse(neighbour + "0" * (10 - len(neighbour)))
    assert not number.is_npv
    assert number.kind in (NumberKind.GEOGRAPHIC, NumberKind.NON_GEOGRAPHIC)


@pytest.mark.parametrize(
    ("spelling", "territories", "e164"),
    [
        ("0947512345", {"GP", "BL", "MF"}, "+590947512345"),
        ("+590947512345", {"GP", "BL", "MF"}, "+590947512345"),
        ("+33947512345", {"GP", "BL", "MF"}, "+590947512345"),
        ("0947612345", {"GF"}, "+594947612345"),
        ("+594947612345", {"GF"}, "+594947612345"),
        ("0947712345", {"MQ"}, "+596947712345"),
        ("+596947712345", {"MQ"}, "+596947712345"),
        ("0947812345", {"YT"}, "+262947812345"),
        ("+262947812345", {"YT"}, "+262947812345"),
        ("0947912345", {"RE"}, "+262947912345"),
        ("00262947912345", {"RE"}, "+262947912345"),
    ],
)
def test_overseas_npv_under_any_country_code(spelling: str, territories: set[str], e164: str) -> None:
    number = parse(spelling)
    assert number.kind is NumberKind.NPV_OVERSEAS
    assert {t.code for t in number.territories} == territories
    assert number.e164 == e164


@pytest.mark.parametrize("national", ["0947412345", "0947012345"])
def test_09_numbers_beside_the_overseas_npvs_are_ordinary(national: str) -> None:
    assert parse(national).kind is NumberKind.NON_GEOGRAPHIC


def test_09480_is_still_a_metropolitan_npv() -> None:
    assert parse("0948012345").kind is NumberKind.NPV_METROPOLITAN


@pytest.mark.parametrize(
    ("spelling", "kind"),
    [
        ("0612345678", NumberKind.MOBILE),
        ("+33712345678", NumberKind.MOBILE),
        ("0937123456", NumberKind.PLATFORM),
        ("0938123456", NumberKind.PLATFORM),
        ("0939123456", NumberKind.PLATFORM),
        ("0936123456", NumberKind.NON_GEOGRAPHIC),
        ("0940123456", NumberKind.NON_GEOGRAPHIC),
        ("0891234567", NumberKind.PREMIUM_OR_SHORT),
        ("+33899123456", NumberKind.PREMIUM_OR_SHORT),
        ("3900", NumberKind.PREMIUM_OR_SHORT),
        ("118218", NumberKind.PREMIUM_OR_SHORT),
        ("0800123456", NumberKind.SPECIAL),
        ("0123456789", NumberKind.GEOGRAPHIC),
        ("0512345678", NumberKind.GEOGRAPHIC),
        ("0912345678", NumberKind.NON_GEOGRAPHIC),
        ("+442079460958", NumberKind.FOREIGN),
        ("+1 202 555 0100", NumberKind.FOREIGN),
        ("+2693212345", NumberKind.FOREIGN),  # Comoros, not Mayotte
    ],
)
def test_classification(spelling: str, kind: NumberKind) -> None:
    assert parse(spelling).kind is kind


@pytest.mark.parametrize(
    "masked",
    [None, "", "   ", "anonymous", "Anonymous", "sip:anonymous@anonymous.invalid", "restricted", "unknown",
     "private", "withheld", '"Anonymous" <sip:anonymous@anonymous.invalid>', "Masqué", "sip:@host"],
)  # fmt: skip
def test_masked_caller_ids(masked: str | None) -> None:
    assert parse(masked).kind is NumberKind.MASKED


@pytest.mark.parametrize(
    "garbage",
    ["abc", "06123456789012345678", "+", "++33162000001", "0062000001", "01620000011", "016200000",
     "+33 1 62 00 00 0", "+999123", "06 12 34 56 7x", "٠١٦٢٠٠٠٠٠١", "0" * 300, "12345678"],
)  # fmt: skip
def test_garbage_is_invalid_not_an_error(garbage: str) -> None:
    number = parse(garbage)
    assert number.kind is NumberKind.INVALID
    assert number.problem


@pytest.mark.parametrize(
    ("spelling", "territory", "timezone"),
    [
        ("0612345678", "FR", "Europe/Paris"),
        ("0590123456", "GP", "America/Guadeloupe"),
        ("0590271234", "BL", "America/St_Barthelemy"),
        ("0590871234", "MF", "America/Marigot"),
        ("+590590871234", "MF", "America/Marigot"),
        ("0690123456", "GP", "America/Guadeloupe"),
        ("0594123456", "GF", "America/Cayenne"),
        ("0694123456", "GF", "America/Cayenne"),
        ("0596123456", "MQ", "America/Martinique"),  # phonenumbers calls this metropolitan
        ("+33596123456", "MQ", "America/Martinique"),
        ("0696123456", "MQ", "America/Martinique"),
        ("0697123456", "MQ", "America/Martinique"),
        ("0262123456", "RE", "Indian/Reunion"),
        ("0263123456", "RE", "Indian/Reunion"),
        ("0692123456", "RE", "Indian/Reunion"),  # phonenumbers gives Réunion and Mayotte
        ("+262693123456", "RE", "Indian/Reunion"),
        ("0269601234", "YT", "Indian/Mayotte"),  # phonenumbers calls this metropolitan
        ("+262269601234", "YT", "Indian/Mayotte"),
        ("0639123456", "YT", "Indian/Mayotte"),
        ("+508411234", "PM", "America/Miquelon"),
    ],
)
def test_consumer_territory_and_time_zone(spelling: str, territory: str, timezone: str) -> None:
    number = parse(spelling)
    assert number.territories[0].code == territory
    assert number.territories[0].timezone == timezone


def test_mobiles_of_the_northern_islands_may_be_any_of_the_three() -> None:
    assert {t.code for t in parse("0690123456").territories} == {"GP", "BL", "MF"}


def test_unknown_09_under_plus_262_keeps_both_indian_ocean_territories() -> None:
    assert {t.code for t in parse("+262976123456").territories} == {"RE", "YT"}


def test_e164_of_overseas_numbers_uses_their_own_country_code() -> None:
    assert parse("0596123456").e164 == "+596596123456"
    assert parse("0269601234").e164 == "+262269601234"
    assert parse("0590871234").e164 == "+590590871234"


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=400))
def test_no_text_makes_the_parser_raise(text: str) -> None:
    number = parse(text)
    assert number.kind in NumberKind
    if number.e164 is not None:
        assert number.e164.startswith("+") and number.e164[1:].isdigit()


@settings(max_examples=2000, deadline=None)
@given(st.from_regex(r"\A(\+|00)?[0-9 .\-]{0,24}\Z"))
def test_digit_soup_never_raises(text: str) -> None:
    parse(text)
