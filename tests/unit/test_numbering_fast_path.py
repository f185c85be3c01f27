"""The fast paths of `parse`: the French country codes split without phonenumbers exactly as
phonenumbers splits them, and plain digit spellings classified as any spelling would be."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from npv_guard.core.numbering import _any_spelling, _international, _international_by_library, _parse

FRENCH_CODES = ("33", "590", "594", "596", "262")
NEIGHBOURS = ("3", "5", "59", "2", "26", "34", "351", "508", "591", "263", "1", "44")


@settings(max_examples=3000, deadline=None)
@given(
    code=st.sampled_from(FRENCH_CODES + NEIGHBOURS),
    rest=st.text(alphabet="0123456789", min_size=0, max_size=13),
)
def test_fast_path_agrees_with_the_library(code: str, rest: str) -> None:
    digits = code + rest
    assert _international(digits, digits) == _international_by_library(digits, digits)


def test_fast_path_agrees_on_every_french_shape() -> None:
    for code in FRENCH_CODES:
        for first in "0123456789":
            for length in (7, 8, 9, 10):
                digits = code + first + "12345678"[: length - 1]
                assert _international(digits, digits) == _international_by_library(digits, digits), digits


@settings(max_examples=3000, deadline=None)
@given(raw=st.text(alphabet="0123456789 +", min_size=0, max_size=20))
def test_plain_digit_spellings_parse_as_any_spelling(raw: str) -> None:
    # Digits, spaces and a plus skip the URI, name-addr and separator handling: the same answer.
    assert _parse(raw) == _any_spelling(raw)


def test_plain_digit_spellings_of_every_kind() -> None:
    for national in ("0612345678", "0162000001", "0590271234", "0690123456", "0937123456", "0800123456"):
        for raw in (national, " ".join(national[i : i + 2] for i in range(0, 10, 2)), "+33" + national[1:],
                    "0033" + national[1:], f" {national} ", "+ 33" + national[1:], "12345", "+", " ", ""):  # fmt: skip
            assert _parse(raw) == _any_spelling(raw), raw
