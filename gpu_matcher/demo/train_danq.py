"""Train the genomic demo's DanQ-like model and write ``danq_genome.npz`` (needs PyTorch).

    pip install -e ".[torch]"
    python -m gpu_matcher.demo.train_danq       # ~8 minutes on a busy 2-core VM; overwrites the weights

The model (``gpu_matcher.demo.danq_torch.DanQLike``): ``Conv1d(4, 32, 15) -> ReLU -> BiLSTM(32, 32)
-> Linear(64, 3)``, a per-base logistic output for each protein of ``gpu_matcher.demo.genome``. It is
trained on random 500-base crops of two synthetic genomes (seeds :data:`TRAIN_SEEDS`), never on the
genome the demo shows (:data:`gpu_matcher.demo.DEMO_GENOME_SEED`), and evaluated on a third
(:data:`EVAL_SEED`) with the NumPy forward pass in the demo's sliding windows, from the float16
weights as committed: per protein, per base precision, recall and F1 at 0.5, stored in the file's
``info``. Deterministic: fixed seeds, one CPU thread, deterministic algorithms.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gpu_matcher.demo import danq
from gpu_matcher.demo.genome import PROTEINS, SyntheticGenome, synthesize
from gpu_matcher.demo.train import fit
from gpu_matcher.extract.dna import one_hot_table

SEED = 4321
TRAIN_SEEDS = (101, 102)
EVAL_SEED = 103
CROP = 500
ASCII_TABLE = one_hot_table({ord(c): c for c in "ACGTN"})


def genome_arrays(genome: SyntheticGenome) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ASCII bases, per-base labels ``(T, P)`` and contig bounds of a genome, contigs concatenated."""
    bases = np.concatenate(genome.sequences)
    labels = np.concatenate([genome.labels(c) for c in range(len(genome.names))])
    bounds = np.concatenate([[0], np.cumsum([len(s) for s in genome.sequences])])
    return bases, labels, bounds


def _crops(rng: np.random.Generator, data, size: int):
    import torch

    xs, ys = [], []
    for _ in range(size):
        bases, labels, bounds = data[int(rng.integers(len(data)))]
        c = int(rng.choice(len(bounds) - 1, p=np.diff(bounds) / bounds[-1]))
        a = int(rng.integers(bounds[c], bounds[c + 1] - CROP))
        xs.append(ASCII_TABLE[bases[a:a + CROP]].T)
        ys.append(labels[a:a + CROP])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def train(steps: int, batch_size: int, lr: float, log_every: int = 100):
    import torch
    from torch import nn

    from gpu_matcher.demo.danq_torch import DanQLike, weights_of

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    data = [genome_arrays(synthesize(s)) for s in TRAIN_SEEDS]
    model = DanQLike(tuple(PROTEINS))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss()

    def batch_loss():
        x, y = _crops(rng, data, batch_size)
        return loss_fn(model.logits(x), y)

    final_loss, seconds = fit(model, optimizer, schedule, steps, batch_loss, log_every)
    info = {"seed": SEED, "train_genomes": list(TRAIN_SEEDS), "steps": steps, "batch_size": batch_size,
            "crop": CROP, "lr": lr, "filters": model.conv.out_channels, "kernel": model.conv.kernel_size[0],
            "hidden": model.lstm.hidden_size, "torch": torch.__version__,
            "train_seconds": round(seconds, 1), "final_loss": round(final_loss, 5)}
    return weights_of(model), info


def detector_figures(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and F1 of a 0/1 detector against 0/1 ground truth, per base."""
    tp = int((predicted & truth).sum())
    precision = tp / max(1, int(predicted.sum()))
    recall = tp / max(1, int(truth.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def evaluate(path: Path, seed: int = EVAL_SEED) -> dict:
    """Per-protein per-base figures of the weights in ``path`` on the genome of ``seed`` (NumPy forward
    pass in the demo's windows)."""
    model = danq.load_model(path)
    bases, labels, bounds = genome_arrays(synthesize(seed))
    prob = np.concatenate([part["prob"] for part in danq.forward_windows(
        model, lambda a, b: bases[a:b], ASCII_TABLE, bounds, window=danq.WINDOW, stride=danq.STRIDE)])
    p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()
    per_protein = {name: detector_figures(prob[:, j] >= 0.5, labels[:, j] > 0)
                   for j, name in enumerate(model.proteins)}
    return {"eval_genome": seed, "eval_bases": int(len(bases)), "eval_bce": round(float(bce), 5),
            "eval": per_protein}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--out", type=Path, default=danq.WEIGHTS_PATH)
    parser.add_argument("--evaluate-only", action="store_true", help="only print the figures of --out")
    args = parser.parse_args(argv)
    if not args.evaluate_only:
        arrays, info = train(args.steps, args.batch_size, args.lr)
        danq.save_weights(args.out, tuple(PROTEINS), arrays, info)
        info.update(evaluate(args.out))           # the figures of the weights as stored (float16)
        danq.save_weights(args.out, tuple(PROTEINS), arrays, info)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    else:
        info = danq.load_model(args.out).info | evaluate(args.out)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
