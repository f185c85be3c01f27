"""The channel variables of npv_guard/channel.py, the dialplan includes and the docs agree: every
name the guard writes is documented, and every NPV_GUARD_* name the dialplan or the docs use is
one the module defines (or an environment variable of the guard or of its tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from npv_guard import channel, config
from tests.docs.test_docs import setting_keys

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NAME = re.compile(r"NPV_GUARD_[A-Z0-9_]*[A-Z0-9]|CDR\(npv_[a-z_]+\)")
# The pages of the call path's channel contract: ARI, AGI, and the campaign and lead labels.
CHANNEL_PAGES = ("ari.md", "agi.md", "audit.md")
# Read by the test suite, the Makefile or an example shell session, never by the guard.
DEVELOPMENT_VARIABLES = frozenset(
    {"NPV_GUARD_TOKEN", "NPV_GUARD_SOAK_CALLS", "NPV_GUARD_FUZZ_EXAMPLES", "NPV_GUARD_UNCONSTRAINED"}
)


def _names(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in NAME.findall(path.read_text(encoding="utf-8"))}


def _environment() -> set[str]:
    """The guard's environment variables: one per setting (each with its `_FILE` twin), the config
    path, the replay clock and the professionals' list."""
    names = {config.ENV_PREFIX + key.replace(".", "_").upper() for key in setting_keys()}
    names |= {name + "_FILE" for name in names}
    return names | {config.CONFIG_ENV, config.NOW_ENV, config.ENV_PREFIX + "PROFESSIONALS"}


DIALPLAN_FILES = sorted((ROOT / "dialplan").rglob("*.conf"))
DOC_FILES = sorted(DOCS.rglob("*.md"))
DEFINED = set(channel.WRITTEN) | set(channel.DIALPLAN)


def test_the_lists_are_not_empty() -> None:
    assert DIALPLAN_FILES and DOC_FILES and channel.WRITTEN and channel.DIALPLAN


@pytest.mark.parametrize("name", channel.WRITTEN)
def test_every_variable_the_guard_writes_is_documented(name: str) -> None:
    assert name in _names([DOCS / page for page in CHANNEL_PAGES]), f"{name}: not in docs/{'|'.join(CHANNEL_PAGES)}"


@pytest.mark.parametrize("name", channel.DIALPLAN)
def test_every_dialplan_variable_is_used_by_the_dialplan_or_documented(name: str) -> None:
    assert name in _names(DIALPLAN_FILES) | _names(DOC_FILES)


@pytest.mark.parametrize("path", DIALPLAN_FILES, ids=lambda p: p.name)
def test_every_name_in_the_dialplan_is_defined(path: Path) -> None:
    assert sorted(_names([path]) - DEFINED) == []


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_every_name_in_the_docs_is_a_channel_or_an_environment_variable(path: Path) -> None:
    assert sorted(_names([path]) - DEFINED - _environment() - DEVELOPMENT_VARIABLES) == []
