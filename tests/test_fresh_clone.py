"""A fresh clone runs every exactness test: the golden sets are in the repository, not only in ../shared."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

from tests.conftest import EXPECTED_SETS, GOLDEN, REPO, golden_queries, golden_sets


def test_golden_sets_present():
    assert set(EXPECTED_SETS) <= set(golden_sets()), f"golden sets missing under {GOLDEN}"
    for name in EXPECTED_SETS:
        assert (GOLDEN / name / "project" / "lstm.yml").is_file()
        assert golden_queries(name), f"{name}: no queries"


def test_the_repository_carries_its_own_copy():
    copy = REPO / "tests" / "golden"
    assert set(EXPECTED_SETS) <= {p.name for p in copy.iterdir() if (p / "queries.json").is_file()}


@pytest.mark.skipif(not (REPO.parent / "shared" / "golden").is_dir(), reason="no ../shared to compare with")
def test_copy_equals_the_shared_sets():
    shared = REPO.parent / "shared" / "golden"
    for name in EXPECTED_SETS:
        for dirpath, _, files in os.walk(shared / name):
            for f in files:
                theirs = Path(dirpath) / f
                ours = REPO / "tests" / "golden" / theirs.relative_to(shared)
                assert ours.is_file() and filecmp.cmp(theirs, ours, shallow=False), f"{ours} differs"
