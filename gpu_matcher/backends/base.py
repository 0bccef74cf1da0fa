"""The backend interface: what every implementation of the exact match offers, and what it declares.

Faiss's shape (``faiss/Index.h``, ``faiss/IndexShards.h``): one small interface, ``Backend``, with
``prepare`` (a source's layout, typed per backend) and ``match`` (the exact answer of
``../shared/MATCHING.md``); optional abilities are *declared* (``capabilities``, Captum's
``has_convergence_delta()``), never guessed from a class name. Implementations:

- ``gpu_matcher.backends.search.SearchBackend``: the exact search, written once against array primitives;
  ``NumpyBackend`` (host arrays, memory maps) and ``CupyBackend`` (CUDA kernels) supply the primitives.
- ``gpu_matcher.sharded.ShardedBackend``: a composite of per-shard backends (in this process, or on Dask
  workers: ``gpu_matcher.backends.dask``).

Also here: the bit-packing helpers the primitives share, and the cell-list check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from enum import Enum
from typing import Generic, Sequence, TypeVar

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.query import Key, MatchQuery, MatchRow
from gpu_matcher.source import Source, concat_ranges, float_keys

__all__ = ["Backend", "Capability", "MatchQuery", "MatchRow", "Key", "LayoutT", "check_cells",
           "word_dtype", "pack_rows", "pack_bits_rows", "segment_reduce", "batches"]

LayoutT = TypeVar("LayoutT")


class Capability(str, Enum):
    """Optional abilities a backend declares (``Backend.capabilities``); the engine asks these, never a
    backend's name."""

    #: ``MatchQuery.key_threshold`` may be one key per cell (a ``(D,)`` array: per-cell scales).
    PER_CELL_KEYS = "per_cell_keys"
    #: Answers sources larger than its memory by streaming their keys in chunks.
    STREAMING = "streaming"
    #: Runs the statistics' whole-corpus scans (``SearchBackend.cell_on_counts``, ``all_on_counts``,
    #: ``span_patterns``: suggest, the detector curve, the phrase map) over its own layout; a backend
    #: without it has them answered by NumPy over the host layout. Their ``target`` may be a
    #: ``gpu_matcher.targets.Target`` (a label or a range, read where the steps are) or a ``(T,)`` bool array.
    CORPUS_SCANS = "corpus_scans"
    #: Runs ``level_histograms`` (the "at least m of k" grid's scan, ``gpu_matcher.hypotheses``) over its own
    #: layout; without it the NumPy backend answers it over the host layout.
    LEVEL_HISTOGRAMS = "level_histograms"
    #: Answers ``count_overview`` (n(t)'s per-bin min/max over a long range, ``Engine.overview``) from its
    #: own layout, reading only the selected cells; without it the engine reads all D cells of each row.
    COUNT_OVERVIEW = "count_overview"


