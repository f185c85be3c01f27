"""Helpers for tests against the real-Asterisk lab.

The lab (``scripts/asterisk-lab``) runs Debian sid's Asterisk from a chroot
in the host's network namespace, on the loopback only, with the configuration
shared with the container image (``asterisk/base/`` + the lab's overlay ``asterisk/lab/``):

==========================  ==============================================
127.0.0.1:5060/udp          Asterisk SIP (PJSIP)
127.0.0.1:8088              Asterisk HTTP / ARI (``npvguard``/``npvguard-lab``)
127.0.0.1:5038              AMI (``npvguard``/``npvguard-lab``)
127.0.0.1:5070/udp          the carrier AOR (a sipp UAS plays the consumer)
SIP from 127.0.0.1          endpoint ``dialer``: the guard (ARI mode)
SIP from 127.0.0.2          endpoint ``dialer-plain``: baseline, no guard
SIP from 127.0.0.3          endpoint ``dialer-agi``: FastAGI mode, the admin's own Dial()
SIP from 127.0.0.4          endpoint ``platform``: an SMS platform (ARI)
SIP from 127.0.0.5          endpoint ``carrier``: consumers' SMS replies
SIP from 127.0.0.6          endpoint ``freepbx-phone``: a FreePBX outbound route (FastAGI)
==========================  ==============================================

Typical use (see ``tests/lab/test_lab_smoke.py``)::

    ensure_lab_root()
    lab = AsteriskLab()
    lab.start()
    uas = run_sipp("uas_answer.xml", local_port=free_udp_port(), background=True)
    uac = run_sipp("uac.xml", local_ip=DIALER_PLAIN_IP, service="0612345678",
                   variables={"carrier_port": str(uas.local_port)})
    assert uac.ok and uas.wait().ok
    lab.wait_no_channels()
    lab.stop()

Every sipp run is bounded three ways (``-timeout`` + ``-timeout_error`` +
coreutils ``timeout``), always gets explicit ``-i``/``-mi``/``-p``/``-mp``,
and only ever talks to loopback addresses (checked).

Only the standard library is used.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO_ROOT / "scripts" / "asterisk-lab"
SIPP_DIR = REPO_ROOT / "tests" / "sipp"
GEN_DTMF_PCAP = SIPP_DIR / "gen_dtmf_pcap.py"

SIP_HOST = "127.0.0.1"
SIP_PORT = 5060
SIP_TARGET = f"{SIP_HOST}:{SIP_PORT}"
CARRIER_PORT = 5070
DIALER_IP = "127.0.0.1"
DIALER_PLAIN_IP = "127.0.0.2"
DIALER_AGI_IP = "127.0.0.3"
DIALER_FREEPBX_IP = "127.0.0.6"

ARI_BASE_URL = "http://127.0.0.1:8088/ari"
# Lab instance 2 (NPV_LAB_INSTANCE=2, asterisk/lab/vars2): the same root and dialplan, its own
# ports, for the "several Asterisks, one state" tests.
SIP_PORT_2 = 5160
ARI_PORT_2 = 8188
AGI_PORT_2 = 4583
ARI_USER = "npvguard"
ARI_PASSWORD = "npvguard-lab"
ARI_APP = "npv-guard"
AMI_HOST = "127.0.0.1"
AMI_PORT = 5038
AMI_USER = "npvguard"
AMI_SECRET = "npvguard-lab"

#: Marker written to the Asterisk log by the lab's trap context.
TRAP_MARKER = "NPV_TRAP"

_DEFAULT_ROOT = "/var/cache/npv-guard/asterisk-root"
_DEFAULT_RUN = "/tmp/npv-lab"
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class LabError(RuntimeError):
    """The lab could not be built, started, stopped or queried."""


# --------------------------------------------------------------------------- lab script


def _lab_env(instance: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NPV_LAB_ROOT", _DEFAULT_ROOT)
    env.setdefault("NPV_LAB_RUN", _DEFAULT_RUN)
    if instance != 1:
        env["NPV_LAB_INSTANCE"] = str(instance)
        env["NPV_LAB_RUN"] = env["NPV_LAB_RUN"].rstrip("/") + str(instance)
    return env


def _failed_step(stderr: str) -> str:
    match = re.search(r"FAILED at step: (.+)", stderr)
    return match.group(1).strip() if match else "unknown step"


def _run_lab(*args: str, timeout: float, instance: int = 1) -> subprocess.CompletedProcess[str]:
    cmd = [str(LAB_SCRIPT), *args]
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_lab_env(instance),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`asterisk-lab {' '.join(args)}` did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise LabError(
            f"`asterisk-lab {' '.join(args)}` FAILED at step: {_failed_step(proc.stderr)}\n"
            f"--- stderr ---\n{proc.stderr.strip()}\n--- stdout ---\n{proc.stdout.strip()}"
        )
    return proc


def ensure_lab_root() -> None:
    """Build the Debian sid + Asterisk root once per machine (no-op when built).

    Raises :class:`LabError` naming the failed step (debootstrap, apt-get
    update/install in the root, ...) so that a broken sid never passes
    silently.
    """
    _run_lab("build", timeout=1800)


# --------------------------------------------------------------------------- Asterisk


class AsteriskLab:
    """Control of the lab Asterisk (via ``scripts/asterisk-lab``) and its ARI."""

    def __init__(self, instance: int = 1) -> None:
        """`instance` 2 is the lab's second Asterisk (SIP 5160, ARI 8188, AGI 4583), same root."""
        self.instance = instance
        env = _lab_env(instance)
        self.root = Path(env["NPV_LAB_ROOT"])
        self.run_dir = Path(env["NPV_LAB_RUN"])
        var = "var/lib/npv-lab" + ("" if instance == 1 else str(instance))
        self.log_path = self.root / var / "log/full"
        self.messages_log_path = self.root / var / "log/messages"
        self.sip_target = f"{SIP_HOST}:{SIP_PORT if instance == 1 else SIP_PORT_2}"
        self.ari_url = "http://127.0.0.1:8088" if instance == 1 else f"http://127.0.0.1:{ARI_PORT_2}"

    # -- lifecycle
    def start(self) -> None:
        """Build if needed, copy the lab config, start; return when ARI answers."""
        _run_lab("start", timeout=1800, instance=self.instance)

    def stop(self) -> None:
        """Stop Asterisk (``core stop now``, then signals); idempotent."""
        _run_lab("stop", timeout=60, instance=self.instance)

    def restart(self) -> None:
        """Stop, then start with a fresh copy of the config and fresh logs."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        proc = subprocess.run(
            [str(LAB_SCRIPT), "status"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            env=_lab_env(self.instance),
            stdin=subprocess.DEVNULL,
        )
        return "asterisk: running" in proc.stdout

    def __enter__(self) -> AsteriskLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- CLI
    def rx(self, command: str) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) and return its output."""
        return _run_lab("rx", command, timeout=30, instance=self.instance).stdout

    # -- ARI
    def ari(self, method: str, path: str, *, params: Mapping[str, str] | None = None, timeout: float = 5.0) -> Any:
        """Call ARI (``path`` relative to /ari, e.g. ``/channels``); return decoded JSON or None."""
        url = self.ari_url + "/ari" + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, method=method)
        token = base64.b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise LabError(f"ARI {method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
        except OSError as exc:
            raise LabError(f"ARI {method} {path}: {exc}") from exc
        return json.loads(body) if body else None

    def info(self) -> dict[str, Any]:
        """``GET /ari/asterisk/info`` (system, build, status)."""
        result: dict[str, Any] = self.ari("GET", "/asterisk/info")
        return result

    def channels(self) -> list[dict[str, Any]]:
        """Active channels as ARI channel objects."""
        result: list[dict[str, Any]] = self.ari("GET", "/channels")
        return result

    def channel_count(self) -> int:
        """Number of active channels (ARI ``GET /ari/channels``)."""
        return len(self.channels())

    def hangup_all(self) -> None:
        """Hang up every channel (``channel request hangup all``)."""
        self.rx("channel request hangup all")

    def wait_no_channels(self, timeout: float = 10.0, *, hangup_leftovers: bool = True) -> None:
        """Wait until Asterisk has no channel left.

        If some are still there after ``timeout`` seconds, raise
        :class:`LabError` listing them; with ``hangup_leftovers`` (default)
        they are hung up first so the next test starts clean. Remember that
        hung-up legs may still get BYE retransmissions for ~32 s: give the
        next test fresh sipp ports (:func:`free_udp_port`).
        """
        deadline = time.monotonic() + timeout
        left: list[dict[str, Any]] = []
        while True:
            left = self.channels()
            if not left:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        names = ", ".join(f"{c.get('name')} ({c.get('state')})" for c in left)
        if hangup_leftovers:
            self.hangup_all()
        raise LabError(f"{len(left)} channel(s) still up after {timeout:.1f} s: {names}")

    # -- logs and traps
    def log_text(self, since: int = 0) -> str:
        """The Asterisk ``full`` log of the current run (from byte ``since``)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(since)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current size of the ``full`` log; pass it as ``since=`` later."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_log(self, pattern: str, *, since: int = 0, timeout: float = 5.0) -> re.Match[str]:
        """Wait until a line of the log (after ``since``) matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(since))
            if match:
                return match
            if time.monotonic() >= deadline:
                raise LabError(f"no log line matching {pattern!r} within {timeout:.1f} s")
            time.sleep(0.05)

    def trap_hits(self, since: int = 0) -> list[str]:
        """Log lines written by the dialplan traps (paths that must never run)."""
        return [line for line in self.log_text(since).splitlines() if TRAP_MARKER in line and "ERROR" in line]


