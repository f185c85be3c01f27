#!/usr/bin/env python3
"""Write RFC 4733 (telephone-event) DTMF RTP captures for sipp's play_pcap_audio.

Pure standard library (no scapy). The output matches what sipp 3.6's
``play_pcap_audio`` accepts and what Debian's shipped
``/usr/share/sip-tester/dtmf_2833_1.pcap`` looks like:

* classic libpcap file (magic 0xa1b2c3d4, v2.4, microsecond timestamps,
  snaplen 65535), link type 1 (Ethernet), full packets (caplen == len);
* Ethernet II / IPv4 (no options, valid header checksum) / UDP / RTP;
* every packet has the same UDP destination port (sipp replaces the ports by
  the call's media ports, keeping each packet's offset from the lowest
  destination port, and recomputes the UDP checksum; IP addresses in the file
  are ignored: sipp sends from -mi/-mp to the peer's SDP address);
* RTP version 2, payload type 101 (change with --payload-type to match the
  SDP), one SSRC, consecutive sequence numbers;
* per digit (RFC 4733 section 2.5): packets every 20 ms with the same RTP
  timestamp (the event start), the marker bit on the first one, the duration
  growing by 160 samples (8 kHz clock) per packet, then the end packet with
  the E bit sent three times (same sequence number, as in the shipped file);
  the next digit starts after --gap-ms with a new timestamp (so receivers,
  e.g. Asterisk, never take it for a retransmission of the previous event).

sipp sends the RTP header as it is in the file: no re-sequencing, and
packets leave at the capture's relative times.

Usage:
    gen_dtmf_pcap.py '*9' -o pcap/dtmf_2833_star9.pcap
    gen_dtmf_pcap.py 0123456789*# -o /tmp/all.pcap --duration-ms 100 --gap-ms 60
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

#: RFC 4733 section 3.2 event codes.
EVENT_CODES: dict[str, int] = {str(d): d for d in range(10)} | {"*": 10, "#": 11}
for _i, _c in enumerate("ABCD"):
    EVENT_CODES[_c] = 12 + _i

CLOCK_RATE = 8000
PACKET_MS = 20
SAMPLES_PER_PACKET = CLOCK_RATE * PACKET_MS // 1000  # 160

PCAP_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
ETH_SRC = bytes.fromhex("020000000001")
ETH_DST = bytes.fromhex("020000000002")


def _ip_checksum(header: bytes) -> int:
    total = 0
    for i in range(0, len(header), 2):
        total += (header[i] << 8) + header[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
    data = pseudo + udp + (b"\x00" if len(udp) % 2 else b"")
    csum = _ip_checksum(data)
    return csum or 0xFFFF


def _frame(payload: bytes, ip_id: int, src_ip: str, dst_ip: str, sport: int, dport: int) -> bytes:
    src = bytes(int(x) for x in src_ip.split("."))
    dst = bytes(int(x) for x in dst_ip.split("."))
    udp_len = 8 + len(payload)
    udp_nocsum = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp = struct.pack("!HHHH", sport, dport, udp_len, _udp_checksum(src, dst, udp_nocsum)) + payload
    ip_wo = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ip_id & 0xFFFF, 0, 64, 17, 0, src, dst)
    ip = ip_wo[:10] + struct.pack("!H", _ip_checksum(ip_wo)) + ip_wo[12:]
    return ETH_DST + ETH_SRC + b"\x08\x00" + ip + udp


def rtp_events(
    digits: str,
    *,
    duration_ms: int = 160,
    gap_ms: int = 100,
    lead_ms: int = 0,
    volume: int = 10,
    payload_type: int = 101,
    ssrc: int = 0x4E505647,  # "NPVG"
    first_seq: int = 1000,
    first_timestamp: int = 16000,
    end_repeats: int = 3,
) -> list[tuple[float, bytes]]:
    """Return (relative time in seconds, RTP packet) for the digit string."""
    if not digits:
        raise ValueError("no digits")
    bad = [c for c in digits if c.upper() not in EVENT_CODES]
    if bad:
        raise ValueError(f"unsupported DTMF characters: {''.join(bad)!r} (use 0-9, *, #, A-D)")
    if duration_ms < 2 * PACKET_MS:
        raise ValueError("duration_ms must be at least 40")
    if not 0 <= volume <= 63:
        raise ValueError("volume must be 0..63 (dBm0 below 0)")
    if not 96 <= payload_type <= 127:
        raise ValueError("payload_type must be dynamic (96..127)")
    packets: list[tuple[float, bytes]] = []
    seq = first_seq
    t_ms = float(lead_ms)
    for digit in digits:
        event = EVENT_CODES[digit.upper()]
        timestamp = (first_timestamp + int(t_ms) * CLOCK_RATE // 1000) & 0xFFFFFFFF
        n_packets = duration_ms // PACKET_MS
        for k in range(n_packets):
            last = k == n_packets - 1
            duration = (k + 1) * SAMPLES_PER_PACKET
            marker = 0x80 if k == 0 else 0
            flags = (0x80 if last else 0) | volume
            repeats = end_repeats if last else 1
            for _ in range(repeats):
                header = struct.pack("!BBHII", 0x80, marker | payload_type, seq & 0xFFFF, timestamp, ssrc)
                body = struct.pack("!BBH", event, flags, duration)
                packets.append((t_ms / 1000.0, header + body))
            seq += 1
            t_ms += PACKET_MS
        t_ms += gap_ms
    return packets


def write_pcap(
    path: Path,
    packets: list[tuple[float, bytes]],
    *,
    src_ip: str = "127.0.0.1",
    dst_ip: str = "127.0.0.1",
    sport: int = 40000,
    dport: int = 10000,
    start_time: float = 1_700_000_000.0,
) -> None:
    out = bytearray(PCAP_GLOBAL_HEADER)
    for i, (rel, rtp) in enumerate(packets):
        t = start_time + rel
        frame = _frame(rtp, i + 1, src_ip, dst_ip, sport, dport)
        sec = int(t)
        usec = round((t - sec) * 1_000_000)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        out += struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))


def generate(digits: str, output: Path, **kwargs: int) -> Path:
    """Write the capture for ``digits`` to ``output``; return its path."""
    write_pcap(output, rtp_events(digits, **kwargs))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("digits", help="DTMF digits, e.g. '*9' (0-9, *, #, A-D)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="pcap file to write")
    parser.add_argument("--duration-ms", type=int, default=160, help="tone length per digit (default 160)")
    parser.add_argument("--gap-ms", type=int, default=100, help="silence between digits (default 100)")
    parser.add_argument("--lead-ms", type=int, default=0, help="delay before the first digit (default 0)")
    parser.add_argument("--volume", type=int, default=10, help="power level, -dBm0 (default 10)")
    parser.add_argument("--payload-type", type=int, default=101, help="RTP payload type (default 101)")
    args = parser.parse_args(argv)
    try:
        generate(
            args.digits,
            args.output,
            duration_ms=args.duration_ms,
            gap_ms=args.gap_ms,
            lead_ms=args.lead_ms,
            volume=args.volume,
            payload_type=args.payload_type,
        )
    except ValueError as exc:
        print(f"gen_dtmf_pcap: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
