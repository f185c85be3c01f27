"""A Redis that forgets (no persistence, an evicting maxmemory-policy) is reported by `doctor`
and logged by the servers at start, checked on real redis-servers started with those settings,
CONFIG disabled as on managed Redis, and every master of a real Cluster."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from npv_guard.doctor import OK, WARN, redis_durability
from tests.support.api_server import ApiServer
from tests.support.process import EXE
from tests.support.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis


def findings(url: str, *, cluster: bool = False) -> list[tuple[str, str]]:
    return asyncio.run(redis_durability(url, cluster=cluster, socket_s=2.0))


@pytest.fixture
def redis_with(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    appendonly, extra = request.param
    server = RedisServer(appendonly=appendonly, extra=extra).start()
    yield server
    server.cleanup()


def levels(found: list[tuple[str, str]], word: str) -> list[str]:
    return [level for level, text in found if word in text]


@pytest.mark.parametrize("redis_with", [(False, ())], indirect=True)
def test_no_persistence_is_a_warning(redis_with: RedisServer) -> None:
    found = findings(redis_with.url)
    assert levels(found, "no persistence") == [WARN]
    assert levels(found, "noeviction") == [OK]


@pytest.mark.parametrize("redis_with", [(True, ("--maxmemory-policy", "allkeys-lru"))], indirect=True)
def test_an_evicting_policy_is_a_warning_even_with_aof(redis_with: RedisServer) -> None:
    found = findings(redis_with.url)
    assert levels(found, "AOF persistence on") == [OK]
    assert levels(found, "allkeys-lru") == [WARN]
    assert WARN not in levels(found, "persistence")


@pytest.mark.parametrize("redis_with", [(False, ("--save", "900 1"))], indirect=True)
def test_rdb_snapshots_count_as_persistence(redis_with: RedisServer) -> None:
    found = findings(redis_with.url)
    assert levels(found, "RDB snapshots on") == [OK]
    assert not levels(found, "no persistence")


@pytest.mark.parametrize(
    "redis_with",
    [(False, ("--rename-command", "CONFIG", "", "--maxmemory-policy", "volatile-lru"))],
    indirect=True,
)
def test_config_disabled_says_could_not_check_and_reads_info(redis_with: RedisServer) -> None:
    found = findings(redis_with.url)
    assert levels(found, "could not be checked") == [WARN]  # persistence: never "ok"
    assert levels(found, "volatile-lru") == [WARN]  # from INFO memory
    assert OK not in [level for level, _ in found]


@pytest.mark.parametrize(
    "redis_with", [(True, ("--rename-command", "CONFIG", "", "--maxmemory-policy", "noeviction"))], indirect=True
)
def test_config_disabled_with_aof_is_ok_from_info(redis_with: RedisServer) -> None:
    found = findings(redis_with.url)
    assert {level for level, _ in found} == {OK}


@pytest.mark.cluster
def test_every_cluster_master_is_checked(redis_cluster: RedisCluster) -> None:
    evicting = redis_cluster.nodes[1]
    evicting.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-random")
    try:
        found = findings(redis_cluster.url, cluster=True)
    finally:
        evicting.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    for node in redis_cluster.nodes:
        assert levels(found, f"master 127.0.0.1:{node.port}: no persistence") == [WARN]
    evicting_findings = [text for level, text in found if "allkeys-random" in text and level == WARN]
    assert len(evicting_findings) == 1 and f"127.0.0.1:{evicting.port}" in evicting_findings[0]


def test_doctor_prints_the_warnings(tmp_path: Path, redis_server: RedisServer) -> None:
    config = tmp_path / "guard.toml"
    config.write_text(
        f'hash_secret = "durability-test-secret-0123"\njournal_path = "{tmp_path}/j"\n'
        f'[redis]\nurl = "{redis_server.url}"\n[ari]\nurl = "http://127.0.0.1:9"\n'
    )
    result = subprocess.run(
        [EXE, "doctor", "--config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = [line for line in result.stdout.splitlines() if "redis" in line]
    assert any(line.startswith("[warn]") and "no persistence" in line for line in lines), result.stdout
    assert any(line.startswith("[  ok]") and "noeviction" in line for line in lines), result.stdout


def test_serve_logs_the_warning_at_start(redis_server: RedisServer) -> None:
    api = ApiServer(redis_server.url).start()
    try:
        api.wait_for_log("redis durability: redis: no persistence")
    finally:
        api.cleanup()