@dataclasses.dataclass
class LabCheck:
    """Per-test view of the lab (see the ``lab`` fixture in tests/lab/conftest.py).

    ``mark`` is the log offset from which trap hits are counted at the end of
    the test; call :meth:`reset_mark` after deliberately hitting a trap.
    """

    lab: AsteriskLab
    mark: int

    def reset_mark(self) -> None:
        self.mark = self.lab.log_mark()


# --------------------------------------------------------------------------- ports


_HANDED_OUT: set[int] = set()
_MEDIA_HANDED_OUT: set[int] = set()
_MEDIA_RANGE = (30000, 32700)  # below the kernel's ephemeral range, above Asterisk's RTP 20000-20200


def _check_loopback(address: str, what: str) -> None:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{what} must be a loopback IP address, got {address!r}") from exc
    if ip not in _LOOPBACK:
        raise ValueError(f"{what} must be on the loopback (127.0.0.0/8), got {address!r}")


def _udp_port_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def free_udp_port(ip: str = "127.0.0.1") -> int:
    """A UDP port free on ``ip`` and never handed out before by this process.

    Never reusing a port within a test session keeps late retransmissions
    (e.g. Asterisk's BYEs of an earlier call) away from later sipp runs.
    """
    _check_loopback(ip, "ip")
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((ip, 0))
            port = int(sock.getsockname()[1])
        if port in _HANDED_OUT or port in (SIP_PORT, CARRIER_PORT):
            continue
        _HANDED_OUT.add(port)
        return port
    raise LabError("could not find a free UDP port")


