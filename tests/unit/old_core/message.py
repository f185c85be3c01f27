"""The text of a message, as the message_body rule reads it (core/decide.py RULES)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the message rules read: the body as received and the operator's size limit."""

    body: object
    max_bytes: int


def body_problem(body: object, max_bytes: int) -> str | None:
    """Why a body cannot be relayed, or None. Asterisk delivers an over-long body as empty."""
    if not isinstance(body, str) or not body.strip():
        return "empty body (Asterisk also empties a body longer than its 1023-byte MESSAGE limit)"
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return f"body is {size} bytes, more than sms.max_body_bytes ({max_bytes})"
    return None
