"""``lstmvis extract-genome``: the states of a PyTorch model of one-hot DNA over a genome project.

The model is the kind the paper's section 6.3 shows (DanQ): convolutions, then a recurrent layer, then
a per-base output. It is run over every contig in sliding windows (``gpu_matcher.extract.dna``:
``window`` bases every ``stride``, the centre of each kept), on input ``(B, 4, L)`` (``layout="NCL"``,
channels first as ``nn.Conv1d`` takes it) or ``(B, L, 4)`` (``"NLC"``), A C G T one-hot with IUPAC codes
shared (N = 0.25 each).

Recorded, per base, as in ``lstmvis extract``: every ``nn.LSTM``/``nn.GRU`` named in ``rnns``
(:func:`gpu_matcher.extract.recurrent.per_step_states`: the cell and hidden states of every layer, both
directions concatenated, forward first, as ``unroll`` gives them, but the hidden states from PyTorch's
own kernel and the cell states from them, all windows of a batch at once), and the output of every
module in ``modules`` (e.g. the ReLU after a convolution; ``(B, C, L)`` and ``(B, L, C)`` are both
understood). With neither given, every RNN and every ``nn.Conv1d`` of the model is recorded. The model's
own output, ``(B, L, P)`` or ``(B, P, L)`` (or ``(B, L)``), becomes ``P`` scalar tracks ``pred_<name>``.
Everything must keep one row per base: a model that pools (DanQ's max-pool) has no per-base states to
show.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from gpu_matcher.errors import ProjectError
from gpu_matcher.extract.dna import kept_rows, one_hot_windows, read_timeline, window_batches
from gpu_matcher.extract.extractor import Capture, first_tensor, for_inference
from gpu_matcher.extract.recurrent import per_step_states
from gpu_matcher.genome.fasta import ZARR_FROM
from gpu_matcher.io.attach import StatesAppender

LAYOUTS = ("NCL", "NLC")
#: Windows in the first pass, which measures what a window's states take, to size the batches after it.
PROBE_WINDOWS = 8
#: What a batch holds in memory, as a multiple of its recorded states (float32): the model's own
#: activations, an LSTM's gates (four times its cell states) and the copies on the way to the file.
WORKING_SET = 8
MAX_WINDOWS = 4096
#: Default memory per batch. On a CPU small batches are the fastest (measured with the demo's model:
#: 16-32 windows beat 256 by 1.5x; the arrays stay nearer the cache), on a GPU large ones (each step
#: of the recurrence is a kernel launch, whatever the batch).
CPU_BATCH_BYTES = 128 << 20
GPU_BATCH_BYTES = 2 << 30


def per_base(tensor: torch.Tensor, B: int, L: int, where: str) -> torch.Tensor:
    """``(B, L, C)`` from a per-base module output ``(B, L, C)``, ``(B, C, L)`` or ``(B, L)``."""
    shape = tuple(tensor.shape)
    if tensor.dim() == 2 and shape == (B, L):
        return tensor.unsqueeze(2)
    if tensor.dim() == 3 and shape[0] == B:
        if shape[1] == L:
            return tensor
        if shape[2] == L:
            return tensor.transpose(1, 2)
    raise ProjectError(f"{where}: output has shape {shape}; expected one row per base of the window "
                       f"({B}, {L}, C) or ({B}, C, {L}) (a model that pools has no per-base states)")


def default_modules(model: nn.Module) -> tuple[list[str], list[str]]:
    """Every RNN and every ``nn.Conv1d`` of ``model``, by name."""
    named = [(n, m) for n, m in model.named_modules() if n]
    return ([n for n, m in named if isinstance(m, (nn.LSTM, nn.GRU))],
            [n for n, m in named if isinstance(m, nn.Conv1d)])


def extract_genome(model: nn.Module, project_dir: str | os.PathLike, *, window: int = 1000,
                   stride: int = 500, rnns: Sequence[str] = (), modules: Sequence[str] = (),
                   outputs: Sequence[str] | None = None, layout: str = "NCL", batch_size: int | None = None,
                   batch_bytes: int | None = None, threads: int | None = None, dtype: str = "float16",
                   format: str = "auto", device: str | torch.device | None = None, overwrite: bool = False,
                   progress: bool = True) -> Path:
    """Add the states and per-base outputs of ``model`` to the genome project in ``project_dir``
    (written by ``convert-fasta``); returns the states file. ``outputs``: a name per output column
    (default ``model.proteins`` when the model has it, else ``out0``, ``out1``, ...). ``format``:
    ``h5``, ``zarr`` or ``auto`` (Zarr from 10^8 bases, as ``convert-fasta`` chooses). ``batch_size``:
    windows per forward pass; by default as many as keep a batch within about ``batch_bytes``
    (:data:`CPU_BATCH_BYTES`, or :data:`GPU_BATCH_BYTES` on a CUDA device), measured on a first pass of
    a few windows (the demo's model: 25 windows of 1,000 bases on a CPU, 400 on a GPU). ``threads``:
    PyTorch's CPU threads for the run (default: :func:`idle_threads`)."""
    from tqdm import tqdm

    if layout not in LAYOUTS:
        raise ProjectError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if batch_size is not None and batch_size < 1:
        raise ProjectError(f"--batch-size {batch_size}: must be >= 1")
    if threads is not None and threads < 1:
        raise ProjectError(f"--threads {threads}: must be >= 1")
    if not rnns and not modules:
        rnns, modules = default_modules(model)
        if not rnns and not modules:
            raise ProjectError(f"{type(model).__name__} has no nn.LSTM, nn.GRU or nn.Conv1d; name the "
                               "modules to record (--rnn, --module)")
    timeline = read_timeline(project_dir)
    if format == "auto":
        format = "zarr" if timeline.T >= ZARR_FROM else "h5"
    was_training, device = for_inference(model, device)
    if batch_bytes is None:
        batch_bytes = GPU_BATCH_BYTES if torch.device(device).type == "cuda" else CPU_BATCH_BYTES
    threads_before = torch.get_num_threads()
    threads = threads or idle_threads()
    capture = Capture(model, rnns, modules, None)
    out: StatesAppender | None = None
    bar = tqdm(total=timeline.T, unit="b", unit_scale=True, desc="extract-genome", file=sys.stderr,
               disable=not progress or None)
    batch = [batch_size or PROBE_WINDOWS]
    try:
        torch.set_num_threads(threads)
        for group in window_batches(timeline.bounds, window, stride, lambda: batch[0]):
            x = one_hot_windows(timeline.ids, timeline.table, group)
            states, preds = _run(model, capture, x, layout, device, rnns, modules)
            if out is None:
                names = _output_names(model, outputs, preds.shape[2])
                out = _declare(project_dir, timeline.T, dtype, format, overwrite, states, names)
                if batch_size is None:
                    batch[0] = batch_for(batch_bytes, window, states, preds)
            rows = {name: kept_rows(group, value) for name, value in states.items()}
            pred_rows = kept_rows(group, preds)
            out.append(rows, {f"pred_{n}": pred_rows[:, j] for j, n in enumerate(names)})
            bar.update(len(pred_rows))
        assert out is not None
        return out.close()
    except BaseException:
        if out is not None:
            out.abort()
        raise
    finally:
        torch.set_num_threads(threads_before)
        bar.close()
        capture.remove()
        model.train(was_training)


def idle_threads() -> int:
    """PyTorch's CPU thread count, lowered to the cores other processes leave idle (the one-minute load
    average). Each step of the recurrence is a few small operations, and a thread that waits for a busy
    core stalls all the others at every one: on a 2-core machine running two other jobs, two threads
    took 10-40x as long as one (measured with the demo's model), where on idle cores they gain 1.3x."""
    wanted = torch.get_num_threads()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):              # no load average on this system
        return wanted
    return max(1, min(wanted, (os.cpu_count() or 1) - int(round(busy))))


