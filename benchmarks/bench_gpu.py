"""GPU benchmark (issue 3 targets): exact match on the CuPy backend, and the NumPy backend on the same data.

    PYTHONPATH=. python3 benchmarks/bench_gpu.py [--sizes 1e7x1024,1e8x256] [--out FILE]
    PYTHONPATH=. python3 benchmarks/bench_gpu.py --standin     # CPU dry run of this script's logic
    PYTHONPATH=. python3 benchmarks/bench_gpu.py --executed    # the same on the real kernels, on the CPU

Data: LSTM-like states made on the GPU, per cell an AR(1) process (phi in [0.85, 0.97]) plus an offset,
stored as float16 and kept as their order-preserving uint16 keys, cell-major (D, T) -- the layout the
backend keeps for a loaded source (``CupyBackend.layout_from_device_keys``, no host copy). Sequences
are 10,000 steps long. Queries: brushed ranges found on the data that select 4-10 cells at theta=0.3
(tanh), margins 0-1, top 50, distinct. Figures:

- median exact match (wall clock, results on the host) over queries x repeats, at a threshold whose
  mask is built (the first query at a threshold pays the mask: "threshold-change cost");
- for sizes marked for NumPy (default: the T=1e7 one), the NumPy backend on the same keys copied to
  host memory, each query once, its answers compared with the GPU's (they must be identical), and the
  speed-up of the medians.

Targets (H100): T=1e7 x D=1024 median <= 10 ms and >= 20x NumPy; T=1e8 x D=256 median <= 100 ms.
Prints the GPU, CuPy and NumPy versions with the figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gpu_matcher.backends.base import MatchQuery  # noqa: E402
from gpu_matcher.backends.cupy import CupyBackend  # noqa: E402
from gpu_matcher.backends.numpy import NumpyBackend  # noqa: E402
from gpu_matcher.source import float_keys, key_threshold  # noqa: E402

SEQUENCE = 10_000
THETA = 0.3


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        t, d = part.lower().split("x")
        out.append((int(float(t)), int(float(d))))
    return out


# --- data ---------------------------------------------------------------------------------------------------
def synth_keys(xp, T: int, D: int, seed: int, chunk_bytes: int = 3 << 30):
    """(D, T) uint16 keys of float16 AR(1) states, made on the device a few cells at a time.

    AR(1) by log-doubling: after passes s = 1, 2, 4 .. 32, y_t = sqrt(1-phi^2) * sum_{j<64} phi^j eps_{t-j}
    (phi^64 <= 0.15: the truncated tail is noise-like anyway). Each pass is out of place (no aliasing).
    """
    assert T % 32 == 0, "T must be a multiple of 32 (the layout's word)"
    host_rng = np.random.default_rng(seed)
    phi = host_rng.uniform(0.85, 0.97, D).astype(np.float32)
    offset = host_rng.uniform(-1.0, 0.5, D).astype(np.float32)
    keys = xp.empty((D, T), dtype=xp.uint16)
    cells = max(1, min(D, chunk_bytes // (4 * T)))
    if xp is np:
        rng = np.random.default_rng(seed + 1)
        normal = lambda shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    else:
        rs = xp.random.RandomState(seed + 1)
        normal = lambda shape: rs.standard_normal(shape, dtype=xp.float32)  # noqa: E731
    for c0 in range(0, D, cells):
        c1 = min(D, c0 + cells)
        p = xp.asarray(phi[c0:c1])[:, None]
        y = normal((c1 - c0, T)) * xp.sqrt(1 - p * p)
        s, power = 1, p
        while s < 64:
            nxt = y.copy()
            nxt[:, s:] += power * y[:, :-s]
            y, s, power = nxt, 2 * s, power * power
        raw = (y + xp.asarray(offset[c0:c1])[:, None]).astype(xp.float16)
        del y, nxt
        keys[c0:c1] = device_float16_keys(xp, raw)
        del raw
    return keys


def device_float16_keys(xp, raw16):
    """``gpu_matcher.source.float_keys`` for float16, on the device (checked against it on a sample)."""
    bits = raw16.view(xp.uint16)
    bits = xp.where(bits == 0x8000, xp.uint16(0), bits)                  # -0.0 -> +0.0
    keys = xp.where((bits & 0x8000) != 0, ~bits, bits | xp.uint16(0x8000))
    keys[xp.isnan(raw16)] = 0
    return keys


def check_keys_mapping(xp, to_host) -> None:
    sample = np.array([-np.inf, -65504, -1.5, -0.0, 0.0, 1e-7, 0.3, 1.0, 65504, np.inf, np.nan],
                      dtype=np.float16)
    sample = np.concatenate([sample, np.random.default_rng(0).normal(0, 2, 4096).astype(np.float16)])
    got = to_host(device_float16_keys(xp, xp.asarray(sample)))
    assert np.array_equal(got, float_keys(sample)), "device float16 keys differ from float_keys"


def pick_queries(xp, to_host, keys, T: int, D: int, want: int, seed: int) -> list[MatchQuery]:
    """Brushed ranges selecting 4-10 cells (MATCHING.md "Select"), found on the device in batches."""
    rng = np.random.default_rng(seed)
    kt = key_threshold(THETA, "tanh", np.float16)
    bounds = np.arange(0, T + 1, SEQUENCE, dtype=np.int64)
    if bounds[-1] != T:
        bounds = np.append(bounds, T)
    found: list[MatchQuery] = []
    for _ in range(400):
        length, left, right = int(rng.integers(1, 9)), int(rng.integers(0, 2)), int(rng.integers(0, 2))
        start = rng.integers(8, T - 16, 512)
        seq_lo = start // SEQUENCE * SEQUENCE
        start = start[(start - left >= seq_lo) & (start + length + right <= np.minimum(seq_lo + SEQUENCE, T))]
        if start.size == 0:
            continue
        idx = xp.asarray(start[:, None] + np.arange(-left, length + right))
        on = keys[:, idx] >= kt                                            # (D, n, width)
        inside = on[:, :, left:left + length].all(axis=2)
        outside = on[:, :, :left].any(axis=2) | on[:, :, left + length:].any(axis=2)
        chosen = to_host(inside & ~outside)                                # (D, n)
        counts = chosen.sum(axis=0)
        for j in np.flatnonzero((counts >= 4) & (counts <= 10))[:2]:
            cells = tuple(int(c) for c in np.flatnonzero(chosen[:, j]))
            found.append(MatchQuery(cells=cells, key_threshold=kt, bounds=bounds, left=left,
                                    right=right, top=50, min_length=2, phrase_length=0, distinct=True))
            if len(found) == want:
                return found
    return found


def numpy_layout(keys_rows: np.ndarray, keys_cells: np.ndarray):
    """The NumPy backend's layout over host keys (wrapped as the source module expects)."""
    from gpu_matcher import source

    wrap = getattr(source, "KeyStore", None)
    make = wrap if wrap is not None else (lambda a: a)
    return source.Layout(keys_rows=make(keys_rows), keys_cells=make(keys_cells), location=None)


