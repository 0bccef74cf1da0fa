"""IUPAC-aware motif search over a genome project's bases, on one or both strands, streamed chunk by chunk.

The rule: every letter stands for a set of bases (A, C, G, T; R = A/G, Y = C/T, ..., N = any). A genome
letter matches a pattern letter when its set is non-empty and inside the pattern letter's set: ``A``
matches pattern ``R`` or ``N``; a genome ``R`` matches pattern ``R``, ``D``, ``V`` or ``N`` but not ``A``
(the genome does not say it is an A); a genome ``N`` matches only pattern ``N``; the gap ``-`` matches
nothing. A ``-`` strand hit is a match of the pattern's reverse complement, reported at its leftmost base
(as BED does); a palindromic pattern (its own reverse complement) hits both strands at the same starts. Hits never cross a contig (sequence) boundary. The words are read ``chunk`` bases at a time
(plus the pattern's length of overlap), so the whole timeline is never in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpu_matcher.errors import ProjectError

#: Base sets as bit masks: A=1, C=2, G=4, T=8.
IUPAC = {"A": 1, "C": 2, "G": 4, "T": 8, "U": 8, "R": 5, "Y": 10, "S": 6, "W": 9, "K": 12, "M": 3,
         "B": 14, "D": 13, "H": 11, "V": 7, "N": 15, "-": 0}
#: Bases read per chunk.
MOTIF_CHUNK = 1 << 22
#: Longest pattern accepted.
MAX_PATTERN = 1000
STRANDS = ("both", "+", "-")


@dataclass(frozen=True)
class MotifHits:
    """Hits sorted by start (``+`` before ``-`` at one start): ``starts`` global steps of the leftmost
    base, ``strands`` ``'+'`` / ``'-'``; each hit covers ``[start, start + length)``."""

    starts: np.ndarray
    strands: np.ndarray
    length: int

    def __len__(self) -> int:
        return int(self.starts.size)


def _complement(mask: int) -> int:
    return ((mask & 1) << 3) | ((mask & 8) >> 3) | ((mask & 2) << 1) | ((mask & 4) >> 1)


def pattern_masks(pattern: str) -> list[int]:
    """The base set of every letter of ``pattern`` (IUPAC, any case); a ProjectError naming a bad letter."""
    text = "".join(str(pattern).split()).upper()
    if not text:
        raise ProjectError("motif: the pattern is empty")
    if len(text) > MAX_PATTERN:
        raise ProjectError(f"motif: the pattern has {len(text)} letters; at most {MAX_PATTERN}")
    bad = [c for c in text if c not in IUPAC or c == "-"]
    if bad:
        raise ProjectError(f"motif {pattern!r}: {bad[0]!r} is not an IUPAC nucleotide code "
                           "(A C G T U R Y S W K M B D H V N)")
    return [IUPAC[c] for c in text]


def reverse_complement(masks: list[int]) -> list[int]:
    return [_complement(m) for m in reversed(masks)]


def _id_masks(dictionary: dict[int, str]) -> np.ndarray:
    """Base set of every word id of the dictionary, and one more entry (0) that ids outside it map to."""
    size = max(dictionary, default=0) + 2
    masks = np.zeros(size, dtype=np.uint8)
    for idx, token in dictionary.items():
        masks[idx] = IUPAC.get(str(token).upper(), 0) if len(str(token)) == 1 else 0
    return masks


def _matches_at(words: np.ndarray, tables: list[np.ndarray], count: int) -> np.ndarray:
    """Offsets ``j < count`` where every ``tables[k][words[j + k]]`` holds."""
    ok = tables[0][words[:count]]
    for k in range(1, len(tables)):
        ok &= tables[k][words[k:k + count]]
    return np.flatnonzero(ok)


def find(project, pattern: str, *, strands: str = "both", limit: int | None = None,
         chunk: int = MOTIF_CHUNK) -> MotifHits:
    """Every occurrence of ``pattern`` in the project's bases (see the module docstring for the rule),
    sorted by start; with ``limit``, the first ``limit`` of them (reading stops there)."""
    if strands not in STRANDS:
        raise ProjectError(f"motif: strands {strands!r}; expected one of {STRANDS}")
    if project.word_ids_dataset is None or not project.dictionary:
        raise ProjectError(f"{project.path}: the project has no bases (word_sequence) to search")
    masks = pattern_masks(pattern)
    length = len(masks)
    id_masks = _id_masks(project.dictionary)
    inside = (id_masks != 0)
    wanted = {"+": [masks], "-": [reverse_complement(masks)], "both": [masks, reverse_complement(masks)]}[strands]
    tables = [[inside & ((id_masks & ~np.uint8(m)) == 0) for m in want] for want in wanted]
    labels = {"+": ["+"], "-": ["-"], "both": ["+", "-"]}[strands]
    chunk = max(1, int(chunk))
    found_starts, found_strands, total = [], [], 0
    bounds = project.sequence_bounds(True)
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        for a in range(lo, hi - length + 1, chunk):
            count = min(chunk, hi - length + 1 - a)
            words = project.word_ids(a, a + count + length - 1)
            words = np.where((words >= 0) & (words < id_masks.size), words, id_masks.size - 1)
            part_starts, part_strands = [], []
            for table, label in zip(tables, labels):
                hits = _matches_at(words, table, count) + a
                part_starts.append(hits)
                part_strands.append(np.full(hits.size, label))
            starts = np.concatenate(part_starts)
            if starts.size:
                order = np.lexsort((np.concatenate(part_strands) == "-", starts))
                found_starts.append(starts[order])
                found_strands.append(np.concatenate(part_strands)[order])
                total += starts.size
            if limit is not None and total >= limit:
                break
        if limit is not None and total >= limit:
            break
    starts = np.concatenate(found_starts) if found_starts else np.zeros(0, dtype=np.int64)
    strand_arr = np.concatenate(found_strands) if found_strands else np.zeros(0, dtype="<U1")
    if limit is not None:
        starts, strand_arr = starts[:limit], strand_arr[:limit]
    return MotifHits(starts=starts.astype(np.int64), strands=strand_arr.astype("<U1"), length=length)
