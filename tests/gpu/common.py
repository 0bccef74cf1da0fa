"""Helpers for the GPU backend's tests: projects over in-memory arrays, and queries to compare."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import h5py
import numpy as np
from hypothesis import strategies as st

from gpu_matcher.project import Project
from gpu_matcher.source import Source

_counter = itertools.count()
#: Values drawn often, so ties and thresholds that hit a stored value exactly are common.
POOL = [-3.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 6.0]
SOURCE = "f::states"


def project_from_array(raw: np.ndarray, transform: str = "tanh", starts=()) -> Project:
    """A Project over an in-memory HDF5 file (nothing on disk), one source named ``SOURCE``."""
    f = h5py.File(f"gpu-mem-{next(_counter)}.h5", "w", driver="core", backing_store=False)
    ds = f.create_dataset("states", data=raw)
    src = Source(name=SOURCE, dataset=ds, file_path=Path("/nonexistent"), transform=transform)
    starts = sorted(int(s) for s in starts)
    return Project(id="p", path=Path("."), name="p", description="p", T=int(raw.shape[0]),
                   sources={src.name: src}, word_ids_dataset=None, dictionary={}, meta={},
                   sequence_starts=np.asarray(starts, dtype=np.int64) if starts else None)


def ar1_states(rng: np.random.Generator, T: int, D: int, dtype="float16", phi=0.9) -> np.ndarray:
    """LSTM-like states: per-cell AR(1) with offsets, so on-runs are long and short."""
    eps = rng.standard_normal((T, D)).astype(np.float32)
    x = np.empty((T, D), dtype=np.float32)
    acc = rng.standard_normal(D).astype(np.float32)
    scale = np.float32(np.sqrt(1 - phi * phi))
    for t in range(T):
        acc = phi * acc + scale * eps[t]
        x[t] = acc
    offset = rng.uniform(-1.0, 0.5, D).astype(np.float32)
    return (x + offset).astype(dtype)


def match_both(engines, query: dict) -> tuple[list[dict], list[dict]]:
    """The same match on two engines, as lists of dicts."""
    out = []
    for engine in engines:
        got = engine.match(SOURCE, query["cells"], query["threshold"], query["left"], query["right"],
                           top=query["top"], min_length=query["min_length"],
                           phrase_length=query["phrase_length"], distinct=query["distinct"],
                           sequences=query["sequences"])
        out.append([m.as_dict() for m in got])
    return out[0], out[1]


def golden_match(engine, q: dict) -> list[dict]:
    got = engine.match(q["source"], q["expected_cells"], q["threshold"], q["left"], q["right"],
                       top=q["top"], min_length=q["min_length"], phrase_length=q["phrase_length"],
                       distinct=q["distinct"], sequences=q["sequences"])
    return [m.as_dict() for m in got]


@st.composite
def scenarios(draw):
    """A random source (float16/32/64, ties and exact-threshold hits common), sequences and a query."""
    T = draw(st.integers(1, 300))
    D = draw(st.integers(1, 80))
    dtype = draw(st.sampled_from(["float16", "float32", "float64"]))
    transform = draw(st.sampled_from(["tanh", "none"]))
    pool = np.asarray(POOL)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    raw = np.where(rng.random((T, D)) < 0.5, rng.choice(pool, (T, D)),
                   rng.normal(0, 1.5, (T, D))).astype(dtype)
    starts = sorted(draw(st.sets(st.integers(1, max(1, T - 1)), max_size=6))) if T > 1 else []
    stored = float(raw.flat[draw(st.integers(0, raw.size - 1))])
    exact = math.tanh(stored) if transform == "tanh" else stored
    threshold = draw(st.one_of(st.just(exact), st.sampled_from([-1.0, -0.3, 0.0, 0.2, 0.5, 1.0]),
                               st.floats(-1.2, 1.2)))
    cells = draw(st.lists(st.integers(0, D - 1), min_size=1, max_size=min(D, 40), unique=True))
    query = {"cells": cells, "threshold": float(threshold), "left": draw(st.integers(0, 3)),
             "right": draw(st.integers(0, 3)), "top": draw(st.integers(1, 20)),
             "min_length": draw(st.integers(1, 4)), "phrase_length": draw(st.sampled_from([0, 0, 1, 2, 3])),
             "distinct": draw(st.booleans()), "sequences": draw(st.booleans())}
    return raw, transform, starts, query
