"""The Dask backend on a real LocalCluster: the one-process answers on the golden sets converted to Zarr
with tiny shards (matches, and the hypothesis panel's corpus scans); a worker killed mid-query;
``lstmvis match --dask``. (The golden sets in HDF5 and every
random scenario on a local cluster: the ``dask`` entry of ``tests/engine/test_conformance.py``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed", reason="the Dask backend needs dask.distributed (the dask extra)")
pytest.importorskip("zarr", minversion="3", reason="Zarr sources need zarr >= 3 (the dask extra)")

from distributed import Client, LocalCluster, WorkerPlugin  # noqa: E402

from gpu_matcher import Engine, open_project  # noqa: E402
from gpu_matcher.backends.dask import DaskBackend  # noqa: E402
from gpu_matcher.io.zarr_convert import convert_project_to_zarr  # noqa: E402
from tests.conftest import GOLDEN, golden_queries, golden_sets  # noqa: E402
from tests.dask.common import SOURCE, engine_rows, golden_query_args, random_case  # noqa: E402
from tests.engine.conformance import rows  # noqa: E402

SETS = golden_sets()
REPO = Path(__file__).resolve().parents[2]
NO_DASHBOARD = {"dashboard": False, "dashboard_address": ":0"}     # and no clash on port 8787


@pytest.fixture(scope="module")
def client():
    """Three workers as threads of this process: cheap to start, the real scheduler and protocol."""
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False, silence_logs=40,
                      scheduler_kwargs=NO_DASHBOARD) as cluster, Client(cluster) as c:
        c.wait_for_workers(3, timeout=60)
        yield c


@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
@pytest.mark.parametrize("name", SETS)
def test_golden_sets_in_zarr_on_a_local_cluster(client, tmp_path, name):
    """Shards of 96 steps (Zarr chunks of 32): runs, margins and sequence starts straddle shard edges."""
    folder = convert_project_to_zarr(GOLDEN / name / "project", tmp_path / name, chunk_steps=32,
                                     progress=False).folder
    backend = DaskBackend(client, worker_backend="numpy", shard_steps=96, halo=0)
    engine = Engine(open_project(folder), backend=backend)
    crossing = 0
    for q in golden_queries(name):
        assert rows(engine, q["source"], golden_query_args(q)) == q["expected"], q
        crossing += backend.last_stats.crossing
    assert crossing > 0 and engine.layout(q["source"]).shards > 20


@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
@pytest.mark.parametrize("name", SETS)
def test_the_panel_in_zarr_on_a_local_cluster(client, tmp_path, name):
    """The hypothesis panel's numbers, the suggestions, the phrase map and the n(t) overview computed by
    the workers shard by shard (the label read by each worker from the Zarr track) equal NumPy's on the
    HDF5 original."""
    from gpu_matcher import stats
    from tests.stats.test_stats_sharded import panel_numbers

    folder = convert_project_to_zarr(GOLDEN / name / "project", tmp_path / name, chunk_steps=32,
                                     progress=False).folder
    engine = Engine(open_project(folder), backend=DaskBackend(client, worker_backend="numpy", shard_steps=96,
                                                              halo=32))
    reference = Engine(open_project(GOLDEN / name / "project"), backend="numpy")
    source, T = reference.project.default_source, reference.project.T
    assert stats.label_target(engine, "pos", 0).locator.arrays[0].kind == "zarr"
    label = reference.project.meta["pos"].label(int(stats.track_values(reference, "pos")[5]))
    cells = reference.select(source, 5, 7, 0.2).cells or [0, 1]
    args = (source, "pos", label, cells, 0.2, (5, 7), 1, 2)
    assert panel_numbers(engine, *args) == panel_numbers(reference, *args)
    for bins in (7, 1000, T):
        got, want = engine.overview(source, cells, 0.2, 0, T, bins), reference.overview(source, cells, 0.2, 0, T,
                                                                                         bins)
        assert [g.tolist() for g in got] == [w.tolist() for w in want]


class KillOnce(WorkerPlugin):
    """Ends the worker process that starts the first task whose key begins with ``prefix``, once
    (the flag file is the token: whoever removes it exits)."""

    def __init__(self, flag: str, prefix: str):
        self.flag, self.prefix = flag, prefix

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith(self.prefix):
            try:
                os.remove(self.flag)
            except FileNotFoundError:
                return
            os._exit(1)


@pytest.mark.parametrize("allowed_failures", [3, 0])
def test_a_worker_killed_mid_query(tmp_path, allowed_failures):
    """Two worker processes; the one running the first group round dies mid-query. By default the
    scheduler reruns its task elsewhere; with ``allowed-failures: 0`` it gives up at once
    (``KilledWorker``) and the backend's own resubmission brings the query home. Same answer as one
    process either way (the new worker rebuilds the shard's window and state from the path)."""
    import dask

    project, q = None, None
    for seed in range(100, 200):            # a case with several groups and crossing runs
        project, q = random_case(np.random.default_rng(seed), tmp_path / str(seed))
        if project.T > 100 and len(engine_rows(project, q)) >= 3:
            break
    want = engine_rows(project, q)
    flag = tmp_path / "kill.flag"
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, silence_logs=50,
                          scheduler_kwargs=NO_DASHBOARD) as cluster, Client(cluster) as c:
            c.register_plugin(KillOnce(str(flag), "lstmvis-rows-"))
            backend = DaskBackend(c, worker_backend="numpy", shard_steps=16, halo=0)
            engine = Engine(project, backend=backend)
            engine.layout(SOURCE)
            flag.write_text("kill")
            assert rows(engine, SOURCE, q) == want
            assert not flag.exists(), "no worker was killed"
            assert rows(engine, SOURCE, q) == want                  # and the next query too


@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
def test_match_cli_with_dask_and_without(tmp_path):
    name = SETS[0]
    q = golden_queries(name)[0]
    args = [sys.executable, "-m", "gpu_matcher.cli", "match", str(GOLDEN / name / "project"),
            "--source", q["source"], "--threshold", str(q["threshold"]), "--cells",
            ",".join(map(str, q["expected_cells"])), "--left", str(q["left"]), "--right", str(q["right"]),
            "--top", str(q["top"]), "--min-length", str(q["min_length"]), "--backend", "numpy"]
    if not q["sequences"]:
        args.append("--no-sequences")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(args + ["--dask", "local:2", "--shard-steps", "250"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["matches"] == q["expected"] and result["backend"] == "dask"
    assert result["dask"]["shards"] == -(-open_project(GOLDEN / name / "project").T // 250)
    assert "distributed" not in out.stderr.lower()          # no scheduler chatter without -v

    # Without --dask nothing of Dask (or Zarr) is imported.
    probe = ("import sys, runpy; sys.argv = " + repr(["lstmvis"] + args[3:]) + "\n"
             "try:\n    runpy.run_module('gpu_matcher.cli', run_name='__main__')\n"
             "except SystemExit as e:\n    assert not e.code, e.code\n"
             "bad = [m for m in ('dask', 'distributed', 'zarr') if m in sys.modules]\n"
             "assert not bad, bad\n")
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                           env=env)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout.splitlines()[0])["matches"] == q["expected"]

    bad = subprocess.run(args + ["--dask", "local:x"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "local:N" in bad.stderr and "Traceback" not in bad.stderr
