"""The guard as the tests run it: a real `npv-guard run` process with its own config file."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.process import EXE, NpvGuardProcess
from tests.support.redis_servers import free_tcp_port

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


class GuardProcess(NpvGuardProcess):
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
        agi: dict[str, Any] | None = None,
    ) -> None:
        self.mode = mode
        self.http_port = free_tcp_port()
        super().__init__(now=now, workdir=workdir, prefix="npv-guard-e2e-")
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
            "agi": {"host": "127.0.0.1", "port": agi_port, "header_timeout_s": 2.0, **(agi or {})},
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

    def start(self, timeout: float = 20.0) -> GuardProcess:
        if self.mode == "ari":
            self.spawn("run", '"ARI connected', timeout)
        else:
            self.spawn("agi", "FastAGI listening", timeout)
        return self

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
