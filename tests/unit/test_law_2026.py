"""The law as it stands in December 2026 (issue 15, docs/rules.md), each rule at its edges."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from npv_guard.core.decide import callback_request_end, decide, prepare
from npv_guard.core.model import (
    Attempt,
    Basis,
    CallRequest,
    ConsentEvent,
    Medium,
    PairState,
    Policy,
    Refusal,
    Slot,
)
from npv_guard.core.regimes import SectorBan
from npv_guard.core.schedule import next_allowed_at
from npv_guard.core.territories import MARTINIQUE, METROPOLE, place_of

from .helpers import MOBILE, NPV, at, codes, verdict

MARTINIQUE_MOBILE = "0696123456"


def grant(when: str, basis: Basis = Basis.CONSENT, **extra: object) -> ConsentEvent:
    return ConsentEvent(at(when), True, basis, "proof", **extra)  # type: ignore[arg-type]


def consents(*events: ConsentEvent, attempts: tuple[str, ...] = (), refusals: tuple[str, ...] = ()) -> PairState:
    return PairState(tuple(Attempt(at(a)) for a in attempts), tuple(Refusal(at(r)) for r in refusals), events)


def schedule(when: str, state: PairState | None, policy: Policy | None = None, **facts: object) -> datetime | None:
    policy = policy or Policy()
    caller, callee = facts.pop("caller", NPV), facts.pop("callee", MOBILE)
    request = CallRequest(caller=caller, callee=callee, at=at(when), **facts)  # type: ignore[arg-type]
    result = decide(prepare(request, policy), state, policy)
    return next_allowed_at(result, state, policy)


# --- consent lifetime (R. 223-1) -----------------------------------------------------------------


def test_a_consent_is_valid_up_to_its_anniversary_instant_and_lapses_just_after() -> None:
    state = consents(grant("2025-12-01T10:30:00+01:00"))
    assert verdict("2026-12-01T10:30:00+01:00", state=state).allowed
    lapsed = verdict("2026-12-01T10:30:01+01:00", state=state)
    assert codes(lapsed) == {"NO_CONSENT"}
    message = lapsed.reasons[0].message
    assert "lapsed after 2026-12-01T09:30:00Z" in message and "collected at 2025-12-01T09:30:00Z" in message


def test_a_consent_from_spring_2025_has_lapsed_in_december_2026() -> None:
    assert codes(verdict(state=consents(grant("2025-04-15T12:00")))) == {"NO_CONSENT"}


def test_the_lifetime_is_a_setting() -> None:
    state = consents(grant("2025-04-15T12:00"))
    assert verdict(state=state, policy=Policy(consent_max_age_days=730)).allowed


def test_a_newer_consent_renews_and_a_withdrawal_still_wins_over_older_grants() -> None:
    old, new = grant("2025-04-15T12:00"), grant("2026-11-02T12:00")
    assert verdict(state=consents(old, new)).allowed
    withdrawn = ConsentEvent(at("2026-11-20T12:00"), False, proof="withdrawn")
    assert codes(verdict(state=consents(old, new, withdrawn))) == {"CONSENT_WITHDRAWN"}


def test_calls_before_the_decree_are_judged_by_the_law_of_their_day() -> None:
    # Automated calls needed consent before opt-in too; the one-year limit starts with it.
    state = consents(grant("2024-01-10T12:00"))
    assert verdict("2026-06-02T11:00", state=state, automated=True).allowed
    assert codes(verdict("2026-08-11T11:00", state=state, automated=True)) == {"NO_CONSENT"}


def test_a_contract_counts_until_its_end_instant_excluded() -> None:
    contract = grant("2024-01-10T12:00", Basis.CONTRACT, until=at("2026-12-01T11:00:00+01:00"))
    state = consents(contract)
    assert verdict("2026-12-01T10:59:59+01:00", state=state, sector="energy_renovation").allowed
    ended = verdict("2026-12-01T11:00:00+01:00", state=state, sector="energy_renovation")
    assert codes(ended) == {"NO_CONSENT", "SECTOR_BANNED"}
    assert "contract on record since 2024-01-10T11:00:00Z ended at 2026-12-01T10:00:00Z" in ended.reasons[0].message


def test_a_contract_without_an_end_does_not_lapse() -> None:
    assert verdict(state=consents(grant("2021-01-10T12:00", Basis.CONTRACT))).allowed


def test_next_allowed_at_never_points_past_a_lapse() -> None:
    friday_night = "2026-12-04T21:00:00+01:00"
    # Lapses on Saturday at noon, before Monday's first window: time alone cannot make it legal.
    assert schedule(friday_night, consents(grant("2025-12-05T12:00:00+01:00"))) is None
    # Lapses on Tuesday: Monday 10:00 is legal.
    assert schedule(friday_night, consents(grant("2025-12-08T12:00:00+01:00"))) == at("2026-12-07T10:00:00+01:00")


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=400 * 24), st.integers(min_value=0, max_value=30 * 24))
def test_next_allowed_at_is_allowed_and_the_consent_still_counts_then(collected_h: int, call_h: int) -> None:
    collected = at("2025-11-01T00:00:00+01:00") + timedelta(hours=collected_h)
    call = at("2026-11-20T00:00:00+01:00") + timedelta(hours=call_h, minutes=7)
    if collected > call:
        return
    state = consents(ConsentEvent(collected, True, Basis.CONSENT))
    found = schedule(call.isoformat(), state)
    if found is None:
        return
    assert found <= collected + timedelta(days=365)
    assert verdict(found.isoformat(), state=state).allowed
    assert not verdict((found - timedelta(seconds=1)).isoformat(), state=state).allowed


# --- out of hours only at an agreed slot -----------------------------------------------------------


SLOT = Slot(at("2026-12-05T09:00:00+01:00"), at("2026-12-05T09:30:00+01:00"))  # a Saturday morning


def test_a_slot_lifts_the_calendar_from_its_first_to_its_last_second() -> None:
    state = consents(grant("2026-11-20T12:00", slot=SLOT))
    assert verdict("2026-12-05T08:59:59+01:00", state=state).codes == ("OUTSIDE_HOURS", "WEEKEND")
    assert verdict("2026-12-05T09:00:00+01:00", state=state).allowed
    assert verdict("2026-12-05T09:29:59+01:00", state=state).allowed
    assert codes(verdict("2026-12-05T09:30:00+01:00", state=state)) == {"OUTSIDE_HOURS", "WEEKEND"}


def test_a_slot_lifts_neither_the_cap_nor_a_refusal_nor_a_withdrawal() -> None:
    four = ("2026-11-10T11:00", "2026-11-17T11:00", "2026-11-24T11:00", "2026-11-30T11:00")
    slot = grant("2026-11-20T12:00", slot=SLOT)
    assert codes(verdict("2026-12-05T09:10:00+01:00", state=consents(slot, attempts=four))) == {"FREQUENCY_CAP"}
    refused = consents(slot, refusals=("2026-11-25T11:00",))
    assert "REFUSAL_BLOCK" in codes(verdict("2026-12-05T09:10:00+01:00", state=refused))
    withdrawn = consents(slot, ConsentEvent(at("2026-11-30T12:00"), False))
    assert "CONSENT_WITHDRAWN" in codes(verdict("2026-12-05T09:10:00+01:00", state=withdrawn))


def test_each_agreed_slot_counts_not_only_the_latest_grant() -> None:
    other = Slot(at("2026-12-12T09:00:00+01:00"), at("2026-12-12T09:30:00+01:00"))
    state = consents(grant("2026-11-20T12:00", slot=SLOT), grant("2026-11-21T12:00", slot=other))
    assert verdict("2026-12-05T09:10:00+01:00", state=state).allowed
    assert verdict("2026-12-12T09:10:00+01:00", state=state).allowed


def test_a_blanket_out_of_hours_consent_no_longer_lifts_the_calendar() -> None:
    state = consents(grant("2026-09-01T12:00", outside_hours=True))
    result = verdict("2026-12-05T21:00:00+01:00", state=state)
    assert codes(result) == {"OUTSIDE_HOURS", "WEEKEND"}
    assert all("no longer lifts the days and hours since 2026-08-11" in r.message for r in result.reasons)
    assert verdict("2026-12-05T21:00:00+01:00", state=state, policy=Policy(out_of_hours_slot_only=False)).allowed
    # Before that date it did (the law of the call's day).
    summer = consents(grant("2026-07-01T12:00", outside_hours=True))
    assert verdict("2026-08-08T21:00:00+02:00", state=summer).allowed
    assert codes(verdict("2026-08-15T21:00:00+02:00", state=summer)) == {"OUTSIDE_HOURS", "WEEKEND", "PUBLIC_HOLIDAY"}


def test_next_allowed_at_stops_at_a_slot_before_the_next_window() -> None:
    state = consents(grant("2026-11-20T12:00", slot=SLOT))
    assert schedule("2026-12-04T21:00:00+01:00", state) == SLOT.start
    # Past the slot, Monday's first window.
    assert schedule("2026-12-05T09:30:00+01:00", state) == at("2026-12-07T10:00:00+01:00")


# --- sector bans by sector, medium and date ---------------------------------------------------------


def test_each_phone_ban_starts_on_its_own_day() -> None:
    early = consents(grant("2020-07-01T12:00"))
    assert verdict("2020-07-25T11:00:00+02:00", state=early, sector="renewable_energy").allowed
    assert codes(verdict("2020-07-26T11:00:00+02:00", state=early, sector="renewable_energy")) == {"SECTOR_BANNED"}
    late = consents(grant("2026-08-01T12:00"))
    assert verdict("2026-08-10T11:00:00+02:00", state=late, sector="home_adaptation").allowed
    assert codes(verdict("2026-08-11T11:00:00+02:00", state=late, sector="home_adaptation")) == {"SECTOR_BANNED"}


def test_the_ban_day_is_the_consumers_own_day() -> None:
    # 2020-07-26 starts in Paris while it is still the 25th in Martinique.
    state = consents(grant("2020-07-01T12:00"))
    assert verdict("2020-07-25T23:30:00Z", callee=MARTINIQUE_MOBILE, state=state, sector="renewable_energy").allowed
    paris = verdict("2020-07-26T08:30:00Z", callee=MOBILE, state=state, sector="renewable_energy")
    assert codes(paris) == {"SECTOR_BANNED"}


def test_the_ban_table_is_configurable_and_banned_sectors_still_lists_the_banned() -> None:
    state = consents(grant("2026-11-02T12:00"))
    custom = Policy(
        banned_sectors=frozenset({"home_adaptation", "solar_door_to_door"}),
        sector_bans={"home_adaptation": SectorBan(voice=date(2027, 1, 1), sms=None)},
    )
    assert verdict(state=state, policy=custom, sector="home_adaptation").allowed
    # A listed sector without a row of its own: the energy dates.
    assert codes(verdict(state=state, policy=custom, sector="solar_door_to_door")) == {"SECTOR_BANNED"}
    # A default row whose sector is not listed is not banned.
    assert verdict(state=state, policy=custom, sector="energy_renovation").allowed
    assert verdict(state=state, policy=Policy(banned_sectors=frozenset()), sector="energy_renovation").allowed


def test_an_sms_ban_needs_a_contract_or_a_callback_request() -> None:
    sender = "+33937000001"
    state = consents(grant("2026-11-02T12:00", Basis.CONTRACT))
    assert verdict(caller=sender, state=state, medium=Medium.SMS, sector="home_adaptation").allowed
    plain = consents(grant("2026-11-02T12:00"))
    assert codes(verdict(caller=sender, state=plain, medium=Medium.SMS, sector="home_adaptation")) == {"SECTOR_BANNED"}


# --- press exception (L. 223-5) ------------------------------------------------------------------------


def test_the_press_needs_no_consent_but_keeps_days_hours_and_the_cap() -> None:
    assert verdict(state=PairState(), sector="press").allowed
    assert codes(verdict("2026-12-01T21:00:00+01:00", state=PairState(), sector="press")) == {"OUTSIDE_HOURS"}
    four = ("2026-11-10T11:00", "2026-11-17T11:00", "2026-11-24T11:00", "2026-11-30T11:00")
    assert codes(verdict(state=consents(attempts=four), sector="press")) == {"FREQUENCY_CAP"}


def test_the_press_exception_does_not_override_a_refusal_or_l34_5() -> None:
    withdrawn = consents(ConsentEvent(at("2026-11-02T12:00"), False))
    assert codes(verdict(state=withdrawn, sector="press")) == {"CONSENT_WITHDRAWN"}
    assert codes(verdict(state=PairState(), sector="press", automated=True)) == {"NO_CONSENT"}
    sms = verdict(caller="+33937000001", state=PairState(), sector="press", medium=Medium.SMS)
    assert codes(sms) == {"NO_CONSENT"}
    assert codes(verdict(state=PairState(), sector="press", policy=Policy(consent_exempt_sectors=frozenset()))) == {
        "NO_CONSENT"
    }


# --- callback on request (R. 223-4) ------------------------------------------------------------------


def test_a_callback_request_lasts_five_working_days_across_a_weekend() -> None:
    paris = (place_of(METROPOLE),)
    # Thursday 3 Dec: Thu, Fri, Mon, Tue, Wed -> ends at midnight after Wednesday 9 Dec.
    assert callback_request_end(paris, at("2026-12-03T15:00:00+01:00"), Policy()) == at("2026-12-10T00:00:00+01:00")
    # Asked on a Saturday: the count starts on Monday.
    assert callback_request_end(paris, at("2026-12-05T15:00:00+01:00"), Policy()) == at("2026-12-12T00:00:00+01:00")


def test_a_callback_request_skips_the_holidays_of_the_consumers_territory() -> None:
    # Wednesday 20 May 2026; Whit Monday 25 May everywhere, 22 May (abolition) in Martinique only.
    asked = "2026-05-20T11:00:00"
    paris = callback_request_end((place_of(METROPOLE),), at(asked + "+02:00"), Policy())
    assert paris == at("2026-05-28T00:00:00+02:00")  # Wed, Thu, Fri, Tue, Wed
    fort_de_france = callback_request_end((place_of(MARTINIQUE),), at(asked + "-04:00"), Policy())
    assert fort_de_france == at("2026-05-29T00:00:00-04:00")  # Wed, Thu, Tue, Wed, Thu
    # Christmas in Paris: Wed 23, Thu 24, (Fri 25), Mon 28, Tue 29, Wed 30.
    christmas = callback_request_end((place_of(METROPOLE),), at("2026-12-23T11:00:00+01:00"), Policy())
    assert christmas == at("2026-12-31T00:00:00+01:00")


def test_a_callback_request_counts_even_in_a_banned_sector_until_its_last_working_day() -> None:
    state = consents(grant("2026-12-03T15:00:00+01:00", Basis.CALLBACK_REQUEST))
    assert verdict("2026-12-09T19:59:59+01:00", state=state, sector="energy_renovation").allowed
    after = verdict("2026-12-10T10:00:00+01:00", state=state, sector="energy_renovation")
    assert codes(after) == {"NO_CONSENT", "SECTOR_BANNED"}
    assert "callback request of 2026-12-03T14:00:00Z expired at 2026-12-09T23:00:00Z" in after.reasons[0].message


def test_a_callback_request_keeps_days_hours_and_the_cap() -> None:
    state = consents(grant("2026-12-03T15:00:00+01:00", Basis.CALLBACK_REQUEST))
    assert codes(verdict("2026-12-05T11:00:00+01:00", state=state)) == {"WEEKEND"}
    four = ("2026-12-03T15:10", "2026-12-03T15:20", "2026-12-03T15:30", "2026-12-03T15:40")
    full = consents(grant("2026-12-03T15:00:00+01:00", Basis.CALLBACK_REQUEST), attempts=four)
    assert codes(verdict("2026-12-04T11:00:00+01:00", state=full)) == {"FREQUENCY_CAP"}


def test_a_callback_request_overseas_counts_on_the_consumers_clock() -> None:
    state = consents(grant("2026-05-20T11:00:00-04:00", Basis.CALLBACK_REQUEST))
    # Thursday 28 May, 19:59:59 in Martinique (the 5th working day there): still valid. (A
    # recorded-message call, which needed consent before the opt-in date too.)
    call = {"callee": MARTINIQUE_MOBILE, "state": state, "automated": True}
    assert verdict("2026-05-28T19:59:59-04:00", **call).allowed  # type: ignore[arg-type]
    assert codes(verdict("2026-05-29T10:00:00-04:00", **call)) == {"NO_CONSENT"}  # type: ignore[arg-type]


# --- check --offline: next_allowed_at from the calendar rules -------------------------------------------


def test_offline_next_allowed_at_for_calendar_rejections_only() -> None:
    result = verdict("2026-12-01T21:00:00+01:00")
    assert result.not_evaluated == ("frequency_cap", "refusal_block", "consent")
    assert next_allowed_at(result, None, Policy()) == at("2026-12-02T10:00:00+01:00")
    assert schedule("2026-12-05T11:00:00+01:00", None) == at("2026-12-07T10:00:00+01:00")
    assert schedule("2026-12-01T21:00:00+01:00", None, sector="energy_renovation") is None
    assert schedule("2026-12-01T21:00:00+01:00", None, caller="0612345678") is None
