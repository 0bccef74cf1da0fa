"""Shared fixtures: the golden sets (the copy in tests/golden, or $LSTMVIS_SHARED/golden) and a private
layout cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: The golden sets travel with the repository (tests/golden, a copy of the public ../shared/golden), so a
#: fresh clone runs every exactness test; LSTMVIS_SHARED names another shared folder to test against.
GOLDEN = Path(os.environ["LSTMVIS_SHARED"]) / "golden" if os.environ.get("LSTMVIS_SHARED") \
    else REPO / "tests" / "golden"
#: The sets every checkout carries; tests/test_fresh_clone.py fails when one is missing.
EXPECTED_SETS = ("basic", "wide")


def golden_sets() -> list[str]:
    if not GOLDEN.is_dir():
        return []
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "queries.json").is_file())


def golden_queries(name: str) -> list[dict]:
    return json.loads((GOLDEN / name / "queries.json").read_text())["queries"]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Derived layouts go to a temporary cache, never to the user's ~/.cache."""
    if "LSTMVIS_CACHE_DIR" not in os.environ:
        os.environ["LSTMVIS_CACHE_DIR"] = str(tmp_path_factory.mktemp("lstmvis-cache"))
    yield
