"""`agi://HOST:4573/check,NUMBER,PROFESSIONAL,SECTOR,POSTCODE[,CAMPAIGN,LEAD[,packed]]`: may this call be dialled?

Sets NPV_GUARD_REASONS, NPV_GUARD_CAUSE, NPV_GUARD_PROFESSIONAL, NPV_GUARD_CALLEE, the validated
NPV_GUARD_CAMPAIGN/NPV_GUARD_LEAD (and CDR(npv_campaign)/CDR(npv_lead)) and, last,
NPV_GUARD_VERDICT: a session cut half-way leaves no verdict, and the dialplan rejects a call
without one. It never hangs up: the dialplan decides.

With `packed` (the include of this version), all of it goes in one AGI command: NPV_GUARD_RESULT,
which the include splits into those variables, the verdict last; set at once or not at all, it
keeps "no verdict when cut half-way". An older include, without the argument, gets one command
per variable as before. The last command goes with the end of the stream (a half-close): Asterisk
returns from AGI() once it has run it, without waiting for the guard to read the answer.
"""

from __future__ import annotations

import time

from npv_guard.agi.context import AgiContext
from npv_guard.agi.server import AgiSession
from npv_guard.channel import RESULT, packed_result, verdict_vars
from npv_guard.core.model import CallRequest
from npv_guard.service import call_labels


async def check(session: AgiSession, ctx: AgiContext) -> None:
    number, professional, sector, postcode, campaign_arg, lead_arg, form = [*session.args, *[""] * 7][:7]
    started = time.perf_counter()
    callee = number or session.headers.get("agi_extension", "")
    campaign, lead, dropped = call_labels(campaign_arg, lead_arg, callee)
    request = CallRequest(
        caller=session.headers.get("agi_callerid", ""),
        callee=callee,
        at=ctx.now(),
        professional=professional or None,
        sector=sector or None,
        consumer_postcode=postcode or None,
        campaign=campaign,
        lead=lead,
    )
    call_id = session.headers.get("agi_uniqueid", "")
    decision = await ctx.path.decide_call(
        request, mode="agi", call_id=call_id, record=True, started=started, labels_dropped=dropped
    )
    verdict = decision.verdict
    cause = None if verdict.allowed else ctx.calls.cause_for(verdict.codes)
    pairs = verdict_vars(verdict, mode="agi", cause=cause)
    packed = packed_result(pairs) if form == "packed" else None
    if packed is not None:
        await session.set_var(RESULT, packed, last=True)
        return
    for index, (name, value) in enumerate(pairs, start=1):
        await session.set_var(name, value, last=index == len(pairs))
