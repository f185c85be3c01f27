"""The container deployment (docker/) for real: images built with podman, the compose stack run
by podman-compose, real SIP calls through it with sipp, everything torn down.

This machine has no Docker engine and no registry: `scripts/container-images build` makes the
base images from debootstrap roots (cached under /var/cache/npv-guard) and builds
docker/Dockerfile, docker/asterisk/Dockerfile and a Redis stand-in with `podman build`.
docker/compose.yaml is then run unchanged by podman-compose, with a test env file (alternate
ports, all on 127.0.0.1, so that the real-Asterisk lab can run beside it) and
tests/docker/compose.test.yaml (the replay clock). Podman's own needs on this machine (runc,
ulimits below the hard limits) go in a containers.conf of the test (CONTAINERS_CONF), never in
the compose file. Podman 4.3 runs no health checks by itself without systemd, and
podman-compose ignores `condition: service_healthy` with it: the test runs each container's
health check (`podman healthcheck run`) until it passes.

Every step is bounded in time; a failure names the step and shows the containers' logs; the
stack's containers and volumes are removed at the end whatever happened.
Deselect with `-m "not containers"`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.lab import SippProcess, SippResult, run_sipp

pytestmark = pytest.mark.containers

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
TEST_OVERRIDE = Path(__file__).resolve().parent / "compose.test.yaml"
IMAGES_SCRIPT = REPO / "scripts" / "container-images"
PROJECT = "npvguard-test"
SERVICES = ("redis", "asterisk", "guard", "api")  # api: the "api" profile, always on in this test

# Not the lab's ports (5060/5070, 8088, 5038, 4573, 6390, 9464, RTP 20000-20200).
PORTS = {
    "SIP_PORT": 25060,
    "CARRIER_PORT": 25070,
    "ARI_PORT": 28088,
    "AMI_PORT": 25038,
    "AGI_PORT": 24573,
    "REDIS_PORT": 26379,
    "GUARD_HTTP_PORT": 29464,
    "API_PORT": 28470,
}
RTP = (21000, 21100)
SIP_TARGET = f"127.0.0.1:{PORTS['SIP_PORT']}"
IMAGES = {
    "GUARD_IMAGE": "localhost/npv-guard:test",
    "ASTERISK_IMAGE": "localhost/npv-guard-asterisk:test",
    "REDIS_IMAGE": "localhost/npv-guard-redis-standin:7",
}
TUESDAY = "2026-12-01T10:30:00"  # Europe/Paris: within the hours, after the opt-in date
NPV = "0162000001"
CONSENTED = "0612345678"
NO_CONSENT = "0612345699"
AGI_CONSENTED = "0612345677"
API_CONSENTED = "0612345676"
API_TOKEN = "npvg_container-test-token-0123456789"  # its SHA-256 is in the test's guard.toml

TIMINGS: dict[str, float] = {}
TIMINGS_FILE = Path("/tmp/npv-container-images/timings.json")


class CommandError(RuntimeError):
    pass


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command bounded by coreutils `timeout` (then SIGKILL) and by subprocess's timeout."""
    bounded = ["timeout", "--kill-after=10", f"{timeout:g}", *cmd]
    try:
        proc = subprocess.run(
            bounded,
            capture_output=True,
            text=True,
            timeout=timeout + 20,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"`{shlex.join(cmd)}` did not finish within {timeout:g} s") from exc
    if proc.returncode == 124:
        raise CommandError(f"`{shlex.join(cmd)}` did not finish within {timeout:g} s\n{_tail(proc.stderr)}")
    if check and proc.returncode != 0:
        raise CommandError(
            f"`{shlex.join(cmd)}` exited {proc.returncode}\n"
            f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}"
        )
    return proc


def podman_compose_exe() -> str | None:
    beside = Path(sys.executable).parent / "podman-compose"
    return str(beside) if beside.exists() else shutil.which("podman-compose")


