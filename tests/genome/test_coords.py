"""Genomic coordinates: format / parse round trips and the errors a user sees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gpu_matcher.errors import ProjectError
from gpu_matcher.genome.coords import Genome

GENOME = Genome(["chr1", "chr2", "chrUn_KI270302v1", "chrM"], [2_500_000, 1_000, 7, 16_569])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, GENOME.T - 1))
def test_format_parse_round_trip(step):
    text = GENOME.format(step)
    assert GENOME.parse(text) == (step, step + 1)
    i, name, offset = GENOME.contig_of(step)
    assert text == f"{name}:{offset + 1:,}"
    assert GENOME.parse(text.replace(",", "")) == (step, step + 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, GENOME.T - 1), st.integers(1, 5000))
def test_range_round_trip(start, width):
    i, name, offset = GENOME.contig_of(start)
    stop = min(start + width, int(GENOME.starts[i] + GENOME.lengths[i]))
    text = GENOME.format_range(start, stop)
    assert GENOME.parse(text) == (start, stop)


def test_parse_forms():
    assert GENOME.parse("chr2") == (2_500_000, 2_501_000)
    assert GENOME.parse("chr1:1,234,567") == (1_234_566, 1_234_567)
    assert GENOME.parse("chr2:1-1000") == (2_500_000, 2_501_000)
    assert GENOME.parse(" 1234 ") == (1234, 1235)
    assert GENOME.parse("10-19") == (10, 20)
    assert GENOME.format_range(2_499_990, 2_500_010) == "chr1:2,499,991-chr2:10"
    assert GENOME.span("chrM") == (GENOME.T - 16_569, GENOME.T)


@pytest.mark.parametrize("text, words", [
    ("chr9:100", ["'chr9:100'", "unknown contig 'chr9'", "chr1"]),
    ("chr2:1,001", ["past the end of chr2", "1,000"]),
    ("chr2:0", ["1-based"]),
    ("chr2:50-10", ["ordered"]),
    ("chr2:abc", ["not a number"]),
    (f"{GENOME.T}", ["inside the genome"]),
    ("hello", ["not a coordinate"]),
])
def test_parse_errors(text, words):
    with pytest.raises(ProjectError) as err:
        GENOME.parse(text)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_pieces_split_at_contig_edges():
    pieces = list(GENOME.pieces(2_499_998, 2_501_003))
    assert [(p.name, p.begin, p.end, p.start) for p in pieces] == [
        ("chr1", 2_499_998, 2_500_000, 2_499_998), ("chr2", 0, 1000, 2_500_000),
        ("chrUn_KI270302v1", 0, 3, 2_501_000)]


def test_to_global_lists_unknown_names():
    with pytest.raises(ProjectError, match="chrX, chrY"):
        GENOME.to_global(["chr1", "chrX", "chrY"], np.zeros(3, dtype=np.int64), "peaks.bed")
    assert GENOME.to_global(["chr2", "chr1"], np.array([5, 6]), "x").tolist() == [2_500_005, 6]


def test_bad_chrom_sizes(tmp_path):
    path = tmp_path / "g.chrom.sizes"
    path.write_text("chr1\t10\nchr1\t5\n")
    with pytest.raises(ProjectError, match="appears twice"):
        Genome.read(path)
    path.write_text("chr1\tten\n")
    with pytest.raises(ProjectError, match=r"g.chrom.sizes:1: length 'ten'"):
        Genome.read(path)
