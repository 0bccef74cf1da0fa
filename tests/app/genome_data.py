"""A small genome project for the app tests (issue 15): three contigs from a FASTA (``convert_fasta``),
a CNN-like ReLU source whose first cells fire over a planted motif, the planted sites as a BED track and
a dense prediction track."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CONTIG_LENGTHS = {"chr1": 3000, "chr2": 5000, "chr3": 2000}
MOTIF = "CACGTG"
SITES = {"chr2": list(range(300, 4800, 450)), "chr1": [1000, 2000]}     # 0-based starts in each contig


def make_genome_project(root: Path) -> Path:
    from gpu_matcher.genome.fasta import convert_fasta
    from gpu_matcher.genome.tracks import add_bed
    from gpu_matcher.io.sources import add_dense_track, add_source

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(15)
    seqs = {name: np.array(list("ACGT"))[rng.integers(0, 4, n)] for name, n in CONTIG_LENGTHS.items()}
    for name, starts in SITES.items():
        for a in starts:
            seqs[name][a:a + len(MOTIF)] = list(MOTIF)
    fasta = root / "toy.fa"
    with open(fasta, "w") as fh:
        for name, seq in seqs.items():
            fh.write(f">{name}\n")
            text = "".join(seq)
            for i in range(0, len(text), 60):
                fh.write(text[i:i + 60] + "\n")
    folder = convert_fasta(fasta, root / "genome", progress=False)
    T = sum(CONTIG_LENGTHS.values())
    offsets = dict(zip(CONTIG_LENGTHS, np.cumsum([0] + list(CONTIG_LENGTHS.values()))[:-1]))
    site = np.zeros(T, np.float32)
    for name, starts in SITES.items():
        for a in starts:
            site[offsets[name] + a: offsets[name] + a + len(MOTIF)] = 1.0
    states = np.maximum(0.0, rng.normal(0.0, 1.0, (T, 16))).astype(np.float32)
    states[:, :4] += 6.0 * site[:, None]                  # cells 0-3: the motif detector, values up to ~9
    add_source(folder, "cnn", states, transform="none", type="output")
    bed = root / "sites.bed"
    bed.write_text("".join(f"{name}\t{a}\t{a + len(MOTIF)}\tsite\n" for name, starts in SITES.items() for a in starts))
    add_bed(folder, "sites", bed)
    add_dense_track(folder, "pred", np.clip(site + rng.normal(0, 0.1, T), 0, 1).astype(np.float32))
    add_signal(folder, rng)
    return folder


def add_signal(folder: Path, rng: np.random.Generator) -> None:
    """``signal``: a bigWig over chr2's first 2,000 bases only (the rest has no data: NaN), values 0..50
    (when pyBigWig, of the ``genomics`` extra, is there)."""
    try:
        import pyBigWig
    except ImportError:
        return
    from gpu_matcher.genome.tracks import add_bigwig

    path = folder.parent / "signal.bw"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(CONTIG_LENGTHS.items()), maxZooms=2)
    bw.addEntries("chr2", 0, values=(rng.random(2000) * 50).astype(np.float64), span=1, step=1)
    bw.close()
    add_bigwig(folder, "signal", path)
