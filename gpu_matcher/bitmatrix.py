"""Cell-major on-bits, 64 steps to a word, cached per threshold; and the bit-parallel primitives of the
exact match over them (``../shared/MATCHING.md``, "Match").

A cell's *bit row* at a threshold key holds bit ``t % 64`` of word ``t // 64`` set when the cell is on at
step ``t`` (padding bits past ``T`` are 0). At ``T = 10^6`` a row is 125 KB, so a selection of ``k``
cells is ``k`` rows gathered from the cache instead of ``k T`` key comparisons, and everything the
search needs from ``S`` is computed on words, 64 steps per operation:

- ``bit_sliced_counts``: ``n(t)`` as bit planes (plane ``b`` holds bit ``b`` of ``n``), summed with
  carry-save adders (three rows in, a sum and a carry row out);
- ``at_least`` and ``run_bounds``: the maximal runs of ``n(t) >= m``, cut at sequence edges, straight
  from the planes (a bit-sliced comparison with the constant ``m``, then run edges);
- ``window_counts``: ``inter`` per candidate (cells on over ``[a, b]``, off over the margins).

``BitRowCache`` is a byte-bounded LRU of bit rows keyed by (key store, threshold key, cell), so a
threshold switched back to is as fast as a repeat, and per-cell keys (``gpu_matcher.scaling``) are
cached the same way. Rows are packed when first asked for (1.4 ms per cell at ``T = 10^6``): packing
all ``D`` cells of a new threshold at once measured 0.9 s on a 2-core VM, over the 0.5 s first-query
budget. The budget is ``LSTMVIS_BIT_CACHE_BYTES`` (default 256 MiB: two thousand rows at ``T = 10^6``,
three full thresholds of a 650-cell source).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

#: Bytes of bit rows the process keeps (all sources, all thresholds together).
CACHE_BYTES = int(os.environ.get("LSTMVIS_BIT_CACHE_BYTES", 256 * 2**20))
#: Words per block of the carry-save adder tree (rows x block stay in the CPU cache).
ADDER_BLOCK = 2048
#: Cells x candidates of one batch of ``window_counts`` (bounds its temporaries to ~8 bytes x this).
WINDOW_BUDGET = 1 << 21
#: Below this many candidates still open, the long ones of ``window_counts`` are done one at a time.
LONG_FEW = 16

_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
#: ``_LOW[n]``: the ``n`` lowest bits set, n = 0..64.
_LOW = np.array([(1 << n) - 1 for n in range(65)], dtype=np.uint64)


def n_words(T: int) -> int:
    """Words of a bit row over ``T`` steps."""
    return -(-int(T) // 64)


def pack_bits(on: np.ndarray) -> np.ndarray:
    """Boolean ``(..., T)`` -> ``(..., n_words(T))`` uint64: bit ``t % 64`` of word ``t // 64`` is step t."""
    on = np.asarray(on, dtype=bool)
    T = on.shape[-1]
    packed = np.packbits(on, axis=-1, bitorder="little")
    out = np.zeros(on.shape[:-1] + (n_words(T) * 8,), dtype=np.uint8)
    out[..., :packed.shape[-1]] = packed
    return out.view("<u8").astype(np.uint64, copy=False)


def unpack_bits(words: np.ndarray, T: int) -> np.ndarray:
    """Inverse of ``pack_bits``: ``(..., W)`` uint64 -> boolean ``(..., T)``."""
    words = np.ascontiguousarray(words, dtype="<u8")
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
    return bits[..., :T].astype(bool)


def step_bits(steps: np.ndarray, T: int) -> np.ndarray:
    """A bit row with the given steps set (steps outside ``[0, T)`` are ignored)."""
    steps = np.asarray(steps, dtype=np.int64)
    steps = steps[(steps >= 0) & (steps < T)]
    out = np.zeros(n_words(T), dtype=np.uint64)
    np.bitwise_or.at(out, steps >> 6, np.left_shift(np.uint64(1), (steps & 63).astype(np.uint64)))
    return out


