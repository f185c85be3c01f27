"""Operational logs as JSON lines on standard error (the audit trail goes elsewhere)."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

# The call a log line is about: set by each call's actor (ARI) and each AGI session.
CALL_ID: ContextVar[str] = ContextVar("call_id", default="")


# A run of 8 or more digits, spaced or dotted as people write numbers: a phone number, never a
# line number, a port or a duration.
_DIGIT_RUN = re.compile(r"\+?\d(?:[ .]?\d){7,}")


def scrub_digits(text: str) -> str:
    """A traceback without the numbers an exception's text may quote (a PairError quotes the
    callee): the log.exception() calls log where a bug happened, not what it was about."""
    return _DIGIT_RUN.sub("<digits>", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = CALL_ID.get()
        if call_id:
            line["call_id"] = call_id
        if record.exc_info:
            line["exception"] = scrub_digits(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The libraries' own chatter stays at warning level.
    for noisy in ("aiohttp", "redis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def failure_text(error: BaseException) -> str:
    """What a log or audit line may say about a failed refusal or consent: the error's type, plus
    the text of errors known to carry neither number nor secret (StoreUnavailable's). Other texts
    may quote the consumer number (a PairError's does)."""
    from npv_guard.store import StoreUnavailable  # noqa: PLC0415 - logs is imported by everything

    if isinstance(error, StoreUnavailable):
        return f"{type(error).__name__}: {error}"
    return type(error).__name__
