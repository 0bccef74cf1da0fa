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

import errno
import fcntl
import hashlib
import json
import logging
import mmap
import os
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gpu_matcher import settings
from gpu_matcher.errors import ProjectError

log = logging.getLogger("gpu_matcher")
LAYOUT_VERSION = 1
KEY_DTYPES = {2: np.uint16, 4: np.uint32, 8: np.uint64}
#: Sources whose keys take at most this many bytes are held in memory instead of a cache folder;
#: None: ``settings.in_memory_bytes()`` (LSTMVIS_IN_MEMORY_BYTES) at use. Tests pin a value here.
IN_MEMORY_BYTES: int | None = None
#: A threshold key that no stored key reaches: nothing is on.
NOTHING_ON = None


def default_cache_dir() -> Path:
    return settings.cache_dir()


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
    _layout_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

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
        """The key layouts, built (with a progress bar) or loaded from the cache on first use.

        Every caller goes through this lock, so one source is built once however many threads ask;
        builds of the same cache folder by other ``Source`` objects or processes wait on the folder's
        lock (``_folder_lock``)."""
        if self._layout is None:
            with self._layout_lock:
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
    if T * D * itemsize <= (settings.in_memory_bytes() if IN_MEMORY_BYTES is None else IN_MEMORY_BYTES):
        keys = float_keys(_read_rows(source, 0, T))
        _report_nans(source, keys)
        return Layout(keys_rows=KeyStore(keys), keys_cells=KeyStore(np.ascontiguousarray(keys.T)),
                      location=None)
    fp = _fingerprint(source)
    root = Path(source.cache_dir) if source.cache_dir is not None else default_cache_dir()
    digest = hashlib.sha1(f"{fp['file']}::{fp['dataset']}".encode()).hexdigest()[:20]
    folder = root / digest
    for attempt in (1, 2):
        try:
            with _folder_lock(folder):
                layout = _open_cached(source, folder, fp)
                if layout is None:
                    _build_layout(source, folder, progress, store_rows=source.store_rows)
                    layout = _open_cached(source, folder, fp)
                if layout is None:
                    raise FileNotFoundError(errno.ENOENT, "layout vanished after its build", str(folder))
                return layout
        except FileNotFoundError:
            # The cache folder was removed while we built or opened it (a user cleaning ~/.cache):
            # build once more from scratch, then give a clear message.
            if attempt == 2:
                raise ProjectError(f"{folder}: the layout cache was removed while it was being built; "
                                   "try again") from None
    raise AssertionError("unreachable")


def _open_cached(source: Source, folder: Path, fp: dict) -> Layout | None:
    """The cached layout in ``folder`` if it matches the source's fingerprint, else None."""
    meta_path = folder / "layout.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None                              # a broken cache is rebuilt
    rows_stored = bool(meta.pop("rows_stored", True))
    nans = meta.pop("nan_values", None)
    if meta != fp or not (rows_stored or not source.store_rows):
        return None
    if nans:
        _warn_nans(source, nans)
    rows = KeyStore(path=folder / "keys_rows.npy") if rows_stored else SourceRows(source.dataset)
    return Layout(keys_rows=rows, keys_cells=KeyStore(path=folder / "keys_cells.npy"), location=folder)


