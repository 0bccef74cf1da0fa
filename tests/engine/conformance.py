"""Every implementation of the exact match, and what the conformance tests feed them.

``IMPLEMENTATIONS`` lists the backends that must answer exactly like the brute-force oracle and the
NumPy backend (``tests/engine/test_conformance.py`` runs the golden sets and the property scenarios on
each). Another implementation is one more ``Implementation`` entry: a name, a factory of its backend for
a project, and its budget of random examples.

Also here, shared by the other test modules: projects over arrays (in memory or on disk, where shard
workers open them by path), the random scenarios, and helpers to run a query on an engine.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from unittest import mock

import h5py
import numpy as np
from hypothesis import strategies as st

from gpu_matcher import Engine, open_project
from gpu_matcher.backends import Backend, cupy_unavailable_reason
from gpu_matcher.project import Project
from gpu_matcher.source import Source

SOURCE = "f::states"            # the source of an in-memory project
DISK_SOURCE = "states::states1"  # the source of a project on disk
#: Values drawn often, so ties and thresholds that hit a stored value exactly are common.
POOL = [-3.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 6.0]
_counter = itertools.count()


# --- projects ------------------------------------------------------------------------------------------
def project_from_array(raw: np.ndarray, transform: str = "tanh", starts=()) -> Project:
    """A Project over an in-memory HDF5 file (nothing on disk), one source named ``SOURCE``."""
    f = h5py.File(f"mem-{next(_counter)}.h5", "w", driver="core", backing_store=False)
    ds = f.create_dataset("states", data=raw)
    src = Source(name=SOURCE, dataset=ds, file_path=Path("/nonexistent"), transform=transform)
    starts = sorted(int(s) for s in starts)
    return Project(id="p", path=Path("."), name="p", description="p", T=int(raw.shape[0]),
                   sources={src.name: src}, word_ids_dataset=None, dictionary={}, meta={},
                   sequence_starts=np.asarray(starts, dtype=np.int64) if starts else None)


def write_project(folder: Path, raw: np.ndarray, starts=(), transform: str = "tanh") -> Path:
    """A minimal project folder: lstm.yml and states.h5 (and train.h5 with sequence starts); its source
    is ``DISK_SOURCE``."""
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


_DISK_ROOT: list[Path] = []


def disk_project(raw: np.ndarray, transform: str = "tanh", starts=()) -> tuple[Project, str]:
    """The project of ``project_from_array`` written to a fresh folder (shard workers open sources by
    path); returns it and its source's name."""
    if not _DISK_ROOT:
        _DISK_ROOT.append(Path(tempfile.mkdtemp(prefix="lstmvis-conformance-")))
    folder = _DISK_ROOT[0] / f"p{next(_counter)}-{os.getpid()}"
    return open_project(write_project(folder, raw, sorted(int(s) for s in starts), transform)), DISK_SOURCE


# --- states and scenarios ---------------------------------------------------------------------------------
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


def random_raw(rng: np.random.Generator, T: int, D: int, dtype: str, repeat: float) -> np.ndarray:
    """Values from a small pool, rows often repeated: long runs, ties, thresholds hitting stored values."""
    pool = np.asarray(POOL)
    raw = rng.choice(pool, size=(T, D))
    same = rng.random(T) < repeat
    for t in range(1, T):
        if same[t]:
            raw[t] = raw[t - 1]
    flip = rng.random((T, D)) < 0.05
    raw[flip] = rng.choice(pool, size=int(flip.sum()))
    return raw.astype(dtype)


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, str, list[int], dict]:
    """Repeated rows (long runs), D up to 66 (packed rows span two words), margins up to 40 (wider than
    a shard): a source, its transform, sequence starts and a query (``Engine.match`` keywords)."""
    T = int(rng.integers(1, 160))
    D = int(rng.choice([1, 3, 9, 66]))
    raw = random_raw(rng, T, D, str(rng.choice(["float16", "float32"])), rng.uniform(0.3, 0.95))
    starts = sorted({int(s) for s in rng.integers(1, max(2, T), size=int(rng.integers(0, 5))) if s < T})
    cells = sorted({int(c) for c in rng.integers(0, D, size=int(rng.integers(1, min(D, 12) + 1)))})
    query = dict(cells=cells, threshold=float(rng.choice([-1.0, -0.3, 0.0, 0.2, 0.5, float(np.tanh(0.25))])),
                 left=int(rng.choice([0, 0, 1, 2, 5, 40])), right=int(rng.choice([0, 0, 1, 3, 40])),
                 top=int(rng.integers(1, 30)), min_length=int(rng.integers(1, 4)),
                 phrase_length=int(rng.choice([0, 0, 0, 1, 2, 3])), distinct=bool(rng.random() < 0.6),
                 sequences=bool(rng.random() < 0.7))
    return raw, str(rng.choice(["tanh", "none"])), starts, query


