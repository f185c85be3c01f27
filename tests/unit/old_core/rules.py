"""The rules as data: each declared once, with its name, the media it applies to and the regime that
puts it in force on each of them. The table itself is `decide.RULES`, in the order its reasons are
reported; `prepare` and `decide` walk it (docs/development.md, "Adding a rule")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from tests.unit.old_core.model import CallRequest, Medium
from tests.unit.old_core.reasons import Reason, ReasonCode
from tests.unit.old_core.regimes import Regime

# When a rule is in force for one request: the consumer-local day's regime, and the request for the
# few rules the law ties to what the call is (a recorded message needs consent whatever the date).
InForce = Callable[[Regime, CallRequest], bool]


def always(regime: Regime, request: CallRequest) -> bool:
    return True


def from_d223_9(regime: Regime, request: CallRequest) -> bool:
    return regime.calendar


def from_opt_in_or_recorded(regime: Regime, request: CallRequest) -> bool:
    """L. 223-1 opt-in from 2026-08-11; a recorded-message call needs consent whatever the date (CPCE L. 34-5)."""
    return regime.opt_in or request.automated


class Stage(StrEnum):
    """What a rule needs to be checked, which is when it can run."""

    MESSAGE = "message"  # a text message's own text, before anything else
    CALL = "call"  # the numbers, the professional, the consumer's place: no stored state
    CALENDAR = "calendar"  # days and hours: no stored state, but an agreed slot lifts them
    STATE = "state"  # the pair's stored attempts, refusals and consents


Facts = TypeVar("Facts")


@dataclass(frozen=True, slots=True)
class Rule(Generic[Facts]):
    name: str  # as verdicts (`not_evaluated`), the audit trail and docs/rules.md name it
    stage: Stage
    codes: tuple[ReasonCode, ...]  # the reason codes it may give (core/reasons.py defines them)
    in_force: Mapping[Medium, InForce]  # the media it applies to, and from when on each
    check: Callable[[Facts], Iterable[Reason]]
    # Its reasons when the pair's state is not known (offline, or the store failed); None: the
    # rule is then listed as not evaluated.
    without_state: Callable[[Facts], Iterable[Reason]] | None = None

    def applies(self, regime: Regime, request: CallRequest) -> bool:
        in_force = self.in_force.get(request.medium)
        return in_force is not None and in_force(regime, request)
