"""The rules table: one row per rule, every reason code given by one rule, and the media and
regimes each row declares are the ones the verdicts follow."""

from __future__ import annotations

from datetime import UTC, datetime

from npv_guard.core.decide import NOT_EVALUATED_OFFLINE, RULES, STATE_RULES, decide, prepare
from npv_guard.core.model import CallRequest, Medium, PairState, Policy
from npv_guard.core.reasons import ReasonCode
from npv_guard.core.rules import Stage


def test_each_rule_is_one_row_and_each_code_belongs_to_one_rule() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))
    owners = [code for rule in RULES for code in rule.codes]
    assert len(owners) == len(set(owners))
    # The one code no rule gives: the decision itself, when the state cannot be read.
    assert set(ReasonCode) - set(owners) == {ReasonCode.STATE_UNAVAILABLE}


def test_the_table_is_ordered_by_stage_as_verdicts_report_reasons() -> None:
    order = list(Stage)
    stages = [order.index(rule.stage) for rule in RULES]
    assert stages == sorted(stages)


def test_offline_lists_the_stateful_rules_that_need_the_state() -> None:
    assert NOT_EVALUATED_OFFLINE == {
        Medium.VOICE: ("frequency_cap", "refusal_block", "consent"),
        Medium.SMS: ("refusal_block", "consent"),
    }
    assert "frequency_cap" not in [rule.name for rule in STATE_RULES[Medium.SMS]]


def test_a_rule_out_of_force_gives_nothing() -> None:
    # 2022: before D. 223-9's calendar and before opt-in, a Sunday night call from a geographic
    # number (before the NPV plan) with no consent passes; in 2026 every one of those rules rejects.
    sunday_night = CallRequest("0147000000", "0612345678", datetime(2022, 11, 13, 22, 0, tzinfo=UTC))
    policy = Policy()
    assert decide(prepare(sunday_night, policy), PairState(), policy).allowed
    later = CallRequest("0147000000", "0612345678", datetime(2026, 11, 15, 22, 0, tzinfo=UTC))
    assert decide(prepare(later, policy), PairState(), policy).codes == (
        "CALLER_NOT_NPV",
        "OUTSIDE_HOURS",
        "WEEKEND",
        "NO_CONSENT",
    )
