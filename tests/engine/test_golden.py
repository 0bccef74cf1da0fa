"""The golden sets from a layout on disk: the cached, file-backed layouts answer exactly like the
in-memory one (the golden sets on every implementation: ``test_conformance.py``)."""

from __future__ import annotations

import pytest

from gpu_matcher import Engine, open_project
from tests.conftest import GOLDEN, golden_queries, golden_sets

SETS = golden_sets()

pytestmark = pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")


@pytest.mark.parametrize("store_rows", [True, False])
def test_golden_match_from_disk_layout(monkeypatch, tmp_path, store_rows):
    """The cached, file-backed layout answers exactly like the in-memory one; so does the cells-only
    layout that reads row keys from the source (Dask workers), with tiny blocks and a tiny cache."""
    from gpu_matcher import source as source_module

    monkeypatch.setattr(source_module, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(source_module.KeyStore, "RELEASE_ROWS", 7)      # many small, reordered reads
    monkeypatch.setattr(source_module.SourceRows, "BLOCK_BYTES", 64)
    monkeypatch.setattr(source_module.SourceRows, "CACHE_BYTES", 0)
    name = SETS[0]
    project = open_project(GOLDEN / name / "project", cache_dir=tmp_path)
    for src in project.sources.values():
        src.store_rows = store_rows
    engine = Engine(project, backend="numpy")
    for q in golden_queries(name):
        got = engine.match(q["source"], q["expected_cells"], q["threshold"], q["left"], q["right"],
                           top=q["top"], min_length=q["min_length"], phrase_length=q["phrase_length"],
                           distinct=q["distinct"], sequences=q["sequences"])
        assert [m.as_dict() for m in got] == q["expected"]
    assert any(tmp_path.rglob("keys_cells.npy")), "the layout was not written to the cache folder"
    assert any(tmp_path.rglob("keys_rows.npy")) == store_rows
