"""The e2e world: the lab Asterisk (one per module), a guard process per test, sipp calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.guard import GuardProcess
from tests.support.lab import (
    DIALER_AGI_IP,
    DIALER_IP,
    AsteriskLab,
    SippResult,
    ensure_lab_root,
    free_udp_port,
    run_sipp,
)
from tests.support.redis_servers import RedisServer

TUESDAY = "2026-12-01T10:30:00"  # Europe/Paris, within the hours, after opt-in
NPV = "0162000001"
CONSUMER = "0612345678"
CONSENT_COLLECTED = "2026-09-01T12:00"  # after opt-in, less than a year before TUESDAY


@pytest.fixture(scope="module")
def lab() -> Iterator[AsteriskLab]:
    ensure_lab_root()
    asterisk = AsteriskLab()
    asterisk.start()
    yield asterisk
    asterisk.stop()


class Scene:
    """One test's world: a guard, its carrier port, helpers to place calls.

    In ARI mode the dialer calls from 127.0.0.1 and the guard dials this test's consumer UAS; in
    AGI mode it calls from 127.0.0.3, the lab's "admin route" whose own Dial() reaches that UAS.
    """

    def __init__(self, lab: AsteriskLab, redis: RedisServer, mode: str = "ari") -> None:
        self.mode = mode
        self.lab = lab
        self.redis = redis
        self.carrier_port = free_udp_port()
        self.prefix = "e2e" + uuid.uuid4().hex[:8]
        self.guards: list[GuardProcess] = []
        self.log_mark = lab.log_mark()

    def guard(self, now: str | None = TUESDAY, **options: Any) -> GuardProcess:
        guard = GuardProcess(
            redis_url=options.pop("redis_url", self.redis.url),
            carrier_port=self.carrier_port,
            key_prefix=self.prefix,
            now=now,
            mode=options.pop("mode", self.mode),
            **options,
        )
        self.guards.append(guard)
        return guard.start()

    def consent(self, guard: GuardProcess, callee: str = CONSUMER, basis: str = "consent") -> None:
        # Collected on 1 Sept 2026, or at the guard's clock when it replays an earlier day: a grant is
        # never dated after the guard's clock (docs/rules.md, "When a fact is dated").
        collected = [] if guard.now and guard.now < CONSENT_COLLECTED else ["--at", CONSENT_COLLECTED]
        result = guard.cli("consent", "grant", "--professional", "lab", "--callee", callee,
                           *collected, "--basis", basis, "--proof", "e2e form")  # fmt: skip
        assert result.returncode == 0, result.stderr

    def uas(self, scenario: str = "uas_answer.xml", calls: int = 1, timeout_s: float = 30, **variables: str) -> Any:
        return run_sipp(
            scenario,
            local_port=self.carrier_port,
            calls=calls,
            variables=variables,
            timeout_s=timeout_s,
            background=True,
        )

    def call(
        self, scenario: str = "uac.xml", callee: str = CONSUMER, caller: str = NPV, calls: int = 1, **variables: str
    ) -> SippResult:
        local_ip = DIALER_AGI_IP if self.mode == "agi" else DIALER_IP
        if self.mode == "agi":
            variables.setdefault("carrier_port", str(self.carrier_port))
        return run_sipp(
            scenario,
            local_ip=local_ip,
            service=callee,
            calls=calls,
            variables={"caller": caller, **variables},
            timeout_s=30,
        )

    def reject(self, expect_code: int = 403, **kwargs: Any) -> SippResult:
        return self.call("uac_reject.xml", expect_code=str(expect_code), **kwargs)


@pytest.fixture
def scene(lab: AsteriskLab, redis_server: RedisServer) -> Iterator[Scene]:
    yield from _world(Scene(lab, redis_server))


@pytest.fixture
def scenes(lab: AsteriskLab, redis_server: RedisServer) -> Iterator[dict[str, Scene]]:
    """One scene per mode, for tests that compare ARI and AGI on the same calls."""
    worlds = {mode: Scene(lab, redis_server, mode) for mode in ("ari", "agi")}
    yield worlds
    for world in worlds.values():
        for guard in world.guards:
            guard.stop()
    lab.wait_no_channels(timeout=15)
    for world in worlds.values():
        assert lab.trap_hits(world.log_mark) == []


@pytest.fixture
def agi_scene(lab: AsteriskLab, redis_server: RedisServer) -> Iterator[Scene]:
    yield from _world(Scene(lab, redis_server, "agi"))


def _world(world: Scene) -> Iterator[Scene]:
    yield world
    for guard in world.guards:
        guard.stop()
    world.lab.wait_no_channels(timeout=15)
    assert world.lab.trap_hits(world.log_mark) == []


def codes(decision: dict[str, Any]) -> set[str]:
    return set(decision["reasons"])


def assert_never_reached_carrier(uas: Any) -> None:
    result = uas.stop()
    assert result.received("INVITE") == [], result.describe()
