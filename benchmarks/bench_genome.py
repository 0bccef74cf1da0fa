"""Genome benchmark (issue 15): a synthetic genome of N bases written as FASTA, converted, opened, read.

Prints: FASTA conversion throughput (``convert_fasta``), time to open the project, a go-to-coordinate
read (parse ``chr1:...``, then 1,000 bases and every track there), the overview of the largest contig
(``bins`` bins) for an interval track (N/1000 BED intervals), a dense track and n(t) of a state source,
an IUPAC motif search over the whole genome (both strands), and the process's peak memory. Not a test.

The genome: three contigs (90 %, 5 %, 5 % of N), uniform random bases with 10 % soft-masked runs and
N runs, lines of 60 bases, streamed to disk in blocks (never whole in memory). The state source is a cheap
synthetic one (n(t) needs states): ``--dim`` float16 sinusoids of different periods plus noise, written
in 2^20-step blocks through ``gpu_matcher.io.sources.add_source`` (HDF5), and a dense per-base track the
same way; both are timed but are not what a model's extraction costs.

    python benchmarks/bench_genome.py                    # 10^8 bases (minutes; ~3 GB disk)
    python benchmarks/bench_genome.py --bases 1000000    # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_matcher.engine import Engine  # noqa: E402
from gpu_matcher.genome.fasta import convert_fasta  # noqa: E402
from gpu_matcher.genome.motif import find  # noqa: E402
from gpu_matcher.genome.tracks import add_bed  # noqa: E402
from gpu_matcher.io.sources import add_dense_track, add_source  # noqa: E402
from gpu_matcher.project import open_project  # noqa: E402

LINE = 60
BLOCK = 1 << 22                   # bases generated per block (a multiple of LINE below)
STATE_BLOCK = 1 << 20


def contig_lengths(bases: int) -> dict[str, int]:
    small = max(1, bases // 20)
    return {"chr1": bases - 2 * small, "chr2": small, "chr3": small}


def write_fasta(path: Path, lengths: dict[str, int], seed: int) -> None:
    """Random bases, 60 per line, soft-masked and N runs, written block by block."""
    rng = np.random.default_rng(seed)
    upper, lower = np.frombuffer(b"ACGT", np.uint8), np.frombuffer(b"acgt", np.uint8)
    block = BLOCK // LINE * LINE
    with open(path, "wb") as fh:
        for name, length in lengths.items():
            fh.write(f">{name} synthetic\n".encode())
            for lo in range(0, length, block):
                n = min(block, length - lo)
                picks = rng.integers(0, 4, size=n)
                bases = upper[picks]
                runs = rng.integers(0, n, size=max(1, n // 10_000))
                for r in runs[: runs.size // 2]:
                    bases[r:r + 200] = lower[picks[r:r + 200]]     # soft-masked repeats
                for r in runs[runs.size // 2:][:4]:
                    bases[r:r + 500] = ord("N")
                full = n // LINE * LINE
                lines = np.empty((full // LINE, LINE + 1), np.uint8)
                lines[:, :LINE] = bases[:full].reshape(-1, LINE)
                lines[:, LINE] = ord("\n")
                fh.write(lines.tobytes())
                if n > full:
                    fh.write(bases[full:].tobytes() + b"\n")


def write_bed(path: Path, lengths: dict[str, int], seed: int) -> int:
    rng = np.random.default_rng(seed + 1)
    rows = []
    for name, length in lengths.items():
        count = max(1, length // 1000)
        starts = np.sort(rng.integers(0, max(1, length - 500), size=count))
        ends = np.minimum(length, starts + rng.integers(50, 500, size=count))
        rows += [f"{name}\t{a}\t{b}\tpeak\t{s}\t+" for a, b, s in zip(starts, ends, rng.integers(0, 1000, count))]
    path.write_text("\n".join(rows) + "\n")
    return len(rows)


def state_blocks(T: int, dim: int, seed: int):
    """Sinusoids of ``dim`` periods plus noise, one block of ``STATE_BLOCK`` steps at a time: each block
    from one precomputed block by the angle-addition rule, the noise a precomputed table read at a random
    offset (cheap: ~10 s per 10^8 x 32 steps here, so the benchmark times the project, not this)."""
    rng = np.random.default_rng(seed + 2)
    periods = 50.0 * 1.7 ** np.arange(dim)
    angle = 2 * np.pi * np.arange(STATE_BLOCK, dtype=np.float64)[:, None] / periods
    sin, cos = np.sin(angle).astype(np.float32), np.cos(angle).astype(np.float32)
    noise = 0.2 * rng.standard_normal((STATE_BLOCK + 4096, dim), dtype=np.float32)
    for lo in range(0, T, STATE_BLOCK):
        n = min(STATE_BLOCK, T - lo)
        shift = 2 * np.pi * (lo % periods) / periods              # sin(a + b) = sin a cos b + cos a sin b
        block = sin[:n] * np.cos(shift).astype(np.float32) + cos[:n] * np.sin(shift).astype(np.float32)
        offset = int(rng.integers(0, 4096))
        block += noise[offset:offset + n]
        yield block.astype(np.float16)


def dense_blocks(T: int):
    for lo in range(0, T, STATE_BLOCK):
        t = np.arange(lo, min(T, lo + STATE_BLOCK))
        yield (0.5 + 0.5 * np.sin(t / 997.0)).astype(np.float32)


def timed(what: str, results: dict, func, *args, **kwargs):
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    results[what] = time.perf_counter() - t0
    return out


def build(work: Path, bases: int, dim: int, seed: int = 0, format: str = "auto", states_format: str = "h5",
          results: dict | None = None) -> dict:
    """Write the synthetic FASTA and BED under ``work``, convert them into ``work/project`` and add the
    state source and the dense track (``states_format``: h5, or zarr for the Dask path); the steps' wall
    times go into ``results``. Returns the project folder, the contig lengths and the interval count."""
    r = {} if results is None else results
    lengths = contig_lengths(bases)
    fasta, out = work / "synthetic.fa", work / "project"
    timed("write FASTA", r, write_fasta, fasta, lengths, seed)
    shutil.rmtree(out, ignore_errors=True)
    timed("convert-fasta", r, convert_fasta, fasta, out, format=format, progress=False)
    intervals = write_bed(work / "peaks.bed", lengths, seed)
    timed("add-bed", r, add_bed, out, "peaks", work / "peaks.bed")
    timed("add states", r, add_source, out, "synthetic", state_blocks(bases, dim, seed), dtype="float16",
          format=states_format)
    timed("add dense track", r, add_dense_track, out, "pred", dense_blocks(bases), value_range=(0, 1),
          format=states_format)
    return {"project": out, "fasta": fasta, "lengths": lengths, "intervals": intervals}


def store_bytes(path: Path) -> int:
    """Bytes on disk of a file or a folder (a Zarr store)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", type=int, default=10**8)
    parser.add_argument("--dim", type=int, default=8, help="cells of the synthetic state source")
    parser.add_argument("--bins", type=int, default=1000, help="overview bins (pixels)")
    parser.add_argument("--format", choices=["auto", "h5", "zarr"], default="auto")
    parser.add_argument("--work", help="folder for the files (default: a temporary folder, removed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_genome_"))
    work.mkdir(parents=True, exist_ok=True)
    r: dict[str, float] = {}
    try:
        built = build(work, args.bases, args.dim, args.seed, args.format, results=r)
        out, lengths, intervals = built["project"], built["lengths"], built["intervals"]

        project = timed("open project", r, open_project, out)
        genome = project.genome
        where = f"chr1:{lengths['chr1'] // 2:,}-{lengths['chr1'] // 2 + 999:,}"

        def go_to() -> None:
            a, b = genome.parse(where)
            project.tokens(a, b)
            for track in project.meta.values():
                track.values(a, b)

        timed("go to coordinate (1,000 bases + tracks)", r, go_to)
        a, b = genome.span("chr1")
        timed("overview chr1: interval track", r, project.meta["peaks"].overview, a, b, args.bins)
        timed("overview chr1: dense track", r, project.meta["pred"].overview, a, b, args.bins)
        engine = Engine(project, backend="numpy")
        source = project.default_source
        timed("overview chr1: n(t) of 3 cells", r, engine.overview, source, [0, 1, 2], 0.5, a, b, args.bins)
        hits = timed("motif WGATAR, both strands, whole genome", r, find, project, "WGATAR")
        project.close()
        store = out / project.config["files"]["genome"]
        size = store_bytes(store)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, backend numpy; genome {args.bases:,} bases "
          f"({', '.join(f'{k} {v:,}' for k, v in lengths.items())}), {intervals:,} intervals, "
          f"states {args.dim} cells float16, bases stored as {store.name} ({size / 2**20:.1f} MiB), "
          f"{len(hits):,} motif hits")
    for what, seconds in r.items():
        extra = ""
        if what == "convert-fasta":
            extra = f"   ({args.bases / seconds / 1e6:.1f} Mbases/s)"
        print(f"  {what:42s} {seconds * 1000:10.1f} ms{extra}")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
