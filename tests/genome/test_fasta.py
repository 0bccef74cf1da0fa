"""convert-fasta: the bases as a timeline, streamed; the user's FASTA folder untouched."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from gpu_matcher.cli import main
from gpu_matcher.errors import ProjectError
from gpu_matcher.genome.fasta import convert_fasta
from gpu_matcher.project import open_project
from tests.genome.conftest import CONTIGS, write_fasta


def _listing(folder):
    return sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())


@pytest.mark.parametrize("fmt, chunk, slice_bases", [("h5", 1 << 22, 1 << 22), ("zarr", 16, 5), ("h5", 8, 3)])
def test_bases_contigs_and_soft_mask(tmp_path, fasta_dir, fmt, chunk, slice_bases):
    before = _listing(fasta_dir)
    out = convert_fasta(fasta_dir / "toy.fa", tmp_path / "out", format=fmt, chunk=chunk, progress=False,
                        slice_bases=slice_bases)
    assert _listing(fasta_dir) == before                       # no .fai written beside the FASTA
    project = open_project(out)
    try:
        expected = "".join(CONTIGS.values()).upper()
        assert project.T == len(expected)
        assert "".join(project.tokens(0, project.T)) == expected
        assert project.sources == {}
        genome = project.genome
        assert genome.names == tuple(CONTIGS)
        assert project.sequence_starts.tolist() == genome.starts.tolist()
        assert project.config["genome"]["soft_masked"] == sum(c.islower() for s in CONTIGS.values() for c in s)
        assert (out / f"genome.{'zarr' if fmt == 'zarr' else 'h5'}").exists()
        with pytest.raises(ProjectError, match="no states yet"):
            project.default_source
    finally:
        project.close()


def test_larger_than_a_slice_is_streamed(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    seq = "".join(rng.choice(list("ACGTN"), size=5000))
    write_fasta(tmp_path / "big.fa", {"c1": seq, "c2": seq[::-1]}, width=60)
    import gpu_matcher.genome.fasta as fasta

    longest = []
    real = fasta._encode
    monkeypatch.setattr(fasta, "_encode", lambda text, *a: longest.append(len(text)) or real(text, *a))
    out = convert_fasta(tmp_path / "big.fa", tmp_path / "out", progress=False, slice_bases=1000, chunk=700)
    assert max(longest) == 1000 and len(longest) == 10
    project = open_project(out)
    assert "".join(project.tokens(4990, 5010)) == seq[4990:] + seq[::-1][:10]
    project.close()


def test_fresh_index_beside_the_fasta_is_used_not_rewritten(tmp_path, fasta_dir):
    import pyfaidx

    pyfaidx.Faidx(str(fasta_dir / "toy.fa")).close()           # the user's own index
    before = _listing(fasta_dir)
    convert_fasta(fasta_dir / "toy.fa", tmp_path / "out", progress=False)
    assert _listing(fasta_dir) == before


def test_unknown_letter_names_file_contig_position(tmp_path):
    write_fasta(tmp_path / "bad.fa", {"good": "ACGT", "bad": "ACGTAXGT"}, width=3)
    with pytest.raises(ProjectError) as err:
        convert_fasta(tmp_path / "bad.fa", tmp_path / "out", progress=False)
    assert str(err.value) == (f"{tmp_path / 'bad.fa'}: contig 'bad' position 6 holds 'X', which is not a "
                              "nucleotide code (ACGTNRYSWKMBDHV-, upper or lower case)")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_malformed_fasta_and_output_checks(tmp_path, fasta_dir):
    (tmp_path / "ragged.fa").write_text(">a\nACGT\nAC\nACGT\n")
    with pytest.raises(ProjectError, match="ragged.fa: not a readable FASTA"):
        convert_fasta(tmp_path / "ragged.fa", tmp_path / "o1", progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(ProjectError, match="--overwrite"):
        convert_fasta(fasta_dir / "toy.fa", tmp_path / "full", progress=False)
    assert (tmp_path / "full" / "x").read_text() == "keep"


def test_cli_convert_and_missing_extra(tmp_path, fasta_dir, capsys, monkeypatch):
    assert main(["convert-fasta", str(fasta_dir / "toy.fa"), str(tmp_path / "out"), "--quiet"]) == 0
    said = capsys.readouterr().out
    total = sum(map(len, CONTIGS.values()))
    assert f"{total:,} bases in 3 contigs" in said and "soft-masked" in said
    monkeypatch.setitem(sys.modules, "pyfaidx", None)          # as if the extra were not installed
    assert main(["convert-fasta", str(fasta_dir / "toy.fa"), str(tmp_path / "out2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'lstmvis-gpu[genomics]'" in err


def test_loader_checks_the_genome_section(genome_project):
    sizes = genome_project / "genome.chrom.sizes"
    text = sizes.read_text()
    sizes.write_text(text.replace("chrM\t6", "chrM\t7"))
    with pytest.raises(ProjectError, match=r"genome.chrom.sizes: the contig lengths sum to"):
        open_project(genome_project)
    lines = text.splitlines()
    sizes.write_text("\n".join([lines[1], lines[0], lines[2]]) + "\n")        # order swapped
    with pytest.raises(ProjectError, match="each contig must be one sequence, in the same order"):
        open_project(genome_project)
    os.remove(sizes)
    with pytest.raises(ProjectError, match="cannot read chrom sizes"):
        open_project(genome_project)


def test_gzip_fasta_is_one_line_error(tmp_path):
    import gzip

    with gzip.open(tmp_path / "g.fa.gz", "wt") as fh:
        fh.write(">a\nACGT\n")
    with pytest.raises(ProjectError) as err:
        convert_fasta(tmp_path / "g.fa.gz", tmp_path / "out", progress=False)
    assert str(err.value).startswith(f"{tmp_path / 'g.fa.gz'}: ") and "\n" not in str(err.value)
