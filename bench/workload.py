"""The inputs the benchmark feeds the guard: deterministic, realistic, and valid where they should be."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from npv_guard.core.model import Attempt, Basis, CallRequest, ConsentEvent, PairState, Policy, Professional

PARIS = ZoneInfo("Europe/Paris")
SEED = 20261201

# Three professionals, three NPVs each (metropolitan and overseas NPV ranges), as a config would list them.
PROFESSIONALS = (
    Professional("acme", "ACME Énergie", "123456789", ("0162000001", "0162000002", "0948000003")),
    Professional("globex", "Globex", "987654321", ("0270000001", "0377000002", "0424000003")),
    Professional("initech", "Initech", "555555555", ("0568000001", "0949000002", "0947700003")),
)
POLICY = Policy(professionals=PROFESSIONALS)

# Metropolitan mobile blocks (06/07 minus the overseas 0639 and 069x ranges): 10^7 numbers each.
_MOBILE_BLOCKS = (
    "060", "061", "062", "064", "065", "066", "067", "068", "073", "074", "075", "076", "077", "078", "079",
)  # fmt: skip
# Overseas consumers: Martinique and Réunion mobiles, a northern-Antilles mobile (three possible islands).
_OVERSEAS_BLOCKS = ("0696", "0692", "0690")


def _spell_national(national: str, style: int) -> str:
    """One number as a dialer or a CRM export may write it (all parseable by phonenumbers in region FR)."""
    if style == 0:
        return national
    if style == 1:
        return "+33" + national[1:]
    if style == 2:
        return " ".join(national[i : i + 2] for i in range(0, 10, 2))
    return "0033" + national[1:]


def mobile_numbers(count: int, seed: int = SEED) -> list[str]:
    """`count` distinct metropolitan mobile numbers, national form."""
    block = 10**7
    picks = random.Random(seed).sample(range(len(_MOBILE_BLOCKS) * block), count)
    return [f"{_MOBILE_BLOCKS[p // block]}{p % block:07d}" for p in picks]


def consumer_numbers(count: int, seed: int = SEED) -> list[str]:
    """Distinct consumers, national form: about 92% metropolitan mobiles, 5% landlines, 3% overseas."""
    rng = random.Random(seed + 1)
    numbers = mobile_numbers(count, seed)
    for i in range(count):
        roll = rng.random()
        if roll < 0.05:
            numbers[i] = f"0{rng.choice('12345')}{i:08d}"[:10]
        elif roll < 0.08:
            numbers[i] = f"{rng.choice(_OVERSEAS_BLOCKS)}{i:06d}"[:10]
    return numbers


@dataclass(frozen=True, slots=True)
class Call:
    request: CallRequest
    caller: str  # the raw spellings, for the phonenumbers floor
    callee: str


def _caller(rng: random.Random) -> tuple[str, str | None]:
    professional = rng.choice(PROFESSIONALS)
    npv = rng.choice(professional.npvs)
    # Half the dialers name the professional, half let the guard find the NPV's owner.
    return _spell_national(npv, rng.randrange(4)), professional.id if rng.random() < 0.5 else None


def core_calls(count: int, seed: int = SEED) -> list[Call]:
    """Calls for the offline core: a fortnight of instants, mostly within the legal hours, some postcodes."""
    rng = random.Random(seed + 2)
    consumers = consumer_numbers(count, seed)
    start = datetime(2026, 11, 30, 8, 0, tzinfo=PARIS)  # a Monday
    calls = []
    for i in range(count):
        caller, professional = _caller(rng)
        callee = _spell_national(consumers[i], rng.randrange(4))
        day = start + timedelta(days=rng.randrange(12))
        at = day + timedelta(seconds=rng.randrange(13 * 3600))  # 08:00-21:00 local
        postcode = rng.choice((None, None, None, None, "75011", "67000", "13001"))
        request = CallRequest(caller, callee, at.astimezone(UTC), professional, postcode)
        calls.append(Call(request, caller, callee))
    return calls


def in_memory_state() -> PairState:
    """A typical pair: consent on record, two attempts this month."""
    return PairState(
        attempts=(
            Attempt(datetime(2026, 11, 20, 10, 0, tzinfo=UTC), "c1"),
            Attempt(datetime(2026, 11, 25, 15, 0, tzinfo=UTC), "c2"),
        ),
        consents=(ConsentEvent(datetime(2026, 9, 1, 8, 0, tzinfo=UTC), True, Basis.CONSENT, "web form #42"),),
    )


@dataclass(frozen=True, slots=True)
class Pair:
    professional: str
    npv: str  # national form, owned by the professional
    consumer: str  # national form
    kind: str  # "open" (consent, 0-1 attempts), "capped" (consent, 4 attempts), "no_consent"


def redis_pairs(count: int, seed: int = SEED, capped: float = 0.15, no_consent: float = 0.05) -> list[Pair]:
    """The pairs of the Redis part, shuffled so that every kind is spread over the run."""
    rng = random.Random(seed + 3)
    consumers = consumer_numbers(count, seed + 4)
    pairs = []
    for i, consumer in enumerate(consumers):
        professional = PROFESSIONALS[i % len(PROFESSIONALS)]
        roll = rng.random()
        kind = "capped" if roll < capped else "no_consent" if roll < capped + no_consent else "open"
        pairs.append(Pair(professional.id, rng.choice(professional.npvs), consumer, kind))
    rng.shuffle(pairs)
    return pairs


# The Redis part's calls happen on Tuesday 2026-12-01 from 15:10 Paris time, one ms apart: within the
# legal hours in every territory the consumers live in (10:10 in Martinique, 18:10 in Réunion).
REDIS_CALLS_FROM = datetime(2026, 12, 1, 15, 10, tzinfo=PARIS).astimezone(UTC)
CONSENT_AT = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def seeded_attempts(pair: Pair, index: int) -> list[datetime]:
    """Attempts already stored before the run: four for a capped pair, zero or one for the others."""
    if pair.kind == "capped":
        return [REDIS_CALLS_FROM - timedelta(days=day) for day in (1, 2, 6, 7)]
    if pair.kind == "open" and index % 2:
        return [REDIS_CALLS_FROM - timedelta(days=3)]
    return []


def redis_request(pair: Pair, index: int) -> CallRequest:
    at = REDIS_CALLS_FROM + timedelta(milliseconds=index)
    caller, callee = _spell_national(pair.npv, index % 4), _spell_national(pair.consumer, index % 3)
    return CallRequest(caller, callee, at, pair.professional)


def write_consent_csv(path: Path, rows: int, seed: int = SEED) -> None:
    """number,date,basis,proof: distinct valid mobiles, several spellings and date forms, as a CRM exports them."""
    rng = random.Random(seed + 5)
    numbers = mobile_numbers(rows, seed + 6)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("number,date,basis,proof\n")
        for start in range(0, rows, 50_000):
            lines = []
            for i in range(start, min(rows, start + 50_000)):
                number = _spell_national(numbers[i], rng.randrange(3))
                date = "2026-09-01" if i % 3 else f"2026-09-{1 + i % 28:02d}T{9 + i % 10:02d}:{i % 60:02d}:00+02:00"
                basis = "contract" if i % 10 == 0 else "consent"
                lines.append(f"{number},{date},{basis},web form {i}\n")
            handle.writelines(lines)
