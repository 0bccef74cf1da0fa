"""One-hot DNA and the sliding windows a sequence model of DNA is run in (no PyTorch here).

A genomic model sees a fixed window (DanQ: 1,000 bases), never a whole chromosome, so its states at a
base are those of the window around it. A contig is cut into windows of ``window`` bases every
``stride`` bases, and each window gives the states of its centre ``stride`` bases only (the first
window also its left edge, the last its right edge): every base is taken from exactly one window, the
one where it lies farthest from an edge, so each base has ``(window - stride) / 2`` bases of context
on both sides (except at a contig's ends). The same plan serves the NumPy demo and ``extract-genome``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.genome import motif

BASES = "ACGT"
#: IUPAC nucleotide codes -> the bases they stand for (from the motif search's bit masks; gap: none).
IUPAC = {code: "".join(b for i, b in enumerate(BASES) if mask >> i & 1) for code, mask in motif.IUPAC.items()}


@dataclass(frozen=True)
class Window:
    """Window ``[start, stop)`` of a contig; its states for ``[keep_start, keep_stop)`` are kept."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def one_hot_table(dictionary: Mapping[int, str]) -> np.ndarray:
    """``(max_id + 1, 4)`` float32: the A C G T columns of every token id of a bases dictionary.

    An IUPAC code shares its weight among its bases (``R`` = 0.5 A + 0.5 G, ``N`` = 0.25 each, as DanQ
    encodes N); a gap or an unknown token is all zeros.
    """
    table = np.zeros((max(dictionary, default=0) + 1, 4), dtype=np.float32)
    for token_id, token in dictionary.items():
        bases = IUPAC.get(str(token).upper(), "")
        for b in bases:
            table[token_id, BASES.index(b)] = 1.0 / len(bases)
    return table


def plan_windows(length: int, window: int, stride: int) -> list[Window]:
    """Windows over a contig of ``length`` bases; their kept ranges tile ``[0, length)`` in order."""
    if window < 1 or not 1 <= stride <= window:
        raise ProjectError(f"--window {window} --stride {stride}: need window >= 1 and 1 <= stride <= window")
    if length <= window:
        return [Window(0, length, 0, length)] if length else []
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    margin = (window - stride) // 2
    out, kept = [], 0
    for i, s in enumerate(starts):
        stop = length if i == len(starts) - 1 else s + margin + stride
        out.append(Window(s, s + window, kept, stop))
        kept = stop
    return out


def window_batches(bounds: np.ndarray, window: int, stride: int, batch: int | Callable[[], int]
                   ) -> Iterator[list[tuple[int, Window]]]:
    """Windows of every contig (``bounds``: contig starts with the total appended, global steps),
    in timeline order, in batches of at most ``batch`` windows of one length: ``(contig start, window)``.
    ``batch`` may be a function, asked as each batch fills (a size chosen after the first batch)."""
    size = batch if callable(batch) else lambda: batch
    group: list[tuple[int, Window]] = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for w in plan_windows(int(hi - lo), window, stride):
            if group and (len(group) >= size() or w.stop - w.start != group[0][1].stop - group[0][1].start):
                yield group
                group = []
            group.append((int(lo), w))
    if group:
        yield group


def one_hot_windows(ids_of, table: np.ndarray, group: list[tuple[int, Window]]) -> np.ndarray:
    """``(B, L, 4)`` float32 one-hot input of a batch of windows; ``ids_of(start, stop)`` reads base ids."""
    ids = np.empty((len(group), group[0][1].stop - group[0][1].start), dtype=np.int64)
    b = 0
    while b < len(group):                         # one read per contig's run of overlapping windows
        lo, first = group[b]
        end = b
        while end + 1 < len(group) and group[end + 1][0] == lo:
            end += 1
        span = np.asarray(ids_of(lo + first.start, lo + group[end][1].stop), dtype=np.int64)
        for k in range(b, end + 1):
            w = group[k][1]
            ids[k] = span[w.start - first.start:w.stop - first.start]
        b = end + 1
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
        raise ProjectError(f"base id {int(ids.max())} is not in the bases dictionary ({len(table)} ids)")
    return table[ids]


def kept_rows(group: list[tuple[int, Window]], values: np.ndarray) -> np.ndarray:
    """The kept steps of a batch's per-window ``(B, L, ...)`` values, concatenated in timeline order."""
    return np.concatenate([values[b, w.keep_start - w.start:w.keep_stop - w.start]
                           for b, (_, w) in enumerate(group)])


@dataclass
class Timeline:
    """A project's bases: ``ids(start, stop)`` reads base ids, ``table`` maps them to one-hot rows,
    ``bounds`` are the contig starts with ``T`` appended."""

    ids: object
    table: np.ndarray
    bounds: np.ndarray

    @property
    def T(self) -> int:
        return int(self.bounds[-1])


def read_timeline(folder) -> Timeline:
    """The timeline of the project in ``folder`` (a ``convert-fasta`` genome: no states needed).
    The files stay open for the life of the returned reader."""
    from pathlib import Path

    from gpu_matcher.formats import CONFIG_NAME, load_config, read_dictionary
    from gpu_matcher.project import DataFiles

    config_path = Path(folder) / CONFIG_NAME
    config = load_config(config_path)
    files = DataFiles(Path(folder), dict(config.get("files") or {}), config_path)
    ws = config.get("word_sequence") or {}
    if not ws.get("file") or not ws.get("path") or not ws.get("dict_file"):
        raise ProjectError(f"{config_path}: no word_sequence with a dict_file; convert the genome with "
                           "lstmvis convert-fasta first")
    words = files.dataset(str(ws["file"]), str(ws["path"]), "word_sequence")
    T = int(words.shape[0])
    seq = config.get("sequences") or {}
    starts = np.zeros(1, dtype=np.int64)
    if seq.get("file") and seq.get("path"):
        starts = np.asarray(files.dataset(str(seq["file"]), str(seq["path"]), "sequences")[()], dtype=np.int64)
    bounds = np.unique(np.concatenate([[0], starts, [T]]))
    table = one_hot_table(read_dictionary(files.path_of(str(ws["dict_file"]), "word_sequence.dict_file")))
    return Timeline(ids=lambda a, b: np.asarray(words[a:b]), table=table, bounds=bounds)
