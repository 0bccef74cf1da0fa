"""The CuPy backend: the engine's array primitives as CUDA kernels over bit-packed on-masks.

It shares the search with the NumPy backend (``SearchBackend.match``, ``../shared/MATCHING.md``), so its
answers are the engine's exactly; only the array work runs on the GPU, in ``kernels/*.cu``.

What lives on the device, and why:

- **keys**, cell-major ``(D, T_pad)`` in the stored width (uint16 for a float16 source). The
  order-preserving keys *are* the stored floats, so every threshold stays exact; cell-major because the
  threshold pass reads whole rows (coalesced) and a selection is a handful of whole rows. One copy
  only: T=1e8 x D=256 is 51 GB, a row-major twin would not fit. ``T_pad`` is T rounded up to 32 steps,
  padded with key 0 (a NaN's key), which is never on.
- **packed on-masks**, per threshold (one key, or one key per cell for a per-cell scale), ``(D, T_pad /
  32)`` uint32 (bit j of word w = step 32w + j), made from the keys in one pass (the threshold-change
  cost) and kept for the last few thresholds. A query's step words are gathered from the selected rows
  (``gather_steps``: no booleans, however many cells), and verifying a candidate over all D cells reads
  one or two words per cell.
- The statistics' corpus scans (``Capability.CORPUS_SCANS``) read the same: suggest popcounts each
  cell's mask row (``cell_on_counts``, kernels/stats.cu), the phrase map sums unpacked mask rows, the
  detector curve searches the selected cells' keys (resident, or streamed per chunk) once for all
  thresholds (``threshold_levels``); only counts come back.
- A source whose keys do not fit stays on the host; each new threshold then streams its keys through
  the GPU in chunks of steps to build the mask (``plan_layout``). When not even the mask fits, NumPy
  answers. A query moves no states over PCIe: cell lists and candidates go up, results come back.

Out-of-memory during a query frees the cached masks and retries, then moves the keys off the GPU
(streamed), then answers that query with NumPy; each step logs one line. Everything here is written
against ``self.xp`` and a *device* (``CudaDevice``: CuPy, the compiled kernels, free memory), so tests
run the same code on a NumPy-backed stand-in device in CPU CI (``tests/gpu/standin.py``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import kernels
from gpu_matcher.backends.base import Capability, MatchQuery, MatchRow
from gpu_matcher.backends.search import SearchBackend
from gpu_matcher.errors import ProjectError
from gpu_matcher.source import KEY_DTYPES, float_keys
from gpu_matcher.targets import as_mask

log = logging.getLogger("gpu_matcher")

RESIDENT, STREAMED, HOST = "resident", "streamed", "host"
#: Device bytes per step that a typical query (k <= 16 cells) needs besides the layout: step words,
#: n(t), run flags, sequence marks and CuPy's compaction scratch (and the rows ``on_columns`` unpacks).
QUERY_BYTES_PER_STEP = 64
#: Host keys moved per chunk when uploading or streaming a source (bounds host and staging memory).
CHUNK_BYTES = 256 * 2**20
#: Thresholds whose packed masks are kept at most.
MAX_MASKS = 4
#: Share of the free device memory a plan may use (the pool's fragmentation needs the rest).
USABLE = 0.9
#: Threads per block, and a cap on blocks: every kernel loops over its work grid-stride.
BLOCK = 256
MAX_BLOCKS = 1 << 16
PACK_KERNELS = {2: "pack_cells_u16", 4: "pack_cells_u32", 8: "pack_cells_u64"}
#: The same pass with one threshold key per cell (per-cell scaled thresholds, gpu_matcher/scaling.py).
PACK_ROWS_KERNELS = {2: "pack_cells_rows_u16", 4: "pack_cells_rows_u32", 8: "pack_cells_rows_u64"}


# --- planning (host only) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LayoutPlan:
    """Where a source's keys live on this device, and how they are moved."""

    mode: str              # RESIDENT, STREAMED or HOST
    steps: int             # T rounded up to a multiple of 32
    words: int             # steps / 32: packed words per cell
    chunk_steps: int       # steps per upload / streaming chunk (a multiple of 32)
    masks: int             # thresholds whose packed masks are kept


