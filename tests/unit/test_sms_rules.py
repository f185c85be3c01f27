"""SMS through a platform: the same core, with the message's own rules (medium SMS)."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any

import pytest

from npv_guard.config import ConfigError, load_settings
from npv_guard.core.calendar import Window
from npv_guard.core.decide import Verdict, message_verdict, refusal_withdrawal
from npv_guard.core.message import body_problem
from npv_guard.core.model import (
    Attempt,
    Basis,
    CallRequest,
    ConsentEvent,
    Medium,
    PairState,
    Policy,
    Professional,
    Refusal,
    RefusalSource,
    StateUnavailable,
)
from npv_guard.core.schedule import next_allowed_at
from npv_guard.core.territories import place_of
from npv_guard.sms.text import address_number, declared_sector, is_stop

from .helpers import TUESDAY_MORNING, at, codes, verdict

SENDER = "+33937000001"
ACME = Professional("acme", "ACME", npvs=("0162000001",), platform_numbers=("0937000001",))
POLICY = Policy(professionals=(ACME,))
CONSENTED = (ConsentEvent(at("2026-09-01T12:00:00+02:00"), granted=True, basis=Basis.CONSENT),)


def sms(when: str = TUESDAY_MORNING, *, state: PairState | StateUnavailable | None = None, **facts: Any) -> Verdict:
    facts.setdefault("caller", SENDER)
    facts.setdefault("policy", POLICY)
    return verdict(when, state=PairState(consents=CONSENTED) if state is None else state, medium=Medium.SMS, **facts)


def test_a_consented_message_from_an_assigned_platform_number_is_allowed() -> None:
    result = sms()
    assert result.allowed and result.prepared.professional == "acme"


@pytest.mark.parametrize(
    ("sender", "code"),
    [
        ("+33162000001", "SENDER_NOT_PLATFORM_NUMBER"),  # a voice NPV: calls only
        ("0612345678", "SENDER_NOT_PLATFORM_NUMBER"),
        ("", "SENDER_NOT_PLATFORM_NUMBER"),
        ("anonymous", "SENDER_NOT_PLATFORM_NUMBER"),
        ("0938000009", "CALLER_NOT_ASSIGNED"),  # a platform number nobody here was assigned
    ],
)
def test_sender_must_be_an_assigned_0937_0939_number(sender: str, code: str) -> None:
    assert code in codes(sms(caller=sender))


def test_a_voice_npv_stays_a_valid_caller_for_calls() -> None:
    assert verdict(caller="+33162000001", state=PairState(consents=CONSENTED), policy=POLICY).allowed
    assert "CALLER_NOT_NPV" in codes(verdict(caller=SENDER, state=PairState(consents=CONSENTED), policy=POLICY))


def test_consent_is_needed_whatever_the_date() -> None:
    # Before opt-in a call needs no consent; a commercial SMS always did (CPCE L. 34-5).
    before_opt_in = "2025-12-02T10:30:00+01:00"
    assert verdict(before_opt_in, state=PairState(), policy=POLICY).allowed
    assert codes(sms(before_opt_in, state=PairState())) == {"NO_CONSENT"}


def test_messages_are_not_capped_like_calls() -> None:
    attempts = tuple(Attempt(at(f"2026-11-2{d}T11:00:00+01:00")) for d in range(4, 9))
    assert sms(state=PairState(attempts=attempts, consents=CONSENTED)).allowed


def test_a_refusal_blocks_messages_too() -> None:
    refused = PairState(refusals=(Refusal(at("2026-11-20T11:00:00+01:00")),), consents=CONSENTED)
    assert "REFUSAL_BLOCK" in codes(sms(state=refused))


def test_a_stop_withdraws_consent_even_before_opt_in() -> None:
    places = (place_of(verdict().prepared.places[0].territory),)
    stop = Refusal(at("2025-06-03T11:00:00+02:00"), RefusalSource.SMS)
    dtmf = Refusal(at("2025-06-03T11:00:00+02:00"), RefusalSource.CONSUMER)
    assert refusal_withdrawal(places, stop) is not None
    assert refusal_withdrawal(places, dtmf) is None


def test_the_sector_ban_covers_sms_since_2025_07_02() -> None:
    # Law change: the electronic-means ban (law 2025-594) now applies to text messages.
    assert codes(sms(sector="energy_renovation")) == {"SECTOR_BANNED"}
    early = (ConsentEvent(at("2025-06-02T12:00:00+02:00"), granted=True, basis=Basis.CONSENT),)
    assert sms("2025-07-01T11:00:00+02:00", state=PairState(consents=early), sector="home_adaptation").allowed
    assert codes(sms("2025-07-02T11:00:00+02:00", state=PairState(consents=early), sector="home_adaptation")) == {
        "SECTOR_BANNED"
    }


def test_sending_hours_default_to_the_call_windows() -> None:
    result = sms("2026-12-01T20:30:00+01:00")
    assert codes(result) == {"OUTSIDE_HOURS"} and "messages only 10:00-13:00 and 14:00-20:00" in str(result.reasons)
    assert codes(sms("2026-12-06T11:00:00+01:00")) == {"WEEKEND"}


def test_sending_hours_per_professional_and_when_they_open() -> None:
    own = Professional("acme", npvs=("0162000001",), platform_numbers=("0937000001",),
                       sms_windows=(Window(time(9), time(12)),))  # fmt: skip
    policy = Policy(professionals=(own,))
    assert sms("2026-12-01T09:30:00+01:00", policy=policy).allowed
    late = sms("2026-12-01T12:30:00+01:00", policy=policy)
    assert codes(late) == {"OUTSIDE_HOURS"}
    opens = next_allowed_at(late, PairState(consents=CONSENTED), policy)
    assert opens == at("2026-12-02T09:00:00+01:00")
    # Calls of the same professional keep the D. 223-9 windows.
    assert verdict("2026-12-01T12:30:00+01:00", state=PairState(consents=CONSENTED), policy=policy).allowed


def test_fail_open_never_sends_a_message_on_an_unknown_consent() -> None:
    policy = Policy(professionals=(ACME,), fail_open=True)
    assert "STATE_UNAVAILABLE" in codes(sms(state=StateUnavailable("down"), policy=policy))


def test_a_message_to_a_service_number_is_rejected() -> None:
    assert "CONSUMER_INVALID" in codes(sms(callee="3615"))


# --- what a message says ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["STOP", "stop", "Stop SMS", " stop. ", "ARRET", "Arrêt", "arrêt sms", "STOP PUB", "Stop!", "stop merci"]
)
def test_stop_variants(body: str) -> None:
    assert is_stop(body, load_settings(None, {}).sms.stop_words)


@pytest.mark.parametrize("body", ["", "Bonjour", "Non merci, ne stoppez pas", "STOPPER", None, 42, "🛑"])
def test_not_stop(body: object) -> None:
    assert not is_stop(body, load_settings(None, {}).sms.stop_words)


@pytest.mark.parametrize(
    ("address", "number"),
    [
        ("pjsip:+33612345678@127.0.0.1:5060", "+33612345678"),
        ('"ACME" <sip:0937000001@platform.example;user=phone>', "0937000001"),
        ("<sips:+33937000001@10.0.0.1>", "+33937000001"),
        ("tel:+33612345678", "+33612345678"),
        ("garbage", ""),
        (None, ""),
    ],
)
def test_address_number(address: object, number: str) -> None:
    assert address_number(address) == number


def test_body_problems() -> None:
    assert body_problem("Bonjour 😀", 1023) is None
    assert body_problem("", 1023) and body_problem("   ", 1023) and body_problem(None, 1023)
    assert "1500 bytes" in str(body_problem("é" * 750, 1023))


def test_the_message_rules_reject_a_bad_text_before_any_stored_state() -> None:
    request = CallRequest(SENDER, "0612345678", at(TUESDAY_MORNING), medium=Medium.SMS)
    assert message_verdict(request, "Bonjour", 1023, POLICY) is None
    rejected = message_verdict(request, "", 1023, POLICY)
    assert rejected is not None and rejected.codes == ("MESSAGE_INVALID",)
    assert rejected.not_evaluated == ("refusal_block", "consent")  # nothing was read
    bad_sender = CallRequest("0612345678", "0612345678", at(TUESDAY_MORNING), medium=Medium.SMS)
    both = message_verdict(bad_sender, "é" * 750, 1023, POLICY)
    assert both is not None and both.codes[:2] == ("MESSAGE_INVALID", "SENDER_NOT_PLATFORM_NUMBER")


def test_platform_numbers_and_sms_windows_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "guard.toml"
    path.write_text(
        '[sms]\nenabled = true\n[[professionals]]\nid = "acme"\nnpvs = ["0162000001"]\n'
        'platform_numbers = ["09 37 00 00 01"]\nsms_windows = ["14:00-19:00", "09:00-12:00"]\n'
    )
    settings = load_settings(str(path), {})
    professional = settings.professionals[0]
    assert professional.platform_numbers == ("0937000001",)
    assert [str(w) for w in professional.sms_windows or ()] == ["09:00-12:00", "14:00-19:00"]
    assert settings.policy().owner_of("0937000001") is professional


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ('platform_numbers = ["0162000001"]', "is not a 0937-0939 platform number"),
        ('npvs = ["0162000001"]\nplatform_numbers = ["0162000001"]', "is not a 0937-0939 platform number"),
        ('sms_windows = ["12:00-09:00"]', "ends before it starts"),
        ('sms_windows = ["09:00-12:00", "11:00-13:00"]', "overlap"),
        ("sms_windows = []", "expected a list"),
    ],
)
def test_bad_sms_config_names_the_key(tmp_path: Path, entry: str, error: str) -> None:
    path = tmp_path / "guard.toml"
    path.write_text(f'[[professionals]]\nid = "acme"\n{entry}\n')
    with pytest.raises(ConfigError, match=error):
        load_settings(str(path), {})


def test_a_platform_number_has_one_owner(tmp_path: Path) -> None:
    path = tmp_path / "guard.toml"
    path.write_text(
        '[[professionals]]\nid = "a"\nplatform_numbers = ["0937000001"]\n'
        '[[professionals]]\nid = "b"\nplatform_numbers = ["+33937000001"]\n'
    )
    with pytest.raises(ConfigError, match=r"professionals\[1\].platform_numbers\[0\].*already assigned to 'a'"):
        load_settings(str(path), {})


@pytest.mark.parametrize(
    ("key", "value"),
    [("carrier", "PJSIP/{number}@carrier"), ("platform_endpoint", "platform"), ("max_body_bytes", "5000")],
)
def test_bad_sms_section(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"sms.{key}"):
        load_settings(None, {f"NPV_GUARD_SMS_{key.upper()}": value})


@pytest.mark.parametrize(
    ("variables", "sector"),
    [
        ({"X-NPV-Sector": "energy_renovation"}, "energy_renovation"),
        ({"x-npv-sector": " home_adaptation "}, "home_adaptation"),
        ([{"key": "X-NPV-Sector", "value": "press"}], "press"),
        ({"X-NPV-Sector": "a;b c<d>"}, "abcd"),
        ({"X-NPV-Sector": ""}, None),
        ({"Max-Forwards": "70"}, None),
        (None, None),
        ("X-NPV-Sector: press", None),
    ],
)
def test_the_platform_declares_the_sector_in_a_message_header(variables: object, sector: str | None) -> None:
    assert declared_sector(variables) == sector
