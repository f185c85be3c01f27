"""`parse` memoises its answer per string: the cached answer is the uncached one, on any input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from npv_guard.core.numbering import MAX_RAW_LENGTH, _parse, parse

SPELLINGS = st.one_of(
    st.text(alphabet="0123456789 +.-()", min_size=0, max_size=20),
    st.builds(
        lambda p, n: p + n,
        st.sampled_from(("", "0", "+33", "0033", "33", "+262", "+590", "sip:")),
        st.text(alphabet="0123456789", min_size=0, max_size=12),
    ),
    st.text(max_size=40),
)


@settings(max_examples=3000, deadline=None)
@given(raw=SPELLINGS)
def test_the_cached_answer_is_the_parsed_one(raw: str) -> None:
    first, second = parse(raw), parse(raw)
    assert first == _parse(raw)
    assert second is first  # the second look-up is the memoised answer


def test_what_is_not_cached_is_parsed_as_before() -> None:
    long = "0" * (MAX_RAW_LENGTH + 1)
    assert parse(long) == _parse(long)
    assert parse(None) == _parse(None)
    assert parse(612345678) == _parse(612345678)  # type: ignore[arg-type]  # a dialer's integer
