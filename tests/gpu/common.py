"""Helpers of the GPU backend's tests, now shared by every implementation: ``tests/engine/conformance.py``
(re-exported here for the modules that import them from this place)."""

from __future__ import annotations

from tests.engine.conformance import (SOURCE, ar1_states, golden_query_args, parity_scenarios as scenarios,
                                      project_from_array, rows)

__all__ = ["SOURCE", "ar1_states", "project_from_array", "scenarios", "match_both", "golden_match"]


def match_both(engines, query: dict) -> tuple[list[dict], list[dict]]:
    """The same match on two engines, as lists of dicts."""
    first, second = (rows(engine, SOURCE, query) for engine in engines)
    return first, second


def golden_match(engine, q: dict) -> list[dict]:
    """A golden query's match of its stored selection, as dicts."""
    return rows(engine, q["source"], golden_query_args(q))