def free_media_port(ip: str = "127.0.0.1") -> int:
    """An even UDP port P with P..P+3 free on ``ip`` (sipp binds P and P+2; RTCP would use +1/+3).

    Blocks are not handed out twice until the range runs out (a long soak places more calls
    than it holds): then the ones no socket holds any more are handed out again. Late RTP on a
    media port does no harm, unlike a late SIP retransmission on a signalling port.
    """
    _check_loopback(ip, "ip")
    rng = random.Random()
    for attempt in range(1000):
        port = rng.randrange(_MEDIA_RANGE[0], _MEDIA_RANGE[1], 2)
        block = range(port, port + 4)
        if attempt < 500 and any(p in _MEDIA_HANDED_OUT for p in block):
            continue
        if all(_udp_port_free(ip, p) for p in block):
            _MEDIA_HANDED_OUT.update(block)
            return port
    raise LabError("could not find 4 free consecutive UDP ports for sipp media")


def _udp_bound(ip: str, port: int) -> bool:
    """True if some socket is bound to ip:port (IPv4) according to /proc/net/udp."""
    want = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}"
    wildcard = f"00000000:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return not _udp_port_free(ip, port)
    return any(line.split()[1] in (want, wildcard) for line in lines if len(line.split()) > 1)


# --------------------------------------------------------------------------- sipp


