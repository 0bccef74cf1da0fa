"""Engine benchmark (issue 2 targets): select, context, exact match, threshold change, peak RSS.

    python benchmarks/bench_engine.py [--T 1000000] [--D 650] [--dtype float16] [--data DIR] [--backend numpy]

Generates the synthetic project (benchmarks/synth.py) once under --data, builds the derived layout
(timed separately), then measures the exact match per selection size (4, 10, 27, 53 and 163 cells:
brushed selections cut to k cells; medians and spreads over runs, first queries, a never-used threshold
and the switch back), and on brushed ranges that select 4-10 cells. Peak RSS is measured on a
separate `lstmvis match` process. Prints the machine, backend and sizes with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.synth import make_project  # noqa: E402
from gpu_matcher import Engine, open_project  # noqa: E402


#: Runs ``lstmvis ARGS`` and prints its own peak RSS (``VmHWM`` of /proc/self/status) to stderr.
PEAK_WRAPPER = """
import runpy, sys
sys.argv = ["lstmvis", *sys.argv[1:]]
try:
    runpy.run_module("gpu_matcher.cli", run_name="__main__")
finally:
    print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).strip(), file=sys.stderr)
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, numpy {np.__version__}"


def timed(fn, repeat: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times[0], statistics.median(times), out


def pick_selections(engine: Engine, source: str, T: int, want: int, rng) -> list[tuple]:
    """Brushed ranges (start, end, threshold, left, right) selecting 4..10 cells."""
    picks, tries = [], 0
    while len(picks) < want and tries < 5000:
        tries += 1
        start = int(rng.integers(100, T - 100))
        end = start + int(rng.integers(0, 4))
        theta = float(rng.choice([0.3, 0.4, 0.5, 0.6]))
        left, right = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        try:
            cells = engine.select(source, start, end, theta, left, right).cells
        except Exception:
            continue
        if 4 <= len(cells) <= 10:
            picks.append((start, end, theta, left, right, cells))
    return picks



SIZES = (4, 10, 27, 53, 163)


def pick_sized(engine: Engine, source: str, T: int, sizes, per_size: int, rng) -> dict[int, list[tuple]]:
    """For each size k, brushed ranges whose S has at least k cells, cut to its first k cells (the
    user removing cells by hand). The highest threshold that selects enough cells is used."""
    out: dict[int, list[tuple]] = {k: [] for k in sizes}
    thetas = (0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0, -0.2, -0.4)
    tries = 0
    while any(len(v) < per_size for v in out.values()) and tries < 20000:
        tries += 1
        start = int(rng.integers(100, T - 100))
        end = start + int(rng.integers(0, 3))
        left, right = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        for theta in thetas:
            try:
                cells = engine.select(source, start, end, theta, left, right).cells
            except Exception:
                break
            fits = [k for k in sizes if len(out[k]) < per_size and len(cells) >= k
                    and (k == max(s for s in sizes if s <= len(cells)))]
            if fits:
                k = fits[0]
                out[k].append((start, end, theta, left, right, cells[:k]))
                break
    return out


def spread(values) -> str:
    return f"{statistics.median(values):7.2f} ms (min {min(values):.1f}, max {max(values):.1f})"


def bench_sizes(engine: Engine, source: str, T: int, per_size: int, repeat: int, rng) -> None:
    """Per selection size: first query, median of repeats per selection, and a threshold never used
    before followed by a switch back to the previous one (should cost a repeat)."""
    sized = pick_sized(engine, source, T, SIZES, per_size, rng)
    for k in SIZES:
        picks = sized[k]
        if not picks:
            print(f"match k={k:3d}: no brushed selection found")
            continue
        firsts, meds, alls, news, backs, tops = [], [], [], [], [], []
        for i, (start, end, theta, left, right, cells) in enumerate(picks):
            first, med, res = timed(lambda: engine.match(source, cells, theta, left, right), repeat)
            runs = [timed(lambda: engine.match(source, cells, theta, left, right), 1)[0]
                    for _ in range(repeat)]
            firsts.append(first)
            meds.append(statistics.median(runs))
            alls.extend(runs)
            tops.append(res[0].inter if res else 0)
            fresh = round(theta + 0.0113 * (k % 7 + 1) + 0.0031 * i, 4)   # never used before
            news.append(timed(lambda: engine.match(source, cells, fresh, left, right), 1)[0])
            backs.append(timed(lambda: engine.match(source, cells, theta, left, right), 1)[0])
        print(f"match k={k:3d} ({len(picks)} selections x {repeat} runs, top inter {tops}): "
              f"median {spread(alls)}; per-selection medians {min(meds):.1f}..{max(meds):.1f}")
        print(f"      k={k:3d} first query of a selection {spread(firsts)}; "
              f"new threshold {spread(news)}; back to the previous threshold {spread(backs)}")

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=1_000_000)
    ap.add_argument("--D", type=int, default=650)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--data", default="/tmp/lstmvis-bench")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--queries", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--per-size", type=int, default=3, help="selections per size k in %s" % (SIZES,))
    ap.add_argument("--only-sizes", action="store_true", help="only the per-size match figures")
    args = ap.parse_args()

    folder = Path(args.data) / f"synth-{args.T}x{args.D}-{args.dtype}"
    if not (folder / "lstm.yml").is_file():
        t0 = time.perf_counter()
        make_project(folder, args.T, args.D, args.dtype, seed=1, progress=True)
        print(f"generated {folder} in {time.perf_counter() - t0:.1f} s")
    print(f"machine: {machine()}")
    print(f"dataset: T={args.T:,} D={args.D} {args.dtype} ({folder})")
    project = open_project(folder)
    source = project.default_source
    engine = Engine(project, backend=args.backend)
    print(f"backend: {engine.backend.name}")
    t0 = time.perf_counter()
    engine.layout(source)
    print(f"derived layout (build or load): {time.perf_counter() - t0:.2f} s")

    rng = np.random.default_rng(7)
    bench_sizes(engine, source, args.T, args.per_size, args.repeat, np.random.default_rng(11))
    if args.only_sizes:
        return
    picks = pick_selections(engine, source, args.T, args.queries, rng)
    # Fresh places (not the picks, whose rows HDF5 has cached): the first read of each is timed.
    fresh = [int(x) for x in rng.integers(100, args.T - 200, 40)]
    sel_t, ctx_t = [], []
    for i, pos in enumerate(fresh):
        lo, hi = project.sequence_of(pos)
        start, end = max(lo, min(pos, hi - 3)), min(hi - 1, max(pos, lo) + 2)
        if i % 2:
            sel_t.append(timed(lambda: engine.select(source, start, end, 0.4, 1, 1), 1)[0])
        else:
            ctx_t.append(timed(lambda: engine.context(source, pos - 50, pos + 50, picks[0][5], 0.4), 1)[0])
    firsts, medians, counts = [], [], []
    for start, end, theta, left, right, cells in picks:
        first, med, res = timed(lambda: engine.match(source, cells, theta, left, right), args.repeat)
        firsts.append(first)
        medians.append(med)
        counts.append((len(cells), res[0].inter if res else 0, len(res)))
    # A threshold never used before on this source: the first query pays everything threshold-related.
    new_theta_t = []
    for i, (start, end, theta, left, right, cells) in enumerate(picks[:5]):
        fresh = round(0.31 + 0.0137 * (i + 1), 4)
        new_theta_t.append(timed(lambda: engine.match(source, cells, fresh, left, right), 1)[0])
    print(f"select     first read at {len(sel_t)} fresh places: median {statistics.median(sel_t):7.2f} ms (max {max(sel_t):.2f})")
    print(f"context    100 steps x {args.D} cells, fresh places: median {statistics.median(ctx_t):7.2f} ms (max {max(ctx_t):.2f})")
    print(f"match      4-10 cells, top 50 distinct: median {statistics.median(medians):7.2f} ms "
          f"(per-query medians {min(medians):.1f}..{max(medians):.1f})")
    print(f"match      first query per selection:   median {statistics.median(firsts):7.2f} ms (max {max(firsts):.1f})")
    print(f"match      first query at a new threshold: max {max(new_theta_t):7.2f} ms "
          f"(median {statistics.median(new_theta_t):.1f})")
    print(f"selections (k, top inter, n results): {counts}")
    # Phrase search over the whole word timeline (the first call also reads the timeline).
    phrases = [" ".join(project.tokens(s, s + 2)) for s in rng.integers(0, args.T - 2, 5).tolist()]
    first_search = timed(lambda: engine.search(phrases[0]), 1)[0]
    search_t = [timed(lambda ph=ph: engine.search(ph), 3)[1] for ph in phrases]
    hits = [len(engine.search(ph)) for ph in phrases]
    print(f"search     2-word phrases over {args.T:,} tokens: median {statistics.median(search_t):7.2f} ms "
          f"(first call incl. reading the timeline {first_search:.1f} ms; hits {hits})")

    if not args.no_rss:
        start, end, theta, left, right, cells = picks[0]
        cli = ["match", str(folder), "--threshold", str(theta), "--start", str(start), "--end", str(end),
               "--left", str(left), "--right", str(right), "--backend", args.backend, "--repeat", "5"]
        # The process's own high-water mark (VmHWM), read by itself as it exits: a child's ru_maxrss
        # (wait4) starts from this script's RSS at the fork, so it reported the parent's size.
        cmd = [sys.executable, "-c", PEAK_WRAPPER, *cli]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        peak = [line for line in proc.stderr.splitlines() if line.startswith("VmHWM:")]
        if proc.returncode != 0 or not peak:
            print(f"lstmvis match failed: {proc.stderr.strip()}")
        else:
            out = json.loads(proc.stdout)
            print(f"lstmvis match process: peak RSS {int(peak[-1].split()[1]) / 1024:.0f} MB, "
                  f"timing {out['timing_ms']}")

if __name__ == "__main__":
    main()
