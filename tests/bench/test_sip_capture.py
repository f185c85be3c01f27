"""The SIP bench's packet clock (bench/sip_capture.py): the pcap reader and the per-call matching,
on packets captured from the lab by `python -m bench.sip --keep-pcap` (data/: two calls through
the ARI guard, SIP only; two through the ARI guard and two through the FastAGI guard with the
guard's TCP exchanges with Asterisk), and the loopback capture itself where we are root."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from bench import table
from bench.sip import SPANS, _captured, added_ms, render_sip
from bench.sip_capture import (
    Datagram,
    LoopbackCapture,
    SipMessage,
    call_timings,
    parse_sip,
    pcap_call_timings,
    read_pcap,
)

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "sip-ari-2-calls.pcap"
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
        "to_guard_us": None, "guard_us": None, "to_carrier_us": None, "answer_wait_us": None, "answer_send_us": None,
    }  # fmt: skip
    spans = calls[1].spans_us()
    assert spans["decision_us"] is not None and spans["carrier_us"] is not None and spans["relay_us"] is not None
    assert spans["answer_us"] == pytest.approx(spans["decision_us"] + spans["carrier_us"] + spans["relay_us"])


def test_the_guard_s_ari_exchanges_split_the_decision_and_the_answer_relay() -> None:
    calls = pcap_call_timings(DATA / "sip-ari-guard-2-calls.pcap", 5060, ari_port=8088, agi_port=4573)
    assert [call.number for call in calls] == ["0640000015", "0640000016"]
    first = calls[0]
    # StasisStart of the dialer channel, the guard's POST /ari/channels?endpoint=...%2B33640000015...,
    # its POST /ari/channels/<dialer id>/answer
    assert (first.guard_in, first.guard_out, first.guard_answer) == (
        1796187575177780673, 1796187575183835626, 1796187575199461554,
    )  # fmt: skip
    spans = first.spans_us()
    assert (spans["to_guard_us"], spans["guard_us"], spans["to_carrier_us"]) == (3021.505, 6054.953, 1442.194)
    assert (spans["answer_wait_us"], spans["answer_send_us"]) == (1937.623, 700.844)
    for call in calls:
        spans = call.spans_us()
        parts = [spans[key] for key in ("to_guard_us", "guard_us", "to_carrier_us", "answer_wait_us", "answer_send_us")]
        assert all(part is not None and part > 0 for part in parts)
        assert spans["decision_us"] == pytest.approx(spans["to_guard_us"] + spans["guard_us"] + spans["to_carrier_us"])


def test_the_guard_s_fastagi_session_splits_the_decision() -> None:
    calls = pcap_call_timings(DATA / "sip-agi-guard-2-calls.pcap", 5060, ari_port=8088, agi_port=4573)
    assert [call.number for call in calls] == ["0640000115", "0640000116"]
    # the segment ending the AGI environment (agi_arg_1: 0640000115) and the guard's SET VARIABLE
    assert (calls[0].guard_in, calls[0].guard_out) == (1796187137006731416, 1796187137008832666)
    assert calls[0].spans_us()["guard_us"] == 2101.25
    assert all(call.guard_answer is None for call in calls)  # Dial() answers, not the guard
    assert pcap_call_timings(DATA / "sip-agi-guard-2-calls.pcap")[0].guard_in is None  # SIP only


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


def _row(way: str, answer_ms: float, answer_us: float | None, failed: int = 0) -> dict[str, Any]:
    row: dict[str, Any] = {
        "way": way, "rate": 50.0, "calls": 100, "successful": 100 - failed, "failed": failed,
        "ring_ms": {"p50": 8.0, "p99": 12.0}, "answer_ms": {"p50": answer_ms, "p99": answer_ms + 8},
    }  # fmt: skip
    if answer_us is not None:
        spans = {span: {"count": 100, "p50": 1000.0, "p99": 2000.0, "mean": 1500.0} for span in SPANS}
        spans["answer_us"] = {"count": 100, "p50": answer_us, "p99": answer_us + 8000, "mean": answer_us}
        row["capture"] = {"invites": 100, "packets": 1400, "dropped": 0, **spans}
    return row


def test_the_targets_and_the_rows_say_which_clock_timed_them() -> None:
    captured = {
        "rows": [_row("baseline", 16.0, 12_152.0), _row("ari", 24.0, 21_508.0), _row("agi", 24.0, 16_000.0)],
        "ramp": [_row("baseline", 16.0, 12_000.0), _row("ari", 24.0, 20_000.0, failed=3)],
        "highest_clean_rate": {"baseline": 50.0}, "ramp_step_s": 10, "ramp_rates": [50.0], "clock": "capture",
        "clock_note": None,
    }  # fmt: skip
    targets = {t["figure"]: t for t in table.TARGETS["sip"](captured)}
    assert targets["ari: added to answer at 50/s, p50"]["value"] == 9.356
    assert targets["ari: added to answer at 50/s, p50"]["met"] is False
    assert targets["agi: added to answer at 50/s, p99"]["value"] == 3.848
    assert "packet capture" in targets["agi: added to answer at 50/s, p99"]["baseline"]
    text = "\n".join(render_sip(captured))
    assert "kernel timestamps" in text and "answer 21.508/29.508" in text and "answer +9.356/+9.356" in text
    assert "clean at the top of the ramp" in text
    sipp_only = {
        **captured, "clock": "sipp", "clock_note": "no loopback capture ([Errno 1] Operation not permitted)",
        "rows": [_row("baseline", 16.0, None), _row("ari", 24.0, None)],
    }  # fmt: skip
    targets = {t["figure"]: t for t in table.TARGETS["sip"](sipp_only)}
    assert targets["ari: added to answer at 50/s, p50"]["value"] == 8.0
    assert "sipp, 4 ms steps" in targets["ari: added to answer at 50/s, p50"]["baseline"]
    text = "\n".join(render_sip(sipp_only))
    assert "Operation not permitted" in text and "(no capture)" in text
