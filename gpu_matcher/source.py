"""One source (a (T, D) state array in HDF5): lazy reads, the transform, exact thresholds, derived layouts.

Exactness (``../shared/MATCHING.md``, "On and off"): a cell is on when ``raw >= atanh(θ)`` (``tanh``,
with NumPy's float64 ``arctanh``; libm's ``math.atanh`` can differ by one ulp) or
``raw >= θ`` (``none``) in float64. We find once the smallest *stored-dtype* value ``v >= that bound`` and
compare order-preserving unsigned integer keys of the stored floats, which gives the same booleans.

Derived layouts (built once, cached by file path + dataset + size + mtime, rebuilt when the source
changes): ``keys_rows`` (T, D) for gathering windows of all cells and ``keys_cells`` (D, T) for reading a
few whole cells. Small sources are kept in memory; large ones are ``.npy`` files in a cache folder
(``KeyStore``). A source opened with ``store_rows=False`` (the shards of a Dask worker) stores only
``keys_cells``; its row-major keys are read from the source itself (``SourceRows``), which halves the
layout's disk.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gpu_matcher.errors import ProjectError

LAYOUT_VERSION = 1
KEY_DTYPES = {2: np.uint16, 4: np.uint32, 8: np.uint64}
#: Sources whose keys take at most this many bytes are held in memory instead of a cache folder.
IN_MEMORY_BYTES = int(os.environ.get("LSTMVIS_IN_MEMORY_BYTES", 64 * 2**20))
#: A threshold key that no stored key reaches: nothing is on.
NOTHING_ON = None


def default_cache_dir() -> Path:
    env = os.environ.get("LSTMVIS_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstmvis"


def float_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned keys of IEEE floats: ``x < y`` iff ``key(x) < key(y)``.

    ``-0.0`` is folded onto ``+0.0`` (they compare equal) and NaN gets key 0, below every number, so a
    NaN is never on (``NaN >= θ`` is false).
    """
    values = np.ascontiguousarray(values)
    kdt = KEY_DTYPES[values.dtype.itemsize]
    bits = values.view(kdt).copy()
    sign = kdt(1) << kdt(8 * values.dtype.itemsize - 1)
    bits[bits == sign] = 0                                  # -0.0 -> +0.0
    negative = (bits & sign) != 0
    keys = np.where(negative, ~bits, bits | sign)
    keys[np.isnan(values)] = 0
    return keys


