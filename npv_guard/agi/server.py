"""A FastAGI server that survives what Asterisk and the network do.

panoramisk 1.4's `Application.handler` reads the AGI header block with `reader.read()` in a loop
that never sees EOF (100% CPU when a client drops mid-handshake), keeps no size limit and no
timeout. Here the header block is read line by line with a byte and line budget and a deadline;
panoramisk's `Request` then speaks the AGI command protocol, each command under a timeout. A
bad session is closed with one log line; the number of sessions is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from panoramisk.fast_agi import Request
from panoramisk.utils import parse_agi_result

from npv_guard.logs import CALL_ID

log = logging.getLogger("npv_guard.agi")

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_LINES = 256
MAX_LINE_BYTES = 4096
# What a script may be given: a few short printable arguments (a number, ids, a postcode). Any
# other AGI client is not Asterisk running our dialplan, and gets nothing set on its channel.
MAX_ARGS = 8
MAX_ARG_CHARS = 128
# Asterisk's unique ids look like 1733046600.42 (or a name given by the dialplan): they become
# call ids in Redis members and audit lines.
CALL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:+\-]{0,64}$")
MAX_CALLER_ID_CHARS = 80


class SessionError(Exception):
    """The session cannot go on; the message says why, for one log line."""


@dataclass
class AgiSession:
    headers: dict[str, str]
    request: Request
    command_timeout: float
    peer: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def script(self) -> str:
        return self.headers.get("agi_network_script", "")

    @property
    def args(self) -> list[str]:
        """agi_arg_1, agi_arg_2, ... as a list."""
        result = []
        index = 1
        while f"agi_arg_{index}" in self.headers:
            result.append(self.headers[f"agi_arg_{index}"])
            index += 1
        return result

    async def command(self, text: str, *, last: bool = False) -> dict[str, Any]:
        """Send one AGI command and read its answer. `last`: no command follows; the guard
        half-closes the connection right behind it. Asterisk ends AGI() when the stream ends, so it
        goes on with the dialplan as soon as it has run the command, instead of waiting for the
        guard to read the answer and close; the guard still reads the answer, to know the command
        was run."""
        verb = text.split(maxsplit=1)[0] if text else ""
        try:
            result = await asyncio.wait_for(self._exchange(text, last), self.command_timeout)
        except TimeoutError:
            raise SessionError(f"no answer to {verb} within {self.command_timeout} s") from None
        except Exception as error:  # EOF and garbage make panoramisk's parser raise ValueError and worse
            raise SessionError(f"connection lost during {verb}: {type(error).__name__}") from None
        if "error" in result:
            raise SessionError(f"{verb} failed: {result.get('msg') or result['error']}")
        return result

    async def _exchange(self, text: str, last: bool) -> dict[str, Any]:
        writer = self.request.writer
        writer.write(text.encode(self.request.encoding) + b"\n")
        if last and writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
        return await self._answer()

    async def _answer(self) -> dict[str, Any]:
        """The answer to the command just sent, as panoramisk's `Request.send_command` reads it:
        past any `100 Trying`, with the usage text that follows a 520."""
        reader = self.request.reader
        result: dict[str, Any] = parse_agi_result((await reader.readline()).decode(self.request.encoding)[:-1])
        while result.get("status_code") == 100:
            result = parse_agi_result((await reader.readline()).decode(self.request.encoding)[:-1])
        if result.get("error") == "AGIUsageError":
            result["msg"] += (await reader.readline()).decode(self.request.encoding)
        return result

    async def set_var(self, name: str, value: str, *, last: bool = False) -> None:
        await self.command(f"SET VARIABLE {name} {_quote(value)}", last=last)

    async def get_var(self, name: str) -> str | None:
        result = await self.command(f"GET VARIABLE {name}")
        flag, value = result.get("result", ("0", ""))
        return str(value) if str(flag) == "1" else None


def _quote(value: str) -> str:
    cleaned = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")
    return f'"{cleaned}"'


Script = Callable[[AgiSession], Awaitable[None]]


class FastAgiServer:
    def __init__(
        self,
        scripts: dict[str, Script],
        *,
        max_sessions: int = 500,
        header_timeout: float = 5.0,
        command_timeout: float = 5.0,
        on_session: Callable[[str], None] | None = None,
        path_secret: str = "",
    ) -> None:
        self.on_session = on_session or (lambda outcome: None)
        self.path_secret = path_secret
        self.scripts = scripts
        self.max_sessions = max_sessions
        self.header_timeout = header_timeout
        self.command_timeout = command_timeout
        self.sessions: set[asyncio.Task[Any]] = set()
        self.served = 0
        self.refused = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.Server:
        # A line budget on the stream itself: readline() past it raises instead of buffering on.
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_LINE_BYTES)
        return self._server

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = _peer(writer)
        if len(self.sessions) >= self.max_sessions:
            self.refused += 1
            self.on_session("refused")
            log.warning("AGI session from %s refused: %d sessions already open", peer, len(self.sessions))
            await _close(writer)
            return
        if task is not None:
            self.sessions.add(task)
        try:
            await self._serve(reader, writer, peer)
        finally:
            if task is not None:
                self.sessions.discard(task)
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        try:
            headers = await asyncio.wait_for(read_headers(reader), self.header_timeout)
        except TimeoutError:
            self.on_session("bad_header")
            log.warning("AGI session from %s closed: no complete header block within %s s", peer, self.header_timeout)
            return
        except SessionError as error:
            self.on_session("bad_header")
            log.warning("AGI session from %s closed: %s", peer, error)
            return
        CALL_ID.set(headers.get("agi_uniqueid", "")[:64])
        script_path = self._script_name(headers.get("agi_network_script", ""))
        if script_path is None:
            self.on_session("unauthorized")
            # Neither the path given nor the secret goes to the log.
            log.warning("AGI session from %s refused: the script path does not start with agi.path_secret", peer)
            return
        script = self.scripts.get(script_path)
        if script is None:
            self.on_session("unknown_script")
            # Nothing is set on the channel, so the dialplan's missing-verdict branch rejects the call.
            log.warning("AGI session from %s closed: unknown script %r", peer, script_path.split("?", 1)[0][:80])
            return
        problem = header_problem(headers)
        if problem is not None:
            self.on_session("bad_argument")
            log.warning("AGI %s from %s refused: %s", script_path, peer, problem)
            return
        session = AgiSession(headers, Request(None, headers, reader, writer), self.command_timeout, peer)
        self.served += 1
        try:
            await script(session)
            self.on_session("served")
        except SessionError as error:
            self.on_session("broken")
            log.warning("AGI %s from %s ended: %s", script_path, peer, error)
        except Exception:
            self.on_session("failed")
            log.exception("AGI %s from %s failed", script_path, peer)

    def _script_name(self, script_path: str) -> str | None:
        """The script named by `agi://HOST:PORT/[SECRET/]NAME`; None when the secret is wrong."""
        path = script_path.strip("/").split("?", 1)[0]
        if not self.path_secret:
            return path
        given, sep, name = path.partition("/")
        if not sep or not hmac.compare_digest(given.encode(), self.path_secret.encode()):
            return None
        return name.strip("/")

    async def close(self, deadline_s: float = 5.0) -> None:
        """Stop accepting, let open sessions finish until the deadline, then cut them."""
        if self._server is not None:
            self._server.close()
        pending = set(self.sessions)
        if pending:
            _, still = await asyncio.wait(pending, timeout=deadline_s)
            for task in still:
                task.cancel()
            for task in still:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


async def read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    """The `agi_*: value` block up to its empty line, within the byte and line budgets."""
    headers: dict[str, str] = {}
    total = 0
    for _ in range(MAX_HEADER_LINES):
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as partial:
            raise SessionError(
                f"connection closed in the header block after {total + len(partial.partial)} bytes"
            ) from None
        except asyncio.LimitOverrunError:
            raise SessionError(f"header line longer than {MAX_LINE_BYTES} bytes") from None
        except (ConnectionError, OSError) as error:
            raise SessionError(f"connection error in the header block: {error}") from None
        total += len(raw)
        if total > MAX_HEADER_BYTES:
            raise SessionError(f"header block larger than {MAX_HEADER_BYTES} bytes")
        line = raw.rstrip(b"\r\n")
        if not line:
            if not headers:
                raise SessionError("empty header block")
            return headers
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise SessionError("header line is not UTF-8") from None
        name, sep, value = text.partition(": ")
        if not sep or not name.startswith("agi_") or not name.replace("_", "").isalnum():
            raise SessionError(f"not an AGI header line: {text[:60]!r}")
        headers[name] = value
    raise SessionError(f"more than {MAX_HEADER_LINES} header lines")


def header_problem(headers: dict[str, str]) -> str | None:
    """Why the arguments, caller ID or unique id cannot come from our dialplan (never the values:
    they may hold a consumer's number), or None."""
    count = 0
    while f"agi_arg_{count + 1}" in headers:
        count += 1
        value = headers[f"agi_arg_{count}"]
        if len(value) > MAX_ARG_CHARS:
            return f"argument {count} longer than {MAX_ARG_CHARS} characters"
        if not value.isprintable():
            return f"argument {count} holds control characters"
    if count > MAX_ARGS:
        return f"more than {MAX_ARGS} arguments"
    if len([name for name in headers if name.startswith("agi_arg_")]) != count:
        return "arguments are not numbered 1, 2, 3..."
    if not CALL_ID_PATTERN.match(headers.get("agi_uniqueid", "")):
        return "agi_uniqueid is not an Asterisk unique id"
    caller = headers.get("agi_callerid", "")
    if len(caller) > MAX_CALLER_ID_CHARS or not caller.isprintable():
        return "agi_callerid is too long or holds control characters"
    return None


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
