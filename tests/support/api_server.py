"""A real `npv-guard serve` process on a free loopback port, with its own config and tokens."""

from __future__ import annotations

import http.client
import json
import shutil
from pathlib import Path
from typing import Any

from npv_guard.api.auth import mint_token, token_digest
from tests.support.process import NpvGuardProcess
from tests.support.redis_servers import free_tcp_port

SECRET = "api-test-secret-0123456789"
# Two professionals, each with its own NPVs and token.
PROFESSIONALS = {
    "acme": ["+33162000001", "+33162000002"],
    "beta": ["+33162000004", "+33162000005"],
}


class ApiServer(NpvGuardProcess):
    def __init__(
        self,
        redis_url: str,
        *,
        key_prefix: str = "api",
        max_body_bytes: int = 16384,
        redis_timeout_ms: int = 300,
        now: str | None = None,
        log_level: str = "debug",
        api_settings: dict[str, float | int] | None = None,
        fail_open: bool = False,
        journal_path: Path | None = None,
    ) -> None:
        """`journal_path`: a journal in a directory shared with other guards (its peers)."""
        self.port = free_tcp_port()
        super().__init__(now=now, prefix="npv-guard-api-")
        self.journal_path = journal_path or self.journal_path
        self.tokens = {professional: mint_token() for professional in PROFESSIONALS}
        lines = [
            f"hash_secret = {json.dumps(SECRET)}",
            f"journal_path = {json.dumps(str(self.journal_path))}",
            "[redis]",
            f"url = {json.dumps(redis_url)}",
            f"key_prefix = {json.dumps(key_prefix)}",
            f"timeout_ms = {redis_timeout_ms}",
            f"fail_open = {json.dumps(fail_open)}",
            "[api]",
            f'listen = "127.0.0.1:{self.port}"',
            f"max_body_bytes = {max_body_bytes}",
            *(f"{key} = {value}" for key, value in (api_settings or {}).items()),
            "[log]",
            f"level = {json.dumps(log_level)}",
            f"audit_file = {json.dumps(str(self.audit_path))}",
        ]
        for professional, npvs in PROFESSIONALS.items():
            lines += [
                "[[professionals]]",
                f"id = {json.dumps(professional)}",
                f"npvs = {json.dumps(npvs)}",
                f"api_token_sha256 = {json.dumps([token_digest(self.tokens[professional])])}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ApiServer:
        self.spawn("serve", "API listening", timeout)
        return self

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        professional: str | None = "acme",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One request; `token` wins over `professional` (whose token is sent), None sends none."""
        sent = {"Content-Type": "application/json"} if body is not None or raw is not None else {}
        bearer = token if token is not None else (self.tokens[professional] if professional else None)
        if bearer is not None:
            sent["Authorization"] = f"Bearer {bearer}"
        sent.update(headers or {})
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            data = response.read()
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
        finally:
            connection.close()
        parsed = json.loads(data) if answer_headers.get("content-type", "").startswith("application/json") else data
        return response.status, answer_headers, parsed

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
