"""The operational log's safety net: a traceback keeps where it happened, not the numbers its
exception's text quotes."""

from __future__ import annotations

import json
import logging
import sys

from npv_guard.logs import JsonFormatter, failure_text
from npv_guard.service import PairError
from npv_guard.store import StoreUnavailable


def test_logged_tracebacks_lose_the_numbers_they_quote() -> None:
    try:
        raise ValueError("called number '06 12 34 56 78' (+33612345678) cannot be placed")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "ValueError" in line["exception"] and "test_logs.py" in line["exception"]
    assert "12 34 56 78" not in line["exception"] and "33612345678" not in line["exception"]


def test_failure_text_keeps_safe_texts_only() -> None:
    assert failure_text(PairError("called number '0899345678' is a service number")) == "PairError"
    assert failure_text(StoreUnavailable("redis ping failed: ConnectionError")) == (
        "StoreUnavailable: redis ping failed: ConnectionError"
    )
