"""`prepare` then `decide`: the one place where a call becomes a verdict.

The rules are rows of `RULES` (end of this file; core/rules.py says what a row holds), each a
small function of the facts its stage knows. `prepare` needs no stored state: it normalises the
numbers, resolves the professional, places the consumer and walks the caller, consumer and
calendar rules. Its result names the pair whose state the adapters fetch; `decide` then walks
the stateful rules over that snapshot. Every failing rule is reported, never just the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from npv_guard.core import regimes
from npv_guard.core.calendar import Window, holiday_name, local_issues, local_midnight, utc_iso
from npv_guard.core.message import MessageFacts, body_problem
from npv_guard.core.model import (
    Basis,
    CallRequest,
    ConsentEvent,
    Medium,
    PairState,
    Policy,
    Refusal,
    RefusalSource,
    Slot,
    StateUnavailable,
    professional_problem,
)
from npv_guard.core.numbering import NumberKind, PhoneNumber, parse
from npv_guard.core.reasons import Reason, ReasonCode
from npv_guard.core.rules import Rule, Stage, always, from_d223_9, from_opt_in_or_recorded
from npv_guard.core.territories import METROPOLE, Place, PostcodeError, Territory, place_of, place_of_postcode

MAX_ATTEMPTS = 4
ATTEMPT_WINDOW_DAYS = 30  # consumer-local days D-29 ... D
REFUSAL_BLOCK_DAYS = 60  # refused on day R: blocked until 00:00 of R+61, consumer time


_CALLER_KIND_TEXT = {
    NumberKind.MOBILE: "a mobile number, reserved to persons",
    NumberKind.PLATFORM: "a 0937-0939 platform number (SMS through a platform only)",
    NumberKind.PREMIUM_OR_SHORT: "a premium-rate or short number, forbidden as caller ID",
    NumberKind.SPECIAL: "a special-rate service number",
    NumberKind.GEOGRAPHIC: "an ordinary geographic number",
    NumberKind.NON_GEOGRAPHIC: "an ordinary 09 number",
    NumberKind.FOREIGN: "a foreign number",
}


@dataclass(frozen=True, slots=True)
class Prepared:
    request: CallRequest
    caller: PhoneNumber
    callee: PhoneNumber
    professional: str | None
    places: tuple[Place, ...]  # where the consumer may be, the most likely first
    regime: regimes.Regime
    reasons: tuple[Reason, ...]  # caller and consumer rules
    calendar_reasons: tuple[Reason, ...]  # lifted by an agreed slot (or, before 2026-08-11, a blanket consent)
    # What `prepare` found that does not depend on the instant, for `prepare_at`.
    placed: Placed | None = field(default=None, compare=False, repr=False)

    @property
    def consumer(self) -> str | None:
        """The consumer's E.164 number, once the consumer could be placed."""
        return self.callee.e164 if self.places else None

    @property
    def pair(self) -> tuple[str, str] | None:
        """(professional, consumer E.164) whose stored state `decide` needs, when both are known."""
        consumer = self.consumer
        return (self.professional, consumer) if self.professional and consumer else None


