"""The SIP ramp's steps: the coarse rates until a route fails, then the gap halved."""

from __future__ import annotations

from bench.sip import next_ramp_rate

RAMP = [50.0, 100.0, 150.0, 200.0, 250.0]


def steps(limit: float, refine: int = 2) -> list[float]:
    """The rates a route clean up to `limit` calls/s is run at."""
    tried: list[tuple[float, bool]] = []
    while (rate := next_ramp_rate(RAMP, tried, refine)) is not None:
        tried.append((rate, rate <= limit))
    return [rate for rate, _ in tried]


def test_a_route_clean_at_every_step_runs_the_ramp_only() -> None:
    assert steps(1000.0) == RAMP


def test_after_the_first_failure_the_gap_is_halved_twice() -> None:
    assert steps(180.0) == [50.0, 100.0, 150.0, 200.0, 175.0, 190.0]
    assert steps(160.0) == [50.0, 100.0, 150.0, 200.0, 175.0, 160.0]


def test_a_route_failing_at_the_first_step_is_refined_from_zero() -> None:
    assert steps(10.0) == [50.0, 25.0, 10.0]


def test_no_refinement_when_asked_for_none_or_the_gap_is_small() -> None:
    assert steps(180.0, refine=0) == [50.0, 100.0, 150.0, 200.0]
    assert next_ramp_rate([100.0, 105.0], [(100.0, True), (105.0, False)], 2) is None


def test_an_empty_ramp_runs_nothing() -> None:
    assert next_ramp_rate([], [], 2) is None
