"""One Asterisk configuration: the lab and the container image render the same base.

asterisk/base/ is shared; asterisk/lab/ and asterisk/image/ hold only the overlay files the base
includes (npv-overlay-*.conf) and the lab's values (asterisk/lab/vars). These tests render both
sides with the real renderer (asterisk/render, and the image's own entrypoint) and fail when the
two drift apart: a second copy of a base file, an overlay the base does not include, an overlay
that redefines a section or an option of the base, a placeholder left unrendered, a context the
base calls that one side does not define.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASTERISK = ROOT / "asterisk"
BASE = ASTERISK / "base"
SIDES = ("lab", "image")
DIALPLAN = ROOT / "dialplan"
INCLUDE = re.compile(r"^\s*#(?:try)?include\s+(\S+)", re.M)
SECTION = re.compile(r"^\[([^\]]+)\](\(([^)]*)\))?")
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
CALLED_CONTEXT = re.compile(r"\b(?:Gosub|Goto|GosubIf|GotoIf)\((?:[^?()]*\?)?([a-z][a-z0-9-]*),[^,()]*,")


def declared_variables() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in (ASTERISK / "variables").read_text().splitlines())
    return [line for line in lines if line]


def conf_names(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("*.conf")}


def declared_overlays() -> set[str]:
    """Files the base includes that are neither base files nor the project's dialplan includes."""
    targets = {name for path in BASE.glob("*.conf") for name in INCLUDE.findall(path.read_text())}
    return targets - conf_names(BASE) - conf_names(DIALPLAN)


def copy_dialplan(dest: Path) -> None:
    # As scripts/asterisk-lab and the entrypoint do after rendering.
    for path in [*DIALPLAN.glob("*.conf"), *(DIALPLAN / "freepbx").glob("*.conf")]:
        shutil.copy(path, dest / path.name)