class Backend(ABC, Generic[LayoutT]):
    """One implementation of the exact match. ``LayoutT``: what ``prepare`` returns for a source."""

    name: str = "backend"
    #: What this backend can do beyond the required methods (``Capability``).
    capabilities: frozenset[Capability] = frozenset()

    @abstractmethod
    def prepare(self, source: Source) -> LayoutT:
        """The source's layout for this backend (built or loaded once; the engine keeps it)."""

    @abstractmethod
    def match(self, layout: LayoutT, query: MatchQuery) -> list[MatchRow]:
        """The exact ranked rows of MATCHING.md for ``query`` over ``layout``."""

    def supports(self, ability: Capability) -> bool:
        """Whether this backend declares ``ability``."""
        return ability in self.capabilities

    @property
    def lock(self) -> AbstractContextManager:
        """Held around calls into this backend from several threads (a device is one stream of work);
        a backend whose calls are thread-safe returns a no-op."""
        return nullcontext()

    def row_keys(self, layout: LayoutT, source: Source, start: int, stop: int) -> np.ndarray:
        """Host keys ``(stop - start, D)`` of steps ``[start, stop)`` of the source behind ``layout``
        (a backend whose layout holds them on the host reads them from there)."""
        return float_keys(source.raw(start, stop))

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release what the backend holds beyond its layouts (a cluster client, ...)."""


def word_dtype(k: int) -> np.dtype:
    """The narrowest unsigned word holding min(k, 64) bits (narrow words make reductions cheaper)."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if k <= np.dtype(dt).itemsize * 8:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def pack_rows(rows, k: int, T: int) -> np.ndarray:
    """``k`` boolean rows of length ``T`` (any iterable, consumed once, in order) -> ``(T, W)`` words of
    ``word_dtype(k)``: bit j % 64 of word j // 64 is row j. Eight rows are combined into one byte
    column at a time, so each row is read once and no (k, T) array needs to exist."""
    dtype = word_dtype(k)
    W = -(-k // 64)
    out = np.zeros((T, dtype.itemsize * W), dtype=np.uint8)       # little-endian bytes of the words
    byte = np.empty(T, dtype=np.uint8)
    tmp = np.empty(T, dtype=np.uint8)
    j = -1
    for j, row in enumerate(rows):
        bit = j % 8
        if bit == 0:
            np.copyto(byte, np.asarray(row, dtype=bool).view(np.uint8))
        else:
            np.left_shift(np.asarray(row, dtype=bool).view(np.uint8), bit, out=tmp)
            np.bitwise_or(byte, tmp, out=byte)
        if bit == 7 or j == k - 1:
            out[:, j // 8] = byte
    if j != k - 1:
        raise ValueError(f"pack_rows: {j + 1} rows given, {k} expected")
    return out.view(dtype.newbyteorder("<")).astype(dtype, copy=False)


def pack_bits_rows(on: np.ndarray) -> np.ndarray:
    """``(R, C)`` bool -> ``(R, ceil(C / 64))`` uint64, bit ``c % 64`` of word ``c // 64`` = column c."""
    packed = np.packbits(on, axis=1, bitorder="little")
    width = -(-on.shape[1] // 64) * 8
    if packed.shape[1] != width:
        packed = np.concatenate(
            [packed, np.zeros((packed.shape[0], width - packed.shape[1]), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


def segment_reduce(op, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``op``-reduce ``rows[starts[i]:ends[i]]`` for every i (any order, overlaps allowed); an empty
    segment gives 0. ``ends`` may equal ``len(rows)``."""
    out = np.zeros((starts.size,) + rows.shape[1:], dtype=rows.dtype)
    length = ends - starts
    full = length > 0
    if not full.any():
        return out
    s, n = starts[full], length[full]
    longest = int(n.max())
    if longest <= 4:
        # Short segments (margins, short runs): a few gathers, no index arrays.
        acc = rows[s]
        for j in range(1, longest):
            more = np.flatnonzero(n > j)
            acc[more] = op(acc[more], rows[s[more] + j])
        out[full] = acc
        return out
    total = int(n.sum())
    if total <= rows.shape[0] // 8:
        # Few rows: gather them back to back, so the reduction touches only those rows.
        offsets = np.cumsum(n) - n
        out[full] = op.reduceat(rows[concat_ranges(s, n)], offsets, axis=0)
        return out
    # Most rows: reduce in place; reduceat also reduces the gaps between segments (discarded).
    idx = np.empty(2 * s.size, dtype=np.int64)
    idx[0::2], idx[1::2] = s, s + n
    if idx[-1] == rows.shape[0]:
        idx = idx[:-1]                         # the last segment runs to the end anyway
    if idx.size and idx.max() >= rows.shape[0]:
        rows = np.concatenate([rows, np.zeros((1,) + rows.shape[1:], dtype=rows.dtype)])
    out[full] = op.reduceat(rows, idx, axis=0)[0::2]
    return out


def batches(length: np.ndarray, row_budget: int) -> list[slice]:
    """Split candidates so that each batch gathers at most ~row_budget rows."""
    csum = np.cumsum(length)
    out, lo = [], 0
    while lo < length.size:
        base = csum[lo - 1] if lo else 0
        hi = int(np.searchsorted(csum, base + row_budget, side="right"))
        hi = max(hi, lo + 1)
        out.append(slice(lo, hi))
        lo = hi
    return out


def check_cells(cells: Sequence[int], D: int, where: str) -> np.ndarray:
    """The sorted distinct cells of a cell list; a ProjectError naming ``where`` if it is empty or a cell
    is out of ``[0, D)``."""
    arr = np.asarray(list(cells), dtype=np.int64)
    if arr.size == 0:
        raise ProjectError(f"{where}: the cell set is empty; matching needs at least one cell")
    bad = arr[(arr < 0) | (arr >= D)]
    if bad.size:
        raise ProjectError(f"{where}: cell {int(bad[0])} is out of range [0, {D})")
    return np.unique(arr)
