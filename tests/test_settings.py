"""Environment settings: read in gpu_matcher.settings only, at use (never at import), one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from gpu_matcher import ProjectError, settings
from gpu_matcher import source as source_module
from tests.conftest import REPO


def test_only_settings_reads_lstmvis_variables():
    readers = []
    for top in ("gpu_matcher", "bokeh_app"):
        for path in (REPO / top).rglob("*.py"):
            text = path.read_text()
            if re.search(r"(os\.environ|getenv)[^\n]*LSTMVIS_", text) and path.name != "settings.py":
                readers.append(str(path.relative_to(REPO)))
    assert readers == []


def test_the_table_lists_exactly_the_variables_read():
    text = (REPO / "gpu_matcher" / "settings.py").read_text()
    read = set(re.findall(r'_(?:text|int)\("(LSTMVIS_\w+)"', text))
    assert read == set(settings.VARIABLES)


def test_read_at_use(monkeypatch, tmp_path):
    monkeypatch.setenv("LSTMVIS_CACHE_DIR", str(tmp_path / "a"))
    assert source_module.default_cache_dir() == tmp_path / "a"
    monkeypatch.setenv("LSTMVIS_CACHE_DIR", str(tmp_path / "b"))      # changed after import: obeyed
    assert source_module.default_cache_dir() == tmp_path / "b"
    monkeypatch.setenv("LSTMVIS_IN_MEMORY_BYTES", "123")
    assert settings.in_memory_bytes() == 123


def test_in_memory_limit_from_the_environment(monkeypatch, tmp_path):
    """A source over LSTMVIS_IN_MEMORY_BYTES gets its layout in the cache folder, set after import."""
    import h5py

    from gpu_matcher.source import Source

    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    monkeypatch.setattr(source_module, "IN_MEMORY_BYTES", None)
    monkeypatch.setenv("LSTMVIS_CACHE_DIR", str(tmp_path / "cache"))
    for limit, in_cache in (("1000000", False), ("0", True)):
        monkeypatch.setenv("LSTMVIS_IN_MEMORY_BYTES", limit)
        with h5py.File(path, "r") as f:
            layout = Source(name="s::x", dataset=f["x"], file_path=path).layout()
        assert (layout.location is not None) == in_cache


@pytest.mark.parametrize("name, value, call", [
    ("LSTMVIS_IN_MEMORY_BYTES", "lots", settings.in_memory_bytes),
    ("LSTMVIS_SHARD_QUERIES", "0", settings.shard_queries),
    ("LSTMVIS_WORKER_ROW_KEYS", "sometimes", settings.worker_row_keys),
    ("LSTMVIS_WORKERS", "-1", settings.workers),
])
def test_malformed_value_is_one_line(monkeypatch, name, value, call):
    monkeypatch.setenv(name, value)
    with pytest.raises(ProjectError, match=name) as info:
        call()
    assert "\n" not in str(info.value)


def test_defaults_when_unset(monkeypatch):
    for name in settings.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert settings.backend() == "auto" and settings.data_dir() is None
    assert settings.workers() == 8 and settings.worker_row_keys() == "auto"
    assert settings.cache_dir().name == "lstmvis" and isinstance(settings.cache_dir(), Path)