def render_lab(dest: Path) -> Path:
    dest.mkdir()
    lab = ASTERISK / "lab"
    command = ["perl", str(ASTERISK / "render"), "--vars", str(lab / "vars"), str(dest), str(BASE), str(lab)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    copy_dialplan(dest)
    return dest


def render_image(tmp: Path) -> Path:
    """The image's entrypoint with its default environment, on the image's template layout."""
    templates, dest = tmp / "templates", tmp / "image"
    templates.mkdir()
    dest.mkdir()
    for source in (BASE, ASTERISK / "image"):
        for path in source.glob("*.conf"):
            shutil.copy(path, templates / path.name)
    env = {
        "PATH": os.environ["PATH"],
        "NPV_ASTERISK_TEMPLATES": str(templates),
        "NPV_ASTERISK_DIALPLAN": str(DIALPLAN),
        "NPV_ASTERISK_RENDER": str(ASTERISK / "render"),
        "NPV_ASTERISK_ETC": str(dest),
        "ARI_PASSWORD": "test-password",
        "AMI_SECRET": "test-secret",
    }
    entrypoint = ROOT / "docker" / "asterisk" / "entrypoint.sh"
    result = subprocess.run(["sh", str(entrypoint), "true"], check=False, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return dest


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("asterisk")
    return {"lab": render_lab(tmp / "lab"), "image": render_image(tmp)}


@dataclass
class Section:
    name: str
    template: bool
    parents: list[str]
    origin: str  # the file whose text opened the section
    keys: list[tuple[str, str, str]] = field(default_factory=list)  # (key, value, origin file)


def expand(directory: Path, name: str, seen: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The file's lines with the includes spliced in, as Asterisk reads them: (origin, line)."""
    path = directory / name
    if name in seen or not path.exists():
        return []
    out: list[tuple[str, str]] = []
    for line in path.read_text().splitlines():
        match = INCLUDE.match(line)
        if match:
            out.extend(expand(directory, match.group(1), (*seen, name)))
        else:
            out.append((name, line))
    return out


def sections(directory: Path, name: str) -> list[Section]:
    found: list[Section] = []
    for origin, raw in expand(directory, name):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        header = SECTION.match(line)
        if header:
            options = [part.strip() for part in (header.group(3) or "").split(",") if part.strip()]
            found.append(Section(header.group(1), "!" in options, [o for o in options if o != "!"], origin))
        elif found and ("=" in line):
            key, _, value = line.partition("=")
            found[-1].keys.append((key.strip().rstrip(">").strip(), value.strip(), origin))
    return found


def identity(section: Section, by_name: dict[str, Section]) -> tuple[str, str]:
    """pjsip-style files name objects by (name, type); a template's type is inherited."""
    for key, value, _ in section.keys:
        if key == "type":
            return section.name, value
    for parent in section.parents:
        if parent in by_name:
            return section.name, identity(by_name[parent], by_name)[1]
    return section.name, ""


def overlay_conflicts(directory: Path) -> list[str]:
    """Overlay text that redefines what the base defines, in every rendered top-level file."""
    problems = []
    overlays = declared_overlays()
    for name in sorted(conf_names(BASE)):
        found = sections(directory, name)
        templates = {s.name: s for s in found if s.template}
        base_ids = {identity(s, templates) for s in found if s.origin == name}
        for section in found:
            sid = identity(section, templates)
            if section.origin in overlays and sid in base_ids:
                problems.append(f"{name}: {section.origin} redefines [{section.name}] ({sid[1] or 'section'})")
            base_keys = {key for key, _, origin in section.keys if origin == name}
            for key, _, origin in section.keys:
                if origin in overlays and key in base_keys and key not in ("exten", "same", "include"):
                    problems.append(f"{name}: {origin} redefines {key} in [{section.name}]")
    return problems


def test_there_is_one_copy_of_the_configuration() -> None:
    assert not (ROOT / "tests" / "lab" / "asterisk").exists()
    assert not (ROOT / "docker" / "asterisk" / "config").exists()
    assert "asterisk/base/" in (ROOT / "docker" / "asterisk" / "Dockerfile").read_text()
    assert "CONF_SRC=$PROJECT/asterisk\n" in (ROOT / "scripts" / "asterisk-lab").read_text()


def test_each_side_has_exactly_the_overlays_the_base_includes() -> None:
    overlays = declared_overlays()
    assert overlays and all(name.startswith("npv-overlay-") for name in overlays)
    for side in SIDES:
        assert conf_names(ASTERISK / side) == overlays, side
        assert not conf_names(ASTERISK / side) & conf_names(BASE)
    # Nothing else hides in a side directory but the lab's values (and its second instance's).
    assert {p.name for p in (ASTERISK / "lab").iterdir()} == overlays | {"vars", "vars2"}
    assert {p.name for p in (ASTERISK / "image").iterdir()} == overlays


def _values(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_lab_instance_2_has_its_own_ports_and_directories() -> None:
    first, second = _values(ASTERISK / "lab" / "vars"), _values(ASTERISK / "lab" / "vars2")
    assert set(second) <= set(declared_variables())
    for name in ("SIP_PORT", "ARI_PORT", "AMI_PORT", "AGI_SERVER", "ASTERISK_SYSTEM_NAME", "ASTERISK_ETC_DIR",
                 "ASTERISK_RUN_DIR", "ASTERISK_LOG_DIR", "ASTERISK_DB_DIR", "ASTERISK_SPOOL_DIR"):  # fmt: skip
        assert second[name] != first[name], name
    rtp = range(int(first["RTP_START"]), int(first["RTP_END"]) + 1)
    assert int(second["RTP_START"]) not in rtp and int(second["RTP_END"]) not in rtp
    assert second["AGI_SERVER"] == "127.0.0.1:4583"


def test_every_declared_variable_is_used_and_rendered(rendered: dict[str, Path]) -> None:
    names = declared_variables()
    texts = [p.read_text() for side in ("base", *SIDES) for p in (ASTERISK / side).glob("*.conf")]
    used = {name for text in texts for name in PLACEHOLDER.findall(text)}
    assert set(names) <= used, set(names) - used
    lab_vars = {line.split("=", 1)[0] for line in (ASTERISK / "lab" / "vars").read_text().splitlines()
                if line and not line.startswith("#")}  # fmt: skip
    assert lab_vars == set(names)
    for side, directory in rendered.items():
        assert conf_names(directory) >= conf_names(BASE) | declared_overlays(), side
        for path in directory.glob("*.conf"):
            left = set(PLACEHOLDER.findall(path.read_text())) & set(names)
            assert not left, f"{side} {path.name}: {left}"


def test_no_overlay_redefines_the_base(rendered: dict[str, Path]) -> None:
    for side, directory in rendered.items():
        assert overlay_conflicts(directory) == [], side


def test_the_drift_check_sees_an_overlay_that_redefines_the_base(tmp_path: Path) -> None:
    directory = render_lab(tmp_path / "lab")
    with (directory / "npv-overlay-extensions.conf").open("a") as overlay:
        overlay.write("\n[from-dialer]\nexten => _X.,1,Dial(PJSIP/${EXTEN}@carrier)\n")
    with (directory / "npv-overlay-pjsip-endpoint.conf").open("a") as overlay:
        overlay.write("\ndirect_media = yes\n")
    problems = overlay_conflicts(directory)
    assert any("redefines [from-dialer]" in p for p in problems), problems
    assert any("redefines direct_media in [npv-endpoint]" in p for p in problems), problems


def test_every_context_the_base_calls_is_defined_on_each_side(rendered: dict[str, Path]) -> None:
    called = set(CALLED_CONTEXT.findall((BASE / "extensions.conf").read_text()))
    assert "npv-overlay-dialer-call" in called
    for side, directory in rendered.items():
        defined = {s.name for s in sections(directory, "extensions.conf")}
        assert called <= defined, (side, called - defined)


def test_the_sides_differ_only_where_the_environment_says(rendered: dict[str, Path]) -> None:
    lab, image = rendered["lab"], rendered["image"]
    # Same values (the image's defaults are the lab's ports): the shared files are identical.
    for name in ("modules.conf", "http.conf", "extensions.conf"):
        assert (lab / name).read_text() == (image / name).read_text(), name
    assert "bind = 127.0.0.1:5060" in (lab / "pjsip.conf").read_text()
    assert "match = 127.0.0.6" in (lab / "npv-overlay-pjsip.conf").read_text()
    assert "astetcdir => /etc/npv-lab" in (lab / "asterisk.conf").read_text()
    assert "astetcdir => /etc/asterisk" in (image / "asterisk.conf").read_text()
    assert "password = test-password" in (image / "ari.conf").read_text()


def test_the_freepbx_feature_codes_are_the_labs_applicationmap(rendered: dict[str, Path]) -> None:
    def entries(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("npvguard-")]

    freepbx = (DIALPLAN / "freepbx" / "features_applicationmap_custom.conf").read_text()
    assert entries(freepbx) == entries((rendered["lab"] / "features.conf").read_text())
    assert len(entries(freepbx)) == 2
