"""What the AGI scripts share: the guard, the call settings, the audit trail and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from npv_guard.audit import AuditLog
from npv_guard.config import CallsSettings
from npv_guard.observability import Metrics
from npv_guard.service import Guard

ACK_TONE = "!1400/120,!0/80,!1400/120"
ERROR_TONE = "!480/400,!0/100,!480/400"


@dataclass(frozen=True)
class AgiContext:
    guard: Guard
    calls: CallsSettings
    audit: AuditLog
    now: Callable[[], datetime]
    metrics: Metrics
