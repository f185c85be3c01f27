"""The FastAGI server as Asterisk and the network treat it: a real `npv-guard agi` process on a
loopback port, a real Redis, and a client that replays the header block Asterisk 22 really sends
(recorded from the lab, tests/agi/fixtures) or misbehaves on purpose."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.guard import GuardProcess
from tests.support.redis_servers import RedisServer, free_tcp_port
from tests.support.sockets import closed_by_server

pytestmark = pytest.mark.redis

HEADERS = (Path(__file__).parent / "fixtures" / "asterisk22_check_headers.txt").read_text()


def headers(
    script: str = "check", caller: str = "0612345670", args: tuple[str, ...] = ("0612345678", "", "", "")
) -> str:
    """The recorded block with this session's script, caller, unique id and arguments."""
    replaced = {
        "agi_network_script": script,
        "agi_callerid": caller,
        "agi_uniqueid": f"test-{uuid.uuid4().hex[:8]}",
    }
    lines = []
    for line in HEADERS.splitlines():
        name = line.split(":", 1)[0]
        if not line or name.startswith("agi_arg_"):
            continue
        lines.append(f"{name}: {replaced[name]}" if name in replaced else line)
    lines += [f"agi_arg_{n}: {value}" for n, value in enumerate(args, start=1)]
    return "\n".join(lines) + "\n\n"


class FakeAsterisk:
    """Speaks the Asterisk side of FastAGI: answers every command, remembers channel variables."""

    def __init__(self, port: int, variables: dict[str, str] | None = None) -> None:
        self.port = port
        self.variables = dict(variables or {})
        self.commands: list[str] = []

    async def session(self, block: str, *, patience: float = 10.0) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(block.encode())
        await writer.drain()
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), patience)
                if not line:
                    break
                command = line.decode().rstrip("\n")
                self.commands.append(command)
                writer.write(self._answer(command).encode())
                await writer.drain()
        finally:
            writer.close()
        return self.commands

    def _answer(self, command: str) -> str:
        verb = command.split()
        if verb[:2] == ["SET", "VARIABLE"]:
            self.variables[verb[2]] = command.split(" ", 3)[3].strip('"')
            return "200 result=1\n"
        if verb[:2] == ["GET", "VARIABLE"]:
            value = self.variables.get(verb[2])
            return "200 result=0\n" if value is None else f"200 result=1 ({value})\n"
        return "200 result=0\n"


def agi_guard(redis_server: RedisServer, **options: Any) -> Iterator[GuardProcess]:
    """A real `npv-guard agi` on a free port, its clock replaying Tuesday morning."""
    guard = GuardProcess(
        redis_url=redis_server.url,
        carrier_port=5070,
        key_prefix="agi" + uuid.uuid4().hex[:8],
        now="2026-12-01T10:30:00",
        mode="agi",
        agi_port=free_tcp_port(),
        **options,
    )
    guard.start()
    yield guard
    guard.stop()


@pytest.fixture
def agi(redis_server: RedisServer) -> Iterator[GuardProcess]:
    yield from agi_guard(redis_server)


