"""BED / narrowPeak / bigWig tracks, dense tracks, added states and every overview, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_matcher.cli import main
from gpu_matcher.engine import Engine
from gpu_matcher.errors import ProjectError
from gpu_matcher.genome import readers
from gpu_matcher.genome.tracks import add_bed, add_bigwig
from gpu_matcher.io.sources import add_dense_track, add_source
from gpu_matcher.overview import bin_edges
from gpu_matcher.project import open_project
from tests.genome.conftest import CONTIGS, random_intervals, write_bed


def brute_coverage(rows, genome) -> np.ndarray:
    cover = np.zeros(genome.T, dtype=np.int64)
    for name, a, b, *_ in rows:
        off = int(genome.starts[genome.index(name)])
        cover[off + a:off + b] += 1
    return cover


def brute_overview(values: np.ndarray, start: int, stop: int, bins: int):
    values = values.astype(np.float64)
    if stop - start < bins:
        picked = values[start + (np.arange(bins) * (stop - start)) // bins]
        return picked, picked
    edges = bin_edges(start, stop, bins)
    with np.errstate(all="ignore"):
        lo = [np.nanmin(values[a:b]) if np.isfinite(values[a:b]).any() else np.nan for a, b in zip(edges, edges[1:])]
        hi = [np.nanmax(values[a:b]) if np.isfinite(values[a:b]).any() else np.nan for a, b in zip(edges, edges[1:])]
    return np.array(lo), np.array(hi)


RANGES = [(0, None, 7), (3, 90, 11), (0, None, 1), (50, 60, 40), (170, 174, 3), (40, 140, 100)]


def _ranges(T):
    return [(a, T if b is None else b, bins) for a, b, bins in RANGES]


def test_bed_intervals_counted_and_overviewed(genome_project, tmp_path, capsys):
    rng = np.random.default_rng(7)
    rows = random_intervals(rng, CONTIGS, 60) + [("chr1", 5, 9, "dup", 1, "+")] * 3 + [("chrM", 0, 6, "all", 2, "-")]
    write_bed(tmp_path / "peaks.bed", rows)
    assert main(["add-bed", str(genome_project), "peaks", str(tmp_path / "peaks.bed")]) == 0
    assert capsys.readouterr().out.startswith(f"track peaks: {len(rows)} intervals (")
    project = open_project(genome_project)
    try:
        track = project.meta["peaks"]
        expected = brute_coverage(rows, project.genome)
        assert track.kind == "discrete"
        np.testing.assert_array_equal(track.values(0, project.T), expected)
        for a in range(0, project.T, 13):
            np.testing.assert_array_equal(track.values(a, a + 17), expected[a:a + 17])
        for start, stop, bins in _ranges(project.T):
            lo, hi = track.overview(start, stop, bins)
            want_lo, want_hi = brute_overview(expected, start, stop, bins)
            np.testing.assert_array_equal(lo, want_lo)
            np.testing.assert_array_equal(hi, want_hi)
        off = int(project.genome.starts[2])
        s, e, score = track.intervals(off + 2, off + 4)
        want = sorted((off + a, off + b, float(sc)) for n, a, b, _, sc, _ in rows if n == "chrM" and a < 4 and b > 2)
        assert sorted(zip(s.tolist(), e.tolist(), score.tolist())) == want and len(want) >= 1
        assert track.value_range == (0.0, float(expected.max()))
    finally:
        project.close()


def test_narrowpeak_score_and_summary(genome_project, tmp_path):
    write_bed(tmp_path / "x.narrowPeak", [("chr2", 0, 10, "a", 500, ".", 7.5, -1, 3.2, 4),
                                          ("chr2", 5, 20, "b", 100, ".", 2.0, -1, 1.0, 2)], header=False)
    done = add_bed(genome_project, "np", tmp_path / "x.narrowPeak", kind="narrowPeak")
    assert done == {"intervals": 2, "overlapping": 1, "max_depth": 2, "file": "tracks/np.intervals.h5"}
    project = open_project(genome_project)
    _, _, score = project.meta["np"].intervals(0, project.T)
    assert score.tolist() == [7.5, 2.0]
    project.close()


@pytest.mark.parametrize("rows, message", [
    ([("chrX", 0, 5), ("chr1", 0, 5), ("chrY", 1, 2), ("chrZ", 1, 2)], "contig(s) not in the genome: chrX, chrY, chrZ"),
    ([("chr1", 0, 5), ("chrM", 2, 9)], "data row 2 ends at chrM:9, past the contig's length 6"),
    ([("chr1", 8, 5)], "data row 1 has start 8, end 5"),
])
def test_bed_errors(genome_project, tmp_path, rows, message):
    write_bed(tmp_path / "bad.bed", rows)
    with pytest.raises(ProjectError) as err:
        add_bed(genome_project, "bad", tmp_path / "bad.bed")
    assert message in str(err.value) and str(tmp_path / "bad.bed") in str(err.value)
    assert "bad" not in open_project(genome_project).meta


def _write_bigwig(path, chroms, entries):
    pybigwig = pytest.importorskip("pyBigWig")
    bw = pybigwig.open(str(path), "w")
    bw.addHeader(list(chroms.items()), maxZooms=2)
    for name, start, values in entries:
        bw.addEntries(name, start, values=np.asarray(values, dtype=np.float64), span=1, step=1)
    bw.close()


def test_bigwig_values_and_overview(genome_project, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    chroms = {n: len(s) for n, s in CONTIGS.items() if n != "chrM"}
    v1 = rng.normal(size=chroms["chr1"])
    v2 = rng.normal(size=20)
    _write_bigwig(tmp_path / "sig.bw", chroms, [("chr1", 0, v1), ("chr2", 10, v2)])
    before = (tmp_path / "sig.bw").read_bytes()
    done = add_bigwig(genome_project, "signal", tmp_path / "sig.bw")
    assert done["file"] == "tracks/signal.bw" and (tmp_path / "sig.bw").read_bytes() == before
    project = open_project(genome_project)
    try:
        g = project.genome
        expected = np.full(project.T, np.nan)
        expected[:chroms["chr1"]] = v1
        off2 = int(g.starts[1])
        expected[off2 + 10:off2 + 30] = v2
        track = project.meta["signal"]
        np.testing.assert_allclose(track.values(0, project.T), expected.astype(np.float32), rtol=1e-6)
        for start, stop, bins in _ranges(project.T):
            lo, hi = track.overview(start, stop, bins)
            want_lo, want_hi = brute_overview(expected.astype(np.float32), start, stop, bins)
            np.testing.assert_allclose(lo, want_lo, rtol=1e-6)
            np.testing.assert_allclose(hi, want_hi, rtol=1e-6)
        monkeypatch.setattr(readers, "BIGWIG_EXACT_BASES", 0)     # the zoom-level path of long ranges
        lo, hi = track.overview(0, project.T, 9)
        assert np.nanmin(lo) == pytest.approx(np.nanmin(expected)) and np.nanmax(hi) == pytest.approx(np.nanmax(expected))
        assert np.isnan(lo[-1]) and np.all(np.nan_to_num(lo, nan=np.inf) <= np.nan_to_num(hi, nan=np.inf))
    finally:
        project.close()


def test_bigwig_from_another_assembly(genome_project, tmp_path):
    _write_bigwig(tmp_path / "hg.bw", {"chr1": 999, "chr2": len(CONTIGS["chr2"])}, [("chr1", 0, [1.0])])
    with pytest.raises(ProjectError, match=r"contig lengths differ from the genome's: chr1 \(999 vs 108\)"):
        add_bigwig(genome_project, "s", tmp_path / "hg.bw")
    _write_bigwig(tmp_path / "x.bw", {"chrQ": 10}, [("chrQ", 0, [1.0])])
    with pytest.raises(ProjectError, match="not in the genome: chrQ"):
        add_bigwig(genome_project, "s", tmp_path / "x.bw")


def test_added_states_dense_tracks_and_engine_overview(genome_project):
    T = open_project(genome_project).T
    rng = np.random.default_rng(5)
    states = rng.normal(size=(T, 9)).astype(np.float32)
    add_source(genome_project, "lstm", (states[i:i + 50] for i in range(0, T, 50)), layer=1)
    add_source(genome_project, "cnn", states * 3, transform="none", format="zarr", chunk_steps=16)
    pred = rng.random(T)
    add_dense_track(genome_project, "pred", pred, value_range=(0, 1))
    with pytest.raises(ProjectError, match="the blocks hold 10 steps, but the project has T="):
        add_source(genome_project, "short", [states[:10]])
    project = open_project(genome_project)
    try:
        assert list(project.sources) == ["states_lstm::lstm", "states_cnn::cnn"]
        np.testing.assert_array_equal(project.source("states_cnn::cnn").raw(0, T), states * 3)
        assert project.meta["pred"].value_range == (0.0, 1.0)
        engine = Engine(project, backend="numpy")
        cells = [0, 3, 4, 8]
        counts = engine.counts("states_lstm::lstm", cells, 0.2, 0, T)
        for start, stop, bins in _ranges(T):
            lo, hi = engine.overview("states_lstm::lstm", cells, 0.2, start, stop, bins)
            want = brute_overview(counts, start, stop, bins)
            np.testing.assert_array_equal(lo, want[0])
            np.testing.assert_array_equal(hi, want[1])
            lo, hi = project.meta["pred"].overview(start, stop, bins)
            want = brute_overview(pred.astype(np.float32), start, stop, bins)
            np.testing.assert_array_equal(lo, want[0])
            np.testing.assert_array_equal(hi, want[1])
    finally:
        project.close()


def test_dense_overview_reads_in_chunks(monkeypatch):
    from gpu_matcher import overview

    values = np.random.default_rng(2).random(10_000)
    seen = []

    def read(a, b):
        seen.append(b - a)
        return values[a:b]

    lo, hi = overview.reduce_dense(read, 0, 10_000, 37, chunk=999)
    assert max(seen) == 999
    want = brute_overview(values, 0, 10_000, 37)
    np.testing.assert_array_equal(lo, want[0])
    np.testing.assert_array_equal(hi, want[1])


def test_distinct_values_without_the_dense_timeline(genome_project, tmp_path, monkeypatch):
    """A discrete track's values that occur (the app's labels for it): an interval track's from its
    intervals (coincident edges jump the count by more than one), a dense track's chunk by chunk."""
    from bokeh_app.queries import track_labels

    rng = np.random.default_rng(11)
    rows = random_intervals(rng, CONTIGS, 12) + [("chr1", 5, 9, "dup", 1, "+")] * 3 + [("chr2", 3, 3, "empty", 0, "+")]
    write_bed(tmp_path / "peaks.bed", rows)
    add_bed(genome_project, "peaks", tmp_path / "peaks.bed")
    write_bed(tmp_path / "all.bed", [(name, 0, len(seq), "all", 0, "+") for name, seq in CONTIGS.items()] * 2)
    add_bed(genome_project, "all", tmp_path / "all.bed")
    T = open_project(genome_project).T
    dense = rng.integers(0, 5, size=T) * 2
    add_dense_track(genome_project, "calls", dense, kind="discrete")
    project = open_project(genome_project)
    try:
        peaks = project.meta["peaks"]
        want = np.unique(peaks.values(0, T))
        assert 3 in want.tolist() or 4 in want.tolist()
        assert project.meta["all"].distinct_values().tolist() == [2]
        assert project.meta["calls"].distinct_values(chunk=7).tolist() == np.unique(dense).tolist()
        reads = []
        monkeypatch.setattr(readers.IntervalTrack, "values", lambda self, a, b: reads.append((a, b)))
        np.testing.assert_array_equal(peaks.distinct_values(), want)
        assert track_labels(Engine(project, backend="numpy"), "peaks") == [str(v) for v in want]
        assert reads == []
    finally:
        project.close()