@dataclasses.dataclass(frozen=True)
class SipMessage:
    """One SIP message from a sipp ``-trace_msg`` file."""

    direction: Literal["sent", "received"]
    timestamp: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str | None:
        """Request method, or the CSeq method of a response."""
        if self.is_request:
            return self.first_line.split(" ", 1)[0]
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else None

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        parts = self.first_line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive), or None."""
        head = self.text.split("\n\n", 1)[0]
        prefix = name.lower() + ":"
        for line in head.split("\n")[1:]:
            if line.lower().startswith(prefix):
                return line.split(":", 1)[1].strip()
        return None

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1] if len(parts) > 1 else ""


_TRACE_SPLIT = re.compile(r"^-{20,} (\S+ \S+)\n", re.MULTILINE)


def parse_message_trace(trace: str) -> list[SipMessage]:
    """Parse a sipp ``-trace_msg`` file into messages (CRLF normalised to LF)."""
    trace = trace.replace("\r\n", "\n")
    chunks = _TRACE_SPLIT.split(trace)
    messages: list[SipMessage] = []
    # chunks: [preamble, ts1, body1, ts2, body2, ...]
    for i in range(1, len(chunks) - 1, 2):
        stamp, block = chunks[i], chunks[i + 1]
        header, _, rest = block.partition("\n")
        if " sent" in header:
            direction: Literal["sent", "received"] = "sent"
        elif "received" in header:
            direction = "received"
        else:
            continue
        text = rest.lstrip("\n").rstrip("\n")
        if text:
            messages.append(SipMessage(direction, stamp, text))
    return messages


_WORKDIRS: list[Path] = []


def _cleanup_workdirs() -> None:
    """Remove sipp trace dirs at exit, unless NPV_LAB_KEEP_TRACES=1."""
    if os.environ.get("NPV_LAB_KEEP_TRACES") == "1":
        return
    for path in _WORKDIRS:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup_workdirs)

_IGNORED_ERROR_LINES = re.compile(r"receive timeout on message .* jumping to label|^\s*$")


@dataclasses.dataclass
class SippResult:
    """Outcome of one sipp run."""

    command: list[str]
    returncode: int
    successful: int
    failed: int
    stdout: str
    stderr: str
    message_trace: str
    error_trace: str
    log_trace: str
    stat_csv: str
    workdir: Path
    local_ip: str
    local_port: int
    media_port: int

    @property
    def ok(self) -> bool:
        """sipp exited 0 (all calls successful) and counted at least one success."""
        return self.returncode == 0 and self.successful > 0 and self.failed == 0

    @property
    def messages(self) -> list[SipMessage]:
        return parse_message_trace(self.message_trace)

    def received(self, method_or_code: str | int | None = None) -> list[SipMessage]:
        """Received messages; filter by request method ("INVITE") or status code (486)."""
        return _filter(self.messages, "received", method_or_code)

    def sent(self, method_or_code: str | int | None = None) -> list[SipMessage]:
        """Sent messages; filter by request method ("BYE") or status code (200)."""
        return _filter(self.messages, "sent", method_or_code)

    def final_status(self, method: str = "INVITE") -> int | None:
        """The final (>= 200) status code received for the INVITE (or `method`), if any."""
        for msg in self.received():
            if not msg.is_request and msg.method == method and (msg.status or 0) >= 200:
                return msg.status
        return None

    @property
    def errors(self) -> str:
        """The error trace without sipp's routine 'receive timeout ... jumping' lines."""
        return "\n".join(line for line in self.error_trace.splitlines() if not _IGNORED_ERROR_LINES.search(line))

    def describe(self) -> str:
        """A summary for assertion messages."""
        flow = " | ".join(f"{'->' if m.direction == 'sent' else '<-'} {m.first_line}" for m in self.messages)
        return (
            f"sipp rc={self.returncode} successful={self.successful} failed={self.failed}\n"
            f"command: {' '.join(self.command)}\nflow: {flow}\n"
            f"errors: {self.errors[-2000:]}\nlogs: {self.log_trace[-1000:]}\nstderr: {self.stderr[-1000:]}"
        )


