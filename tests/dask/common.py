"""Helpers for the scale-out tests: projects on disk (workers open sources by path), random cases, and
the sharded answer next to the one-process answer. The projects and scenarios are those of every
implementation (``tests/engine/conformance.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpu_matcher import Engine, open_project
from gpu_matcher.project import Project
from gpu_matcher.sharded import MatchStats, SerialExecutor, ShardedBackend
from tests.engine import conformance
from tests.engine.conformance import (DISK_SOURCE as SOURCE, golden_query_args, random_raw, rows, standin_cupy,
                                      write_project)

__all__ = ["SOURCE", "write_project", "random_raw", "random_case", "engine_rows", "serial_rows",
           "golden_query_args", "standin_cupy"]


def random_case(rng: np.random.Generator, folder: Path) -> tuple[Project, dict]:
    """``conformance.random_case`` written to ``folder``: the project and its query."""
    raw, transform, starts, query = conformance.random_case(rng)
    return open_project(write_project(folder, raw, starts, transform)), query


def engine_rows(project: Project, q: dict, source: str = SOURCE) -> list[dict]:
    """The one-process answer (NumPy backend)."""
    return rows(Engine(project, backend="numpy"), source, q)


def serial_rows(project: Project, q: dict, shard_steps: int, halo: int = 0, backend_spec="numpy",
                source: str = SOURCE, first_rows: int | None = None,
                stats: MatchStats | None = None) -> list[dict]:
    """The sharded answer, every shard call run in this process (``stats``: filled with what it did)."""
    backend = ShardedBackend(SerialExecutor(backend_spec), shard_steps=shard_steps, halo=halo,
                             first_rows=first_rows)
    got = rows(Engine(project, backend=backend), source, q)
    if stats is not None:
        stats.__dict__.update(vars(backend.last_stats))      # the caller reads what the match did
    return got
