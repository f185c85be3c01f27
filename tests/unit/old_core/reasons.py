"""Reason codes: the stable vocabulary shared by the CLI, ARI, AGI, logs and docs/reasons.md."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReasonCode(StrEnum):
    CALLER_MISSING = "CALLER_MISSING"
    CALLER_INVALID = "CALLER_INVALID"
    CALLER_NOT_NPV = "CALLER_NOT_NPV"
    CALLER_NOT_ASSIGNED = "CALLER_NOT_ASSIGNED"
    CONSUMER_INVALID = "CONSUMER_INVALID"
    OUTSIDE_HOURS = "OUTSIDE_HOURS"
    WEEKEND = "WEEKEND"
    PUBLIC_HOLIDAY = "PUBLIC_HOLIDAY"
    FREQUENCY_CAP = "FREQUENCY_CAP"
    REFUSAL_BLOCK = "REFUSAL_BLOCK"
    NO_CONSENT = "NO_CONSENT"
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"
    SECTOR_BANNED = "SECTOR_BANNED"
    STATE_UNAVAILABLE = "STATE_UNAVAILABLE"
    SENDER_NOT_PLATFORM_NUMBER = "SENDER_NOT_PLATFORM_NUMBER"
    MESSAGE_INVALID = "MESSAGE_INVALID"


# One line per code, used by `npv-guard reasons` and kept in step with docs/reasons.md (tests/docs checks it).
SUMMARY: dict[ReasonCode, str] = {
    ReasonCode.CALLER_MISSING: "caller ID empty, anonymous or withheld (C. conso L. 221-17)",
    ReasonCode.CALLER_INVALID: "caller ID is not a phone number",
    ReasonCode.CALLER_NOT_NPV: "caller ID is not a verified polyvalent number (ARCEP 2022-1583)",
    ReasonCode.CALLER_NOT_ASSIGNED: "caller NPV is not assigned to this professional",
    ReasonCode.CONSUMER_INVALID: "called number or consumer facts cannot be placed in France",
    ReasonCode.OUTSIDE_HOURS: "outside 10:00-13:00 and 14:00-20:00 consumer time (D. 223-9)",
    ReasonCode.WEEKEND: "Saturday or Sunday, consumer time (D. 223-9)",
    ReasonCode.PUBLIC_HOLIDAY: "public holiday where the consumer lives (D. 223-9)",
    ReasonCode.FREQUENCY_CAP: "already 4 attempts in the last 30 days (D. 223-9)",
    ReasonCode.REFUSAL_BLOCK: "consumer refused less than 60 days ago (D. 223-9)",
    ReasonCode.NO_CONSENT: "no consent or contract in force (L. 223-1 opt-in; a consent lasts one year, R. 223-1)",
    ReasonCode.CONSENT_WITHDRAWN: "consent withdrawn or refused since opt-in (L. 221-16, L. 223-1)",
    ReasonCode.SECTOR_BANNED: "sector banned by phone or SMS from its date, outside a contract (L. 223-1)",
    ReasonCode.STATE_UNAVAILABLE: "stored state unreachable: failing closed",
    ReasonCode.SENDER_NOT_PLATFORM_NUMBER: "SMS sender is not a 0937-0939 platform number (ARCEP numbering plan)",
    ReasonCode.MESSAGE_INVALID: "SMS without a usable text body (empty, too long, not text)",
}


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}
