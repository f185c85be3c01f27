"""Smoke tests of the real-Asterisk lab itself, WITHOUT the npv-guard app.

They prove that the lab's pieces work before any guard test relies on them:
the baseline route, error propagation, fail-closed behaviour of the ARI
drop-in when no app is connected, DTMF reception (SIP INFO and RFC 4733 from
the generated captures), the trap machinery and channel clean-up.

Run: /work/main/.venv/bin/python -m pytest tests/lab -m e2e
(needs root and sipp; builds the Debian sid root on first use, ~30-60 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.lab import (
    ARI_APP,
    CARRIER_PORT,
    DIALER_IP,
    DIALER_PLAIN_IP,
    LabCheck,
    dtmf_2833_scenario,
    free_udp_port,
    run_sipp,
)

pytestmark = pytest.mark.e2e

CALLER = "0987654321"


def test_lab_is_up_and_loopback_only(lab: LabCheck) -> None:
    info = lab.lab.info()
    assert info["system"]["version"]  # any version: sid moves daily
    endpoints = lab.lab.rx("pjsip show endpoints")
    for name in ("dialer", "dialer-plain", "dialer-agi", "carrier"):
        assert f" {name} " in endpoints
    assert lab.lab.channel_count() == 0


@pytest.mark.parametrize("number", ["0612345678", "+33612345678"])
def test_plain_dial_reaches_answering_consumer(lab: LabCheck, number: str) -> None:
    uas = run_sipp("uas_answer.xml", local_port=free_udp_port(), background=True, timeout_s=15)
    uac = run_sipp(
        "uac.xml",
        local_ip=DIALER_PLAIN_IP,
        service=number,
        variables={"caller": CALLER, "hold_ms": "300", "carrier_port": str(uas.local_port)},
        timeout_s=15,
    )
    uas_result = uas.wait(timeout=30)
    assert uac.ok, uac.describe()
    assert uas_result.ok, uas_result.describe()
    assert uac.final_status() == 200
    invites = uas_result.received("INVITE")
    assert len(invites) == 1
    assert invites[0].first_line.startswith(f"INVITE sip:{number}@127.0.0.1:{uas.local_port}")
    assert f"sip:{CALLER}@" in (invites[0].header("From") or "")
    # The dialer hung up: the consumer's phone got the BYE.
    assert uas_result.received("BYE")


def test_plain_dial_trusts_p_asserted_identity(lab: LabCheck) -> None:
    uas = run_sipp("uas_answer.xml", local_port=free_udp_port(), background=True, timeout_s=15)
    uac = run_sipp(
        "uac.xml",
        local_ip=DIALER_PLAIN_IP,
        service="0612345678",
        variables={"caller": CALLER, "pai": "0144556677", "hold_ms": "200", "carrier_port": str(uas.local_port)},
        timeout_s=15,
    )
    uas_result = uas.wait(timeout=30)
    assert uac.ok, uac.describe()
    invite = uas_result.received("INVITE")[0]
    assert "sip:0144556677@" in (invite.header("From") or ""), invite.text
    assert "sip:0144556677@" in (invite.header("P-Asserted-Identity") or ""), invite.text


def test_busy_consumer_gives_486_to_dialer(lab: LabCheck) -> None:
    uas = run_sipp("uas_busy.xml", local_port=free_udp_port(), background=True, timeout_s=15)
    uac = run_sipp(
        "uac_reject.xml",
        local_ip=DIALER_PLAIN_IP,
        service="0612345678",
        variables={"expect_code": "486", "carrier_port": str(uas.local_port)},
        timeout_s=15,
    )
    uas_result = uas.wait(timeout=30)
    assert uac.ok, uac.describe()
    assert uac.final_status() == 486
    assert uas_result.ok, uas_result.describe()


def test_reject_scenario_fails_on_unexpected_code(lab: LabCheck) -> None:
    """uac_reject.xml must not pass when another final code comes back."""
    uas = run_sipp("uas_busy.xml", local_port=free_udp_port(), background=True, timeout_s=15)
    uac = run_sipp(
        "uac_reject.xml",
        local_ip=DIALER_PLAIN_IP,
        service="0612345678",
        variables={"expect_code": "403", "carrier_port": str(uas.local_port)},
        timeout_s=15,
    )
    uas.wait(timeout=30)
    assert not uac.ok
    assert uac.failed == 1
    assert uac.final_status() == 486
    assert "final response 486, expected 403" in uac.log_trace


def test_cancel_while_ringing(lab: LabCheck) -> None:
    uas = run_sipp("uas_noanswer.xml", local_port=free_udp_port(), background=True, timeout_s=15)
    uac = run_sipp(
        "uac_cancel.xml",
        local_ip=DIALER_PLAIN_IP,
        service="0612345678",
        variables={"cancel_after_ms": "300", "carrier_port": str(uas.local_port)},
        timeout_s=15,
    )
    uas_result = uas.wait(timeout=30)
    assert uac.ok, uac.describe()
    assert uac.final_status() == 487
    assert uas_result.ok, uas_result.describe()
    assert uas_result.received("CANCEL")


def test_guard_route_fails_closed_without_ari_app(lab: LabCheck) -> None:
    """No npv-guard app connected: Stasis() fails, the call is rejected with
    403 and the consumer (carrier AOR on 5070) never sees an INVITE."""
    apps = {app["name"] for app in lab.lab.ari("GET", "/applications")}
    assert ARI_APP not in apps, "an npv-guard app is connected to the lab; this test needs none"
    mark = lab.lab.log_mark()
    uas = run_sipp("uas_answer.xml", local_port=CARRIER_PORT, background=True, timeout_s=15)
    try:
        uac = run_sipp(
            "uac_reject.xml",
            local_ip=DIALER_IP,
            service="0612345678",
            variables={"caller": CALLER, "expect_code": "403", "professional": "123456789"},
            timeout_s=10,
        )
    finally:
        uas_result = uas.stop()
    assert uac.ok, uac.describe()
    assert uac.final_status() == 403
    assert uas_result.received("INVITE") == [], uas_result.describe()
    assert uas_result.received() == [], uas_result.describe()
    match = lab.lab.wait_for_log(
        r"npv-guard: REJECT (\S+) -> (\S+): guard unavailable \(STASISSTATUS=(\w+)\)", since=mark
    )
    assert match.groups() == (CALLER, "0612345678", "FAILED")
    # The X-NPV-Professional header reached the Stasis() arguments.
    assert 'Stasis("PJSIP/dialer-' in lab.lab.log_text(mark)
    assert "npv-guard,outbound,123456789,," in lab.lab.log_text(mark)


def test_fastagi_route_fails_closed_without_its_server(lab: LabCheck) -> None:
    mark = lab.lab.log_mark()
    uac = run_sipp(
        "uac_reject.xml",
        local_ip="127.0.0.3",
        service="0612345678",
        variables={"expect_code": "403"},
        timeout_s=10,
    )
    assert uac.ok, uac.describe()
    match = lab.lab.wait_for_log(r"npv-guard: REJECT \S+ -> (\S+): guard unavailable \(AGISTATUS=(\w+)\)", since=mark)
    assert match.groups() == ("0612345678", "FAILURE")


def _dtmf_probe_digits(lab: LabCheck, mark: int) -> str:
    match = lab.lab.wait_for_log(r"NPV_LAB_DTMF digits=(\S*) status=(\w+)", since=mark, timeout=10)
    return match.group(1)


def test_dtmf_sip_info_from_dialer_reaches_asterisk(lab: LabCheck) -> None:
    mark = lab.lab.log_mark()
    uac = run_sipp("uac_dtmf_info.xml", local_ip=DIALER_PLAIN_IP, service="dtmf-probe", timeout_s=15)
    assert uac.ok, uac.describe()
    assert [m.body.splitlines()[0] for m in uac.sent("INFO")] == ["Signal=*", "Signal=9"]
    assert _dtmf_probe_digits(lab, mark) == "*9"
    # Asterisk hung up after reading (remote BYE).
    assert uac.received("BYE")


def test_dtmf_rfc4733_from_dialer_reaches_asterisk(lab: LabCheck) -> None:
    mark = lab.lab.log_mark()
    uac = run_sipp("uac_dtmf_2833.xml", local_ip=DIALER_PLAIN_IP, service="dtmf-probe", timeout_s=15)
    assert uac.ok, uac.describe()
    assert "telephone-event/8000" in uac.received(200)[0].body
    assert _dtmf_probe_digits(lab, mark) == "*9"
    log = lab.lab.log_text(mark)
    assert "DTMF end '*' received on PJSIP/dialer-plain-" in log
    assert "DTMF end '9' received on PJSIP/dialer-plain-" in log


def test_dtmf_rfc4733_generated_capture_any_digits(lab: LabCheck, tmp_path: Path) -> None:
    scenario = dtmf_2833_scenario("uac_dtmf_2833.xml", "1234567890*#", tmp_path)
    mark = lab.lab.log_mark()
    uac = run_sipp(scenario, local_ip=DIALER_PLAIN_IP, service="dtmf-probe", timeout_s=20)
    assert uac.ok, uac.describe()
    # '#' ends Read(): everything before it was received, in order.
    assert _dtmf_probe_digits(lab, mark) == "1234567890*"


@pytest.mark.parametrize(
    ("uas_scenario", "kind"),
    [("uas_dtmf_info.xml", "SIP INFO"), ("uas_dtmf_2833.xml", "RFC 4733")],
)
def test_dtmf_from_consumer_reaches_asterisk(lab: LabCheck, uas_scenario: str, kind: str) -> None:
    mark = lab.lab.log_mark()
    uas = run_sipp(uas_scenario, local_port=free_udp_port(), background=True, timeout_s=15)
    uac = run_sipp(
        "uac.xml",
        local_ip=DIALER_PLAIN_IP,
        service="0612345678",
        variables={"hold_ms": "1500", "carrier_port": str(uas.local_port)},
        timeout_s=15,
    )
    uas_result = uas.wait(timeout=30)
    assert uac.ok, uac.describe()
    assert uas_result.ok, uas_result.describe()
    lab.lab.wait_for_log(r"DTMF end '9' received on PJSIP/carrier-", since=mark)
    # The baseline bridge forwards it to the dialer, who offered no
    # telephone-event: as SIP INFO.
    infos = uac.received("INFO")
    assert infos, f"{kind}: the dialer got no INFO\n{uac.describe()}"
    assert infos[0].body.splitlines()[0] == "Signal=9"


def test_trap_machinery_is_detected(lab: LabCheck) -> None:
    """A path that must never run logs NPV_TRAP; trap_hits() sees it."""
    mark = lab.lab.log_mark()
    lab.lab.rx("channel originate Local/s@npv-lab-trap application Wait 1")
    lab.lab.wait_for_log("NPV_TRAP", since=mark)
    assert lab.lab.trap_hits(since=mark)
    lab.lab.wait_no_channels(timeout=5)
    lab.reset_mark()  # expected hit: do not fail the per-test trap check


def test_small_load_through_baseline(lab: LabCheck) -> None:
    """uac_load.xml: 20 answered calls at 20 calls/s, with response times."""
    calls = 20
    uas = run_sipp("uas_answer.xml", local_port=free_udp_port(), calls=calls, background=True, timeout_s=20)
    uac = run_sipp(
        "uac_load.xml",
        local_ip=DIALER_PLAIN_IP,
        service="0612345678",
        calls=calls,
        rate=20,
        variables={"hold_ms": "200", "carrier_port": str(uas.local_port)},
        timeout_s=20,
        extra_args=("-l", "20"),
    )
    uas_result = uas.wait(timeout=40)
    assert uac.ok and uac.successful == calls, uac.describe()
    assert uas_result.successful == calls, uas_result.describe()
    # The "ring" (INVITE -> 180) response-time counter is in the stats CSV.
    header = uac.stat_csv.splitlines()[0].split(";")
    assert any(name.startswith("ResponseTimering") for name in header), header
