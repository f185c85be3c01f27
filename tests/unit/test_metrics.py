"""The guard's metrics count what they say: a decision once, reasons apart, STOP apart from DTMF,
Redis failures where they happen."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from npv_guard import __version__
from npv_guard.config import ConfigError, load_settings
from npv_guard.core.model import Refusal, RefusalSource
from npv_guard.observability import Metrics
from npv_guard.store import ConsumerHasher, Store, StoreUnavailable
from tests.support.redis_servers import free_tcp_port
from tests.unit.helpers import at, verdict


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_rejection_with_two_reasons_is_one_decision_and_two_reason_counts() -> None:
    metrics = Metrics()
    rejected = verdict("2026-12-01T21:00:00+01:00", caller="0612345670")  # a mobile caller ID, in the evening
    assert len(rejected.codes) >= 2
    metrics.decision("ari", rejected, 0.001)
    metrics.decision("ari", verdict(), 0.001)
    found = samples(metrics)
    assert found[("npv_guard_decisions_total", (("mode", "ari"), ("verdict", "reject")))] == 1
    assert found[("npv_guard_decisions_total", (("mode", "ari"), ("verdict", "allow")))] == 1
    for code in rejected.codes:
        assert found[("npv_guard_decision_reasons_total", (("mode", "ari"), ("reason", code)))] == 1
    decision_samples = [key for key in found if key[0] == "npv_guard_decisions_total"]
    assert len(decision_samples) == 2


def test_the_same_label_set_counts_every_time_and_observes_every_latency() -> None:
    # The series of a label set are looked up once and kept: they go on counting.
    metrics = Metrics()
    rejected = verdict("2026-12-01T21:00:00+01:00", caller="0612345670")
    for _ in range(3):
        metrics.decision("api", rejected, 0.001)
        metrics.decision("api", verdict(), 0.3)
    found = samples(metrics)
    assert found[("npv_guard_decisions_total", (("mode", "api"), ("verdict", "reject")))] == 3
    assert found[("npv_guard_decisions_total", (("mode", "api"), ("verdict", "allow")))] == 3
    for code in rejected.codes:
        assert found[("npv_guard_decision_reasons_total", (("mode", "api"), ("reason", code)))] == 3
    assert found[("npv_guard_decision_seconds_count", (("mode", "api"),))] == 6
    assert found[("npv_guard_decision_seconds_bucket", (("le", "0.2"), ("mode", "api")))] == 3
    campaign = (("campaign", "none"), ("mode", "api"), ("verdict", "allow"))
    assert found[("npv_guard_campaign_decisions_total", campaign)] == 3


def test_a_stop_reply_is_a_refusal_but_not_a_dtmf_one() -> None:
    metrics = Metrics()
    metrics.refusal("sms", "sms", "recorded")
    metrics.refusal("ari", "agent", "journaled")
    found = samples(metrics)
    labels = (("mode", "sms"), ("outcome", "recorded"), ("source", "sms"))
    assert found[("npv_guard_refusals_total", labels)] == 1
    assert ("npv_guard_dtmf_refusals_total", labels) not in found
    agent = (("mode", "ari"), ("outcome", "journaled"), ("source", "agent"))
    assert found[("npv_guard_dtmf_refusals_total", agent)] == found[("npv_guard_refusals_total", agent)] == 1


def test_build_info_process_and_python_collectors() -> None:
    found = samples(Metrics())
    assert found[("npv_guard_build_info", (("version", __version__),))] == 1
    names = {name for name, _ in found}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert "npv_guard_ari_connected" not in names  # only an ARI-mode guard has a connection to report


def test_the_ari_gauge_follows_the_connection() -> None:
    metrics = Metrics()
    metrics.ari_connected(True)
    assert samples(metrics)[("npv_guard_ari_connected", ())] == 1
    metrics.ari_connected(False)
    assert samples(metrics)[("npv_guard_ari_connected", ())] == 0


async def test_every_failed_redis_exchange_is_counted_where_it_fails() -> None:
    metrics = Metrics()
    # Nothing listens there: every exchange fails, whatever asked for it.
    store = Store.connect(f"redis://127.0.0.1:{free_tcp_port()}/0", ConsumerHasher("s" * 20), timeout=0.2)
    store.on_error = metrics.redis_errors.inc
    refusal = Refusal(at("2026-12-01T10:00:00+01:00"), RefusalSource.AGENT)
    exchanges = [
        store.ping,
        lambda: store.snapshot("acme", "+33612345678", at("2026-12-01T10:00:00+01:00")),
        lambda: store.record_refusal("acme", "d" * 64, refusal, None, "r1"),
    ]
    try:
        for exchange in exchanges:
            with pytest.raises(StoreUnavailable):
                await exchange()
    finally:
        await store.close()
    # One per failed exchange, the retried read included once: not one per rejected call.
    assert samples(metrics)[("npv_guard_redis_errors_total", ())] == len(exchanges)


def test_campaigns_are_labels_only_when_configured() -> None:
    """Bounded cardinality: a dialer's free-form campaign ids never each grow a series."""
    metrics = Metrics(campaigns=("spring-26",))
    for campaign in ("spring-26", "spring-26", "autumn-26", "x" * 64, None):
        metrics.decision("ari", verdict(campaign=campaign), 0.001)
    counter = "npv_guard_campaign_decisions_total"
    found = {labels: value for (name, labels), value in samples(metrics).items() if name == counter}
    assert found == {
        (("campaign", "spring-26"), ("mode", "ari"), ("verdict", "allow")): 2,
        (("campaign", "other"), ("mode", "ari"), ("verdict", "allow")): 2,
        (("campaign", "none"), ("mode", "ari"), ("verdict", "allow")): 1,
    }


@pytest.mark.parametrize("campaign", ["other", "none", "bad id", "x" * 65])
def test_a_campaign_that_cannot_be_a_label_is_a_config_error(campaign: str) -> None:
    with pytest.raises(ConfigError, match=r"^metrics\.campaigns:"):
        load_settings(None, {"NPV_GUARD_METRICS_CAMPAIGNS": json.dumps([campaign])})


def test_the_guard_counts_its_configured_campaigns() -> None:
    assert load_settings(None, {"NPV_GUARD_METRICS_CAMPAIGNS": "a,b"}).metrics.campaigns == ("a", "b")
