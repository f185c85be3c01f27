"""The SIP bench's clock: the lab's SIP packets captured on the loopback, kernel-timestamped.

sipp's response times come in whole milliseconds from its event loop's clock tick (4 ms steps on
the bench machine), too coarse for targets of a few milliseconds. Here an AF_PACKET socket on `lo`
(root only), filtered in the kernel to UDP to or from Asterisk's SIP port, receives every SIP
datagram with the kernel's nanosecond receive timestamp (SO_TIMESTAMPNS) and writes it to a pcap
file (nanosecond pcap, raw IPv4 link type: Wireshark and tcpdump read it). `call_timings` then
matches, per call:

  dialer INVITE -> Asterisk           (Call-ID A, initial INVITE: no To tag)
  Asterisk 180/183, 200 -> dialer     (Call-ID A, CSeq ... INVITE)
  Asterisk INVITE -> carrier          (Call-ID B, same called number: distinct per call)
  carrier 180, 200 -> Asterisk        (Call-ID B)

so the answer delay splits into the decision (dialer INVITE to carrier INVITE), the carrier's own
answer (carrier INVITE to its 200) and the answer relay (carrier 200 to the dialer's 200).
"""

from __future__ import annotations

import ctypes
import dataclasses
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # lo shows every datagram twice: once sent (this), once received (kept)
SO_TIMESTAMPNS = 35  # Linux; not exported by the socket module
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_STATISTICS = 6
PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_IPV4 = 228
LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113


def _port_filter(ports: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """Classic BPF on an IPv4 packet (SOCK_DGRAM packet socket: offset 0 is the IP header):
    accept unfragmented UDP or TCP with one of `ports` as source or destination port."""
    body: list[tuple[int, int | str, int | str, int]] = [
        (0x30, 0, 0, 9),  # ldb [9]              protocol
        (0x15, 1, 0, 17),  # jeq #17 (UDP) -> fragment check
        (0x15, 0, "drop", 6),  # jeq #6 (TCP) else drop
        (0x28, 0, 0, 6),  # ldh [6]              flags + fragment offset
        (0x45, "drop", 0, 0x1FFF),  # a later fragment has no port
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)     IP header length
        (0x48, 0, 0, 0),  # ldh [x+0]            source port
        *((0x15, "accept", 0, port) for port in ports),
        (0x48, 0, 0, 2),  # ldh [x+2]            destination port
        *((0x15, "accept", 0, port) for port in ports[:-1]),
        (0x15, "accept", "drop", ports[-1]),
    ]
    labels = {"accept": len(body), "drop": len(body) + 1}
    program = [
        (code, labels[jt] - i - 1 if isinstance(jt, str) else jt, labels[jf] - i - 1 if isinstance(jf, str) else jf, k)
        for i, (code, jt, jf, k) in enumerate(body)
    ]
    return [*program, (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0)]  # accept (whole packet), drop


class LoopbackCapture:
    """Capture the UDP datagrams to or from `port` on `lo` into a pcap file, in a thread; and the
    TCP segments to or from `tcp_ports` (the guard's ARI and FastAGI connections).

    `start()` returns False (with `error` set) where capture is not possible: not root, no
    AF_PACKET (not Linux). `stop()` returns how many datagrams were written; `dropped` is the
    kernel's count of datagrams the socket lost (receive buffer full)."""

    def __init__(self, path: Path, port: int = 5060, tcp_ports: tuple[int, ...] = ()) -> None:
        self.path = path
        self.port = port
        self.ports = (port, *tcp_ports)
        self.error: str | None = None
        self.packets = 0
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._filter: ctypes.Array[ctypes.c_char] | None = None  # kept alive while attached

    def start(self) -> bool:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        except (OSError, AttributeError) as error:  # PermissionError when not root
            self.error = f"no loopback capture ({error})"
            return False
        try:
            self._attach_filter(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind(("lo", ETH_P_IP))
            sock.settimeout(0.1)
            self._read_statistics(sock)  # resets the kernel's counters
        except OSError as error:
            sock.close()
            self.error = f"no loopback capture ({error})"
            return False
        self._sock = sock
        handle = self.path.open("wb")
        handle.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, 65535, LINKTYPE_IPV4))
        self._thread = threading.Thread(target=self._loop, args=(sock, handle), name="sip-capture", daemon=True)
        self._thread.start()
        return True

    def _attach_filter(self, sock: socket.socket) -> None:
        program = _port_filter(self.ports)
        code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
        self._filter = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("@HP", len(program), ctypes.addressof(self._filter))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def _read_statistics(self, sock: socket.socket) -> tuple[int, int]:
        received, dropped = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return received, dropped

    def _loop(self, sock: socket.socket, handle: BinaryIO) -> None:
        ancillary = socket.CMSG_SPACE(16)
        with handle:
            while True:
                try:
                    data, ancdata, _flags, address = sock.recvmsg(65535, ancillary)
                except TimeoutError:  # nothing queued for 0.1 s
                    if self._stop.is_set():
                        return
                    continue
                except OSError:
                    return
                if self._stop.is_set() and time.monotonic() > self._drain_until:
                    return  # traffic that never pauses: what came within the drain time is kept
                if address[2] == PACKET_OUTGOING:
                    continue
                seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)  # no kernel stamp: ours
                for level, kind, value in ancdata:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                        seconds, nanoseconds = struct.unpack("qq", value[:16])
                handle.write(struct.pack("<IIII", seconds, nanoseconds, len(data), len(data)))
                handle.write(data)
                self.packets += 1

    def stop(self) -> int:
        """Stop after the datagrams already queued on the socket are written (within a second)."""
        self._drain_until = time.monotonic() + 1.0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._sock is not None:
            self.dropped = self._read_statistics(self._sock)[1]
            self._sock.close()
            self._sock = None
        return self.packets