def host_copies(xp, keys, T: int, D: int, to_host):
    """Host (T, D) and (D, T) copies of device keys, transposed on the device in chunks of steps."""
    cells = to_host(keys)
    rows = np.empty((T, D), dtype=np.uint16)
    step = max(32, (1 << 30) // (2 * D))
    for t0 in range(0, T, step):
        t1 = min(T, t0 + step)
        rows[t0:t1] = to_host(xp.ascontiguousarray(keys[:, t0:t1].T))
    return rows, cells


# --- measuring ----------------------------------------------------------------------------------------------
def clock(fn, sync) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    sync()
    return (time.perf_counter() - t0) * 1e3, out


def rows_of(result) -> list[tuple]:
    return [(r.start, r.end, r.length, r.inter, r.union) for r in result]


def bench_size(xp, backend, to_host, sync, T: int, D: int, args, numpy_too: bool, deadline: float) -> dict:
    fig: dict = {"T": T, "D": D}
    t0 = time.perf_counter()
    keys = synth_keys(xp, T, D, seed=T % 1000 + D)
    sync()
    fig["generate_s"] = round(time.perf_counter() - t0, 2)
    layout = backend.layout_from_device_keys(keys, T=T, name=f"synth {T}x{D}")
    queries = pick_queries(xp, to_host, keys, T, D, args.queries, seed=D)
    fig["queries"] = len(queries)
    fig["cells"] = [len(q.cells) for q in queries]
    print(f"  T={T:,} D={D}: keys {keys.nbytes / 2**30:.1f} GiB uint16 on the GPU, generated in "
          f"{fig['generate_s']} s; {len(queries)} queries selecting {fig['cells']} cells", flush=True)
    if not queries:
        return fig
    # Warm-up (kernel compilation, CuPy's own kernels), then the threshold-change cost on fresh thresholds.
    backend.match(layout, queries[0])
    costs = []
    for i in range(3):
        layout.masks.clear()
        key = key_threshold(THETA + 0.01 * (i + 1), "tanh", np.float16)
        costs.append(clock(lambda: backend.threshold_mask(layout, key), sync)[0])
    layout.masks.clear()
    fig["threshold_change_ms"] = round(statistics.median(costs), 2)
    first = [clock(lambda: backend.match(layout, queries[0]), sync)[0]]      # builds the 0.3 mask
    fig["first_query_after_threshold_change_ms"] = round(first[0], 2)
    times, per_query, answers = [], [], []
    for q in queries:
        ts = []
        for _ in range(args.repeat):
            ms, res = clock(lambda: backend.match(layout, q), sync)
            ts.append(ms)
        times += ts
        per_query.append(round(statistics.median(ts), 2))
        answers.append(rows_of(res))
    fig["gpu_median_ms"] = round(statistics.median(times), 2)
    fig["gpu_per_query_median_ms"] = per_query
    fig["results_per_query"] = [len(a) for a in answers]
    print(f"    GPU   median {fig['gpu_median_ms']:.2f} ms over {len(times)} runs (per query "
          f"{per_query}); threshold change {fig['threshold_change_ms']:.2f} ms; first query at a new "
          f"threshold {fig['first_query_after_threshold_change_ms']:.2f} ms", flush=True)
    if numpy_too and time.perf_counter() < deadline - 60:
        t0 = time.perf_counter()
        keys_rows, keys_cells = host_copies(xp, keys, T, D, to_host)
        fig["host_copy_s"] = round(time.perf_counter() - t0, 1)
        host_layout = numpy_layout(keys_rows, keys_cells)
        cpu = NumpyBackend()
        cpu_times, same = [], []
        for q, want in zip(queries, answers):
            if time.perf_counter() > deadline - 30 and cpu_times:
                break
            ms, res = clock(lambda: cpu.match(host_layout, q), lambda: None)
            cpu_times.append(ms)
            same.append(rows_of(res) == want)
        fig["numpy_queries"] = len(cpu_times)
        fig["numpy_median_ms"] = round(statistics.median(cpu_times), 1)
        fig["parity"] = all(same)
        gpu_same = statistics.median(times[:len(cpu_times) * args.repeat])
        fig["speedup"] = round(fig["numpy_median_ms"] / max(gpu_same, 1e-6), 1)
        print(f"    NumPy median {fig['numpy_median_ms']:.1f} ms over {len(cpu_times)} queries (same "
              f"data, host copy {fig['host_copy_s']} s); speed-up {fig['speedup']}x; answers "
              f"{'identical' if fig['parity'] else 'DIFFER'}", flush=True)
        del keys_rows, keys_cells, host_layout
    elif numpy_too:
        fig["numpy_skipped"] = "time budget"
    layout = keys = None                                  # free the device memory before the next size
    return fig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=None, help="TxD,... (default 1e7x1024,1e8x256)")
    ap.add_argument("--numpy-sizes", default="0", help="indices into --sizes also run on NumPy")
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--budget-s", type=float, default=230, help="stop starting new work after this")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--standin", action="store_true", help="NumPy stand-in device: a CPU dry run")
    ap.add_argument("--executed", action="store_true",
                    help="the real kernels executed on the CPU (tests/kernels, needs g++): a CPU dry run")
    args = ap.parse_args()
    start = time.perf_counter()
    deadline = start + args.budget_s

    if args.standin or args.executed:
        if args.executed:
            from tests.kernels.device import ExecutedDevice

            device = ExecutedDevice()
        else:
            from tests.gpu.standin import StandInDevice

            device = StandInDevice()
        xp, sync = np, (lambda: None)
        sizes = parse_sizes(args.sizes or ("3200x64,6400x48" if args.executed else "32000x100,64000x48"))
        print(f"device: {device.describe()} (dry run: figures mean nothing)")
    else:
        from gpu_matcher.backends import cupy_unavailable_reason

        reason = cupy_unavailable_reason()
        if reason is not None:
            print(f"bench_gpu: no GPU here: {reason} (--standin runs a CPU dry run)")
            return 2
        import cupy

        from gpu_matcher.backends.cupy import CudaDevice

        device = CudaDevice()
        xp, sync = cupy, cupy.cuda.runtime.deviceSynchronize
        sizes = parse_sizes(args.sizes or "1e7x1024,1e8x256")
        print(f"device: {device.describe()}; CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
              f"driver {cupy.cuda.runtime.driverGetVersion()}")
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}, NumPy {np.__version__}", flush=True)
    backend = CupyBackend(device)
    to_host = backend.to_host
    check_keys_mapping(xp, to_host)
    numpy_idx = {int(i) for i in args.numpy_sizes.split(",") if i.strip() != ""}
    figures = []
    for i, (T, D) in enumerate(sizes):
        if time.perf_counter() > deadline - 30:
            print(f"  T={T:,} D={D}: skipped (time budget)")
            figures.append({"T": T, "D": D, "skipped": "time budget"})
            continue
        figures.append(bench_size(xp, backend, to_host, sync, T, D, args, i in numpy_idx, deadline))
        if xp is not np:
            xp.get_default_memory_pool().free_all_blocks()

    print("\nsummary (wall clock per exact match, results on the host):")
    print(f"{'T':>12} {'D':>5} {'GPU med ms':>11} {'NumPy med ms':>13} {'speed-up':>9} "
          f"{'thr change ms':>14} {'parity':>7}  target")
    for f in figures:
        if "gpu_median_ms" not in f:
            print(f"{f['T']:>12,} {f['D']:>5}  (no figures: {f.get('skipped', 'no queries found')})")
            continue
        big = f["T"] >= 10**8
        target_ms = 100 if big else 10
        ok = f["gpu_median_ms"] <= target_ms and (big or f.get("speedup", 0) >= 20)
        target = f"<= {target_ms} ms" + ("" if big else ", >= 20x NumPy")
        print(f"{f['T']:>12,} {f['D']:>5} {f['gpu_median_ms']:>11.2f} "
              f"{f.get('numpy_median_ms', float('nan')):>13.1f} {f.get('speedup', float('nan')):>9.1f} "
              f"{f['threshold_change_ms']:>14.2f} {str(f.get('parity', '-')):>7}  {target}: "
              f"{'MET' if ok else 'NOT MET'}")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device.describe(), "figures": figures}, indent=1))
    return 0 if all(f.get("parity", True) for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
