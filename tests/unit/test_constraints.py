"""constraints.txt (the tested versions, scripts/freeze-constraints) pins every package, admits
what pyproject.toml asks for, and is what this venv runs: CI and the image install exactly it."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# requires-python >= 3.11: Debian bookworm's 3.11.2 (the image), and later releases.
SUPPORTED_PYTHONS = ("3.11.0", "3.11.2", "3.12.0", "3.13.0", "3.14.0")


def pins(*, here_only: bool = False) -> dict[str, str]:
    """Name -> pinned version; `here_only`: without the pins whose marker excludes this Python."""
    found: dict[str, str] = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pin = Requirement(line)
        specifiers = list(pin.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not an exact pin: {line!r}"
        if here_only and pin.marker is not None and not pin.marker.evaluate():
            continue
        found[canonicalize_name(pin.name)] = specifiers[0].version
    return found


def requirements() -> list[Requirement]:
    """Every requirement of the project and its extras, the project itself left out (`dev` names
    `npv-guard[report]`: the extras are listed here one by one)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    own = canonicalize_name(project["name"])
    return [r for r in map(Requirement, specs) if canonicalize_name(r.name) != own]


def test_every_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]}, outside pyproject's {requirement.specifier}"
        )


def test_transitive_dependencies_are_pinned_too() -> None:
    """Every dependency of every pinned package, those of other Pythons included (the image's
    interpreter is not the venv's): pip would otherwise pick them unconstrained."""
    pinned = pins()
    for name in pins(here_only=True):
        for dependency in metadata.requires(name) or []:
            needed = Requirement(dependency)
            if needed.marker is not None and not any(
                needed.marker.evaluate({"python_version": full[:4], "python_full_version": full, "extra": ""})
                for full in SUPPORTED_PYTHONS
            ):
                continue
            assert canonicalize_name(needed.name) in pinned, f"{needed.name} (needed by {name})"


def test_the_venv_runs_the_pinned_versions() -> None:
    for name, version in pins(here_only=True).items():
        assert metadata.version(name) == version, f"{name}: venv has {metadata.version(name)}, pinned {version}"


def test_aiohttp_floor_excludes_the_vulnerable_releases() -> None:
    aiohttp = next(r for r in requirements() if r.name == "aiohttp")
    assert not aiohttp.specifier.contains("3.13.3") and aiohttp.specifier.contains("3.14.1")
