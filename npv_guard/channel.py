"""What the guard writes on, reads from and plays to an Asterisk channel, for ARI and AGI alike.

The names are a contract with the dialplan (dialplan/, docs/ari.md, docs/agi.md): one place
defines them, and tests/docs/test_channel_names.py checks that the docs and the dialplan agree.
"""

from __future__ import annotations

from typing import Literal

from npv_guard.core.decide import Verdict

# Written by the guard.
VERDICT = "NPV_GUARD_VERDICT"  # ALLOW or REJECT
REASONS = "NPV_GUARD_REASONS"  # comma-separated reason codes
CAUSE = "NPV_GUARD_CAUSE"  # AGI: the Q.850 cause to hang up a rejected call with
RETRY_AFTER = "NPV_GUARD_RETRY_AFTER"  # the first legal instant, ISO 8601 UTC, or empty
PROFESSIONAL = "NPV_GUARD_PROFESSIONAL"  # read back by reconciliation (ARI) and the refusal script (AGI)
CALLEE = "NPV_GUARD_CALLEE"  # AGI: the consumer's E.164 number, for the refusal script
CAMPAIGN = "NPV_GUARD_CAMPAIGN"
LEAD = "NPV_GUARD_LEAD"
# cdr_custom and cdr_adaptive_odbc can write ${CDR(npv_campaign)}: the labels in the CDR itself.
CDR_CAMPAIGN = "CDR(npv_campaign)"
CDR_LEAD = "CDR(npv_lead)"
# AGI, asked for by the include (check's argument 7 "packed"): the whole verdict in one variable,
# one AGI command instead of one per variable; the include splits it with CUT(), the verdict last.
RESULT = "NPV_GUARD_RESULT"
RESULT_FIELDS = (VERDICT, REASONS, CAUSE, PROFESSIONAL, CALLEE, RETRY_AFTER, CAMPAIGN, LEAD)
RESULT_SEPARATOR = "|"
REFUSED = "NPV_GUARD_REFUSED"  # AGI: "1" once the call's refusal is recorded
REFUSAL_ERROR = "NPV_GUARD_REFUSAL_ERROR"  # AGI: why a refusal could not be recorded
REFUSAL = "NPV_GUARD_REFUSAL"  # ARI: the source once the call's refusal is recorded (read by an adopting guard)
HANDBACK = "NPV_GUARD_HANDBACK"  # ARI failover include: "1" from a stopping guard, try the next one

WRITTEN = (
    VERDICT, REASONS, CAUSE, RETRY_AFTER, PROFESSIONAL, CALLEE, CAMPAIGN, LEAD, CDR_CAMPAIGN, CDR_LEAD, REFUSED,
    REFUSAL_ERROR, REFUSAL, HANDBACK, RESULT,
)  # fmt: skip

# Set by the dialplan (the includes in dialplan/ or the integrator), never by the guard.
SECTOR = "NPV_GUARD_SECTOR"
CONSUMER_POSTCODE = "NPV_GUARD_CONSUMER_POSTCODE"
FAIL_CAUSE = "NPV_GUARD_FAIL_CAUSE"  # the cause when the guard cannot answer
AGI_SERVER = "NPV_GUARD_AGI"  # host:port of the FastAGI server, or several: host:port&host:port
AGI_SPREAD = "NPV_GUARD_AGI_SPREAD"  # 1: each call starts at a random one of them
AGI_SECRET = "NPV_GUARD_AGI_SECRET"  # agi.path_secret, in [globals]
CONSUMER_KEY = "NPV_GUARD_CONSUMER_KEY"  # FreePBX: "no" leaves the trunk leg without the refusal key
FREEPBX_NUMBER = "NPV_GUARD_FREEPBX_NUMBER"  # FreePBX: the number the verdict on the channel is for
APPS = "NPV_GUARD_APPS"  # ARI failover include: the guards' app names, "a&b"

# The failover include's own bookkeeping (the global turn, the app being tried).
HA_STATE = ("NPV_GUARD_HA_TURN", "NPV_GUARD_HA_COUNT", "NPV_GUARD_HA_FIRST", "NPV_GUARD_HA_TRIED", "NPV_GUARD_HA_APP")

DIALPLAN = (
    SECTOR,
    CONSUMER_POSTCODE,
    FAIL_CAUSE,
    AGI_SERVER,
    AGI_SPREAD,
    AGI_SECRET,
    CONSUMER_KEY,
    FREEPBX_NUMBER,
    APPS,
    *HA_STATE,
)

# The tones of the agent's leg (Asterisk indications syntax): refusal recorded, refusal lost.
ACK_TONE = "!1400/120,!0/80,!1400/120"
ERROR_TONE = "!480/400,!0/100,!480/400"

# What ARI writes when it turns an allowed call away because the guard is stopping.
DRAINING = "GUARD_DRAINING"


def label_vars(campaign: str | None, lead: str | None) -> list[tuple[str, str]]:
    """The validated labels, on the channel and in its CDR; none when the call carries none."""
    pairs: list[tuple[str, str]] = []
    if campaign:
        pairs += [(CAMPAIGN, campaign), (CDR_CAMPAIGN, campaign)]
    if lead:
        pairs += [(LEAD, lead), (CDR_LEAD, lead)]
    return pairs


def verdict_vars(
    verdict: Verdict, *, mode: Literal["ari", "agi"], cause: int | None = None, draining: bool = False
) -> list[tuple[str, str]]:
    """The (name, value) pairs a decision leaves on the dialer's channel, in writing order, the
    verdict last: an AGI session cut half-way leaves no verdict, and the dialplan rejects a call
    without one.

    AGI leaves the dialplan everything it needs to act and to record a refusal later (`cause`: the
    Q.850 cause of a rejection). ARI acts itself: it writes what the dialplan after Stasis() and
    reconciliation read. `draining` (ARI): an allowed call turned away while the guard stops.
    """
    request = verdict.prepared.request
    pairs = label_vars(request.campaign, request.lead)
    reasons = ",".join(verdict.codes)
    if mode == "agi":
        pairs += [
            (REASONS, reasons),
            (CAUSE, "" if verdict.allowed or cause is None else str(cause)),
            (PROFESSIONAL, verdict.prepared.professional or ""),
            (CALLEE, verdict.prepared.consumer or ""),
            (RETRY_AFTER, verdict.retry_after),
            (VERDICT, "ALLOW" if verdict.allowed else "REJECT"),
        ]
    elif verdict.allowed and not draining:
        pairs += [(REASONS, ""), (PROFESSIONAL, verdict.prepared.professional or ""), (VERDICT, "ALLOW")]
    else:
        pairs += [(REASONS, reasons or DRAINING), (RETRY_AFTER, verdict.retry_after), (VERDICT, "REJECT")]
    return pairs


def packed_result(pairs: list[tuple[str, str]]) -> str | None:
    """`verdict_vars(mode="agi")` as the one NPV_GUARD_RESULT value (RESULT_FIELDS joined by "|"),
    or None when a value holds the separator (then each variable is set on its own)."""
    values = dict(pairs)
    fields = [values.get(name, "") for name in RESULT_FIELDS]
    if any(RESULT_SEPARATOR in value for value in fields):
        return None
    return RESULT_SEPARATOR.join(fields)
