"""What the AGI scripts share: the guard, the call settings, the audit trail and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from npv_guard.audit import AuditLog
from npv_guard.callpath import CallPath
from npv_guard.config import CallsSettings
from npv_guard.observability import Metrics
from npv_guard.service import Guard


@dataclass(frozen=True)
class AgiContext:
    guard: Guard
    calls: CallsSettings
    audit: AuditLog
    now: Callable[[], datetime]
    metrics: Metrics

    @cached_property
    def path(self) -> CallPath:
        return CallPath(self.guard, self.audit, self.metrics)
