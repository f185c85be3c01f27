"""What every `npv-guard` server process of the tests shares: its files, its start, its end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXE = shutil.which("npv-guard", path=str(Path(sys.executable).parent)) or "npv-guard"


class NpvGuardProcess:
    """One `npv-guard <command>` with its config, log, audit and journal files in its own directory.

    Subclasses write `self.config` and call `spawn`; `self.now` replays the clock (NPV_GUARD_NOW).
    """

    def __init__(self, *, now: str | None = None, workdir: Path | None = None, prefix: str = "npv-guard-") -> None:
        self.dir = workdir or Path(tempfile.mkdtemp(prefix=prefix))
        self.config = self.dir / "guard.toml"
        self.audit_path = self.dir / "audit.log"
        self.log_path = self.dir / "guard.log"
        self.journal_path = self.dir / "refusals.journal"
        self.now = now
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
        base["NPV_GUARD_CONFIG"] = str(self.config)
        if self.now:
            base["NPV_GUARD_NOW"] = self.now
        return base

    def spawn(self, command: str, ready: str, timeout: float) -> None:
        """Start the command and wait for `ready` in its log; a half-started process is killed, so
        that it never takes calls behind the next test's back. Only this start's lines count: a
        restarted process appends to the log of the one before."""
        after = len(self.log())
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([EXE, command], env=self.env(), stdout=log, stderr=log, start_new_session=True)
        try:
            self.wait_for_log(ready, timeout=timeout, after=after)
        except BaseException:
            self.kill()
            raise

    def wait_for_log(self, text: str, *, timeout: float = 10.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"npv-guard exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"npv-guard log never showed {text!r}:\n{self.log()[-3000:]}")

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

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL past `timeout`; the exit status, None when it had to be killed."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None