def _filter(messages: list[SipMessage], direction: str, key: str | int | None) -> list[SipMessage]:
    out = [m for m in messages if m.direction == direction]
    if key is None:
        return out
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        return [m for m in out if m.status == int(key)]
    return [m for m in out if m.is_request and m.method == key.upper()]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _parse_counts(stat_csv: str, stdout: str) -> tuple[int, int]:
    lines = [line for line in stat_csv.splitlines() if line.strip()]
    if len(lines) >= 2:
        header = lines[0].split(";")
        last = lines[-1].split(";")
        try:
            ok = int(last[header.index("SuccessfulCall(C)")])
            failed = int(last[header.index("FailedCall(C)")])
            return ok, failed
        except (ValueError, IndexError):
            pass
    ok_match = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", stdout)
    failed_match = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", stdout)
    return (int(ok_match[-1]) if ok_match else 0, int(failed_match[-1]) if failed_match else 0)


def _scenario_path(scenario: str | os.PathLike[str]) -> Path:
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        candidate = SIPP_DIR / path
        if candidate.suffix != ".xml":
            candidate = candidate.with_suffix(".xml")
        path = candidate
    if not path.is_file():
        raise FileNotFoundError(f"sipp scenario not found: {scenario}")
    return path.resolve()


def _is_server_scenario(path: Path) -> bool:
    root = ET.parse(path).getroot()
    for element in root:
        if element.tag in ("send", "recv"):
            return element.tag == "recv"
    return False


