"""Soak under faults: real calls through the lab while Redis, the guard, Asterisk and the ARI
websocket are killed and brought back. Afterwards Redis and the audit trail must prove that
every refusal sent was recorded exactly once, that no call reached the consumer without an
ALLOW decision, and that no channel was left in Asterisk.

Short by default (CI); NPV_GUARD_SOAK_CALLS=300 makes the long run (faults repeat every 25 calls).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from npv_guard.core.numbering import parse
from npv_guard.store import ConsumerHasher
from tests.e2e.conftest import Scene
from tests.support.guard import LAB_SECRET, GuardProcess
from tests.support.lab import AsteriskLab, SippResult
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.e2e

CALLS = int(os.environ.get("NPV_GUARD_SOAK_CALLS", "30"))
FAULT_PERIOD = 25 if CALLS > 30 else 6
FAULTS = ["ari_websocket_drop", "redis_kill", "guard_kill", "asterisk_restart", "redis_down_during_refusal"]


@dataclass
class Placed:
    index: int
    consumer: str
    refusal: bool
    reached_consumer: bool = False
    bridged: bool = False
    refusal_sent: bool = False
    final: int | None = None


@dataclass
class Soak:
    scene: Scene
    redis: RedisServer
    guard: GuardProcess
    placed: list[Placed] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)

    def consumer(self, index: int) -> str:
        return f"06{20000000 + index:08d}"

    def place(self, index: int) -> Placed:
        call = Placed(index, self.consumer(index), refusal=index % 3 == 0)
        uas = self.scene.uas(hold_ms="20000")
        if call.refusal:
            uac = self.scene.call("uac_dtmf_info.xml", callee=call.consumer, hold_ms="1500")
        else:
            uac = self.scene.call(callee=call.consumer, hold_ms="300")
        carrier = uas.stop() if uas.running() else uas.wait(30)
        self._note(call, uac, carrier)
        self.placed.append(call)
        return call

    @staticmethod
    def _note(call: Placed, uac: SippResult, carrier: SippResult) -> None:
        call.final = uac.final_status()
        call.reached_consumer = bool(carrier.received("INVITE"))
        call.bridged = call.final == 200
        # Asterisk answered both INFO digits while the call was bridged.
        call.refusal_sent = call.refusal and call.bridged and len(uac.received(200)) >= 3

    def wait_ari_connections(self, count: int, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.guard.log().count('"ARI connected') >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"guard did not reconnect to ARI:\n{self.guard.log()[-2000:]}")

    def inject(self, fault: str, index: int) -> None:
        self.faults.append(fault)
        connections = self.guard.log().count('"ARI connected')
        if fault == "ari_websocket_drop":
            subprocess.run(
                ["ss", "-K", "-t", "dst", "127.0.0.1", "dport", "=", "8088"], check=True, capture_output=True
            )
            self.wait_ari_connections(connections + 1)
        elif fault == "redis_kill":
            self.redis.kill()  # SIGKILL: the append-only file has every acknowledged write
            self.place(index * 1000)  # a call while Redis is gone: must be rejected
            self.redis.start()
        elif fault == "guard_kill":
            self.guard.kill()
            self.guard.start()  # same journal, same audit file
        elif fault == "asterisk_restart":
            self.scene.lab.restart()
            self.wait_ari_connections(connections + 1)
        elif fault == "redis_down_during_refusal":
            self._refusal_while_redis_goes_down(index)

    def _refusal_while_redis_goes_down(self, index: int) -> None:
        call = Placed(index * 1000 + 1, self.consumer(index * 1000 + 1), refusal=True)
        uas = self.scene.uas(hold_ms="20000")
        outcome: list[SippResult] = []
        caller = threading.Thread(
            target=lambda: outcome.append(self.scene.call("uac_dtmf_info.xml", callee=call.consumer, hold_ms="3000"))
        )
        bridged_before = len(self.guard.audit("bridged"))
        caller.start()
        self.guard.wait_audit("bridged", bridged_before + 1, timeout=20)
        self.redis.stop()
        caller.join(40)
        carrier = uas.stop() if uas.running() else uas.wait(30)
        self._note(call, outcome[0], carrier)
        self.placed.append(call)
        self.redis.start()
        self.guard.wait_for_log("journaled refusal(s) into Redis", timeout=20)


def test_soak_under_faults(scene: Scene, lab: AsteriskLab, capsys: pytest.CaptureFixture[str]) -> None:
    redis = RedisServer(appendonly=True).start()
    try:
        guard = scene.guard(redis_url=redis.url)
        soak = Soak(scene, redis, guard)
        consents = Path(guard.dir) / "consents.csv"
        numbers = [soak.consumer(i) for i in range(CALLS)] + [
            soak.consumer(i * 1000 + k) for i in range(CALLS + 1) for k in (0, 1)
        ]
        consents.write_text("".join(f"{n},2026-09-01,consent,soak\n" for n in numbers))
        assert guard.cli("consent", "import", "--professional", "lab", str(consents)).returncode == 0
        started = time.monotonic()
        for index in range(1, CALLS + 1):
            soak.place(index)
            if index % FAULT_PERIOD == 0:
                soak.inject(FAULTS[(index // FAULT_PERIOD - 1) % len(FAULTS)], index)
        lab.wait_no_channels(timeout=30, hangup_leftovers=False)
        summary = _verify(soak, time.monotonic() - started)
        with capsys.disabled():
            print(f"\nsoak summary: {json.dumps(summary)}")
    finally:
        redis.cleanup()


def _verify(soak: Soak, seconds: float) -> dict[str, object]:
    guard = soak.guard
    digest = ConsumerHasher(LAB_SECRET).digest
    allowed = {line["consumer"] for line in guard.audit("decision") if line["verdict"] == "allow"}
    leaked = [c for c in soak.placed if c.reached_consumer and digest(parse(c.consumer).e164 or "") not in allowed]
    sent = [c for c in soak.placed if c.refusal_sent]
    recorded: dict[str, int] = {}
    for call in soak.placed:
        history = json.loads(guard.cli("history", "--professional", "lab", "--callee", call.consumer, "--json").stdout)
        recorded[call.consumer] = len(history["refusals"])
    duplicated = [c for c in soak.placed if recorded[c.consumer] > 1]
    lost = [c for c in sent if recorded[c.consumer] != 1]
    phantom = [c for c in soak.placed if recorded[c.consumer] and not c.refusal]
    summary = {
        "calls_placed": len(soak.placed),
        "calls_bridged": sum(c.bridged for c in soak.placed),
        "calls_rejected": sum(not c.bridged for c in soak.placed),
        "faults_injected": soak.faults,
        "refusals_sent": len(sent),
        "refusals_recorded": sum(recorded[c.consumer] for c in sent),
        "refusals_lost": len(lost),
        "refusals_duplicated": len(duplicated),
        "calls_leaked": len(leaked),
        "channels_left": soak.scene.lab.channel_count(),
        "seconds": round(seconds, 1),
    }
    assert summary["channels_left"] == 0
    assert leaked == [], leaked
    assert lost == [] and duplicated == [] and phantom == [], (lost, duplicated, phantom)
    assert len(sent) >= CALLS // 4, summary  # the faults must not have turned the soak into no test
    assert len(soak.faults) >= len(FAULTS) or FAULT_PERIOD * len(FAULTS) > CALLS
    return summary
