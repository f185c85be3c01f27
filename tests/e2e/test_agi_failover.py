"""FastAGI redundancy in the real lab: npv-guard-agi.conf's check tries the servers listed in
NPV_GUARD_AGI (HOST:PORT&HOST:PORT) until one gives a verdict, and fails closed when none does.
Two `npv-guard agi` processes share one Redis; sipp places the calls from 127.0.0.3."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import NPV, Scene
from tests.support.guard import GuardProcess
from tests.support.lab import DIALER_AGI_IP, AsteriskLab, run_sipp
from tests.support.redis_servers import RedisServer, free_tcp_port

pytestmark = pytest.mark.e2e

RATE = 20
SECONDS = 60
REPEATED = 20  # consumers dialled five times: the fifth must be FREQUENCY_CAP


def set_agi_servers(lab: AsteriskLab, servers: list[int], *, spread: bool = False) -> None:
    lab.rx("dialplan set global NPV_GUARD_AGI " + "&".join(f"127.0.0.1:{port}" for port in servers))
    lab.rx(f"dialplan set global NPV_GUARD_AGI_SPREAD {'1' if spread else '0'}")


@pytest.fixture
def failover_scene(lab: AsteriskLab, redis_server: RedisServer) -> Iterator[Scene]:
    scene = Scene(lab, redis_server, "agi")
    yield scene
    for guard in scene.guards:
        guard.stop()
    set_agi_servers(lab, [4573])
    lab.rx("dialplan set global NPV_GUARD_AGI_SPREAD 0")
    lab.wait_no_channels(timeout=30)
    assert lab.trap_hits(scene.log_mark) == []


def unavailable(lab: AsteriskLab, since: int) -> int:
    """Calls the include failed closed for want of a guard (its WARNING line, not the trace of it)."""
    return len(re.findall(r"\] WARNING\[.*: guard unavailable", lab.log_text(since)))


def test_the_next_server_decides_when_the_first_is_down_and_none_fails_closed(failover_scene: Scene) -> None:
    scene, lab = failover_scene, failover_scene.lab
    down = free_tcp_port()
    guard = scene.guard(agi_port=free_tcp_port())
    scene.consent(guard)
    set_agi_servers(lab, [down, guard_port(guard)])
    uas = scene.uas()
    assert scene.call(hold_ms="200").ok
    assert uas.wait(30).ok
    assert guard.wait_audit("decision")[0]["verdict"] == "allow"
    assert unavailable(lab, scene.log_mark) == 0
    set_agi_servers(lab, [down, free_tcp_port()])
    mark = lab.log_mark()
    assert scene.reject(403).ok
    assert unavailable(lab, mark) == 1
    assert len(guard.audit("decision")) == 1


def test_the_agents_refusal_reaches_the_next_server_when_the_first_is_down(failover_scene: Scene) -> None:
    """features.conf's *9 runs the include's refusal subroutine over the same list of servers."""
    scene, lab = failover_scene, failover_scene.lab
    down = free_tcp_port()
    guard = scene.guard(agi_port=free_tcp_port())
    scene.consent(guard)
    set_agi_servers(lab, [down, guard_port(guard)])
    uas = scene.uas(hold_ms="20000")
    uac = scene.call("uac_dtmf_info.xml", hold_ms="2500")
    assert uac.ok, uac.describe()
    assert uas.wait(30).ok
    refusal = guard.wait_audit("refusal")[0]
    assert refusal["recorded"] is True and refusal["source"] == "agent"
    assert scene.reject(403).ok
    assert guard.wait_audit("decision", 2)[-1]["reasons"] == ["REFUSAL_BLOCK", "CONSENT_WITHDRAWN"]


def guard_port(guard: GuardProcess) -> int:
    return int(next(line for line in guard.config.read_text().splitlines() if line.startswith("port = ")).split()[-1])


def _plan(workdir: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(consumer, expected final response) per call in order, and the consumers with consent."""
    calls: list[tuple[str, int]] = []
    consented: list[str] = []
    repeated = [f"06{30000000 + n:08d}" for n in range(REPEATED)]
    consented += repeated
    total = RATE * SECONDS
    for index in range(total):
        slot = index % 50
        if slot < REPEATED and index // 50 < 5:
            # The same consumer every 50 calls (2.5 s apart): four calls, then the cap.
            calls.append((repeated[slot], 200 if index // 50 < 4 else 403))
        elif index % 10 == 7:
            calls.append((f"06{31000000 + index:08d}", 403))  # no consent
        else:
            number = f"06{32000000 + index:08d}"
            consented.append(number)
            calls.append((number, 200))
    return calls, consented


def test_agi_failover_under_load_kill_restart_and_rolling_restart(failover_scene: Scene) -> None:
    """20 calls/s for 60 s through two agi servers (each call starts at a random one): SIGKILL one
    at t=20 s, restart it at t=35 s, SIGTERM the other at t=45 s and restart it. Every call gets
    the verdict its line expects; none is failed for want of a guard; no pair above 4 attempts."""
    scene, lab = failover_scene, failover_scene.lab
    first = scene.guard(agi_port=free_tcp_port())
    second = scene.guard(agi_port=free_tcp_port())
    for guard in (first, second):  # the production log level: the debug lines cost CPU at 20/s
        guard.config.write_text(guard.config.read_text().replace('level = "debug"', 'level = "info"'))
    first.stop(), second.stop()
    first.start(), second.start()
    calls, consented = _plan(first.dir)
    consents = first.dir / "consents.csv"
    consents.write_text("".join(f"{n},2026-09-01,consent,failover\n" for n in consented))
    imported = first.cli("consent", "import", "--professional", "lab", str(consents))
    assert imported.returncode == 0, imported.stderr
    injection = first.dir / "calls.csv"
    injection.write_text("SEQUENTIAL\n" + "".join(f"{number};{code};\n" for number, code in calls))
    set_agi_servers(lab, [guard_port(first), guard_port(second)], spread=True)
    allowed = sum(code == 200 for _, code in calls)
    uas = scene.uas(calls=allowed, timeout_s=SECONDS + 60, hold_ms="20000")
    mark = lab.log_mark()
    faults: list[tuple[float, str]] = []
    started = time.monotonic()

    def at(second_mark: float) -> None:
        time.sleep(max(0.0, started + second_mark - time.monotonic()))

    def inject() -> None:
        at(20)
        first.kill()
        faults.append((time.monotonic() - started, "SIGKILL first"))
        at(35)
        first.start()
        faults.append((time.monotonic() - started, "first restarted"))
        at(45)
        faults.append((time.monotonic() - started, "SIGTERM second"))
        assert second.stop() == 0
        second.start()
        faults.append((time.monotonic() - started, "second restarted"))

    injector = threading.Thread(target=inject)
    injector.start()
    uac = run_sipp(
        "uac_verdicts.xml",
        local_ip=DIALER_AGI_IP,
        calls=len(calls),
        rate=RATE,
        variables={"caller": NPV, "hold_ms": "300", "carrier_port": str(scene.carrier_port)},
        timeout_s=SECONDS + 40,
        extra_args=("-inf", str(injection), "-l", str(RATE * 5)),
    )
    injector.join(60)
    uas.stop() if uas.running() else uas.wait(30)
    assert [name for _, name in faults] == ["SIGKILL first", "first restarted", "SIGTERM second", "second restarted"]
    assert uac.failed == 0 and uac.successful == len(calls), uac.errors()[-3000:]
    assert unavailable(lab, mark) == 0  # no call failed for want of a guard
    decisions = first.audit("decision") + second.audit("decision")
    assert len(decisions) >= len(calls)
    assert {guard for guard, count in _share(first, second).items() if count} == {"first", "second"}
    over = {key: count for key, count in _attempts(scene).items() if count > 4}
    assert over == {}
    assert sorted(_attempts(scene).values()).count(4) >= REPEATED
    lab.wait_no_channels(timeout=30)


def _share(first: GuardProcess, second: GuardProcess) -> dict[str, int]:
    return {"first": len(first.audit("decision")), "second": len(second.audit("decision"))}


def _attempts(scene: Scene) -> dict[str, int]:
    keys = scene.redis.cli("--scan", "--pattern", f"{scene.prefix}:*:a").split()
    return {key: int(scene.redis.cli("ZCARD", key)) for key in keys}
