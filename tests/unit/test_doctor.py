"""The doctor's reading of Asterisk's `features show` table (output recorded from Asterisk 22)."""

from __future__ import annotations

from npv_guard.doctor import _builtin_codes

FEATURES_SHOW = [
    "Builtin Feature           Default Current",
    "---------------           ------- -------",
    "Pickup                    *8      *8     ",
    "Blind Transfer            #              ",
    "Attended Transfer                        ",
    "Disconnect Call           *       *      ",
    "Park Call                                ",
    "One Touch MixMonitor                     ",
    "",
    "Dynamic Feature           Default Current",
    "---------------           ------- -------",
    "npvguard-refusal          no def  *9     ",
]


def test_current_codes_are_read_by_column() -> None:
    codes = dict(_builtin_codes(FEATURES_SHOW))
    assert codes["Pickup"] == "*8"
    assert codes["Blind Transfer"] == ""  # a default alone is not active
    assert codes["Disconnect Call"] == "*"
    assert "npvguard-refusal" not in codes