@st.composite
def oracle_scenarios(draw):
    """Small sources for the brute-force oracle: values from a pool or any float32, float16/32, both
    transforms, sequence starts, a threshold often equal to a stored value."""
    T = draw(st.integers(1, 40))
    D = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(["float16", "float32"]))
    transform = draw(st.sampled_from(["tanh", "none"]))
    values = draw(st.lists(st.one_of(st.sampled_from(POOL), st.floats(-4, 4, width=32)),
                           min_size=T * D, max_size=T * D))
    raw = np.asarray(values, dtype=np.float64).reshape(T, D).astype(dtype)
    starts = sorted(draw(st.sets(st.integers(1, max(1, T - 1)), max_size=4))) if T > 1 else []
    stored = float(raw.flat[draw(st.integers(0, raw.size - 1))])
    exact = math.tanh(stored) if transform == "tanh" else stored       # a threshold at a stored value
    threshold = draw(st.one_of(st.just(exact), st.sampled_from([-1.0, -0.3, 0.0, 0.2, 0.5, 1.0]),
                               st.floats(-1.2, 1.2)))
    return raw, transform, starts, float(threshold)


@st.composite
def scaled_scenarios(draw):
    """Small sources for per-cell scales (NaN and infinities included), a scale and a threshold on it."""
    T = draw(st.integers(2, 30))
    D = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(["float16", "float32", "float64"]))
    pool = POOL + [float("nan"), float("inf"), -float("inf")]
    raw = np.asarray(draw(st.lists(st.one_of(st.sampled_from(pool), st.floats(-4, 4, width=32)),
                                   min_size=T * D, max_size=T * D)), dtype=np.float64).reshape(T, D).astype(dtype)
    scale = draw(st.sampled_from(["zscore", "quantile"]))
    if scale == "zscore":
        raw[np.isinf(raw)] = 1.5            # an infinity makes a cell's mean infinite
    transform = draw(st.sampled_from(["tanh", "none"]))
    starts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=3)))
    if scale == "zscore":
        threshold = draw(st.sampled_from([-1.5, -0.5, 0.0, 0.3, 1.0, 2.0]) | st.floats(-3, 3))
    else:
        threshold = draw(st.sampled_from([0.0, 0.1, 0.5, 0.75, 1.0, 1.2]) | st.floats(-0.1, 1.1))
    return raw, transform, starts, scale, float(threshold)


