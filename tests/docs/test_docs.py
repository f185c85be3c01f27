"""The docs say what the code does: every setting, reason code, metric and command is documented
in docs/, and every relative link in the Markdown files resolves."""

from __future__ import annotations

import argparse
import dataclasses
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from npv_guard import cli, config
from npv_guard.core.reasons import ReasonCode
from npv_guard.observability import Metrics

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_MAX_LINES = 150


def _text(*names: str) -> str:
    return "\n".join((DOCS / name).read_text(encoding="utf-8") for name in names)


def _all_docs() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(DOCS.rglob("*.md")))


def setting_keys() -> list[str]:
    """Every key a config file may hold, as `section.key` (top-level keys bare)."""
    keys = []
    for field in dataclasses.fields(config.Settings):
        if field.name in config._SPECIAL:
            continue
        section = config._SECTIONS.get(field.name)
        if section is None:
            keys.append(field.name)
        else:
            keys.extend(f"{field.name}.{sub.name}" for sub in dataclasses.fields(section))
    return keys


def test_the_settings_list_is_not_empty() -> None:
    keys = setting_keys()
    assert "hash_secret" in keys and "redis.url" in keys and len(keys) > 40


@pytest.mark.parametrize("key", setting_keys())
def test_every_setting_is_in_the_configuration_reference(key: str) -> None:
    assert f"`{key}`" in _text("configuration.md"), f"{key} is not documented in docs/configuration.md"


@pytest.mark.parametrize("code", [code.value for code in ReasonCode])
def test_every_reason_code_is_in_the_reason_table(code: str) -> None:
    assert f"| `{code}` |" in _text("reasons.md"), f"{code} has no row in docs/reasons.md"


STANDARD_COLLECTORS = ("process_", "python_")  # prometheus_client's own: documented as `process_*`, `python_*`


def metric_names() -> list[str]:
    """The guard's own metrics (the standard collectors' are checked as a family below)."""
    names = {family.name for family in Metrics().registry.collect()}
    assert any(name.startswith(STANDARD_COLLECTORS) for name in names)  # the collectors are there
    return sorted(name for name in names if not name.startswith(STANDARD_COLLECTORS))


def test_the_standard_collectors_are_documented() -> None:
    page = _text("observability.md")
    assert all(f"`{prefix}*`" in page for prefix in STANDARD_COLLECTORS)


def test_the_metric_list_is_not_empty() -> None:
    assert "npv_guard_decisions" in metric_names()


@pytest.mark.parametrize("name", metric_names())
def test_every_metric_is_documented(name: str) -> None:
    # prometheus_client names a counter family without its `_total` suffix.
    assert re.search(rf"`{re.escape(name)}(_total)?[{{`]", _text("observability.md")), (
        f"metric {name} is not documented in docs/observability.md"
    )


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command line (`check`, `consent grant`...) with its parser."""

    def walk(prefix: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            yield prefix.strip(), parser
            return
        for action in subparsers:
            for name, sub in action.choices.items():
                yield from walk(f"{prefix} {name}", sub)

    yield from walk("", cli.build_parser())


COMMANDS = list(commands())


def test_the_command_list_is_not_empty() -> None:
    names = [name for name, _ in COMMANDS]
    assert "check" in names and "consent grant" in names


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_command_and_option_is_in_the_command_line_page(name: str, parser: argparse.ArgumentParser) -> None:
    page = _text("cli.md")
    assert f"npv-guard {name}" in re.sub(r" +", " ", page), f"`npv-guard {name}` is not in docs/cli.md"
    everywhere = _all_docs()
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert option in everywhere, f"npv-guard {name} {option} is documented nowhere in docs/"


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    files += [p for p in (ROOT / "CHANGELOG.md", ROOT / "docker" / "README.md", ROOT / "tests" / "sipp" / "README.md")]
    files += sorted((ROOT / "bench").rglob("*.md"))
    return [path for path in files if path.exists()]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = "".join(ch for ch in text if ch in " -" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(match) for match in re.findall(r"^#+ (.+)$", text, flags=re.M)}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        assert resolved.exists(), f"{path.relative_to(ROOT)}: link {target!r} points at nothing"
        where = path.relative_to(ROOT)
        assert ROOT in resolved.parents or resolved == ROOT, f"{where}: {target!r} leaves the repository"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{where}: no heading #{anchor} in {file_part or 'itself'}"


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail to docs/"


def test_nothing_points_outside_the_repository() -> None:
    for path in [*markdown_files(), *sorted((ROOT / "npv_guard").rglob("*.py"))]:
        assert "../shared/" not in path.read_text(encoding="utf-8"), f"{path.relative_to(ROOT)} cites ../shared/"
