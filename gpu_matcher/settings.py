"""Environment settings (``LSTMVIS_*``): the one module that reads them, each at the moment it is used.

Nothing is read at import time, so a test or a server that sets a variable later is obeyed. A malformed
value stops with one line naming the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpu_matcher.errors import ProjectError

#: Every variable the package reads, with its default and meaning (the README lists the same).
VARIABLES: dict[str, tuple[object, str]] = {
    "LSTMVIS_CACHE_DIR": (None, "folder for derived layouts and the demo (default ~/.cache/lstmvis)"),
    "LSTMVIS_IN_MEMORY_BYTES": (64 * 2**20, "sources whose keys fit in this many bytes stay in memory"),
    "LSTMVIS_SHARD_STATE_BYTES": (2 * 2**30, "per-query shard state a Dask worker keeps, bytes"),
    "LSTMVIS_SHARD_QUERIES": (3, "matches whose shard states a worker keeps"),
    "LSTMVIS_SHARD_WINDOWS": (512, "shard windows (sources and layouts) a worker keeps open"),
    "LSTMVIS_WORKER_ROW_KEYS": ("auto", "row-major keys of a worker's shard layout: auto, copy or source"),
    "LSTMVIS_UI_DEFAULTS": (None, "a YAML file of UI defaults read instead of the shipped configs/defaults.yaml"),
    "LSTMVIS_DATA_DIR": (None, "the data folder the app serves when none is configured (default: the demo)"),
    "LSTMVIS_BACKEND": ("auto", "the backend the app uses when none is configured"),
    "LSTMVIS_WORKERS": (8, "worker threads of the app for matches and layout builds"),
    "LSTMVIS_BIT_CACHE_BYTES": (512 * 2**20, "packed on-bit rows the NumPy backend keeps across thresholds, bytes"),
}
ROW_KEY_MODES = ("auto", "copy", "source")


def _text(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _int(name: str, minimum: int = 0) -> int:
    default = VARIABLES[name][0]
    raw = _text(name)
    if raw is None:
        return int(default)  # type: ignore[arg-type]
    try:
        value = int(raw)
    except ValueError:
        raise ProjectError(f"{name}={raw!r}: expected an integer") from None
    if value < minimum:
        raise ProjectError(f"{name}={raw!r}: expected an integer >= {minimum}")
    return value


def cache_dir() -> Path:
    """``$LSTMVIS_CACHE_DIR``, else ``$XDG_CACHE_HOME/lstmvis``, else ``~/.cache/lstmvis``."""
    env = _text("LSTMVIS_CACHE_DIR")
    if env:
        return Path(env)
    base = _text("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstmvis"


def in_memory_bytes() -> int:
    return _int("LSTMVIS_IN_MEMORY_BYTES")


def shard_state_bytes() -> int:
    return _int("LSTMVIS_SHARD_STATE_BYTES")


def shard_queries() -> int:
    return _int("LSTMVIS_SHARD_QUERIES", minimum=1)


def shard_windows() -> int:
    return _int("LSTMVIS_SHARD_WINDOWS", minimum=1)


def worker_row_keys() -> str:
    value = _text("LSTMVIS_WORKER_ROW_KEYS") or "auto"
    if value not in ROW_KEY_MODES:
        raise ProjectError(f"LSTMVIS_WORKER_ROW_KEYS={value!r}: expected one of {', '.join(ROW_KEY_MODES)}")
    return value


def ui_defaults_file() -> Path | None:
    value = _text("LSTMVIS_UI_DEFAULTS")
    return Path(value) if value else None


def data_dir() -> Path | None:
    value = _text("LSTMVIS_DATA_DIR")
    return Path(value) if value else None


def backend() -> str:
    return _text("LSTMVIS_BACKEND") or "auto"


def workers() -> int:
    return _int("LSTMVIS_WORKERS", minimum=1)


def bit_cache_bytes() -> int:
    return _int("LSTMVIS_BIT_CACHE_BYTES")
