"""The facts the core decides on: a call request, the pair's stored history, and the policy."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from tests.unit.old_core.calendar import CALL_WINDOWS, Window
from tests.unit.old_core.regimes import DEFAULT_SECTOR_BANS, FALLBACK_SECTOR_BAN, SECTORS, SectorBan

# The pattern itself is for schemas (api/openapi.py); code checks an id with `professional_problem`.
PROFESSIONAL_ID = re.compile(r"^[A-Za-z0-9_.+\-]{1,64}$")
PROFESSIONAL_ID_SHAPE = "1-64 letters, digits or _.+-"


def professional_problem(value: object) -> str | None:
    """Why `value` cannot be a professional id, or None: the one check of that shape, used by the
    rules, the Guard, the config and every adapter (an id is written in Redis keys and audit lines).
    `fullmatch`: the pattern's `$` also matches before a final newline."""
    if isinstance(value, str) and PROFESSIONAL_ID.fullmatch(value):
        return None
    return f"expected {PROFESSIONAL_ID_SHAPE}"


def valid_label(value: str | None) -> bool:
    """A campaign or lead id: the same shape as a professional id (never read by a rule, but
    written in Redis members, audit lines and channel variables, so it must stay inert)."""
    return value is not None and professional_problem(value) is None


def label_problem(value: str, callee: str | None) -> str | None:
    """Why a campaign or lead id cannot be kept, or None. Besides its shape: a dialer that uses
    the consumer's number as the lead id would put that number in the trail, Redis and the CDR,
    where a consumer appears only as a keyed hash; its last nine digits are enough to tell."""
    if not valid_label(value):
        return f"expected {PROFESSIONAL_ID_SHAPE}"
    digits = "".join(c for c in callee or "" if c.isdigit())
    if len(digits) >= 9 and digits[-9:] in value:
        return "it holds the consumer's number"
    return None


# Sectors that may not be canvassed whatever the consent, outside a contract in progress
# (L. 223-1), and those that need no prior consent (L. 223-5): rows of core/regimes.py SECTORS.
DEFAULT_BANNED_SECTORS = frozenset(DEFAULT_SECTOR_BANS)
DEFAULT_CONSENT_EXEMPT_SECTORS = frozenset(sector.name for sector in SECTORS if sector.consent_exempt)
DEFAULT_CONSENT_MAX_AGE_DAYS = 365  # R. 223-1: one year at most, no tacit renewal
DEFAULT_CONSENT_PROOF_DAYS = 1096  # R. 223-2: three years, whatever leap day they hold
DEFAULT_CALLBACK_WORKING_DAYS = 5  # R. 223-4


class Medium(StrEnum):
    VOICE = "voice"  # a telephone call (D. 223-9 calendar, cap, NPV caller ID)
    SMS = "sms"  # a text message through a technical platform (0937-0939 sender, consent always)


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One outbound call (or text message) as the PBX sees it, before any interpretation."""

    caller: str | None  # caller ID as received
    callee: str | None  # number as dialled
    at: datetime  # aware instant the call is placed
    professional: str | None = None  # the legal entity the call is made for
    consumer_postcode: str | None = None
    sector: str | None = None  # what the campaign sells, when it declares it
    automated: bool = False  # a recorded-message call (CPCE L. 34-5 needs consent)
    medium: Medium = Medium.VOICE  # for SMS, `caller` is the sender number
    # Labels for the evidence trail (audit lines, attempts, CDR), never read by a rule; adapters
    # pass only ids that pass `valid_label`.
    campaign: str | None = None
    lead: str | None = None


class Basis(StrEnum):
    CONSENT = "consent"
    CONTRACT = "contract"  # a contract in progress: counts until its end, lifts the sector ban
    CALLBACK_REQUEST = "callback_request"  # the consumer asked to be called back (R. 223-4)


@dataclass(frozen=True, slots=True)
class Slot:
    """A callback slot the consumer agreed to, half-open [start, end) like the hours windows."""

    start: datetime
    end: datetime

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    call_id: str = ""
    campaign: str = ""
    lead: str = ""


class RefusalSource(StrEnum):
    AGENT = "agent"  # agent keyed the code on the calling leg
    CONSUMER = "consumer"  # consumer pressed the key on the called leg
    OPERATOR = "operator"  # entered by hand (CLI, API)
    SMS = "sms"  # STOP reply


@dataclass(frozen=True, slots=True)
class Refusal:
    at: datetime
    source: RefusalSource = RefusalSource.OPERATOR
    call_id: str = ""


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """A grant (with its basis and proof) or a withdrawal, at the instant it happened."""

    at: datetime
    granted: bool
    basis: Basis | None = None
    proof: str = ""
    outside_hours: bool = False  # express consent to be called outside D. 223-9 days and hours
    until: datetime | None = None  # a contract's end: from this instant it no longer counts
    slot: Slot | None = None  # the agreed slot in which the calendar rules are lifted


@dataclass(frozen=True, slots=True)
class PairState:
    """Everything stored for one (professional, consumer) pair. Order does not matter."""

    attempts: tuple[Attempt, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    consents: tuple[ConsentEvent, ...] = ()


class StateUnavailable:
    """Stands for a state the store could not deliver in time."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail

    def __repr__(self) -> str:
        return f"StateUnavailable({self.detail!r})"