@dataclasses.dataclass(frozen=True, slots=True)
class Datagram:
    """A UDP datagram, or (tcp) a TCP segment's payload (segments without payload are left out)."""

    ts_ns: int
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    tcp: bool = False


def read_pcap(path: Path) -> Iterator[Datagram]:
    """The UDP datagrams and TCP payloads over IPv4 of a pcap file (µs or ns timestamps; raw IPv4,
    Ethernet or Linux cooked link type)."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, PCAP_MAGIC_NS):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian, magic = ">", struct.unpack(">I", data[:4])[0]
    else:
        raise ValueError(f"{path}: not a pcap file")
    scale = 1 if magic == PCAP_MAGIC_NS else 1000
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0xFFFF
    link_header = {LINKTYPE_IPV4: 0, 101: 0, LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16}.get(linktype)
    if link_header is None:
        raise ValueError(f"{path}: link type {linktype} not supported")
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _length = struct.unpack(endian + "IIII", data[offset : offset + 16])
        packet = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        datagram = _ip(seconds * 1_000_000_000 + fraction * scale, packet[link_header:])
        if datagram is not None:
            yield datagram


def _ip(ts_ns: int, ip: bytes) -> Datagram | None:
    if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] not in (6, 17):
        return None
    header = (ip[0] & 0x0F) * 4
    total = min(struct.unpack("!H", ip[2:4])[0] or len(ip), len(ip))
    sport, dport = struct.unpack("!HH", ip[header : header + 4])
    src, dst = (socket.inet_ntoa(ip[12:16]), sport), (socket.inet_ntoa(ip[16:20]), dport)
    if ip[9] == 17:
        length = struct.unpack("!H", ip[header + 4 : header + 6])[0]
        return Datagram(ts_ns, src, dst, ip[header + 8 : min(header + length, total)])
    if len(ip) < header + 20:
        return None
    payload = ip[header + (ip[header + 12] >> 4) * 4 : total]
    return Datagram(ts_ns, src, dst, payload, tcp=True) if payload else None


@dataclasses.dataclass(frozen=True, slots=True)
class SipMessage:
    ts_ns: int
    src: tuple[str, int]
    dst: tuple[str, int]
    method: str | None  # a request's method, None for a response
    status: int | None  # a response's code
    call_id: str
    cseq_method: str
    uri_user: str  # the request URI's user part (requests only)
    to_tagged: bool


_HEADER = re.compile(rb"^([A-Za-z-]+)[ \t]*:[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_COMPACT = {b"i": b"call-id", b"t": b"to"}


def parse_sip(datagram: Datagram) -> SipMessage | None:
    """The fields the matching needs, or None for what is not a SIP message (keep-alives, RTP)."""
    head = datagram.payload.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    first, _, rest = head.partition(b"\n")
    parts = first.split(b" ", 2)
    if len(parts) < 3:
        return None
    method: str | None = None
    status: int | None = None
    uri_user = ""
    if parts[0].startswith(b"SIP/2.0"):
        if not parts[1].isdigit():
            return None
        status = int(parts[1])
    elif parts[2].startswith(b"SIP/2.0"):
        method = parts[0].decode("ascii", "replace")
        uri = parts[1].decode("ascii", "replace")
        uri_user = uri.split(":", 1)[-1].split("@", 1)[0] if "@" in uri else ""
    else:
        return None
    headers: dict[bytes, bytes] = {}
    for name, value in _HEADER.findall(rest):
        key = name.lower()
        headers.setdefault(_COMPACT.get(key, key), value)
    call_id = headers.get(b"call-id", b"").decode("ascii", "replace")
    cseq = headers.get(b"cseq", b"").split()
    if not call_id or len(cseq) != 2:
        return None
    to_tagged = b";tag=" in headers.get(b"to", b"").replace(b" ", b"").lower()
    return SipMessage(
        datagram.ts_ns, datagram.src, datagram.dst, method, status, call_id,
        cseq[1].decode("ascii", "replace").upper(), uri_user, to_tagged,
    )  # fmt: skip


def _number_key(user: str) -> str:
    """The called number's significant digits, so 0640000001, +33640000001 and 33640000001 match."""
    digits = "".join(ch for ch in user if ch.isdigit())
    return digits[-9:]


