"""The shipped defaults (``configs/defaults.yaml``): one source for the command line and the app.

The file is package data (installed as ``gpu_matcher.configs``; pyproject maps the top-level ``configs/``
folder there), and in a bare source tree (``PYTHONPATH=.``) it is read from ``configs/`` beside the
package. The shipped file is also the schema: a file named by ``LSTMVIS_UI_DEFAULTS`` overrides its values,
and a key the shipped file lacks is ignored with one warning naming the key and the file.
"""

from __future__ import annotations

import copy
import importlib.resources
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from gpu_matcher import settings
from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import parse_yaml, read_text_limited

log = logging.getLogger("gpu_matcher")

FILE_NAME = "defaults.yaml"
MAX_BYTES = 256 * 2**10


def shipped_path() -> Path:
    """Where the shipped defaults file is: package data when installed, else ``configs/`` of the checkout."""
    try:
        resource = importlib.resources.files("gpu_matcher.configs") / FILE_NAME
        if resource.is_file():
            return Path(str(resource))
    except ModuleNotFoundError:
        pass                                     # a bare source tree: no gpu_matcher.configs package
    return Path(__file__).resolve().parent.parent / "configs" / FILE_NAME


def _read(path: Path) -> dict:
    data = parse_yaml(read_text_limited(path, MAX_BYTES, "a defaults file"), path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProjectError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _overlay(base: dict, extra: dict, path: Path, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        name = f"{prefix}{key}"
        if key not in out:
            log.warning("%s: unknown key %r ignored (known: %s)", path, name, ", ".join(map(str, out)))
        elif isinstance(out[key], dict):
            if isinstance(value, dict):
                out[key] = _overlay(out[key], value, path, name + ".")
            else:
                log.warning("%s: key %r must be a mapping; ignored", path, name)
        else:
            out[key] = value
    return out


@lru_cache(maxsize=8)
def _load(override: str | None) -> dict:
    shipped = shipped_path()
    if not shipped.is_file():
        raise ProjectError(f"{shipped}: the shipped defaults file is missing (a broken install?)")
    values = _read(shipped)
    if override is not None:
        path = Path(override)
        try:
            values = _overlay(values, _read(path), path)
        except ProjectError as exc:
            log.warning("%s; using the shipped defaults", exc)
    return values


def load(path: str | Path | None = None) -> dict[str, Any]:
    """The defaults as nested dicts (a copy): the shipped file, overlaid by ``path`` or $LSTMVIS_UI_DEFAULTS."""
    override = path if path is not None else settings.ui_defaults_file()
    return copy.deepcopy(_load(None if override is None else str(override)))


def section(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """One top-level section of :func:`load`, e.g. ``section("match")["top"]``."""
    return load(path).get(name, {})
