"""Import directions between the package's layers, read from the source with `ast`.

    core     npv_guard.core.*: the pure rules; imports nothing of npv_guard outside core
    adapters ari, agi, api, sms, scrub (module or package): import core and the shared modules,
             never another adapter
    wiring   cli, runner, report, __main__: build the processes from the settings; import anything
    shared   every other module (service, store, config, audit, telephony, testing...): the
             layer the adapters share; imports core and shared modules, never an adapter nor the
             wiring

Every import counts, the lazy ones inside functions and those under TYPE_CHECKING included: a
type-only import still ties two adapters together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import npv_guard

PACKAGE = "npv_guard"
ADAPTERS = ("ari", "agi", "api", "sms", "scrub")
WIRING = ("cli", "runner", "report", "__main__")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package rooted at `root`, by dotted name."""
    return {_module_name(root, path): path for path in sorted(root.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module `name` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from npv_guard import cli` imports the module npv_guard.cli
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {target for target in found if target == PACKAGE or target.startswith(PACKAGE + ".")}


def layer(name: str) -> tuple[str, str]:
    """(layer, adapter or "") of a module."""
    parts = name.split(".")
    if len(parts) < 2:
        return "shared", ""
    top = parts[1]
    if top == "core":
        return "core", ""
    if top in ADAPTERS:
        return "adapter", top
    if top in WIRING:
        return "wiring", ""
    return "shared", ""


def violations(root: Path) -> list[str]:
    """Every import that goes against the layers' directions, as "importer -> imported: why"."""
    found = modules(root)
    known = set(found)
    problems = []
    for name, path in found.items():
        kind, adapter = layer(name)
        for target in sorted(imports(name, path, known)):
            target_kind, target_adapter = layer(target)
            if target == PACKAGE or kind == "wiring":
                continue
            if kind == "core" and target_kind != "core":
                problems.append(f"{name} -> {target}: the core imports nothing outside core")
            elif kind == "adapter" and target_kind == "adapter" and target_adapter != adapter:
                problems.append(f"{name} -> {target}: an adapter never imports another adapter")
            elif kind in ("adapter", "shared") and target_kind == "wiring":
                problems.append(f"{name} -> {target}: only the wiring imports the wiring")
            elif kind == "shared" and target_kind == "adapter":
                problems.append(f"{name} -> {target}: a shared module never imports an adapter")
    return problems


def test_the_package_keeps_the_import_directions() -> None:
    root = Path(npv_guard.__file__).parent
    assert violations(root) == []


def test_every_adapter_of_the_list_exists() -> None:
    # A renamed adapter would silently leave the rules above.
    root = Path(npv_guard.__file__).parent
    for adapter in ADAPTERS:
        assert (root / adapter).is_dir() or (root / f"{adapter}.py").is_file(), adapter
    for wiring in WIRING:
        assert (root / f"{wiring}.py").is_file(), wiring


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for relative, text in {"__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:  # every folder a package
            (root / parent / "__init__.py").touch()
        path.write_text(text, encoding="utf-8")
    return root


def test_a_clean_synthetic_tree_passes(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "core/rules.py": "from npv_guard.core import model\nfrom . import model as again\n",
            "core/model.py": "import datetime\n",
            "service.py": "from npv_guard.core.rules import x\n",
            "ari/calls.py": "from npv_guard.service import Guard\nfrom npv_guard.ari import port\n",
            "ari/port.py": "",
            "sms/service.py": "from npv_guard.telephony import AriPort\n",
            "telephony.py": "",
            "runner.py": "from npv_guard.ari.calls import CallService\nfrom npv_guard.sms.service import S\n",
        },
    )
    assert violations(root) == []


def test_an_adapter_importing_another_adapter_fails(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "ari/port.py": "",
            "sms/service.py": "from npv_guard.ari.port import AriPort\n",
            "scrub.py": "def later():\n    import npv_guard.api.app\n",
            "api/app.py": "",
            "agi/check.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from npv_guard.ari import port\n",
        },
    )
    assert violations(root) == [
        "npv_guard.agi.check -> npv_guard.ari.port: an adapter never imports another adapter",
        "npv_guard.scrub -> npv_guard.api.app: an adapter never imports another adapter",
        "npv_guard.sms.service -> npv_guard.ari.port: an adapter never imports another adapter",
    ]


def test_a_relative_import_across_adapters_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"ari/app.py": "from ..sms import service\n", "sms/service.py": ""})
    assert violations(root) == ["npv_guard.ari.app -> npv_guard.sms.service: an adapter never imports another adapter"]


def test_the_core_importing_outside_core_fails(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "core/decide.py": "from npv_guard.store import Store\nfrom npv_guard import config\n",
            "store.py": "",
            "config.py": "",
        },
    )
    assert violations(root) == [
        "npv_guard.core.decide -> npv_guard.config: the core imports nothing outside core",
        "npv_guard.core.decide -> npv_guard.store: the core imports nothing outside core",
    ]


def test_a_shared_module_importing_an_adapter_or_the_wiring_fails(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "service.py": "from npv_guard.sms.service import SmsService\n",
            "audit.py": "from npv_guard import runner\n",
            "sms/service.py": "",
            "runner.py": "",
        },
    )
    assert violations(root) == [
        "npv_guard.audit -> npv_guard.runner: only the wiring imports the wiring",
        "npv_guard.service -> npv_guard.sms.service: a shared module never imports an adapter",
    ]
