"""The stateful rules on a snapshot: 4 in 30 days, the refusal block, consent and its regimes."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from npv_guard.core.decide import decide, prepare, refusal_block_end, refusal_withdrawal
from npv_guard.core.model import (
    Attempt,
    Basis,
    CallRequest,
    ConsentEvent,
    PairState,
    Policy,
    Refusal,
    RefusalSource,
    StateUnavailable,
)
from npv_guard.core.numbering import parse
from npv_guard.core.territories import place_of

from .helpers import at, codes, verdict

CONSENTED = (ConsentEvent(at("2026-09-01T12:00:00+02:00"), granted=True, basis=Basis.CONSENT, proof="web form"),)


def state(
    attempts: tuple[str, ...] | list[str] = (),
    refusals: tuple[str, ...] | list[str] = (),
    consents: tuple[ConsentEvent, ...] = CONSENTED,
) -> PairState:
    return PairState(tuple(Attempt(at(a)) for a in attempts), tuple(Refusal(at(r)) for r in refusals), consents)


# --- 4 attempts in 30 consumer-local days -------------------------------------------------------


def test_fifth_attempt_in_the_window_is_rejected() -> None:
    three = ["2026-11-10T11:00", "2026-11-17T11:00", "2026-11-24T11:00"]
    assert verdict(state=state(three)).allowed
    result = verdict(state=state([*three, "2026-11-30T11:00"]))
    assert codes(result) == {"FREQUENCY_CAP"}


def test_window_is_days_d_minus_29_to_d_in_consumer_time() -> None:
    # Call on Tuesday 2026-12-01 (D); D-29 is 2026-11-02, D-30 is 2026-11-01.
    recent = ["2026-11-20T11:00", "2026-11-24T11:00", "2026-11-27T11:00"]
    assert codes(verdict(state=state([*recent, "2026-11-02T00:00:00"]))) == {"FREQUENCY_CAP"}
    assert verdict(state=state([*recent, "2026-11-01T23:59:59"])).allowed


def test_window_edge_in_overseas_time() -> None:
    # Consumer in Guadeloupe (UTC-4): D = 2026-12-01, D-29 starts 2026-11-02T04:00Z.
    recent = ["2026-11-20T15:00Z", "2026-11-24T15:00Z", "2026-11-27T15:00Z"]
    call = "2026-12-01T15:00:00Z"
    inside = verdict(call, callee="0590123456", state=state([*recent, "2026-11-02T04:00:00Z"]))
    outside = verdict(call, callee="0590123456", state=state([*recent, "2026-11-02T03:59:59Z"]))
    assert codes(inside) == {"FREQUENCY_CAP"}
    assert outside.allowed


def test_window_across_a_dst_change() -> None:
    # D = Monday 2026-11-23 (CET); D-29 = 2026-10-25, the autumn change (00:00 CEST = 22:00Z the 24th).
    recent = ["2026-11-02T11:00", "2026-11-09T11:00", "2026-11-16T11:00"]
    call = "2026-11-23T11:00:00"
    assert codes(verdict(call, state=state([*recent, "2026-10-24T22:00:00Z"]))) == {"FREQUENCY_CAP"}
    assert verdict(call, state=state([*recent, "2026-10-24T21:59:59Z"])).allowed


def test_attempts_after_the_instant_do_not_count_when_replaying() -> None:
    later = ["2026-12-02T11:00", "2026-12-03T11:00", "2026-12-04T11:00", "2026-12-07T11:00"]
    assert verdict(state=state(later)).allowed


def test_frequency_cap_is_not_lifted_by_an_out_of_hours_consent() -> None:
    # Before 2026-08-11, when a blanket out-of-hours consent still lifted the hours (law change:
    # since that date only an agreed slot does, see test_law_2026.py).
    consents = (ConsentEvent(at("2025-09-01T12:00"), True, Basis.CONSENT, "signed", outside_hours=True),)
    four = ["2026-05-11T11:00", "2026-05-18T11:00", "2026-05-25T11:00", "2026-06-01T11:00"]
    assert codes(verdict("2026-06-02T21:00", state=state(four, consents=consents))) == {"FREQUENCY_CAP"}


def test_no_cap_before_d223_9() -> None:
    four = ["2023-02-01T11:00", "2023-02-06T11:00", "2023-02-08T11:00", "2023-02-10T11:00"]
    assert verdict("2023-02-14T11:00", state=state(four, consents=())).allowed


# --- refusals: 60 days, and for good since opt-in ----------------------------------------------


def test_refusal_blocks_until_midnight_of_day_r_plus_61() -> None:
    # Refused on 2026-01-05 (before opt-in): blocked until 2026-03-07T00:00 Paris.
    refused = "2026-01-05T15:00:00"
    end = refusal_block_end((place_of(parse("0612345678").territories[0]),), at(refused))
    assert end == at("2026-03-07T00:00:00")
    just_before = (end - timedelta(seconds=1)).isoformat()
    assert "REFUSAL_BLOCK" in codes(verdict(just_before, state=state(refusals=[refused], consents=())))
    assert "REFUSAL_BLOCK" not in codes(verdict(end.isoformat(), state=state(refusals=[refused], consents=())))
    assert verdict("2026-03-09T11:00", state=state(refusals=[refused], consents=())).allowed


def test_refusal_block_counts_in_consumer_days() -> None:
    # 23:30 in Réunion on 2026-01-05 is still the 5th there (19:30Z): block ends 2026-03-07T00:00+04:00.
    places = (place_of(parse("0692123456").territories[0]),)
    assert refusal_block_end(places, at("2026-01-05T19:30:00Z")) == at("2026-03-06T20:00:00Z")


def test_refusal_in_the_future_of_a_replayed_instant_does_not_count() -> None:
    assert verdict("2026-01-05T11:00", state=state(refusals=["2026-01-06T11:00"], consents=())).allowed


def test_refusal_since_opt_in_withdraws_consent_for_good() -> None:
    places = (place_of(parse("0612345678").territories[0]),)
    refusal = Refusal(at("2026-09-10T11:00"), RefusalSource.AGENT)
    withdrawal = refusal_withdrawal(places, refusal)
    assert withdrawal is not None and not withdrawal.granted
    consents = (*CONSENTED, withdrawal)
    stored = PairState((), (refusal,), consents)
    assert codes(verdict("2026-09-11T11:00", state=stored)) == {"REFUSAL_BLOCK", "CONSENT_WITHDRAWN"}
    # A year later, the refusal record itself has expired: the withdrawal still holds.
    assert codes(verdict("2027-09-14T11:00", state=PairState((), (), consents))) == {"CONSENT_WITHDRAWN"}
    # A new consent given after the refusal lifts the withdrawal once the 60 days are over.
    renewed = (*consents, ConsentEvent(at("2027-01-04T12:00"), True, Basis.CONSENT, "new form"))
    assert verdict("2027-01-05T11:00", state=PairState((), (), renewed)).allowed


def test_refusal_before_opt_in_does_not_withdraw_consent() -> None:
    places = (place_of(parse("0612345678").territories[0]),)
    assert refusal_withdrawal(places, Refusal(at("2026-08-10T11:00"))) is None
    assert refusal_withdrawal(places, Refusal(at("2026-08-11T00:00"))) is not None


# --- consent ------------------------------------------------------------------------------------


def test_no_consent_after_opt_in() -> None:
    assert codes(verdict(state=state(consents=()))) == {"NO_CONSENT"}
    assert verdict("2026-08-07T11:00", state=state(consents=())).allowed  # Friday before opt-in


def test_opt_in_starts_on_11_august_2026() -> None:
    assert codes(verdict("2026-08-11T11:00", state=state(consents=()))) == {"NO_CONSENT"}
    assert verdict("2026-08-10T19:59:59", state=state(consents=())).allowed


def test_checking_before_the_consent_was_given_gives_that_day_answer() -> None:
    given_at = ConsentEvent(at("2026-12-01T12:00:00"), True, Basis.CONSENT, "call recording")
    stored = state(consents=(given_at,))
    assert codes(verdict("2026-12-01T11:59:59", state=stored)) == {"NO_CONSENT"}
    assert verdict("2026-12-01T12:00:00", state=stored).allowed


def test_withdrawn_consent() -> None:
    events = (*CONSENTED, ConsentEvent(at("2026-11-01T09:00"), granted=False, proof="email"))
    assert codes(verdict(state=state(consents=events))) == {"CONSENT_WITHDRAWN"}
    assert verdict("2026-10-30T11:00", state=state(consents=events)).allowed


def test_withdrawal_wins_a_tie() -> None:
    instant = at("2026-11-01T09:00")
    events = (ConsentEvent(instant, False), ConsentEvent(instant, True, Basis.CONSENT, "x"))
    assert codes(verdict(state=state(consents=events))) == {"CONSENT_WITHDRAWN"}


def test_contract_basis_counts_as_consent_and_lifts_the_sector_ban() -> None:
    contract = (ConsentEvent(at("2026-09-01T12:00"), True, Basis.CONTRACT, "contract 42"),)
    assert verdict(state=state(consents=contract), sector="energy_renovation").allowed
    assert codes(verdict(state=state(), sector="energy_renovation")) == {"SECTOR_BANNED"}


def test_out_of_hours_consent_lifts_days_and_hours_only() -> None:
    # Before 2026-08-11 (law change: since then only an agreed slot lifts them).
    events = (ConsentEvent(at("2025-09-01T12:00"), True, Basis.CONSENT, "asked for evening calls", outside_hours=True),)
    assert verdict("2026-06-06T21:00", state=state(consents=events)).allowed
    assert codes(verdict("2026-06-06T21:00", state=state())) == {"WEEKEND", "OUTSIDE_HOURS"}


def test_automated_calls_need_consent_even_before_opt_in() -> None:
    assert codes(verdict("2025-06-03T11:00", state=state(consents=()), automated=True)) == {"NO_CONSENT"}
    assert verdict("2025-06-03T11:00", state=state(consents=())).allowed


# --- state unavailable ---------------------------------------------------------------------------


def test_state_unavailable_fails_closed_by_default() -> None:
    result = verdict(state=StateUnavailable("timeout"))
    assert codes(result) == {"STATE_UNAVAILABLE"}


def test_state_unavailable_with_fail_open() -> None:
    result = verdict(state=StateUnavailable("timeout"), policy=Policy(fail_open=True))
    assert result.allowed
    assert "frequency_cap" in result.not_evaluated


def test_fail_open_never_opens_a_stateless_rule() -> None:
    result = verdict("2026-12-05T11:00", state=StateUnavailable(), policy=Policy(fail_open=True))
    assert codes(result) == {"WEEKEND"}


# --- no input makes the engine raise ---------------------------------------------------------------

instants = st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2031, 12, 31), timezones=st.timezones())


@settings(max_examples=1500, deadline=None)
@given(
    caller=st.one_of(st.none(), st.text(max_size=60), st.from_regex(r"\A\+?[0-9 ]{0,16}\Z")),
    callee=st.one_of(st.none(), st.text(max_size=60), st.from_regex(r"\A(\+|00)?[0-9 .]{0,16}\Z")),
    postcode=st.one_of(st.none(), st.text(max_size=8), st.from_regex(r"\A[0-9]{2,5}\Z")),
    professional=st.one_of(st.none(), st.text(max_size=70)),
    sector=st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["energy_renovation"])),
    when=instants,
    attempts=st.lists(instants, max_size=6),
    fail=st.booleans(),
)
def test_the_engine_never_raises(
    caller: str | None,
    callee: str | None,
    postcode: str | None,
    professional: str | None,
    sector: str | None,
    when: datetime,
    attempts: list[datetime],
    fail: bool,
) -> None:
    policy = Policy()
    request = CallRequest(caller, callee, when, professional, postcode, sector)
    prepared = prepare(request, policy)
    snapshot = StateUnavailable() if fail else PairState(tuple(Attempt(a) for a in attempts))
    result = decide(prepared, snapshot, policy)
    assert result.verdict in ("allow", "reject")
    assert result.allowed == (not result.reasons)
