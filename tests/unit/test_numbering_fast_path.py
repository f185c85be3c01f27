"""The French country codes are split without phonenumbers: exactly as phonenumbers splits them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from npv_guard.core.numbering import _international, _international_by_library

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
