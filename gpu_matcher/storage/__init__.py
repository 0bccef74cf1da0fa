"""Where arrays live: the one place that opens a dataset by its file's suffix (HDF5, or a Zarr v3 store).

Used by the project loader (``gpu_matcher.project``) and by the shard workers (``gpu_matcher.sharded``)
alike. Both kinds hand out h5py-like datasets (``shape``, ``dtype``, ``ndim``, ``name``, slicing); Zarr
arrays come from :mod:`gpu_matcher.storage.zarr_array`, and ``zarr`` is imported only when one is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py

from gpu_matcher.errors import ProjectError
from gpu_matcher.storage.zarr_array import ZarrDataset, open_zarr_store, zarr_dataset

ZARR_SUFFIX = ".zarr"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")

__all__ = ["HDF5_SUFFIXES", "ZARR_SUFFIX", "ZarrDataset", "close_store", "dataset_in", "is_zarr_path",
           "kind_of", "open_dataset", "open_store"]


def is_zarr_path(path: str | os.PathLike) -> bool:
    return str(path).rstrip("/").endswith(ZARR_SUFFIX)


def kind_of(path: str | os.PathLike) -> str:
    """``"zarr"`` for a ``.zarr`` store, else ``"hdf5"`` (the original format has no fixed suffix)."""
    return "zarr" if is_zarr_path(path) else "hdf5"


def open_store(path: Path, where: str) -> Any:
    """An opened HDF5 file (read-only) or the root of a Zarr store; ``where`` goes into the errors."""
    path = Path(path)
    if is_zarr_path(path):
        return open_zarr_store(path)
    if not path.is_file():
        raise ProjectError(f"{path}: file missing ({where})")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ProjectError(f"{path}: not a readable HDF5 file ({exc})") from None


def dataset_in(store: Any, path: Path, name: str, where: str) -> Any:
    """The dataset (or Zarr array) ``name`` of a store from :func:`open_store` at ``path``."""
    if is_zarr_path(path):
        return zarr_dataset(store, Path(path), name, where)
    if name not in store:
        raise ProjectError(f"{path}: dataset {name!r} missing ({where}); present: {sorted(store.keys())[:20]}")
    obj = store[name]
    if not isinstance(obj, h5py.Dataset):
        raise ProjectError(f"{path}: {name!r} is a group, not a dataset ({where})")
    return obj


def open_dataset(path: str | os.PathLike, name: str, where: str) -> Any:
    """Open ``path`` and return its dataset ``name`` (the file stays open as long as the dataset lives)."""
    path = Path(path)
    return dataset_in(open_store(path, where), path, name, where)


def close_store(store: Any) -> None:
    """Close what :func:`open_store` opened (a Zarr root holds no handle; its arrays close themselves)."""
    if isinstance(store, h5py.File):
        store.close()
