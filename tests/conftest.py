"""Shared fixtures: the golden sets beside the checkout (../shared/golden) and a private layout cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LSTMVIS_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"


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