@dataclasses.dataclass(slots=True)
class CallTiming:
    """One dialer call's instants (kernel ns), None where that message never came."""

    number: str
    invite: int
    ring: int | None = None  # Asterisk's first 180/183 to the dialer
    answer: int | None = None  # Asterisk's 200 OK (INVITE) to the dialer
    carrier_invite: int | None = None  # Asterisk's INVITE to the carrier
    carrier_ring: int | None = None  # the carrier's first 180/183
    carrier_answer: int | None = None  # the carrier's 200 OK (INVITE)
    guard_in: int | None = None  # the call reaches the guard: ARI StasisStart sent, FastAGI env sent
    guard_out: int | None = None  # the guard's verdict leaves: ARI originate request, FastAGI command
    guard_answer: int | None = None  # ARI: the guard's answer request for the dialer channel

    def spans_us(self) -> dict[str, float | None]:
        def span(start: int | None, end: int | None) -> float | None:
            return None if start is None or end is None else (end - start) / 1000

        return {
            "ring_us": span(self.invite, self.ring),
            "answer_us": span(self.invite, self.answer),
            "decision_us": span(self.invite, self.carrier_invite),
            "carrier_us": span(self.carrier_invite, self.carrier_answer),
            "relay_us": span(self.carrier_answer, self.answer),
            "ring_relay_us": span(self.carrier_ring, self.ring),
            "to_guard_us": span(self.invite, self.guard_in),
            "guard_us": span(self.guard_in, self.guard_out),
            "to_carrier_us": span(self.guard_out, self.carrier_invite),
            "answer_wait_us": span(self.carrier_answer, self.guard_answer),
            "answer_send_us": span(self.guard_answer, self.answer),
        }


def call_timings(messages: Iterable[SipMessage], sip_port: int = 5060) -> list[CallTiming]:
    """Match each dialer INVITE (to Asterisk's `sip_port`) with Asterisk's answers to it and with
    the INVITE Asterisk sent the carrier for the same called number, and the carrier's answers.
    The first copy of each message counts (retransmissions are later copies)."""
    dialer: dict[str, CallTiming] = {}  # Call-ID of the dialer's leg
    by_number: dict[str, CallTiming] = {}
    carrier: dict[str, CallTiming] = {}  # Call-ID of the carrier leg
    pending: dict[str, int] = {}  # a carrier INVITE seen before its dialer INVITE (never expected)
    for message in sorted(messages, key=lambda m: m.ts_ns):
        inbound = message.dst[1] == sip_port  # to Asterisk
        if message.method == "INVITE" and not message.to_tagged:
            key = _number_key(message.uri_user)
            if inbound and message.call_id not in dialer and message.call_id not in carrier:
                call = CallTiming(number=message.uri_user, invite=message.ts_ns)
                dialer[message.call_id] = call
                by_number.setdefault(key, call)
            elif not inbound and message.call_id not in carrier:
                owner = by_number.get(key)
                if owner is not None and owner.carrier_invite is None:
                    owner.carrier_invite = message.ts_ns
                    carrier[message.call_id] = owner
                else:
                    pending.setdefault(message.call_id, message.ts_ns)
            continue
        if message.status is None or message.cseq_method != "INVITE":
            continue
        provisional = message.status in (180, 183)
        if not inbound and message.call_id in dialer:
            call = dialer[message.call_id]
            if provisional and call.ring is None:
                call.ring = message.ts_ns
            elif message.status == 200 and call.answer is None:
                call.answer = message.ts_ns
        elif inbound and message.call_id in carrier:
            call = carrier[message.call_id]
            if provisional and call.carrier_ring is None:
                call.carrier_ring = message.ts_ns
            elif message.status == 200 and call.carrier_answer is None:
                call.carrier_answer = message.ts_ns
    return list(dialer.values())


