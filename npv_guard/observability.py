"""Metrics and health, fed by the verdicts and the connections, never by the rules.

Labels only ever take values from fixed vocabularies (verdict, reason code, source, mode, version,
the configured campaigns): no consumer number or hash can reach /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from npv_guard import __version__
from npv_guard.core.decide import Verdict
from npv_guard.httpserver import GuardedRunner, Limits, start_site

log = logging.getLogger("npv_guard.http")

HEALTH_PROBE_S = 2.0
# The probes' listener: scrapers and health checks send small GETs on short-lived connections.
HTTP_LIMITS = Limits(header_timeout_s=5.0, body_timeout_s=5.0, idle_timeout_s=15.0, max_connections=64)
HTTP_MAX_BODY_BYTES = 1024


# The refusal sources keyed in the call path (DTMF); kept apart for the historical DTMF counter.
DTMF_SOURCES = frozenset({"agent", "consumer"})


# Distinct (mode, verdict, campaign, reason codes) whose series `Metrics.decision` keeps at hand.
MAX_CACHED_SERIES = 4096


@dataclass(frozen=True, slots=True)
class _DecisionSeries:
    seconds: Histogram
    counters: tuple[Counter, ...]


class Metrics:
    def __init__(self, campaigns: tuple[str, ...] = ()) -> None:
        """`campaigns`: the campaign ids (`metrics.campaigns`) counted under their own label value."""
        self.registry = CollectorRegistry()
        self._campaigns = frozenset(campaigns)
        # What any Python service exposes: CPU, memory, file descriptors, start time, GC, version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.build_info = Gauge(
            "npv_guard_build_info", "The running npv-guard version (always 1)", ["version"], registry=self.registry
        )
        self.build_info.labels(__version__).set(1)
        self.decisions = Counter(
            "npv_guard_decisions", "Decisions by verdict, once each", ["mode", "verdict"], registry=self.registry
        )
        self.campaign_decisions = Counter(
            "npv_guard_campaign_decisions",
            "Decisions by campaign: a campaign of metrics.campaigns by name, any other as other, none without one",
            ["mode", "campaign", "verdict"], registry=self.registry,
        )  # fmt: skip
        self.decision_reasons = Counter(
            "npv_guard_decision_reasons", "Reason codes cited by rejections (a rejection may cite several)",
            ["mode", "reason"], registry=self.registry,
        )  # fmt: skip
        self.decision_seconds = Histogram(
            "npv_guard_decision_seconds", "Time to decide a call, store included", ["mode"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=self.registry,
        )  # fmt: skip
        self.redis_errors = Counter(
            "npv_guard_redis_errors", "Redis exchanges that failed (each StoreUnavailable)", registry=self.registry
        )
        self.journal_pending = Gauge(
            "npv_guard_journal_pending", "Refusals waiting in the journal for Redis", registry=self.registry
        )
        self.journal_unreadable = Gauge(
            "npv_guard_journal_unreadable_lines",
            "Lines of this guard's journal and its peers skipped at their last read (not a record)",
            registry=self.registry,
        )
        self.active_calls = Gauge("npv_guard_active_calls", "Calls the ARI app holds", registry=self.registry)
        self.refusals = Counter(
            "npv_guard_refusals", "Refusals by mode, source (agent, consumer, operator, sms) and outcome",
            ["mode", "source", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.dtmf_refusals = Counter(
            "npv_guard_dtmf_refusals", "Refusals keyed in the call path (DTMF: agent or consumer)",
            ["mode", "source", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.ari_reconnects = Counter("npv_guard_ari_reconnects", "ARI reconnections", registry=self.registry)
        self.calls_taken_over = Counter(
            "npv_guard_calls_taken_over", "calls taken over from another guard (ARI)", registry=self.registry
        )
        self.ari_requests = Counter(
            "npv_guard_ari_requests", "ARI REST requests by operation and outcome (ok, failed)",
            ["operation", "outcome"], registry=self.registry,
        )  # fmt: skip
        self._ari_connected: Gauge | None = None
        self._decision_series: dict[tuple[str, str, str, tuple[str, ...]], _DecisionSeries] = {}
        self.agi_sessions = Counter("npv_guard_agi_sessions", "FastAGI sessions", ["outcome"], registry=self.registry)
        self.messages = Counter(
            "npv_guard_sms", "Text messages by direction and outcome", ["direction", "outcome"],
            registry=self.registry,
        )  # fmt: skip

    def decision(self, mode: str, verdict: Verdict, seconds: float) -> None:
        campaign = self.campaign_label(verdict.prepared.request.campaign)
        key = (mode, verdict.verdict, campaign, verdict.codes)
        series = self._decision_series.get(key)
        if series is None:
            # prometheus_client's labels() look-up (a lock, a validation) per series per decision
            # was a third of the decision's metrics: each label set's series are looked up once.
            series = _DecisionSeries(
                self.decision_seconds.labels(mode),
                (
                    self.decisions.labels(mode, key[1]),
                    self.campaign_decisions.labels(mode, campaign, key[1]),
                    *(self.decision_reasons.labels(mode, code) for code in key[3]),
                ),
            )
            if len(self._decision_series) < MAX_CACHED_SERIES:  # the label sets are few; never unbounded
                self._decision_series[key] = series
        series.seconds.observe(seconds)
        for counter in series.counters:
            counter.inc()

    def campaign_label(self, campaign: str | None) -> str:
        """Bounded cardinality: only a configured campaign names its own series."""
        if not campaign:
            return "none"
        return campaign if campaign in self._campaigns else "other"

    def refusal(self, mode: str, source: str, outcome: str) -> None:
        """One refusal signalled: `outcome` is recorded, journaled or lost."""
        self.refusals.labels(mode, source, outcome).inc()
        if source in DTMF_SOURCES:
            self.dtmf_refusals.labels(mode, source, outcome).inc()

    def ari_connected(self, connected: bool) -> None:
        # Registered on first use, by the ARI mode only: an AGI or API guard has no ARI to lose,
        # and a 0 there would page someone for nothing.
        if self._ari_connected is None:
            self._ari_connected = Gauge(
                "npv_guard_ari_connected", "1 while the ARI websocket is up and the app registered",
                registry=self.registry,
            )  # fmt: skip
        self._ari_connected.set(1 if connected else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """Ready when the call path (ARI connected, or the AGI server listening) and Redis are usable."""

    def __init__(self, call_path: Callable[[], bool], redis_ping: Callable[[], Awaitable[bool]]) -> None:
        self.call_path = call_path
        self._redis_ping = redis_ping
        self.redis_ok = False

    async def probe_forever(self) -> None:
        while True:
            try:
                self.redis_ok = await self._redis_ping()
            except Exception:
                self.redis_ok = False
            await asyncio.sleep(HEALTH_PROBE_S)

    def status(self) -> dict[str, bool]:
        call_path = self.call_path()
        return {"ready": call_path and self.redis_ok, "call_path": call_path, "redis": self.redis_ok}


async def serve_http(listen: str, health: Health, metrics: Metrics, refresh: Callable[[], None]) -> GuardedRunner:
    async def healthz(_: web.Request) -> web.Response:
        status = health.status()
        return web.json_response(status, status=200 if status["ready"] else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        refresh()
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=HTTP_MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    runner = GuardedRunner(app, HTTP_LIMITS, access_log=None)
    await runner.setup()
    await start_site(runner, listen)
    log.info("health and metrics on http://%s/healthz and /metrics", listen)
    return runner


async def stop_http(runner: GuardedRunner | None) -> None:
    if runner is not None:
        with contextlib.suppress(Exception):
            await runner.cleanup()
