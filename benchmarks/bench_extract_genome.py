"""``extract-genome`` throughput (issue 15): the genomic demo's model over a synthetic genome of N bases.

A random genome (``bench_genome``'s FASTA: three contigs, 90 % / 5 % / 5 % of N, N runs) is converted
with ``convert_fasta``, then :func:`gpu_matcher.extract.genome.extract_genome` runs the demo's DanQ-like
model (``Conv1d(4, 32, 15) -> ReLU -> BiLSTM(32, 32) -> Linear -> sigmoid``, the committed weights) in
windows of 1,000 bases every 500 and writes ``lstm.cell_layer1``, ``lstm.hidden_layer1`` and ``relu``
(float16) and three prediction tracks. Prints bases/s by wall clock and by process CPU time (the CPU
figure is the one to trust on a shared machine), the peak memory, the machine, its load, the threads
and the device, and projects 10^8 and 2.3 x 10^9 bases (the paper's genome) linearly. Not a test.

    python benchmarks/bench_extract_genome.py                      # 10^6 bases
    python benchmarks/bench_extract_genome.py --bases 200000 --batch-size 16 --threads 1
    python benchmarks/bench_extract_genome.py --device cuda        # a GPU workstation
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_genome import contig_lengths, write_fasta  # noqa: E402
from gpu_matcher.demo.danq_torch import demo_model  # noqa: E402
from gpu_matcher.extract.genome import extract_genome, idle_threads  # noqa: E402
from gpu_matcher.genome.fasta import convert_fasta  # noqa: E402

PROJECT = (10 ** 8, 2_300_000_000)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", type=int, default=1_000_000)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--stride", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=None, help="windows per pass (default: from the "
                    "memory budget)")
    ap.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: extract_genome's, "
                    "torch's lowered to the idle cores)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when torch sees one)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = args.threads or idle_threads()
    gpu = f", {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}), torch "
          f"{torch.__version__}, {threads} of {torch.get_num_threads()} threads; device {device}{gpu}")
    with tempfile.TemporaryDirectory(prefix="bench-extract-genome-") as tmp:
        fasta = Path(tmp) / "genome.fa"
        write_fasta(fasta, contig_lengths(args.bases), args.seed)
        project = convert_fasta(fasta, Path(tmp) / "project", format="h5", progress=False)
        model = demo_model().to(device)
        kwargs = {"threads": threads} | ({} if args.batch_size is None else {"batch_size": args.batch_size})
        wall, cpu = time.perf_counter(), time.process_time()
        extract_genome(model, project, window=args.window, stride=args.stride, rnns=["lstm"],
                       modules=["relu"], device=device, progress=False, **kwargs)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"extract-genome: {args.bases:,} bases, windows {args.window}/{args.stride}, batch "
          f"{args.batch_size or 'auto'}: {wall:.1f} s wall ({args.bases / wall:,.0f} bases/s), "
          f"{cpu:.1f} s process CPU ({args.bases / cpu:,.0f} bases/s of CPU); peak memory {peak:,.0f} MB")
    for n in PROJECT:
        print(f"  projected {n:.2g} bases: {n / args.bases * wall / 3600:.2f} h wall, "
              f"{n / args.bases * cpu / 3600:.2f} h of CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
