"""Genome test helpers: FASTA, BED and bigWig files written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyfaidx")
pytest.importorskip("bioframe")

#: Contigs of the small test genome: soft-masked runs, N runs and IUPAC codes.
CONTIGS = {
    "chr1": "ACGTacgtNNNNACGTRYSWKMBDHVACGTTTGACA" * 3,
    "chr2": "ggggCCCCAAAATTTTNNNN" + "ACGT" * 10,
    "chrM": "TTAGGG",
}


def write_fasta(path: Path, contigs: dict[str, str], width: int = 7) -> Path:
    """A FASTA with lines of ``width`` bases (so slices cross line ends)."""
    with open(path, "w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name} test contig\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i:i + width] + "\n")
    return path


def write_bed(path: Path, rows: list[tuple], header: bool = True) -> Path:
    lines = ["track name=test", "# a comment"] if header else []
    lines += ["\t".join(str(x) for x in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def random_intervals(rng: np.random.Generator, contigs: dict[str, str], n: int) -> list[tuple]:
    names = list(contigs)
    rows = []
    for _ in range(n):
        name = names[rng.integers(len(names))]
        length = len(contigs[name])
        a = int(rng.integers(0, length))
        b = int(rng.integers(a, min(length, a + 25) + 1))
        rows.append((name, a, b, f"p{len(rows)}", int(rng.integers(0, 1000)), "+"))
    return rows


@pytest.fixture
def fasta_dir(tmp_path) -> Path:
    folder = tmp_path / "fasta"
    folder.mkdir()
    write_fasta(folder / "toy.fa", CONTIGS)
    return folder


@pytest.fixture
def genome_project(tmp_path, fasta_dir) -> Path:
    from gpu_matcher.genome.fasta import convert_fasta

    return convert_fasta(fasta_dir / "toy.fa", tmp_path / "proj", progress=False)
