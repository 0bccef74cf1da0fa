"""Zarr v3 sources: convert-zarr, loading through the same lstm.yml keys, exact answers, reads that
touch only the chunks they need, and layout caches that notice a rewritten chunk."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr", minversion="3", reason="Zarr sources need zarr >= 3 (the dask extra)")

from gpu_matcher import Engine, ProjectError, open_project  # noqa: E402
from gpu_matcher.io.zarr_convert import convert_project_to_zarr  # noqa: E402
from gpu_matcher.storage import ZarrDataset  # noqa: E402
from tests.conftest import GOLDEN, golden_queries, golden_sets  # noqa: E402
from tests.dask.common import write_project  # noqa: E402

SETS = golden_sets()
pytestmark = pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def zarr_golden(tmp_path_factory):
    out = tmp_path_factory.mktemp("zarr-golden")
    for name in SETS:
        convert_project_to_zarr(GOLDEN / name / "project", out / name, chunk_steps=64, progress=False)
    return out


@pytest.mark.parametrize("name", SETS)
def test_converted_project_gives_the_golden_answers(zarr_golden, name):
    project = open_project(zarr_golden / name)
    src = next(iter(project.sources.values()))
    assert isinstance(src.dataset, ZarrDataset) and src.dataset.chunks[0] == 64
    original = open_project(GOLDEN / name / "project")
    assert project.summary()["sources"] == original.summary()["sources"]     # float16 stays float16
    assert project.tokens(0, 50) == original.tokens(0, 50)
    assert np.array_equal(project.sequence_bounds(), original.sequence_bounds())
    engine = Engine(project, backend="numpy")
    for q in golden_queries(name):
        sel = engine.select(q["source"], q["start"], q["end"], q["threshold"], q["left"], q["right"],
                            sequences=q["sequences"])
        assert sel.cells == q["expected_cells"]
        got = engine.match(q["source"], q["expected_cells"], q["threshold"], q["left"], q["right"],
                           top=q["top"], min_length=q["min_length"], phrase_length=q["phrase_length"],
                           distinct=q["distinct"], sequences=q["sequences"])
        assert [m.as_dict() for m in got] == q["expected"]


def test_convert_never_touches_the_original(tmp_path):
    name = SETS[0]
    src = tmp_path / "orig"
    import shutil

    shutil.copytree(GOLDEN / name / "project", src)
    before = _digest(src)
    convert_project_to_zarr(src, tmp_path / "z", chunk_steps=100, progress=False)
    assert _digest(src) == before
    with pytest.raises(ProjectError, match="not empty"):
        convert_project_to_zarr(src, tmp_path / "z", progress=False)
    with pytest.raises(ProjectError, match="outside the project"):
        convert_project_to_zarr(src, src / "inside", progress=False)
    assert not (tmp_path / "z.partial").exists()


def test_select_and_context_read_only_the_chunks_they_need(zarr_golden, tmp_path):
    """Chunks far from the window are replaced by garbage: a read that touched them would fail."""
    import shutil

    name = SETS[0]
    folder = tmp_path / "p"
    shutil.copytree(zarr_golden / name, folder)
    q = golden_queries(name)[0]
    project = open_project(folder)
    src = project.source(q["source"])
    path = src.dataset.path
    window = (q["start"] - q["left"] - 2, q["end"] + q["right"] + 2)
    keep = set(range(window[0] // 64, window[1] // 64 + 1))
    chunk_dir = folder / "states.zarr" / path / "c"
    spoiled = 0
    for chunk in chunk_dir.iterdir():
        if int(chunk.name) not in keep:
            for f in chunk.rglob("*"):
                if f.is_file():
                    f.write_bytes(b"not a zstd frame")
                    spoiled += 1
    assert spoiled > 10
    project = open_project(folder)
    engine = Engine(project, backend="numpy")
    sel = engine.select(q["source"], q["start"], q["end"], q["threshold"], q["left"], q["right"],
                        sequences=q["sequences"])
    assert sel.cells == q["expected_cells"]
    ctx = engine.context(q["source"], q["start"] - 1, q["end"] + 2, sel.cells, q["threshold"])
    assert ctx.values.shape == (q["end"] - q["start"] + 3, src.D)
    with pytest.raises(Exception):
        project.source(q["source"]).raw(0, project.T)       # the whole source does touch them


def test_layout_cache_notices_a_rewritten_chunk(tmp_path, monkeypatch):
    from gpu_matcher import source as source_module

    monkeypatch.setattr(source_module, "IN_MEMORY_BYTES", 0)          # layouts go to the cache folder
    raw = np.zeros((256, 3), dtype=np.float32)
    write_project(tmp_path / "h", raw, transform="none")
    convert_project_to_zarr(tmp_path / "h", tmp_path / "z", chunk_steps=32, progress=False)
    cache = tmp_path / "cache"
    engine = Engine(open_project(tmp_path / "z", cache_dir=cache), backend="numpy")
    q = dict(cells=[1], threshold=0.5, left=0, right=0, top=5)
    assert engine.match("states::states1", **q) == []
    arr = zarr.open_group(str(tmp_path / "z" / "states.zarr"), mode="r+")["states1"]
    arr[100:110, 1] = 1.0                                             # rewrites one chunk file
    engine = Engine(open_project(tmp_path / "z", cache_dir=cache), backend="numpy")
    assert [m.as_dict() for m in engine.match("states::states1", **q)] == [
        {"start": 100, "end": 109, "length": 10, "inter": 1, "union": 1}]


def test_zarr_errors_name_the_store_and_path(tmp_path):
    write_project(tmp_path / "h", np.zeros((10, 2), dtype=np.float32))
    convert_project_to_zarr(tmp_path / "h", tmp_path / "z", progress=False)
    yml = tmp_path / "z" / "lstm.yml"
    yml.write_text(yml.read_text().replace("path: states1", "path: nope"))
    with pytest.raises(ProjectError, match=r"states\.zarr: array 'nope' missing"):
        open_project(tmp_path / "z")
    # A store that is a single array at its root is addressed with path ''.
    root = tmp_path / "single"
    root.mkdir()
    a = zarr.create_array(str(root / "s.zarr"), shape=(10, 2), chunks=(4, 2), dtype="float16")
    a[:] = 1.0
    (root / "lstm.yml").write_text("files: {s: s.zarr}\nstates:\n  file: s\n  types:\n"
                                   "    - {type: state, path: ''}\n")
    project = open_project(root)
    assert project.T == 10 and project.source("s::").dtype == np.float16


def test_convert_zarr_cli(tmp_path):
    name = SETS[0]
    out = tmp_path / "z"
    proc = subprocess.run([sys.executable, "-m", "gpu_matcher.cli", "convert-zarr",
                           str(GOLDEN / name / "project"), str(out), "--chunk-steps", "500", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "chunks of 500 steps" in proc.stdout
    info = subprocess.run([sys.executable, "-m", "gpu_matcher.cli", "info", str(out), "--json"],
                          capture_output=True, text=True, timeout=60)
    summary = json.loads(info.stdout)[0]
    assert summary["T"] == open_project(GOLDEN / name / "project").T
    again = subprocess.run([sys.executable, "-m", "gpu_matcher.cli", "convert-zarr",
                            str(GOLDEN / name / "project"), str(out)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_uncompressed_arrays_read_rows_from_the_chunk_files(tmp_path, dtype):
    """Rows of an uncompressed store come straight from the chunk files (``read_rows``), equal to what
    zarr decodes: any order, repeats, chunk edges, the partial last chunk, a chunk never written."""
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(300, 5)).astype(dtype)
    raw[64:96] = 0                                      # chunk 2 equals the fill value: no file
    write_project(tmp_path / "h", raw, transform="none")
    convert_project_to_zarr(tmp_path / "h", tmp_path / "z", chunk_steps=32, compression="none", progress=False)
    convert_project_to_zarr(tmp_path / "h", tmp_path / "zc", chunk_steps=32, progress=False)
    project = open_project(tmp_path / "z")
    ds = project.source("states::states1").dataset
    assert not (tmp_path / "z" / "states.zarr" / "states1" / "c" / "2").exists()
    rows = np.concatenate([rng.integers(0, 300, 200), [0, 31, 32, 95, 96, 299, 299, 5]])
    assert np.array_equal(ds.read_rows(rows), raw[rows])
    assert np.array_equal(ds[31:70], raw[31:70]) and np.array_equal(ds[290:400], raw[290:])
    assert np.array_equal(ds[()], raw) and ds.read_rows([]).shape == (0, 5)
    with pytest.raises(IndexError):
        ds.read_rows([300])
    assert ds._fds
    project.close()                                     # closes the chunk files it opened
    assert not ds._fds
    compressed = open_project(tmp_path / "zc").source("states::states1").dataset
    assert not hasattr(compressed, "read_rows") and np.array_equal(compressed[31:70], raw[31:70])


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_workers_verify_from_uncompressed_chunks_without_a_row_copy(tmp_path, monkeypatch, compression):
    """``LSTMVIS_WORKER_ROW_KEYS=auto``: on an uncompressed Zarr source a worker's shard layout keeps
    only the cell-major keys and reads rows from the chunk files; a compressed one keeps a row copy.
    The answers stay the golden ones."""
    from gpu_matcher import sharded as sharded_module
    from gpu_matcher import source as source_module
    from gpu_matcher.sharded import reset_worker_states
    from tests.dask.common import golden_query_args, serial_rows

    name = SETS[0]
    convert_project_to_zarr(GOLDEN / name / "project", tmp_path / "z", chunk_steps=64,
                            compression=compression, progress=False)
    monkeypatch.setattr(source_module, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(sharded_module, "WORKER_ROW_KEYS", "auto")
    monkeypatch.setenv("LSTMVIS_CACHE_DIR", str(tmp_path / "cache"))
    reset_worker_states()
    project = open_project(tmp_path / "z")
    assert hasattr(next(iter(project.sources.values())).dataset, "read_rows") == (compression == "none")
    for q in golden_queries(name):
        assert serial_rows(project, golden_query_args(q), 37, halo=4, source=q["source"]) == q["expected"], q
    reset_worker_states()
    assert any((tmp_path / "cache").rglob("keys_cells.npy"))
    assert any((tmp_path / "cache").rglob("keys_rows.npy")) == (compression == "zstd")
