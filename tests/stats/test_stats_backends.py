"""The statistics' corpus scans (suggest, the detector curve, the phrase map) on every backend that runs them
(``Capability.CORPUS_SCANS``): the NumPy backend, the CuPy backend on the NumPy stand-in device (resident
and streamed keys), on the device that executes the real ``kernels/*.cu`` on the CPU, and on a GPU when one
is present. Each answers exactly like the NumPy backend; the scan primitives (``all_on_counts``) also
equal brute force. The implementations are ``tests/engine/conformance.py``'s, chosen by name; the sharded
ones (projects on disk) are ``tests/stats/test_stats_sharded.py``'s."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpu_matcher import Engine, stats
from gpu_matcher.backends import cupy as cupy_backend
from gpu_matcher.backends.base import Capability
from gpu_matcher.backends.search import SearchBackend
from gpu_matcher.source import KEY_DTYPES, float_keys
from tests.engine.conformance import IMPLEMENTATIONS, POOL, Implementation
from tests.gpu.standin import StandInDevice
from tests.stats.test_stats import tiny_project

SOURCE = "f::states"
NAMES = ["cupy-standin", "cupy-standin-streamed", "cupy-executed", "cupy-executed-streamed", "cupy-gpu",
         "cupy-gpu-streamed"]
UNDER_TEST = [impl for impl in IMPLEMENTATIONS if impl.name in NAMES]
#: (seed, T, D, dtype, transform): T > 64 so the streamed variants stream; D > 32 spans two mask words.
CASES = [(1, 150, 5, "float16", "tanh"), (2, 97, 35, "float32", "none"), (3, 70, 3, "float64", "tanh")]


def case(seed: int, T: int, D: int, dtype: str, transform: str):
    """Values from a pool (ties) and normals, a few NaN, three labels in runs, sequence starts."""
    rng = np.random.default_rng(seed)
    raw = np.where(rng.random((T, D)) < 0.5, rng.choice(np.asarray(POOL), (T, D)), rng.normal(0, 1.2, (T, D)))
    raw[rng.random((T, D)) < 0.03] = np.nan
    labels = np.repeat(rng.integers(0, 3, T), rng.integers(1, 6, T))[:T].astype(np.int32)
    starts = sorted({int(s) for s in rng.integers(1, T, 4)})
    return raw.astype(dtype), labels, starts, transform


def engine_of(impl: Implementation, raw, labels, starts, transform) -> Engine:
    project = tiny_project(raw, labels, starts, transform)
    return Engine(project, backend=impl.make(project))


def answers(engine: Engine, rng: np.random.Generator) -> list:
    """Everything the three scans give, for every scale, as plain data."""
    D, T = engine.project.source(SOURCE).D, engine.project.T
    out = []
    for scale, thresholds in (("none", [-2.0, 0.3, -0.25, 0.3, 0.0, 0.76, 5.0]),
                              ("zscore", [-1.0, 0.0, 0.5, 1.5, 0.5]),
                              ("quantile", [0.0, 0.2, 0.5, 0.9, 1.0])):
        cells = sorted(rng.choice(D, int(rng.integers(1, min(D, 6) + 1)), replace=False).tolist())
        curve = stats.detector_curve(engine, SOURCE, cells, thresholds, "tag", 1, scale=scale)
        out.append(curve.as_dict())
        th = thresholds[2]
        a = int(rng.integers(0, T - 5))
        out.append([c.as_dict() for c in stats.suggest_cells(engine, SOURCE, th, a, a + 4, top=D, scale=scale)])
        out.append([c.as_dict() for c in stats.suggest_cells(engine, SOURCE, th, track="tag", label=0, top=D,
                                                             scale=scale)])
        pp = stats.phrase_patterns(engine, SOURCE, "tag", th, left=int(rng.integers(0, 3)),
                                   right=int(rng.integers(0, 3)), scale=scale)
        out.append((pp.starts.tolist(), pp.ends.tolist(), pp.patterns.tolist()))
    return out


@pytest.mark.parametrize("impl", UNDER_TEST, ids=lambda impl: impl.name)
@pytest.mark.parametrize("params", CASES, ids=lambda c: f"T{c[1]}-D{c[2]}-{c[3]}")
def test_statistics_equal_numpy(impl: Implementation, params):
    reason = impl.unavailable()
    if reason:
        pytest.skip(reason)
    raw, labels, starts, transform = case(*params)
    engine = engine_of(impl, raw, labels, starts, transform)
    assert engine.backend.supports(Capability.CORPUS_SCANS)
    assert engine.scan_backend(SOURCE)[0] is engine.backend
    reference = Engine(tiny_project(raw, labels, starts, transform), backend="numpy")
    got, want = answers(engine, np.random.default_rng(params[0])), answers(reference, np.random.default_rng(params[0]))
    assert got == want
    if impl.check is not None:
        impl.check(engine, SOURCE)
    calls = getattr(engine.backend, "device", None)
    if isinstance(calls, StandInDevice):
        assert calls.calls["cell_on_counts"] > 0 and calls.calls["unpack_cells"] > 0   # on the device


def brute_all_on(raw: np.ndarray, cells, keys: np.ndarray, target: np.ndarray):
    on = float_keys(raw)[:, cells][None, :, :] >= keys[:, None, :]        # (n, T, k)
    every = on.all(axis=2)
    return every.sum(axis=1), (every & target).sum(axis=1)


@pytest.mark.parametrize("impl", [i for i in IMPLEMENTATIONS if i.name == "numpy"] + UNDER_TEST,
                         ids=lambda impl: impl.name)
def test_all_on_counts_equal_brute_force_ordered_or_not(impl: Implementation):
    """Keys drawn from the stored keys (ties), the 'nothing on' key, per cell different or one for all
    cells: one level pass when the thresholds' keys are ordered alike in every column, one pass each
    otherwise."""
    reason = impl.unavailable()
    if reason:
        pytest.skip(reason)
    raw, labels, starts, transform = case(4, 90, 7, "float16", "none")
    engine = engine_of(impl, raw, labels, starts, transform)
    backend, layout = engine.scan_backend(SOURCE)
    rng = np.random.default_rng(4)
    stored = float_keys(raw).reshape(-1)
    nothing = np.iinfo(KEY_DTYPES[2]).max
    target = labels == 1
    for cells in ([3], [0, 2, 5], list(range(7))):
        column = np.sort(rng.choice(stored, (6, len(cells))), axis=0)
        column[-1, 0] = nothing
        same = np.repeat(column[:, 1:2] if len(cells) > 1 else column, len(cells), axis=1)   # scale none
        for keys in (column, column[::-1].copy(), rng.choice(stored, (5, len(cells))), same):
            keys = keys.astype(KEY_DTYPES[2])
            got = backend.all_on_counts(layout, np.asarray(cells), keys, target)
            want = brute_all_on(raw, cells, keys, target)
            assert [g.tolist() for g in got] == [w.tolist() for w in want]


@pytest.mark.parametrize("impl", [i for i in IMPLEMENTATIONS if i.name == "numpy"] + UNDER_TEST,
                         ids=lambda impl: impl.name)
def test_the_shared_xp_scans_equal_each_backends_own(impl: Implementation):
    """``SearchBackend.cell_on_counts`` / ``span_patterns`` (xp code over ``on_columns``) against the
    backend's own (NumPy: per cell row; CuPy: the ``cell_on_counts`` kernel), one key and one per cell."""
    reason = impl.unavailable()
    if reason:
        pytest.skip(reason)
    raw, labels, starts, transform = case(7, 120, 40, "float32", "tanh")
    engine = engine_of(impl, raw, labels, starts, transform)
    backend, layout = engine.scan_backend(SOURCE)
    target = labels == 2
    spans = stats.label_spans(engine, "tag")
    lo, hi = (np.maximum(spans[0] - 1, 0), np.minimum(spans[1] + 2, engine.project.T))
    for key in (engine.resolve(SOURCE, 0.3), engine.resolve(SOURCE, 0.5, "zscore")):
        got = SearchBackend.cell_on_counts(backend, layout, key, target)
        want = backend.cell_on_counts(layout, key, target)
        assert [g.tolist() for g in got] == [w.tolist() for w in want] and want[1].any()
        got = SearchBackend.span_patterns(backend, layout, key, spans[0], spans[1], lo, hi)
        want = backend.span_patterns(layout, key, spans[0], spans[1], lo, hi)
        assert np.array_equal(got, want) and want.any()


