"""The genome tracks as the loader opens them: :class:`IntervalTrack` (``type: intervals``, a BED /
narrowPeak file stored by ``gpu_matcher.genome.tracks.add_bed``) and :class:`BigWigTrack` (``type: bigwig``).

An interval track's value at a step is the number of intervals covering it; the intervals touching a
window are found with two binary searches (``start`` sorted, ``max_end`` its running maximum of ``end``).
A bigWig track is read on demand through pyBigWig (imported when first read); its overview comes from the
file's zoom levels (exact values for ranges up to ``BIGWIG_EXACT_BASES``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.genome import require
from gpu_matcher.genome.coords import Genome
from gpu_matcher.metatrack import MetaTrack
from gpu_matcher.overview import bin_edges, check_bins, reduce_steps, single_steps

#: A bigWig overview reads exact values (not the zoom levels) for ranges up to this many bases.
BIGWIG_EXACT_BASES = 1 << 20


@dataclass(eq=False)
class IntervalTrack(MetaTrack):
    """A BED/narrowPeak track: ``values`` is the number of intervals covering each step (int32)."""

    T: int = 0
    ends: Any = None
    max_ends: Any = None
    scores: Any = None
    _arrays: tuple | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(start, end, max_end, score)``, read once (24 bytes an interval)."""
        with self._lock:
            if self._arrays is None:
                self._arrays = tuple(np.asarray(d[()]) for d in (self.dataset, self.ends, self.max_ends,
                                                                  self.scores))
            return self._arrays

    def _touching(self, start: int, stop: int) -> np.ndarray:
        """Indices of the intervals that overlap ``[start, stop)``."""
        starts, ends, max_ends, _ = self.arrays()
        first = int(np.searchsorted(max_ends, start, side="right"))       # max_end > start from here on
        last = int(np.searchsorted(starts, stop, side="left"))
        idx = np.arange(first, max(first, last))
        return idx[ends[idx] > start]

    def intervals(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(start, end, score)`` of the intervals overlapping global steps ``[start, stop)``."""
        starts, ends, _, scores = self.arrays()
        idx = self._touching(int(start), int(stop))
        return starts[idx], ends[idx], scores[idx]

    def values(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, int(start)), min(self.T, int(stop))
        n = max(0, stop - start)
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        s, e, _ = self.intervals(start, stop)
        opened = np.bincount(np.clip(s - start, 0, n), minlength=n + 1)
        closed = np.bincount(np.clip(e - start, 0, n), minlength=n + 1)
        return np.cumsum(opened - closed)[:n].astype(np.int32)

    def weights_for(self, start: int, stop: int) -> None:
        return None

    def distinct_values(self, chunk: int | None = None) -> np.ndarray:
        """The covering counts that occur, from the intervals alone (a sweep over their edges: the count
        is constant between two consecutive edges), never the dense timeline."""
        starts, ends, _, _ = self.arrays()
        s, e = np.sort(starts), np.sort(ends)
        points = np.unique(np.concatenate([[0], s, e]))
        points = points[points < self.T]
        return np.unique(np.searchsorted(s, points, side="right") - np.searchsorted(e, points, side="right")
                         ).astype(np.int64)

    def overview(self, start: int, stop: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop, bins = check_bins(max(0, start), min(self.T, stop), bins)
        s, e, _ = self.intervals(start, stop)
        s, e = np.sort(np.clip(s, start, stop)), np.sort(np.clip(e, start, stop))
        points = np.unique(np.concatenate([[start], s, e[e < stop]]))
        depth = np.searchsorted(s, points, side="right") - np.searchsorted(e, points, side="right")
        return reduce_steps(points, depth, start, stop, bins)


@dataclass(eq=False)
class BigWigTrack(MetaTrack):
    """A bigWig track read on demand: ``values`` float32 (NaN where the file has no data)."""

    file_path: Path | None = None
    genome: Genome | None = None
    _handle: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _bw(self):
        if self._handle is None:
            self._handle = open_bigwig(self.file_path)
        return self._handle

    def values(self, start: int, stop: int) -> np.ndarray:
        assert self.genome is not None
        start, stop = max(0, int(start)), min(self.genome.T, int(stop))
        out = np.full(max(0, stop - start), np.nan, dtype=np.float32)
        with self._lock:
            bw = self._bw()
            chroms = bw.chroms()
            for piece in self.genome.pieces(start, stop):
                if piece.name in chroms:
                    got = bw.values(piece.name, piece.begin, piece.end, numpy=True)
                    out[piece.start - start:piece.start - start + got.size] = got
        return out

    def weights_for(self, start: int, stop: int) -> None:
        return None

    def overview(self, start: int, stop: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.genome is not None
        start, stop, bins = check_bins(max(0, start), min(self.genome.T, stop), bins)
        steps = single_steps(start, stop, bins)
        if steps is not None:
            picked = self.values(start, stop)[steps - start].astype(np.float64)
            return picked, picked.copy()
        edges = bin_edges(start, stop, bins)
        exact = stop - start <= BIGWIG_EXACT_BASES
        lo, hi = np.full(bins, np.nan), np.full(bins, np.nan)
        with self._lock:
            bw = self._bw()
            chroms = bw.chroms()

            def stats(piece_name: str, offset: int, a: int, b: int, first_bin: int, count: int) -> None:
                """Bins ``first_bin ..`` of global steps ``[a, b)`` of one contig (offset: its start)."""
                for kind, acc, pick in (("min", lo, np.fmin), ("max", hi, np.fmax)):
                    got = bw.stats(piece_name, a - offset, b - offset, type=kind, nBins=count, exact=exact)
                    values = np.array([np.nan if v is None else v for v in got], dtype=np.float64)
                    acc[first_bin:first_bin + count] = pick(acc[first_bin:first_bin + count], values)

            for piece in self.genome.pieces(start, stop):
                if piece.name not in chroms:
                    continue                            # a contig the file has no data for
                a, b = piece.start, piece.start + piece.end - piece.begin
                offset = piece.start - piece.begin
                if exact:                               # small: bin by bin, exact values
                    first = int(np.searchsorted(edges, a, side="right")) - 1
                    for i in range(first, bins):
                        if edges[i] >= b:
                            break
                        stats(piece.name, offset, max(a, int(edges[i])), min(b, int(edges[i + 1])), i, 1)
                    continue
                # Large: the bins wholly inside the contig in one call (libBigWig cuts [x, y) into k bins
                # at x + j*(y-x)//k, within a base of these edges; the zoom levels are coarser anyway),
                # the two bins cut by the contig's ends one by one.
                i0 = int(np.searchsorted(edges, a, side="left"))
                i1 = int(np.searchsorted(edges, b, side="right")) - 1
                if i1 < i0:                             # the contig lies inside one bin
                    stats(piece.name, offset, a, b, i0 - 1, 1)
                    continue
                if i1 > i0:
                    stats(piece.name, offset, int(edges[i0]), int(edges[i1]), i0, i1 - i0)
                if a < edges[i0]:
                    stats(piece.name, offset, a, int(edges[i0]), i0 - 1, 1)
                if edges[i1] < b:
                    stats(piece.name, offset, int(edges[i1]), b, i1, 1)
        return lo, hi

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def open_bigwig(path: Path):
    pybigwig = require("pyBigWig", "a bigWig track")
    try:
        handle = pybigwig.open(str(path))
    except RuntimeError:
        handle = None
    if handle is None or not handle.isBigWig():
        raise ProjectError(f"{path}: not a readable bigWig file")
    return handle


def load_track(name: str, entry: dict, kind_type: str, files, T: int, genome: Genome | None,
               config_path: Path, value_range) -> MetaTrack:
    """The loader's hook: the track of a ``type: intervals`` or ``type: bigwig`` meta entry."""
    where = f"meta.{name}"
    file_key = entry.get("file")
    if file_key is None:
        raise ProjectError(f"{config_path}: key {where}.file missing")
    if kind_type == "intervals":
        starts = files.dataset(str(file_key), "start", where)
        ends = files.dataset(str(file_key), "end", where)
        max_ends = files.dataset(str(file_key), "max_end", where)
        scores = files.dataset(str(file_key), "score", where)
        shapes = {d.shape for d in (starts, ends, max_ends, scores)}
        if len(shapes) != 1 or starts.ndim != 1:
            raise ProjectError(f"{files.path_of(str(file_key), where)}: start, end, max_end and score must be "
                               f"1-D of one length (shapes {sorted(shapes)}) ({where})")
        return IntervalTrack(name=name, kind="discrete", dataset=starts, ends=ends, max_ends=max_ends,
                             scores=scores, T=T, value_range=value_range)
    if genome is None:
        raise ProjectError(f"{config_path}: {where} is a bigwig track, which needs a 'genome' section "
                           "(contig names and lengths)")
    return BigWigTrack(name=name, kind="scalar", dataset=None, value_range=value_range,
                       file_path=files.path_of(str(file_key), where), genome=genome)
