"""Redundant ARI guards on one Asterisk (docs/redundancy.md): the failover include, takeovers of
a dead guard's calls, the registry that refuses a second guard on a served app, rolling restarts.

Every guard serves its own app (npv-guard-a, npv-guard-b); the lab's dialer route sends a call to
the failover include when it carries "X-NPV-Lab-Guards: npv-guard-a&npv-guard-b".
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from npv_guard.core.numbering import parse
from npv_guard.store import ConsumerHasher
from tests.e2e.conftest import Scene
from tests.support.guard import LAB_SECRET, GuardProcess
from tests.support.lab import AsteriskLab, run_sipp
from tests.support.process import EXE

pytestmark = pytest.mark.e2e

APPS = ("npv-guard-a", "npv-guard-b")
GUARDS = "&".join(APPS)


def two_guards(scene: Scene, **options: Any) -> tuple[GuardProcess, GuardProcess]:
    a = scene.guard(app=APPS[0], **options)
    b = scene.guard(app=APPS[1], **options)
    return a, b


def refusals(scene: Scene, consumer: str) -> list[dict[str, Any]]:
    """The refusals stored in Redis for the pair (lab, consumer)."""
    digest = ConsumerHasher(LAB_SECRET).digest(parse(consumer).e164 or "")
    client = redis.Redis.from_url(scene.redis.url)
    try:
        return [json.loads(m) for m in client.zrange(f"{scene.prefix}:{{lab|{digest}}}:r", 0, -1)]
    finally:
        client.close()


def attempts(scene: Scene, consumer: str) -> int:
    digest = ConsumerHasher(LAB_SECRET).digest(parse(consumer).e164 or "")
    client = redis.Redis.from_url(scene.redis.url)
    try:
        return int(client.zcard(f"{scene.prefix}:{{lab|{digest}}}:a"))
    finally:
        client.close()


def test_the_failover_include_skips_a_dead_guard_and_fails_closed_without_any(scene: Scene) -> None:
    a, b = two_guards(scene)
    scene.consent(a)
    a.kill()
    uas = scene.uas()
    result = scene.call(guards=GUARDS)
    assert result.ok, result.describe()
    uas.stop()
    assert [d["verdict"] for d in b.audit("decision")] == ["allow"]
    assert a.audit("decision") == []
    b.kill()
    rejected = scene.reject(guards=GUARDS)  # no guard at all: 403, GUARD_UNAVAILABLE
    assert rejected.ok, rejected.describe()


def test_a_second_guard_on_a_served_app_is_refused_unless_standby(scene: Scene) -> None:
    a = scene.guard(app=APPS[0])
    intruder = GuardProcess(redis_url=scene.redis.url, carrier_port=scene.carrier_port, key_prefix=scene.prefix,
                            app=APPS[0], now=a.now)  # fmt: skip
    started = subprocess.run([EXE, "run"], env=intruder.env(), capture_output=True, text=True, timeout=30, check=False)
    assert started.returncode == 2, started.stderr
    assert "already served by a live guard" in started.stderr
    standby = GuardProcess(redis_url=scene.redis.url, carrier_port=scene.carrier_port, key_prefix=scene.prefix,
                           app=APPS[0], ari={"standby": True}, now=a.now)  # fmt: skip
    scene.guards.append(standby)
    standby.spawn("run", "waiting to see whether it is alive", 20)
    time.sleep(2)
    assert '"ARI connected' not in standby.log()
    a.kill()
    standby.wait_for_log('"ARI connected', timeout=20)
    doctor = standby.cli("doctor", "--mode", "ari")
    assert f"app '{APPS[0]}': connected" in doctor.stdout, doctor.stdout


def test_a_bridged_call_outlives_its_guard(scene: Scene, lab: AsteriskLab) -> None:
    a, b = two_guards(scene)
    scene.consent(a)
    # The consumer presses 9 well after the guard that bridged the call was killed.
    uas = scene.uas("uas_dtmf_info.xml", dtmf_delay_ms="7000", hold_ms="20000")
    holder: dict[str, Any] = {}
    dialer = threading.Thread(target=lambda: holder.update(r=scene.call(guards=GUARDS, hold_ms="12000")))
    dialer.start()
    owner = None
    deadline = time.monotonic() + 10
    while owner is None and time.monotonic() < deadline:
        owner = next((g for g in (a, b) if g.audit("bridged")), None)
        time.sleep(0.05)
    assert owner is not None
    survivor = b if owner is a else a
    owner.kill()
    survivor.wait_for_log("taken over from app", timeout=10)
    survivor.wait_audit("refusal", timeout=15)
    dialer.join(30)
    uas.stop()
    assert holder["r"].ok, holder["r"].describe()
    assert len(refusals(scene, "0612345678")) == 1
    assert [r["source"] for r in survivor.audit("refusal")] == ["consumer"]
    lab.wait_no_channels(timeout=15)


def test_sigterm_hands_new_calls_and_bridged_calls_over(scene: Scene, lab: AsteriskLab) -> None:
    a, b = two_guards(scene)
    scene.consent(a)
    uas = scene.uas("uas_dtmf_info.xml", dtmf_delay_ms="6000", hold_ms="20000")
    holder: dict[str, Any] = {}
    dialer = threading.Thread(target=lambda: holder.update(r=scene.call(guards=GUARDS, hold_ms="10000")))
    dialer.start()
    owner = None
    deadline = time.monotonic() + 10
    while owner is None and time.monotonic() < deadline:
        owner = next((g for g in (a, b) if g.audit("bridged")), None)
        time.sleep(0.05)
    assert owner is not None
    survivor = b if owner is a else a
    assert owner.stop() == 0
    assert "handed 1 call(s) over; 0 left" in owner.log()
    survivor.wait_audit("refusal", timeout=15)
    dialer.join(30)
    uas.stop()
    assert holder["r"].ok, holder["r"].describe()
    assert len(refusals(scene, "0612345678")) == 1
    assert owner.audit("refusal") == []
    lab.wait_no_channels(timeout=15)


def test_two_guards_under_load_through_kill_restart_and_sigterm(scene: Scene, lab: AsteriskLab) -> None:
    """20 calls/s for 60 s; t=20 s guard A SIGKILLed, t=35 s restarted, t=45 s guard B SIGTERMed
    and restarted. Half of the numbers have a consent (bridged; the consumer presses 9 after
    2.5 s: a refusal, later than a takeover with a 1 s lease), half none (403)."""
    rate, seconds = 20, 60
    total = rate * seconds
    a, b = two_guards(scene, ari={"guard_lease_s": 1})
    numbers = [f"06{20000000 + i:08d}" for i in range(total)]
    allowed = set(numbers[::2])
    consents = Path(a.dir) / "consents.csv"
    consents.write_text("".join(f"{n},2026-09-01,consent,ha\n" for n in sorted(allowed)))
    assert a.cli("consent", "import", "--professional", "lab", str(consents)).returncode == 0
    inject = Path(a.dir) / "numbers.csv"
    inject.write_text("SEQUENTIAL\n" + "".join(f"{n}\n" for n in numbers))
    uas = scene.uas("uas_dtmf_info.xml", calls=len(allowed), timeout_s=seconds + 60, dtmf_delay_ms="2500")
    holder: dict[str, Any] = {}

    def dial() -> None:
        holder["r"] = run_sipp(
            "uac_ha.xml",
            service="x",
            calls=total,
            rate=rate,
            variables={"guards": GUARDS, "caller": "0162000001", "hold_ms": "3200"},
            timeout_s=seconds + 50,
            extra_args=["-inf", str(inject), "-l", "400"],
        )

    dialer = threading.Thread(target=dial)
    started = time.monotonic()
    dialer.start()
    events: list[tuple[int, Any]] = [(20, a.kill), (35, a.start), (45, b.stop), (46, b.start)]
    for at, action in events:
        time.sleep(max(0.0, started + at - time.monotonic()))
        action()
    dialer.join(seconds + 70)
    uas.stop()
    result = holder["r"]
    outcomes: dict[str, str] = {}
    for line in result.log_trace.splitlines():
        if "NPV_HA_RESULT" in line:
            number, code = line.split("NPV_HA_RESULT", 1)[1].split()[:2]
            outcomes[number] = code
    wrong = {n: c for n, c in outcomes.items() if c != ("200" if n in allowed else "403")}
    missing = [n for n in numbers if n not in outcomes]
    assert result.failed == 0 and missing == [], result.describe()
    assert wrong == {}, wrong
    lab.wait_no_channels(timeout=30, hangup_leftovers=False)
    lost = [n for n in sorted(allowed) if len(refusals(scene, n)) != 1]
    assert lost == [], lost[:20]
    assert max(attempts(scene, n) for n in numbers) <= 4
    assert all(attempts(scene, n) == 1 for n in allowed)
