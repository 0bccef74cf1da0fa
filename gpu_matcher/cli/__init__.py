"""The ``lstmvis`` command line. Errors a user can cause print one line on stderr and exit 2.

Each subcommand module offers ``register(subparsers)``, which adds its parsers and sets ``func`` (a
callable taking the parsed args and returning an exit code). The engine's own commands are listed in
``COMMAND_MODULES``; other parts of the product (the app's ``serve``) register themselves in the entry
point group ``lstmvis.commands`` of their distribution, so this package never names them. In a source
checkout the same table is also read from ``pyproject.toml`` beside the package (a bare tree run with
``PYTHONPATH=.`` has no installed metadata, and a worktree's may be stale).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Callable

from gpu_matcher.errors import ProjectError

__all__ = ["COMMAND_MODULES", "ENTRY_POINT_GROUP", "build_parser", "command_plugins", "main"]

#: The engine's subcommand modules (nothing heavy at import: `lstmvis match` never imports Bokeh).
COMMAND_MODULES = ("gpu_matcher.cli.match", "gpu_matcher.cli.stats", "gpu_matcher.cli.unit", "gpu_matcher.cli.data",
                   "gpu_matcher.extract.hf", "gpu_matcher.io.spans", "gpu_matcher.genome.cli")
#: Entry point group through which other packages add subcommands: ``name = "module:register"``.
ENTRY_POINT_GROUP = "lstmvis.commands"

log = logging.getLogger("gpu_matcher")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"lstmvis: error: {message}\n")


def _checkout_entry_points() -> list[EntryPoint]:
    """The ``lstmvis.commands`` table of the ``pyproject.toml`` beside this package, if it sits in a checkout."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.is_file():
        return []
    import tomllib

    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    if (table.get("project") or {}).get("name") != "lstmvis-gpu":
        return []                                # not our checkout
    group = ((table.get("project") or {}).get("entry-points") or {}).get(ENTRY_POINT_GROUP) or {}
    return [EntryPoint(name=str(name), value=str(value), group=ENTRY_POINT_GROUP)
            for name, value in group.items()]


def command_plugins() -> dict[str, EntryPoint]:
    """Subcommand entry points by name: installed distributions', then the checkout's (which win)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    for ep in _checkout_entry_points():
        found[ep.name] = ep
    return found


def _load_register(ep: EntryPoint) -> Callable | None:
    try:
        return ep.load()
    except ModuleNotFoundError as exc:
        log.debug("subcommand %s not available (%s)", ep.name, exc)   # that part is not installed
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lstmvis", description="Explore what a sequence model's hidden states learned.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    for name, ep in command_plugins().items():
        if name in sub.choices:
            continue                             # a built-in command is never replaced
        register = _load_register(ep)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="lstmvis: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except ProjectError as exc:
        print(f"lstmvis: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
