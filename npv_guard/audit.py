"""The audit trail: one JSON line per decision and per refusal, consumers as keyed hashes only."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from npv_guard.core.decide import Verdict
from npv_guard.service import RefusalOutcome


class AuditLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str) -> AuditLog:
        if not path:
            return cls()
        stream = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the guard
        if stream.tell() and not _ends_with_newline(path):
            stream.write("\n")  # a crash tore the last line: the next one starts on its own
        return cls(stream)

    def write(self, event: str, **fields: Any) -> None:
        line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), "event": event}
        line.update(fields)
        text = json.dumps(line, ensure_ascii=False, default=str)
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def decision(self, verdict: Verdict, *, call_id: str, consumer_ref: str | None, mode: str, **extra: Any) -> None:
        data = verdict.as_dict()
        self.write(
            "decision",
            call_id=call_id,
            mode=mode,
            verdict=data["verdict"],
            reasons=list(verdict.codes),
            messages=[
                reason.message for reason in verdict.reasons if reason.code.value.startswith(("CALLER", "STATE"))
            ],
            caller=data["caller"],
            professional=data["professional"],
            consumer=consumer_ref,
            territory=data["territory"],
            local_time=data["local_time"],
            at=data["at"],
            not_evaluated=data["not_evaluated"],
            next_allowed_at=data["next_allowed_at"],
            **extra,
        )

    def refusal(
        self,
        *,
        call_id: str,
        mode: str,
        source: str,
        professional: str | None,
        consumer_ref: str | None,
        outcome: RefusalOutcome | None = None,
        error: str = "",
    ) -> None:
        """One line per refusal signalled in the call path: recorded (or journaled), or lost and why."""
        fields: dict[str, Any] = {"recorded": outcome is not None}
        if outcome is not None:
            fields.update(
                journaled=outcome.journaled,
                at=outcome.refusal.at.isoformat(),
                withdraws_consent=outcome.withdraws_consent,
                blocked_until=outcome.blocked_until.isoformat(),
            )
        else:
            fields["error"] = error[:200]
        self.write(
            "refusal",
            call_id=call_id,
            mode=mode,
            professional=professional,
            consumer=consumer_ref,
            source=source,
            **fields,
        )


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"
