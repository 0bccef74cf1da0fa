"""Zarr (v3) sources: an h5py-like read view of a Zarr array, and ``convert-zarr`` (HDF5 project -> Zarr).

A project whose ``files`` entry ends in ``.zarr`` names a Zarr v3 store (a group whose arrays sit at the
same paths the HDF5 datasets had, or a single array at the root, addressed with ``path: ""``). It loads
through the same ``lstm.yml`` keys (``../shared/DATA_FORMAT.md``). Arrays are chunked along T, so a read
of steps ``[a, b)`` touches only the chunks that hold them: select, context and each shard of the
distributed backend read just what they need. ``zarr`` is imported only when such a file is opened.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_matcher.errors import ProjectError

ZARR_SUFFIX = ".zarr"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
#: convert-zarr's default chunk: about this many bytes of the widest (T, D) array per chunk.
CHUNK_BYTES = 16 * 2**20


def is_zarr_path(path: str | os.PathLike) -> bool:
    return str(path).rstrip("/").endswith(ZARR_SUFFIX)


def _zarr():
    try:
        import zarr
    except ModuleNotFoundError:
        raise ProjectError("Zarr sources need the zarr package (>= 3): pip install 'lstmvis-gpu[zarr]'") from None
    if int(zarr.__version__.split(".")[0]) < 3:
        raise ProjectError(f"Zarr sources need zarr >= 3 (installed: {zarr.__version__})")
    return zarr


#: Chunk files a dataset keeps open for direct row reads.
OPEN_CHUNKS = 64


class ZarrDataset:
    """One Zarr array seen like an ``h5py.Dataset``: ``shape``, ``dtype``, ``ndim``, ``name``, ``chunks``
    and slicing into NumPy arrays (``[()]`` reads it whole). Read-only.

    An uncompressed array (codecs: only ``bytes``, little-endian; chunks spanning all but the first
    axis; the default chunk key encoding) stores each chunk as the raw C-order rows, so rows are read
    straight from the chunk files (``read_rows``: one ``pread`` per run of consecutive rows) instead of
    decoding whole chunks: a few rows cost a few hundred bytes, not a 16 MB chunk. Other arrays have no
    ``read_rows`` and are read through zarr."""

    def __init__(self, array, store: Path, path: str):
        self._array = array
        self.store = Path(store)
        self.path = path.strip("/")
        self.shape = tuple(int(x) for x in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(int(x) for x in array.chunks)
        self._direct = self._direct_layout()
        if self._direct is not None:
            self.read_rows = self._read_rows
            self._fds: "OrderedDict[int, int | None]" = OrderedDict()
            self._fd_lock = threading.Lock()

    def _direct_layout(self):
        """(chunk folder, key separator, fill value) when chunks are raw rows on local disk, else None."""
        folder = self.store / self.path if self.path else self.store
        try:
            meta = json.loads((folder / "zarr.json").read_text())
        except (OSError, ValueError):
            return None
        grid = meta.get("chunk_grid", {})
        keys = meta.get("chunk_key_encoding", {})
        codecs = meta.get("codecs", [])
        endian = (codecs[0].get("configuration") or {}).get("endian", "little") if len(codecs) == 1 else None
        sep = (keys.get("configuration") or {}).get("separator", "/")
        plain = (meta.get("zarr_format") == 3 and not meta.get("storage_transformers")
                 and grid.get("name") == "regular" and keys.get("name") == "default" and sep in ("/", ".")
                 and len(codecs) == 1 and codecs[0].get("name") == "bytes"
                 and (endian == sys.byteorder or self.dtype.itemsize == 1)
                 and self.ndim >= 1 and tuple(self.chunks[1:]) == tuple(self.shape[1:])
                 and self.dtype.kind in "fiub")
        if not plain:
            return None
        fill = np.asarray(self._array.fill_value if self._array.fill_value is not None else 0, dtype=self.dtype)
        return folder, sep, fill

    def _chunk_fd(self, c: int) -> int | None:
        with self._fd_lock:
            if c in self._fds:
                self._fds.move_to_end(c)
                return self._fds[c]
            folder, sep, _ = self._direct
            name = sep.join(["c", str(c)] + ["0"] * (self.ndim - 1))
            try:
                fd = os.open(folder / name if sep == "." else folder.joinpath(*name.split("/")), os.O_RDONLY)
            except FileNotFoundError:
                fd = None                                  # never written: the fill value
            self._fds[c] = fd
            while len(self._fds) > OPEN_CHUNKS:
                _, old = self._fds.popitem(last=False)
                if old is not None:
                    os.close(old)
            return fd

    def _read_rows(self, rows) -> np.ndarray:
        """Rows by index (any order, repeats allowed), read from the raw chunk files."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        n = rows.size
        out = np.empty((n,) + self.shape[1:], dtype=self.dtype)
        if n == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise IndexError(f"{self.store}{self.name}: rows outside [0, {self.shape[0]})")
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        per = self.chunks[0]
        chunk = srt // per
        brk = np.flatnonzero((np.diff(srt) != 1) | (np.diff(chunk) != 0)) + 1
        firsts, lasts = np.r_[0, brk], np.r_[brk, n]
        row_bytes = out[0].nbytes
        buf = np.empty_like(out)
        view = memoryview(buf.reshape(n, -1).view(np.uint8)) if row_bytes else None
        for a, b in zip(firsts.tolist(), lasts.tolist()):
            c = int(chunk[a])
            fd = self._chunk_fd(c)
            if fd is None:
                buf[a:b] = self._direct[2]
                continue
            want = (b - a) * row_bytes
            got = os.preadv(fd, [view[a:b]], (int(srt[a]) - c * per) * row_bytes) if want else 0
            if got != want:
                raise ProjectError(f"{self.store}{self.name}: chunk {c} is shorter than its rows "
                                   f"({got} of {want} bytes at row {int(srt[a])})")
        out[order] = buf
        return out

    def close(self) -> None:
        if self._direct is not None:
            with self._fd_lock:
                for fd in self._fds.values():
                    if fd is not None:
                        os.close(fd)
                self._fds.clear()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str:
        return "/" + self.path

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if key == ():
            key = Ellipsis
        if self._direct is not None and isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self._read_rows(np.arange(start, max(start, stop), dtype=np.int64))
        return np.asarray(self._array[key])

    def fingerprint(self) -> dict:
        """Bytes and newest modification time of the array's files: a rewritten chunk changes it."""
        folder = self.store / self.path if self.path else self.store
        size, mtime = 0, 0
        for dirpath, dirnames, filenames in os.walk(folder):
            if dirpath == str(self.store) and not self.path:
                dirnames[:] = [d for d in dirnames if d == "c"]     # a root array: only its chunks
            for name in filenames:
                st = os.stat(os.path.join(dirpath, name))
                size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)
        return {"size": size, "mtime_ns": mtime}

    def __repr__(self) -> str:
        return f"<ZarrDataset {self.store}{self.name} shape={self.shape} dtype={self.dtype}>"


