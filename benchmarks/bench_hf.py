"""extract-hf against a plain batched forward pass over the same windows; prints tokens/s of both.

    python -m benchmarks.bench_hf MODEL_DIR [--topics 20] [--batch-size 8] [--hooks resid_post] [--layers all]

The text is CPython's ``pydoc_data.topics`` (the first ``--topics`` topics, one document each). The plain
pass runs ``model(input_ids, attention_mask)`` on exactly the batches extract-hf runs, and nothing else;
extract-hf's figure covers its forward passes, hooks, copies to NumPy and HDF5 writes (not the model load).
The machine is shared, so the two are also timed interleaved, batch by batch on one loaded model
(a plain forward pass and extract-hf's forward pass with hooks, copies and the block's HDF5 write,
in alternating order):
that ratio is the one to trust, in wall time and in this process's CPU time (which other jobs on the
machine disturb less); the whole runs (plain, extract-hf end to end, plain) are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def windows(model_dir: Path, texts: list[Path], batch_size: int):
    """The model, its tokenizer, whether it is a decoder, and the batches extract-hf would run."""
    from gpu_matcher.extract import hf

    model, tokenizer, causal = hf.load_model(model_dir)
    docs = hf.read_documents(texts)
    length = hf.window_length(model, tokenizer, None)
    capacity = length - sum(hf.special_layout(tokenizer))
    tok = hf.tokenize(docs, tokenizer, length, min(128, capacity // 4), causal)
    pad = tokenizer.pad_token_id or 0
    return model, tokenizer, causal, [hf.make_batch(tok, tok.windows[i:i + batch_size], pad)
                                      for i in range(0, len(tok.windows), batch_size)]


def plain_forward(model_dir: Path, texts: list[Path], batch_size: int) -> tuple[int, float]:
    import torch

    model, _, _, batches = windows(model_dir, texts, batch_size)
    steps = sum(int(b.b_idx.numel()) for b in batches)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return steps, time.perf_counter() - t0


def interleaved(model_dir: Path, texts: list[Path], batch_size: int, hooks: str, layers: str,
                folder: Path, dtype: str) -> tuple[int, np.ndarray, np.ndarray]:
    """Steps, plain and extraction (wall, CPU) seconds, alternating per batch."""
    import torch

    from gpu_matcher.extract import hf
    from gpu_matcher.io.writer import ProjectWriter

    model, tokenizer, causal, batches = windows(model_dir, texts, batch_size)
    probes = hf.probes_for(model, hf.parse_layers(layers, model.config.num_hidden_layers), hf.parse_hooks(hooks), ())
    steps, plain, ext = 0, np.zeros(2), np.zeros(2)
    with ProjectWriter(folder, dictionary=hf.vocabulary_dictionary(tokenizer), dtype=dtype) as writer:
        for i, batch in enumerate(batches):

            def run_plain() -> np.ndarray:
                t0 = np.array([time.perf_counter(), time.process_time()])
                with torch.inference_mode():
                    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                return np.array([time.perf_counter(), time.process_time()]) - t0

            def run_extract() -> np.ndarray:
                t0 = np.array([time.perf_counter(), time.process_time()])
                capture = hf.Capture(model, probes)
                writer.append(**hf.run_batch(model, capture, batch, causal=causal, topk=5 if causal else 0,
                                             dtype=dtype))
                capture.remove()
                return np.array([time.perf_counter(), time.process_time()]) - t0

            if i % 2:                                  # alternate which goes first
                e, p = run_extract(), run_plain()
            else:
                p, e = run_plain(), run_extract()
            plain, ext, steps = plain + p, ext + e, steps + int(batch.b_idx.numel())
    return steps, plain, ext


def main() -> None:
    import torch

    from gpu_matcher.extract import hf

    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hooks", default="resid_post")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--float16", action="store_true")
    args = parser.parse_args()
    from pydoc_data.topics import topics

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "topics.jsonl"
        names = sorted(topics)[:args.topics]
        text.write_text("".join(json.dumps({"id": n, "text": topics[n]}) + "\n" for n in names))
        steps, plain1 = plain_forward(args.model_dir, [text], args.batch_size)
        s = hf.extract_hf(args.model_dir, [text], Path(tmp) / "out", layers=args.layers, hooks=args.hooks,
                          batch_size=args.batch_size, dtype="float16" if args.float16 else "float32",
                          progress=False)
        _, plain2 = plain_forward(args.model_dir, [text], args.batch_size)
        _, t_plain, t_ext = interleaved(args.model_dir, [text], args.batch_size, args.hooks, args.layers,
                                        Path(tmp) / "interleaved", "float16" if args.float16 else "float32")
    plain = steps / plain1, steps / plain2
    ext = s.new_steps / s.seconds
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), CPU")
    print(f"{steps} tokens in {s.windows} windows, batch {args.batch_size}, hooks {args.hooks} of layers "
          f"{args.layers} ({len(s.sources)} sources, D = {sorted(set(s.sources.values()))})")
    for i, clock in enumerate(("wall", "CPU")):          # CPU time: this process's, whatever else runs
        print(f"interleaved per batch, {clock} time: plain forward {steps / t_plain[i]:,.0f} tokens/s, "
              f"extract-hf {steps / t_ext[i]:,.0f} tokens/s = {t_plain[i] / t_ext[i]:.0%} of plain")
    print(f"whole runs: plain forward: {plain[0]:,.0f} and {plain[1]:,.0f} tokens/s; extract-hf: {ext:,.0f} tokens/s "
          f"= {ext / max(plain):.0%} of the faster plain run, {ext / min(plain):.0%} of the slower")


if __name__ == "__main__":
    main()
