"""/healthz, /metrics, logs and audit of a real guard in the call path: ready only when ARI and
Redis are usable, decisions counted, and no secret or consumer number anywhere."""

from __future__ import annotations

import socket
import time

import pytest

from tests.e2e.conftest import CONSUMER, Scene
from tests.support.guard import LAB_SECRET, GuardProcess
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.e2e


def wait_health(guard: GuardProcess, status: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = guard.http("/healthz")
        if code == status:
            return body
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered {status}: {guard.http('/healthz')}")


def test_health_follows_redis_and_metrics_count_decisions(scene: Scene) -> None:
    own = RedisServer().start()
    try:
        guard = scene.guard(redis_url=own.url)
        scene.consent(guard)
        assert '"ready": true' in wait_health(guard, 200)
        uas = scene.uas()
        assert scene.call(hold_ms="300").ok
        assert uas.wait(30).ok
        assert scene.reject(403, caller="0612345670").ok
        _, metrics = guard.http("/metrics")
        # One sample per decision, whatever the number of reasons; the reasons on their own counter.
        assert 'npv_guard_decisions_total{mode="ari",verdict="allow"} 1.0' in metrics
        assert 'npv_guard_decisions_total{mode="ari",verdict="reject"} 1.0' in metrics
        assert 'npv_guard_decision_reasons_total{mode="ari",reason="CALLER_NOT_NPV"} 1.0' in metrics
        assert "npv_guard_ari_connected 1.0" in metrics
        assert "npv_guard_decision_seconds_bucket" in metrics
        own.stop()
        assert '"redis": false' in wait_health(guard, 503)
        own.start()
        wait_health(guard, 200)
    finally:
        own.cleanup()


def test_no_secret_and_no_consumer_number_leaks(scene: Scene) -> None:
    guard = scene.guard(redis_url=scene.redis.url)
    scene.consent(guard)
    uas = scene.uas(hold_ms="20000")
    assert scene.call("uac_dtmf_info.xml", hold_ms="1500").ok
    assert uas.wait(30).ok
    guard.wait_audit("refusal")
    _, metrics = guard.http("/metrics")
    # HTTP that aiohttp's parser refuses, carrying the number: its answer and log line too.
    with socket.create_connection(("127.0.0.1", guard.http_port), timeout=10) as sock:
        sock.sendall(f"GET /metrics?callee={CONSUMER} HTTP/1.1\r\nX-Callee {CONSUMER}\r\n\r\n".encode())
        malformed = sock.recv(65536).decode(errors="replace")
    assert malformed.startswith("HTTP/1.") and "application/json" in malformed
    texts = {"log": guard.log(), "audit": guard.audit_path.read_text(), "metrics": metrics, "malformed": malformed}
    national = CONSUMER[1:]  # 612345678, in any spelling
    for name, text in texts.items():
        assert LAB_SECRET not in text, name
        assert "npvguard-lab" not in text, name  # the ARI password
        assert national not in text, name
    # Every log line about the call names it.
    decision_lines = [line for line in guard.log().splitlines() if '"decision ' in line]
    assert decision_lines and all('"call_id": "' in line for line in decision_lines)


def test_agi_health(agi_scene: Scene) -> None:
    guard = agi_scene.guard()
    assert '"call_path": true' in wait_health(guard, 200)
