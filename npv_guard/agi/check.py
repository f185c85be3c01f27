"""`agi://HOST:4573/check,NUMBER,PROFESSIONAL,SECTOR,POSTCODE[,CAMPAIGN,LEAD]`: may this call be dialled?

Sets NPV_GUARD_REASONS, NPV_GUARD_CAUSE, NPV_GUARD_PROFESSIONAL, NPV_GUARD_CALLEE, the validated
NPV_GUARD_CAMPAIGN/NPV_GUARD_LEAD (and CDR(npv_campaign)/CDR(npv_lead)) and, last,
NPV_GUARD_VERDICT: a session cut half-way leaves no verdict, and the dialplan rejects a call
without one. It never hangs up: the dialplan decides.
"""

from __future__ import annotations

import time

from npv_guard.agi.context import AgiContext
from npv_guard.agi.server import AgiSession
from npv_guard.core.model import CallRequest
from npv_guard.service import call_labels


async def check(session: AgiSession, ctx: AgiContext) -> None:
    number, professional, sector, postcode, campaign_arg, lead_arg = [*session.args, *[""] * 6][:6]
    started = time.perf_counter()
    campaign, lead, dropped = call_labels(campaign_arg, lead_arg, number or session.headers.get("agi_extension", ""))
    request = CallRequest(
        caller=session.headers.get("agi_callerid", ""),
        callee=number or session.headers.get("agi_extension", ""),
        at=ctx.now(),
        professional=professional or None,
        sector=sector or None,
        consumer_postcode=postcode or None,
        campaign=campaign,
        lead=lead,
    )
    call_id = session.headers.get("agi_uniqueid", "")
    verdict = await ctx.guard.check(request, record=True, call_id=call_id)
    prepared = verdict.prepared
    elapsed = time.perf_counter() - started
    ctx.metrics.decision("agi", verdict, elapsed)
    ctx.audit.decision(
        verdict,
        call_id=call_id,
        consumer_ref=ctx.guard.consumer_ref(prepared.consumer),
        mode="agi",
        latency_ms=round(elapsed * 1000, 3),
        **({"labels_dropped": dropped} if dropped else {}),
    )
    for name, value in (("campaign", campaign), ("lead", lead)):
        if value:  # read back by the refusal script; the CDR variable carries it into the CDR
            await session.set_var(f"NPV_GUARD_{name.upper()}", value)
            await session.set_var(f"CDR(npv_{name})", value)
    await session.set_var("NPV_GUARD_REASONS", ",".join(verdict.codes))
    await session.set_var("NPV_GUARD_CAUSE", "" if verdict.allowed else str(ctx.calls.cause_for(verdict.codes)))
    await session.set_var("NPV_GUARD_PROFESSIONAL", prepared.professional or "")
    await session.set_var("NPV_GUARD_CALLEE", prepared.consumer or "")
    await session.set_var("NPV_GUARD_RETRY_AFTER", verdict.retry_after)
    await session.set_var("NPV_GUARD_VERDICT", "ALLOW" if verdict.allowed else "REJECT")
