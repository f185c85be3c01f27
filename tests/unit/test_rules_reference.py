"""docs/rules.md is the rules reference shipped with the code: it names every reason code and
every `rules.*` setting, and nothing in the product points outside the repository for the law."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from npv_guard.config import RulesSettings
from npv_guard.core.reasons import ReasonCode

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("code", list(ReasonCode))
def test_every_reason_code_is_in_the_rules_reference(code: ReasonCode) -> None:
    assert f"`{code.value}`" in REFERENCE


@pytest.mark.parametrize("name", [f.name for f in fields(RulesSettings)])
def test_every_rules_setting_is_in_the_rules_reference_and_the_readme(name: str) -> None:
    assert f"`rules.{name}`" in REFERENCE
    assert f"`rules.{name}`" in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_the_product_cites_the_reference_inside_the_repository() -> None:
    texts = [ROOT / "README.md", *(ROOT / "npv_guard").rglob("*.py"), *(ROOT / "docs").rglob("*.md")]
    outside = [
        str(path.relative_to(ROOT))
        for path in texts
        if "shared/" in (text := path.read_text(encoding="utf-8")) or "REGULATION.md" in text
    ]
    assert outside == []
