"""The main job, shown live: real SIP calls through the lab Asterisk, decided by the guard.

Brings the lab up on loopback (Redis, Asterisk, `npv-guard run`) with its clock replaying a
Tuesday morning, places calls with sipp as a dialer would, and prints what the dialer got back
and what the guard decided. Leaves nothing running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.lab import CARRIER_PORT, SippResult, run_sipp  # noqa: E402

CONFIG = ROOT / "tests" / "lab" / "guard.toml"
AUDIT = Path(os.environ.get("NPV_LAB_RUN", "/tmp/npv-lab")) / "audit.log"
NOW = os.environ.get("NPV_GUARD_NOW", "2026-12-01T10:30:00")
EXE = str(Path(sys.executable).parent / "npv-guard")


def sh(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(args, cwd=ROOT, check=True, env={**os.environ, **(env or {})})


def cli(*args: str) -> str:
    env = {**os.environ, "NPV_GUARD_CONFIG": str(CONFIG), "NPV_GUARD_NOW": NOW}
    return subprocess.run([EXE, *args], env=env, capture_output=True, text=True, check=False).stdout.strip()


def audit_lines() -> list[dict[str, object]]:
    if not AUDIT.exists():
        return []
    return [json.loads(line) for line in AUDIT.read_text().splitlines() if line.strip()]


def place(title: str, caller: str, callee: str, scenario: str = "uac.xml", uas: str | None = "uas_answer.xml",
          **variables: str) -> None:  # fmt: skip
    print(f"\n--- {title}\n    dialer: INVITE {callee} from {caller}")
    seen = len(audit_lines())
    consumer = None
    if uas:
        consumer = run_sipp(uas, local_port=CARRIER_PORT, background=True, timeout_s=20, variables={"hold_ms": "8000"})
        time.sleep(0.2)
    result: SippResult = run_sipp(scenario, service=callee, variables={"caller": caller, **variables}, timeout_s=20)
    reached = False
    if consumer is not None:
        carrier = consumer.stop() if consumer.running() else consumer.wait(20)
        reached = bool(carrier.received("INVITE"))
    final = result.final_status()
    print(f"    dialer got: SIP {final}  |  consumer's phone {'rang' if reached else 'never rang'}")
    for line in audit_lines()[seen:]:
        if line["event"] == "decision":
            print(f"    guard: {str(line['verdict']).upper()} {', '.join(line['reasons']) or ''}".rstrip())  # type: ignore[arg-type]
        elif line["event"] == "refusal":
            withdrawn = line["withdraws_consent"]
            print(f"    guard: refusal recorded from the {line['source']} (consent withdrawn: {withdrawn})")


def text(title: str, sender: str, to: str, body: str, *, reply: bool = False) -> None:
    """One SIP MESSAGE: from the SMS platform (127.0.0.4) or, as a reply, from the carrier (127.0.0.5)."""
    print(f"\n--- {title}\n    {'carrier' if reply else 'platform'}: MESSAGE {to} from {sender}: {body!r}")
    seen = len(audit_lines())
    phone = run_sipp("uas_message.xml", local_port=CARRIER_PORT, calls=5, background=True, timeout_s=20)
    time.sleep(0.2)
    sent: SippResult = run_sipp("uac_message.xml", local_ip="127.0.0.5" if reply else "127.0.0.4", service=to,
                                variables={"sender": sender, "body": body}, timeout_s=20)  # fmt: skip
    time.sleep(0.8)
    delivered = [message.body for message in phone.stop().received("MESSAGE")]
    answer = sent.final_status("MESSAGE")
    print(f"    Asterisk answered: SIP {answer}  |  consumer's phone got: {delivered or 'nothing'}")
    for line in audit_lines()[seen:]:
        if line["event"] == "decision":
            print(f"    guard: {str(line['verdict']).upper()} {', '.join(line['reasons']) or ''}".rstrip())  # type: ignore[arg-type]
        elif line["event"] == "refusal":
            print(f"    guard: STOP recorded (consent withdrawn: {line['withdraws_consent']})")


def main() -> int:
    print(f"npv-guard demo: the lab's clock replays {NOW} (Europe/Paris)\n")
    sh("scripts/lab", "down")
    sh("scripts/lab", "up", env={"NPV_GUARD_NOW": NOW})
    try:
        subprocess.run(["redis-cli", "-p", "6390", "FLUSHDB"], check=True, capture_output=True)  # a clean demo
        AUDIT.write_text("")
        print("\n$ npv-guard consent grant --professional lab --callee 0612345678 --proof 'web form #42'")
        print("   ", cli("consent", "grant", "--professional", "lab", "--callee", "0612345678",
                        "--at", "2026-09-01T12:00", "--proof", "web form #42"))  # fmt: skip
        place("1. NPV caller, consumer who consented", "0162000001", "0612345678", hold_ms="1000")
        place("2. mobile caller ID", "0612345670", "0612345678", "uac_reject.xml", expect_code="403")
        place("3. consumer without consent", "0162000001", "0699999999", "uac_reject.xml", expect_code="403")
        place("4. consumer in Martinique (05:30 there)", "0162000001", "0596123456", "uac_reject.xml",
              expect_code="403")  # fmt: skip
        place("5. agent keys *9: the consumer refused", "0162000001", "0612345678", "uac_dtmf_info.xml",
              hold_ms="1500")  # fmt: skip
        place("6. the same consumer again", "0162000001", "0612345678", "uac_reject.xml", expect_code="403")
        print("\n$ npv-guard consent grant --professional lab --callee 0611223344 --proof 'shop form #7'")
        print("   ", cli("consent", "grant", "--professional", "lab", "--callee", "0611223344",
                        "--at", "2026-09-01T12:00", "--proof", "shop form #7"))  # fmt: skip
        text("7. SMS from the platform number 0937 00 00 01", "0937000001", "0611223344", "Votre devis est prêt ✅")
        text("8. SMS with a voice NPV as sender", "0162000001", "0611223344", "Votre devis est prêt ✅")
        text("9. the consumer answers STOP", "0611223344", "0937000001", "Stop SMS", reply=True)
        text("10. SMS to the same consumer again", "0937000001", "0611223344", "Dernière chance !")
        print("\n$ npv-guard history --professional lab --callee 0612345678")
        print("   ", cli("history", "--professional", "lab", "--callee", "0612345678").replace("\n", "\n    "))
        print(f"\naudit trail (one JSON line per decision and refusal): {AUDIT}")
    finally:
        threading.Event().wait(0.5)
        sh("scripts/lab", "down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
