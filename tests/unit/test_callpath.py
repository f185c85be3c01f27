"""The call-path layer does each entry point's side effects once: one audit line and one count per
decision or refusal, the entry point's own fields in the line, a lost refusal counted as lost; and
the channel variables a verdict leaves for ARI and AGI."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from npv_guard import channel
from npv_guard.audit import AuditLog
from npv_guard.callpath import CallPath
from npv_guard.core.model import CallRequest, Policy, RefusalSource
from npv_guard.observability import Metrics
from npv_guard.service import Guard, ProfessionalError
from npv_guard.store import StoreUnavailable
from tests.unit.helpers import MOBILE, NPV, at, verdict
from tests.unit.test_metrics import samples


def _path() -> tuple[CallPath, io.StringIO, Metrics]:
    out, metrics = io.StringIO(), Metrics()
    # No store: every decision finds the state unavailable, every refusal write fails.
    return CallPath(Guard(Policy(), None), AuditLog(out), metrics), out, metrics


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _request() -> CallRequest:
    return CallRequest(caller=NPV, callee=MOBILE, at=at("2026-12-01T10:30:00+01:00"), professional="acme")


@pytest.mark.parametrize("mode", ["ari", "agi", "api"])
def test_a_decision_is_counted_and_audited_once_with_its_latency(mode: str) -> None:
    path, out, metrics = _path()
    decision = asyncio.run(path.decide_call(_request(), mode=mode, call_id="c1", record=False, labels_dropped=["lead"]))
    (line,) = _lines(out)
    assert (line["event"], line["mode"], line["call_id"]) == ("decision", mode, "c1")
    assert line["latency_ms"] == decision.latency_ms
    assert line["labels_dropped"] == ["lead"]
    found = samples(metrics)
    assert found[("npv_guard_decisions_total", (("mode", mode), ("verdict", decision.verdict.verdict)))] == 1


def test_an_entry_point_that_decided_itself_audits_once_with_its_own_fields() -> None:
    path, out, metrics = _path()
    decision = path.decided(verdict(), mode="sms", call_id="sms-1", started=0.0)
    assert _lines(out) == []  # the line waits for what the entry point did with the verdict
    path.audit_decision(decision, relayed=False, body_bytes=3)
    (line,) = _lines(out)
    assert (line["mode"], line["relayed"], line["body_bytes"]) == ("sms", False, 3)
    assert "latency_ms" not in line  # an SMS line never carried one
    assert samples(metrics)[("npv_guard_decisions_total", (("mode", "sms"), ("verdict", "allow")))] == 1


def test_a_refusal_neither_stored_nor_journaled_is_counted_lost_and_audited() -> None:
    path, out, metrics = _path()
    signalled = asyncio.run(
        path.record_refusal(
            mode="ari",
            source=RefusalSource.AGENT,
            professional="acme",
            callee=MOBILE,
            at=at("2026-12-01T10:31:00Z"),
            call_id="c1",
            campaign="spring",
        )
    )
    assert not signalled.recorded and isinstance(signalled.error, StoreUnavailable)
    (line,) = _lines(out)
    assert (line["event"], line["recorded"], line["source"], line["campaign"]) == ("refusal", False, "agent", "spring")
    assert line["consumer"] is None  # no store, no keyed hash: nothing names the consumer
    assert "no store configured" in line["error"]
    found = samples(metrics)
    lost = (("mode", "ari"), ("outcome", "lost"), ("source", "agent"))
    assert found[("npv_guard_refusals_total", lost)] == found[("npv_guard_dtmf_refusals_total", lost)] == 1


@pytest.mark.parametrize(("mode", "source"), [("agi", "agent"), ("sms", "sms")])
def test_a_refusal_with_no_pair_to_record_it_for_counts_as_lost(mode: str, source: str) -> None:
    """An AGI refusal on a call `check` never saw (NOT_CHECKED), a STOP from an unplaceable number:
    nobody is blocked, so the alert on lost refusals must see it."""
    path, out, metrics = _path()
    path.refusal_lost(mode=mode, source=source, call_id="c1", professional="acme", error="not checked")
    (line,) = _lines(out)
    assert (line["event"], line["recorded"], line["error"]) == ("refusal", False, "not checked")
    lost = (("mode", mode), ("outcome", "lost"), ("source", source))
    assert samples(metrics)[("npv_guard_refusals_total", lost)] == 1


def test_input_the_guard_refuses_is_lost_without_a_consumer_or_propagates() -> None:
    path, out, _ = _path()
    ask = dict(
        mode="agi", source=RefusalSource.AGENT, professional="not an id!", callee=MOBILE,
        at=at("2026-12-01T10:31:00Z"), call_id="c1",
    )  # fmt: skip
    signalled = asyncio.run(path.record_refusal(**ask, describe=lambda error: "CODE"))  # type: ignore[arg-type]
    assert isinstance(signalled.error, ProfessionalError)
    (line,) = _lines(out)
    assert (line["professional"], line["consumer"], line["error"]) == (None, None, "CODE")
    with pytest.raises(ProfessionalError):  # the API and the CLI answer it as bad input
        asyncio.run(path.record_refusal(**ask, lost_on=(StoreUnavailable,)))  # type: ignore[arg-type]
    assert len(_lines(out)) == 1


def test_agi_leaves_every_variable_and_the_verdict_last() -> None:
    rejected = verdict("2026-12-01T21:00:00+01:00", campaign="spring")
    pairs = channel.verdict_vars(rejected, mode="agi", cause=21)
    assert pairs[-1] == (channel.VERDICT, "REJECT")
    values = dict(pairs)
    assert values[channel.CAUSE] == "21" and values[channel.REASONS] == ",".join(rejected.codes)
    assert values[channel.CAMPAIGN] == values[channel.CDR_CAMPAIGN] == "spring"
    assert {channel.PROFESSIONAL, channel.CALLEE, channel.RETRY_AFTER} <= set(values)
    assert channel.LEAD not in values  # no label, no variable
    assert dict(channel.verdict_vars(verdict(), mode="agi", cause=None))[channel.CAUSE] == ""


def test_ari_writes_what_the_dialplan_and_reconciliation_read() -> None:
    allowed, rejected = verdict(), verdict("2026-12-01T21:00:00+01:00")
    assert allowed.allowed and not rejected.allowed
    assert channel.verdict_vars(allowed, mode="ari") == [
        (channel.REASONS, ""), (channel.PROFESSIONAL, allowed.prepared.professional or ""), (channel.VERDICT, "ALLOW"),
    ]  # fmt: skip
    assert channel.verdict_vars(rejected, mode="ari") == [
        (channel.REASONS, ",".join(rejected.codes)), (channel.RETRY_AFTER, rejected.retry_after),
        (channel.VERDICT, "REJECT"),
    ]  # fmt: skip
    draining = dict(channel.verdict_vars(allowed, mode="ari", draining=True))
    assert (draining[channel.VERDICT], draining[channel.REASONS]) == ("REJECT", channel.DRAINING)
