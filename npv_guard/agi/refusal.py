"""`agi://HOST:4573/refusal[,agent|consumer]`: the consumer refused during a bridged Dial().

Meant for a features.conf applicationmap entry (DYNAMIC_FEATURES) on the dialer's channel: it
reads the pair that `check` left on the channel, records the refusal once per call (journaled
if Redis is away) and confirms with a tone on the agent's leg.
"""

from __future__ import annotations

import logging
from functools import partial

from npv_guard.agi.context import ACK_TONE, ERROR_TONE, AgiContext
from npv_guard.agi.server import AgiSession
from npv_guard.core.model import RefusalSource
from npv_guard.logs import failure_text

log = logging.getLogger("npv_guard.agi")


async def refusal(session: AgiSession, ctx: AgiContext) -> None:
    args = session.args
    source = RefusalSource.CONSUMER if args and args[0].strip().lower() == "consumer" else RefusalSource.AGENT
    call_id = session.headers.get("agi_uniqueid", "")
    if await session.get_var("NPV_GUARD_REFUSED") == "1":
        await _tone(session, ACK_TONE)  # once per call; a repeated code is only acknowledged
        return
    professional = await session.get_var("NPV_GUARD_PROFESSIONAL")
    callee = await session.get_var("NPV_GUARD_CALLEE")
    audit = partial(
        ctx.audit.refusal,
        call_id=call_id,
        mode="agi",
        source=source.value,
        professional=professional,
        campaign=await session.get_var("NPV_GUARD_CAMPAIGN") or None,
        lead=await session.get_var("NPV_GUARD_LEAD") or None,
    )
    if not professional or not callee:
        log.error("AGI refusal on %s: no NPV_GUARD_PROFESSIONAL/NPV_GUARD_CALLEE (was check run?)", call_id)
        audit(consumer_ref=None, error="the call was not checked by npv-guard")
        await _tone(session, ERROR_TONE)
        return
    consumer_ref = ctx.guard.consumer_ref(callee)
    try:
        outcome = await ctx.guard.record_refusal(professional, callee, ctx.now(), source, call_id)
    except Exception as error:
        ctx.metrics.refusal("agi", source.value, "lost")
        log.error("AGI refusal on %s: REFUSAL NOT RECORDED (%s)", call_id, failure_text(error))
        audit(consumer_ref=consumer_ref, error=failure_text(error))
        await _tone(session, ERROR_TONE)
        return
    ctx.metrics.refusal("agi", source.value, "journaled" if outcome.journaled else "recorded")
    await session.set_var("NPV_GUARD_REFUSED", "1")
    audit(consumer_ref=consumer_ref, outcome=outcome)
    await _tone(session, ACK_TONE)
    if ctx.calls.hangup_on_refusal:
        await session.command("HANGUP")


async def _tone(session: AgiSession, tone: str) -> None:
    # The feature runs outside the bridge: let the tone play before the channel goes back in.
    await session.command(f'EXEC PlayTones "{tone}"')
    await session.command("EXEC Wait 0.5")
    await session.command("EXEC StopPlayTones")
