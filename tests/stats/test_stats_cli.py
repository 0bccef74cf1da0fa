"""`lstmvis stats | suggest | compare`: one JSON object each, equal to gpu_matcher.stats; user errors in one line."""

from __future__ import annotations

import json

import pytest

from gpu_matcher import Engine, open_project, stats
from gpu_matcher.cli import main
from tests.conftest import GOLDEN

PROJECT = GOLDEN / "basic" / "project"
pytestmark = pytest.mark.skipif(not PROJECT.is_dir(), reason="golden sets not present")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stats_prints_enrichment_and_detector(capsys):
    engine = Engine(open_project(PROJECT), backend="numpy")
    source = engine.project.default_source
    sel = engine.select(source, 5, 7, 0.2)
    assert sel.cells
    label = engine.project.meta["pos"].label(int(stats.track_values(engine, "pos")[5]))
    code, out, _ = run(capsys, "stats", str(PROJECT), "--threshold", "0.2", "--start", "5", "--end", "7",
                       "--track", "pos", "--label", label, "--curve", "--backend", "numpy")
    assert code == 0
    got = json.loads(out)
    matches = engine.match(source, sel.cells, 0.2)
    assert got["cells"] == sel.cells and got["matches"] == len(matches)
    assert got["enrichment"] == json.loads(json.dumps(stats.enrichment(engine, source, matches, "pos").as_dict()))
    det = stats.detector(engine, source, sel.cells, 0.2, "pos", label)
    assert got["detector"]["f1"] == det.f1 and got["detector"]["true_positives"] == det.true_positives
    assert len(got["curve"]) == 41


def test_suggest_and_compare(capsys):
    engine = Engine(open_project(PROJECT), backend="numpy")
    sources = list(engine.project.sources)
    code, out, _ = run(capsys, "suggest", str(PROJECT), "--threshold", "0.2", "--start", "5", "--end", "7",
                       "--top", "3", "--backend", "numpy")
    assert code == 0
    assert [c["cell"] for c in json.loads(out)["cells"]] == \
        [r.cell for r in stats.suggest_cells(engine, sources[0], 0.2, 5, 7, top=3)]
    code, out, _ = run(capsys, "compare", str(PROJECT), "--source", sources[0], "--other-source", sources[-1],
                       "--threshold", "0.2", "--start", "5", "--end", "7", "--track", "pos", "--backend", "numpy")
    assert code == 0
    want = stats.compare(engine, sources[0], engine, sources[-1], 5, 7, 0.2, track="pos").as_dict()
    assert json.loads(out) == json.loads(json.dumps(want))


def test_user_errors_are_one_line(capsys):
    code, _, err = run(capsys, "suggest", str(PROJECT), "--threshold", "0.2")
    assert code == 2 and err.strip() == "lstmvis: error: give either --start and --end (a range) or --track and --label"
    code, _, err = run(capsys, "stats", str(PROJECT), "--threshold", "0.2", "--start", "5", "--end", "7",
                       "--track", "nope")
    assert code == 2 and "unknown meta track 'nope'" in err and "Traceback" not in err


def test_stats_carries_the_scale(capsys):
    engine = Engine(open_project(PROJECT), backend="numpy")
    source = engine.project.default_source
    sel = engine.select(source, 5, 7, 0.5, scale="zscore")
    if not sel.cells:
        pytest.skip("the scenario selects nothing")
    label = engine.project.meta["pos"].label(int(stats.track_values(engine, "pos")[5]))
    code, out, _ = run(capsys, "stats", str(PROJECT), "--threshold", "0.5", "--start", "5", "--end", "7",
                       "--track", "pos", "--label", label, "--scale", "zscore", "--backend", "numpy")
    got = json.loads(out)
    assert code == 0 and got["cells"] == sel.cells and got["scale"] == "zscore"
    det = stats.detector(engine, source, sel.cells, 0.5, "pos", label, scale="zscore")
    assert got["detector"]["true_positives"] == det.true_positives