#: ``set_positions`` peels words with at most this many set bits a bit at a time, else unpacks them.
PEEL_BITS = 16


def set_positions(words: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
    """Sorted steps whose bit is set in a bit row (int64); ``at``: the word index of each word given
    (default ``arange``). Sparse words are peeled lowest bit first (its index read off the float64
    exponent, exact for a power of two), so a word's bits come out in order; dense ones are unpacked."""
    nz = np.flatnonzero(words)
    if nz.size == 0:
        return np.zeros(0, dtype=np.int64)
    x = words[nz]
    base = (nz if at is None else np.asarray(at, dtype=np.int64)[nz]) * 64
    passes = int(np.bitwise_count(x).max())
    if passes > PEEL_BITS:
        idx = np.flatnonzero(np.unpackbits(x.astype("<u8").view(np.uint8), bitorder="little"))
        return base[idx >> 6] + (idx & 63)
    out = np.empty((nz.size, passes), dtype=np.int64)
    found = np.empty((nz.size, passes), dtype=bool)
    for p in range(passes):
        low = x & (~x + np.uint64(1))
        out[:, p] = base + ((low.astype(np.float64).view(np.int64) >> 52) - 1023)
        np.not_equal(low, 0, out=found[:, p])
        x ^= low
    return out[found]                                       # word by word, each lowest bit first


# --- n(t) as bit planes ------------------------------------------------------------------------------
def _columns(rows, cols) -> np.ndarray:
    """``rows[:, cols]`` of a ``(k, W)`` array or of a list of ``k`` rows (any index or slice)."""
    if isinstance(rows, np.ndarray):
        return rows[:, cols]
    return np.stack([r[cols] for r in rows])


def bit_sliced_counts(rows) -> np.ndarray:
    """``(k, W)`` bit rows (an array or a list of rows) -> ``(B, W)`` planes of ``n`` (B = k.bit_length()): bit ``b`` of ``n(t)`` is
    bit ``t`` of plane ``b``. A tree of carry-save adders: each full adder turns three rows of one weight
    into a sum row of that weight and a carry row of twice it, a few words at a time."""
    k, W = len(rows), int(rows[0].shape[-1]) if len(rows) else 0
    B = max(1, int(k).bit_length())
    planes = np.zeros((B, W), dtype=np.uint64)
    for c0 in range(0, W, ADDER_BLOCK):
        c1 = min(W, c0 + ADDER_BLOCK)
        pending: list[list[np.ndarray]] = [[_columns(rows, slice(c0, c1))]] + [[] for _ in range(B)]
        for b in range(B):
            parts = pending[b]
            if not parts:
                continue
            x = parts[0] if len(parts) == 1 else np.concatenate(parts)
            while x.shape[0] > 2:
                t = x.shape[0] // 3 * 3
                p, q, r = x[0:t:3], x[1:t:3], x[2:t:3]
                pq = p ^ q
                pending[b + 1].append((p & q) | (r & pq))
                total = pq ^ r
                x = total if t == x.shape[0] else np.concatenate([total, x[t:]])
            if x.shape[0] == 2:
                pending[b + 1].append(x[0:1] & x[1:2])
                planes[b, c0:c1] = x[0] ^ x[1]
            elif x.shape[0] == 1:
                planes[b, c0:c1] = x[0]
    return planes


def count_dtype(k: int) -> np.dtype:
    return np.dtype(np.uint8 if k < 256 else np.uint16 if k < 65536 else np.int32)


def counts_from_planes(planes: np.ndarray, T: int, k: int) -> np.ndarray:
    """``n(t)`` as integers (``count_dtype(k)``) from its bit planes."""
    dtype = count_dtype(k)
    n = np.zeros(planes.shape[1] * 64, dtype=dtype)
    for b in range(planes.shape[0]):
        bits = np.unpackbits(planes[b].astype("<u8").view(np.uint8), bitorder="little")
        if dtype != np.uint8:
            bits = bits.astype(dtype)
        if b:
            np.left_shift(bits, b, out=bits)
        np.bitwise_or(n, bits, out=n)
    return n[:T]


def word_max(planes: np.ndarray) -> np.ndarray:
    """The largest ``n(t)`` within each word (int64 per word), from the planes: bit by bit from the
    top, keeping the steps that can still hold the maximum."""
    B, W = planes.shape
    out = np.zeros(W, dtype=np.int64)
    keep = np.full(W, _ONES, dtype=np.uint64)
    for b in range(B - 1, -1, -1):
        both = keep & planes[b]
        has = both != 0
        out[has] += 1 << b
        keep = np.where(has, both, keep)
    return out


def at_least(planes: np.ndarray, m: int) -> np.ndarray:
    """Bit row of ``n(t) >= m`` (``m >= 1``), a bit-sliced comparison with the constant ``m``."""
    B, W = planes.shape
    if m >= 1 << B:
        return np.zeros(W, dtype=np.uint64)
    greater = np.zeros(W, dtype=np.uint64)
    equal = np.full(W, _ONES, dtype=np.uint64)
    for b in range(B - 1, -1, -1):
        if (m >> b) & 1:
            np.bitwise_and(equal, planes[b], out=equal)
        else:
            greater |= equal & planes[b]
            if b:
                equal &= ~planes[b]
            else:
                return greater | (equal & ~planes[b])
    return greater | equal


def run_bounds(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of set bits, cut where a sequence starts (``starts``: bits of sequence starts,
    ``ends``: bits of sequence ends): sorted ``(a, b)`` with ``b`` inclusive. With ``at`` (sorted word
    indices), ``mask``, ``starts`` and ``ends`` hold only those words; every other word of the mask
    is 0."""
    before = mask << np.uint64(1)                          # bit t: step t - 1 is set
    after = mask >> np.uint64(1)                           # bit t: step t + 1 is set
    if at is None:
        before[1:] |= mask[:-1] >> np.uint64(63)
        after[:-1] |= mask[1:] << np.uint64(63)
    else:
        next_to = np.diff(at) == 1                         # word i + 1 follows word i
        before[1:] |= (mask[:-1] >> np.uint64(63)) * next_to
        after[:-1] |= (mask[1:] << np.uint64(63)) * next_to
    first = mask & (~before | starts)
    last = mask & (~after | ends)
    return set_positions(first, at), set_positions(last, at)


# --- inter per candidate ----------------------------------------------------------------------------
def _span(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bits ``[x, y)`` of a word (both clipped to [0, 64])."""
    return _LOW[np.minimum(np.maximum(y, 0), 64)] & ~_LOW[np.minimum(np.maximum(x, 0), 64)]


def window_counts(rows, a: np.ndarray, b: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray) -> np.ndarray:
    """Per candidate, how many of the ``k`` bit rows are set over all of ``[a, b]`` and clear over
    ``[lo, a)`` and ``(b, hi)`` (``lo <= a <= b < hi``). int64."""
    a, b, lo, hi = (np.asarray(x, dtype=np.int64) for x in (a, b, lo, hi))
    k = len(rows)
    out = np.zeros(a.size, dtype=np.int64)
    if a.size == 0 or k == 0:
        return out
    per = max(1, WINDOW_BUDGET // k)
    for s in range(0, a.size, per):
        sl = slice(s, s + per)
        out[sl] = k - _window_misses(rows, a[sl], b[sl] + 1, lo[sl], hi[sl])
    return out


def _window_misses(rows, a, b1, lo, hi) -> np.ndarray:
    """Rows that miss each window: a clear bit in ``[a, b1)`` or a set bit in ``[lo, a)``/``[b1, hi)``."""
    w0 = lo >> 6
    nw = ((hi - 1) >> 6) - w0 + 1
    bad = np.zeros((len(rows), a.size), dtype=np.uint64)
    sel = np.arange(a.size)
    j = 0
    while sel.size:
        if j and sel.size <= LONG_FEW:
            break
        w = w0[sel] + j
        base = w * 64
        run = _span(a[sel] - base, b1[sel] - base)
        window = _span(lo[sel] - base, hi[sel] - base)
        miss = (_columns(rows, w) ^ run) & window
        if j == 0:
            bad |= miss
        else:
            bad[:, sel] |= miss
        j += 1
        sel = sel[nw[sel] > j]
    for i in sel.tolist():                      # a few long windows, one at a time, from word j on
        w = np.arange(w0[i] + j, w0[i] + nw[i])
        base = w * 64
        miss = (_columns(rows, w) ^ _span(a[i] - base, b1[i] - base)) & _span(lo[i] - base, hi[i] - base)
        bad[:, i] |= np.bitwise_or.reduce(miss, axis=1)
    return np.count_nonzero(bad, axis=0)


# --- the cache --------------------------------------------------------------------------------------
class BitRowCache:
    """Bit rows of (key store, threshold key, cell), least recently used dropped first, at most
    ``budget`` bytes in all. Thread-safe; a row is packed outside the lock."""

    PACK_CELLS = 16             # cells compared and packed at once when they share a key

    def __init__(self, budget: int = CACHE_BYTES):
        self.budget = int(budget)
        self.nbytes = 0
        self.packed = 0                                   # rows packed so far (tests, benchmarks)
        self._rows: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self._tokens: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self._next_token = 0
        self._lock = threading.Lock()

    def _token(self, store) -> int:
        with self._lock:
            tok = self._tokens.get(store)
            if tok is None:
                tok = self._tokens[store] = self._next_token
                self._next_token += 1
            return tok

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self.nbytes = 0

    def _put(self, key: tuple, row: np.ndarray) -> None:
        if row.nbytes > self.budget:
            return
        with self._lock:
            if key in self._rows:
                return
            self._rows[key] = row
            self.nbytes += row.nbytes
            while self.nbytes > self.budget:
                _, old = self._rows.popitem(last=False)
                self.nbytes -= old.nbytes

    def rows(self, store, cells: np.ndarray, key_threshold) -> list[np.ndarray]:
        """The bit rows (read-only, ``n_words(T)`` words each) of ``cells`` of a cell-major key store
        (``keys_cells``, ``(D, T)``, with ``rows_at_least``), on where ``key >= key_threshold`` (one
        key, or one per cell of the store)."""
        cells = np.asarray(cells, dtype=np.int64)
        T = int(store.shape[1])
        tok = self._token(store)
        per_cell = np.ndim(key_threshold) > 0
        keys = [key_threshold[c] if per_cell else key_threshold for c in cells.tolist()]
        out: list = [None] * cells.size
        missing: list[int] = []
        with self._lock:
            for i, c in enumerate(cells.tolist()):
                row = self._rows.get((tok, int(keys[i]), c))
                if row is None:
                    missing.append(i)
                else:
                    self._rows.move_to_end((tok, int(keys[i]), c))
                    out[i] = row
        # Cells sharing a key are compared and packed a few at a time (fewer, larger NumPy calls).
        while missing:
            key = keys[missing[0]]
            group = [i for i in missing[:self.PACK_CELLS] if int(keys[i]) == int(key)]
            packed = pack_bits(store.rows_at_least(cells[group], key))
            for j, i in enumerate(group):
                row = out[i] = packed[j].copy()
                row.flags.writeable = False                    # shared by every query that asks
                self._put((tok, int(key), int(cells[i])), row)
            self.packed += len(group)
            taken = set(group)
            missing = [i for i in missing if i not in taken]
        return out


#: The process's cache (a Dask worker's too): every NumPy-backend query shares it.
BIT_ROWS = BitRowCache()


# --- what the NumPy backend passes between its steps ----------------------------------------------
#: Selected rows up to this many bytes are copied into one array (faster gathers); larger selections
#: (long timelines) use the cached rows in place, so a query never copies hundreds of MB.
STACK_BYTES = 64 * 2**20


@dataclass
class SelectedBits:
    """The selected cells' bit rows over ``T`` steps (a ``(k, W)`` array, or a list of the cache's
    rows when that would be large), and their count planes once made."""

    rows: np.ndarray | list
    T: int
    planes: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, rows: list, T: int) -> "SelectedBits":
        if not rows or len(rows) * rows[0].nbytes <= STACK_BYTES:
            return cls(np.stack(rows) if rows else np.zeros((0, n_words(T)), dtype=np.uint64), T)
        return cls(list(rows), T)

    @property
    def k(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        own = int(self.rows.nbytes) if isinstance(self.rows, np.ndarray) else 0
        return own + (int(self.planes.nbytes) if self.planes is not None else 0)

    def count_planes(self) -> np.ndarray:
        if self.planes is None:
            self.planes = bit_sliced_counts(self.rows)
        return self.planes


class StepCounts:
    """``n(t)`` of a selection, kept as its bit planes: ``max()`` and the per-word maxima come from the
    planes; the integers are made (``counts_from_planes``) only when something reads them (the Dask
    shards' summaries, tests), so a one-process query never unpacks the planes."""

    def __init__(self, selected: SelectedBits):
        self.selected = selected
        self._n: np.ndarray | None = None
        self._word_max: np.ndarray | None = None
        self.dtype = count_dtype(selected.k)
        self.shape = (selected.T,)

    def array(self) -> np.ndarray:
        if self._n is None:
            self._n = counts_from_planes(self.selected.count_planes(), self.selected.T, self.selected.k)
        return self._n

    def __array__(self, dtype=None, copy=None):
        return self.array() if dtype is None else self.array().astype(dtype)

    def __getitem__(self, index):
        return self.array()[index]

    def __len__(self) -> int:
        return self.selected.T

    @property
    def size(self) -> int:
        return self.selected.T

    @property
    def nbytes(self) -> int:
        return self.selected.T * self.dtype.itemsize

    def word_max(self) -> np.ndarray:
        if self._word_max is None:
            self._word_max = word_max(self.selected.count_planes())
        return self._word_max

    def max(self) -> int:
        return int(self.word_max().max()) if self.selected.T else 0


@dataclass
class LevelBits:
    """What ``level_runs`` needs to read runs of ``n >= m`` from the count planes: the planes, the
    sequence edges as bit rows, and each word's largest ``n`` (a level only visits words reaching it)."""

    planes: np.ndarray
    starts: np.ndarray        # bit row: sequence starts
    ends: np.ndarray          # bit row: sequence ends
    word_max: np.ndarray      # (W,) largest n(t) within each word

    @property
    def nbytes(self) -> int:
        return int(self.planes.nbytes + self.starts.nbytes + self.ends.nbytes + self.word_max.nbytes)


def level_bits(counts: StepCounts, bounds: np.ndarray) -> LevelBits:
    """``LevelBits`` of a selection's counts, for sequences starting at ``bounds[:-1]``."""
    bounds = np.asarray(bounds, dtype=np.int64)
    T = counts.selected.T
    return LevelBits(counts.selected.count_planes(), step_bits(bounds[:-1], T),
                     step_bits(bounds[1:] - 1, T), counts.word_max())


#: A level visits only the words that reach it when they are at most this share of all words.
SPARSE_SHARE = 0.5


def level_runs_from_bits(levels: LevelBits, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs ``[a, b]`` of ``n >= level``, cut at sequence edges (unfiltered by length)."""
    at = np.flatnonzero(levels.word_max >= level)
    if at.size > SPARSE_SHARE * levels.word_max.size:
        return run_bounds(at_least(levels.planes, level), levels.starts, levels.ends)
    return run_bounds(at_least(levels.planes[:, at], level), levels.starts[at], levels.ends[at], at)