class SippProcess:
    """A sipp running in the background (typically a UAS started before the UAC)."""

    def __init__(
        self,
        popen: subprocess.Popen[str],
        finish: Any,
        local_ip: str,
        local_port: int,
        media_port: int,
    ) -> None:
        self._popen = popen
        self._finish = finish
        self.local_ip = local_ip
        self.local_port = local_port
        self.media_port = media_port
        self._result: SippResult | None = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    def running(self) -> bool:
        return self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to end by itself (its -m calls done or -timeout hit)."""
        if self._result is None:
            try:
                stdout, stderr = self._popen.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                raise LabError(f"sipp (pid {self.pid}) still running after {timeout} s; stopped") from None
            self._result = self._finish(self._popen.returncode, stdout, stderr)
        return self._result

    def stop(self, grace: float = 3.0) -> SippResult:
        """Stop sipp now (SIGUSR1 = sipp's smooth exit, then SIGTERM/SIGKILL) and collect the result."""
        if self._result is not None:
            return self._result
        if self._popen.poll() is None:
            for child in _children(self._popen.pid):
                _signal(child, signal.SIGUSR1)
            try:
                stdout, stderr = self._popen.communicate(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(self._popen.pid, signal.SIGTERM)
                try:
                    stdout, stderr = self._popen.communicate(timeout=grace)
                except subprocess.TimeoutExpired:
                    _signal_group(self._popen.pid, signal.SIGKILL)
                    stdout, stderr = self._popen.communicate()
        else:
            stdout, stderr = self._popen.communicate()
        self._result = self._finish(self._popen.returncode, stdout, stderr)
        return self._result

    def __enter__(self) -> SippProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out.extend(int(x) for x in task.read_text().split())
    return out


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


@overload
def run_sipp(
    scenario: str | os.PathLike[str],
    *,
    target: str = ...,
    local_ip: str = ...,
    local_port: int | None = ...,
    media_port: int | None = ...,
    service: str | None = ...,
    calls: int = ...,
    rate: float | None = ...,
    variables: Mapping[str, str] | None = ...,
    timeout_s: float = ...,
    background: Literal[False] = ...,
    extra_args: Sequence[str] = ...,
) -> SippResult: ...


@overload
def run_sipp(
    scenario: str | os.PathLike[str],
    *,
    target: str = ...,
    local_ip: str = ...,
    local_port: int | None = ...,
    media_port: int | None = ...,
    service: str | None = ...,
    calls: int = ...,
    rate: float | None = ...,
    variables: Mapping[str, str] | None = ...,
    timeout_s: float = ...,
    background: Literal[True],
    extra_args: Sequence[str] = ...,
) -> SippProcess: ...


def run_sipp(
    scenario: str | os.PathLike[str],
    *,
    target: str = SIP_TARGET,
    local_ip: str = "127.0.0.1",
    local_port: int | None = None,
    media_port: int | None = None,
    service: str | None = None,
    calls: int = 1,
    rate: float | None = None,
    variables: Mapping[str, str] | None = None,
    timeout_s: float = 20,
    background: bool = False,
    extra_args: Sequence[str] = (),
) -> SippResult | SippProcess:
    """Run a sipp scenario (a name in tests/sipp, e.g. ``"uac.xml"``, or a path).

    Always passes ``-i/-mi local_ip``, ``-p``, ``-mp``, ``-m calls``,
    ``-timeout timeout_s`` + ``-timeout_error`` and wraps sipp in coreutils
    ``timeout`` (timeout_s + 10 s, then SIGKILL 5 s later). Ports are picked
    free (and never reused in this process) when not given. Traces
    (``-trace_msg``, ``-trace_err``, ``-trace_stat``, ``-trace_logs``) go to a
    fresh temp dir (removed at interpreter exit unless NPV_LAB_KEEP_TRACES=1).
    Client scenarios send to ``target``; server scenarios (first element
    ``<recv>``) only listen.

    ``background=False`` returns a :class:`SippResult` once sipp is done;
    ``background=True`` returns a :class:`SippProcess` as soon as sipp's SIP
    port is bound (start a UAS this way before the UAC; then ``wait()`` or
    ``stop()`` it).
    """
    path = _scenario_path(scenario)
    _check_loopback(local_ip, "local_ip")
    _check_loopback(target, "target")
    if shutil.which("sipp") is None:
        raise LabError("sipp is not installed (Debian package sip-tester)")
    port = local_port if local_port is not None else free_udp_port(local_ip)
    mport = media_port if media_port is not None else free_media_port(local_ip)
    workdir = Path(tempfile.mkdtemp(prefix=f"npv-sipp-{path.stem}-"))
    _WORKDIRS.append(workdir)
    files = {
        "msg": workdir / "messages.log",
        "err": workdir / "errors.log",
        "stat": workdir / "stats.csv",
        "log": workdir / "actions.log",
    }
    sipp_cmd: list[str] = ["sipp"]
    if not _is_server_scenario(path):
        sipp_cmd.append(target)
    sipp_cmd += ["-sf", str(path)]
    sipp_cmd += ["-i", local_ip, "-mi", local_ip, "-p", str(port), "-mp", str(mport)]
    sipp_cmd += ["-m", str(calls), "-timeout", f"{timeout_s:g}s", "-timeout_error", "-nostdin"]
    sipp_cmd += ["-trace_msg", "-message_file", str(files["msg"])]
    sipp_cmd += ["-trace_err", "-error_file", str(files["err"])]
    sipp_cmd += ["-trace_stat", "-stf", str(files["stat"]), "-fd", "1"]
    sipp_cmd += ["-trace_logs", "-log_file", str(files["log"])]
    if service is not None:
        sipp_cmd += ["-s", service]
    if rate is not None:
        sipp_cmd += ["-r", f"{rate:g}"]
    for name, value in (variables or {}).items():
        sipp_cmd += ["-set", name, value]
    sipp_cmd += list(extra_args)
    hard_limit = timeout_s + 10
    command = ["timeout", "--kill-after=5", f"{hard_limit:g}", *sipp_cmd]

    def finish(returncode: int, stdout: str, stderr: str) -> SippResult:
        stat_csv = _read(files["stat"])
        ok, failed = _parse_counts(stat_csv, stdout)
        return SippResult(
            command=command,
            returncode=returncode,
            successful=ok,
            failed=failed,
            stdout=stdout,
            stderr=stderr,
            message_trace=_read(files["msg"]),
            error_trace=_read(files["err"]),
            log_trace=_read(files["log"]),
            stat_csv=stat_csv,
            workdir=workdir,
            local_ip=local_ip,
            local_port=port,
            media_port=mport,
        )

    popen = subprocess.Popen(
        command,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if not background:
        try:
            stdout, stderr = popen.communicate(timeout=hard_limit + 15)
        except subprocess.TimeoutExpired:
            _signal_group(popen.pid, signal.SIGKILL)
            stdout, stderr = popen.communicate()
        return finish(popen.returncode, stdout, stderr)

    process = SippProcess(popen, finish, local_ip, port, mport)
    deadline = time.monotonic() + 5
    while not _udp_bound(local_ip, port):
        if popen.poll() is not None:
            result = process.wait()
            raise LabError(f"background sipp exited at once\n{result.describe()}")
        if time.monotonic() > deadline:
            process.stop()
            raise LabError(f"background sipp did not bind {local_ip}:{port} within 5 s")
        time.sleep(0.02)
    return process


# --------------------------------------------------------------------------- RFC 4733 captures


def dtmf_2833_scenario(scenario: str | os.PathLike[str], digits: str, workdir: Path) -> Path:
    """Copy an RFC 4733 scenario into ``workdir`` with a capture of ``digits``.

    The scenario's ``play_pcap_audio`` path (relative to the scenario file,
    as sipp 3.6 resolves it) is regenerated with tests/sipp/gen_dtmf_pcap.py,
    so e.g. ``dtmf_2833_scenario("uac_dtmf_2833.xml", "123#", tmp_path)``
    plays 1, 2, 3, #. Returns the path of the copied scenario.
    """
    source = _scenario_path(scenario)
    text = source.read_text()
    pcaps = re.findall(r'play_pcap_audio="([^"]+)"', text)
    if not pcaps:
        raise ValueError(f"{source.name} plays no pcap")
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / source.name
    shutil.copyfile(source, target)
    for rel in set(pcaps):
        out = (workdir / rel).resolve()
        if workdir.resolve() not in out.parents:
            raise ValueError(f"pcap path escapes the work dir: {rel}")
        proc = subprocess.run(
            ["python3", str(GEN_DTMF_PCAP), digits, "-o", str(out)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise LabError(f"gen_dtmf_pcap failed: {proc.stderr.strip()}")
    return target


def sipp_available() -> bool:
    return shutil.which("sipp") is not None


def lab_prerequisites_missing() -> list[str]:
    """What this machine lacks to run the lab (for pytest skip/fail messages)."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (chroot/debootstrap/raw sockets)")
    for tool in ("sipp", "debootstrap", "chroot", "curl", "ss", "timeout", "flock"):
        if shutil.which(tool) is None:
            missing.append(tool)
    return missing


__all__ = [
    "AGI_PORT_2",
    "AMI_HOST",
    "AMI_PORT",
    "AMI_SECRET",
    "AMI_USER",
    "ARI_APP",
    "ARI_BASE_URL",
    "ARI_PASSWORD",
    "ARI_PORT_2",
    "ARI_USER",
    "CARRIER_PORT",
    "DIALER_AGI_IP",
    "DIALER_IP",
    "DIALER_PLAIN_IP",
    "SIP_PORT_2",
    "SIP_TARGET",
    "AsteriskLab",
    "LabCheck",
    "LabError",
    "SipMessage",
    "SippProcess",
    "SippResult",
    "dtmf_2833_scenario",
    "ensure_lab_root",
    "free_media_port",
    "free_udp_port",
    "lab_prerequisites_missing",
    "parse_message_trace",
    "run_sipp",
]
