"""The guard as the tests run it: a real `npv-guard run` process with its own config file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.redis_servers import free_tcp_port

EXE = shutil.which("npv-guard", path=str(Path(sys.executable).parent)) or "npv-guard"
LAB_SECRET = "e2e-secret-0123456789abcdef"
LAB_NPVS = [f"+3316200000{n}" for n in range(1, 10)]
LAB_PLATFORM_NUMBERS = ["+33937000001", "+33937000002"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


class GuardProcess:
    """One guard (`npv-guard run` or `npv-guard agi`); `audit()` reads its audit lines, `stop()`/`kill()` end it."""

    def __init__(
        self,
        *,
        redis_url: str,
        carrier_port: int,
        key_prefix: str,
        now: str | None = None,
        ari: dict[str, Any] | None = None,
        redis: dict[str, Any] | None = None,
        calls: dict[str, Any] | None = None,
        sms: dict[str, Any] | None = None,
        professional: dict[str, Any] | None = None,
        workdir: Path | None = None,
        app: str = "npv-guard",
        mode: str = "ari",
        agi_port: int = 4573,
    ) -> None:
        self.mode = mode
        self.http_port = free_tcp_port()
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="npv-guard-e2e-"))
        self.config = self.dir / "guard.toml"
        self.audit_path = self.dir / "audit.log"
        self.log_path = self.dir / "guard.log"
        self.journal_path = self.dir / "refusals.journal"
        self.now = now
        sections = {
            "redis": {"url": redis_url, "key_prefix": key_prefix, "timeout_ms": 300, **(redis or {})},
            "ari": {
                "url": "http://127.0.0.1:8088",
                "username": "npvguard",
                "password": "npvguard-lab",
                "app": app,
                "carrier": f"PJSIP/carrier/sip:{{number}}@127.0.0.1:{carrier_port}",
                "ring_timeout_s": 20,
                "reconnect_max_s": 2,
                **(ari or {}),
            },
            "calls": dict(calls or {}),
            "sms": dict(sms or {}),
            "agi": {"host": "127.0.0.1", "port": agi_port, "header_timeout_s": 2.0},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "log": {"level": "debug", "audit_file": str(self.audit_path)},
        }
        lines = [f"hash_secret = {_toml_value(LAB_SECRET)}", f"journal_path = {_toml_value(str(self.journal_path))}"]
        for name, table in sections.items():
            lines.append(f"[{name}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lab = {"id": "lab", "npvs": LAB_NPVS, "platform_numbers": LAB_PLATFORM_NUMBERS, **(professional or {})}
        lines += ["[[professionals]]", *(f"{key} = {_toml_value(value)}" for key, value in lab.items())]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
        base["NPV_GUARD_CONFIG"] = str(self.config)
        if self.now:
            base["NPV_GUARD_NOW"] = self.now
        return base

    def start(self, timeout: float = 20.0) -> GuardProcess:
        log = self.log_path.open("ab")
        command = "run" if self.mode == "ari" else "agi"
        self.process = subprocess.Popen([EXE, command], env=self.env(), stdout=log, stderr=log, start_new_session=True)
        try:
            self.wait_for_log('"ARI connected' if self.mode == "ari" else "FastAGI listening", timeout=timeout)
        except BaseException:
            self.kill()  # never leave a half-started guard taking calls behind the next test's back
            raise
        return self

    def wait_for_log(self, text: str, *, timeout: float = 10.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"guard exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"guard log never showed {text!r}:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def audit(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        lines = [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]
        return [line for line in lines if event is None or line["event"] == event]

    def wait_audit(self, event: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.audit(event)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"{count} audit {event!r} lines expected, got {self.audit(event)}\n{self.log()[-2000:]}")

    def http(self, path: str) -> tuple[int, str]:
        """GET one of the guard's HTTP endpoints (/healthz, /metrics)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=3) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The npv-guard CLI pointed at this guard's config (same Redis, secret and prefix)."""
        return subprocess.run([EXE, *args], env=self.env(), capture_output=True, text=True, timeout=30, check=False)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None
