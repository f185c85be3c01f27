"""The SIP bench's packet clock (bench/sip_capture.py): the pcap reader and the per-call matching,
on SIP packets captured from the lab (data/sip-ari-2-calls.pcap: two calls through the ARI guard,
written by `python -m bench.sip --keep-pcap`), and the loopback capture itself where we are root."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path

import pytest

from bench.sip import _captured, added_ms
from bench.sip_capture import (
    Datagram,
    LoopbackCapture,
    SipMessage,
    call_timings,
    parse_sip,
    pcap_call_timings,
    read_pcap,
)

FIXTURE = Path(__file__).parent / "data" / "sip-ari-2-calls.pcap"
DIALER = ("127.0.0.1", 45106)
ASTERISK = ("127.0.0.1", 5060)
CARRIER = ("127.0.0.1", 36361)


def _messages() -> list[SipMessage]:
    messages = [parse_sip(datagram) for datagram in read_pcap(FIXTURE)]
    assert all(message is not None for message in messages)
    return [message for message in messages if message is not None]


def test_the_recorded_pcap_reads_as_the_two_calls_sip_messages() -> None:
    datagrams = list(read_pcap(FIXTURE))
    assert len(datagrams) == 28  # 7 messages per leg, 2 legs per call
    assert {datagrams[0].src, datagrams[0].dst} == {DIALER, ASTERISK}
    messages = _messages()
    first = messages[0]
    assert (first.method, first.call_id, first.cseq_method, first.uri_user, first.to_tagged) == (
        "INVITE", "1-17195@127.0.0.1", "INVITE", "0640000025", False,
    )  # fmt: skip
    carrier_invites = [m for m in messages if m.method == "INVITE" and m.dst == CARRIER]
    assert [m.uri_user for m in carrier_invites] == ["+33640000025", "+33640000026"]
    assert [m.status for m in messages[:14] if m.src == ASTERISK and m.dst == DIALER] == [100, 180, 200, 200]


def test_each_dialer_invite_is_matched_with_its_answers_and_its_carrier_leg_to_the_nanosecond() -> None:
    calls = pcap_call_timings(FIXTURE)
    assert [call.number for call in calls] == ["0640000025", "0640000026"]
    first = calls[0]
    assert first.invite == 1796186742802613671
    assert (first.ring, first.answer) == (1796186742816326462, 1796186742824519344)
    assert (first.carrier_invite, first.carrier_ring, first.carrier_answer) == (
        1796186742809015044, 1796186742815107647, 1796186742822000271,
    )  # fmt: skip
    assert first.spans_us() == {
        "ring_us": 13712.791, "answer_us": 21905.673, "decision_us": 6401.373,
        "carrier_us": 12985.227, "relay_us": 2519.073, "ring_relay_us": 1218.815,
    }  # fmt: skip
    spans = calls[1].spans_us()
    assert spans["decision_us"] is not None and spans["carrier_us"] is not None and spans["relay_us"] is not None
    assert spans["answer_us"] == pytest.approx(spans["decision_us"] + spans["carrier_us"] + spans["relay_us"])


def test_a_retransmission_counts_once_and_the_order_of_arrival_in_the_list_does_not_matter() -> None:
    messages = _messages()
    answer = next(m for m in messages if m.src == ASTERISK and m.status == 200 and m.cseq_method == "INVITE")
    invite = messages[0]
    again = [
        dataclasses.replace(answer, ts_ns=answer.ts_ns + 500_000_000),
        dataclasses.replace(invite, ts_ns=invite.ts_ns + 500_000_000),
    ]
    calls = call_timings(list(reversed(messages)) + again)
    assert [c.spans_us() for c in calls] == [c.spans_us() for c in call_timings(messages)]


def test_a_call_the_carrier_never_answers_has_no_answer_relay_and_is_left_out_of_the_summary() -> None:
    messages = _messages()
    second_carrier_200 = [m for m in messages if m.src == CARRIER and m.status == 200 and m.cseq_method == "INVITE"][1]
    missing = [
        m
        for m in messages
        if m is not second_carrier_200 and not (m.call_id == "2-17195@127.0.0.1" and m.status == 200)
    ]
    calls = call_timings(missing)
    assert calls[1].carrier_answer is None and calls[1].answer is None
    assert calls[1].spans_us()["relay_us"] is None and calls[1].spans_us()["decision_us"] is not None
    capture = LoopbackCapture(FIXTURE)
    summary = _captured(calls, capture)
    assert summary["invites"] == 2
    assert summary["answer_us"]["count"] == 1 and summary["decision_us"]["count"] == 2
    assert summary["answer_us"]["p50"] == 21905.7


def test_what_is_not_sip_is_skipped() -> None:
    for payload in (b"\r\n\r\n", b"\x80\x00" + bytes(170), b"HELLO WORLD\r\n\r\n", b"SIP/2.0 abc OK\r\n\r\n"):
        assert parse_sip(Datagram(0, DIALER, ASTERISK, payload)) is None
    no_call_id = b"INVITE sip:1@h SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"
    assert parse_sip(Datagram(0, DIALER, ASTERISK, no_call_id)) is None
    compact = b"SIP/2.0 180 Ringing\r\ni: abc\r\nCSeq: 1 INVITE\r\nt: <sip:x@y>;tag=1\r\n\r\n"
    message = parse_sip(Datagram(0, ASTERISK, DIALER, compact))
    assert message is not None and (message.call_id, message.status, message.to_tagged) == ("abc", 180, True)


def test_the_added_delay_comes_from_the_capture_where_both_rows_have_it_else_from_sipp() -> None:
    def row(answer_us: float | None, answer_ms: float) -> dict[str, object]:
        out: dict[str, object] = {"answer_ms": {"p50": answer_ms, "p99": answer_ms * 2}}
        if answer_us is not None:
            out["capture"] = {"answer_us": {"p50": answer_us, "p99": answer_us * 2}}
        return out

    captured = added_ms(row(20_500.0, 24.0), row(16_250.0, 16.0))
    assert captured is not None
    assert (captured["p50"], captured["p99"], captured["source"]) == (4.25, 8.5, "capture")
    sipp = added_ms(row(None, 24.0), row(16_250.0, 16.0))
    assert sipp is not None and (sipp["p50"], sipp["source"]) == (8.0, "sipp")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="AF_PACKET capture needs root")
def test_the_loopback_capture_keeps_the_port_it_filters_with_kernel_timestamps(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        capture = LoopbackCapture(tmp_path / "lo.pcap", port)
        assert capture.start(), capture.error
        before = time.time_ns()
        for payload in (b"one", b"two"):
            sender.sendto(payload, ("127.0.0.1", port))
        sender.sendto(b"elsewhere", other.getsockname())
        time.sleep(0.3)
        assert capture.stop() == 2
        datagrams = list(read_pcap(tmp_path / "lo.pcap"))
        assert [d.payload for d in datagrams] == [b"one", b"two"]
        assert all(d.dst == ("127.0.0.1", port) for d in datagrams)
        assert before <= datagrams[0].ts_ns <= datagrams[1].ts_ns <= time.time_ns()
    finally:
        for sock in (receiver, other, sender):
            sock.close()