_STASIS_START = re.compile(rb'\{"type":"StasisStart".*?"channel":\{"id":"([^"]+)".*?"exten":"([^"]*)"', re.DOTALL)
_ORIGINATE = re.compile(rb"^POST /ari/channels(?:/[^/?\s]+)?\?[^\s]*endpoint=([^&\s]+)")
_ANSWER = re.compile(rb"^POST /ari/channels/([^/?\s]+)/answer[ ?]")
_AGI_NUMBER = re.compile(rb"^agi_arg_1: *(\S+)", re.MULTILINE)


def guard_events(calls: list[CallTiming], segments: Iterable[Datagram], ari_port: int, agi_port: int) -> None:
    """Fill each call's guard instants from the guard's TCP traffic with Asterisk: in ARI mode the
    StasisStart event of the dialer channel (by its dialplan exten), the guard's originate request
    (by the number in its endpoint) and its answer request (by the channel id); in FastAGI mode the
    end of the AGI environment Asterisk sends (by agi_arg_1, the number) and the guard's first
    command on that connection. The first instant of each kind counts."""
    by_number = {_number_key(call.number): call for call in calls}
    by_channel: dict[str, CallTiming] = {}
    agi: dict[int, tuple[bytes, CallTiming | None]] = {}  # Asterisk's port -> environment so far, call
    for segment in sorted(segments, key=lambda d: d.ts_ns):
        payload = segment.payload
        if segment.src[1] == ari_port:
            for channel, exten in _STASIS_START.findall(payload):
                call = by_number.get(_number_key(exten.decode("ascii", "replace")))
                if call is not None and call.guard_in is None:
                    call.guard_in = segment.ts_ns
                    by_channel[channel.decode("ascii", "replace")] = call
        elif segment.dst[1] == ari_port:
            originate = _ORIGINATE.match(payload)
            if originate:
                endpoint = urllib.parse.unquote(originate.group(1).decode("ascii", "replace"))
                user = endpoint.rsplit("/", 1)[-1].split("sip:", 1)[-1].split("@", 1)[0]
                call = by_number.get(_number_key(user))
                if call is not None and call.guard_out is None:
                    call.guard_out = segment.ts_ns
            answer = _ANSWER.match(payload)
            if answer:
                call = by_channel.get(answer.group(1).decode("ascii", "replace"))
                if call is not None and call.guard_answer is None:
                    call.guard_answer = segment.ts_ns
        elif segment.dst[1] == agi_port:
            environment, call = agi.get(segment.src[1], (b"", None))
            if call is None and b"\n\n" not in environment:
                environment += payload
                if b"\n\n" in environment:
                    number = _AGI_NUMBER.search(environment)
                    call = by_number.get(_number_key(number.group(1).decode("ascii", "replace"))) if number else None
                    if call is not None and call.guard_in is None:
                        call.guard_in = segment.ts_ns
                agi[segment.src[1]] = (environment, call)
        elif segment.src[1] == agi_port:
            _, call = agi.get(segment.dst[1], (b"", None))
            if call is not None and call.guard_out is None:
                call.guard_out = segment.ts_ns


def pcap_call_timings(path: Path, sip_port: int = 5060, ari_port: int = 0, agi_port: int = 0) -> list[CallTiming]:
    """The calls of a capture; with `ari_port` / `agi_port`, their guard instants too."""
    sip: list[SipMessage] = []
    segments: list[Datagram] = []
    for datagram in read_pcap(path):
        if datagram.tcp:
            if {ari_port, agi_port} & {datagram.src[1], datagram.dst[1]}:
                segments.append(datagram)
        elif sip_port in (datagram.src[1], datagram.dst[1]):
            message = parse_sip(datagram)
            if message is not None:
                sip.append(message)
    calls = call_timings(sip, sip_port)
    if segments:
        guard_events(calls, segments, ari_port or -1, agi_port or -1)
    return calls
