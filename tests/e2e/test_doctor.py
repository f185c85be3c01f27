"""`npv-guard doctor` against the real lab: it reads what only Asterisk can tell (over AMI)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lab import AsteriskLab
from tests.support.redis_servers import RedisServer, free_tcp_port

pytestmark = pytest.mark.e2e

EXE = str(Path(sys.executable).parent / "npv-guard")
CONFIG = Path(__file__).resolve().parents[1] / "lab" / "guard.toml"


@pytest.fixture
def lab_up(lab: AsteriskLab) -> Iterator[AsteriskLab]:
    yield lab
    lab.rx("dialplan reload")


def doctor(redis_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    env.update({"NPV_GUARD_REDIS_URL": redis_url, "NPV_GUARD_JOURNAL_PATH": "/tmp/npv-doctor-test/journal", **extra})
    return subprocess.run(
        [EXE, "doctor", "--config", str(CONFIG), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_healthy_lab(lab_up: AsteriskLab, redis_server: RedisServer) -> None:
    result = doctor(redis_server.url)
    assert result.returncode == 0, result.stdout
    for expected in (
        "context npv-guard-ari is loaded",
        "context npv-guard-agi is loaded",
        "npvguard-refusal is defined",
    ):
        assert expected in result.stdout
    assert "[FAIL]" not in result.stdout


def test_redis_down_is_a_failure(lab_up: AsteriskLab) -> None:
    result = doctor(f"redis://127.0.0.1:{free_tcp_port()}/0")
    assert result.returncode == 1
    assert "[FAIL] redis" in result.stdout and "STATE_UNAVAILABLE" in result.stdout


def test_missing_agi_include_is_a_failure_in_agi_mode(lab_up: AsteriskLab, redis_server: RedisServer) -> None:
    lab_up.rx("dialplan remove extension check@npv-guard-agi")
    result = doctor(redis_server.url, "--mode", "agi")
    assert result.returncode == 1
    assert "context npv-guard-agi is not loaded" in result.stdout
    assert doctor(redis_server.url, "--mode", "ari").returncode == 0  # the ARI route is still complete


def test_sms_endpoints_must_route_messages_to_the_guard_only(lab_up: AsteriskLab, redis_server: RedisServer) -> None:
    healthy = doctor(redis_server.url)
    assert "endpoint platform: messages go to the guard only" in healthy.stdout
    assert "endpoint carrier: messages go to the guard only" in healthy.stdout
    lab_up.rx("dialplan add extension _X.,1,NoOp(stray) into npv-guard-sms")  # would route them around the guard
    routed = doctor(redis_server.url)
    assert routed.returncode == 1 and "message context npv-guard-sms has extensions (_X.)" in routed.stdout
    lab_up.rx("dialplan reload")
    missing = doctor(redis_server.url, env={"NPV_GUARD_SMS_PLATFORM_ENDPOINT": "PJSIP/no-such-platform"})
    assert missing.returncode == 1 and "endpoint no-such-platform is not in pjsip.conf" in missing.stdout
