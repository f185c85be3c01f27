"""`npv-guard run`: the ARI guard process, wired from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from npv_guard.ari.app import AriSupervisor, install_signal_handlers
from npv_guard.ari.calls import CallService
from npv_guard.ari.port import NoAri
from npv_guard.audit import AuditLog
from npv_guard.clock import Clock
from npv_guard.config import Settings
from npv_guard.journal import RefusalJournal
from npv_guard.service import Guard
from npv_guard.store import ConsumerHasher, Store

log = logging.getLogger("npv_guard")

JOURNAL_REPLAY_S = 1.0


async def run_ari(settings: Settings, *, drain_s: float = 10.0) -> int:
    clock = Clock(settings.now)
    if clock.replay:
        log.warning("REPLAY CLOCK: NPV_GUARD_NOW=%s, the guard's time is NOT the real time", settings.now)
    hasher = ConsumerHasher(settings.require_hash_secret(), settings.previous_hash_secrets)
    store = Store.connect(
        settings.redis.url,
        hasher,
        cluster=settings.redis.cluster,
        prefix=settings.redis.key_prefix,
        timeout=settings.redis.timeout_ms / 1000,
    )
    journal = RefusalJournal(settings.journal_path)
    guard = Guard(settings.policy(), store, journal)
    audit = AuditLog.open(settings.log.audit_file)
    service = CallService(NoAri(), guard, settings.ari, audit, clock.now)
    supervisor = AriSupervisor(settings, service)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    tasks = [
        asyncio.create_task(supervisor.run(), name="ari"),
        asyncio.create_task(_replay_journal(guard, stop), name="journal"),
    ]
    log.info("npv-guard started (app %r, redis %s)", settings.ari.app, _safe_url(settings.redis.url))
    await stop.wait()
    log.info("stopping: no new calls, letting decisions in flight finish (at most %.0f s)", drain_s)
    service.draining = True
    await service.wait_idle_decisions(time.monotonic() + drain_s)
    supervisor.stopping.set()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await service.close()
    await store.close()
    log.info("stopped; bridged calls stay up in Asterisk and are adopted by the next start")
    return 0


async def _replay_journal(guard: Guard, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if guard.journal is not None and len(guard.journal):
            replayed = await guard.replay_journal()
            if replayed:
                log.info("replayed %d journaled refusal(s) into Redis", replayed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), JOURNAL_REPLAY_S)


def _safe_url(url: str) -> str:
    """The Redis URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
