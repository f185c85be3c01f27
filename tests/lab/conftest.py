"""Fixtures for the real-Asterisk lab tests (tests/lab)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.lab import (  # noqa: E402
    AsteriskLab,
    LabCheck,
    LabError,
    ensure_lab_root,
    lab_prerequisites_missing,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test against the real Asterisk lab (root, sipp)")


@pytest.fixture(scope="module")
def asterisk_lab() -> Iterator[AsteriskLab]:
    """A freshly (re)started lab Asterisk for the module; stopped afterwards.

    Fails loudly (never skips) when the machine lacks a prerequisite or the
    Debian sid root cannot be built.
    """
    missing = lab_prerequisites_missing()
    if missing:
        pytest.fail(f"asterisk lab prerequisites missing: {', '.join(missing)}", pytrace=False)
    try:
        ensure_lab_root()
        lab = AsteriskLab()
        lab.restart()
    except LabError as exc:
        pytest.fail(f"ASTERISK LAB UNAVAILABLE: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def lab(asterisk_lab: AsteriskLab) -> Iterator[LabCheck]:
    """The module's lab, with per-test invariants checked afterwards:
    no channel left (they are hung up and the test fails otherwise) and no
    dialplan trap hit during the test."""
    asterisk_lab.wait_no_channels(timeout=5)
    check = LabCheck(asterisk_lab, asterisk_lab.log_mark())
    yield check
    asterisk_lab.wait_no_channels(timeout=10)
    hits = asterisk_lab.trap_hits(since=check.mark)
    assert not hits, "dialplan trap(s) hit:\n" + "\n".join(hits)