def layout_bytes(T: int, D: int, key_itemsize: int) -> dict[str, int]:
    """Device bytes of the keys, of one packed mask, and of a typical query's scratch."""
    steps = -(-T // 32) * 32
    return {"keys": D * steps * key_itemsize, "mask": D * (steps // 32) * 4,
            "work": steps * QUERY_BYTES_PER_STEP}


def plan_layout(T: int, D: int, key_itemsize: int, free_bytes: int, resident: bool = True) -> LayoutPlan:
    """Keys resident if keys, a mask and a query's scratch fit in the usable free memory; else keys
    streamed from the host in chunks of steps if a mask, the scratch and two staging chunks fit; else
    ``HOST`` (NumPy answers)."""
    steps = -(-T // 32) * 32
    size = layout_bytes(T, D, key_itemsize)
    budget = int(free_bytes * USABLE)
    row_bytes = max(1, D * key_itemsize)                     # one step of all cells
    chunk = max(32, CHUNK_BYTES // row_bytes // 32 * 32)
    mask = max(1, size["mask"])
    if resident and size["keys"] + size["mask"] + size["work"] <= budget:
        spare = budget - size["keys"] - size["work"]
        return LayoutPlan(RESIDENT, steps, steps // 32, min(chunk, max(32, steps)),
                          int(min(MAX_MASKS, max(1, spare // mask))))
    # Streaming stages each chunk twice on the device: as read (steps x D) and transposed (D x steps).
    room = budget - size["mask"] - size["work"]
    chunk = min(chunk, max(32, steps), max(0, room) // (2 * row_bytes) // 32 * 32)
    if chunk >= 32:
        spare = budget - size["work"] - 2 * chunk * row_bytes
        return LayoutPlan(STREAMED, steps, steps // 32, chunk, int(min(MAX_MASKS, max(1, spare // mask))))
    return LayoutPlan(HOST, steps, steps // 32, 0, 0)


@dataclass(eq=False)
class DeviceLayout:
    """One source on the device: its plan, its keys (when resident) and its cached packed masks."""

    name: str
    T: int
    D: int
    key_dtype: np.dtype
    plan: LayoutPlan
    read_keys: Callable[[int, int], np.ndarray] | None = None   # host keys of steps [t0, t1): (n, D)
    host_layout: Callable[[], Any] | None = None                 # the NumPy backend's layout
    keys: Any = None                                             # (D, steps) on the device, or None
    masks: "OrderedDict[int, Any]" = field(default_factory=OrderedDict)
    host: Any = None

    @property
    def mode(self) -> str:
        return self.plan.mode

    def describe(self) -> str:
        size = layout_bytes(self.T, self.D, self.key_dtype.itemsize)
        if self.mode == RESIDENT:
            where = f"keys resident ({size['keys'] / 2**30:.2f} GiB)"
        elif self.mode == STREAMED:
            where = (f"keys streamed from the host in chunks of {self.plan.chunk_steps} steps; "
                     f"masks {size['mask'] / 2**30:.2f} GiB")
        else:
            where = "too large for the GPU; matched with NumPy"
        return f"source {self.name} ({self.T} x {self.D}, {self.key_dtype} keys): {where}"


# --- the device ---------------------------------------------------------------------------------------
class CudaDevice:
    """The GPU as the backend sees it: CuPy, the compiled kernels, free memory and its release.

    ``memory_limit`` caps the free memory that plans see (tests of streaming; sharing a card).
    """

    def __init__(self, memory_limit: int | None = None):
        import cupy

        self._cupy = cupy
        self.xp = cupy
        self.kernels = kernels.load()
        self.oom_errors = (cupy.cuda.memory.OutOfMemoryError,)
        self.memory_limit = memory_limit

    def free_bytes(self) -> int:
        free, _total = self._cupy.cuda.runtime.memGetInfo()
        free = int(free) + int(self._cupy.get_default_memory_pool().free_bytes())
        return free if self.memory_limit is None else min(free, int(self.memory_limit))

    def release(self) -> None:
        self._cupy.get_default_memory_pool().free_all_blocks()

    def to_host(self, array) -> np.ndarray:
        return self._cupy.asnumpy(array)

    def describe(self) -> str:
        cupy = self._cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        return f"{name}, {props['totalGlobalMem'] / 2**30:.0f} GiB, CuPy {cupy.__version__}"


@dataclass
class _RunEvents:
    """What ``level_runs`` needs for one query, kept on the device."""

    n: Any                 # (T,) int32 counts
    seq_marks: Any         # (T,) uint8, 1 where a sequence starts, or a 1-element dummy
    has_seq: int

    @property
    def nbytes(self) -> int:
        return int(getattr(self.n, "nbytes", 0)) + int(getattr(self.seq_marks, "nbytes", 0))


# --- the backend ----------------------------------------------------------------------------------------
class CupyBackend(SearchBackend[DeviceLayout, _RunEvents]):
    """The engine's search with the array work on a GPU (or on a stand-in device in tests)."""

    name = "cupy"
    # Per-cell keys (a (D,) key vector, gpu_matcher.scaling) are packed by pack_cells_rows_* into a mask
    # cached like any other. The statistics' scans run on the device too (cached masks, resident keys).
    capabilities = frozenset({Capability.STREAMING, Capability.PER_CELL_KEYS, Capability.CORPUS_SCANS})

    def __init__(self, device: Any = None):
        self.device = device if device is not None else CudaDevice()
        self.xp = self.device.xp
        self._kernels = self.device.kernels
        self._lock = threading.RLock()
        self._seq_cache: tuple[int, np.ndarray, Any] | None = None
        self._dummy = None
        self._numpy = None

    def describe(self) -> str:
        return f"cupy ({self.device.describe()})"

    @property
    def lock(self) -> threading.RLock:
        """One device, one stream of work: calls from several threads take turns."""
        return self._lock

    def to_host(self, array) -> np.ndarray:
        return self.device.to_host(array)

    # --- layouts ----------------------------------------------------------------------------------------
    def prepare(self, source) -> DeviceLayout:
        """Plan and load a source: its keys are read from the HDF5 source in chunks of steps."""
        T, D = (int(x) for x in source.shape)
        key_dtype = np.dtype(KEY_DTYPES[np.dtype(source.dtype).itemsize])
        return self._new_layout(source.name, T, D, key_dtype,
                                read_keys=lambda t0, t1: float_keys(source.raw(t0, t1)),
                                host_layout=source.layout)

    def prepare_keys(self, keys_cells: np.ndarray, name: str = "keys",
                     host_layout: Callable[[], Any] | None = None) -> DeviceLayout:
        """A layout from host keys ``(D, T)`` (``gpu_matcher.source.float_keys`` of the states)."""
        keys_cells = np.asarray(keys_cells)
        D, T = keys_cells.shape
        return self._new_layout(name, T, D, keys_cells.dtype,
                                read_keys=lambda t0, t1: keys_cells[:, t0:t1].T, host_layout=host_layout)

    def layout_from_device_keys(self, keys, T: int | None = None, name: str = "keys",
                                host_layout: Callable[[], Any] | None = None) -> DeviceLayout:
        """A resident layout over keys already on the device, ``(D, T_pad)`` with ``T_pad`` a multiple
        of 32 and key 0 past ``T`` (no copy is made); no host copy unless ``host_layout`` is given."""
        D, steps = keys.shape
        T = steps if T is None else int(T)
        if steps % 32 or not (steps - 32 < T <= steps) or not keys.flags.c_contiguous:
            raise ProjectError(f"{name}: device keys must be C-contiguous (D, T_pad) with T_pad the "
                               f"multiple of 32 just above T (got {keys.shape} for T={T})")
        free = self.device.free_bytes() + layout_bytes(T, D, keys.dtype.itemsize)["keys"]
        plan = plan_layout(T, D, keys.dtype.itemsize, free)
        if plan.mode != RESIDENT:
            plan = LayoutPlan(RESIDENT, steps, steps // 32, min(steps, 1 << 20), 1)
        layout = DeviceLayout(name, T, D, np.dtype(keys.dtype), plan, host_layout=host_layout, keys=keys)
        log.info("%s", layout.describe())
        return layout

    def _new_layout(self, name, T, D, key_dtype, read_keys, host_layout) -> DeviceLayout:
        plan = plan_layout(T, D, key_dtype.itemsize, self.device.free_bytes())
        layout = DeviceLayout(name, T, D, np.dtype(key_dtype), plan, read_keys=read_keys,
                              host_layout=host_layout)
        if plan.mode == RESIDENT:
            try:
                with self._lock:
                    self._upload(layout)
            except self.device.oom_errors:
                layout.keys = None
                self.device.release()
                layout.plan = plan_layout(T, D, key_dtype.itemsize, self.device.free_bytes(),
                                          resident=False)
                log.warning("source %s: GPU out of memory while loading its keys; planning again",
                            name)
        if layout.mode == HOST:
            log.warning("%s (%.1f GiB free on the GPU)", layout.describe(),
                        self.device.free_bytes() / 2**30)
        else:
            log.info("%s", layout.describe())
        return layout

    def _upload(self, layout: DeviceLayout) -> None:
        xp = self.xp
        keys = xp.zeros((layout.D, layout.plan.steps), dtype=layout.key_dtype)    # padding: never on
        for t0 in range(0, layout.T, layout.plan.chunk_steps):
            t1 = min(layout.T, t0 + layout.plan.chunk_steps)
            keys[:, t0:t1] = self._device_rows(layout, t0, t1).T
        layout.keys = keys

    def _device_rows(self, layout: DeviceLayout, t0: int, t1: int):
        """Host keys of steps ``[t0, t1)`` as a ``(t1 - t0, D)`` device array."""
        block = np.ascontiguousarray(layout.read_keys(t0, t1), dtype=layout.key_dtype)
        return self.xp.asarray(block)

    def _demote(self, layout: DeviceLayout) -> bool:
        """Move a resident source's keys off the GPU (masks are then built by streaming)."""
        if layout.mode != RESIDENT or layout.read_keys is None:
            return False
        layout.keys = None
        layout.masks.clear()
        self.device.release()
        plan = plan_layout(layout.T, layout.D, layout.key_dtype.itemsize, self.device.free_bytes(),
                           resident=False)
        if plan.mode == HOST:
            return False
        layout.plan = plan
        return True

    # --- thresholds -----------------------------------------------------------------------------------
    def threshold_mask(self, layout: DeviceLayout, key_threshold):
        """The packed on-mask ``(D, steps / 32)`` uint32 of a threshold key, or of one key per cell
        (``(D,)``), built once and cached."""
        per_cell = np.ndim(key_threshold) > 0
        if per_cell:
            cell_keys = np.ascontiguousarray(key_threshold, dtype=layout.key_dtype)
            if cell_keys.shape != (layout.D,):
                raise ProjectError(f"source {layout.name}: {cell_keys.size} per-cell keys for "
                                   f"{layout.D} cells")
            key: Any = ("cells", cell_keys.tobytes())
        else:
            key = int(key_threshold)
        with self._lock:
            mask = layout.masks.get(key)
            if mask is not None:
                layout.masks.move_to_end(key)
                return mask
            while layout.masks and len(layout.masks) >= layout.plan.masks:
                layout.masks.popitem(last=False)
            xp = self.xp
            mask = xp.empty((layout.D, layout.plan.words), dtype=xp.uint32)
            threshold = xp.asarray(cell_keys) if per_cell else layout.key_dtype.type(key)
            if layout.keys is not None:
                self._pack(layout, layout.keys, layout.plan.steps, threshold, mask, 0, layout.plan.words)
            elif layout.read_keys is not None:
                chunk = layout.plan.chunk_steps
                stage = xp.empty((layout.D, chunk), dtype=layout.key_dtype)
                for t0 in range(0, layout.T, chunk):
                    t1 = min(layout.T, t0 + chunk)
                    stage[:, :t1 - t0] = self._device_rows(layout, t0, t1).T
                    stage[:, t1 - t0:] = 0                                      # padding: never on
                    self._pack(layout, stage, chunk, threshold, mask, t0 // 32, -(-(t1 - t0) // 32))
            else:
                raise ProjectError(f"source {layout.name}: its keys are neither on the GPU nor readable")
            layout.masks[key] = mask
            return mask

    def _pack(self, layout, keys, key_stride, threshold, mask, word_offset, n_words) -> None:
        """One pass of ``pack_cells``: ``threshold`` is a scalar key or a device vector of one per cell."""
        per = 16 // layout.key_dtype.itemsize                  # words per warp step (see threshold.cu)
        warps = layout.D * -(-n_words // per)
        kernels_ = PACK_KERNELS if np.ndim(threshold) == 0 else PACK_ROWS_KERNELS
        self._launch(kernels_[layout.key_dtype.itemsize], warps * 32,
                     (keys, np.int64(key_stride), threshold, mask, np.int64(layout.plan.words),
                      np.int64(word_offset), np.int64(n_words), np.int32(layout.D)))

    def _launch(self, name: str, threads: int, args: tuple, rows: int = 1) -> None:
        blocks_y = max(1, min(int(rows), 65535))
        blocks_x = max(1, min(-(-int(threads) // BLOCK), max(1, MAX_BLOCKS // blocks_y)))
        kernels.check_launch(name, (blocks_x, blocks_y), (BLOCK,))
        self._kernels[name]((blocks_x, blocks_y), (BLOCK,), args)

    # --- the array primitives of SearchBackend.match -----------------------------------------------------
    def on_columns(self, layout: DeviceLayout, cells, key_threshold):
        xp = self.xp
        mask = self.threshold_mask(layout, key_threshold)
        cells = np.ascontiguousarray(cells, dtype=np.int64)
        k, T = int(cells.size), layout.T
        out = xp.empty((k, T), dtype=bool)
        if k and T:
            self._launch("unpack_cells", T, (mask, np.int64(layout.plan.words), xp.asarray(cells),
                                             np.int32(k), np.int64(T), out), rows=k)
        return out

    def selected_words(self, layout: DeviceLayout, cells, key_threshold):
        """``(T, ceil(k / 32))`` uint32 step words of the selected cells, gathered straight from the
        cached threshold mask (one warp transposes 32 cells x 32 steps): no ``(k, T)`` booleans and no
        second look at the keys, however many cells are selected."""
        xp = self.xp
        mask = self.threshold_mask(layout, key_threshold)
        cells = np.ascontiguousarray(cells, dtype=np.int64)
        k, T = int(cells.size), layout.T
        W = max(1, -(-k // 32))
        words = xp.empty((T, W), dtype=xp.uint32)
        if T:
            self._launch("gather_steps", -(-T // 32) * W * 32,
                         (mask, np.int64(layout.plan.words), xp.asarray(cells), np.int32(k), np.int64(T),
                          words, np.int32(W)))
        return words

    def pack_steps(self, on):
        """``(k, T)`` bool -> ``(T, ceil(k / 32))`` uint32 step words (format private to this backend)."""
        xp = self.xp
        on = xp.ascontiguousarray(on, dtype=bool)
        k, T = on.shape
        W = max(1, -(-k // 32))
        words = xp.empty((T, W), dtype=xp.uint32)
        if T:
            self._launch("pack_steps", T, (on, np.int32(k), np.int64(T), words, np.int32(W)))
        return words

    def step_counts(self, words):
        xp = self.xp
        T, W = words.shape
        n = xp.empty(T, dtype=xp.int32)
        if T:
            self._launch("step_counts", T, (words, np.int32(W), np.int64(T), n))
        return n

    def level_events(self, n, bounds: np.ndarray) -> _RunEvents:
        """Kept on the device: n(t) and the sequence starts; each level's runs are cut out there."""
        marks, has_seq = self._sequence_marks(np.asarray(bounds, dtype=np.int64), int(n.shape[0]))
        return _RunEvents(n=n, seq_marks=marks, has_seq=has_seq)

    def level_runs(self, events: _RunEvents, level: int, query: MatchQuery):
        """Maximal runs ``[a, b]`` of ``n >= level`` cut at sequence starts, filtered by length on the
        device; host int64 arrays sorted by ``a``."""
        xp = self.xp
        n = events.n
        T = int(n.shape[0])
        if T == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        flags = xp.empty(T, dtype=xp.uint8)
        self._launch("level_edges", T, (n, events.seq_marks, np.int32(events.has_seq), np.int32(level),
                                        np.int64(T), flags))
        where = xp.flatnonzero(flags)
        edge = flags[where]
        a = where[(edge & 1) != 0]            # runs are disjoint and sorted: the i-th start pairs
        b = where[(edge & 2) != 0]            # with the i-th end
        keep = query.keeps_length(b - a + 1)
        runs = self.to_host(xp.stack([a[keep], b[keep]])).astype(np.int64, copy=False)
        return runs[0], runs[1]

    def _sequence_marks(self, bounds: np.ndarray, T: int):
        """Device marks of the sequence starts inside ``(0, T)``, kept while the bounds stay the same
        (a content compare: each query brings a new bounds array)."""
        inner = bounds[(bounds > 0) & (bounds < T)]
        xp = self.xp
        if inner.size == 0:
            if self._dummy is None:
                self._dummy = xp.zeros(1, dtype=xp.uint8)
            return self._dummy, 0
        cached = self._seq_cache
        if cached is None or cached[0] != T or not np.array_equal(cached[1], inner):
            self._seq_cache = None                      # free the old marks before allocating
            marks = xp.zeros(T, dtype=xp.uint8)
            marks[xp.asarray(inner)] = 1
            self._seq_cache = (T, inner.copy(), marks)
        return self._seq_cache[2], 1

    def inter_counts(self, words, a, b, lo, hi) -> np.ndarray:
        xp = self.xp
        n_cand = int(np.size(a))
        if n_cand == 0:
            return np.zeros(0, dtype=np.int64)
        cand = xp.asarray(np.stack([a, b, lo, hi]).astype(np.int64, copy=False))
        out = xp.empty(n_cand, dtype=xp.int32)
        self._launch("inter_counts", n_cand * 32,
                     (words, np.int32(words.shape[1]), cand[0], cand[1], cand[2], cand[3],
                      np.int64(n_cand), out))
        return self.to_host(out).astype(np.int64)

    def active_counts(self, layout: DeviceLayout, key_threshold, start, end, margin_lo, margin_hi):
        xp = self.xp
        n_cand = int(np.size(start))
        if n_cand == 0:
            return np.zeros(0, dtype=np.int64)
        mask = self.threshold_mask(layout, key_threshold)
        cand = xp.asarray(np.stack([start, end, margin_lo, margin_hi]).astype(np.int64, copy=False))
        out = xp.zeros(n_cand, dtype=xp.int32)                 # the kernel adds per 32-cell group
        groups = -(-layout.D // 32)
        self._launch("active_counts", n_cand * groups * 32,
                     (mask, np.int64(layout.plan.words), np.int32(layout.D), cand[0], cand[1], cand[2],
                      cand[3], np.int64(n_cand), out))
        return self.to_host(out).astype(np.int64)

    # --- the statistics' corpus scans (SearchBackend's xp code over on_columns, and threshold_levels) -------
    def layout_shape(self, layout: DeviceLayout) -> tuple[int, int]:
        return layout.T, layout.D

    def threshold_levels(self, layout: DeviceLayout, cells, keys):
        """``M(t)`` on the device: one ``searchsorted`` per selected cell's key row (resident keys), or
        per chunk of the selected cells' keys sent from the host (streamed keys)."""
        xp = self.xp
        T = layout.T
        cells = np.asarray(cells, dtype=np.int64)
        columns = [xp.asarray(np.ascontiguousarray(keys[:, j], dtype=layout.key_dtype))
                   for j in range(cells.size)]
        levels = xp.full(T, keys.shape[0], dtype=xp.int32)
        if layout.keys is not None and np.all(keys == keys[:, :1]):
            # One key per threshold (scale none): one search of the selected cells' least key.
            least = layout.keys[cells[0], :T].copy()
            for c in cells[1:].tolist():
                xp.minimum(least, layout.keys[c, :T], out=least)
            return xp.searchsorted(columns[0], least, side="right").astype(xp.int32)
        if layout.keys is not None:
            for j, c in enumerate(cells.tolist()):
                found = xp.searchsorted(columns[j], layout.keys[c, :T], side="right")
                xp.minimum(levels, found.astype(xp.int32), out=levels)
            return levels
        if layout.read_keys is None:
            raise ProjectError(f"source {layout.name}: its keys are neither on the GPU nor readable")
        chunk = layout.plan.chunk_steps
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            # Only the selected cells' keys cross to the device, cell-major.
            rows = xp.asarray(np.ascontiguousarray(np.asarray(layout.read_keys(t0, t1))[:, cells].T,
                                                   dtype=layout.key_dtype))
            part = levels[t0:t1]
            for j in range(cells.size):
                xp.minimum(part, xp.searchsorted(columns[j], rows[j], side="right").astype(xp.int32),
                           out=part)
        return levels

    def cell_on_counts(self, layout: DeviceLayout, key_threshold, target):
        """Popcounts of every cell's row of the cached threshold mask, whole and under the packed target
        (``cell_on_counts`` in kernels/stats.cu): the mask is read once, no booleans are made."""
        return self._scan(layout, "cell_on_counts", self._cell_on_counts, key_threshold, target)

    def _cell_on_counts(self, layout: DeviceLayout, key_threshold, target):
        xp = self.xp
        D, words = layout.D, layout.plan.words
        if key_threshold is None or layout.T == 0:
            return np.zeros(D, dtype=np.int64), np.zeros(D, dtype=np.int64)
        mask = self.threshold_mask(layout, key_threshold)
        bits = np.zeros(words * 32, dtype=bool)
        bits[:layout.T] = as_mask(target, layout.T)
        packed = xp.asarray(np.packbits(bits, bitorder="little").view(np.dtype("<u4")).astype(np.uint32))
        inside, total = xp.empty(D, dtype=xp.int64), xp.empty(D, dtype=xp.int64)
        self._launch("cell_on_counts", D * 32, (mask, np.int64(words), np.int64(words), np.int32(D), packed,
                                                inside, total))
        return self.to_host(inside).astype(np.int64), self.to_host(total).astype(np.int64)

    def span_patterns(self, layout: DeviceLayout, key_threshold, starts, ends, lo, hi):
        return self._scan(layout, "span_patterns", None, key_threshold, starts, ends, lo, hi)

    def all_on_counts(self, layout: DeviceLayout, cells, keys, target):
        return self._scan(layout, "all_on_counts", None, cells, keys, target)

    def _scan(self, layout: DeviceLayout, name: str, on_device: Callable | None, *args):
        """A corpus scan on the device (``on_device``, else ``SearchBackend``'s xp code); for a source too
        large for the GPU, or out of memory (cached masks freed first, one log line), NumPy over the host
        layout answers it."""
        if layout.mode != HOST:
            try:
                with self._lock:
                    if on_device is not None:
                        return on_device(layout, *args)
                    return getattr(SearchBackend, name)(self, layout, *args)
            except self.device.oom_errors as exc:
                with self._lock:
                    layout.masks.clear()
                    self.device.release()
                log.warning("source %s: GPU out of memory in %s (%s); it runs on NumPy", layout.name,
                            name, " ".join(str(exc).split())[:160])
        numpy, host = self._host_pair(layout)
        return getattr(numpy, name)(host, *args)

    # --- the search, with its fallbacks -----------------------------------------------------------------
    def match(self, layout: DeviceLayout, query: MatchQuery) -> list[MatchRow]:
        """``SearchBackend.match`` on the GPU. Out of memory: free the cached masks and retry; then stream the
        keys instead of keeping them; then answer this query with NumPy. One log line each."""
        if layout.mode != HOST:
            for attempt in range(3):
                try:
                    with self._lock:
                        return super().match(layout, query)
                except self.device.oom_errors as exc:
                    reason = " ".join(str(exc).split())[:160]
                    with self._lock:
                        layout.masks.clear()
                        self._seq_cache = None
                        self.device.release()
                        if attempt == 0:
                            log.warning("source %s: GPU out of memory (%s); cached masks freed, "
                                        "retrying", layout.name, reason)
                            continue
                        if attempt == 1 and self._demote(layout):
                            log.warning("source %s: GPU out of memory again; its keys leave the GPU "
                                        "and masks are built in chunks of %d steps", layout.name,
                                        layout.plan.chunk_steps)
                            continue
                    log.warning("source %s: GPU out of memory (%s); this query runs on NumPy",
                                layout.name, reason)
                    break
        return self._host_match(layout, query)

    def _host_match(self, layout: DeviceLayout, query: MatchQuery) -> list[MatchRow]:
        numpy, host = self._host_pair(layout)
        return numpy.match(host, query)

    def _host_pair(self, layout: DeviceLayout):
        """The NumPy backend and the host layout that answer for this layout when the GPU cannot."""
        if layout.host_layout is None:
            raise ProjectError(f"source {layout.name}: the GPU is out of memory and this layout keeps "
                               "no host copy to fall back to")
        if self._numpy is None:
            from gpu_matcher.backends.numpy import NumpyBackend

            self._numpy = NumpyBackend()
        if layout.host is None:
            layout.host = layout.host_layout()
        return self._numpy, layout.host