#: One lock per cache folder in this process; ``flock`` on a file in the folder for other processes.
_FOLDER_LOCKS: dict[str, threading.Lock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()


class _folder_lock:
    """Exclusive use of one layout cache folder: threads of this process, then other processes."""

    def __init__(self, folder: Path):
        self.folder = folder
        with _FOLDER_LOCKS_GUARD:
            self.thread_lock = _FOLDER_LOCKS.setdefault(str(folder), threading.Lock())
        self.fh = None

    def __enter__(self):
        self.thread_lock.acquire()
        try:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.fh = open(self.folder / ".lock", "a+b")
            except OSError as exc:
                raise ProjectError(f"{self.folder}: cannot create the layout cache ({exc.strerror}); "
                                   "set LSTMVIS_CACHE_DIR to a writable folder") from None
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
        except BaseException:
            if self.fh is not None:
                self.fh.close()
            self.thread_lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()
        finally:
            self.thread_lock.release()
        return False


def _read_rows(source: Source, start: int, stop: int) -> np.ndarray:
    """Rows of the user's dataset; a read error (HDF5's Fletcher32 checksum, a damaged chunk) is one line."""
    try:
        return np.asarray(source.dataset[start:stop])
    except OSError as exc:
        raise ProjectError(f"{source.file_path}: {source.name} rows {start}-{stop - 1} cannot be read "
                           f"({exc}); the file may be damaged") from None


def _report_nans(source: Source, keys: np.ndarray, offset: int = 0) -> None:
    """Log NaN values of a source once (key 0): a NaN is never on, and garbage in a file often reads as NaN."""
    count = int(np.count_nonzero(keys == 0))
    if count:
        row, cell = np.argwhere(keys == 0)[0]
        _warn_nans(source, {"count": count, "step": int(row) + offset, "cell": int(cell)})


def _warn_nans(source: Source, nans: dict) -> None:
    log.warning("%s: source %s holds %d NaN values (the first at step %d, cell %d); a NaN is never on. "
                "If the model never produced NaN, the file may be damaged.", source.file_path, source.name,
                nans["count"], nans["step"], nans["cell"])


def _build_layout(source: Source, folder: Path, progress: bool, store_rows: bool = True) -> None:
    """Build the key layouts into ``folder`` (its lock held): unique temporary files with their space
    reserved up front (a full disk is an error, never a SIGBUS on a mapped page), moved into place
    only when complete, removed on any failure."""
    from tqdm import tqdm

    T, D = source.shape
    kdt = KEY_DTYPES[source.dtype.itemsize]
    meta_path = folder / "layout.json"
    meta_path.unlink(missing_ok=True)
    for stale in folder.glob("*.tmp.npy"):       # left by a build that died; we hold the folder's lock
        stale.unlink(missing_ok=True)
    (folder / "keys_rows.npy").unlink(missing_ok=True)        # never a stale copy beside a new layout
    temps: list[Path] = []
    rows = cells = None
    bar = tqdm(total=T, desc=f"layout {source.name}", unit="step", unit_scale=True,
               disable=not progress or None, file=sys.stderr, leave=False)
    nans = {"count": 0, "step": -1, "cell": -1}
    try:
        if store_rows:
            rows = _reserved_memmap(folder, "keys_rows", kdt, (T, D), temps)
        cells = _reserved_memmap(folder, "keys_cells", kdt, (D, T), temps)
        chunk = max(1, (32 * 2**20) // max(1, D * source.dtype.itemsize))
        for start in range(0, T, chunk):
            stop = min(T, start + chunk)
            keys = float_keys(_read_rows(source, start, stop))
            missing = keys == 0
            if missing.any():
                if nans["count"] == 0:
                    row, cell = np.argwhere(missing)[0]
                    nans.update(step=int(row) + start, cell=int(cell))
                nans["count"] += int(np.count_nonzero(missing))
            if rows is not None:
                rows[start:stop] = keys
            cells[:, start:stop] = keys.T
            bar.update(stop - start)
        if rows is not None:
            rows.flush()
        cells.flush()
        del rows, cells
        rows = cells = None
        if store_rows:
            os.replace(temps[0], folder / "keys_rows.npy")
        os.replace(temps[-1], folder / "keys_cells.npy")
        meta_path.write_text(json.dumps({**_fingerprint(source), "rows_stored": store_rows,
                                         **({"nan_values": nans} if nans["count"] else {})}))
    except BaseException:
        rows = cells = None
        for path in temps:
            path.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if nans["count"]:
        _warn_nans(source, nans)


def _reserved_memmap(folder: Path, stem: str, dtype, shape: tuple[int, int], temps: list[Path]) -> np.memmap:
    """A new ``.npy`` file mapped for writing, under a unique name, with its blocks allocated first."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=f"{stem}.", suffix=".tmp.npy")
    path = Path(name)
    temps.append(path)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape}
    with os.fdopen(fd, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        offset = fh.tell()
        size = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
        except OSError as exc:
            free = _free_bytes(folder)
            raise ProjectError(f"{folder}: no room for the layout of this source ({size / 2**30:.2f} GiB "
                               f"needed, {free / 2**30:.2f} GiB free: {exc.strerror}); free space or set "
                               "LSTMVIS_CACHE_DIR to a larger disk") from None
    return np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=shape)


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
        return st.f_bavail * st.f_frsize
    except OSError:
        return 0
