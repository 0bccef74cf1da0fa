"""`lstmvis serve --dask`: the app's catalogue runs matches on one shared cluster, with the same answers."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed", reason="the Dask backend needs dask.distributed (the dask extra)")
pytest.importorskip("bokeh", reason="the app needs bokeh")

from bokeh_app.catalogue import close_catalogues, get_catalogue  # noqa: E402
from gpu_matcher import Engine, open_project  # noqa: E402
from tests.conftest import GOLDEN, golden_queries, golden_sets  # noqa: E402

SETS = golden_sets()


@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
def test_serve_catalogue_matches_on_the_cluster():
    name = SETS[0]
    try:
        catalogue = get_catalogue(GOLDEN / name, "numpy", dask="local:2")
        assert catalogue.backend.name == "dask"
        assert get_catalogue(GOLDEN / name, "numpy", dask="local:2") is catalogue   # one cluster, shared
        engine = catalogue.engine("project")
        single = Engine(open_project(GOLDEN / name / "project"), backend="numpy")
        for q in golden_queries(name)[:4]:
            args = (q["source"], q["expected_cells"], q["threshold"], q["left"], q["right"])
            kw = dict(top=q["top"], min_length=q["min_length"], phrase_length=q["phrase_length"],
                      distinct=q["distinct"], sequences=q["sequences"])
            assert engine.match(*args, **kw) == single.match(*args, **kw)
            assert [m.as_dict() for m in engine.match(*args, **kw)] == q["expected"]
    finally:
        close_catalogues()
