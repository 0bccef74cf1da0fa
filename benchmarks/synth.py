"""Synthetic LSTM-like projects for benchmarks and large tests.

States are AR(1) processes ``x_t = phi * x_{t-1} + sigma * eps_t`` per cell (phi in [0.85, 0.99]) with a
per-cell offset, stored raw (the project's ``tanh`` transform squashes them), so on-runs after a
threshold look like the runs of real LSTM cells: long and short, with clustered onsets. Words are a
Zipf-like draw from a small vocabulary; sequences have random lengths around ``mean_sequence``.

    python benchmarks/synth.py OUT_DIR --T 1000000 --D 650 --dtype float16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from gpu_matcher.formats import write_config, write_dictionary

VOCAB = 500


def _ar1_block(rng, phi, sigma, offset, carry, length):
    """One (length, D) block of AR(1) continued from ``carry`` (D,), vectorised over blocks of 250."""
    D = phi.size
    sub = 250
    nsub = -(-length // sub)
    eps = rng.standard_normal((nsub, sub, D), dtype=np.float32) * sigma
    x = np.empty_like(eps)
    acc = np.zeros((nsub, D), dtype=np.float32)
    for t in range(sub):                    # recursion inside each sub-block, all sub-blocks at once
        acc = phi * acc + eps[:, t]
        x[:, t] = acc
    powers = phi[None, :] ** np.arange(1, sub + 1, dtype=np.float32)[:, None]     # (sub, D)
    for j in range(nsub):                   # carry the state across sub-blocks
        x[j] += powers * carry
        carry = x[j, -1].copy()
    return (x.reshape(-1, D)[:length] + offset), carry


def cell_processes(rng, D: int):
    """Per-cell AR(1) parameters ``(phi, sigma, offset)`` and the zero starting state."""
    phi = rng.uniform(0.85, 0.99, D).astype(np.float32)
    sigma = (np.sqrt(1 - phi ** 2) * rng.uniform(0.6, 1.4, D)).astype(np.float32)
    offset = rng.normal(0, 0.4, D).astype(np.float32)
    return phi, sigma, offset, np.zeros(D, dtype=np.float32)


def word_probabilities() -> np.ndarray:
    """Zipf-like probabilities of the VOCAB word ids (id = index + 4)."""
    p = 1.0 / np.arange(1, VOCAB + 1)
    return p / p.sum()


def sequence_starts(rng, T: int, mean_sequence: int) -> np.ndarray:
    """Sorted sequence starts, lengths uniform around ``mean_sequence``."""
    lengths = rng.integers(max(2, mean_sequence // 2), mean_sequence * 3 // 2 + 1,
                           size=T // max(1, mean_sequence // 2) + 2)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return starts[starts < T].astype(np.int64)


def write_dictionary_and_config(folder: Path, name: str, description: str, ext: str) -> None:
    """``words.dict`` and ``lstm.yml`` for a synthetic project whose stores end in ``ext``."""
    write_dictionary(folder / "words.dict", {1: "<s>", 2: "<unk>", 3: "</s>",
                                             **{i + 4: f"w{i}" for i in range(VOCAB)}})
    write_config(folder, {
        "name": name, "description": description,
        "files": {"states": f"states{ext}", "train": f"train{ext}", "words": "words.dict"},
        "word_sequence": {"file": "train", "path": "words", "dict_file": "words"},
        "sequences": {"file": "train", "path": "seq_starts"},
        "states": {"file": "states", "types": [{"type": "state", "layer": 1, "path": "states1"}]},
    })


def make_project(folder: str | Path, T: int, D: int, dtype: str = "float16", seed: int = 0,
                 mean_sequence: int = 400, progress: bool = False) -> Path:
    """Write a complete project (lstm.yml, states.h5, train.h5, words.dict) and return its folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    phi, sigma, offset, carry = cell_processes(rng, D)
    chunk = max(1000, min(T, (64 * 2**20) // (4 * D)))
    t0 = time.perf_counter()
    with h5py.File(folder / "states.h5", "w") as f:
        ds = f.create_dataset("states1", shape=(T, D), dtype=dtype,
                              chunks=(max(1, min(T, (1 << 20) // (D * np.dtype(dtype).itemsize))), D))
        for start in range(0, T, chunk):
            stop = min(T, start + chunk)
            block, carry = _ar1_block(rng, phi, sigma, offset, carry, stop - start)
            ds[start:stop] = block.astype(dtype)
            if progress:
                print(f"\rstates {stop}/{T}", end="", file=sys.stderr)
    if progress:
        print(f"\rstates written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    words = (rng.choice(VOCAB, size=T, p=word_probabilities()) + 4).astype(np.int32)
    starts = sequence_starts(rng, T, mean_sequence)
    with h5py.File(folder / "train.h5", "w") as f:
        f.create_dataset("words", data=words, chunks=True)
        f.create_dataset("seq_starts", data=starts)
    write_dictionary_and_config(folder, f"synth-{T}x{D}",
                                f"synthetic AR(1)+tanh states, T={T}, D={D}, {dtype}", ".h5")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--T", type=int, default=1_000_000)
    ap.add_argument("--D", type=int, default=650)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make_project(args.out, args.T, args.D, args.dtype, args.seed, progress=True))


if __name__ == "__main__":
    main()
