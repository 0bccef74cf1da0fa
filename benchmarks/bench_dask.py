"""Scale-out benchmark (issue 7): exact match on a local Dask cluster over a disk-backed Zarr source.

    python benchmarks/bench_dask.py --data DIR [--T 100000000] [--D 128] [--workers 2] [--queries 5]

Writes (streaming, chunk by chunk; never the whole source in memory) a synthetic LSTM-like project with
a float16 Zarr v3 source chunked along T (``benchmarks/synth.py``'s AR(1) states through tanh; sequences
of ~400 steps), unless DIR already holds one of the same size. Then starts a LocalCluster of ``--workers``
processes (one thread each, NumPy backend on each), cuts the source into shards, has the workers build
their shards' layouts (timed apart: not match time), picks brushed ranges that select 4-10 cells, and
times ``Engine.match`` (``--repeat`` times each; median). Prints the machine and:

- median match time, rounds and shard calls per query;
- peak RSS of every worker process (``getrusage`` in each worker) and of the client;
- per-shard throughput: worker-seconds spent in shard calls per 10^9 steps, from the workers' own timers,
  for a new query (every shard builds its state) and a repeated one (the workers kept the states);
- a projection of one query over 2.3*10^9 steps on N workers: compute spread over N workers plus the
  measured per-round latency times the rounds; for GPU workers the per-step cost is an input
  (``--gpu-ns-per-step``; the default is the issue-3 target for the CuPy backend, T=1e8 x D=256 in
  100 ms on an H100, i.e. 1 ns per step -- a target, not a figure measured by this script).

Needs the dask extra (dask[distributed], zarr). Disk: the source is T*D*2 bytes; the workers' NumPy
layouts as much again under DIR/cache (cell-major keys only: with ``--compression none`` the row keys
for verification are read straight from the Zarr chunk files; ``--compression zstd`` or
``LSTMVIS_WORKER_ROW_KEYS=copy`` stores row-major keys too, twice as much). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_engine import machine, pick_selections  # noqa: E402
from benchmarks.synth import (VOCAB, _ar1_block, cell_processes, sequence_starts,  # noqa: E402
                              word_probabilities, write_dictionary_and_config)

GENOME_STEPS = 2.3e9


def make_zarr_project(folder: Path, T: int, D: int, dtype: str = "float16", seed: int = 0,
                      chunk_steps: int = 1 << 16, mean_sequence: int = 400,
                      compression: str = "none") -> Path:
    """``synth.make_project``'s data written straight into Zarr stores, one block of chunks at a time."""
    import zarr

    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "complete.json"
    want = {"T": T, "D": D, "dtype": dtype, "seed": seed, "chunk_steps": chunk_steps,
            "compression": compression}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return folder
    rng = np.random.default_rng(seed)
    phi, sigma, offset, carry = cell_processes(rng, D)
    compressors = None if compression == "none" else "auto"
    states = zarr.open_group(str(folder / "states.zarr"), mode="w")
    arr = states.create_array("states1", shape=(T, D), dtype=dtype, chunks=(chunk_steps, D),
                              compressors=compressors)
    block = max(chunk_steps, (256 * 2**20) // (4 * D) // chunk_steps * chunk_steps)
    t0 = time.perf_counter()
    for start in range(0, T, block):
        stop = min(T, start + block)
        values, carry = _ar1_block(rng, phi, sigma, offset, carry, stop - start)
        arr[start:stop] = values.astype(dtype)
        rate = stop / max(1e-9, time.perf_counter() - t0)
        print(f"\rstates {stop:,}/{T:,} steps ({rate / 1e6:.2f} M steps/s)", end="", file=sys.stderr)
    print(f"\rstates written in {time.perf_counter() - t0:.0f} s" + " " * 30, file=sys.stderr)
    train = zarr.open_group(str(folder / "train.zarr"), mode="w")
    words = train.create_array("words", shape=(T,), dtype="int32", chunks=(chunk_steps * 16,),
                               compressors=compressors)
    p = word_probabilities()
    for start in range(0, T, block * 8):
        stop = min(T, start + block * 8)
        words[start:stop] = (rng.choice(VOCAB, size=stop - start, p=p) + 4).astype(np.int32)
    starts = sequence_starts(rng, T, mean_sequence)
    seq = train.create_array("seq_starts", shape=starts.shape, dtype="int64",
                             chunks=(max(1, min(starts.size, 1 << 20)),))
    seq[:] = starts
    write_dictionary_and_config(folder, f"synth-zarr-{T}x{D}",
                                f"synthetic AR(1)+tanh states, T={T}, D={D}, {dtype}, Zarr chunks of "
                                f"{chunk_steps}", ".zarr")
    marker.write_text(json.dumps(want))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder for the project and the workers' layout cache")
    ap.add_argument("--T", type=float, default=1e8)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--chunk-steps", type=int, default=1 << 16)
    ap.add_argument("--compression", choices=["none", "zstd"], default="none")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-steps", type=int, default=None, help="default: ~512 MB of states per shard")
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpu-ns-per-step", type=float, default=1.0,
                    help="per-step cost of one GPU worker for the projection (default: issue-3 target)")
    ap.add_argument("--check", action="store_true",
                    help="also answer each query in one process (NumPy) and require identical rows "
                         "(builds that process's own layout: 2*T*D*2 more bytes of disk)")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--out", help="also write the figures here as JSON")
    args = ap.parse_args()
    T = int(args.T)
    data = Path(args.data)
    t0 = time.perf_counter()
    folder = data / f"synth-{T}x{args.D}"
    if args.generate_only:
        make_zarr_project(folder, T, args.D, args.dtype, args.seed, args.chunk_steps,
                          compression=args.compression)
        return
    # In a child process, so that this one's peak memory is the client's alone.
    subprocess.run([sys.executable, __file__, "--generate-only"] + sys.argv[1:], check=True)
    print(f"project: {folder} (ready in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    os.environ["LSTMVIS_CACHE_DIR"] = str(data / "cache")          # the workers inherit it

    import logging

    from distributed import Client, LocalCluster

    from gpu_matcher import Engine, open_project
    from gpu_matcher.backends.dask import DaskBackend
    from gpu_matcher.sharded import peak_rss_bytes, worker_report

    project = open_project(folder)
    source = project.default_source
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=0,
                      silence_logs=logging.ERROR,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"}) as cluster, \
            Client(cluster) as client:
        backend = DaskBackend(client, worker_backend="numpy", shard_steps=args.shard_steps)
        engine = Engine(project, backend=backend)
        t1 = time.perf_counter()
        sharded = engine.layout(source)
        layout_s = time.perf_counter() - t1
        print(f"layouts: {sharded.shards} shards built/loaded on {args.workers} workers in {layout_s:.0f} s",
              file=sys.stderr)
        rng = np.random.default_rng(args.seed + 1)
        t1 = time.perf_counter()
        picks = pick_selections(engine, source, T, args.queries, rng)
        select_s = (time.perf_counter() - t1) / max(1, len(picks))

        def busy() -> float:
            reports = client.run(worker_report)
            return sum(sum(v for k, v in r["busy"].items() if k != "prepare") for r in reports.values())

        times, firsts, rounds, calls, found = [], [], [], [], []
        cold, warm = [], []                   # (wall s, worker-busy s) of first and repeated runs
        for start, end, theta, left, right, cells in picks:
            per = []
            for r in range(args.repeat):
                b0 = busy()
                t1 = time.perf_counter()
                rows = engine.match(source, cells, theta, left, right, top=50)
                wall = time.perf_counter() - t1
                per.append(wall)
                (cold if r == 0 else warm).append((wall, busy() - b0))
                if r == 0:
                    rounds.append(backend.last_stats.rounds)
                    calls.append(backend.last_stats.calls)
                    found.append(len(rows))
            firsts.append(per[0])
            times.extend(per[1:] or per)
            print(f"  [{start}, {end}] theta={theta} k={len(cells)}: first {per[0] * 1e3:.0f} ms, "
                  f"median {statistics.median(per) * 1e3:.0f} ms, {backend.last_stats}", file=sys.stderr)
        reports = client.run(worker_report)
        checked = 0
        if args.check:
            single = Engine(open_project(folder), backend="numpy")
            for start, end, theta, left, right, cells in picks:
                want = single.match(source, cells, theta, left, right, top=50)
                assert engine.match(source, cells, theta, left, right, top=50) == want, (start, end)
                checked += 1
            print(f"check: {checked} queries identical to the one-process NumPy engine", file=sys.stderr)

    median = statistics.median(times)
    n_rounds = statistics.median(rounds)

    def throughput(runs):
        """Worker-seconds per step, and the wall time per round beyond the busiest share of work."""
        per_step = statistics.median(b for _w, b in runs) / T
        latency = max(0.0, statistics.median(w - b / args.workers for w, b in runs) / n_rounds)
        return per_step, latency

    # A new query builds every shard's state; a repeated one finds the states kept on the workers.
    figures = {"new_query": throughput(cold), "repeated_query": throughput(warm or cold)}
    projection = {}
    for name, (per_step, latency) in figures.items():
        for n in (1, 8, 32, 64, 128):
            projection.setdefault(str(n), {})[f"cpu_workers_{name}_s"] = round(
                GENOME_STEPS * per_step / n + n_rounds * latency, 2)
    for n in (1, 8, 32, 64, 128):
        projection[str(n)]["gpu_workers_s"] = round(
            GENOME_STEPS * args.gpu_ns_per_step * 1e-9 / n + n_rounds * figures["new_query"][1], 3)
    out = {
        "machine": machine(),
        "sizes": {"T": T, "D": args.D, "dtype": args.dtype, "chunk_steps": args.chunk_steps,
                  "compression": args.compression, "shards": int(sharded.shards),
                  "shard_steps": int(np.diff(sharded.edges).max()), "workers": args.workers},
        "layout_build_s": round(layout_s, 1),
        "select_ms_median": round(select_s * 1e3, 1),
        "match_ms": {"median_repeated": round(median * 1e3, 1),
                     "median_first": round(statistics.median(firsts) * 1e3, 1),
                     "queries": len(picks), "repeat": args.repeat, "results": found},
        "rounds_median": statistics.median(rounds), "calls_median": statistics.median(calls),
        "worker_peak_rss_gib": {w.rsplit(":", 1)[-1]: round(r["peak_rss"] / 2**30, 2) for w, r in reports.items()},
        "worker_busy_s": {w.rsplit(":", 1)[-1]: {k: round(v, 1) for k, v in r["busy"].items()}
                          for w, r in reports.items()},
        "client_peak_rss_gib": round(peak_rss_bytes() / 2**30, 2),
        "per_shard_throughput": {
            name: {"worker_s_per_1e9_steps": round(per_step * 1e9, 1),
                   "steps_per_worker_s": round(1 / max(per_step, 1e-15)),
                   "round_latency_ms": round(latency * 1e3, 1)}
            for name, (per_step, latency) in figures.items()},
        "projection_2.3e9_steps": projection,
        "gpu_ns_per_step_assumed": args.gpu_ns_per_step,
        "checked_against_one_process": checked,
    }
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
