"""The `lstmvis info` / `lstmvis match` contract that other tools script against."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpu_matcher import open_project
from gpu_matcher.backends import cupy_unavailable_reason
from tests.conftest import GOLDEN, golden_queries, golden_sets

SETS = golden_sets()
pytestmark = pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")


def lstmvis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpu_matcher.cli", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)


def test_match_prints_the_documented_json():
    name = SETS[0]
    q = next(q for q in golden_queries(name) if q["sequences"] and q["distinct"] and q["phrase_length"] == 0)
    proc = lstmvis("match", str(GOLDEN / name / "project"), "--source", q["source"],
                   "--threshold", str(q["threshold"]), "--start", str(q["start"]), "--end", str(q["end"]),
                   "--left", str(q["left"]), "--right", str(q["right"]), "--top", str(q["top"]),
                   "--min-length", str(q["min_length"]), "--backend", "numpy", "--repeat", "3")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"cells", "matches", "backend", "timing_ms"}
    assert out["cells"] == q["expected_cells"]
    assert out["matches"] == q["expected"]
    assert out["backend"] == "numpy"
    assert out["timing_ms"]["first"] > 0 and out["timing_ms"]["median"] > 0


def test_match_with_cells_no_distinct_no_sequences():
    name = SETS[0]
    q = next(q for q in golden_queries(name) if not q["sequences"] and not q["distinct"])
    proc = lstmvis("match", str(GOLDEN / name / "project"), "--source", q["source"],
                   "--threshold", str(q["threshold"]), "--cells", ",".join(map(str, q["expected_cells"])),
                   "--left", str(q["left"]), "--right", str(q["right"]), "--top", str(q["top"]),
                   "--min-length", str(q["min_length"]), "--phrase-length", str(q["phrase_length"]),
                   "--no-distinct", "--no-sequences")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["matches"] == q["expected"]


@pytest.mark.parametrize("args,fragment", [
    (["--threshold", "0.3", "--cells", "1,999"], "cell 999 is out of range"),
    (["--threshold", "0.3", "--cells", "1,x"], "--cells '1,x'"),
    (["--threshold", "0.3", "--start", "5"], "--start and --end"),
    (["--threshold", "0.3", "--cells", "1", "--source", "states::nope"], "unknown source 'states::nope'"),
    (["--threshold", "0.3", "--cells", "1", "--backend", "cupy"], "--backend cupy"),
    (["--threshold", "abc", "--cells", "1"], "invalid float value"),
])
def test_match_errors_are_one_line_with_exit_code_2(args, fragment):
    if "cupy" in args and cupy_unavailable_reason() is None:
        pytest.skip("a CUDA device answers here, so --backend cupy is no error")
    proc = lstmvis("match", str(GOLDEN / SETS[0] / "project"), *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstmvis: error:"), proc.stderr
    assert fragment in lines[0]


def test_missing_project_is_one_line(tmp_path):
    proc = lstmvis("match", str(tmp_path), "--threshold", "0.3", "--cells", "1")
    assert proc.returncode == 2 and "no lstm.yml" in proc.stderr and "Traceback" not in proc.stderr


def test_info_lists_projects_sources_and_meta():
    proc = lstmvis("info", str(GOLDEN))
    assert proc.returncode == 0, proc.stderr
    for name in SETS:
        project = open_project(GOLDEN / name / "project")
        assert f"{name}/project:" in proc.stdout
        for source in project.sources.values():
            T, D = source.shape
            assert f"source {source.name}  (T, D) = ({T}, {D})" in proc.stdout
    assert "meta   pos  discrete" in proc.stdout
    js = json.loads(lstmvis("info", str(GOLDEN), "--json").stdout)
    assert {p["id"] for p in js} == {f"{n}/project" for n in SETS}


def test_match_does_not_import_bokeh():
    code = ("import sys; from gpu_matcher.cli import main; "
            f"rc = main(['match', r'{GOLDEN / SETS[0] / 'project'}', '--threshold', '0.3', '--cells', '1,2']); "
            "assert 'bokeh' not in sys.modules, 'bokeh imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
