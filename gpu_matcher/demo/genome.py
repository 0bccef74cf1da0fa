"""A seeded synthetic genome with planted binding sites: the genomic demo's data (the paper's section 6.3).

Three contigs (240,000 bases) drawn base by base with a GC content that changes every few kilobases,
runs of ``N`` (assembly gaps) and soft-masked (lower-case) stretches, as a real assembly has. Three
"proteins" bind IUPAC motifs, planted on both strands:

- ``ctcf``: ``CCGCGNGGNGGCAG`` (the 14-base CTCF core), a third of the sites with one mismatch;
- ``gata``: ``WGATAR`` (GATA factors);
- ``tata``: ``TATAWAWR`` (the TATA box).

The background is scrubbed of every exact occurrence of the motifs (either strand) outside the planted
sites, so the planted sites are the only places a protein binds: the ground truth (one BED file per
protein) is then something a model can learn exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_matcher.extract.dna import BASES, IUPAC

COMPLEMENT = str.maketrans("ACGTRYSWKMBDHVN", "TGCAYRSWMKVHDBN")
#: name -> IUPAC motif, in the order of the model's outputs.
PROTEINS = {"ctcf": "CCGCGNGGNGGCAG", "gata": "WGATAR", "tata": "TATAWAWR"}
#: Proteins whose sites may carry one mismatch (a long motif stays recognisable with one).
MISMATCH_RATE = {"ctcf": 1 / 3}
CONTIGS = (("chr1", 110_000), ("chr2", 80_000), ("chr3", 50_000))
SITE_EVERY = 1_200                      # one site per protein per this many bases, on average
MIN_GAP = 12                            # bases between two sites


@dataclass
class Site:
    contig: int
    start: int                          # 0-based, half open (BED)
    end: int
    protein: str
    strand: str


@dataclass
class SyntheticGenome:
    names: list[str]
    sequences: list[np.ndarray]         # uint8 ASCII codes, upper case
    masked: list[np.ndarray]            # bool: soft-masked (written in lower case)
    sites: list[Site]

    def labels(self, contig: int) -> np.ndarray:
        """``(length, n_proteins)`` 0/1 per base: inside a site of each protein (the model's target)."""
        out = np.zeros((len(self.sequences[contig]), len(PROTEINS)), dtype=np.float32)
        for s in self.sites:
            if s.contig == contig:
                out[s.start:s.end, list(PROTEINS).index(s.protein)] = 1
        return out

    def write_fasta(self, path: str | os.PathLike, width: int = 60) -> Path:
        path = Path(path)
        with open(path, "w") as fh:
            for name, seq, masked in zip(self.names, self.sequences, self.masked):
                text = np.where(masked & (seq != ord("N")), seq + 32, seq).astype(np.uint8).tobytes().decode()
                fh.write(f">{name}\n")
                fh.writelines(text[i:i + width] + "\n" for i in range(0, len(text), width))
        return path

    def write_bed(self, folder: str | os.PathLike) -> dict[str, Path]:
        """One BED6 file per protein (``<protein>.bed``, sorted), the ground truth."""
        folder = Path(folder)
        out = {}
        for protein in PROTEINS:
            sites = sorted((s for s in self.sites if s.protein == protein), key=lambda s: (s.contig, s.start))
            path = folder / f"{protein}.bed"
            path.write_text("".join(f"{self.names[s.contig]}\t{s.start}\t{s.end}\t{protein}\t1000\t{s.strand}\n"
                                    for s in sites))
            out[protein] = path
        return out


def motif_mask(motif: str) -> np.ndarray:
    """``(len(motif), 4)`` bool: the bases (A C G T) allowed at each position."""
    return np.array([[b in IUPAC[c] for b in BASES] for c in motif])


def reverse_complement(motif: str) -> str:
    return motif.translate(COMPLEMENT)[::-1]


def occurrences(seq: np.ndarray, motif: str) -> np.ndarray:
    """Start of every exact occurrence of ``motif`` (IUPAC) on either strand of ``seq`` (ASCII codes)."""
    codes = np.searchsorted(np.frombuffer(BASES.encode(), dtype=np.uint8), seq)
    codes = np.where(np.isin(seq, np.frombuffer(BASES.encode(), dtype=np.uint8)), codes, 4)
    L = len(motif)
    if len(seq) < L:
        return np.zeros(0, dtype=np.int64)
    found = np.zeros(len(seq) - L + 1, dtype=bool)
    for m in {motif, reverse_complement(motif)}:
        allowed = np.hstack([motif_mask(m), np.zeros((L, 1), dtype=bool)])   # code 4 (N) never fits
        hit = np.ones(len(seq) - L + 1, dtype=bool)
        for j in range(L):
            hit &= allowed[j][codes[j:len(seq) - L + 1 + j]]
        found |= hit
    return np.flatnonzero(found)


def _background(rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray]:
    seq = np.empty(length, dtype=np.uint8)
    at = 0
    while at < length:                                    # isochores: GC content changes every few kb
        n = min(length - at, int(rng.integers(2_000, 9_000)))
        gc = rng.uniform(0.35, 0.60)
        p = np.array([1 - gc, gc, gc, 1 - gc]) / 2
        seq[at:at + n] = np.frombuffer(BASES.encode(), dtype=np.uint8)[rng.choice(4, size=n, p=p)]
        at += n
    masked = np.zeros(length, dtype=bool)
    for _ in range(length // 15_000 + 1):                 # repeats, soft-masked
        a = int(rng.integers(0, length - 600))
        masked[a:a + int(rng.integers(100, 600))] = True
    for _ in range(length // 40_000 + 1):                 # assembly gaps
        a = int(rng.integers(1_000, length - 2_000))
        seq[a:a + int(rng.integers(50, 500))] = ord("N")
    return seq, masked


def _instance(rng: np.random.Generator, motif: str, mismatches: int) -> np.ndarray:
    bases = [IUPAC[c][int(rng.integers(len(IUPAC[c])))] for c in motif]
    fixed = [j for j, c in enumerate(motif) if len(IUPAC[c]) == 1]
    for j in rng.choice(fixed, size=mismatches, replace=False):
        bases[j] = BASES[(BASES.index(bases[j]) + int(rng.integers(1, 4))) % 4]
    return np.frombuffer("".join(bases).encode(), dtype=np.uint8)


def _scrub(rng: np.random.Generator, seq: np.ndarray, protected: np.ndarray) -> None:
    """Break every exact motif occurrence that is not inside a planted site (mutating one free base)."""
    for _ in range(20):
        changed = False
        for motif in PROTEINS.values():
            for start in occurrences(seq, motif):
                span = np.arange(start, start + len(motif))
                free = span[~protected[span]]
                if free.size == 0 or protected[span].all():
                    continue
                j = int(rng.choice(free))
                seq[j] = ord(BASES[(BASES.index(chr(seq[j])) + int(rng.integers(1, 4))) % 4])
                changed = True
        if not changed:
            return


def synthesize(seed: int, contigs: tuple[tuple[str, int], ...] = CONTIGS) -> SyntheticGenome:
    """The genome of ``seed``: same seed, same bases and sites."""
    rng = np.random.default_rng(seed)
    names, sequences, masks, sites = [], [], [], []
    for c, (name, length) in enumerate(contigs):
        seq, masked = _background(rng, length)
        taken = np.zeros(length, dtype=bool)
        taken[seq == ord("N")] = True
        protected = np.zeros(length, dtype=bool)
        for protein, motif in PROTEINS.items():
            L = len(motif)
            for _ in range(length // SITE_EVERY):
                for _attempt in range(50):
                    a = int(rng.integers(MIN_GAP, length - L - MIN_GAP))
                    if not taken[a - MIN_GAP:a + L + MIN_GAP].any():
                        break
                else:
                    continue
                strand = "+" if rng.random() < 0.5 else "-"
                mism = int(rng.random() < MISMATCH_RATE.get(protein, 0.0))
                inst = _instance(rng, motif if strand == "+" else reverse_complement(motif), mism)
                seq[a:a + L] = inst
                taken[a:a + L] = protected[a:a + L] = True
                sites.append(Site(c, a, a + L, protein, strand))
        # The planted sites' own neighbourhoods are scrubbed too, so a site never extends into a
        # second, accidental occurrence.
        _scrub(rng, seq, protected)
        names.append(name)
        sequences.append(seq)
        masks.append(masked)
    return SyntheticGenome(names, sequences, masks, sites)


def write_genome(genome: SyntheticGenome, folder: str | os.PathLike) -> tuple[Path, dict[str, Path]]:
    """``genome.fa`` and one ``<protein>.bed`` per protein into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return genome.write_fasta(folder / "genome.fa"), genome.write_bed(folder)
