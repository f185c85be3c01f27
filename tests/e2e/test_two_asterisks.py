"""Several Asterisks, one state: the lab's two Asterisk instances (instance 1 on the lab's fixed
ports, instance 2 on SIP 5160 / ARI 8188 / AGI 4583, same root), each with its own guard, share
one Redis (a single server, then the suite's 3-master Cluster). A consumer dialled through both
PBXes gets exactly 4 attempts; a refusal taken on one PBX blocks the next call on the other."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import CONSENT_COLLECTED, NPV, TUESDAY
from tests.support.guard import GuardProcess
from tests.support.lab import (
    AGI_PORT_2,
    DIALER_AGI_IP,
    DIALER_IP,
    AsteriskLab,
    SippResult,
    ensure_lab_root,
    free_udp_port,
    run_sipp,
)
from tests.support.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def labs() -> Iterator[tuple[AsteriskLab, AsteriskLab]]:
    ensure_lab_root()
    first, second = AsteriskLab(), AsteriskLab(2)
    first.start()
    try:
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()


@dataclass
class Pbx:
    """One Asterisk with its guard; calls go to its SIP port, the consumer answers on `carrier_port`."""

    name: str
    lab: AsteriskLab
    guard: GuardProcess
    carrier_port: int

    def call(self, callee: str, code: int, scenario: str | None = None, hold_ms: str = "300") -> SippResult:
        uas = run_sipp("uas_answer.xml", local_port=self.carrier_port, variables={"hold_ms": "20000"}, background=True)
        variables = {"caller": NPV, "carrier_port": str(self.carrier_port)}
        if code == 200:
            result = run_sipp(
                scenario or "uac.xml",
                target=self.lab.sip_target,
                local_ip=self._dialer(),
                service=callee,
                variables={**variables, "hold_ms": hold_ms},
                timeout_s=30,
            )
            carrier = uas.wait(30)
            assert result.ok and carrier.ok, f"{self.name}: {result.describe()}"
        else:
            result = run_sipp(
                "uac_reject.xml",
                target=self.lab.sip_target,
                local_ip=self._dialer(),
                service=callee,
                variables={**variables, "expect_code": str(code)},
                timeout_s=30,
            )
            carrier = uas.stop()
            assert result.ok, f"{self.name}: {result.describe()}"
            assert carrier.received("INVITE") == [], f"{self.name}: a rejected call reached the consumer"
        return result

    def _dialer(self) -> str:
        return DIALER_AGI_IP if self.guard.mode == "agi" else DIALER_IP

    def last_reasons(self) -> list[str]:
        reasons: list[str] = self.guard.audit("decision")[-1]["reasons"]
        return reasons


STATES = ["redis", "cluster"]


@pytest.fixture(params=[(state, mode) for state in STATES for mode in ("ari", "agi")], ids="-".join)
def pbxes(
    request: pytest.FixtureRequest, labs: tuple[AsteriskLab, AsteriskLab], redis_server: RedisServer
) -> Iterator[tuple[Pbx, Pbx]]:
    """PBX 1 with an ARI guard; PBX 2 with an ARI or a FastAGI guard; one state."""
    state, second_mode = request.param
    redis: dict[str, Any] = {}
    url = redis_server.url
    if state == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        url, redis = cluster.url, {"cluster": True}
    prefix = "two" + uuid.uuid4().hex[:8]
    guards: list[Pbx] = []
    try:
        for lab, mode in zip(labs, ("ari", second_mode), strict=True):
            carrier_port = free_udp_port()
            guard = GuardProcess(
                redis_url=url,
                carrier_port=carrier_port,
                key_prefix=prefix,
                now=TUESDAY,
                mode=mode,
                ari={"url": lab.ari_url},
                redis=redis,
                agi_port=AGI_PORT_2,  # used by PBX 2's FastAGI guard only
            )
            pbx = Pbx(f"PBX {lab.instance} ({mode})", lab, guard, carrier_port)
            guards.append(pbx)  # before start: a second guard that fails to start stops the first
            guard.start()
        marks = [lab.log_mark() for lab in labs]
        yield guards[0], guards[1]
    finally:
        for pbx in guards:
            pbx.guard.stop()
    for lab, mark in zip(labs, marks, strict=True):
        lab.wait_no_channels(timeout=15)
        assert lab.trap_hits(mark) == []


def consent(pbx: Pbx, callee: str) -> None:
    result = pbx.guard.cli("consent", "grant", "--professional", "lab", "--callee", callee, "--at", CONSENT_COLLECTED)
    assert result.returncode == 0, result.stderr


def history(pbx: Pbx, callee: str) -> dict[str, Any]:
    result = pbx.guard.cli("history", "--professional", "lab", "--callee", callee, "--json")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def test_four_attempts_in_all_across_two_pbxes(pbxes: tuple[Pbx, Pbx]) -> None:
    one, two = pbxes
    consumer = "0612340001"
    consent(one, consumer)
    for pbx in (one, two, one, two):
        pbx.call(consumer, 200)
    one.call(consumer, 403)
    assert one.last_reasons() == ["FREQUENCY_CAP"]
    two.call(consumer, 403)
    assert two.last_reasons() == ["FREQUENCY_CAP"]
    assert len(history(two, consumer)["attempts"]) == 4
    assert [line["verdict"] for line in one.guard.audit("decision")] == ["allow", "allow", "reject"]
    assert [line["verdict"] for line in two.guard.audit("decision")] == ["allow", "allow", "reject"]


@pytest.mark.parametrize("refused_on", [0, 1])
def test_a_refusal_on_one_pbx_blocks_the_next_call_on_the_other(pbxes: tuple[Pbx, Pbx], refused_on: int) -> None:
    where, other = pbxes[refused_on], pbxes[1 - refused_on]
    consumer = f"061234010{refused_on}"
    consent(where, consumer)
    where.call(consumer, 200, scenario="uac_dtmf_info.xml", hold_ms="2000")  # the agent's *9 by SIP INFO
    refusal = where.guard.wait_audit("refusal")[0]
    assert refusal["recorded"] is True and refusal.get("journaled") is not True
    other.call(consumer, 403)
    assert other.last_reasons() == ["REFUSAL_BLOCK", "CONSENT_WITHDRAWN"]
    assert len(history(other, consumer)["refusals"]) == 1
