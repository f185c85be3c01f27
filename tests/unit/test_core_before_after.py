"""Temporary: the core before issue #20's CPU work (tests/unit/old_core, a copy of 6d25846) and
now give the same verdict and the same next_allowed_at on thousands of random calls and states."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

import npv_guard.core.decide as new_decide
import npv_guard.core.model as new_model
import npv_guard.core.schedule as new_schedule
import tests.unit.old_core.decide as old_decide
import tests.unit.old_core.model as old_model
import tests.unit.old_core.schedule as old_schedule

CALLERS = (
    "0162000001",
    "+33162000002",
    "0948000003",
    "0270000001",
    "0612345678",
    "0937000001",
    "0899123456",
    "",
    "anonymous",
    "abc",
    "+590590123456",
    "0690123456",
    "+4915112345678",
    "0970000001",
)
CALLEES = (
    "0612345678",
    "+33698765432",
    "0696123456",
    "0692123456",
    "0690123456",
    "+262692000000",
    "0590123456",
    "0800123456",
    "3615",
    "0123456789",
    "+4915112345678",
    "",
    "0594000000",
    "0596000001",
    "06 12 34 56 78",
)
POSTCODES = (None, None, "75011", "67000", "57000", "97200", "97400", "2A004", "99999", "abc")
SECTORS = (None, None, "energy_renovation", "press", "home_adaptation", "other")
PROFESSIONALS = (None, None, "acme", "globex", "ghost", "bad id!")
NPVS = {"acme": ("0162000001", "0162000002", "0948000003", "0937000001"), "globex": ("0270000001",)}


def policies(model: ModuleType) -> list[Any]:
    professionals = tuple(model.Professional(pid, npvs=npvs) for pid, npvs in NPVS.items())
    return [
        model.Policy(),
        model.Policy(professionals=professionals),
        model.Policy(professionals=professionals, local_holidays=False, out_of_hours_slot_only=False),
        model.Policy(fail_open=True, consent_max_age_days=30, callback_working_days=2),
    ]


def instant(rng: random.Random) -> datetime:
    base = datetime(2022, 12, 20, 7, tzinfo=UTC) + timedelta(days=rng.randrange(1700))
    return base + timedelta(
        seconds=rng.randrange(86400 if rng.random() < 0.4 else 12 * 3600), microseconds=rng.choice((0, 0, 1, 999_999))
    )


def case(rng: random.Random) -> dict[str, Any]:
    good = rng.random() < 0.6  # an NPV calling a consumer line: the stateful rules decide
    at = instant(rng)
    near = lambda days: at - timedelta(days=rng.uniform(-2, days), seconds=rng.randrange(86400))  # noqa: E731
    consents = []
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
        granted = rng.random() < 0.85
        c_at = near(400)
        slot = None
        if granted and rng.random() < 0.2:
            start = c_at + timedelta(hours=rng.randrange(1, 200))
            slot = (start, start + timedelta(minutes=rng.choice((30, 60, 180))))
        until = c_at + timedelta(days=rng.randrange(1, 300)) if rng.random() < 0.3 else None
        basis = rng.choice(("consent", "contract", "callback_request")) if granted else None
        consents.append((c_at, granted, basis, rng.random() < 0.2, until if basis == "contract" else None, slot))
    return {
        "request": (
            rng.choice(CALLERS[:3] if good else CALLERS),
            rng.choice(CALLEES[:7] if good else CALLEES),
            at,
            rng.choice(PROFESSIONALS[:3] if good else PROFESSIONALS),
            rng.choice(POSTCODES[:4] if good else POSTCODES),
            rng.choice(SECTORS),
            rng.random() < 0.1,
            rng.random() < (0.05 if good else 0.2),
        ),
        "attempts": [near(35) for _ in range(rng.choice((0, 1, 3, 4, 4, 5, 8)))],
        "refusals": [(near(70), rng.choice(("agent", "sms"))) for _ in range(rng.choice((0, 0, 0, 0, 1, 2)))],
        "consents": consents,
        "policy": rng.randrange(4),
        "state": rng.choice(("state", "state", "state", "none", "unavailable")),
    }


def build(c: dict[str, Any], model: ModuleType) -> tuple[Any, Any, Any]:
    caller, callee, at, professional, postcode, sector, automated, sms = c["request"]
    medium = model.Medium.SMS if sms else model.Medium.VOICE
    request = model.CallRequest(caller, callee, at, professional, postcode, sector, automated, medium)
    if c["state"] == "none":
        state = None
    elif c["state"] == "unavailable":
        state = model.StateUnavailable("test")
    else:
        state = model.PairState(
            tuple(model.Attempt(a, f"c{i}") for i, a in enumerate(c["attempts"])),
            tuple(model.Refusal(r, model.RefusalSource(s)) for r, s in c["refusals"]),
            tuple(
                model.ConsentEvent(a, g, model.Basis(b) if b else None, "p", o, u, model.Slot(*s) if s else None)
                for a, g, b, o, u, s in c["consents"]
            ),
        )
    return request, state, policies(model)[c["policy"]]


def answer(c: dict[str, Any], model: ModuleType, decide: ModuleType, schedule: ModuleType) -> dict[str, Any]:
    request, state, policy = build(c, model)
    verdict = decide.decide(decide.prepare(request, policy), state, policy)
    readable = state if isinstance(state, model.PairState) else None
    return {"verdict": verdict.as_dict(), "next": schedule.next_allowed_at(verdict, readable, policy)}


@pytest.mark.parametrize("seed", range(8))
def test_old_and_new_core_agree(seed: int) -> None:
    rng = random.Random(20261202 + seed)
    for _ in range(1500):
        c = case(rng)
        assert answer(c, new_model, new_decide, new_schedule) == answer(c, old_model, old_decide, old_schedule), c
