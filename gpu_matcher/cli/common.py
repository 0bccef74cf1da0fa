"""What several subcommands share: finding the project a path names, parsing ``--cells``, the common
options whose choices and defaults come from one place (``BACKEND_NAMES``, ``SCALES``,
``configs/defaults.yaml``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gpu_matcher import defaults
from gpu_matcher.backends import BACKEND_NAMES
from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME
from gpu_matcher.threshold import SCALES


def find_project(path: str):
    """The project at ``path``: a project folder, its lstm.yml, or a folder holding exactly one project."""
    from gpu_matcher.project import discover_projects, open_project

    folder = Path(path)
    if (folder / CONFIG_NAME).is_file() or folder.name == CONFIG_NAME:
        return open_project(folder)
    found = discover_projects(folder)
    if len(found) == 1:
        (pid, pdir), = found.items()
        return open_project(pdir, project_id=pid)
    if not found:
        raise ProjectError(f"{folder}: no {CONFIG_NAME} found in this folder or below")
    raise ProjectError(f"{folder}: holds {len(found)} projects ({', '.join(list(found)[:5])}...); "
                       "name one project folder")


def parse_cells(text: str) -> list[int]:
    """``"3,17,42"`` -> ``[3, 17, 42]``; anything else is a one-line ProjectError."""
    try:
        return [int(c) for c in text.replace(" ", "").split(",") if c != ""]
    except ValueError:
        raise ProjectError(f"--cells {text!r}: expected comma-separated integers such as 3,17,42") from None


def add_backend(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--backend", default="auto", choices=list(BACKEND_NAMES), help=help or "array backend")


def add_scale(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--scale", default="none", choices=list(SCALES), help=help)


def add_selection(p: argparse.ArgumentParser, range_required: bool = False) -> None:
    """PROJECT_DIR, --source, --threshold, the brushed range, its margins and --top (shipped defaults)."""
    select, match = defaults.section("select"), defaults.section("match")
    p.add_argument("project_dir")
    p.add_argument("--source", help="FILE::PATH (default: the first source)")
    p.add_argument("--threshold", type=float, required=True)
    p.add_argument("--start", type=int, required=range_required)
    p.add_argument("--end", type=int, required=range_required)
    p.add_argument("--left", type=int, default=int(select["left"]))
    p.add_argument("--right", type=int, default=int(select["right"]))
    p.add_argument("--top", type=int, default=int(match["top"]))
