"""Zarr (v3) sources: an h5py-like read view of a Zarr array (the converter is ``gpu_matcher.io.zarr_convert``).

A project whose ``files`` entry ends in ``.zarr`` names a Zarr v3 store (a group whose arrays sit at the
same paths the HDF5 datasets had, or a single array at the root, addressed with ``path: ""``). It loads
through the same ``lstm.yml`` keys (``../shared/DATA_FORMAT.md``). Arrays are chunked along T, so a read
of steps ``[a, b)`` touches only the chunks that hold them: select, context and each shard of the
distributed backend read just what they need. ``zarr`` is imported only when such a file is opened.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from gpu_matcher.errors import ProjectError


def import_zarr():
    """The ``zarr`` module (>= 3), imported on first use; a one-line ProjectError when missing."""
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
    zarr = import_zarr()
    if not Path(store).is_dir():
        raise ProjectError(f"{store}: Zarr store missing (expected a folder with zarr.json)")
    try:
        return zarr.open(str(store), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise ProjectError(f"{store}: not a readable Zarr v3 store ({type(exc).__name__}: {exc})") from None


def zarr_dataset(root, store: Path, path: str, where: str) -> ZarrDataset:
    """The array at ``path`` in an opened store (``root`` from ``open_zarr_store``)."""
    zarr = import_zarr()
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
