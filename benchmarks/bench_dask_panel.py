"""The hypothesis panel's corpus numbers and the whole-timeline n(t) overview under ``--dask``: time and the
server's memory (the process that runs the engine, as ``lstmvis serve --dask local:N`` does).

    python benchmarks/bench_dask_panel.py --data DIR [--T 1e7] [--D 32] [--workers 2] [--code PATH ...]

Writes ``bench_dask.py``'s synthetic Zarr project (float16 AR(1)+tanh states chunked along T) plus a
discrete track ``tag`` (uint8 labels 0..3 in runs of 1..100 steps, an HDF5 file), unless DIR holds it.
Then, for each ``--code`` tree (default: this one), in a fresh process with that tree first on the path:
a LocalCluster of ``--workers`` processes (NumPy on each), the workers' layouts built (not timed here),
one brushed range's S (4-10 cells) and its match, then the panel's numbers exactly as the app computes
them (``bokeh_app.queries.stats_answer``: enrichment of the matches, "every cell on" and "at least m"
over 42 thresholds), twice, and ``Engine.overview`` of n(t) over the whole timeline in 1,000 bins.
Prints per tree: the times, the server's RSS before the panel and its peak after, and a digest of the
answers; the digests of all trees must agree (the same numbers). Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent


def rss_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def add_track(folder: Path, T: int, seed: int) -> None:
    """A discrete ``tag`` track (uint8, runs of 1..100 steps of labels 0..3) in ``labels.h5``."""
    import h5py
    import yaml

    if not (folder / "labels.h5").is_file():
        rng = np.random.default_rng(seed)
        lengths = rng.integers(1, 101, T // 20 + 2)
        values = np.repeat(rng.integers(0, 4, lengths.size).astype(np.uint8), lengths)[:T]
        with h5py.File(folder / "labels.h5.tmp", "w") as f:
            f.create_dataset("tag", data=values, chunks=(1 << 20,))
        (folder / "labels.h5.tmp").rename(folder / "labels.h5")
    config = yaml.safe_load((folder / "lstm.yml").read_text())
    config["files"]["labels"] = "labels.h5"
    config["meta"] = {"tag": {"file": "labels", "path": "tag", "vis": {"type": "discrete"}}}
    (folder / "lstm.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def measure(folder: Path, workers: int, seed: int) -> dict:
    """The figures of one tree (run in a child process: its peak RSS is the server's)."""
    import logging

    from distributed import Client, LocalCluster

    from bokeh_app.queries import stats_answer
    from gpu_matcher import Engine, open_project
    from gpu_matcher.backends.dask import DaskBackend
    from benchmarks.bench_engine import pick_selections

    project = open_project(folder)
    source = project.default_source
    out: dict = {}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                      silence_logs=logging.ERROR,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"}) as cluster, \
            Client(cluster) as client:
        engine = Engine(project, backend=DaskBackend(client, worker_backend="numpy"))
        t0 = time.perf_counter()
        engine.layout(source)
        out["workers_layouts_s"] = round(time.perf_counter() - t0, 1)
        start, end, theta, left, right, cells = pick_selections(engine, source, project.T, 1,
                                                               np.random.default_rng(seed))[0]
        t0 = time.perf_counter()
        matches = engine.match(source, cells, theta, left, right, top=50)
        out["match_s"] = round(time.perf_counter() - t0, 2)
        out["query"] = {"range": [start, end], "theta": theta, "k": len(cells)}
        out["server_rss_before_panel_mib"] = round(rss_mib("VmRSS"), 0)
        out["server_peak_before_panel_mib"] = round(rss_mib("VmHWM"), 0)
        answers = []
        for run in ("first", "second"):
            t0 = time.perf_counter()
            answer = stats_answer(engine, source, matches, cells, theta, "none", "tag", "1")
            out[f"panel_{run}_s"] = round(time.perf_counter() - t0, 2)
            assert not answer.error, answer.error
            answers.append(answer)
        t0 = time.perf_counter()
        lo, hi = engine.overview(source, cells, theta, 0, project.T, 1000)
        out["overview_whole_timeline_s"] = round(time.perf_counter() - t0, 2)
        out["server_peak_after_mib"] = round(rss_mib("VmHWM"), 0)
        a = answers[0]
        numbers = {"enrichment": [r.as_dict() for r in a.enrichment], "points": [p.as_dict() for p in a.points],
                   "now": a.now.as_dict(), "over_m": [p.as_dict() for p in a.over_m],
                   "overview": [lo.tolist(), hi.tolist()]}
        assert answers[1].points == a.points and answers[1].over_m == a.over_m
        out["positives"] = a.now.positives
        out["digest"] = hashlib.sha1(json.dumps(numbers, sort_keys=True).encode()).hexdigest()[:16]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder for the project and the layout caches")
    ap.add_argument("--T", type=float, default=1e7)
    ap.add_argument("--D", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--code", action="append", help="a source tree to measure (repeatable; default: this one)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)        # the child's mode: the project folder
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.workers, args.seed)))
        return
    sys.path.insert(0, str(HERE))
    from benchmarks.bench_dask import make_zarr_project
    from benchmarks.bench_engine import machine

    T = int(args.T)
    data = Path(args.data)
    folder = make_zarr_project(data / f"synth-{T}x{args.D}", T, args.D)
    add_track(folder, T, args.seed)
    results = {}
    for code in args.code or [str(HERE)]:
        env = dict(os.environ, PYTHONPATH=str(Path(code).resolve()), LSTMVIS_CACHE_DIR=str(data / "cache"))
        done = subprocess.run([sys.executable, str(Path(code) / "benchmarks" / Path(__file__).name)
                               if (Path(code) / "benchmarks" / Path(__file__).name).is_file() else __file__,
                               "--measure", str(folder), "--workers", str(args.workers), "--seed", str(args.seed),
                               "--data", str(data)],
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"{code}: the measuring process failed")
        results[code] = json.loads(done.stdout.strip().splitlines()[-1])
    digests = {r["digest"] for r in results.values()}
    print(json.dumps({"machine": machine(), "T": T, "D": args.D, "workers": args.workers,
                      "same_numbers_in_every_tree": len(digests) == 1, "trees": results}, indent=1))


if __name__ == "__main__":
    main()