@dataclass(frozen=True, slots=True)
class Verdict:
    prepared: Prepared
    reasons: tuple[Reason, ...]
    not_evaluated: tuple[str, ...] = ()
    # Set by the service for a rejection that time alone lifts (see core/schedule.py).
    next_allowed_at: datetime | None = None

    @property
    def allowed(self) -> bool:
        return not self.reasons

    @property
    def verdict(self) -> str:
        return "allow" if self.allowed else "reject"

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(reason.code.value for reason in self.reasons)

    @property
    def local_time(self) -> datetime | None:
        places = self.prepared.places
        return self.prepared.request.at.astimezone(places[0].territory.zone) if places else None

    def as_dict(self) -> dict[str, object]:
        prepared = self.prepared
        local = self.local_time
        territory = prepared.places[0].territory if prepared.places else None
        return {
            "verdict": self.verdict,
            "reasons": [reason.as_dict() for reason in self.reasons],
            "caller": prepared.caller.e164,
            "callee": prepared.callee.e164,
            "caller_kind": prepared.caller.kind.value,
            "professional": prepared.professional,
            "territory": territory.code if territory else None,
            "timezone": territory.timezone if territory else None,
            "local_time": local.isoformat() if local else None,
            "at": prepared.request.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "regime": prepared.regime.as_dict(),
            "not_evaluated": list(self.not_evaluated),
            "next_allowed_at": self._next_allowed(),
        }

    @property
    def retry_after(self) -> str:
        """The first legal instant in ISO 8601 UTC (NPV_GUARD_RETRY_AFTER), or empty."""
        if self.next_allowed_at is None:
            return ""
        return self.next_allowed_at.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def _next_allowed(self) -> dict[str, str] | None:
        if self.next_allowed_at is None:
            return None
        zone = self.prepared.places[0].territory.zone
        return {"utc": self.retry_after, "local": self.next_allowed_at.astimezone(zone).isoformat()}


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the stateless rules read: the request placed and resolved, before any stored state."""

    request: CallRequest
    policy: Policy
    regime: regimes.Regime
    caller: PhoneNumber
    places: tuple[Place, ...]
    professional: str | None
    professional_problem: Reason | None
    consumer_problem: Reason | None
    windows: tuple[Window, ...]


@dataclass(frozen=True, slots=True)
class Placed:
    """The part of `prepare` that does not depend on the call's instant: the numbers, where the
    consumer may be, the professional, the hours that apply."""

    caller: PhoneNumber
    callee: PhoneNumber
    places: tuple[Place, ...]
    consumer_problem: Reason | None
    professional: str | None
    professional_problem: Reason | None
    windows: tuple[Window, ...]


def prepare(request: CallRequest, policy: Policy, numbers: tuple[PhoneNumber, PhoneNumber] | None = None) -> Prepared:
    """`numbers`: the caller and callee already parsed for this same request (a re-decision at
    another instant), so they are not parsed again."""
    if request.at.tzinfo is None:
        raise ValueError("the instant of a call must carry its offset")
    caller, callee = numbers or (parse(request.caller), parse(request.callee))
    places, consumer_problem = locate_consumer(callee, request.consumer_postcode)
    professional, professional_problem = _resolve_professional(caller, request.professional, policy, request.medium)
    windows = policy.windows_for(request.medium, professional)
    placed = Placed(caller, callee, places, consumer_problem, professional, professional_problem, windows)
    return _prepare_placed(request, policy, placed)


def prepare_at(prepared: Prepared, at: datetime, policy: Policy) -> Prepared:
    """`prepare` of the same request at another instant, under the same policy (`next_allowed_at`,
    a call dated after a peer's attempt): only what depends on the instant is worked out again."""
    request = replace(prepared.request, at=at)
    if prepared.placed is None:
        return prepare(request, policy, (prepared.caller, prepared.callee))
    if at.tzinfo is None:
        raise ValueError("the instant of a call must carry its offset")
    return _prepare_placed(request, policy, prepared.placed)


def _prepare_placed(request: CallRequest, policy: Policy, placed: Placed) -> Prepared:
    places = placed.places
    local_day = request.at.astimezone((places[0].territory if places else METROPOLE).zone).date()
    regime = regimes.Regime(local_day)
    facts = CallFacts(
        request,
        policy,
        regime,
        placed.caller,
        places,
        placed.professional,
        placed.professional_problem,
        placed.consumer_problem,
        placed.windows,
    )
    rules = CALL_RULES[request.medium]
    return Prepared(
        request=request,
        caller=placed.caller,
        callee=placed.callee,
        professional=placed.professional,
        places=places,
        regime=regime,
        reasons=tuple(reason for rule in rules if rule.applies(regime, request) for reason in rule.check(facts)),
        calendar_reasons=tuple(CALENDAR.check(facts)) if CALENDAR.applies(regime, request) else (),
        placed=placed,
    )


def _check_caller(facts: CallFacts) -> list[Reason]:
    caller = facts.caller
    if caller.kind is NumberKind.MASKED:
        return [Reason(ReasonCode.CALLER_MISSING, f"caller ID is {caller.problem}: telemarketing must show a number")]
    if caller.kind is NumberKind.INVALID:
        return [
            Reason(ReasonCode.CALLER_INVALID, f"caller ID {caller.raw[:40]!r} is not a phone number: {caller.problem}")
        ]
    # A premium-rate or short number was never a lawful caller ID, before the NPV plan too.
    if caller.is_npv or not (facts.regime.npv or caller.kind is NumberKind.PREMIUM_OR_SHORT):
        return []
    shown = caller.e164 or caller.national or caller.raw
    return [
        Reason(
            ReasonCode.CALLER_NOT_NPV,
            f"caller ID {shown} is {_CALLER_KIND_TEXT.get(caller.kind, caller.kind.value)}, "
            "not a verified polyvalent number (NPV)",
        )
    ]


def _check_sender(facts: CallFacts) -> list[Reason]:
    """A text message through a technical platform must come from a 0937-0939 number."""
    sender = facts.caller
    if sender.kind is NumberKind.PLATFORM:
        return []
    if sender.kind in (NumberKind.MASKED, NumberKind.INVALID):
        shown = f"is {sender.problem}" if sender.kind is NumberKind.MASKED else f"{sender.raw[:40]!r} is not a number"
    else:
        number = sender.e164 or sender.national or sender.raw
        shown = f"{number} is {_CALLER_KIND_TEXT.get(sender.kind, sender.kind.value)}"
        if sender.is_npv:
            shown = f"{number} is a voice NPV"
    return [
        Reason(
            ReasonCode.SENDER_NOT_PLATFORM_NUMBER,
            f"SMS sender {shown}: messages through a platform must come from a 0937-0939 number",
        )
    ]


def _resolve_professional(
    caller: PhoneNumber, requested: str | None, policy: Policy, medium: Medium
) -> tuple[str | None, Reason | None]:
    """The professional the call (or message) is made for, the pair's first half, and why the
    caller cannot call for it (the professional rule's reason)."""
    # The numbers a professional is assigned: NPVs for calls, 0937-0939 senders for messages.
    assignable = caller.kind is NumberKind.PLATFORM if medium is Medium.SMS else caller.is_npv
    what = "platform number" if medium is Medium.SMS else "NPV"
    requested = (requested or "").strip() or None
    if requested is not None and professional_problem(requested):
        return None, Reason(ReasonCode.CALLER_NOT_ASSIGNED, f"professional id {requested[:64]!r} is malformed")
    if not policy.professionals:
        # Without a directory the caller number stands for the professional.
        return requested or caller.e164, None
    owner = policy.owner_of(caller.national) if caller.national else None
    if requested is None:
        if owner is None and assignable:
            return None, Reason(
                ReasonCode.CALLER_NOT_ASSIGNED, f"{what} {caller.e164} is assigned to no known professional"
            )
        return owner.id if owner and assignable else None, None
    professional = policy.professional(requested)
    if professional is None:
        return None, Reason(ReasonCode.CALLER_NOT_ASSIGNED, f"professional {requested!r} is not configured")
    if assignable and owner is not professional:
        whose = f"assigned to {owner.id!r}" if owner else "assigned to no known professional"
        return professional.id, Reason(
            ReasonCode.CALLER_NOT_ASSIGNED, f"{what} {caller.e164} is {whose}, not to {professional.id!r}"
        )
    return professional.id, None


def locate_consumer(callee: PhoneNumber, postcode: str | None) -> tuple[tuple[Place, ...], Reason | None]:
    """Where the consumer may be, the most likely place first, or why the consumer cannot be placed."""
    if callee.kind in (NumberKind.MASKED, NumberKind.INVALID):
        return (), Reason(ReasonCode.CONSUMER_INVALID, f"called number {callee.raw[:40]!r}: {callee.problem}")
    if callee.kind is NumberKind.FOREIGN:
        return (), Reason(
            ReasonCode.CONSUMER_INVALID, f"called number {callee.e164} is outside the French numbering plan"
        )
    if callee.kind in (NumberKind.SPECIAL, NumberKind.PREMIUM_OR_SHORT):
        shown = callee.e164 or callee.national
        return (), Reason(
            ReasonCode.CONSUMER_INVALID, f"called number {shown} is a service number, not a consumer line"
        )
    return _places(callee.territories, postcode if postcode and postcode.strip() else None)


@lru_cache(maxsize=4096)
def _places(territories: tuple[Territory, ...], postcode: str | None) -> tuple[tuple[Place, ...], Reason | None]:
    """Where a consumer of a French line in `territories` may be, given the postcode declared (if
    any): a pure function of both, memoised (a lead list holds a few thousand postcodes at most)."""
    from_number = tuple(place_of(territory) for territory in territories)
    if postcode is None:
        return from_number, None
    try:
        declared = place_of_postcode(postcode)
    except PostcodeError as error:
        return (), Reason(ReasonCode.CONSUMER_INVALID, str(error))
    if any(place.territory == declared.territory for place in from_number):
        return (declared,), None
    # The postcode and the number disagree: honour both clocks and calendars.
    return (declared, *from_number), None


def place_consumer(raw: str | None) -> tuple[str, tuple[Place, ...]]:
    """A consumer named outside a call (a refusal, a consent, an SMS reply): the E.164 number and
    where the consumer may be. ValueError, with the reason's text, when it is no French consumer line."""
    number = parse(raw)
    places, problem = locate_consumer(number, None)
    if problem is not None or number.e164 is None:
        raise ValueError(problem.message if problem else f"called number {str(raw)[:40]!r} cannot be placed")
    return number.e164, places


def _check_calendar(facts: CallFacts) -> tuple[Reason, ...]:
    request = facts.request
    # In UTC: two aware instants of the same zone compare (and hash) by their wall clock alone, so
    # the two 02:30 of a fall-back night would share one memo entry.
    return calendar_reasons(
        facts.places, request.at.astimezone(UTC), facts.windows, facts.policy.local_holidays, request.medium
    )


@lru_cache(maxsize=1024)
def calendar_reasons(
    places: tuple[Place, ...], at: datetime, windows: tuple[Window, ...], local_holidays: bool, medium: Medium
) -> tuple[Reason, ...]:
    """The calendar rule's reasons for a consumer who may be in `places`, at instant `at`: a pure
    function of its arguments, memoised (a lead-list scrub decides every lead at one instant, so
    each distinct set of places is worked out once; the reasons are immutable)."""
    # SMS hours are the operator's policy (same days, their own windows), whatever the date: the
    # rule is in force for messages always (RULES).
    contacts = "messages" if medium is Medium.SMS else "calls"
    found: dict[ReasonCode, Reason] = {}
    for place in places:
        local, issues = local_issues(place, at, windows, local_holidays)
        if not (issues.weekend or issues.holiday or issues.outside_hours):
            continue  # the message below is only written for a call it rejects
        where = f"{_wall_clock(local)} in {place.territory.name} ({place.territory.timezone})"
        if issues.weekend:
            found.setdefault(
                ReasonCode.WEEKEND, Reason(ReasonCode.WEEKEND, f"it is {where}: no {contacts} at weekends")
            )
        if issues.holiday:
            found.setdefault(
                ReasonCode.PUBLIC_HOLIDAY,
                Reason(ReasonCode.PUBLIC_HOLIDAY, f"it is {where}, a public holiday: {issues.holiday}"),
            )
        if issues.outside_hours:
            hours = " and ".join(str(window) for window in windows)
            found.setdefault(
                ReasonCode.OUTSIDE_HOURS,
                Reason(ReasonCode.OUTSIDE_HOURS, f"it is {where}: {contacts} only {hours}"),
            )
    order = (ReasonCode.OUTSIDE_HOURS, ReasonCode.WEEKEND, ReasonCode.PUBLIC_HOLIDAY)
    return tuple(found[code] for code in order if code in found)


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _wall_clock(local: datetime) -> str:
    """`f"{local:%A %Y-%m-%d %H:%M:%S}"` (the C locale's day names, as the guard runs), without strftime."""
    return (
        f"{_WEEKDAYS[local.weekday()]} {local.year:04d}-{local.month:02d}-{local.day:02d} "
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )


@dataclass(frozen=True, slots=True)
class StateFacts:
    """What the stateful rules read: the prepared call and the pair's snapshot (None: unknown)."""

    prepared: Prepared
    policy: Policy
    state: PairState | None
    standing: ConsentStanding


def decide(prepared: Prepared, state: PairState | StateUnavailable | None, policy: Policy) -> Verdict:
    """Apply the stateful rules to the pair's snapshot. `state` None means "offline": not evaluated."""
    request, regime = prepared.request, prepared.regime
    rules = [rule for rule in STATE_RULES[request.medium] if rule.applies(regime, request)]
    skipped = NOT_EVALUATED_OFFLINE[request.medium]
    reasons = prepared.reasons
    calendar = prepared.calendar_reasons

    if state is None or prepared.pair is None or isinstance(state, StateUnavailable):
        facts = StateFacts(prepared, policy, None, _NO_STANDING)
        if isinstance(state, StateUnavailable) and prepared.pair is not None:
            if policy.fail_open and request.medium is Medium.VOICE:
                # The operator's choice (calls only): an unreadable state counts as one that
                # lifts every stateful rule, the sector ban's contract included.
                return Verdict(prepared, reasons + calendar, skipped)
            detail = f" ({state.detail})" if state.detail else ""
            unavailable = Reason(
                ReasonCode.STATE_UNAVAILABLE, f"attempts, refusals and consents could not be read{detail}"
            )
            return Verdict(prepared, (*reasons, *_without_state(rules, facts), *calendar, unavailable), skipped)
        # Offline, or no pair to look up (a caller or consumer rule already rejects): the rules
        # that can answer without the pair's state do (a banned sector stays banned).
        if not prepared.places:
            skipped = (CALENDAR.name, *skipped)
        return Verdict(prepared, (*reasons, *_without_state(rules, facts), *calendar), skipped)

    standing = consent_standing(prepared, state, policy)
    if calendar:
        calendar = tuple(_calendar_after_consent(prepared, standing, list(calendar), policy))
    facts = StateFacts(prepared, policy, state, standing)
    return Verdict(prepared, (*reasons, *calendar, *(reason for rule in rules for reason in rule.check(facts))))


def _without_state(rules: list[Rule[StateFacts]], facts: StateFacts) -> list[Reason]:
    return [reason for rule in rules if rule.without_state for reason in rule.without_state(facts)]


def _check_frequency(facts: StateFacts) -> list[Reason]:
    assert facts.state is not None  # checked only with a snapshot
    return _frequency_reasons(facts.prepared, facts.state)


def _check_refusals(facts: StateFacts) -> list[Reason]:
    assert facts.state is not None
    return _refusal_reasons(facts.prepared, facts.state)


def _check_consent(facts: StateFacts) -> list[Reason]:
    request, standing, policy = facts.prepared.request, facts.standing, facts.policy
    if standing.active:
        return []
    if standing.withdrawal is not None and not standing.after_withdrawal:
        # A withdrawal binds even the press (L. 221-16: no new contact after a refusal).
        return [
            Reason(
                ReasonCode.CONSENT_WITHDRAWN,
                f"consent withdrawn or refused at {utc_iso(standing.withdrawal.at)}; a new consent is needed",
            )
        ]
    sms = request.medium is Medium.SMS
    if request.sector in policy.consent_exempt_sectors and not sms and not request.automated:
        return []  # L. 223-5: the press needs no prior consent
    if standing.lapsed is not None:
        grant, ended = standing.lapsed
        return [Reason(ReasonCode.NO_CONSENT, _lapse_text(grant, ended, policy))]
    if sms:
        why = "a commercial text message (CPCE L. 34-5)"
    elif request.automated and not facts.prepared.regime.opt_in:
        why = "a recorded-message call (CPCE L. 34-5)"
    else:
        why = "opt-in"
    return [Reason(ReasonCode.NO_CONSENT, f"no consent or contract on record for this consumer ({why})")]


def _banned_since(facts: StateFacts) -> date | None:
    """The day the request's sector has been banned on its medium, when the consumer's day is past it."""
    prepared = facts.prepared
    request = prepared.request
    ban_from = facts.policy.sector_ban_from(request.sector, request.medium)
    if ban_from is None or not prepared.places:
        return None
    return ban_from if request.at.astimezone(prepared.places[0].territory.zone).date() >= ban_from else None


def _check_sector(facts: StateFacts) -> list[Reason]:
    since = _banned_since(facts)
    if since is None or any(grant.basis in SECTOR_BAN_LIFTED_BY for grant in facts.standing.active):
        return []
    return [_sector_reason(facts.prepared.request, since)]


def _check_sector_without_state(facts: StateFacts) -> list[Reason]:
    # Without proof of a contract or a callback request, a banned sector stays banned.
    since = _banned_since(facts)
    return [] if since is None else [_sector_reason(facts.prepared.request, since)]


# A contract in progress (L. 223-1) and a callback the consumer asked for (R. 223-4) are the
# only grounds on which a banned sector may be called.
SECTOR_BAN_LIFTED_BY = frozenset({Basis.CONTRACT, Basis.CALLBACK_REQUEST})


@dataclass(frozen=True, slots=True)
class ConsentStanding:
    """What the pair's consent events mean at one instant."""

    active: tuple[ConsentEvent, ...]  # grants that count at the instant
    withdrawal: ConsentEvent | None  # the latest withdrawal at or before the instant
    after_withdrawal: tuple[ConsentEvent, ...]  # grants later than that withdrawal (all, if none)
    lapsed: tuple[ConsentEvent, datetime] | None  # the latest-ending grant that no longer counts, and its end


def consent_standing(prepared: Prepared, state: PairState, policy: Policy) -> ConsentStanding:
    """Grants count from their own instant until they end (docs/rules.md, "Consent"); a withdrawal
    ends every grant before it, and wins over a grant at the same instant."""
    at = prepared.request.at
    if not state.consents:
        return _NO_STANDING
    events = [event for event in state.consents if event.at <= at]
    withdrawal = max((e for e in events if not e.granted), key=lambda e: e.at, default=None)
    grants = tuple(e for e in events if e.granted and (withdrawal is None or e.at > withdrawal.at))
    active: list[ConsentEvent] = []
    lapsed: tuple[ConsentEvent, datetime] | None = None
    for grant in grants:
        end = consent_end(grant, prepared.places, prepared.regime, policy)
        if end is None or at < end:
            active.append(grant)
        elif lapsed is None or end > lapsed[1]:
            lapsed = (grant, end)
    return ConsentStanding(tuple(active), withdrawal, grants, lapsed)


_NO_STANDING = ConsentStanding((), None, (), None)


def consent_end(
    grant: ConsentEvent, places: tuple[Place, ...], regime: regimes.Regime, policy: Policy
) -> datetime | None:
    """The first instant `grant` no longer counts for a call under `regime`; None: it does not end.

    A consent lapses just after its anniversary (the anniversary instant itself is still within the
    year): the end is one microsecond after collection + `consent_max_age_days`.
    """
    if grant.basis is Basis.CONTRACT:
        return grant.until
    if grant.basis is Basis.CALLBACK_REQUEST:
        return callback_request_end(places, grant.at, policy)
    if not regime.consent_lifetime:
        return None
    return grant.at + timedelta(days=policy.consent_max_age_days, microseconds=1)


def callback_request_end(places: tuple[Place, ...], asked_at: datetime, policy: Policy) -> datetime:
    """00:00 after the consumer's Nth working day (R. 223-4), the day of the request counted when it
    is a working day (the shortest reading), the earliest over the consumer's places."""
    ends = []
    for place in places or (place_of(METROPOLE),):
        day = asked_at.astimezone(place.territory.zone).date()
        counted = 0
        while True:
            if day.weekday() < 5 and not holiday_name(place, day, policy.local_holidays):
                counted += 1
                if counted >= policy.callback_working_days:
                    break
            day += timedelta(days=1)
        ends.append(local_midnight(place, day + timedelta(days=1)))
    return min(ends)


def _lapse_text(grant: ConsentEvent, ended: datetime, policy: Policy) -> str:
    collected = utc_iso(grant.at)
    if grant.basis is Basis.CONTRACT:
        return f"the contract on record since {collected} ended at {utc_iso(ended)}; a consent is needed"
    if grant.basis is Basis.CALLBACK_REQUEST:
        return (
            f"the callback request of {collected} expired at {utc_iso(ended)} "
            f"({policy.callback_working_days} working days, R. 223-4); a consent is needed"
        )
    lapsed = utc_iso(ended - timedelta(microseconds=1))
    return (
        f"the consent collected at {collected} lapsed after {lapsed} "
        f"(valid {policy.consent_max_age_days} days, no tacit renewal: R. 223-1); a new consent is needed"
    )


def _calendar_after_consent(
    prepared: Prepared, standing: ConsentStanding, calendar: list[Reason], policy: Policy
) -> list[Reason]:
    """An agreed slot containing the call lifts the calendar rules; before 2026-08-11 (or with
    rules.out_of_hours_slot_only = false) a blanket out-of-hours consent does too."""
    at = prepared.request.at
    if any(grant.slot is not None and at in grant.slot for grant in standing.active):
        return []
    blanket = [grant for grant in standing.active if grant.outside_hours]
    if not blanket:
        return calendar
    slot_only = policy.out_of_hours_slot_only and prepared.regime.slot_only
    if not slot_only:
        return []
    note = (
        f"; the out-of-hours consent of {utc_iso(max(g.at for g in blanket))} is kept but no longer lifts the "
        f"days and hours since {regimes.SLOT_ONLY_FROM}: only an agreed callback slot does"
    )
    return [Reason(reason.code, reason.message + note) for reason in calendar]


def grant_event(
    at: datetime,
    basis: Basis,
    proof: str = "",
    *,
    outside_hours: bool = False,
    until: datetime | None = None,
    slot: Slot | None = None,
) -> ConsentEvent:
    """A grant as the adapters record it; ValueError, phrased for the operator, when its facts
    cannot go together."""
    if until is not None:
        if basis is not Basis.CONTRACT:
            raise ValueError("an end instant (until) is for a contract basis only")
        if until <= at:
            raise ValueError(f"the contract ends at {utc_iso(until)}, not after it is recorded at {utc_iso(at)}")
    if slot is not None and slot.end <= at:
        raise ValueError(f"the slot ends at {utc_iso(slot.end)}, before the consent is recorded at {utc_iso(at)}")
    return ConsentEvent(at, granted=True, basis=basis, proof=proof, outside_hours=outside_hours, until=until, slot=slot)


def effective_consent(prepared: Prepared, state: PairState) -> ConsentEvent | None:
    """The latest consent event at the call's instant."""
    return consent_at(state.consents, prepared.request.at)


def consent_at(consents: tuple[ConsentEvent, ...], at: datetime) -> ConsentEvent | None:
    """The latest consent event at `at`, a withdrawal winning at equal instants (the conservative
    reading). Whether a grant still counts is `consent_standing`'s business."""
    return max(
        (event for event in consents if event.at <= at),
        key=lambda event: (event.at, not event.granted),
        default=None,
    )


def refusal_withdrawal(places: tuple[Place, ...], refusal: Refusal) -> ConsentEvent | None:
    """Since opt-in, a refusal also withdraws consent for good (L. 221-16): the event to store with it.

    Decided when the refusal is recorded, from the refusal's own consumer-local day, so the
    withdrawal outlives the refusal's 60-day record. A STOP reply withdraws consent whatever the
    date: it is the opposition to electronic messages that CPCE L. 34-5 has always honoured.
    """
    if refusal.source is RefusalSource.SMS:
        return withdrawal_by(refusal)
    day = refusal.at.astimezone(places[0].territory.zone).date()
    return withdrawal_by(refusal) if regimes.Regime(day).opt_in else None


def withdrawal_by(refusal: Refusal) -> ConsentEvent:
    """The consent withdrawal a refusal stands for."""
    return ConsentEvent(refusal.at, granted=False, proof=f"refusal by the {refusal.source.value}")


def _frequency_reasons(prepared: Prepared, state: PairState) -> list[Reason]:
    if len(state.attempts) < MAX_ATTEMPTS:
        return []  # too few to reach the cap in any window: skip the local-midnight arithmetic
    at = prepared.request.at
    window_start = min(
        local_midnight(place, at.astimezone(place.territory.zone).date() - timedelta(days=ATTEMPT_WINDOW_DAYS - 1))
        for place in prepared.places
    )
    # Compared in UTC, like the attempts (the same instants; no zone offset looked up per comparison).
    start_utc, at_utc = window_start.astimezone(UTC), at.astimezone(UTC)
    counted = sorted(attempt.at for attempt in state.attempts if start_utc <= attempt.at <= at_utc)
    if len(counted) < MAX_ATTEMPTS:
        return []
    return [
        Reason(
            ReasonCode.FREQUENCY_CAP,
            f"{len(counted)} attempts since {utc_iso(window_start)} "
            f"(at most {MAX_ATTEMPTS} in {ATTEMPT_WINDOW_DAYS} days); oldest counted at {utc_iso(counted[0])}",
        )
    ]


def refusal_block_end(places: tuple[Place, ...], refused_at: datetime) -> datetime:
    """00:00 of the 61st consumer-local day after the refusal, the latest over the consumer's places."""
    return max(
        local_midnight(
            place, refused_at.astimezone(place.territory.zone).date() + timedelta(days=REFUSAL_BLOCK_DAYS + 1)
        )
        for place in places
    )


def _refusal_reasons(prepared: Prepared, state: PairState) -> list[Reason]:
    at = prepared.request.at
    zone = prepared.places[0].territory.zone
    blocking = [
        refusal
        for refusal in state.refusals
        if refusal.at <= at
        and regimes.Regime(refusal.at.astimezone(zone).date()).calendar
        and at < refusal_block_end(prepared.places, refusal.at)
    ]
    if not blocking:
        return []
    latest = max(blocking, key=lambda refusal: refusal.at)
    return [
        Reason(
            ReasonCode.REFUSAL_BLOCK,
            f"consumer refused at {utc_iso(latest.at)} ({latest.source.value}); no contact before "
            f"{utc_iso(refusal_block_end(prepared.places, latest.at))}",
        )
    ]


def _sector_reason(request: CallRequest, since: object) -> Reason:
    how = "by SMS" if request.medium is Medium.SMS else "by phone"
    return Reason(
        ReasonCode.SECTOR_BANNED,
        f"sector {request.sector!r} may not be canvassed {how} since {since} "
        "outside a contract in progress or a callback the consumer asked for",
    )


def _check_professional(facts: CallFacts) -> tuple[Reason, ...]:
    return (facts.professional_problem,) if facts.professional_problem else ()


def _check_consumer(facts: CallFacts) -> tuple[Reason, ...]:
    return (facts.consumer_problem,) if facts.consumer_problem else ()


def _check_body(facts: MessageFacts) -> tuple[Reason, ...]:
    problem = body_problem(facts.body, facts.max_bytes)
    return (Reason(ReasonCode.MESSAGE_INVALID, problem),) if problem else ()


def message_verdict(request: CallRequest, body: object, max_bytes: int, policy: Policy) -> Verdict | None:
    """The rejection of a message whose own text cannot go, whatever the pair's history (so no
    stored state is read for it), or None when the message rules pass."""
    facts = MessageFacts(body, max_bytes)
    regime = regimes.Regime(request.at.date())  # the message rules are in force on every day
    found = [reason for rule in MESSAGE_RULES if rule.applies(regime, request) for reason in rule.check(facts)]
    if not found:
        return None
    offline = decide(prepare(request, policy), None, policy)
    return replace(offline, reasons=(*found, *offline.reasons))


VOICE, SMS = Medium.VOICE, Medium.SMS

# Every rule, once, in the order a verdict reports their reasons (calendar reasons come before the
# stateful rules' ones; offline, after the stateless answers of the stateful rules).
MESSAGE_BODY: Rule[MessageFacts] = Rule(
    "message_body", Stage.MESSAGE, (ReasonCode.MESSAGE_INVALID,), {SMS: always}, _check_body
)
CALLER_ID: Rule[CallFacts] = Rule(
    "caller_id",
    Stage.CALL,
    (ReasonCode.CALLER_MISSING, ReasonCode.CALLER_INVALID, ReasonCode.CALLER_NOT_NPV),
    {VOICE: always},  # the NPV requirement itself from 2023-01-01 (regime.npv, read by the rule)
    _check_caller,
)
SMS_SENDER: Rule[CallFacts] = Rule(
    "sms_sender", Stage.CALL, (ReasonCode.SENDER_NOT_PLATFORM_NUMBER,), {SMS: always}, _check_sender
)
PROFESSIONAL: Rule[CallFacts] = Rule(
    "professional", Stage.CALL, (ReasonCode.CALLER_NOT_ASSIGNED,), {VOICE: always, SMS: always}, _check_professional
)
CONSUMER: Rule[CallFacts] = Rule(
    "consumer", Stage.CALL, (ReasonCode.CONSUMER_INVALID,), {VOICE: always, SMS: always}, _check_consumer
)
CALENDAR: Rule[CallFacts] = Rule(
    "calendar",
    Stage.CALENDAR,
    (ReasonCode.OUTSIDE_HOURS, ReasonCode.WEEKEND, ReasonCode.PUBLIC_HOLIDAY),
    {VOICE: from_d223_9, SMS: always},
    _check_calendar,
)
FREQUENCY_CAP: Rule[StateFacts] = Rule(
    # A text message is not a call: D. 223-9 counts calls.
    "frequency_cap",
    Stage.STATE,
    (ReasonCode.FREQUENCY_CAP,),
    {VOICE: from_d223_9},
    _check_frequency,
)
REFUSAL_BLOCK: Rule[StateFacts] = Rule(
    "refusal_block", Stage.STATE, (ReasonCode.REFUSAL_BLOCK,), {VOICE: from_d223_9, SMS: always}, _check_refusals
)
CONSENT: Rule[StateFacts] = Rule(
    "consent",
    Stage.STATE,
    (ReasonCode.CONSENT_WITHDRAWN, ReasonCode.NO_CONSENT),
    {VOICE: from_opt_in_or_recorded, SMS: always},  # a commercial text message needs consent (CPCE L. 34-5)
    _check_consent,
)
SECTOR_BAN: Rule[StateFacts] = Rule(
    "sector_ban",
    Stage.STATE,
    (ReasonCode.SECTOR_BANNED,),
    {VOICE: always, SMS: always},  # from each sector's own dates (Policy.sector_bans)
    _check_sector,
    without_state=_check_sector_without_state,
)
RULES: tuple[Rule[MessageFacts] | Rule[CallFacts] | Rule[StateFacts], ...] = (
    MESSAGE_BODY,
    CALLER_ID,
    SMS_SENDER,
    PROFESSIONAL,
    CONSUMER,
    CALENDAR,
    FREQUENCY_CAP,
    REFUSAL_BLOCK,
    CONSENT,
    SECTOR_BAN,
)

# The walks, per medium: precomputed once, so a decision only asks each rule whether it is in force.
MESSAGE_RULES = (MESSAGE_BODY,)
CALL_RULES = {
    medium: tuple(r for r in (CALLER_ID, SMS_SENDER, PROFESSIONAL, CONSUMER) if medium in r.in_force)
    for medium in Medium
}
STATE_RULES = {
    medium: tuple(r for r in (FREQUENCY_CAP, REFUSAL_BLOCK, CONSENT, SECTOR_BAN) if medium in r.in_force)
    for medium in Medium
}
# What an offline decision (or a failed read) lists as not evaluated: the stateful rules of the
# medium that cannot answer without the pair's state.
NOT_EVALUATED_OFFLINE = {
    medium: tuple(rule.name for rule in STATE_RULES[medium] if rule.without_state is None) for medium in Medium
}
