"""The files the package ships for Asterisk and systemd, and `npv-guard dialplan|systemd show|install`.

They live once in the repository (dialplan/, systemd/) and reach the wheel as the data packages
`npv_guard.dialplan` and `npv_guard.systemd` (pyproject.toml package-dir). Installing never
replaces a file an admin changed unless told to (--force), and writes nothing when it refuses.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import TextIO

# The ExecStart= binary of the shipped units: where the README's install puts the venv.
SHIPPED_EXECUTABLE = "/opt/npv-guard/bin/npv-guard"
DIALPLAN_DEST = "/etc/asterisk"
# ProtectHome=yes hides these from the service: an npv-guard installed there cannot start.
_HIDDEN_BY_PROTECT_HOME = ("/home/", "/root/", "/run/user/")


class Refused(Exception):
    """A command that must not run as given (exit 2, one line)."""


@dataclass(frozen=True)
class Shipped:
    name: str  # what --mode / NAME selects
    target: PurePosixPath  # where it goes, relative to the destination
    text: str


def _walk(root: Traversable, prefix: PurePosixPath | None = None) -> Iterator[tuple[PurePosixPath, Traversable]]:
    prefix = prefix or PurePosixPath()
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            if entry.name != "__pycache__":
                yield from _walk(entry, prefix / entry.name)
        else:
            yield prefix / entry.name, entry


def dialplan_files() -> list[Shipped]:
    """Every *.conf of dialplan/, subdirectories included. The mode of npv-guard-X.conf is X; a
    subdirectory's files form one mode named after it; another top-level file's mode is its stem."""
    shipped = []
    for relative, entry in _walk(files("npv_guard.dialplan")):
        if relative.suffix != ".conf":
            continue
        mode = relative.parts[0] if len(relative.parts) > 1 else relative.stem.removeprefix("npv-guard-")
        shipped.append(Shipped(mode, relative, entry.read_text(encoding="utf-8")))
    return shipped


def default_executable() -> str:
    """The npv-guard beside the running interpreter (the venv it was installed in)."""
    beside = Path(sys.executable).parent / "npv-guard"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("npv-guard") or SHIPPED_EXECUTABLE


def systemd_files(executable: str) -> list[Shipped]:
    """The units with ExecStart= on `executable`, the sysusers.d file and the sample config, at
    their places under a root directory."""
    if not executable.startswith("/") or any(c.isspace() or c in "%\"'\\$;" for c in executable):
        raise Refused(f"--executable: expected an absolute path without spaces, quotes or %, got {executable!r}")
    package = files("npv_guard.systemd")
    shipped = []
    for relative, entry in _walk(package):
        text = entry.read_text(encoding="utf-8")
        if relative.suffix == ".service":
            name = relative.name.removeprefix("npv-guard-").partition("@")[0]
            shipped.append(Shipped(name, "etc/systemd/system" / relative, text.replace(SHIPPED_EXECUTABLE, executable)))
        elif relative.name.endswith(".sysusers.conf"):
            shipped.append(Shipped("sysusers", PurePosixPath("etc/sysusers.d/npv-guard.conf"), text))
        elif relative.suffix == ".toml":
            shipped.append(Shipped("config", PurePosixPath("etc/npv-guard/example.toml"), text))
    return shipped


def select(shipped: Sequence[Shipped], names: Sequence[str] | None, option: str) -> list[Shipped]:
    if not names:
        return list(shipped)
    known = sorted({s.name for s in shipped})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Refused(f"{option}: unknown {', '.join(map(repr, unknown))} (one of: {', '.join(known)})")
    return [s for s in shipped if s.name in names]


def install(shipped: Sequence[Shipped], dest: Path, *, force: bool) -> list[tuple[Path, str]]:
    """Write the files under `dest`; (path, "written" | "unchanged" | "replaced") for each.
    A file that exists with other content is replaced only with `force`: otherwise nothing is
    written at all, so a refusal never leaves half an installation."""
    if not dest.is_dir():
        raise Refused(f"--dest {dest}: no such directory")
    plan: list[tuple[Path, Shipped, str]] = []
    changed = []
    for item in shipped:
        path = dest.joinpath(*item.target.parts)
        if path.is_dir():
            raise Refused(f"{path}: is a directory")
        if not path.exists():
            plan.append((path, item, "written"))
        elif path.read_bytes() == item.text.encode():
            plan.append((path, item, "unchanged"))
        else:
            plan.append((path, item, "replaced"))
            changed.append(path)
    if changed and not force:
        several = len(changed) > 1
        raise Refused(
            f"{', '.join(map(str, changed))} {'differ' if several else 'differs'} from the shipped "
            f"{'files' if several else 'file'}: nothing written (--force replaces {'them' if several else 'it'})"
        )
    for path, item, status in plan:
        if status == "unchanged":
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside then renamed: Asterisk or systemd never reads half a file.
        partial = path.with_name(f".{path.name}.npv-guard-tmp")
        partial.write_bytes(item.text.encode())
        partial.chmod(0o644)
        partial.replace(path)
    return [(path, status) for path, _, status in plan]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dialplan = commands.add_parser("dialplan", help="the Asterisk dialplan includes").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    show = dialplan.add_parser("show", help="print an include (without --mode: list them)")
    show.add_argument("--mode", action="append", metavar="MODE", help="ari, agi, sms, ... (repeatable)")
    put = dialplan.add_parser("install", help="write the includes into Asterisk's configuration directory")
    put.add_argument("--dest", default=DIALPLAN_DEST, metavar="DIR", help=f"default: {DIALPLAN_DEST}")
    put.add_argument("--mode", action="append", metavar="MODE", help="only this include (repeatable; default: all)")
    put.add_argument("--force", action="store_true", help="replace files that differ from the shipped ones")

    systemd = commands.add_parser("systemd", help="the systemd units").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    show = systemd.add_parser("show", help="print a unit (without NAME: list them)")
    show.add_argument("name", nargs="?", metavar="NAME", help="run, agi, serve, sysusers or config")
    put = systemd.add_parser("install", help="write the units, the sysusers.d file and the sample config")
    put.add_argument("--dest", default="/", metavar="DIR", help="root directory they go under (default: /)")
    put.add_argument("--force", action="store_true", help="replace files that differ from the shipped ones")
    for parser in (show, put):
        parser.add_argument(
            "--executable", metavar="PATH", help="ExecStart= binary (default: the npv-guard beside this Python)"
        )


def _summary(item: Shipped) -> str:
    """The first comment line that says something (skipping rulers and the file's own name)."""
    for line in item.text.splitlines():
        words = line.lstrip(";#").strip(" =-").removeprefix(f"{item.target.name} -- ")
        if words:
            return words
    return ""


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "dialplan":
        shipped = dialplan_files()
        if args.action == "show":
            return _show(select(shipped, args.mode, "--mode"), listing=not args.mode, out=out)
        chosen = select(shipped, args.mode, "--mode")
        return _report(install(chosen, Path(args.dest), force=args.force), out)
    executable = args.executable or default_executable()
    shipped = systemd_files(executable)
    if args.action == "show":
        return _show(select(shipped, [args.name] if args.name else None, "NAME"), listing=not args.name, out=out)
    if executable.startswith(_HIDDEN_BY_PROTECT_HOME):
        err.write(f"npv-guard: warning: {executable} is under a directory ProtectHome=yes hides from the units\n")
    _report(install(shipped, Path(args.dest), force=args.force), out)
    out.write(
        "next: systemd-sysusers (creates the npv-guard user); systemctl daemon-reload;\n"
        "      install -m 0640 -g npv-guard /etc/npv-guard/example.toml /etc/npv-guard/NAME.toml (edit it);\n"
        "      systemctl enable --now npv-guard-run@NAME (or npv-guard-agi@NAME, npv-guard-serve@NAME)\n"
    )
    return 0


def _show(chosen: Sequence[Shipped], *, listing: bool, out: TextIO) -> int:
    if listing:
        out.writelines(f"{s.name:<10} {s.target}  {_summary(s)}\n" for s in chosen)
        return 0
    for item in chosen:
        if len(chosen) > 1:
            out.write(f"; ==> {item.target} <==\n")
        out.write(item.text)
    return 0


def _report(results: Sequence[tuple[Path, str]], out: TextIO) -> int:
    out.writelines(f"{status:<9} {path}\n" for path, status in results)
    return 0