def port_of(guard: GuardProcess) -> int:
    return int(next(line for line in guard.config.read_text().splitlines() if line.startswith("port = ")).split()[-1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the protocol, as Asterisk 22 speaks it ----------------------------------------------------


async def test_reject_sets_the_verdict_last(agi: GuardProcess) -> None:
    asterisk = FakeAsterisk(port_of(agi))
    commands = await asterisk.session(headers())
    assert commands == [
        'SET VARIABLE NPV_GUARD_REASONS "CALLER_NOT_NPV"',
        'SET VARIABLE NPV_GUARD_CAUSE "21"',
        'SET VARIABLE NPV_GUARD_PROFESSIONAL ""',
        'SET VARIABLE NPV_GUARD_CALLEE "+33612345678"',
        'SET VARIABLE NPV_GUARD_RETRY_AFTER ""',  # a mobile caller ID: time will not fix it
        'SET VARIABLE NPV_GUARD_VERDICT "REJECT"',
    ]
    assert agi.wait_audit("decision")[0]["mode"] == "agi"


async def test_the_include_of_this_version_gets_the_whole_verdict_in_one_command(agi: GuardProcess) -> None:
    asterisk = FakeAsterisk(port_of(agi))
    args = ("0612345678", "", "", "", "spring-26", "L-1", "packed")
    commands = await asterisk.session(headers(args=args))
    # VERDICT|REASONS|CAUSE|PROFESSIONAL|CALLEE|RETRY_AFTER|CAMPAIGN|LEAD: set at once or not at all.
    assert commands == ['SET VARIABLE NPV_GUARD_RESULT "REJECT|CALLER_NOT_NPV|21||+33612345678||spring-26|L-1"']
    decision = agi.wait_audit("decision")[0]
    assert decision["campaign"] == "spring-26" and decision["lead"] == "L-1"


async def test_the_last_command_comes_with_the_end_of_the_stream(agi: GuardProcess) -> None:
    # Asterisk ends AGI() at the end of the stream: the guard half-closes right behind its last
    # command, before the answer, so the dialplan goes on without waiting for the guard's close.
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(agi))
    writer.write(headers(args=("0612345678", "", "", "", "", "", "packed")).encode())
    await writer.drain()
    command = await asyncio.wait_for(reader.readline(), 10)
    assert command.startswith(b"SET VARIABLE NPV_GUARD_RESULT ")
    assert await asyncio.wait_for(reader.read(), 2) == b""  # nothing more, and not answered yet
    writer.write(b"200 result=1\n")  # the half-closed session still reads the answer
    await writer.drain()
    writer.close()

    assert sessions(agi, "served", wait_for=1) == 1


def sessions(guard: GuardProcess, outcome: str, *, wait_for: float, timeout: float = 5.0) -> float:
    """npv_guard_agi_sessions_total{outcome=...}, once it reaches `wait_for` or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        _, text = guard.http("/metrics")
        count = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("npv_guard_agi_sessions_total{") and f'outcome="{outcome}"' in line
        )
        if count >= wait_for or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


async def test_an_older_include_gets_the_end_of_the_stream_after_the_verdict_only(agi: GuardProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(agi))
    writer.write(headers().encode())
    await writer.drain()
    commands = []
    while line := await asyncio.wait_for(reader.readline(), 10):
        commands.append(line.decode().rstrip("\n"))
        writer.write(b"200 result=1\n")
        await writer.drain()
    writer.close()
    assert len(commands) == 6 and commands[-1] == 'SET VARIABLE NPV_GUARD_VERDICT "REJECT"'


async def test_allow_then_refusal_then_reject(agi: GuardProcess) -> None:
    assert (
        agi.cli("consent", "grant", "--professional", "lab", "--callee", "0612345678", "--at", "2026-09-01").returncode
        == 0
    )
    asterisk = FakeAsterisk(port_of(agi))
    await asterisk.session(headers(caller="0162000001"))
    assert asterisk.variables["NPV_GUARD_VERDICT"] == "ALLOW"
    assert asterisk.variables["NPV_GUARD_PROFESSIONAL"] == "lab"
    asterisk.commands.clear()
    await asterisk.session(headers(script="refusal", caller="0162000001", args=("agent",)))
    assert asterisk.variables["NPV_GUARD_REFUSED"] == "1"
    assert any(command.startswith("EXEC PlayTones") for command in asterisk.commands)
    refusal = agi.wait_audit("refusal")[0]
    assert refusal["recorded"] is True and refusal["source"] == "agent"
    asterisk.commands.clear()
    await asterisk.session(headers(script="refusal", caller="0162000001", args=("agent",)))
    assert len(agi.audit("refusal")) == 1  # the same call: acknowledged, not recorded twice
    again = FakeAsterisk(port_of(agi))
    await again.session(headers(caller="0162000001"))
    assert again.variables["NPV_GUARD_VERDICT"] == "REJECT"
    assert again.variables["NPV_GUARD_REASONS"] == "REFUSAL_BLOCK,CONSENT_WITHDRAWN"


async def test_refusal_without_a_checked_call_is_refused_loudly(agi: GuardProcess) -> None:
    asterisk = FakeAsterisk(port_of(agi))
    await asterisk.session(headers(script="refusal", args=("agent",)))
    assert agi.wait_audit("refusal")[0]["recorded"] is False
    assert asterisk.variables["NPV_GUARD_REFUSAL_ERROR"] == "NOT_CHECKED"
    # Nobody is blocked: the alert on lost refusals must see it.
    _, metrics = agi.http("/metrics")
    assert 'npv_guard_refusals_total{mode="agi",outcome="lost",source="agent"} 1.0' in metrics


@pytest.mark.parametrize("professional", ["ACME", "ac me}|x"])
async def test_refusal_for_an_unknown_or_malformed_professional_is_refused(
    agi: GuardProcess, professional: str
) -> None:
    """Channel variables anyone can set: a refusal under a professional the guard does not know
    would block nothing, so it is refused where the dialplan and the audit trail see it."""
    asterisk = FakeAsterisk(port_of(agi), {"NPV_GUARD_PROFESSIONAL": professional, "NPV_GUARD_CALLEE": "+33612345678"})
    await asterisk.session(headers(script="refusal", caller="0162000001", args=("agent",)))
    assert asterisk.variables["NPV_GUARD_REFUSAL_ERROR"] == "UNKNOWN_PROFESSIONAL"
    assert "NPV_GUARD_REFUSED" not in asterisk.variables
    assert any(command == 'EXEC PlayTones "!480/400,!0/100,!480/400"' for command in asterisk.commands)
    audited = agi.wait_audit("refusal")[0]
    assert audited["recorded"] is False and audited["error"] == "UNKNOWN_PROFESSIONAL"
    for text in (agi.log(), agi.audit_path.read_text()):
        assert "612345678" not in text
    history = agi.cli("history", "--professional", "lab", "--callee", "0612345678", "--json")
    assert json.loads(history.stdout)["refusals"] == []


async def test_refusal_with_an_unknown_source_is_refused(agi: GuardProcess) -> None:
    asterisk = FakeAsterisk(port_of(agi), {"NPV_GUARD_PROFESSIONAL": "lab", "NPV_GUARD_CALLEE": "+33612345678"})
    await asterisk.session(headers(script="refusal", args=("0612345678",)))
    assert asterisk.variables["NPV_GUARD_REFUSAL_ERROR"] == "BAD_ARGUMENT"
    assert "612345678" not in agi.log()


@pytest.mark.parametrize(
    "block",
    [
        headers(args=("0612345678", "x" * 200, "", "")),  # an argument no dialplan of ours sends
        headers(args=("0612345678", "lab\x1b[2J", "", "")),  # a control character
        headers(args=("0612345678",) + ("",) * 9),  # too many arguments
        headers().replace("agi_uniqueid: test-", "agi_uniqueid: " + "u" * 100),  # not a unique id
        headers(caller="0" * 200),
    ],
)
async def test_hostile_arguments_set_nothing(agi: GuardProcess, block: str) -> None:
    """Not Asterisk running our dialplan: no verdict, so a real channel would fail closed."""
    assert await FakeAsterisk(port_of(agi)).session(block) == []
    agi.wait_for_log("refused: ", timeout=5)


@pytest.fixture
def agi_with_secret(redis_server: RedisServer) -> Iterator[GuardProcess]:
    yield from agi_guard(redis_server, agi={"path_secret": PATH_SECRET})


PATH_SECRET = "s3cret-path-0123456789"


async def test_path_secret_is_required_when_set(agi_with_secret: GuardProcess) -> None:
    port = port_of(agi_with_secret)
    wrong = ("check", "/check", "wrong-secret-0123456789/check", f"{PATH_SECRET[:-1]}/check", f"{PATH_SECRET}x/check")
    for path in wrong:
        assert await FakeAsterisk(port).session(headers(script=path)) == [], path
    log = agi_with_secret.log()
    assert "agi.path_secret" in log and PATH_SECRET not in log and "wrong-secret" not in log
    answered = FakeAsterisk(port)
    commands = await answered.session(headers(script=f"{PATH_SECRET}/check"))
    assert commands[-1] == 'SET VARIABLE NPV_GUARD_VERDICT "REJECT"'
    refusal = FakeAsterisk(port)
    await refusal.session(headers(script=f"/{PATH_SECRET}/refusal", args=("agent",)))
    assert refusal.variables["NPV_GUARD_REFUSAL_ERROR"] == "NOT_CHECKED"  # reached the script


async def test_unknown_script_sets_nothing(agi: GuardProcess) -> None:
    assert await FakeAsterisk(port_of(agi)).session(headers(script="../etc/passwd")) == []


# --- hostile and broken clients ------------------------------------------------------------------


async def _closed_by_server(port: int, payload: bytes, within: float) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if payload:
            writer.write(payload)
            await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), within)
        return data == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        writer.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\xff\xfe garbage \x80\x81\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"agi_network_script check\n\n",
        b"\n",
        b"agi_network_script: check\n" + b"agi_x: " + b"y" * 100_000,  # one line far too long
        b"".join(f"agi_h{n}: {'v' * 100}\n".encode() for n in range(400)) + b"\n",  # too many bytes and lines
        "agi_network_script: check\nagi_callerid: é\xa0\u202e\n\n".encode("latin-1", "replace"),
    ],
)
async def test_garbage_gets_a_clean_close(agi: GuardProcess, payload: bytes) -> None:
    assert await _closed_by_server(port_of(agi), payload, within=3.0)


async def test_silent_client_is_closed_after_the_header_timeout(agi: GuardProcess) -> None:
    started = time.monotonic()
    assert await _closed_by_server(port_of(agi), b"agi_network_script: check\n", within=6.0)
    assert 1.5 < time.monotonic() - started < 5.0  # header_timeout_s = 2 in the test config


async def test_drops_mid_handshake_do_not_spin(agi: GuardProcess) -> None:
    port = port_of(agi)
    for cut in range(100):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(headers().encode()[: 10 + cut * 7])
        await writer.drain()
        writer.close()
    await asyncio.sleep(0.5)
    assert agi.process is not None
    before = cpu_seconds(agi.process.pid)
    await asyncio.sleep(2.0)
    assert cpu_seconds(agi.process.pid) - before < 0.3  # panoramisk 1.4 would burn 2 s here
    assert "connection closed in the header block" in agi.log()
    assert (await FakeAsterisk(port).session(headers()))[-1].endswith('"REJECT"')  # still serving


async def test_client_gone_mid_command_leaves_the_server_serving(agi: GuardProcess) -> None:
    port = port_of(agi)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(headers().encode())
    await writer.drain()
    await reader.readline()  # the first SET VARIABLE, never answered
    writer.close()
    await writer.wait_closed()
    agi.wait_for_log("connection lost during SET", timeout=5)
    assert (await FakeAsterisk(port).session(headers()))[-1].endswith('"REJECT"')


async def test_hundreds_of_concurrent_sessions(agi: GuardProcess) -> None:
    assert (
        agi.cli("consent", "grant", "--professional", "lab", "--callee", "0612345678", "--at", "2026-09-01").returncode
        == 0
    )
    port = port_of(agi)
    clients = [FakeAsterisk(port) for _ in range(300)]
    callers = ["0612345670", "0162000001", "anonymous"]
    await asyncio.gather(*(c.session(headers(caller=callers[i % 3]), patience=20) for i, c in enumerate(clients)))
    verdicts = [client.variables.get("NPV_GUARD_VERDICT") for client in clients]
    assert None not in verdicts
    allowed = [i for i, verdict in enumerate(verdicts) if verdict == "ALLOW"]
    assert len(allowed) == 4  # the cap holds under concurrency too
    assert all(i % 3 == 1 for i in allowed)


async def test_refusal_of_an_unplaceable_callee_leaks_no_number(agi: GuardProcess) -> None:
    # Channel variables the dialplan (or anyone on the channel) set: the callee is a service number.
    asterisk = FakeAsterisk(port_of(agi), {"NPV_GUARD_PROFESSIONAL": "lab", "NPV_GUARD_CALLEE": "0899345678"})
    await asterisk.session(headers(script="refusal", caller="0162000001", args=("agent",)))
    refusal = agi.wait_audit("refusal")[0]
    assert refusal["recorded"] is False and refusal["error"]
    assert "899345678" not in agi.audit_path.read_text()
    assert "899345678" not in agi.log()


def test_the_health_listener_closes_slow_clients_and_answers_json(agi: GuardProcess) -> None:
    """/healthz and /metrics (http.listen) have deadlines too: 15 s idle, 5 s for headers."""
    idle = socket.create_connection(("127.0.0.1", agi.http_port), timeout=10)
    partial = socket.create_connection(("127.0.0.1", agi.http_port), timeout=10)
    malformed = socket.create_connection(("127.0.0.1", agi.http_port), timeout=10)
    try:
        partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pa")
        malformed.sendall(b"GET /metrics?n=0612345678 HTTP/1.1\r\nX-Callee 0612345678\r\n\r\n")
        answer = closed_by_server(malformed, 10)
        assert answer is not None and b"application/json" in answer and b"612345678" not in answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "BAD_REQUEST"
        assert closed_by_server(partial, 60) == b""
        assert closed_by_server(idle, 60) == b""
    finally:
        for sock in (idle, partial, malformed):
            sock.close()
    assert agi.http("/healthz")[0] in (200, 503)
    assert "612345678" not in agi.log()
