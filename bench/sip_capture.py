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


def _udp_port_filter(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF on an IPv4 packet (SOCK_DGRAM packet socket: offset 0 is the IP header):
    accept unfragmented UDP with `port` as source or destination port, drop the rest."""
    return [
        (0x30, 0, 0, 9),  # ldb [9]            protocol
        (0x15, 0, 8, 17),  # jeq #17 else drop  UDP
        (0x28, 0, 0, 6),  # ldh [6]            flags + fragment offset
        (0x45, 6, 0, 0x1FFF),  # jset #0x1fff -> drop (a later fragment has no UDP header)
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)  IP header length
        (0x48, 0, 0, 0),  # ldh [x+0]          source port
        (0x15, 2, 0, port),  # jeq port -> accept
        (0x48, 0, 0, 2),  # ldh [x+2]          destination port
        (0x15, 0, 1, port),  # jeq port -> accept else drop
        (0x06, 0, 0, 0x40000),  # accept (whole packet)
        (0x06, 0, 0, 0),  # drop
    ]


class LoopbackCapture:
    """Capture the UDP datagrams to or from `port` on `lo` into a pcap file, in a thread.

    `start()` returns False (with `error` set) where capture is not possible: not root, no
    AF_PACKET (not Linux). `stop()` returns how many datagrams were written; `dropped` is the
    kernel's count of datagrams the socket lost (receive buffer full)."""

    def __init__(self, path: Path, port: int = 5060) -> None:
        self.path = path
        self.port = port
        self.error: str | None = None
        self.packets = 0
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
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
        program = _udp_port_filter(self.port)
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
                except TimeoutError:
                    if self._stop.is_set():
                        return
                    continue
                except OSError:
                    return
                if address[2] == PACKET_OUTGOING:
                    continue
                seconds = nanoseconds = 0
                for level, kind, value in ancdata:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                        seconds, nanoseconds = struct.unpack("qq", value[:16])
                handle.write(struct.pack("<IIII", seconds, nanoseconds, len(data), len(data)))
                handle.write(data)
                self.packets += 1

    def stop(self) -> int:
        """Stop after the datagrams already queued on the socket are written."""
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
    ts_ns: int
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def read_pcap(path: Path) -> Iterator[Datagram]:
    """The UDP/IPv4 datagrams of a pcap file (µs or ns; raw IPv4, Ethernet or Linux cooked)."""
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
        datagram = _udp(seconds * 1_000_000_000 + fraction * scale, packet[link_header:])
        if datagram is not None:
            yield datagram


def _udp(ts_ns: int, ip: bytes) -> Datagram | None:
    if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    header = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0] or len(ip)
    sport, dport, length = struct.unpack("!HHH", ip[header : header + 6])
    payload = ip[header + 8 : min(header + length, total, len(ip))]
    return Datagram(ts_ns, (socket.inet_ntoa(ip[12:16]), sport), (socket.inet_ntoa(ip[16:20]), dport), payload)


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


def pcap_call_timings(path: Path, sip_port: int = 5060) -> list[CallTiming]:
    messages = (parse_sip(d) for d in read_pcap(path) if sip_port in (d.src[1], d.dst[1]))
    return call_timings((m for m in messages if m is not None), sip_port)
