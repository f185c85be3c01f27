"""`make demo`, the README's main command, run whole: every scene must end as the README says.

The demo brings the lab up and down itself (scripts/lab), so this module uses no lab fixture: the
previous module's lab is stopped by then, and nothing may be left running afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.lab import lab_prerequisites_missing

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LAB_PORTS = (5060, 8088, 5038, 4573, 6390, 9464)  # SIP, ARI, AMI, FastAGI, the lab's Redis, metrics

# Scene title prefix -> what the dialer (or the SMS platform) got and what the guard audited.
EXPECTED = {
    "1.": ("SIP 200  |  consumer's phone rang", ["ALLOW"]),
    "2.": ("SIP 403  |  consumer's phone never rang", ["REJECT CALLER_NOT_NPV"]),
    "3.": ("SIP 403  |  consumer's phone never rang", ["REJECT NO_CONSENT"]),
    "4.": ("SIP 403  |  consumer's phone never rang", ["REJECT OUTSIDE_HOURS, NO_CONSENT"]),
    "5.": (
        "SIP 200  |  consumer's phone rang",
        ["ALLOW", "refusal recorded from the agent (consent withdrawn: True)"],
    ),
    "6.": ("SIP 403  |  consumer's phone never rang", ["REJECT REFUSAL_BLOCK, CONSENT_WITHDRAWN"]),
    "7.": ("consumer's phone got: ['Votre devis est prêt ✅']", ["ALLOW"]),
    "8.": ("consumer's phone got: nothing", ["REJECT SENDER_NOT_PLATFORM_NUMBER"]),
    "9.": ("consumer's phone got: ['Votre demande STOP", ["STOP recorded (consent withdrawn: True)"]),
    "10.": ("consumer's phone got: nothing", ["REJECT REFUSAL_BLOCK, CONSENT_WITHDRAWN"]),
}


def scenes(output: str) -> dict[str, str]:
    """The demo's output cut at each `--- N. title` line, by `N.`."""
    parts = re.split(r"^--- (\d+\.) ", output, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_make_demo_runs_every_scene_as_documented() -> None:
    missing = lab_prerequisites_missing()
    if missing:
        pytest.fail(f"asterisk lab prerequisites missing: {', '.join(missing)}", pytrace=False)
    venv = str(Path(sys.executable).parents[1])
    env = {**os.environ, "NPV_GUARD_VENV": venv}
    done = subprocess.run(
        ["make", "--no-print-directory", "demo", f"VENV={venv}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = scenes(done.stdout)
    assert sorted(found) == sorted(EXPECTED), done.stdout[-3000:]
    for scene, (dialer, guard_lines) in EXPECTED.items():
        text = found[scene]
        assert dialer in text, f"scene {scene}\n{text}"
        audited = [line.strip().removeprefix("guard: ") for line in text.splitlines() if "guard: " in line]
        assert audited == guard_lines, f"scene {scene}\n{text}"
    assert "attempts: 2" in done.stdout and "refusals: 1" in done.stdout
    # The demo leaves nothing running: no lab service listens any more.
    listening = subprocess.run(["ss", "-Hltnu"], capture_output=True, text=True, check=True).stdout
    for port in LAB_PORTS:
        assert not re.search(rf":{port}\s", listening), f"port {port} still open after the demo:\n{listening}"
