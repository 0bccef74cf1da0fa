"""Derived-layout builds under threads, processes, a full disk, a removed cache and a damaged source.

The crash cases of issue 16 (SIGBUS from a second build truncating a mapped file, SIGBUS on a full cache
disk, FileNotFoundError when the cache is removed mid-build, damaged values read silently as NaN) run
in subprocesses, so a crash fails the test instead of killing the test run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from gpu_matcher import source as source_mod
from gpu_matcher.errors import ProjectError
from gpu_matcher.source import Source, float_keys

REPO = Path(__file__).resolve().parents[2]
T, D = 120_000, 48            # 11.5 MB of float16: above the 1 MiB in-memory limit set below


@pytest.fixture()
def h5_source(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "states.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("states1", data=rng.standard_normal((T, D)).astype(np.float16))
    return path


def open_source(path: Path, cache: Path) -> Source:
    fh = h5py.File(path, "r")
    return Source(name="states::states1", dataset=fh["states1"], file_path=path, cache_dir=cache)


def run_python(code: str, env_extra: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LSTMVIS_IN_MEMORY_BYTES": str(2**20), **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def expected_keys(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as fh:
        return float_keys(fh["states1"][()])


def test_threads_and_sources_share_one_build(h5_source, tmp_path, monkeypatch):
    monkeypatch.setattr(source_mod, "IN_MEMORY_BYTES", 2**20)
    cache = tmp_path / "cache"
    builds = []
    real_build = source_mod._build_layout
    monkeypatch.setattr(source_mod, "_build_layout", lambda *a, **k: (builds.append(1), real_build(*a, **k)))
    sources = [open_source(h5_source, cache) for _ in range(3)]      # three openers of one file
    layouts, errors = [], []

    def ask(src):
        try:
            layouts.append(src.layout(progress=False))
        except Exception as exc:                                      # pragma: no cover - the failure
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(sources[i % 3],)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(builds) == 1
    want = expected_keys(h5_source)
    for layout in layouts:
        assert np.array_equal(layout.keys_cells.take(np.array([0, D - 1])), want[:, [0, D - 1]].T)
    assert not list(cache.rglob("*.tmp.npy"))


def test_processes_build_concurrently_without_crash(h5_source, tmp_path):
    cache = tmp_path / "cache"
    code = f"""
        import h5py, numpy as np
        from pathlib import Path
        from gpu_matcher.source import Source
        fh = h5py.File({str(h5_source)!r}, "r")
        src = Source(name="states::states1", dataset=fh["states1"], file_path=Path({str(h5_source)!r}),
                     cache_dir={str(cache)!r})
        lay = src.layout(progress=False)
        print(int(lay.keys_cells.take(np.array([5]))[0].astype(np.int64).sum()))
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "LSTMVIS_IN_MEMORY_BYTES": str(2**20)}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-500:] for o in outs]
    want = int(expected_keys(h5_source)[:, 5].astype(np.int64).sum())
    assert [int(o[0]) for o in outs] == [want] * 3
    assert not list(cache.rglob("*.tmp.npy"))


def test_full_cache_disk_is_a_clear_error_not_a_crash(h5_source, tmp_path):
    cache = tmp_path / "small"
    cache.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(cache)],
                             capture_output=True).returncode == 0
    try:
        if not mounted:                          # no right to mount: a file-size limit fills the "disk"
            limit = "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); " \
                    "resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))"
        else:
            limit = "pass"
        done = run_python(f"""
            {limit}
            import sys
            from gpu_matcher.errors import ProjectError
            import h5py
            from pathlib import Path
            from gpu_matcher.source import Source
            fh = h5py.File({str(h5_source)!r}, "r")
            src = Source(name="states::states1", dataset=fh["states1"], file_path=Path({str(h5_source)!r}),
                         cache_dir={str(cache)!r})
            try:
                src.layout(progress=False)
            except ProjectError as exc:
                print(exc); sys.exit(2)
        """)
        assert done.returncode == 2, (done.returncode, done.stderr[-800:])
        line = done.stdout.strip()
        assert "no room for the layout" in line and "GiB needed" in line and "\n" not in line
        assert not list(cache.rglob("*.tmp.npy"))
    finally:
        if mounted:
            subprocess.run(["umount", str(cache)], check=False)


def test_cache_removed_during_build_is_rebuilt(h5_source, tmp_path, monkeypatch):
    monkeypatch.setattr(source_mod, "IN_MEMORY_BYTES", 2**20)
    cache = tmp_path / "cache"
    src = open_source(h5_source, cache)
    real_read, removed = source_mod._read_rows, []

    def read_and_remove(source, start, stop):
        if not removed:                          # mid-build, once: a user cleans the cache
            removed.append(start)
            shutil.rmtree(cache)
        return real_read(source, start, stop)

    monkeypatch.setattr(source_mod, "_read_rows", read_and_remove)
    layout = src.layout(progress=False)
    assert removed
    assert np.array_equal(layout.keys_cells.take(np.array([3]))[0], expected_keys(h5_source)[:, 3])


def test_damaged_values_are_reported_not_silent(h5_source, tmp_path, caplog, monkeypatch):
    with h5py.File(h5_source, "r") as fh:
        offset = fh["states1"].id.get_offset()
    with open(h5_source, "r+b") as fh:               # 64 KiB of garbage in the middle of the data
        fh.seek(offset + (T * D) // 2 * 2)
        fh.write(b"\xff" * 65536)
    with caplog.at_level(logging.WARNING, logger="gpu_matcher"):
        monkeypatch.setattr(source_mod, "IN_MEMORY_BYTES", 2**20)
        layout = open_source(h5_source, tmp_path / "cache").layout(progress=False)
    assert layout.location is not None
    messages = [r.getMessage() for r in caplog.records if "NaN values" in r.getMessage()]
    assert messages and "32768 NaN values" in messages[0] and "damaged" in messages[0]
    meta = json.loads((layout.location / "layout.json").read_text())
    assert meta["nan_values"]["count"] == 32768


def test_fletcher32_damage_is_one_line(tmp_path):
    path = tmp_path / "states.h5"
    data = np.random.default_rng(1).standard_normal((4096, 16)).astype(np.float32)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("states1", data=data, chunks=(256, 16), fletcher32=True)
    with h5py.File(path, "r") as fh:
        info = fh["states1"].id.get_chunk_info(3)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 100)
        fh.write(b"\x00\x01\x02\x03" * 8)
    src = open_source(path, tmp_path / "cache")
    with pytest.raises(ProjectError) as err:
        src.layout(progress=False)
    assert "cannot be read" in str(err.value) and "damaged" in str(err.value)
    assert "\n" not in str(err.value)
