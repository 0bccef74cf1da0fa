"""Add a source (states) or a dense track to an existing project, streamed block by block.

A genome project starts with no states (``lstmvis convert-fasta`` writes the bases, contigs and
coordinates only); a model's states and per-base outputs are added afterwards with :func:`add_source`
and :func:`add_dense_track`, which take a whole array (NumPy, h5py, Zarr: anything with ``shape`` and
slicing) or an iterable of ``(n, ...)`` blocks, so a 10^9-step source is never in memory at once.
Each goes into its own new file of the project folder (HDF5 ``<kind>_<name>.h5``, or a Zarr v3 store
``<kind>_<name>.zarr`` with ``format="zarr"``), written under a temporary name and renamed into place,
and ``lstm.yml`` gains its entry in one locked, atomic update (``gpu_matcher.io.tracks.update_config``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, load_config
from gpu_matcher.io.tracks import NAME_PATTERN, RESERVED_NAMES, update_config

#: Steps per chunk of an added file (and per block read from a whole array given to it).
CHUNK_STEPS = 1 << 16
#: About this many bytes per block read from an array given whole.
BLOCK_BYTES = 64 * 2**20
FORMATS = ("h5", "zarr")


class ArrayFile:
    """A new HDF5 file or Zarr v3 store (by ``format``) whose arrays are created whole and written in
    blocks at increasing offsets. Zarr arrays are uncompressed unless asked, so the loader reads their
    rows straight from the chunk files."""

    def __init__(self, path: Path, format: str):
        if format not in FORMATS:
            raise ProjectError(f"format {format!r}: expected one of {FORMATS}")
        self.path, self.format = Path(path), format
        if format == "zarr":
            from gpu_matcher.storage.zarr_array import import_zarr

            self._zarr = import_zarr()
            self._handle = self._zarr.open_group(str(self.path), mode="w")
        else:
            self._handle = h5py.File(self.path, "w")

    def create(self, name: str, shape: tuple[int, ...], dtype: Any, chunk: int, compress: bool = False,
               data: np.ndarray | None = None):
        chunks = (max(1, min(int(chunk), int(shape[0]) or 1)),) + tuple(shape[1:])
        if self.format == "zarr":
            arr = self._handle.create_array(name, shape=shape, dtype=dtype, chunks=chunks,
                                            compressors="auto" if compress else None)
        else:
            arr = self._handle.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks if shape[0] else None)
        if data is not None and np.size(data):
            arr[...] = data
        return arr

    def close(self) -> None:
        if self.format == "h5":
            self._handle.close()


def suffix_of(format: str) -> str:
    return ".zarr" if format == "zarr" else ".h5"


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def blocks_of(data: Any, T: int, what: str) -> Iterator[np.ndarray]:
    """``data`` as blocks of rows: slices of an array-like (``shape`` + slicing), or the blocks of an
    iterable as given. The total is checked against ``T`` as it goes."""
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        shape = tuple(int(x) for x in data.shape)
        if not shape or shape[0] != T:
            raise ProjectError(f"{what}: has shape {shape}, but the project has T={T} steps")
        row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(data.dtype).itemsize)
        step = max(1, BLOCK_BYTES // row_bytes)
        for lo in range(0, T, step):
            yield np.asarray(data[lo:min(T, lo + step)])
        return
    done = 0
    for block in data:
        block = np.asarray(block)
        if block.ndim == 0:
            raise ProjectError(f"{what}: a block is a scalar; give arrays of rows")
        done += block.shape[0]
        if done > T:
            raise ProjectError(f"{what}: the blocks hold more than the project's T={T} steps")
        yield block
    if done != T:
        raise ProjectError(f"{what}: the blocks hold {done} steps, but the project has T={T}")


def _project_T(folder: Path) -> int:
    from gpu_matcher.project import open_project

    project = open_project(folder)
    try:
        return project.T
    finally:
        project.close()


def _write_streamed(folder: Path, file_name: str, name: str, data: Any, T: int, *, tail: tuple[int, ...] | None,
                    dtype: Any, format: str, chunk_steps: int, what: str,
                    check: Any = None) -> Path:
    """Write ``data`` (T rows) as dataset ``name`` of a new file ``folder/file_name + '.tmp'``; returns the
    temporary path (renamed into place by the caller, inside the lstm.yml lock)."""
    tmp = folder / (file_name + ".tmp")
    remove_path(tmp)
    out = ArrayFile(tmp, format)
    try:
        arr, at = None, 0
        for block in blocks_of(data, T, what):
            if check is not None:
                check(block)
            if arr is None:
                shape_tail = tuple(block.shape[1:]) if tail is None else tail
                arr = out.create(name, (T,) + shape_tail, dtype, chunk_steps)
            if block.shape[1:] != arr.shape[1:]:
                raise ProjectError(f"{what}: a block has rows of shape {block.shape[1:]}, earlier ones "
                                   f"{tuple(arr.shape[1:])}")
            arr[at:at + block.shape[0]] = block.astype(dtype, copy=False)
            at += block.shape[0]
    except BaseException:
        out.close()
        remove_path(tmp)
        raise
    out.close()
    return tmp


def _check_new_name(folder: Path, name: str, what: str) -> str:
    name = str(name)
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        raise ProjectError(f"{what} name {name!r}: use letters, digits, '_', '.' and '-' only")
    if not (folder / CONFIG_NAME).is_file():
        raise ProjectError(f"{folder / CONFIG_NAME}: file missing (a project folder holds {CONFIG_NAME})")
    return name


def _install(folder: Path, tmp: Path, file_key: str, file_name: str, section_change) -> None:
    """Rename ``tmp`` to ``file_name`` and apply ``section_change(config)`` in one locked lstm.yml update."""
    def change(config: dict) -> None:
        files = config.setdefault("files", {})
        if files.get(file_key, file_name) != file_name:
            raise ProjectError(f"{folder / CONFIG_NAME}: files key {file_key!r} already names {files[file_key]!r}")
        section_change(config)
        files[file_key] = file_name
        remove_path(folder / file_name)
        os.replace(tmp, folder / file_name)

    try:
        update_config(folder, change)
    finally:
        remove_path(tmp)


def add_source(project_dir: str | os.PathLike, name: str, data: Any, *, transform: str = "tanh",
               type: str = "state", layer: int | None = None, unsigned: bool = False,
               dtype: str = "float32", format: str = "h5", chunk_steps: int = CHUNK_STEPS) -> dict:
    """Add source ``name`` (``(T, D)`` states: an array or an iterable of ``(n, D)`` blocks) to the project
    in ``project_dir``; returns its ``states.types`` entry. The source then loads as ``states_<name>::<name>``."""
    folder = Path(project_dir)
    name = _check_new_name(folder, name, "source")
    if transform not in ("tanh", "none"):
        raise ProjectError(f"source {name!r}: transform {transform!r}; expected 'tanh' or 'none'")
    if np.dtype(dtype).kind != "f":
        raise ProjectError(f"source {name!r}: dtype {dtype!r}; states are stored as float16/32/64")
    T = _project_T(folder)
    file_key = f"states_{name}"
    file_name = file_key + suffix_of(format)

    def check(block: np.ndarray) -> None:
        if block.ndim != 2 or block.dtype.kind not in "fiub":
            raise ProjectError(f"source {name!r}: blocks must be (n, D) numbers, got {block.shape} {block.dtype}")

    tmp = _write_streamed(folder, file_name, name, data, T, tail=None, dtype=dtype, format=format,
                          chunk_steps=chunk_steps, what=f"source {name!r}", check=check)
    entry: dict[str, Any] = {"file": file_key, "path": name, "type": str(type)}
    if layer is not None:
        entry["layer"] = int(layer)
    if transform != "tanh":
        entry["transform"] = transform
    if unsigned:
        entry["unsigned"] = True

    def change(config: dict) -> None:
        states = config.get("states") or {}
        types = [t for t in states.get("types") or [] if not (isinstance(t, dict) and
                                                                t.get("file") == file_key)]
        states["types"] = types + [entry]
        config["states"] = states

    _install(folder, tmp, file_key, file_name, change)
    return entry


def add_dense_track(project_dir: str | os.PathLike, name: str, data: Any, *, kind: str = "scalar",
                    value_range: tuple[float, float] | None = None, format: str = "h5",
                    chunk_steps: int = CHUNK_STEPS, overwrite: bool = False) -> dict:
    """Add meta track ``name`` (one number per step: an array or an iterable of blocks) streamed, for
    tracks too long to hold in memory (``Project.add_meta`` takes a whole array). ``kind``: ``scalar``
    (float32) or ``discrete`` (int32 ids). Returns its ``meta`` entry."""
    folder = Path(project_dir)
    name = _check_new_name(folder, name, "meta track")
    if kind not in ("scalar", "discrete"):
        raise ProjectError(f"meta track {name!r}: kind {kind!r}; expected 'scalar' or 'discrete'")
    meta = load_config(folder / CONFIG_NAME).get("meta") or {}
    if name in meta and not overwrite:
        raise ProjectError(f"{folder / CONFIG_NAME}: meta track {name!r} exists; pass overwrite (--overwrite)")
    T = _project_T(folder)
    file_key = f"meta_{name}"
    file_name = file_key + suffix_of(format)
    low, high = [np.inf], [-np.inf]

    def check(block: np.ndarray) -> None:
        if block.ndim != 1 or block.dtype.kind not in "fiub":
            raise ProjectError(f"meta track {name!r}: blocks must hold one number per step, got "
                               f"{block.shape} {block.dtype}")
        finite = block[np.isfinite(block)] if block.dtype.kind == "f" else block
        if finite.size:
            low[0], high[0] = min(low[0], float(finite.min())), max(high[0], float(finite.max()))

    dtype = np.float32 if kind == "scalar" else np.int32
    tmp = _write_streamed(folder, file_name, name, data, T, tail=(), dtype=dtype, format=format,
                          chunk_steps=chunk_steps, what=f"meta track {name!r}", check=check)
    vis: dict[str, Any] = {"type": kind}
    if value_range is not None:
        vis["range"] = [float(value_range[0]), float(value_range[1])]
    elif np.isfinite(low[0]):
        vis["range"] = [low[0], high[0] if high[0] > low[0] else low[0] + 1]
    entry = {"file": file_key, "path": name, "vis": vis}

    def change(config: dict) -> None:
        tracks = config.get("meta") or {}
        tracks[name] = entry
        config["meta"] = tracks

    _install(folder, tmp, file_key, file_name, change)
    return entry

