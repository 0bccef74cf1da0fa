"""Genome tracks: BED / narrowPeak intervals and bigWig signal (docs/genomics.md).

Interval tracks are stored as ``tracks/<name>.intervals.h5``: global ``start``/``end`` (int64, sorted by
start), ``max_end`` (the running maximum of ``end``, so the intervals touching a window are found with two
binary searches however they overlap) and ``score`` (float32: the BED score column, narrowPeak's
signalValue, 1 when the file has none). A step's value is the number of intervals covering it, so
overlapping intervals are counted, never lost. A bigWig file is placed in the project folder (hard link,
else copy) and read on demand through pyBigWig; its overview comes from the file's zoom levels.

Both are :class:`gpu_matcher.project.MetaTrack` subclasses the loader makes for ``type: intervals`` and
``type: bigwig`` entries. Adding them needs the ``genomics`` extra (bioframe / pyBigWig); reading an
interval track needs only h5py.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, load_config
from gpu_matcher.genome import require
from gpu_matcher.genome.coords import Genome
from gpu_matcher.io.sources import remove_path
from gpu_matcher.io.tracks import NAME_PATTERN, RESERVED_NAMES, update_config
from gpu_matcher.overview import reduce_steps, check_bins, single_steps, bin_edges
from gpu_matcher.project import MetaTrack

TRACKS_DIR = "tracks"
BED_KINDS = {"bed": "bed", "narrowPeak": "narrowPeak", "narrowpeak": "narrowPeak"}
#: A bigWig overview reads exact values (not the zoom levels) for ranges up to this many bases.
BIGWIG_EXACT_BASES = 1 << 20
HEADER_PREFIXES = ("track", "browser", "#")


# --- the tracks, as the loader opens them ---------------------------------------------------------
@dataclass
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

    def overview(self, start: int, stop: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop, bins = check_bins(max(0, start), min(self.T, stop), bins)
        s, e, _ = self.intervals(start, stop)
        s, e = np.sort(np.clip(s, start, stop)), np.sort(np.clip(e, start, stop))
        points = np.unique(np.concatenate([[start], s, e[e < stop]]))
        depth = np.searchsorted(s, points, side="right") - np.searchsorted(e, points, side="right")
        return reduce_steps(points, depth, start, stop, bins)


@dataclass
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
            for b in range(bins):
                for piece in self.genome.pieces(int(edges[b]), int(edges[b + 1])):
                    if piece.name not in chroms:
                        continue                       # a contig the file has no data for
                    for kind, acc, pick in (("min", lo, np.fmin), ("max", hi, np.fmax)):
                        got = bw.stats(piece.name, piece.begin, piece.end, type=kind, exact=exact)[0]
                        if got is not None:
                            acc[b] = pick(acc[b], got)
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


# --- adding tracks ----------------------------------------------------------------------------------
def _project_genome(folder: Path) -> Genome:
    from gpu_matcher.project import open_project

    project = open_project(folder)
    try:
        genome = Genome.of(project)
    finally:
        project.close()
    if genome is None:
        raise ProjectError(f"{folder / CONFIG_NAME}: not a genome project (no 'genome' section); "
                           "write one with lstmvis convert-fasta")
    return genome


def _check_track_name(folder: Path, name: str, overwrite: bool) -> str:
    name = str(name)
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        raise ProjectError(f"track name {name!r}: use letters, digits, '_', '.' and '-' only")
    meta = load_config(folder / CONFIG_NAME).get("meta") or {}
    if name in meta and not overwrite:
        raise ProjectError(f"{folder / CONFIG_NAME}: meta track {name!r} exists; pass overwrite (--overwrite)")
    return name


def _header_rows(path: Path) -> int:
    """Leading ``track`` / ``browser`` / ``#`` lines of a BED file (bioframe would read them as rows)."""
    count = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip() and not line.startswith(HEADER_PREFIXES):
                    break
                count += 1
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read ({exc.strerror})") from None
    return count


