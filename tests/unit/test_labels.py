"""Campaign and lead ids: kept when inert, dropped (call path) or refused (CLI, API) otherwise."""

from __future__ import annotations

import pytest

from npv_guard.core.model import label_problem, professional_problem
from npv_guard.service import call_labels


@pytest.mark.parametrize("value", ["spring-26", "L-000123", "a", "x" * 64, "A.b_c+d-e", "2026"])
def test_inert_ids_are_kept(value: str) -> None:
    assert label_problem(value, "0612345678") is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "expected 1-64"),
        ("x" * 65, "expected 1-64"),
        ("spring 26", "expected 1-64"),
        ("a,b", "expected 1-64"),
        ("camp|aign", "expected 1-64"),  # would break the attempt member's fields
        ("lead-0612345678", "consumer's number"),
        ("33612345678", "consumer's number"),
        ("612345678", "consumer's number"),
    ],
)
def test_ids_that_are_not_inert_are_refused(value: str, problem: str) -> None:
    assert problem in (label_problem(value, "+33 6 12 34 56 78") or "")


def test_the_call_path_drops_what_it_cannot_keep_and_says_which(caplog: pytest.LogCaptureFixture) -> None:
    assert call_labels("spring-26", "L-1", "0612345678") == ("spring-26", "L-1", [])
    assert call_labels("", None, "0612345678") == (None, None, [])
    assert call_labels("spring-26", "0612345678", "0612345678") == ("spring-26", None, ["lead"])
    assert call_labels("c" * 65, "L-1", "0612345678") == (None, "L-1", ["campaign"])
    assert "612345678" not in caplog.text  # the warning never repeats the value


@pytest.mark.parametrize("value", ["acme", "x" * 64, "A.b_c+d-e", "2026"])
def test_well_formed_professional_ids_pass_the_one_check(value: str) -> None:
    assert professional_problem(value) is None


@pytest.mark.parametrize("value", ["", "x" * 65, "ac me", "a,b", "acme\n", "é", None, 12, ["acme"]])
def test_malformed_professional_ids_are_named_by_the_one_check(value: object) -> None:
    assert professional_problem(value) == "expected 1-64 letters, digits or _.+-"


def test_a_label_with_a_trailing_newline_is_not_inert() -> None:
    # Regression: `PROFESSIONAL_ID.match` let "x\n" through ("$" matches before a final newline).
    assert label_problem("spring-26\n", "0612345678") == "expected 1-64 letters, digits or _.+-"
