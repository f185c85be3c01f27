"""`agi://HOST:4573/refusal[,agent|consumer]`: the consumer refused during a bridged Dial().

Meant for a features.conf applicationmap entry (DYNAMIC_FEATURES) on the dialer's channel: it
reads the pair that `check` left on the channel, records the refusal once per call (journaled
if Redis is away) and confirms with a tone on the agent's leg. When it cannot, it plays the
error tone and sets NPV_GUARD_REFUSAL_ERROR to a code: NOT_CHECKED (no pair on the channel),
BAD_ARGUMENT, UNKNOWN_PROFESSIONAL, INVALID_NUMBER or NOT_RECORDED.
"""

from __future__ import annotations

import logging

from npv_guard import channel
from npv_guard.agi.context import AgiContext
from npv_guard.agi.server import AgiSession
from npv_guard.core.model import RefusalSource
from npv_guard.logs import failure_text
from npv_guard.service import InputError

log = logging.getLogger("npv_guard.agi")


async def refusal(session: AgiSession, ctx: AgiContext) -> None:
    args = session.args
    call_id = session.headers.get("agi_uniqueid", "")
    named = args[0].strip().lower() if args else ""
    if named not in ("", "agent", "consumer") or len(args) > 1:
        log.error("AGI refusal on %s: expected refusal[,agent|consumer]: nothing recorded", call_id)
        await _failed(session, "BAD_ARGUMENT")
        return
    source = RefusalSource.CONSUMER if named == "consumer" else RefusalSource.AGENT
    if await session.get_var(channel.REFUSED) == "1":
        await _tone(session, channel.ACK_TONE)  # once per call; a repeated code is only acknowledged
        return
    professional = await session.get_var(channel.PROFESSIONAL)
    callee = await session.get_var(channel.CALLEE)
    campaign = await session.get_var(channel.CAMPAIGN) or None
    lead = await session.get_var(channel.LEAD) or None
    if not professional or not callee:
        log.error("AGI refusal on %s: no %s/%s (was check run?)", call_id, channel.PROFESSIONAL, channel.CALLEE)
        ctx.path.refusal_lost(
            mode="agi", source=source.value, call_id=call_id, professional=professional,
            error="the call was not checked by npv-guard", campaign=campaign, lead=lead,
        )  # fmt: skip
        await _failed(session, "NOT_CHECKED")
        return
    signalled = await ctx.path.record_refusal(
        mode="agi", source=source, professional=professional, callee=callee, at=ctx.now(), call_id=call_id,
        describe=_describe, campaign=campaign, lead=lead,
    )  # fmt: skip
    if signalled.error is not None:
        await _failed(session, signalled.error.code if isinstance(signalled.error, InputError) else "NOT_RECORDED")
        return
    await session.set_var(channel.REFUSED, "1")
    await _tone(session, channel.ACK_TONE)
    if ctx.calls.hangup_on_refusal:
        await session.command("HANGUP")


def _describe(error: Exception) -> str:
    # An input error means someone other than `check` set these variables: its code, not its
    # message, which may quote the number.
    return error.code if isinstance(error, InputError) else failure_text(error)


async def _failed(session: AgiSession, code: str) -> None:
    await session.set_var(channel.REFUSAL_ERROR, code)
    await _tone(session, channel.ERROR_TONE)


async def _tone(session: AgiSession, tone: str) -> None:
    # The feature runs outside the bridge: let the tone play before the channel goes back in.
    await session.command(f'EXEC PlayTones "{tone}"')
    await session.command("EXEC Wait 0.5")
    await session.command("EXEC StopPlayTones")