class NoScans(cupy_backend.CupyBackend):
    """The CuPy backend minus the declaration: its statistics must go to NumPy over the host layout."""

    capabilities = cupy_backend.CupyBackend.capabilities - {Capability.CORPUS_SCANS}


def test_a_backend_without_corpus_scans_gets_numpy_by_its_declaration(caplog):
    raw, labels, starts, transform = case(5, 80, 4, "float32", "tanh")
    device = StandInDevice()
    engine = Engine(tiny_project(raw, labels, starts, transform), backend=NoScans(device))
    reference = Engine(tiny_project(raw, labels, starts, transform), backend="numpy")
    engine.layout(SOURCE)
    before = sum(device.calls.values())
    with caplog.at_level("INFO", logger="gpu_matcher"):
        got = answers(engine, np.random.default_rng(5))
    assert got == answers(reference, np.random.default_rng(5))
    assert sum(device.calls.values()) == before                          # no kernel ran
    told = [r for r in caplog.records if "corpus scans" in r.message]
    assert len(told) == 1 and "cupy" in told[0].message


def test_a_host_layout_and_out_of_memory_fall_back_to_numpy():
    """A source too large for the device (HOST) and a scan that runs out of memory: NumPy answers."""
    raw, labels, starts, transform = case(6, 100, 6, "float16", "tanh")
    reference = Engine(tiny_project(raw, labels, starts, transform), backend="numpy")
    want = answers(reference, np.random.default_rng(6))
    tiny = Engine(tiny_project(raw, labels, starts, transform), backend=cupy_backend.CupyBackend(StandInDevice(free=64)))
    assert tiny.layout(SOURCE).mode == cupy_backend.HOST
    assert answers(tiny, np.random.default_rng(6)) == want
    device = StandInDevice()
    engine = Engine(tiny_project(raw, labels, starts, transform), backend=cupy_backend.CupyBackend(device))
    engine.layout(SOURCE)
    device.fail_on("unpack_cells", times=math.inf)
    device.fail_on("cell_on_counts", times=math.inf)
    assert answers(engine, np.random.default_rng(6)) == want