def batch_for(budget: int, window: int, states: dict[str, np.ndarray], preds: np.ndarray) -> int:
    """Windows of ``window`` bases per batch that keep one batch within about ``budget`` bytes, from
    what a batch recorded (float32 ``(B, L, ...)`` arrays; a contig shorter than a window has L < window)."""
    steps = max(1, preds.shape[0] * preds.shape[1])
    per_window = (sum(v.nbytes for v in states.values()) + preds.nbytes) / steps * window * WORKING_SET
    return int(max(1, min(MAX_WINDOWS, budget // max(1.0, per_window))))


def _run(model, capture: Capture, x: np.ndarray, layout: str, device, rnns, modules):
    B, L = x.shape[:2]
    inputs = torch.from_numpy(x if layout == "NLC" else np.ascontiguousarray(x.transpose(0, 2, 1))).to(device)
    capture.clear()
    states: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        output = model(inputs)
        for rname in rnns:
            rnn_inputs, hx, rnn_output = capture.take(rname)
            layers = per_step_states(capture.modules[rname], rnn_inputs, hx, rnn_output)
            for k, layer in enumerate(layers, 1):
                for key, tensor in layer.items():
                    rows = per_base(tensor, B, L, f"module {rname!r}")
                    states[f"{rname}.{key}_layer{k}"] = rows.float().cpu().numpy()
        for mname in modules:
            where = f"module {mname!r}"
            states[mname] = per_base(first_tensor(capture.take(mname), where), B, L, where).float().cpu().numpy()
        preds = per_base(first_tensor(output, "model output"), B, L, "model output").float().cpu().numpy()
    return states, preds


def _output_names(model: nn.Module, outputs: Sequence[str] | None, P: int) -> list[str]:
    names = list(outputs) if outputs else list(getattr(model, "proteins", None) or [f"out{j}" for j in range(P)])
    if len(names) != P:
        raise ProjectError(f"--outputs {','.join(names)}: {len(names)} names for the model's {P} output columns")
    return names


def _declare(project_dir, T: int, dtype: str, format: str, overwrite: bool, states: dict,
             names: list[str]) -> StatesAppender:
    out = StatesAppender(project_dir, T=T, dtype=dtype, format=format, overwrite=overwrite)
    def rank(name: str) -> int:                   # cell states first: the default source
        return 0 if ".cell_layer" in name else 1 if ".hidden_layer" in name else 2

    for name in sorted(states, key=rank):
        if ".cell_layer" in name:
            out.add_source(name, type="state", layer=int(name.rsplit("_layer", 1)[1]), transform="tanh")
        elif ".hidden_layer" in name:
            out.add_source(name, type="output", layer=int(name.rsplit("_layer", 1)[1]), transform="none")
        else:
            out.add_source(name, type="output", transform="none")
    for n in names:
        out.add_track(f"pred_{n}")
    return out