def keys_to_floats(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of ``float_keys`` (``-0.0`` comes back as ``+0.0``, NaN as a NaN)."""
    keys = np.ascontiguousarray(keys)
    kdt = keys.dtype.type
    sign = kdt(1) << kdt(8 * keys.dtype.itemsize - 1)
    bits = np.where((keys & sign) != 0, keys & ~sign, ~keys)
    return bits.view(np.dtype(dtype))


def raw_bound(threshold: float, transform: str) -> float | None:
    """The float64 bound on raw values for threshold θ; ``None`` when nothing can be on."""
    theta = float(threshold)
    if np.isnan(theta):
        raise ProjectError(f"threshold {threshold!r} is not a number")
    if transform == "tanh":
        if theta >= 1.0:
            return None
        if theta <= -1.0:
            return -np.inf
        return float(np.arctanh(np.float64(theta)))
    return theta


def smallest_stored_at_least(bound: float, dtype: np.dtype) -> np.floating:
    """The smallest value of ``dtype`` that is ``>= bound`` (``bound`` in float64); may be +inf."""
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore"):
        v = np.asarray(bound, dtype=np.float64).astype(dtype)
    if np.isnan(v):
        raise ProjectError(f"threshold bound {bound!r} is not a number")
    while np.float64(v) < bound:
        v = np.nextafter(v, dtype.type(np.inf))
    # Round-to-nearest may have landed above a stored value that is still >= bound.
    while True:
        prev = np.nextafter(v, dtype.type(-np.inf))
        if np.isfinite(prev) and np.float64(prev) >= bound and prev != v:
            v = prev
        else:
            break
    return dtype.type(v)


def key_threshold(threshold: float, transform: str, dtype: np.dtype):
    """The key ``k`` with ``on == (key(raw) >= k)``; ``None`` means nothing is on."""
    bound = raw_bound(threshold, transform)
    if bound is None:
        return NOTHING_ON
    v = smallest_stored_at_least(bound, dtype)
    if v == 0:
        v = np.dtype(dtype).type(0.0)                        # +0.0, as folded in float_keys
    return float_keys(np.array([v], dtype=dtype))[0]


def transform_values(raw: np.ndarray, transform: str) -> np.ndarray:
    """Values the user sees, as float32."""
    if transform == "tanh":
        return np.tanh(raw.astype(np.float32, copy=False))
    return raw.astype(np.float32, copy=False)


@dataclass
class Layout:
    """Derived, threshold-independent layouts of one source (numpy arrays or read-only memory maps)."""

    keys_rows: "KeyStore"      # (T, D) uint keys
    keys_cells: "KeyStore"     # (D, T) uint keys
    location: Path | None      # cache folder, or None when held in memory


@dataclass
class Source:
    name: str
    dataset: h5py.Dataset
    file_path: Path
    transform: str = "tanh"
    unsigned: bool = False
    layer: object = None
    state_type: str = "state"
    cache_dir: str | os.PathLike | None = None
    store_rows: bool = True        # False: keep only keys_cells on disk, read row keys from the source
    _layout: Layout | None = field(default=None, repr=False)
    _range: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(x) for x in self.dataset.shape)  # type: ignore[return-value]

    @property
    def T(self) -> int:
        return self.shape[0]

    @property
    def D(self) -> int:
        return self.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.dataset.dtype

    @property
    def label(self) -> str:
        layer = f"layer {self.layer} " if self.layer is not None else ""
        return f"{layer}{self.state_type} ({self.name})"

    # --- reading --------------------------------------------------------------------------------
    def raw(self, start: int, stop: int) -> np.ndarray:
        """Raw stored values of rows ``[start, stop)``, clipped to ``[0, T)``."""
        start, stop = max(0, int(start)), min(self.T, int(stop))
        if stop <= start:
            return np.zeros((0, self.D), dtype=self.dtype)
        if self._layout is not None:               # a few rows of the layout beat an HDF5 chunk read
            return keys_to_floats(self._layout.keys_rows.block(start, stop), self.dtype)
        return np.asarray(self.dataset[start:stop])

    def values(self, start: int, stop: int) -> np.ndarray:
        """Values after the transform (float32) for rows ``[start, stop)``, clipped to the timeline."""
        return transform_values(self.raw(start, stop), self.transform)

    def on(self, start: int, stop: int, threshold: float) -> np.ndarray:
        """Boolean (n, D) on-mask of rows ``[start, stop)``: the spec's float64 comparison, literally."""
        return self.is_on(self.raw(start, stop), threshold)

    def is_on(self, raw: np.ndarray, threshold: float) -> np.ndarray:
        """Boolean on-mask of raw values already read from this source."""
        bound = raw_bound(threshold, self.transform)
        if bound is None:
            return np.zeros(raw.shape, dtype=bool)
        return raw.astype(np.float64) >= bound

    def key_threshold(self, threshold: float):
        return key_threshold(threshold, self.transform, self.dtype)

    def value_range(self) -> tuple[float, float]:
        """Range of values after the transform, for axes and the threshold slider."""
        if self._range is None:
            if self.transform == "tanh":
                self._range = (0.0, 1.0) if self.unsigned else (-1.0, 1.0)
            else:
                # Sample evenly spaced blocks: exact min/max would read the whole source.
                T = self.T
                starts = np.linspace(0, max(0, T - 256), num=min(64, max(1, T // 256))).astype(int)
                block = np.concatenate([self.raw(s, s + 256) for s in np.unique(starts)])
                finite = block[np.isfinite(block)].astype(np.float64)
                lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
                if hi <= lo:
                    hi = lo + 1.0
                self._range = (lo, hi)
        return self._range

    # --- derived layouts ------------------------------------------------------------------------
    def layout(self, progress: bool = True) -> Layout:
        """The key layouts, built (with a progress bar) or loaded from the cache on first use."""
        if self._layout is None:
            self._layout = _load_or_build_layout(self, progress)
        return self._layout


def _fingerprint(source: Source) -> dict:
    own = getattr(source.dataset, "fingerprint", None)     # a Zarr array: its own files' size and mtime
    if own is not None:
        st = own()
        size, mtime = st["size"], st["mtime_ns"]
    else:
        st = os.stat(source.file_path)
        size, mtime = st.st_size, st.st_mtime_ns
    return {"version": LAYOUT_VERSION, "file": str(Path(source.file_path).resolve()),
            "dataset": source.dataset.name, "size": size, "mtime_ns": mtime,
            "shape": list(source.shape), "dtype": str(source.dtype)}


class SourceRows:
    """Row-major keys read from the source itself instead of a stored copy (``KeyStore``'s read API).

    A dataset that reads single rows cheaply (``read_rows``: an uncompressed Zarr array, read straight
    from its chunk files) is asked for exactly the rows wanted. Any other is read in aligned blocks of
    whole storage chunks (``dataset.chunks``; a window of a larger array says where its chunks start
    with ``w0``), each turned into keys once and kept in a small LRU of at most ``CACHE_BYTES``, so
    scattered reads decode each chunk once per query at most."""

    BLOCK_BYTES = 8 << 20
    CACHE_BYTES = 64 << 20

    def __init__(self, dataset):
        self.dataset = dataset
        self.shape = tuple(int(x) for x in dataset.shape)
        self.dtype = np.dtype(KEY_DTYPES[np.dtype(dataset.dtype).itemsize])
        row_bytes = max(1, self.shape[1] * self.dtype.itemsize)
        chunks = getattr(dataset, "chunks", None)
        chunk = int(chunks[0]) if chunks else 1
        self.block_rows = max(chunk, self.BLOCK_BYTES // row_bytes // chunk * chunk)
        self.phase = int(getattr(dataset, "w0", 0)) % chunk   # local row 0 sits this far into a chunk
        self.max_blocks = max(2, self.CACHE_BYTES // (self.block_rows * row_bytes))
        self._blocks: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0                                        # blocks read from the source (tests)

    def _block(self, i: int) -> np.ndarray:
        with self._lock:
            blk = self._blocks.get(i)
            if blk is not None:
                self._blocks.move_to_end(i)
                return blk
        lo = max(0, i * self.block_rows - self.phase)
        hi = min(self.shape[0], (i + 1) * self.block_rows - self.phase)
        blk = float_keys(np.asarray(self.dataset[lo:hi]))
        with self._lock:
            self.reads += 1
            self._blocks[i] = blk
            while len(self._blocks) > self.max_blocks:
                self._blocks.popitem(last=False)
        return blk

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by index (a copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.shape[1]), dtype=self.dtype)
        if rows.size == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise IndexError(f"rows outside [0, {self.shape[0]})")
        direct = getattr(self.dataset, "read_rows", None)
        if direct is not None:
            return float_keys(direct(rows))
        which = (rows + self.phase) // self.block_rows
        order = np.argsort(which, kind="stable")
        ids, first = np.unique(which[order], return_index=True)
        bounds = np.append(first, rows.size)
        for j, i in enumerate(ids.tolist()):
            sel = order[bounds[j]:bounds[j + 1]]
            start = max(0, i * self.block_rows - self.phase)
            out[sel] = self._block(i)[rows[sel] - start]
        return out

    def block(self, first: int, last: int) -> np.ndarray:
        """Contiguous rows ``[first, last)`` (a copy)."""
        return self.take(np.arange(first, last, dtype=np.int64))

    def rows_at_least(self, rows: np.ndarray, key) -> np.ndarray:
        """``self[rows] >= key`` as booleans."""
        return self.take(rows) >= key

    def spans(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Rows ``[lo[i], hi[i])`` for every i, concatenated in the order given."""
        lo = np.asarray(lo, dtype=np.int64)
        return self.take(concat_ranges(lo, np.asarray(hi, dtype=np.int64) - lo))


class KeyStore:
    """A 2-D key array, in memory or in a ``.npy`` file mapped read-only.

    A file map's fault-around pulls neighbouring pages into the process, so scattered reads would
    grow RSS towards the whole file (1.3 GB for T=10^6, D=650). Every read therefore copies what it
    needs and then drops the map's pages again (``MADV_DONTNEED``; they stay in the page cache),
    at most ``RELEASE_ROWS`` rows at a time, which bounds the memory a query holds.
    """

    RELEASE_ROWS = 1 << 10

    def __init__(self, array: np.ndarray | None = None, path: Path | None = None):
        self._array, self.path, self._mm = array, path, None
        if array is not None:
            self.shape, self.dtype = tuple(array.shape), array.dtype
            return
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
            if fortran or len(shape) != 2:
                raise ProjectError(f"{path}: unexpected layout file (shape {shape}); delete it to rebuild")
            self.shape, self.dtype = tuple(int(x) for x in shape), np.dtype(dtype)
            need = offset + self.shape[0] * self.shape[1] * self.dtype.itemsize
            if os.fstat(fh.fileno()).st_size < need:
                raise ProjectError(f"{path}: layout file is truncated; delete it to rebuild")
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._array = np.ndarray(self.shape, dtype=self.dtype, buffer=self._mm, offset=offset)

    def _release(self) -> None:
        if self._mm is not None and hasattr(self._mm, "madvise"):
            self._mm.madvise(mmap.MADV_DONTNEED)

    def _copy(self, index) -> np.ndarray:
        out = np.array(self._array[index])
        self._release()
        return out

    def block(self, first: int, last: int) -> np.ndarray:
        """Contiguous rows ``[first, last)`` (a copy)."""
        return self._copy(slice(first, last))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by index (a copy)."""
        return self._copy(np.asarray(rows, dtype=np.int64))

    def rows_at_least(self, rows: np.ndarray, key) -> np.ndarray:
        """``self[rows] >= key`` as booleans, without copying the keys first."""
        out = np.empty((len(rows), self.shape[1]), dtype=bool)
        for i, r in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            np.greater_equal(self._array[r], key, out=out[i])
        self._release()
        return out

    def spans(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Rows ``[lo[i], hi[i])`` for every i, concatenated in the order given."""
        lo = np.asarray(lo, dtype=np.int64)
        length = np.asarray(hi, dtype=np.int64) - lo
        if self._mm is None or int(length.sum()) <= self.RELEASE_ROWS:
            return self._copy(concat_ranges(lo, length))
        # Read in file order, a slice of the file at a time, so each slice's mapped pages are few and
        # shared by neighbouring windows; then put the windows back in the order asked.
        order = np.argsort(lo, kind="stable")
        rows = concat_ranges(lo[order], length[order])
        gathered = np.empty((rows.size, self.shape[1]), dtype=self.dtype)
        for i in range(0, rows.size, self.RELEASE_ROWS):
            gathered[i:i + self.RELEASE_ROWS] = self._copy(rows[i:i + self.RELEASE_ROWS])
        dest = np.cumsum(length) - length                     # where window j goes in the output
        src = np.empty_like(dest)
        src[order] = np.cumsum(length[order]) - length[order]  # where window j is in `gathered`
        return gathered[concat_ranges(src, length)] if not np.array_equal(src, dest) else gathered


def concat_ranges(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(first[i], first[i] + length[i])`` for all i."""
    length = np.asarray(length, dtype=np.int64)
    total = int(length.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_start = np.cumsum(length) - length
    return np.repeat(np.asarray(first, dtype=np.int64) - seg_start, length) + np.arange(total)


def _load_or_build_layout(source: Source, progress: bool) -> Layout:
    T, D = source.shape
    itemsize = source.dtype.itemsize
    if T * D * itemsize <= IN_MEMORY_BYTES:
        keys = float_keys(np.asarray(source.dataset[()]))
        return Layout(keys_rows=KeyStore(keys), keys_cells=KeyStore(np.ascontiguousarray(keys.T)),
                      location=None)
    fp = _fingerprint(source)
    root = Path(source.cache_dir) if source.cache_dir is not None else default_cache_dir()
    digest = hashlib.sha1(f"{fp['file']}::{fp['dataset']}".encode()).hexdigest()[:20]
    folder = root / digest
    meta_path = folder / "layout.json"

    def opened(rows_stored: bool) -> Layout:
        rows = KeyStore(path=folder / "keys_rows.npy") if rows_stored else SourceRows(source.dataset)
        return Layout(keys_rows=rows, keys_cells=KeyStore(path=folder / "keys_cells.npy"), location=folder)

    try:
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            rows_stored = bool(meta.pop("rows_stored", True))
            if meta == fp and (rows_stored or not source.store_rows):
                return opened(rows_stored)
    except (OSError, ValueError):
        pass                                     # a broken cache is rebuilt below
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(f"{folder}: cannot create the layout cache ({exc.strerror}); "
                           "set LSTMVIS_CACHE_DIR to a writable folder") from None
    meta_path.unlink(missing_ok=True)
    _build_layout(source, folder, progress, store_rows=source.store_rows)
    meta_path.write_text(json.dumps({**fp, "rows_stored": source.store_rows}))
    return opened(source.store_rows)


def _build_layout(source: Source, folder: Path, progress: bool, store_rows: bool = True) -> None:
    from tqdm import tqdm

    T, D = source.shape
    kdt = KEY_DTYPES[source.dtype.itemsize]
    tmp_rows, tmp_cells = folder / "keys_rows.tmp.npy", folder / "keys_cells.tmp.npy"
    (folder / "keys_rows.npy").unlink(missing_ok=True)        # never a stale copy beside a new layout
    rows = np.lib.format.open_memmap(tmp_rows, mode="w+", dtype=kdt, shape=(T, D)) if store_rows else None
    cells = np.lib.format.open_memmap(tmp_cells, mode="w+", dtype=kdt, shape=(D, T))
    chunk = max(1, (32 * 2**20) // max(1, D * source.dtype.itemsize))
    bar = tqdm(total=T, desc=f"layout {source.name}", unit="step", unit_scale=True,
               disable=not progress or None, file=sys.stderr, leave=False)
    try:
        for start in range(0, T, chunk):
            stop = min(T, start + chunk)
            keys = float_keys(np.asarray(source.dataset[start:stop]))
            if rows is not None:
                rows[start:stop] = keys
            cells[:, start:stop] = keys.T
            bar.update(stop - start)
        if rows is not None:
            rows.flush()
        cells.flush()
    finally:
        bar.close()
        del rows, cells
    if store_rows:
        os.replace(tmp_rows, folder / "keys_rows.npy")
    os.replace(tmp_cells, folder / "keys_cells.npy")
