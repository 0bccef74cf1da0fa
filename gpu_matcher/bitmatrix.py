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

``BitRowCache`` holds one ``(D, W)`` bit matrix per (key store, threshold key), least recently used
dropped first, so a threshold switched back to is as fast as a repeat; per-cell keys
(``gpu_matcher.scaling``) are one entry too. A row is packed when first asked for (about 1.4 ms per
cell at ``T = 10^6`` on a quiet 2-core VM): packing all ``D`` cells of a new threshold at once measured
0.9 s there, over the 0.5 s first-query budget, so only the rows queries ask for are made (the
verification over all ``D`` cells reads the row-major keys instead). The budget,
``LSTMVIS_BIT_CACHE_BYTES`` (default 512 MiB), counts packed rows: four thousand at ``T = 10^6``
(six full thresholds of a 650-cell source), four hundred at ``T = 10^7`` (two thresholds of a
163-cell selection). A Dask worker has its own.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from gpu_matcher import settings

#: Bytes of bit rows the process keeps (all sources, all thresholds together).
#: The budget of the process-wide cache, bytes; None: ``settings.bit_cache_bytes()`` (LSTMVIS_BIT_CACHE_BYTES).
CACHE_BYTES: int | None = None
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
@dataclass(frozen=True)
class RowSet:
    """Rows ``index`` of a bit matrix, read in place (a selection never copies its k rows whole)."""

    matrix: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.index.size)

    def columns(self, cols) -> np.ndarray:
        if isinstance(cols, slice):
            return self.matrix[self.index, cols]
        return self.matrix[self.index[:, None], np.asarray(cols)[None, :]]

    def array(self) -> np.ndarray:
        return self.matrix[self.index]


def _columns(rows, cols) -> np.ndarray:
    """``rows[:, cols]`` (a copy) of a ``(k, W)`` array or a ``RowSet`` (any index array or slice)."""
    if isinstance(rows, RowSet):
        return rows.columns(cols)
    return rows[:, cols].copy() if isinstance(cols, slice) else np.take(rows, cols, axis=1)


def bit_sliced_counts(rows) -> np.ndarray:
    """``(k, W)`` bit rows (an array or a ``RowSet``) -> ``(B, W)`` planes of ``n`` (B = k.bit_length()): bit ``b`` of ``n(t)`` is
    bit ``t`` of plane ``b``. A tree of carry-save adders: each full adder turns three rows of one weight
    into a sum row of that weight and a carry row of twice it, a few words at a time."""
    k, W = len(rows), int((rows.matrix if isinstance(rows, RowSet) else rows).shape[-1])
    B = max(1, int(k).bit_length())
    planes = np.zeros((B, W), dtype=np.uint64)
    for c0 in range(0, W, ADDER_BLOCK):
        c1 = min(W, c0 + ADDER_BLOCK)
        pending: list[list[np.ndarray]] = [[_columns(rows, slice(c0, c1))]] + [[] for _ in range(B)]
        for b in range(B):
            parts = pending[b]
            if not parts:
                continue
            x = parts[0] if len(parts) == 1 else np.concatenate(parts)     # a copy we may write
            while x.shape[0] > 2:
                third = x.shape[0] // 3
                p, q, r = x[:third], x[third:2 * third], x[2 * third:3 * third]
                pq = p ^ q
                np.bitwise_and(p, q, out=p)
                np.bitwise_xor(pq, r, out=q)                   # q: the sums
                np.bitwise_and(r, pq, out=r)
                np.bitwise_or(p, r, out=p)                     # p: the carries
                pending[b + 1].append(p)
                x = q if 3 * third == x.shape[0] else np.concatenate([q, x[3 * third:]])
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
class _Threshold:
    """One (key store, threshold) of the cache: a ``(D, W)`` bit matrix whose rows are packed when
    first asked for (untouched rows are never written, so they take no memory)."""

    def __init__(self, D: int, W: int):
        self.matrix = np.zeros((D, W), dtype=np.uint64)
        self.filled = np.zeros(D, dtype=bool)
        self.row_bytes = W * 8

    @property
    def nbytes(self) -> int:
        return int(self.filled.sum()) * self.row_bytes


