"""Real redis-server processes on loopback, started and stopped by the test suite."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_tcp_port(count: int = 1) -> int:
    """A port p such that p .. p+count-1 and their cluster bus ports (+10000) are free."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count + 10000 > 65535:
            continue
        if all(_free(port) and _free(port + 10000) for port in range(base, base + count)):
            return base
    raise RuntimeError("no free loopback TCP ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s: a redis-server (or sentinel) the suite started."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class RedisServer:
    """One redis-server bound to 127.0.0.1 with no persistence (or AOF when asked)."""

    def __init__(
        self, port: int | None = None, *, cluster: bool = False, appendonly: bool = False, extra: tuple[str, ...] = ()
    ) -> None:
        self.port = port or free_tcp_port()
        self.cluster = cluster
        self.appendonly = appendonly
        self.extra = extra  # more redis-server options, e.g. ("--maxmemory-policy", "allkeys-lru")
        self.dir = Path(tempfile.mkdtemp(prefix=f"npv-redis-{self.port}-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir),
            "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        args += list(self.extra)
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / "nodes.conf")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def cli(self, *command: str) -> str:
        result = subprocess.run(
            [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), *command],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        return result.stdout.strip()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} exited: {log}")
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} not ready after {timeout} s")

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Three masters on consecutive loopback ports, joined with `redis-cli --cluster create`."""

    def __init__(self) -> None:
        base = free_tcp_port(3)
        self.nodes = [RedisServer(base + offset, cluster=True) for offset in range(3)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        result = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout[-1000:]} {result.stderr[-1000:]}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in node.cli("CLUSTER", "INFO") for node in self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError("redis cluster did not reach cluster_state:ok")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class RedisSentinelSet:
    """A master (AOF), one replica and one redis-sentinel (`redis-server --sentinel`) watching
    them, all on loopback; `fail_master()` SIGKILLs the master and lets the sentinel promote the
    replica. The sentinel judges the master down after `down_after_ms`."""

    MASTER_NAME = "npvmaster"

    def __init__(self, *, down_after_ms: int = 1000) -> None:
        self.master = RedisServer(appendonly=True)
        self.replica = RedisServer(
            appendonly=True, extra=("--replicaof", "127.0.0.1", str(self.master.port), "--replica-read-only", "yes")
        )
        self.sentinel_port = free_tcp_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"npv-sentinel-{self.sentinel_port}-"))
        self.down_after_ms = down_after_ms
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{self.sentinel_port}"]

    def start(self) -> RedisSentinelSet:
        self.master.start()
        self.replica.start()
        config = self.dir / "sentinel.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {self.sentinel_port}",
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"dir {self.dir}",
                    f"logfile {self.dir / 'sentinel.log'}",
                    f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {self.master.port} 1",
                    f"sentinel down-after-milliseconds {self.MASTER_NAME} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.MASTER_NAME} 10000",
                    f"sentinel parallel-syncs {self.MASTER_NAME} 1",
                ]
            )
            + "\n"
        )
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited: {self.log()[-2000:]}")
            replicas = self.sentinel_cli("SENTINEL", "REPLICAS", self.MASTER_NAME)
            if f"{self.replica.port}" in replicas and "master_link_status:up" in self.replica.cli(
                "INFO", "replication"
            ):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"the sentinel never saw the replica: {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.dir / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def sentinel_cli(self, *command: str) -> str:
        result = subprocess.run(
            [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.sentinel_port), *command],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        return result.stdout.strip()

    def master_port(self) -> int:
        answer = self.sentinel_cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER_NAME).split()
        return int(answer[1])

    def fail_master(self, timeout: float = 30.0) -> None:
        """SIGKILL the master; return once the sentinel names the replica the master."""
        self.master.kill()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_port() == self.replica.port and "role:master" in self.replica.cli("INFO", "replication"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"no failover after {timeout} s: {self.log()[-2000:]}")

    def cleanup(self) -> None:
        terminate(self.process)
        self.process = None
        self.master.cleanup()
        self.replica.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
