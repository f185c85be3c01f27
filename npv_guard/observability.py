"""Metrics and health, fed by the verdicts and the connections, never by the rules.

Labels only ever take values from fixed vocabularies (verdict, reason code, source, mode): no
consumer number or hash can reach /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from npv_guard.core.decide import Verdict

log = logging.getLogger("npv_guard.http")

HEALTH_PROBE_S = 2.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "npv_guard_decisions", "Decisions by verdict and reason code", ["mode", "verdict", "reason"],
            registry=self.registry,
        )  # fmt: skip
        self.decision_seconds = Histogram(
            "npv_guard_decision_seconds", "Time to decide a call, store included", ["mode"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=self.registry,
        )  # fmt: skip
        self.redis_errors = Counter("npv_guard_redis_errors", "Redis exchanges that failed", registry=self.registry)
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
            "npv_guard_dtmf_refusals", "Refusals signalled in the call path", ["mode", "source", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.ari_reconnects = Counter("npv_guard_ari_reconnects", "ARI reconnections", registry=self.registry)
        self.agi_sessions = Counter("npv_guard_agi_sessions", "FastAGI sessions", ["outcome"], registry=self.registry)
        self.messages = Counter(
            "npv_guard_sms", "Text messages by direction and outcome", ["direction", "outcome"],
            registry=self.registry,
        )  # fmt: skip

    def decision(self, mode: str, verdict: Verdict, seconds: float) -> None:
        self.decision_seconds.labels(mode).observe(seconds)
        if verdict.allowed:
            self.decisions.labels(mode, "allow", "none").inc()
        for code in verdict.codes:
            self.decisions.labels(mode, "reject", code).inc()
        if "STATE_UNAVAILABLE" in verdict.codes:
            self.redis_errors.inc()

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


async def serve_http(listen: str, health: Health, metrics: Metrics, refresh: Callable[[], None]) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        status = health.status()
        return web.json_response(status, status=200 if status["ready"] else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        refresh()
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    log.info("health and metrics on http://%s/healthz and /metrics", listen)
    return runner


async def stop_http(runner: web.AppRunner | None) -> None:
    if runner is not None:
        with contextlib.suppress(Exception):
            await runner.cleanup()
