"""Add a meta track to an existing project without touching its other files.

A track goes into its own new HDF5 file in the project folder (``meta_<name>.h5``, dataset ``<name>``;
a discrete track's labels into ``<name>.dict``), written beside under a temporary name and renamed into
place; then ``lstm.yml`` gains the ``files`` and ``meta`` entries in one atomic replace, under a lock file
so two writers never lose each other's change. Nothing here opens the project (``Project.add_meta`` and
the ``add-meta`` command pass ``T``), so the project module can use it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME
from gpu_matcher.formats import load_config, write_config, write_dictionary
from gpu_matcher.io.vocab import as_id_map

TRACK_KINDS = ("discrete", "scalar")
LOCK_SECONDS = 10.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")          # as ProjectWriter's track names
RESERVED_NAMES = {"words", "seq_starts"}


def update_config(folder: str | os.PathLike, change: Callable[[dict], None]) -> dict:
    """Apply ``change`` to ``folder/lstm.yml`` in place: read, change, write a temporary file, rename.

    A lock file (``lstm.yml.lock``) keeps two writers from interleaving; the file is read inside it.
    """
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    lock = config_path.with_name(CONFIG_NAME + ".lock")
    deadline = time.monotonic() + LOCK_SECONDS
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise ProjectError(f"{lock}: another writer holds the lock for {LOCK_SECONDS:.0f} s; "
                                   "remove the file if no lstmvis command is running") from None
            time.sleep(0.05)
        except OSError as exc:
            raise ProjectError(f"{lock}: cannot create the lock file ({exc.strerror})") from None
    try:
        os.close(fd)
        config = load_config(config_path)
        change(config)
        write_config(folder, config)
        return config
    finally:
        lock.unlink(missing_ok=True)


def set_file_entry(folder: str | os.PathLike, key: str, file_name: str) -> None:
    """``files: {key: file_name}`` in lstm.yml (a file that is not a source or track, e.g. offsets)."""
    def change(config: dict) -> None:
        files = config.setdefault("files", {})
        if files.get(key, file_name) != file_name:
            raise ProjectError(f"{Path(folder) / CONFIG_NAME}: files key {key!r} already names {files[key]!r}")
        files[key] = file_name
    update_config(folder, change)


def track_values(name: str, values: Any, kind: str,
                 labels: Mapping[int, str] | Sequence[str] | None) -> tuple[np.ndarray, dict[int, str] | None]:
    """The stored array and labels of a track: strings become ids into labels in order of appearance."""
    if kind not in TRACK_KINDS:
        raise ProjectError(f"meta track {name!r}: kind {kind!r}; expected one of {TRACK_KINDS}")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ProjectError(f"meta track {name!r}: values have shape {arr.shape}; expected one value per step")
    if kind == "scalar":
        if arr.dtype.kind not in "fiub":
            raise ProjectError(f"meta track {name!r}: a scalar track holds numbers, got dtype {arr.dtype}")
        if labels is not None:
            raise ProjectError(f"meta track {name!r}: a scalar track has no labels")
        return arr.astype(np.float32), None
    if arr.dtype.kind in "USO":
        if labels is not None:
            raise ProjectError(f"meta track {name!r}: give labels or string values, not both")
        names, ids = np.unique(arr.astype(str), return_inverse=True)
        first = np.full(names.size, arr.size)
        np.minimum.at(first, ids, np.arange(arr.size))
        rank = np.empty(names.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(names.size)
        return rank[ids].astype(np.int32), {int(rank[i]): str(n) for i, n in enumerate(names)}
    if arr.dtype.kind not in "iub":
        raise ProjectError(f"meta track {name!r}: a discrete track holds integer ids or strings, "
                           f"got dtype {arr.dtype}")
    return arr.astype(np.int32), None if labels is None else as_id_map(labels, f"meta track {name!r}")


def add_meta_file(folder: str | os.PathLike, name: str, values: Any, *, T: int, kind: str = "discrete",
                  labels: Mapping[int, str] | Sequence[str] | None = None, existing: Sequence[str] = (),
                  overwrite: bool = False) -> dict:
    """Write track ``name`` (``T`` values) of ``kind`` into the project in ``folder``; returns its
    lstm.yml ``meta`` entry. ``existing``: the project's track names (a clash needs ``overwrite``)."""
    folder = Path(folder)
    name = str(name)
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        raise ProjectError(f"meta track name {name!r}: use letters, digits, '_', '.' and '-' only")
    if name in existing and not overwrite:
        raise ProjectError(f"{folder / CONFIG_NAME}: meta track {name!r} exists; pass overwrite (--overwrite)")
    arr, label_map = track_values(name, values, kind, labels)
    if arr.shape[0] != T:
        raise ProjectError(f"meta track {name!r}: {arr.shape[0]} values, but the project has T={T} steps")
    file_key, file_name, dict_key = f"meta_{name}", f"meta_{name}.h5", f"{name}_dict"
    tmp = folder / (file_name + ".tmp")
    with h5py.File(tmp, "w") as handle:
        handle.create_dataset(name, data=arr, chunks=(max(1, min(arr.size, 1 << 16)),))
    entry: dict[str, Any] = {"file": file_key, "path": name}
    if label_map is not None:
        write_dictionary(folder / f"{name}.dict", label_map)
        entry["dict"] = dict_key
        entry["vis"] = {"type": "discrete", "range": "dict"}
    else:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        vis: dict[str, Any] = {"type": kind}
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            vis["range"] = [lo, hi if hi > lo else lo + 1]
        entry["vis"] = vis

    def change(config: dict) -> None:
        files = config.setdefault("files", {})
        for key, fname in ((file_key, file_name), (dict_key, f"{name}.dict")):
            if key == dict_key and label_map is None:
                continue
            if files.get(key, fname) != fname:
                raise ProjectError(f"{folder / CONFIG_NAME}: files key {key!r} already names {files[key]!r}")
            files[key] = fname
        meta = config.get("meta") or {}
        meta[name] = entry
        config["meta"] = meta
        os.replace(tmp, folder / file_name)       # inside the lock, just before lstm.yml names it

    try:
        update_config(folder, change)
    finally:
        tmp.unlink(missing_ok=True)
    return entry
