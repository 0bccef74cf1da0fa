"""Fig. 9 on the CPU: S of every label span (10^5 phrases) and their PCA; prints timings.

    python -m benchmarks.bench_stats [--phrases 100000] [--cells 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from gpu_matcher import Engine, stats
from gpu_matcher.project import MetaTrack, Project
from gpu_matcher.source import Source


def build(folder: Path, phrases: int, D: int, seed: int = 0) -> Project:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 10, phrases)                  # runs of one label, mean length 5
    T = int(lengths.sum())
    values = np.zeros(T, dtype=np.int32)
    starts = np.cumsum(lengths) - lengths
    labels = np.arange(phrases) % 5                         # neighbours always differ: one span each
    values[:] = np.repeat(labels, lengths)
    f = h5py.File(folder / "bench.h5", "w")
    ds = f.create_dataset("states", shape=(T, D), dtype="float16")
    pattern = rng.normal(0, 1, (5, D))
    for a in range(0, T, 1 << 16):
        b = min(T, a + (1 << 16))
        ds[a:b] = (pattern[values[a:b]] + rng.normal(0, 1, (b - a, D))).astype(np.float16)
    tag = f.create_dataset("tag", data=values)
    src = Source(name="bench::states", dataset=ds, file_path=folder / "bench.h5", transform="tanh")
    track = MetaTrack(name="tag", kind="discrete", dataset=tag, labels={i: f"L{i}" for i in range(5)})
    seq = starts[::400].astype(np.int64)
    return Project(id="bench", path=folder, name="bench", description="bench", T=T, sources={src.name: src},
                   word_ids_dataset=None, dictionary={}, meta={"tag": track}, sequence_starts=seq)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phrases", type=int, default=100_000)
    parser.add_argument("--cells", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LSTMVIS_CACHE_DIR", str(Path(tmp) / "cache"))
        project = build(Path(tmp), args.phrases, args.cells)
        engine = Engine(project, backend="numpy")
        t0 = time.perf_counter()
        project.source("bench::states").layout(progress=False)
        t_layout = time.perf_counter() - t0
        t0 = time.perf_counter()
        pp = stats.phrase_patterns(engine, "bench::states", "tag", 0.3, left=1, right=1)
        t_patterns = time.perf_counter() - t0
        t0 = time.perf_counter()
        proj = stats.pca(pp.patterns, k=2)
        t_pca = time.perf_counter() - t0
        print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cpus; backend: numpy (CPU)")
        print(f"T={project.T} D={args.cells} phrases={pp.starts.size}")
        print(f"layout (once, cached): {t_layout:.2f} s")
        print(f"phrase patterns: {t_patterns:.2f} s   PCA: {t_pca:.2f} s   "
              f"total: {t_patterns + t_pca:.2f} s   explained: {np.round(proj.explained, 3).tolist()}")


if __name__ == "__main__":
    main()
