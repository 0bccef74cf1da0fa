"""``convert-zarr``: a copy of an HDF5 project whose files are Zarr v3 stores chunked along T.

Sits above the loader: it validates the project with ``open_project`` first, reads and writes lstm.yml
through ``gpu_matcher.formats`` and writes arrays ``gpu_matcher.storage`` reads back.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, load_config, write_config
from gpu_matcher.project import open_project
from gpu_matcher.storage import HDF5_SUFFIXES, ZARR_SUFFIX
from gpu_matcher.storage.zarr_array import import_zarr

#: convert-zarr's default chunk: about this many bytes of the widest (T, D) array per chunk.
CHUNK_BYTES = 16 * 2**20


@dataclass
class ConvertSummary:
    folder: Path
    arrays: int
    bytes: int
    chunk_steps: int
    files: dict[str, str]


def _hdf5_datasets(h5file) -> list:
    import h5py

    found = []
    h5file.visititems(lambda name, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return found


def _json_attrs(attrs) -> dict:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, (str, int, float, bool, list)) or value is None:
            out[str(key)] = value
    return out


def convert_project_to_zarr(project_dir: str | os.PathLike, out_dir: str | os.PathLike,
                            chunk_steps: int | None = None, compression: str = "zstd",
                            overwrite: bool = False, progress: bool = True) -> ConvertSummary:
    """Write a copy of a project whose HDF5 files are Zarr v3 stores, chunked along T.

    Every HDF5 file under ``files`` becomes ``<stem>.zarr`` holding its datasets at the same paths, with
    the same dtypes (float16 stays float16), chunked ``(chunk_steps, rest...)`` along the first axis;
    dictionaries and other files are copied; ``lstm.yml`` gets the new file names. The original is never
    modified; the copy is written beside ``out_dir`` and moved into place when complete.
    """
    import h5py
    from tqdm import tqdm

    zarr = import_zarr()
    src = Path(project_dir)
    if src.is_file() and src.name == CONFIG_NAME:
        src = src.parent
    project = open_project(src)                 # validates the project (shapes, keys) first
    T = project.T
    project.close()
    out = Path(out_dir)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ProjectError(f"{out}: the output must be outside the project folder {src}")
    occupied = (out.is_dir() and any(out.iterdir())) or out.is_file()
    if occupied and not overwrite:
        raise ProjectError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    if compression not in ("zstd", "none"):
        raise ProjectError(f"--compression {compression!r}: expected zstd or none")
    config = load_config(src / CONFIG_NAME)
    files = {str(k): str(v) for k, v in (config.get("files") or {}).items()}

    # One chunk length for every T-long array, so all sources share shard edges.
    hdf5_keys = [k for k, v in files.items() if Path(v).suffix.lower() in HDF5_SUFFIXES]
    widest = 1
    plan: list[tuple[str, Path, str]] = []          # (files key, source file, target name)
    total = 0
    for key in hdf5_keys:
        path = src / files[key]
        target = str(Path(files[key]).with_suffix(ZARR_SUFFIX))
        plan.append((key, path, target))
        with h5py.File(path, "r") as f:
            for ds in _hdf5_datasets(f):
                total += int(ds.size) * ds.dtype.itemsize
                if ds.ndim >= 1 and ds.shape[0] == T and ds.ndim == 2:
                    widest = max(widest, int(ds.shape[1]) * ds.dtype.itemsize)
    if chunk_steps is None:
        chunk_steps = 1 << max(10, min(20, int(np.log2(max(1, CHUNK_BYTES // widest)))))
    if chunk_steps < 1:
        raise ProjectError(f"--chunk-steps {chunk_steps}: must be >= 1")
    compressors = "auto" if compression == "zstd" else None

    partial = out.parent / (out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    bar = tqdm(total=total, desc="convert-zarr", unit="B", unit_scale=True, file=sys.stderr,
               disable=not progress or None)
    arrays = 0
    new_files = dict(files)
    try:
        for key, path, target in plan:
            group = zarr.open_group(str(partial / target), mode="w")
            with h5py.File(path, "r") as f:
                for ds in _hdf5_datasets(f):
                    name = ds.name.strip("/")
                    long_axis = ds.ndim >= 1 and ds.shape[0] == T
                    rows = chunk_steps if long_axis else max(1, ds.shape[0] if ds.ndim else 1)
                    chunks = (min(rows, max(1, ds.shape[0])),) + tuple(ds.shape[1:]) if ds.ndim else ()
                    arr = group.create_array(name, shape=ds.shape, dtype=ds.dtype, chunks=chunks,
                                             compressors=compressors,
                                             attributes=_json_attrs(ds.attrs))
                    if ds.ndim == 0:
                        arr[()] = ds[()]
                    else:
                        step = max(chunks[0], (64 * 2**20) // max(1, ds.dtype.itemsize *
                                                                   int(np.prod(ds.shape[1:]))))
                        step = max(chunks[0], step // chunks[0] * chunks[0])   # whole chunks per write
                        for t0 in range(0, ds.shape[0], step):
                            block = ds[t0:t0 + step]
                            arr[t0:t0 + block.shape[0]] = block
                            bar.update(block.nbytes)
                    arrays += 1
            new_files[key] = target
        for key, name in files.items():
            if key in hdf5_keys:
                continue
            source = src / name
            dest = partial / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, dest)
            elif source.is_file():
                shutil.copy2(source, dest)
        config["files"] = new_files
        write_config(partial, config)
    except BaseException:
        bar.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    bar.close()
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(partial, out)
    return ConvertSummary(folder=out, arrays=arrays, bytes=total, chunk_steps=int(chunk_steps),
                          files={k: new_files[k] for k in hdf5_keys})