def prerequisites_missing() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (rootful podman, debootstrap)")
    for tool in ("podman", "runc", "debootstrap", "sipp", "timeout", "ss", "tar", "flock"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if podman_compose_exe() is None:
        missing.append("podman-compose (pip install -e '.[dev]')")
    return missing


def containers_conf(path: Path) -> Path:
    """Podman settings this machine needs, kept out of the compose file (Docker needs none)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 8192)
    if nofile < 0:
        nofile = 65536
    if nproc < 0:
        nproc = 8192
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        '# A safety net only: every service of compose.yaml says network_mode: host.\nnetns = "host"\n'
        "[engine]\n"
        '# crun fails here on cgroups v1 and rlimits.\nruntime = "runc"\n'
    )
    return path


class Stack:
    """docker/compose.yaml under podman-compose, with the test's env file and override."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.compose_exe = podman_compose_exe() or "podman-compose"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "CONTAINERS_CONF": str(containers_conf(workdir / "containers.conf")),
        }
        self.guard_toml = workdir / "guard.toml"
        self.guard_toml.write_text(
            "# The test's guard file: everything else comes from the environment (compose.yaml).\n"
            "[ari]\nring_timeout_s = 20\nreconnect_max_s = 2\n"
            '[log]\nlevel = "debug"\n'
            '[[professionals]]\nid = "lab"\nname = "container test"\n'
            'npvs = ["+33162000001", "+33162000002"]\n'
            f'api_token_sha256 = ["{hashlib.sha256(API_TOKEN.encode()).hexdigest()}"]\n'
        )
        self.guard_toml.chmod(0o644)  # read by the guard's unprivileged user
        self.mode = "run"

    # -- compose
    def env_file(self) -> Path:
        values = {
            **IMAGES,
            **{name: str(port) for name, port in PORTS.items()},
            "RTP_START": str(RTP[0]),
            "RTP_END": str(RTP[1]),
            "ARI_PASSWORD": "container-test-ari-0123",
            "AMI_SECRET": "container-test-ami-0123",
            "NPV_GUARD_HASH_SECRET": "container-test-hash-secret-0123456789",
            "GUARD_CONFIG_FILE": str(self.guard_toml),
            "GUARD_COMMAND": self.mode,
            "NPV_GUARD_NOW": TUESDAY,
        }
        path = self.workdir / f"test-{self.mode}.env"
        path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        return path

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.compose_exe, "--env-file", str(self.env_file()), "-p", PROJECT, "--profile", "api"]
        cmd += ["-f", str(COMPOSE_FILE), "-f", str(TEST_OVERRIDE), *args]
        return run(cmd, timeout=timeout, env=self.env, cwd=DOCKER_DIR, check=check)

    def up(self, mode: str) -> None:
        self.mode = mode
        self.compose("--in-pod=false", "up", "-d", "--no-build", timeout=180)

    def down(self, *, volumes: bool) -> None:
        self.compose("down", "-t", "30", *(["-v"] if volumes else []), timeout=180)

    # -- podman
    def podman(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], timeout=timeout, env=self.env, check=check)

    def name(self, service: str) -> str:
        out = self.podman(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label=com.docker.compose.project={PROJECT}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        if len(out) != 1:
            raise CommandError(f"expected one container for service {service}, found {out}")
        return out[0]

    def project_containers(self) -> list[str]:
        label = f"label=com.docker.compose.project={PROJECT}"
        return self.podman("ps", "-a", "--format", "{{.Names}}", "--filter", label).stdout.split()

    def project_volumes(self) -> list[str]:
        names = self.podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
        return [name for name in names if name.startswith(f"{PROJECT}_")]

    def remove_leftovers(self) -> None:
        """Only this test's own project: containers and volumes a killed run may have left."""
        for container in self.project_containers():
            self.podman("rm", "-f", "-t", "5", container, timeout=60, check=False)
        for volume in self.project_volumes():
            self.podman("volume", "rm", "-f", volume, check=False)

    def inspect(self, service: str, template: str) -> str:
        return self.podman("inspect", "--format", template, self.name(service)).stdout.strip()

    def exec(self, service: str, *args: str, timeout: float = 30, check: bool = True) -> str:
        return self.podman("exec", self.name(service), *args, timeout=timeout, check=check).stdout

    def healthy(self, service: str) -> bool:
        proc = self.podman("healthcheck", "run", self.name(service), timeout=30, check=False)
        if "no defined healthcheck" in proc.stderr or "no such container" in proc.stderr.lower():
            raise CommandError(f"{service}: {proc.stderr.strip()}")
        return proc.returncode == 0

    def wait_healthy(self, services: Sequence[str] = SERVICES, timeout: float = 90) -> None:
        pending = list(services)
        deadline = time.monotonic() + timeout
        while pending:
            for service in list(pending):
                state = self.inspect(service, "{{.State.Status}}")
                if state != "running":
                    raise CommandError(f"{service} is {state}, not running")
                if self.healthy(service):
                    pending.remove(service)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise CommandError(f"not healthy after {timeout:g} s: {', '.join(pending)}")
            time.sleep(0.5)

    def wait_unhealthy(self, service: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.healthy(service):
            if time.monotonic() > deadline:
                raise CommandError(f"{service} still healthy after {timeout:g} s")
            time.sleep(0.5)

    def rx(self, command: str) -> str:
        return self.exec("asterisk", "asterisk", "-rx", command)

    def wait_no_channels(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            out = self.rx("core show channels count")
            match = re.search(r"^(\d+) active channels?", out, re.MULTILINE)
            if match and match.group(1) == "0":
                return
            if time.monotonic() > deadline:
                raise CommandError(f"Asterisk still has channels after {timeout:g} s:\n{self.rx('core show channels')}")
            time.sleep(0.2)

    def npv_guard(self, *args: str) -> str:
        """The CLI inside the guard container: same Redis, secret and config as the running guard."""
        return self.exec("guard", "npv-guard", *args)

    def audit(self) -> list[dict[str, Any]]:
        text = self.exec("guard", "cat", "/var/log/npv-guard/audit.log", check=False)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_audit(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.audit() if predicate(line)]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise CommandError(f"no such audit line within {timeout:g} s; audit: {self.audit()[-5:]}")
            time.sleep(0.2)

    def diagnostics(self) -> str:
        parts = []
        with contextlib.suppress(Exception):
            parts.append(self.podman("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout)
            for service in SERVICES:
                with contextlib.suppress(Exception):
                    logs = self.podman("logs", "--tail", "30", self.name(service), check=False)
                    parts.append(f"--- {service} logs ---\n{_tail(logs.stdout + logs.stderr, 30)}")
        return "\n".join(parts)


@contextlib.contextmanager
def step(name: str, stack: Stack | None = None) -> Iterator[None]:
    """Time a step; on failure, fail the test naming the step, with the stack's logs."""
    started = time.monotonic()
    try:
        yield
    except (pytest.fail.Exception, pytest.skip.Exception):
        raise
    except Exception as exc:
        details = stack.diagnostics() if stack is not None else ""
        pytest.fail(f"containers: FAILED at step: {name}\n{exc}\n{details}", pytrace=False)
    finally:
        TIMINGS[name] = round(time.monotonic() - started, 1)


def ports_in_use() -> list[str]:
    busy = []
    for proto, flag in (("tcp", "-ltn"), ("udp", "-lun")):
        out = subprocess.run(["ss", "-H", flag], capture_output=True, text=True, timeout=10, check=False).stdout
        bound = {line.split()[3].rsplit(":", 1)[-1] for line in out.splitlines() if len(line.split()) > 3}
        wanted = [name for name in PORTS if (name in ("SIP_PORT", "CARRIER_PORT")) == (proto == "udp")]
        busy += [f"{proto}/{PORTS[name]} ({name})" for name in wanted if str(PORTS[name]) in bound]
    return busy


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def images() -> Iterator[None]:
    missing = prerequisites_missing()
    if missing:
        pytest.fail(
            f"containers: prerequisites missing: {', '.join(missing)} "
            "(scripts/bootstrap installs them; deselect with -m 'not containers')",
            pytrace=False,
        )
    with step("build the images (scripts/container-images build)"):
        run([str(IMAGES_SCRIPT), "build"], timeout=1800, env={**os.environ, **IMAGES})
    yield


@pytest.fixture(scope="module")
def stack(images: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    world = Stack(tmp_path_factory.mktemp("containers"))
    started = time.monotonic()
    try:
        with step("remove leftovers of an earlier run of this test", world):
            world.remove_leftovers()
        with step("check the test's ports are free"):
            busy = ports_in_use()
            assert not busy, f"already in use on this machine: {', '.join(busy)}"
        with step("podman-compose up (ARI mode)", world):
            world.up("run")
        with step("stack healthy (redis, asterisk, guard health checks)", world):
            world.wait_healthy()
        TIMINGS["up to healthy"] = round(time.monotonic() - started, 1)
        yield world
    finally:
        try:
            with step("podman-compose down -v", world):
                world.down(volumes=True)
            with step("nothing left running", world):
                assert world.project_containers() == [], world.project_containers()
                assert world.project_volumes() == [], world.project_volumes()
                assert ports_in_use() == []
        finally:
            world.remove_leftovers()
            TIMINGS["whole module"] = round(time.monotonic() - started, 1)
            summary = f"containers timings (s): {json.dumps(TIMINGS)}"
            with contextlib.suppress(OSError):
                TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
                TIMINGS_FILE.write_text(json.dumps(TIMINGS, indent=1) + "\n")
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            capture = request.config.pluginmanager.get_plugin("capturemanager")
            if reporter is not None and capture is not None:
                with capture.global_and_fixture_disabled():
                    reporter.write_line(summary)


# --------------------------------------------------------------------------- helpers


def consumer_uas(timeout_s: float = 30) -> SippProcess:
    """The consumer's phone behind the carrier: the image's carrier endpoint (CARRIER_PORT)."""
    return run_sipp("uas_answer.xml", local_port=PORTS["CARRIER_PORT"], timeout_s=timeout_s, background=True)


def dial(scenario: str, callee: str, **variables: str) -> SippResult:
    return run_sipp(
        scenario,
        target=SIP_TARGET,
        service=callee,
        variables={"caller": NPV, **variables},
        timeout_s=30,
    )


def allowed_call(stack: Stack, callee: str) -> None:
    uas = consumer_uas()
    try:
        uac = dial("uac.xml", callee, hold_ms="1000")
        assert uac.ok, f"the dialer's call was not answered:\n{uac.describe()}"
        carrier = uas.wait(30)
        assert carrier.ok, f"the consumer's phone:\n{carrier.describe()}"
        invites = carrier.received("INVITE")
        assert invites, "the consumer's phone never got the INVITE"
        assert "+33" + callee[1:] in invites[0].first_line, invites[0].first_line
    finally:
        uas.stop()
    stack.wait_no_channels()


def rejected_call(stack: Stack, callee: str) -> None:
    uas = consumer_uas(timeout_s=15)
    try:
        uac = dial("uac_reject.xml", callee, expect_code="403")
        assert uac.ok and uac.final_status() == 403, f"expected 403:\n{uac.describe()}"
        time.sleep(0.5)
    finally:
        carrier = uas.stop()
    assert carrier.received("INVITE") == [], f"the rejected call reached the consumer:\n{carrier.describe()}"
    stack.wait_no_channels()


# --------------------------------------------------------------------------- tests


def test_compose_file_is_valid_and_portable() -> None:
    exe = podman_compose_exe()
    if exe is None:
        pytest.fail("containers: podman-compose is not installed (pip install -e '.[dev]')", pytrace=False)
    text = COMPOSE_FILE.read_text()
    assert "podman" not in text.lower(), "compose.yaml must work unchanged with Docker"
    document = yaml.safe_load(text)
    assert set(document["services"]) == set(SERVICES)
    for name, service in document["services"].items():
        assert service["network_mode"] == "host", name
        assert service["restart"] == "unless-stopped", name
    assert document["services"]["api"]["profiles"] == ["api"]  # the HTTP API only when asked for
    assert document["services"]["guard"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "asterisk": {"condition": "service_healthy"},
    }
    redis_args = document["services"]["redis"]["command"]
    assert "--appendonly" in redis_args and "redis-data:/data" in document["services"]["redis"]["volumes"]

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    base = [exe, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config"]
    with step("podman-compose config with .env.example and no secrets: refused"):
        proc = run(base, timeout=60, env=env, cwd=DOCKER_DIR, check=False)
        assert proc.returncode != 0 and "ARI_PASSWORD" in proc.stdout + proc.stderr, proc.stderr
    with step("podman-compose config with .env.example and the secrets"):
        secrets = {"ARI_PASSWORD": "abcdefgh-123", "NPV_GUARD_HASH_SECRET": "0123456789abcdef-x"}
        proc = run(base, timeout=60, env={**env, **secrets}, cwd=DOCKER_DIR)
        config = yaml.safe_load(proc.stdout)
        guard_env = config["services"]["guard"]["environment"]
        asterisk_env = config["services"]["asterisk"]["environment"]
        # The defaults are the standard production ports, everything on the loopback.
        assert str(asterisk_env["SIP_PORT"]) == "5060" and asterisk_env["SIP_BIND_ADDRESS"] == "127.0.0.1"
        assert guard_env["NPV_GUARD_ARI_URL"] == "http://127.0.0.1:8088"
        assert guard_env["NPV_GUARD_REDIS_URL"] == "redis://127.0.0.1:6379/0"
        assert guard_env["NPV_GUARD_HTTP_LISTEN"] == "127.0.0.1:9464"
        assert str(guard_env["NPV_GUARD_AGI_PORT"]) == "4573" and str(asterisk_env["AMI_PORT"]) == "5038"
        assert "127.0.0.1" in config["services"]["redis"]["command"]
        assert config["services"]["guard"]["command"][0] == "run"


def test_images(images: None, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "CONTAINERS_CONF": str(containers_conf(tmp_path / "containers.conf"))}

    def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], timeout=60, env=env, check=check)

    with step("the guard image: non-root, npv-guard entrypoint, health check, no build tools"):
        image = json.loads(podman("image", "inspect", IMAGES["GUARD_IMAGE"]).stdout)[0]
        config = image["Config"]
        assert config["User"] == "npvguard:npvguard"
        assert config["Entrypoint"] == ["npv-guard"] and config["Cmd"] == ["run"]
        # Kept only in the docker image format (scripts/container-images builds with --format docker).
        health = image.get("Healthcheck") or config.get("Healthcheck") or {}
        assert health.get("Test") == ["CMD", "npv-guard", "health"], health
        probe = "id -u; for t in gcc cc make pip; do command -v $t || true; done; ls /opt/npv-guard/bin"
        out = podman("run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", IMAGES["GUARD_IMAGE"], "-c", probe)
        lines = out.stdout.split()
        assert lines[0] == "10001"
        assert not any(tool in lines for tool in ("/usr/bin/gcc", "/usr/bin/cc", "/usr/bin/make")), lines
        assert "npv-guard" in lines and "pip" not in lines, lines
        version = podman("run", "--rm", "--network", "host", IMAGES["GUARD_IMAGE"], "--version").stdout
        assert version.startswith("npv-guard ")
    with step("the Asterisk image: Asterisk 22+, user asterisk, health check"):
        image = json.loads(podman("image", "inspect", IMAGES["ASTERISK_IMAGE"]).stdout)[0]
        assert image["Config"]["User"] == "asterisk"
        health = image.get("Healthcheck") or image["Config"].get("Healthcheck") or {}
        assert health.get("Test", [])[:2] == ["CMD", "asterisk"], health
        out = podman("run", "--rm", "--network", "host", "--entrypoint", "asterisk", IMAGES["ASTERISK_IMAGE"], "-V")
        match = re.match(r"Asterisk (\d+)\.", out.stdout)
        assert match and int(match.group(1)) >= 22, out.stdout
    with step("the Asterisk entrypoint refuses a missing password or a bad port"):
        base = ["run", "--rm", "--network", "host", IMAGES["ASTERISK_IMAGE"], "true"]
        proc = podman(*base, check=False)
        assert proc.returncode == 78 and "ARI_PASSWORD is required" in proc.stderr, proc.stderr
        proc = podman("run", "--rm", "--network", "host", "-e", "ARI_PASSWORD=abcdefgh-1", "-e", "SIP_PORT=50;60",
                      IMAGES["ASTERISK_IMAGE"], "true", check=False)  # fmt: skip
        assert proc.returncode == 78 and "SIP_PORT" in proc.stderr, proc.stderr


def test_stack_listens_on_the_loopback_only(stack: Stack) -> None:
    with step("host networking and loopback-only listeners", stack):
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        pids = {}
        for service in SERVICES:
            assert stack.inspect(service, "{{.HostConfig.NetworkMode}}") == "host", service
            pids[service] = stack.inspect(service, "{{.State.Pid}}")
        networks = stack.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert not any(PROJECT in name for name in networks), networks
        listeners: dict[str, list[str]] = {service: [] for service in SERVICES}
        for flag, proto in (("-lntp", "tcp"), ("-lnup", "udp")):
            out = run(["ss", "-H", flag], timeout=10).stdout
            for line in out.splitlines():
                fields = line.split()
                for service, pid in pids.items():
                    if f"pid={pid}," in line:
                        listeners[service].append(f"{proto} {fields[3]}")
        bad = []
        for service, sockets in listeners.items():
            for entry in sockets:
                proto, address = entry.split()
                host, port = address.rsplit(":", 1)
                if host.startswith("127.") or host in ("[::1]",):
                    continue
                # The SIP stack's unconnected wildcard UDP sockets on ephemeral ports carry nothing.
                if proto == "udp" and lo <= int(port) <= hi and service == "asterisk":
                    continue
                bad.append(f"{service}: {entry}")
        assert not bad, f"listening beyond the loopback: {bad}"
        expected = {
            "redis": f"tcp 127.0.0.1:{PORTS['REDIS_PORT']}",
            "asterisk": f"udp 127.0.0.1:{PORTS['SIP_PORT']}",
            "guard": f"tcp 127.0.0.1:{PORTS['GUARD_HTTP_PORT']}",
            "api": f"tcp 127.0.0.1:{PORTS['API_PORT']}",
        }
        for service, entry in expected.items():
            assert entry in listeners[service], (service, listeners[service])
        assert f"tcp 127.0.0.1:{PORTS['ARI_PORT']}" in listeners["asterisk"]
        assert f"tcp 127.0.0.1:{PORTS['AMI_PORT']}" in listeners["asterisk"]
    with step("Redis persists every write (AOF, fsync always) in its volume", stack):
        port = str(PORTS["REDIS_PORT"])
        cli = ("redis-cli", "-h", "127.0.0.1", "-p", port)
        assert stack.exec("redis", *cli, "config", "get", "appendonly").split() == ["appendonly", "yes"]
        assert stack.exec("redis", *cli, "config", "get", "appendfsync").split() == ["appendfsync", "always"]
        mounts = stack.inspect("redis", "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}")
        assert f"{PROJECT}_redis-data:/data" in mounts, mounts


def test_ari_mode_allowed_and_rejected_calls(stack: Stack) -> None:
    with step("consent recorded with the CLI inside the guard container", stack):
        out = stack.npv_guard("consent", "grant", "--professional", "lab", "--callee", CONSENTED,
                              "--at", "2026-09-01T12:00", "--proof", "container test form")  # fmt: skip
        assert "consent granted" in out, out
    with step("npv-guard doctor inside the guard container: Redis, ARI, AMI, dialplan all ok", stack):
        proc = stack.podman("exec", stack.name("guard"), "npv-guard", "doctor", check=False)
        assert proc.returncode == 0 and "FAIL" not in proc.stdout, proc.stdout + proc.stderr
        assert "context npv-guard-ari is loaded" in proc.stdout, proc.stdout
    with step("allowed call: answered by the consumer behind the carrier", stack):
        allowed_call(stack, CONSENTED)
        decision = stack.wait_audit(lambda a: a["event"] == "decision" and a["verdict"] == "allow")
        assert decision["mode"] == "ari" and decision["caller"] == "+33162000001"
        stack.wait_audit(lambda a: a["event"] == "bridged")
    with step("rejected call (no consent): 403, never reaches the consumer", stack):
        rejected_call(stack, NO_CONSENT)
        decision = stack.wait_audit(lambda a: a["event"] == "decision" and a["verdict"] == "reject")
        assert decision["reasons"] == ["NO_CONSENT"], decision
    with step("the guard's metrics count both decisions", stack):
        url = f"http://127.0.0.1:{PORTS['GUARD_HTTP_PORT']}/metrics"
        metrics = run(["curl", "-sS", "--max-time", "5", url], timeout=15).stdout
        assert 'verdict="allow"' in metrics and 'reason="NO_CONSENT"' in metrics


def api_check(callee: str, token: str = API_TOKEN, **fields: Any) -> tuple[int, dict[str, Any]]:
    """POST /v1/check to the api container, from the host (curl: the status on the last line)."""
    body = json.dumps({"caller": NPV, "callee": callee, **fields})
    url = f"http://127.0.0.1:{PORTS['API_PORT']}/v1/check"
    out = run(["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {token}",
               "-H", "Content-Type: application/json", "--data", body, url], timeout=15).stdout  # fmt: skip
    answer, _, status = out.rpartition("\n")
    return int(status), json.loads(answer)


def test_http_api_in_its_own_container(stack: Stack) -> None:
    with step("the api container is healthy and answers with the call path's store", stack):
        stack.wait_healthy(("api",), timeout=60)
        stack.npv_guard("consent", "grant", "--professional", "lab", "--callee", API_CONSENTED,
                        "--at", "2026-09-01T12:00", "--proof", "container test form")  # fmt: skip
    with step("POST /v1/check with record: allowed and counted; the guard container sees the attempt", stack):
        status, answer = api_check(API_CONSENTED, record=True)
        assert status == 200 and answer["verdict"] == "allow" and answer["recorded"] is True, answer
        history = json.loads(stack.npv_guard("history", "--professional", "lab", "--callee", API_CONSENTED, "--json"))
        assert len(history["attempts"]) == 1, history
    with step("no consent: a reject verdict; a wrong token: 401 in JSON", stack):
        status, answer = api_check(NO_CONSENT)
        assert status == 200 and [r["code"] for r in answer["reasons"]] == ["NO_CONSENT"], answer
        status, answer = api_check(API_CONSENTED, token="npvg_not-a-token")
        assert status == 401 and answer["error"]["code"] == "UNAUTHORIZED", answer


def test_guard_health_check_follows_redis_and_ari(stack: Stack) -> None:
    with step("Redis stopped: the guard's health check fails", stack):
        stack.podman("stop", "-t", "10", stack.name("redis"), timeout=40)
        stack.wait_unhealthy("guard")
    with step("Redis back: the guard is healthy again", stack):
        stack.podman("start", stack.name("redis"), timeout=40)
        stack.wait_healthy(("redis", "guard"), timeout=60)
    with step("Asterisk stopped: the guard's health check fails (ARI lost)", stack):
        stack.podman("stop", "-t", "20", stack.name("asterisk"), timeout=60)
        stack.wait_unhealthy("guard")
    with step("Asterisk back: the guard reconnects and is healthy again", stack):
        stack.podman("start", stack.name("asterisk"), timeout=40)
        stack.wait_healthy(("asterisk", "guard"), timeout=60)


def test_recreated_in_agi_mode_keeps_the_state(stack: Stack) -> None:
    """An upgrade recreates the containers: Redis's data and the audit file are in volumes."""
    with step("consent recorded before the containers are recreated", stack):
        stack.npv_guard("consent", "grant", "--professional", "lab", "--callee", AGI_CONSENTED,
                        "--at", "2026-09-01T12:00", "--proof", "before the upgrade")  # fmt: skip
        audit_before = len(stack.audit())
        assert audit_before > 0
    with step("podman-compose down (volumes kept), up with GUARD_COMMAND=agi", stack):
        stack.down(volumes=False)
        assert stack.project_containers() == []
        stack.up("agi")
        stack.wait_healthy()
    with step("Redis and the audit file survived the recreation", stack):
        history = stack.npv_guard("history", "--professional", "lab", "--callee", AGI_CONSENTED, "--json")
        assert "before the upgrade" in history, history
        assert len(stack.audit()) >= audit_before
        logs = stack.podman("logs", stack.name("guard"))
        assert "FastAGI listening" in logs.stdout + logs.stderr


def test_agi_mode_allowed_and_rejected_calls(stack: Stack) -> None:
    if stack.mode != "agi":
        with step("podman-compose down/up with GUARD_COMMAND=agi", stack):
            stack.down(volumes=False)
            stack.up("agi")
            stack.wait_healthy()
        with step("consent for the FastAGI call", stack):
            stack.npv_guard("consent", "grant", "--professional", "lab", "--callee", AGI_CONSENTED,
                            "--at", "2026-09-01T12:00")  # fmt: skip
    with step("FastAGI mode: rejected call gets 403 and never reaches the consumer", stack):
        rejected_call(stack, NO_CONSENT)
        decision = stack.wait_audit(
            lambda a: a["event"] == "decision" and a.get("mode") == "agi" and a["verdict"] == "reject"
        )
        assert "NO_CONSENT" in decision["reasons"], decision
    with step("FastAGI mode: allowed call reaches the consumer", stack):
        allowed_call(stack, AGI_CONSENTED)
        decision = stack.wait_audit(
            lambda a: a["event"] == "decision" and a.get("mode") == "agi" and a["verdict"] == "allow"
        )
        assert decision["caller"] == "+33162000001", decision
