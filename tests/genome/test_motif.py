"""Motif search against a brute-force regular expression over the decoded genome, on both strands."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from gpu_matcher.cli import main
from gpu_matcher.engine import Engine
from gpu_matcher.errors import ProjectError
from gpu_matcher.genome.fasta import convert_fasta
from gpu_matcher.genome.motif import find
from gpu_matcher.io.sources import add_source
from gpu_matcher.project import open_project
from tests.genome.conftest import write_fasta

#: The rule of gpu_matcher.genome.motif, written out as the genome letters each pattern letter accepts.
ACCEPTS = {"A": "A", "C": "C", "G": "G", "T": "T", "R": "AGR", "Y": "CTY", "S": "CGS", "W": "ATW",
           "K": "GTK", "M": "ACM", "B": "CGTYSKB", "D": "AGTRWKD", "H": "ACTYWMH", "V": "ACGRSMV",
           "N": "ACGTRYSWKMBDHVN"}
COMPLEMENT = str.maketrans("ACGTRYSWKMBDHVN", "TGCAYRSWMKVHDBN")


def brute(contigs: dict[str, str], pattern: str, strands: str) -> list[tuple[int, str]]:
    wanted = [("+", pattern)] if strands != "-" else []
    if strands != "+":
        wanted.append(("-", pattern.translate(COMPLEMENT)[::-1]))
    hits, offset = [], 0
    for seq in contigs.values():
        seq = seq.upper()
        for label, pat in wanted:
            regex = re.compile("(?=(" + "".join(f"[{ACCEPTS[c]}]" for c in pat) + "))")
            hits += [(offset + m.start(), label) for m in regex.finditer(seq)]
        offset += len(seq)
    return sorted(hits, key=lambda h: (h[0], h[1] == "-"))


@pytest.fixture(scope="module")
def random_genome(tmp_path_factory):
    rng = np.random.default_rng(11)
    letters = np.array(list("ACGT" * 12 + "acgt" * 3 + "NNRYSWKMBDHV"))
    contigs = {f"c{i}": "".join(rng.choice(letters, size=n)) for i, n in enumerate([3000, 17, 2500, 5])}
    folder = tmp_path_factory.mktemp("motif")
    write_fasta(folder / "r.fa", contigs, width=61)
    out = convert_fasta(folder / "r.fa", folder / "proj", progress=False, chunk=256)
    return contigs, out


@pytest.mark.parametrize("pattern", ["ACG", "TGCGCA", "GATA", "RYN", "CCNNGG", "WGATAR", "A", "ACGTACGTACGT"])
@pytest.mark.parametrize("strands", ["both", "+", "-"])
def test_find_matches_brute_force(random_genome, pattern, strands):
    contigs, folder = random_genome
    project = open_project(folder)
    try:
        for chunk in (64, 1 << 22):             # hits across chunk edges, never across contigs
            hits = find(project, pattern, strands=strands, chunk=chunk)
            assert list(zip(hits.starts.tolist(), hits.strands.tolist())) == brute(contigs, pattern, strands)
            assert hits.length == len(pattern)
    finally:
        project.close()


def test_limit_and_engine_search(random_genome):
    contigs, folder = random_genome
    project = open_project(folder)
    try:
        everything = brute(contigs, "GAT", "both")
        hits = find(project, "gat", limit=7, chunk=100)
        assert list(zip(hits.starts.tolist(), hits.strands.tolist())) == everything[:7]
        starts = Engine(project, backend="numpy").search("GAT")
        assert starts.tolist() == sorted({s for s, _ in everything})
        assert Engine(project, backend="numpy").search("GAT", limit=5).tolist() == starts[:5].tolist()
    finally:
        project.close()


def test_genome_n_matches_only_pattern_n(tmp_path):
    write_fasta(tmp_path / "n.fa", {"x": "ANNA", "y": "AR"})
    project = open_project(convert_fasta(tmp_path / "n.fa", tmp_path / "p", progress=False))
    try:
        assert find(project, "AA", strands="+").starts.tolist() == []
        assert find(project, "NN", strands="+").starts.tolist() == [0, 1, 2, 4]      # never across x/y
        assert find(project, "NA", strands="+").starts.tolist() == [2]
        assert find(project, "AN", strands="+").starts.tolist() == [0, 4]
        assert find(project, "AR", strands="+").starts.tolist() == [4]
        assert find(project, "AG", strands="+").starts.tolist() == []
        with pytest.raises(ProjectError, match=r"motif 'AXG': 'X' is not an IUPAC nucleotide code"):
            find(project, "AXG")
        with pytest.raises(ProjectError, match="strands"):
            find(project, "A", strands="up")
    finally:
        project.close()


def test_match_prints_coordinates(genome_project, capsys):
    project = open_project(genome_project)
    T = project.T
    project.close()
    states = np.random.default_rng(4).normal(size=(T, 6)).astype(np.float32)
    add_source(genome_project, "lstm", states)
    assert main(["match", str(genome_project), "--cells", "0,1", "--threshold", "0.2", "--top", "50",
                 "--backend", "numpy"]) == 0
    out = json.loads(capsys.readouterr().out)
    project = open_project(genome_project)
    assert out["matches"]
    for match in out["matches"]:
        assert match["coords"] == project.genome.format_range(match["start"], match["end"] + 1)
        name = match["coords"].split(":")[0]
        assert project.genome.span(name)[0] <= match["start"] <= match["end"] < project.genome.span(name)[1]
    project.close()


def test_match_region_is_a_coordinate(genome_project, capsys):
    project = open_project(genome_project)
    T, genome = project.T, project.genome
    project.close()
    add_source(genome_project, "lstm", np.random.default_rng(9).normal(size=(T, 6)).astype(np.float32))
    base = ["match", str(genome_project), "--threshold", "0", "--left", "0", "--right", "0", "--backend",
            "numpy", "--top", "5"]
    start, stop = genome.parse("chr2:3-4")
    runs = []
    for where in (["--region", "chr2:3-4"], ["--start", str(start), "--end", str(stop - 1)]):
        assert main(base + where) == 0
        out = json.loads(capsys.readouterr().out)
        runs.append((out["cells"], out["matches"]))
    assert runs[0][0] and runs[0] == runs[1]
    assert main(base + ["--region", "chr9:1-2"]) == 2
    assert "unknown contig 'chr9'" in capsys.readouterr().err
