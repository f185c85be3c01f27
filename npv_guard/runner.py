"""`npv-guard run` (ARI), `npv-guard agi` (FastAGI) and `npv-guard serve` (HTTP API): the guard
processes, wired from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from npv_guard.agi.check import check as agi_check
from npv_guard.agi.context import AgiContext
from npv_guard.agi.refusal import refusal as agi_refusal
from npv_guard.agi.server import FastAgiServer
from npv_guard.api.app import ApiContext, SafeAccessLogger, build_app
from npv_guard.api.auth import TokenBook
from npv_guard.api.openapi import document
from npv_guard.ari.app import AriSupervisor
from npv_guard.ari.calls import CallService
from npv_guard.ari.ownership import Ownership
from npv_guard.audit import AuditLog
from npv_guard.clock import Clock
from npv_guard.config import ConfigError, Settings, file_warnings
from npv_guard.doctor import OK, durability_of
from npv_guard.heap import settle as settle_heap
from npv_guard.httpserver import GuardedRunner, Limits, start_site
from npv_guard.journal import JournalBusy, RefusalJournal
from npv_guard.observability import Health, Metrics, serve_http, stop_http
from npv_guard.service import Guard
from npv_guard.sms.service import SmsService
from npv_guard.store import ConsumerHasher, Store
from npv_guard.telephony import EventConsumer, PortHolder

log = logging.getLogger("npv_guard")

JOURNAL_REPLAY_S = 1.0
# A guard that starts while another one replays its orphaned journal waits for it this long.
JOURNAL_CLAIM_WAIT_S = 3.0


@dataclass
class Wiring:
    """What both modes share: one guard (rules, store, journal), the audit trail, the clock,
    and the metrics and health served over HTTP."""

    guard: Guard
    store: Store
    audit: AuditLog
    clock: Clock
    metrics: Metrics

    @classmethod
    def build(cls, settings: Settings) -> Wiring:
        clock = Clock(settings.now)
        if clock.replay:
            log.warning("REPLAY CLOCK: NPV_GUARD_NOW=%s, the guard's time is NOT the real time", settings.now)
        try:
            journal = RefusalJournal(settings.journal_path, writer=True, wait_s=JOURNAL_CLAIM_WAIT_S)
        except JournalBusy as error:
            raise ConfigError(f"journal_path: {error}") from None
        hasher = ConsumerHasher(settings.require_hash_secret(), settings.previous_hash_secrets)
        store = Store.from_settings(settings.redis, hasher, rules=settings.rules, clock=clock.now)
        skew = timedelta(seconds=settings.rules.max_write_skew_s)
        guard = Guard(settings.policy(), store, journal, clock=clock.now, max_write_skew=skew)
        for warning in file_warnings(settings):
            log.warning("%s", warning)
        metrics = Metrics(settings.metrics.campaigns)
        store.on_error = metrics.redis_errors.inc
        # Read at every scrape, whichever server serves /metrics (the health port or the API).
        metrics.journal_pending.set_function(lambda: len(journal))
        metrics.journal_unreadable.set_function(journal.unreadable_lines)
        return cls(guard, store, AuditLog.open(settings.log.audit_file), clock, metrics)

    def start_journal_replay(self, stop: asyncio.Event) -> asyncio.Task[None]:
        return asyncio.create_task(_replay_journal(self.guard, self.audit, stop), name="journal")

    @staticmethod
    def start_durability_check(settings: Settings) -> asyncio.Task[None]:
        return asyncio.create_task(_warn_durability(settings), name="durability")

    async def start_http(
        self, settings: Settings, call_path: Callable[[], bool], active_calls: Callable[[], int]
    ) -> tuple[GuardedRunner | None, asyncio.Task[None]]:
        health = Health(call_path, self.store.ping)
        probe = asyncio.create_task(health.probe_forever(), name="health")

        def refresh() -> None:
            self.metrics.active_calls.set(active_calls())

        runner = None
        if settings.http.listen:
            runner = await serve_http(settings.http.listen, health, self.metrics, refresh)
        return runner, probe


async def run_ari(settings: Settings, *, drain_s: float = 10.0) -> int:
    wiring = Wiring.build(settings)
    # One port for both services: the supervisor attaches each new connection to it.
    port = PortHolder()
    service = CallService(
        port, wiring.guard, settings.ari, settings.calls, wiring.audit, wiring.clock.now, wiring.metrics
    )
    sms = None
    consumers: dict[str, EventConsumer] = {}
    if settings.sms.enabled:
        sms = SmsService(port, wiring.guard, settings.sms, wiring.audit, wiring.clock.now, wiring.metrics)
        consumers["TextMessageReceived"] = sms
    ownership = Ownership(settings, service, wiring.store)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    # Before Asterisk sees this app: a live guard serving it is never silently replaced.
    claim = asyncio.create_task(ownership.claim_app(lambda text: log.info("%s", text)))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({claim, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not claim.done():
        claim.cancel()
        await wiring.store.close()
        return 0
    stopped.cancel()
    try:
        claim.result()
    except BaseException:
        await wiring.store.close()
        raise
    supervisor = AriSupervisor(settings, service, port, consumers, ownership)
    http, probe = await wiring.start_http(settings, supervisor.connected.is_set, service.active_calls)
    beats = asyncio.Event()
    tasks = [
        asyncio.create_task(supervisor.run(), name="ari"),
        asyncio.create_task(ownership.heartbeat(beats), name="registry"),
        asyncio.create_task(_stop_on(ownership.lost_app, stop), name="lost-app"),
        wiring.start_journal_replay(stop),
        probe,
        wiring.start_durability_check(settings),
    ]
    settle_heap()
    log.info("npv-guard started (app %r, redis %s)", settings.ari.app, settings.redis.where())
    await stop.wait()
    deadline = time.monotonic() + drain_s
    if ownership.others_alive():
        # Redundant guards: new calls go back to the failover include, which tries the next guard;
        # the calls in flight finish here, the bridged ones are handed over.
        log.info("stopping: new calls handed back, calls in flight handed over (at most %.0f s)", drain_s)
        service.handing_back = True
        ownership.state = "draining"
        await ownership.beat()
        await ownership.hand_over(deadline)
    else:
        log.info("stopping: no new calls, letting decisions in flight finish (at most %.0f s)", drain_s)
        service.draining = True
        await service.wait_idle_decisions(deadline)
    await supervisor.release_messages()
    supervisor.stopping.set()
    beats.set()
    await _cancel(tasks)
    await ownership.unregister()
    await stop_http(http)
    await service.close()
    if sms is not None:
        await sms.close()
    await wiring.store.close()
    log.info("stopped; bridged calls stay up in Asterisk and are adopted by the next start")
    return 0


async def run_agi(settings: Settings, *, drain_s: float = 10.0) -> int:
    wiring = Wiring.build(settings)
    context = AgiContext(wiring.guard, settings.calls, wiring.audit, wiring.clock.now, wiring.metrics)
    server = FastAgiServer(
        {"check": partial(agi_check, ctx=context), "refusal": partial(agi_refusal, ctx=context)},
        max_sessions=settings.agi.max_sessions,
        header_timeout=settings.agi.header_timeout_s,
        command_timeout=settings.agi.command_timeout_s,
        on_session=lambda outcome: wiring.metrics.agi_sessions.labels(outcome).inc(),
        path_secret=settings.agi.path_secret,
    )
    stop = asyncio.Event()
    install_signal_handlers(stop)
    listening = await server.start(settings.agi.host, settings.agi.port)
    http, probe = await wiring.start_http(settings, listening.is_serving, lambda: len(server.sessions))
    replay = wiring.start_journal_replay(stop)
    durability = wiring.start_durability_check(settings)
    settle_heap()
    log.info(
        "npv-guard FastAGI listening on %s:%d (redis %s)",
        settings.agi.host,
        settings.agi.port,
        settings.redis.where(),
    )
    await stop.wait()
    log.info("stopping: no new AGI sessions, letting open ones finish (at most %.0f s)", drain_s)
    await server.close(drain_s)
    await _cancel([replay, probe, durability])
    await stop_http(http)
    await wiring.store.close()
    log.info("stopped")
    return 0


async def run_api(settings: Settings, *, drain_s: float = 10.0) -> int:
    """The HTTP pre-check API: the same guard, journal, audit trail and clock as the call path."""
    if not settings.api_tokens:
        raise ConfigError(
            "professionals: no api_token_sha256 configured, the API would refuse every request "
            "(npv-guard api-token --professional ID mints one)"
        )
    wiring = Wiring.build(settings)
    health = Health(lambda: True, wiring.store.ping)
    context = ApiContext(
        guard=wiring.guard,
        tokens=TokenBook(settings.api_tokens),
        audit=wiring.audit,
        metrics=wiring.metrics,
        now=wiring.clock.now,
        health=health,
        openapi=document(),
        max_body_bytes=settings.api.max_body_bytes,
    )
    api = settings.api
    runner = GuardedRunner(
        build_app(context),
        Limits(api.header_timeout_s, api.body_timeout_s, api.idle_timeout_s, api.max_connections),
        access_log_class=SafeAccessLogger,
        access_log=logging.getLogger("npv_guard.api.access"),
        shutdown_timeout=drain_s,
    )
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await runner.setup()
    try:
        await start_site(runner, api.listen)
    except OSError:
        await runner.cleanup()
        await wiring.store.close()
        raise
    tasks = [
        wiring.start_journal_replay(stop),
        asyncio.create_task(health.probe_forever(), name="health"),
        wiring.start_durability_check(settings),
    ]
    settle_heap()
    log.info(
        "npv-guard API listening on http://%s (redis %s, tokens for %d professional(s))",
        settings.api.listen,
        settings.redis.where(),
        len(set(settings.api_tokens.values())),
    )
    await stop.wait()
    log.info("stopping: no new requests, letting requests in flight finish (at most %.0f s)", drain_s)
    await runner.cleanup()
    await _cancel(tasks)
    await wiring.store.close()
    log.info("stopped")
    return 0


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT start the drain of whichever server this process runs."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


async def _stop_on(event: asyncio.Event, stop: asyncio.Event) -> None:
    await event.wait()
    stop.set()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _warn_durability(settings: Settings) -> None:
    """Once at start: a Redis that does not keep what it is given loses refusals silently."""
    findings = await durability_of(settings.redis)
    for level, text in findings:
        if level != OK:
            log.warning("redis durability: %s (see docs/state.md)", text)


async def _replay_journal(guard: Guard, audit: AuditLog, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            if guard.journal is not None and guard.journal.has_pending():
                replayed = await guard.replay_journal(audit.replayed)
                if replayed:
                    log.info("replayed %d journaled refusal(s) into Redis", replayed)
        except Exception as error:  # a disk error must not end the replays for good
            log.error("journal replay failed (%s): retried in %.0f s", type(error).__name__, JOURNAL_REPLAY_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), JOURNAL_REPLAY_S)
