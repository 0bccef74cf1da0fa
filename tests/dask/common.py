"""Helpers for the scale-out tests: projects on disk (workers open sources by path), random scenarios,
and the sharded answer next to the one-process answer."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from gpu_matcher import Engine
from gpu_matcher.backends import MatchQuery
from gpu_matcher.project import Project
from gpu_matcher.sharded import SerialExecutor, ShardedSource, locate, plan_shards, sharded_match

POOL = np.array([-3.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 6.0])
SOURCE = "states::states1"


def write_project(folder: Path, raw: np.ndarray, starts=(), transform: str = "tanh") -> Path:
    """A minimal project folder: lstm.yml and states.h5 (and train.h5 with sequence starts)."""
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "states.h5", "w") as f:
        f.create_dataset("states1", data=raw)
    files = "files: {states: states.h5" + (", train: train.h5}" if len(starts) else "}")
    seq = ""
    if len(starts):
        with h5py.File(folder / "train.h5", "w") as f:
            f.create_dataset("seq_starts", data=np.asarray(sorted(starts), dtype=np.int64))
        seq = "sequences: {file: train, path: seq_starts}\n"
    (folder / "lstm.yml").write_text(
        f"name: t\n{files}\n{seq}states:\n  file: states\n  types:\n"
        f"    - {{type: state, layer: 1, path: states1, transform: {transform}}}\n")
    return folder


def random_raw(rng: np.random.Generator, T: int, D: int, dtype: str, repeat: float) -> np.ndarray:
    """Values from a small pool, rows often repeated: long runs, ties, thresholds hitting stored values."""
    raw = rng.choice(POOL, size=(T, D))
    same = rng.random(T) < repeat
    for t in range(1, T):
        if same[t]:
            raw[t] = raw[t - 1]
    flip = rng.random((T, D)) < 0.05
    raw[flip] = rng.choice(POOL, size=int(flip.sum()))
    return raw.astype(dtype)


def random_case(rng: np.random.Generator, folder: Path) -> tuple[Project, dict]:
    """A random project on disk and a random query (as ``Engine.match`` keyword arguments)."""
    from gpu_matcher import open_project

    T = int(rng.integers(1, 160))
    D = int(rng.choice([1, 3, 9, 66]))
    raw = random_raw(rng, T, D, str(rng.choice(["float16", "float32"])), rng.uniform(0.3, 0.95))
    starts = sorted({int(s) for s in rng.integers(1, max(2, T), size=int(rng.integers(0, 5))) if s < T})
    write_project(folder, raw, starts, str(rng.choice(["tanh", "none"])))
    cells = sorted({int(c) for c in rng.integers(0, D, size=int(rng.integers(1, min(D, 12) + 1)))})
    query = dict(cells=cells, threshold=float(rng.choice([-1.0, -0.3, 0.0, 0.2, 0.5, float(np.tanh(0.25))])),
                 left=int(rng.choice([0, 0, 1, 2, 5, 40])), right=int(rng.choice([0, 0, 1, 3, 40])),
                 top=int(rng.integers(1, 30)), min_length=int(rng.integers(1, 4)),
                 phrase_length=int(rng.choice([0, 0, 0, 1, 2, 3])), distinct=bool(rng.random() < 0.6),
                 sequences=bool(rng.random() < 0.7))
    return open_project(folder), query


def engine_rows(project: Project, q: dict, source: str = SOURCE) -> list[dict]:
    """The one-process answer (NumPy backend)."""
    got = Engine(project, backend="numpy").match(source, q["cells"], q["threshold"], q["left"], q["right"],
                                                 top=q["top"], min_length=q["min_length"],
                                                 phrase_length=q["phrase_length"], distinct=q["distinct"],
                                                 sequences=q["sequences"])
    return [m.as_dict() for m in got]


def match_query(project: Project, q: dict, source: str = SOURCE) -> MatchQuery:
    src = project.source(source)
    return MatchQuery(cells=tuple(sorted(set(q["cells"]))), key_threshold=src.key_threshold(q["threshold"]),
                      bounds=project.sequence_bounds(q["sequences"]), left=q["left"], right=q["right"],
                      top=q["top"], min_length=q["min_length"], phrase_length=q["phrase_length"],
                      distinct=q["distinct"])


def serial_rows(project: Project, q: dict, shard_steps: int, halo: int = 0, backend_spec="numpy",
                source: str = SOURCE, first_rows: int | None = None, stats=None) -> list[dict]:
    """The sharded answer, every shard call run in this process."""
    src = project.source(source)
    sharded = ShardedSource(src.name, locate(src), plan_shards(project.T, shard_steps))
    rows = sharded_match(sharded, match_query(project, q, source), SerialExecutor(backend_spec), halo=halo,
                         stats=stats, first_rows=first_rows)
    return [{"start": r.start, "end": r.end, "length": r.length, "inter": r.inter, "union": r.union}
            for r in rows]


def golden_query_args(q: dict) -> dict:
    return dict(cells=q["expected_cells"], threshold=q["threshold"], left=q["left"], right=q["right"],
                top=q["top"], min_length=q["min_length"], phrase_length=q["phrase_length"],
                distinct=q["distinct"], sequences=q["sequences"])


def standin_cupy():
    """A CuPy backend on the NumPy stand-in device (tests/gpu/standin.py): the GPU worker's code path."""
    from gpu_matcher.backends.cupy import CupyBackend
    from tests.gpu.standin import StandInDevice

    return CupyBackend(StandInDevice())