def read_intervals(path: str | os.PathLike, genome: Genome, kind: str = "bed") -> dict[str, np.ndarray]:
    """Global ``start``, ``end``, ``score`` of a BED / narrowPeak file, sorted by start (then end), and
    ``max_end``; contig names and ends checked against ``genome``."""
    bioframe = require("bioframe", "add-bed")
    path = Path(path)
    schema = BED_KINDS.get(kind)
    if schema is None:
        raise ProjectError(f"{path}: kind {kind!r}; expected 'bed' or 'narrowPeak'")
    if not path.is_file():
        raise ProjectError(f"{path}: file missing")
    try:
        frame = bioframe.read_table(str(path), schema=schema, skiprows=_header_rows(path), comment="#")
    except Exception as exc:  # pandas raises several types for a malformed table
        raise ProjectError(f"{path}: not a readable {schema} file ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:160]})") from None
    if frame.empty:
        raise ProjectError(f"{path}: no intervals")
    for column in ("chrom", "start", "end"):
        missing = np.flatnonzero(frame[column].isna().to_numpy())
        if missing.size:
            raise ProjectError(f"{path}: data row {int(missing[0]) + 1} has no {column} "
                               f"(a {schema} line is chrom, start, end, ... separated by tabs)")
    begin = frame["start"].to_numpy(dtype=np.float64)
    end = frame["end"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero((begin != np.round(begin)) | (begin < 0) | (end < begin))
    if bad.size:
        i = int(bad[0])
        raise ProjectError(f"{path}: data row {i + 1} has start {begin[i]:g}, end {end[i]:g}; expected whole "
                           "numbers with 0 <= start <= end")
    chrom = frame["chrom"].astype(str).to_numpy()
    global_start = genome.to_global(chrom, begin.astype(np.int64), str(path))
    lengths = genome.lengths[np.searchsorted(genome.starts, global_start, side="right") - 1]
    past = np.flatnonzero(end.astype(np.int64) > lengths)
    if past.size:
        i = int(past[0])
        raise ProjectError(f"{path}: data row {i + 1} ends at {chrom[i]}:{int(end[i]):,}, past the contig's "
                           f"length {int(lengths[i]):,}")
    global_end = global_start + (end - begin).astype(np.int64)
    score_column = "fc" if schema == "narrowPeak" else "score"
    score = frame[score_column].to_numpy(dtype=np.float64, na_value=np.nan) if score_column in frame else \
        np.ones(len(frame))
    score = np.where(np.isnan(score), 1.0, score).astype(np.float32)
    order = np.lexsort((global_end, global_start))
    out = {"start": global_start[order], "end": global_end[order], "score": score[order]}
    out["max_end"] = np.maximum.accumulate(out["end"])
    return out


def _max_depth(starts: np.ndarray, ends: np.ndarray) -> int:
    """The most intervals covering any one step."""
    events = np.concatenate([starts, ends])
    delta = np.concatenate([np.ones(starts.size, np.int64), -np.ones(ends.size, np.int64)])
    order = np.lexsort((delta, events))                  # at one position, ends (-1) before starts
    return int(np.cumsum(delta[order]).max(initial=0))


def add_bed(project_dir: str | os.PathLike, name: str, path: str | os.PathLike, *, kind: str = "bed",
            overwrite: bool = False) -> dict:
    """Add a BED / narrowPeak file as interval track ``name``; returns ``{intervals, overlapping,
    max_depth, file}`` (``overlapping``: intervals overlapping an earlier one, all kept and counted)."""
    folder = Path(project_dir)
    name = _check_track_name(folder, name, overwrite)
    genome = _project_genome(folder)
    arrays = read_intervals(path, genome, kind)
    depth = _max_depth(arrays["start"], arrays["end"])
    previous_end = np.concatenate([[-1], arrays["max_end"][:-1]])
    overlapping = int(np.count_nonzero(arrays["start"] < previous_end))
    rel = f"{TRACKS_DIR}/{name}.intervals.h5"
    (folder / TRACKS_DIR).mkdir(exist_ok=True)
    tmp = folder / (rel + ".tmp")
    with h5py.File(tmp, "w") as handle:
        for key, values in arrays.items():
            handle.create_dataset(key, data=values, chunks=(max(1, min(values.size, 1 << 16)),))
        handle.attrs["source_file"] = Path(path).name
        handle.attrs["kind"] = BED_KINDS[kind]
    entry = {"type": "intervals", "file": f"track_{name}",
             "vis": {"type": "discrete", "range": [0, max(1, depth)]}}
    _register(folder, name, entry, rel, tmp)
    return {"intervals": int(arrays["start"].size), "overlapping": overlapping, "max_depth": depth,
            "file": rel}


def add_bigwig(project_dir: str | os.PathLike, name: str, path: str | os.PathLike, *,
               overwrite: bool = False) -> dict:
    """Add a bigWig file as scalar track ``name``: its contigs and lengths are checked against the
    genome, and the file is hard-linked (else copied) into ``tracks/`` unless it already lies in the
    project folder. Returns ``{contigs, file, range}``."""
    folder = Path(project_dir)
    name = _check_track_name(folder, name, overwrite)
    genome = _project_genome(folder)
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: file missing")
    bw = open_bigwig(path)
    try:
        chroms = dict(bw.chroms())
        header = bw.header()
    finally:
        bw.close()
    genome.to_global(list(chroms), np.zeros(len(chroms), dtype=np.int64), str(path))   # names known
    wrong = [f"{c} ({n:,} vs {int(genome.lengths[genome.index(c)]):,})" for c, n in chroms.items()
             if n != int(genome.lengths[genome.index(c)])]
    if wrong:
        raise ProjectError(f"{path}: contig lengths differ from the genome's: {', '.join(wrong[:5])}; "
                           "was the file made for another assembly?")
    root = folder.resolve()
    if path.resolve().is_relative_to(root):
        rel, tmp = path.resolve().relative_to(root).as_posix(), None
    else:
        rel = f"{TRACKS_DIR}/{name}{path.suffix or '.bw'}"
        (folder / TRACKS_DIR).mkdir(exist_ok=True)
        tmp = folder / (rel + ".tmp")
        remove_path(tmp)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
    lo, hi = float(header.get("minVal", 0.0)), float(header.get("maxVal", 1.0))
    entry = {"type": "bigwig", "file": f"track_{name}",
             "vis": {"type": "scalar", "range": [lo, hi if hi > lo else lo + 1]}}
    _register(folder, name, entry, rel, tmp)
    return {"contigs": len(chroms), "file": rel, "range": entry["vis"]["range"]}


def _register(folder: Path, name: str, entry: dict, rel: str, tmp: Path | None) -> None:
    """Move ``tmp`` to ``rel`` and name it in lstm.yml (``files`` and ``meta``) in one locked update."""
    file_key = entry["file"]

    def change(config: dict) -> None:
        files = config.setdefault("files", {})
        if files.get(file_key, rel) != rel and name not in (config.get("meta") or {}):
            raise ProjectError(f"{folder / CONFIG_NAME}: files key {file_key!r} already names {files[file_key]!r}")
        files[file_key] = rel
        meta = config.get("meta") or {}
        meta[name] = entry
        config["meta"] = meta
        if tmp is not None:
            os.replace(tmp, folder / rel)

    try:
        update_config(folder, change)
    finally:
        if tmp is not None:
            remove_path(tmp)
