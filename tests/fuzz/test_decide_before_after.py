"""Temporary: the rules-table decide() gives exactly the verdicts of the branchy one it replaced
(tests/fuzz/_decide_before.py), on random requests, policies and pair states."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npv_guard.core import decide as after
from npv_guard.core.calendar import Window
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
    Slot,
    StateUnavailable,
)
from npv_guard.core.reasons import Reason, ReasonCode
from tests.fuzz import _decide_before as before

CALLERS = [
    "0162000001", "+33162000001", "0163123456", "0612345678", "0937000001", "0938123456", "0147000000",
    "0899123456", "3615", "anonymous", "", "abc", "0947512345", "0947612345", "+590947512345", "0800123456",
    "+441632960123", None, "0948000000",
]  # fmt: skip
CALLEES = [
    "0612345678", "+33612345678", "0690123456", "0590271234", "0262123456", "0639123456", "0594123456",
    "+508411234", "0800123456", "0899123456", "+441632960123", "anonymous", "x", "0147000000", "0596123456",
]  # fmt: skip
POSTCODES = [None, "", "57000", "67000", "97133", "97150", "75001", "2A", "97400", "bad", "99999", "20000"]
SECTORS = [None, "energy_renovation", "renewable_energy", "home_adaptation", "press", "insurance", "x"]
PROFESSIONALS = (
    Professional("acme", npvs=("0162000001", "0163123456"), platform_numbers=("0937000001",)),
    Professional(
        "beta", npvs=("0948000000",), platform_numbers=("0938123456",), sms_windows=(Window.parse("09:00-21:00"),)
    ),
)
POLICIES = [
    Policy(),
    Policy(fail_open=True),
    Policy(professionals=PROFESSIONALS),
    Policy(professionals=PROFESSIONALS, fail_open=True, out_of_hours_slot_only=False),
    Policy(consent_exempt_sectors=frozenset(), banned_sectors=frozenset({"insurance", "energy_renovation"})),
    Policy(local_holidays=False, consent_max_age_days=30, callback_working_days=2),
]

instants = st.datetimes(min_value=datetime(2019, 6, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)).map(
    lambda at: at.replace(microsecond=0)
)


@st.composite
def states(draw: st.DrawFn, at: datetime) -> PairState | StateUnavailable | None:
    kind = draw(st.sampled_from(["none", "unavailable", "state"]))
    if kind == "none":
        return None
    if kind == "unavailable":
        return StateUnavailable(draw(st.sampled_from(["", "timeout"])))
    offsets = st.integers(min_value=-400 * 86400, max_value=3600).map(lambda s: at + timedelta(seconds=s))
    attempts = tuple(Attempt(a) for a in draw(st.lists(offsets, max_size=6)))
    refusals = tuple(
        Refusal(r, draw(st.sampled_from(list(RefusalSource)))) for r in draw(st.lists(offsets, max_size=2))
    )
    consents: list[ConsentEvent] = []
    for when in draw(st.lists(offsets, max_size=3)):
        basis = draw(st.sampled_from([None, *Basis]))
        if basis is None:
            consents.append(ConsentEvent(when, granted=False))
            continue
        until = (
            when + timedelta(days=draw(st.integers(1, 500)))
            if basis is Basis.CONTRACT and draw(st.booleans())
            else None
        )
        slot = None
        if draw(st.booleans()):
            start = at - timedelta(hours=draw(st.integers(-3, 3)))
            slot = Slot(start, start + timedelta(hours=2))
        consents.append(ConsentEvent(when, True, basis, outside_hours=draw(st.booleans()), until=until, slot=slot))
    return PairState(attempts, refusals, tuple(consents))


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_rules_table_decides_as_the_branches_did(data: st.DataObject) -> None:
    at = data.draw(instants)
    request = CallRequest(
        caller=data.draw(st.sampled_from(CALLERS)),
        callee=data.draw(st.sampled_from(CALLEES)),
        at=at.astimezone(data.draw(st.sampled_from([UTC, after.METROPOLE.zone]))),
        professional=data.draw(st.sampled_from([None, "", "acme", "beta", "nobody", "bad id", " acme "])),
        consumer_postcode=data.draw(st.sampled_from(POSTCODES)),
        sector=data.draw(st.sampled_from(SECTORS)),
        automated=data.draw(st.booleans()),
        medium=data.draw(st.sampled_from(list(Medium))),
    )
    policy = data.draw(st.sampled_from(POLICIES))
    state = data.draw(states(at))
    old = before.decide(before.prepare(request, policy), state, policy)
    new = after.decide(after.prepare(request, policy), state, policy)
    assert new.reasons == old.reasons
    assert new.not_evaluated == old.not_evaluated
    assert new.as_dict() == old.as_dict()
    old_p, new_p = old.prepared, new.prepared
    assert (new_p.reasons, new_p.calendar_reasons, new_p.professional, new_p.places, new_p.pair) == (
        old_p.reasons, old_p.calendar_reasons, old_p.professional, old_p.places, old_p.pair
    )  # fmt: skip


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    at=instants,
    sender=st.sampled_from(CALLERS),
    callee=st.sampled_from(CALLEES),
    body=st.one_of(st.none(), st.integers(), st.text(max_size=40), st.sampled_from(["", "  ", "é" * 600, "ok"])),
    policy=st.sampled_from(POLICIES),
)
def test_the_message_rule_rejects_as_the_sms_service_did(
    at: datetime, sender: str | None, callee: str, body: object, policy: Policy
) -> None:
    request = CallRequest(sender, callee, at, medium=Medium.SMS)
    problem = body_problem(body, 1023)
    new = after.message_verdict(request, body, 1023, policy)
    if not problem:
        assert new is None
        return
    offline = before.decide(before.prepare(request, policy), None, policy)
    old = replace(offline, reasons=(Reason(ReasonCode.MESSAGE_INVALID, problem), *offline.reasons))
    assert new is not None
    assert new.as_dict() == old.as_dict()
