"""Adding states and dense tracks to a project whose timeline is already written (gpu_matcher.io.attach)."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_matcher import open_project
from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME
from gpu_matcher.io.attach import StatesAppender
from gpu_matcher.io.writer import ProjectWriter


@pytest.fixture
def project(tmp_path):
    with ProjectWriter(tmp_path / "p", dictionary=["a", "b"]) as writer:
        writer.append(states={"old": np.zeros((10, 2))}, tokens=np.arange(10) % 2)
    return tmp_path / "p"


def test_blocks_become_sources_and_tracks(project):
    with StatesAppender(project, T=10, dtype="float16", overwrite=True) as out:
        out.add_source("cells", type="state", layer=1)
        out.add_track("pred", value_range=(0, 1))
        for lo in (0, 4):
            n = 4 if lo == 0 else 6
            out.append({"cells": np.arange(lo * 3, (lo + n) * 3).reshape(n, 3)}, {"pred": np.full(n, lo / 10)})
    p = open_project(project)
    assert list(p.sources) == ["states::cells"] and p.source("states::cells").D == 3
    np.testing.assert_array_equal(p.source("states::cells").raw(0, 10), np.arange(30).reshape(10, 3))
    assert p.meta["pred"].values(0, 10).tolist() == [0.0] * 4 + [pytest.approx(0.4)] * 6
    assert p.meta["pred"].value_range == (0.0, 1.0) and p.tokens(0, 2) == ["a", "b"]
    p.close()


def test_a_short_or_refused_run_adds_nothing(project):
    before = (project / CONFIG_NAME).read_text()
    with pytest.raises(ProjectError, match="already has states"):
        StatesAppender(project, T=10)
    out = StatesAppender(project, T=10, overwrite=True)
    out.add_source("cells")
    out.append({"cells": np.zeros((4, 2))})
    with pytest.raises(ProjectError, match="4 steps of states written for a timeline of T=10"):
        out.close()
    with pytest.raises(ProjectError, match="more than the timeline's T=10"):
        with StatesAppender(project, T=10, overwrite=True) as again:
            again.add_source("cells")
            again.append({"cells": np.zeros((11, 2))})
    assert (project / CONFIG_NAME).read_text() == before
    assert sorted(f.name for f in project.iterdir() if "tmp" in f.name) == []