class BitRowCache:
    """Bit matrices per (key store, threshold key), least recently used dropped first; their packed
    rows take at most ``budget`` bytes in all between queries (a query's own rows may exceed it while
    it runs, and are then not kept). Thread-safe."""

    PACK_CELLS = 16             # cells compared and packed at once when they share a key
    MAX_ENTRIES = 64            # thresholds kept at most, however few bytes they hold

    def __init__(self, budget: int | None = None):
        self._budget = budget
        self.packed = 0                                   # rows packed so far (tests, benchmarks)
        self._bytes = 0
        self._entries: "OrderedDict[tuple, _Threshold]" = OrderedDict()
        self._tokens: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self._next_token = 0
        self._lock = threading.RLock()

    @property
    def budget(self) -> int:
        """Given, or read at use: ``CACHE_BYTES``, else ``settings.bit_cache_bytes()``."""
        if self._budget is not None:
            return int(self._budget)
        return settings.bit_cache_bytes() if CACHE_BYTES is None else int(CACHE_BYTES)

    @budget.setter
    def budget(self, value: int) -> None:
        self._budget = value

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _token(self, store) -> int:
        tok = self._tokens.get(store)
        if tok is None:
            tok = self._tokens[store] = self._next_token
            self._next_token += 1
            weakref.finalize(store, self._forget, tok)    # a closed source's rows go with it
        return tok

    def _drop(self, name: tuple) -> None:
        self._bytes -= self._entries.pop(name).nbytes

    def _forget(self, tok: int) -> None:
        with self._lock:
            for name in [n for n in self._entries if n[0] == tok]:
                self._drop(name)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def rows(self, store, cells: np.ndarray, key_threshold) -> RowSet:
        """The bit rows of ``cells`` of a cell-major key store (``keys_cells``, ``(D, T)``, with
        ``rows_at_least``), on where ``key >= key_threshold`` (one key, or one per cell of the store)."""
        cells = np.asarray(cells, dtype=np.int64)
        D, T = (int(x) for x in store.shape)
        per_cell = np.ndim(key_threshold) > 0
        with self._lock:
            name = (self._token(store), np.asarray(key_threshold).tobytes() if per_cell else int(key_threshold))
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Threshold(D, n_words(T))
            self._entries.move_to_end(name)
            missing = np.unique(cells[~entry.filled[cells]])
            # Cells sharing a key are compared and packed a few at a time (fewer, larger NumPy calls).
            groups = ([missing[i:i + 1] for i in range(missing.size)] if per_cell else
                      [missing[i:i + self.PACK_CELLS] for i in range(0, missing.size, self.PACK_CELLS)])
            for group in groups:
                key = key_threshold[group[0]] if per_cell else key_threshold
                entry.matrix[group] = pack_bits(store.rows_at_least(group, key))
                entry.filled[group] = True
                self.packed += group.size
                self._bytes += group.size * entry.row_bytes
            while len(self._entries) > 1 and (self._bytes > self.budget
                                              or len(self._entries) > self.MAX_ENTRIES):
                self._drop(next(iter(self._entries)))
            if self._bytes > self.budget:                # this threshold alone: not kept
                self._drop(name)
            return RowSet(entry.matrix, cells)


#: The process's cache (a Dask worker's too): every NumPy-backend query shares it.
BIT_ROWS = BitRowCache()


# --- what the NumPy backend passes between its steps ----------------------------------------------
#: Selected rows up to this many bytes are copied into one ``(k, W)`` array (a query's many column
#: gathers are several times faster there); larger ones (long timelines) are read in place.
STACK_BYTES = 64 * 2**20


@dataclass
class SelectedBits:
    """The selected cells' bit rows over ``T`` steps (a ``(k, W)`` array, or a ``RowSet`` of the
    cache's matrix when a copy would be large), and their count planes once made."""

    rows: "RowSet | np.ndarray"
    T: int
    planes: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, rows: RowSet, T: int) -> "SelectedBits":
        small = len(rows) * n_words(T) * 8 <= STACK_BYTES
        return cls(rows.array() if small else rows, T)

    @property
    def k(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        own = int(self.rows.nbytes) if isinstance(self.rows, np.ndarray) else 0   # a RowSet: the cache's
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