def open_zarr_store(store: Path):
    """The root of a Zarr v3 store (a Group or an Array), read-only."""
    zarr = _zarr()
    if not Path(store).is_dir():
        raise ProjectError(f"{store}: Zarr store missing (expected a folder with zarr.json)")
    try:
        return zarr.open(str(store), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise ProjectError(f"{store}: not a readable Zarr v3 store ({type(exc).__name__}: {exc})") from None


def zarr_dataset(root, store: Path, path: str, where: str) -> ZarrDataset:
    """The array at ``path`` in an opened store (``root`` from ``open_zarr_store``)."""
    zarr = _zarr()
    clean = str(path).strip("/")
    if isinstance(root, zarr.Array):
        if clean not in ("", "."):
            raise ProjectError(f"{store}: the store is a single array; {where} must use path '' "
                               f"(got {path!r})")
        return ZarrDataset(root, store, "")
    try:
        obj = root[clean]
    except KeyError:
        present = sorted(root.keys())[:20]
        raise ProjectError(f"{store}: array {path!r} missing ({where}); present: {present}") from None
    if not isinstance(obj, zarr.Array):
        raise ProjectError(f"{store}: {path!r} is a group, not an array ({where})")
    return ZarrDataset(obj, store, clean)


# --- convert-zarr --------------------------------------------------------------------------------------
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
    import yaml
    from tqdm import tqdm

    from gpu_matcher.project import CONFIG_NAME, open_project

    zarr = _zarr()
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
    config = yaml.safe_load((src / CONFIG_NAME).read_text(encoding="utf-8"))
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
        (partial / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
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