@dataclass(frozen=True, slots=True)
class Professional:
    id: str
    name: str = ""
    siren: str | None = None
    npvs: tuple[str, ...] = ()  # national digits of the NPVs its operator assigned to it
    platform_numbers: tuple[str, ...] = ()  # national digits of its 0937-0939 SMS senders
    sms_windows: tuple[Window, ...] | None = None  # its SMS sending hours; None: the voice windows


@dataclass(frozen=True, slots=True)
class Policy:
    """The readings an operator may choose (docs/rules.md "choice" marks) and the failure policy."""

    local_holidays: bool = True
    banned_sectors: frozenset[str] = DEFAULT_BANNED_SECTORS
    fail_open: bool = False
    # Dates of each banned sector per medium; a listed sector without a row gets the fallback.
    sector_bans: dict[str, SectorBan] = field(default_factory=lambda: dict(DEFAULT_SECTOR_BANS))
    consent_exempt_sectors: frozenset[str] = DEFAULT_CONSENT_EXEMPT_SECTORS
    consent_max_age_days: int = DEFAULT_CONSENT_MAX_AGE_DAYS
    consent_proof_days: int = DEFAULT_CONSENT_PROOF_DAYS
    callback_working_days: int = DEFAULT_CALLBACK_WORKING_DAYS
    # Since 2026-08-11 only an agreed slot lifts the calendar; False keeps the blanket consent.
    out_of_hours_slot_only: bool = True
    windows: tuple[Window, ...] = CALL_WINDOWS
    professionals: tuple[Professional, ...] = ()
    _owners: dict[str, Professional] = field(init=False, repr=False, compare=False)
    _by_id: dict[str, Professional] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owners = {number: p for p in self.professionals for number in (*p.npvs, *p.platform_numbers)}
        object.__setattr__(self, "_owners", owners)
        object.__setattr__(self, "_by_id", {p.id: p for p in self.professionals})

    def owner_of(self, national: str) -> Professional | None:
        return self._owners.get(national)

    def professional(self, professional_id: str) -> Professional | None:
        return self._by_id.get(professional_id)

    def sector_ban_from(self, sector: str | None, medium: Medium) -> date | None:
        """The first consumer-local day `sector` is banned on `medium`, or None if it never is."""
        if not sector or sector not in self.banned_sectors:
            return None
        ban = self.sector_bans.get(sector, FALLBACK_SECTOR_BAN)
        return ban.sms if medium is Medium.SMS else ban.voice

    def windows_for(self, medium: Medium, professional_id: str | None) -> tuple[Window, ...]:
        """The hours a contact may be made in: the D. 223-9 windows, or a professional's SMS hours."""
        if medium is Medium.SMS and professional_id:
            professional = self._by_id.get(professional_id)
            if professional is not None and professional.sms_windows:
                return professional.sms_windows
        return self.windows