@st.composite
def parity_scenarios(draw):
    """Larger random sources (float16/32/64, D up to 80, k up to 40) and a query, for parity with NumPy."""
    T = draw(st.integers(1, 300))
    D = draw(st.integers(1, 80))
    dtype = draw(st.sampled_from(["float16", "float32", "float64"]))
    transform = draw(st.sampled_from(["tanh", "none"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    raw = np.where(rng.random((T, D)) < 0.5, rng.choice(np.asarray(POOL), (T, D)),
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


# --- running queries --------------------------------------------------------------------------------------
def rows(engine: Engine, source: str, q: dict) -> list[dict]:
    """``engine.match`` with the keywords of a query dict (``scale`` optional), as dicts."""
    got = engine.match(source, q["cells"], q["threshold"], q["left"], q["right"], top=q["top"],
                       min_length=q["min_length"], phrase_length=q["phrase_length"], distinct=q["distinct"],
                       sequences=q["sequences"], scale=q.get("scale", "none"))
    return [m.as_dict() for m in got]


def golden_query_args(q: dict) -> dict:
    """A golden query as the keywords of ``rows`` (its cells are the stored selection)."""
    return dict(cells=q["expected_cells"], threshold=q["threshold"], left=q["left"], right=q["right"],
                top=q["top"], min_length=q["min_length"], phrase_length=q["phrase_length"],
                distinct=q["distinct"], sequences=q["sequences"])


# --- the implementations ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Implementation:
    """One implementation under test.

    ``make(project)``: its backend for a project (a fresh one, or a shared one). ``on_disk``: its sources
    must be files (shard workers open them by path). ``examples``: how many random scenarios each
    property draws for it (the slow ones get fewer). ``unavailable()``: why it cannot run here, or None.
    ``check(engine, source)``: what else must hold after a query (the layout mode it was meant to use,
    ...). ``reference``: the implementation the others are compared with (not with itself).
    """

    name: str
    make: Callable[[Project], Backend | str]
    on_disk: bool = False
    examples: int = 100
    unavailable: Callable[[], str | None] = field(default=lambda: None)
    check: Callable[[Engine, str], None] | None = None
    reference: bool = False

    def engine(self, raw: np.ndarray, transform: str, starts) -> tuple[Engine, str]:
        """An engine of this implementation over a project holding ``raw``, and the source's name."""
        if self.on_disk:
            project, source = disk_project(raw, transform, starts)
        else:
            project, source = project_from_array(raw, transform, starts), SOURCE
        return Engine(project, backend=self.make(project)), source


def standin_cupy():
    """A CuPy backend on the NumPy stand-in device (tests/gpu/standin.py): the GPU code path on CPUs."""
    from gpu_matcher.backends.cupy import CupyBackend
    from tests.gpu.standin import StandInDevice

    return CupyBackend(StandInDevice())


def streamed_device(T: int, D: int, itemsize: int):
    """A stand-in whose free memory holds a mask, a query's scratch and two 32-step staging chunks, but
    not the keys once T > 64: the keys are streamed in 32-step chunks."""
    from gpu_matcher.backends.cupy import layout_bytes
    from tests.gpu.standin import StandInDevice

    size = layout_bytes(T, D, itemsize)
    return StandInDevice(free=math.ceil((size["mask"] + size["work"] + 2 * 32 * D * itemsize) / 0.9))


def streamed_limit(T: int, D: int, itemsize: int) -> int:
    """The real device's memory limit that makes a source of this size stream (``CudaDevice``)."""
    from gpu_matcher.backends.cupy import layout_bytes

    size = layout_bytes(T, D, itemsize)
    return math.ceil((size["mask"] + size["work"] + 2 * 32 * D * itemsize) / 0.9)


def _streamed(device_for: Callable[[int, int, int], object]):
    """A factory of CuPy backends that stream a project's keys in 32-step chunks."""
    from gpu_matcher.backends import cupy as cupy_module

    class StreamedCupy(cupy_module.CupyBackend):
        def prepare(self, source):
            with mock.patch.object(cupy_module, "CHUNK_BYTES", 32 * source.D * source.dtype.itemsize):
                return super().prepare(source)

    def make(project: Project):
        src = next(iter(project.sources.values()))
        return StreamedCupy(device_for(src.T, src.D, src.dtype.itemsize))
    return make


def _cupy_mode(mode: str) -> Callable[[Engine, str], None]:
    def check(engine: Engine, source: str) -> None:
        from gpu_matcher.backends.cupy import RESIDENT

        want = mode if engine.project.T > 64 else RESIDENT      # 64 steps or fewer always fit
        assert engine.layout(source).mode == want
    return check


def _real_gpu(memory_limit_for=None):
    def make(project: Project):
        from gpu_matcher.backends.cupy import CudaDevice, CupyBackend

        src = next(iter(project.sources.values()))
        limit = None if memory_limit_for is None else memory_limit_for(src.T, src.D, src.dtype.itemsize)
        return CupyBackend(CudaDevice(memory_limit=limit))
    return make


def _serial_shards(backend_spec, shard_steps: int, halo: int = 0):
    def make(project: Project):
        from gpu_matcher.sharded import SerialExecutor, ShardedBackend

        return ShardedBackend(SerialExecutor(backend_spec), shard_steps=shard_steps, halo=halo)
    return make


_DASK: dict[str, object] = {}


def _dask_unavailable() -> str | None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return "the Dask backend needs dask.distributed (the dask extra)"
    return None


def dask_backend(project: Project):
    """The Dask backend on one local cluster shared by the whole session (three workers as threads of
    this process: the real scheduler and protocol, cheap to start); shards of 5 steps."""
    from gpu_matcher.backends.dask import DaskBackend

    if "client" not in _DASK:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=3, threads_per_worker=1, processes=False, silence_logs=40,
                               scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"})
        client = Client(cluster)
        client.wait_for_workers(3, timeout=60)
        _DASK.update(cluster=cluster, client=client)
    return DaskBackend(_DASK["client"], worker_backend="numpy", shard_steps=5, halo=0, warm=False)


def close_dask() -> None:
    """Stop the shared local cluster, if one was started."""
    if "client" in _DASK:
        _DASK.pop("client").close()
        _DASK.pop("cluster").close()


def _no_gpu() -> str | None:
    reason = cupy_unavailable_reason()
    return None if reason is None else f"no GPU: {reason}"


def _executed_unavailable() -> str | None:
    from tests.kernels.executor import unavailable_reason

    return unavailable_reason()


def executed_cupy(project: Project):
    """The CuPy backend on the real kernels/*.cu executed on the CPU (tests/kernels)."""
    from tests.kernels.device import executed_cupy_backend

    return executed_cupy_backend()


def executed_streamed_device(T: int, D: int, itemsize: int):
    """``streamed_device`` with the real kernels executed on the CPU."""
    from gpu_matcher.backends.cupy import layout_bytes
    from tests.kernels.device import ExecutedDevice

    size = layout_bytes(T, D, itemsize)
    return ExecutedDevice(free=math.ceil((size["mask"] + size["work"] + 2 * 32 * D * itemsize) / 0.9))


IMPLEMENTATIONS: list[Implementation] = [
    Implementation("numpy", lambda project: "numpy", examples=250, reference=True),
    Implementation("cupy-standin", lambda project: standin_cupy(), examples=120,
                   check=_cupy_mode("resident")),
    Implementation("cupy-standin-streamed", _streamed(streamed_device), examples=60,
                   check=_cupy_mode("streamed")),
    Implementation("cupy-executed", executed_cupy, examples=40, unavailable=_executed_unavailable,
                   check=_cupy_mode("resident")),
    Implementation("cupy-executed-streamed", _streamed(executed_streamed_device), examples=20,
                   unavailable=_executed_unavailable, check=_cupy_mode("streamed")),
    Implementation("shards-serial", _serial_shards("numpy", 7), on_disk=True, examples=120),
    Implementation("shards-serial-cupy-standin", _serial_shards(standin_cupy, 13), on_disk=True, examples=25),
    # Windows wider than their shards (the statistics' scans take the halo's rows off again).
    Implementation("shards-serial-halo", _serial_shards("numpy", 6, halo=3), on_disk=True, examples=25),
    Implementation("dask", dask_backend, on_disk=True, examples=20, unavailable=_dask_unavailable),
    Implementation("cupy-gpu", _real_gpu(), examples=80, unavailable=_no_gpu, check=_cupy_mode("resident")),
    Implementation("cupy-gpu-streamed", _real_gpu(streamed_limit), examples=40, unavailable=_no_gpu,
                   check=_cupy_mode("streamed")),
]
