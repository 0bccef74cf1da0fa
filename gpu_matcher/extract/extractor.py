"""Run a PyTorch model over a corpus and write the per-step states of chosen modules as a project.

Sources come from two kinds of module, named as in ``model.named_modules()``:

- ``rnns``: ``nn.LSTM`` / ``nn.GRU`` modules. A forward hook captures the input each was called with,
  and :func:`gpu_matcher.extract.recurrent.unroll` recomputes every layer's hidden states, the LSTM's
  cell states (which ``nn.LSTM`` does not return per step) and, on request, the gates.
- ``modules``: any module (a transformer block, an MLP, ...). A forward hook takes its output (the first
  element of a tuple), ``(B, L, ...)`` or ``(L, B, ...)``, one source per module.

The corpus is fed in batches of consecutive sequences, right-padded; padding is removed and the
sequences are concatenated with their starts recorded. Blocks go to a :class:`ProjectWriter` after
every batch, so an interrupted run resumes (``resume=True``) from the last complete batch and yields
the same project as an uninterrupted one.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from gpu_matcher.errors import ProjectError
from gpu_matcher.extract.hooks import HookSet
from gpu_matcher.extract.recurrent import rnn_kind, unroll
from gpu_matcher.io.predictions import topk_from_logits
from gpu_matcher.io.text import Corpus
from gpu_matcher.io.writer import ProjectWriter

#: ``forward(model, ids, mask)``: how to call the model on a batch of token ids ``(B, L)``.
Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]


def default_forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> Any:
    """``model(ids)``; a model whose forward takes ``attention_mask`` (a transformer) gets the mask too,
    so padding is never attended to silently."""
    if "attention_mask" in inspect.signature(model.forward).parameters:
        return model(ids, attention_mask=mask.long())
    return model(ids)


def hf_forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> Any:
    """For Hugging Face models: ``input_ids`` and ``attention_mask`` keywords."""
    return model(input_ids=ids, attention_mask=mask.long())


def for_inference(model: nn.Module, device: str | torch.device | None) -> tuple[bool, Any]:
    """Put ``model`` in eval mode; returns whether it was training (to restore it) and the device to
    feed it on (``device``, else where its parameters are, else the CPU)."""
    was_training = model.training
    model.eval()
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    return was_training, device


def _as_corpus(corpus: Any) -> Corpus:
    if isinstance(corpus, Corpus):
        return corpus
    if isinstance(corpus, (str, os.PathLike)):
        return Corpus.from_folder(corpus)
    return Corpus.from_sequences(corpus)


def first_tensor(output: Any, where: str) -> torch.Tensor:
    if torch.is_tensor(output):
        return output
    for attr in ("logits", "last_hidden_state"):
        value = getattr(output, attr, None)
        if torch.is_tensor(value):
            return value
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    raise ProjectError(f"{where}: output is {type(output).__name__}, not a tensor or a tuple starting "
                       "with one")


def _batch_first(tensor: torch.Tensor, B: int, L: int, module: nn.Module | None, where: str) -> torch.Tensor:
    """``(B, L, ...)`` from a module output that is batch- or time-major; trailing dims flattened."""
    if tensor.dim() < 2:
        raise ProjectError(f"{where}: output has shape {tuple(tensor.shape)}; expected (batch, steps, ...)")
    shape = tuple(tensor.shape[:2])
    time_major = getattr(module, "batch_first", True) is False
    if shape == (B, L) and not (time_major and B == L):
        out = tensor
    elif shape == (L, B):
        out = tensor.transpose(0, 1)
    else:
        raise ProjectError(f"{where}: output has shape {tuple(tensor.shape)}, which does not start with "
                           f"(batch, steps) = ({B}, {L}) or ({L}, {B})")
    return out.reshape(B, L, -1)


class Capture(HookSet):
    """Forward hooks that keep what each named module saw (RNNs: inputs) or produced (others)."""

    def __init__(self, model: nn.Module, rnns: Sequence[str], modules: Sequence[str], logits: str | None):
        named = dict(model.named_modules())
        super().__init__()
        wanted = [(n, "input") for n in rnns] + [(n, "output") for n in modules]
        if logits not in (None, "output"):
            wanted.append((logits, "output"))
        for name, what in wanted:
            if name not in named:
                close = difflib.get_close_matches(name, [n for n in named if n], n=5, cutoff=0.5)
                listing = close or [n for n in named if n][:8]
                raise ProjectError(f"module {name!r} not found in {type(model).__name__}; "
                                   f"{'similar' if close else 'modules include'}: {', '.join(listing)}")
            if what == "input":
                rnn_kind(named[name])                     # a clear error for a non-RNN
            self.seen.setdefault(name, [])
            self.handles.append(named[name].register_forward_hook(self._hook(name, what)))
        self.modules = named

    def _hook(self, name: str, what: str):
        def hook(module, args, output):
            if what == "input":                   # an RNN: its input, initial state and output
                hx = args[1] if len(args) > 1 else None
                self.seen[name].append((args[0], hx, output))
            else:
                self.seen[name].append(output)
        return hook

    def take(self, name: str) -> Any:
        calls = self.seen[name]
        if len(calls) != 1:
            raise ProjectError(f"module {name!r} ran {len(calls)} times in one forward pass; extraction needs "
                               "exactly one call over the whole batch")
        return calls[0]



def _fingerprint(model: nn.Module, corpus: Corpus, settings: dict) -> dict:
    digest = hashlib.sha1(np.ascontiguousarray(corpus.ids, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(corpus.starts, dtype=np.int64).tobytes())
    shapes = [(n, list(p.shape)) for n, p in model.named_parameters()]
    return {"corpus_sha1": digest.hexdigest(), "steps": int(corpus.ids.size), "sequences": len(corpus),
            "model": type(model).__name__,
            "parameters_sha1": hashlib.sha1(repr(shapes).encode()).hexdigest(), **settings}


def extract(model: nn.Module, corpus: Corpus | str | os.PathLike | Sequence[Sequence[int]],
            out: str | os.PathLike, *, rnns: Sequence[str] = (), modules: Sequence[str] = (),
            gates: bool = False, logits: str | None = None, topk: int = 5,
            logit_ids: Sequence[int] | None = None, batch_size: int = 32, dtype: str = "float32",
            device: str | torch.device | None = None, forward: Forward = default_forward,
            pad_id: int = 0, resume: bool = False, overwrite: bool = False, name: str | None = None,
            description: str | None = None, progress: bool = True) -> Path:
    """Write the states of ``rnns`` and ``modules`` of ``model`` over ``corpus`` as a project in ``out``.

    ``corpus``: a :class:`Corpus`, a folder written by ``lstmvis convert-text``, or a list of token-id
    sequences. ``logits``: ``"output"`` (the model's return value, or its ``.logits``) or a module
    name whose output is ``(B, L, V)``; adds the ``top{topk}`` wordvec track (``logit_ids`` maps logit
    columns to dictionary ids). ``dtype="float16"`` halves the files. ``resume`` continues an
    interrupted run in ``out``; ``overwrite`` replaces a project there. Returns ``out``.

    Sources are named ``<rnn>.cell_layer<k>``, ``<rnn>.hidden_layer<k>``, ``<rnn>.gate_<g>_layer<k>``
    and ``<module>``, layers counted from 1.
    """
    from tqdm import tqdm

    if not rnns and not modules:
        raise ProjectError("extract: name at least one nn.LSTM/nn.GRU (rnns) or module (modules) to record")
    if batch_size < 1:
        raise ProjectError(f"extract: batch_size={batch_size} must be >= 1")
    corpus = _as_corpus(corpus)
    was_training, device = for_inference(model, device)
    capture = Capture(model, rnns, modules, logits)
    settings = {"rnns": list(rnns), "modules": list(modules), "gates": gates, "logits": logits,
                "topk": topk if logits else None, "batch_size": batch_size, "dtype": dtype}
    writer = ProjectWriter(out, name=name or type(model).__name__,
                           description=description or f"{type(model).__name__} states, extracted with lstmvis",
                           dictionary=corpus.dictionary, dtype=dtype, overwrite=overwrite, resume=resume,
                           fingerprint=_fingerprint(model, corpus, settings))
    lengths = corpus.lengths
    bar = None
    try:
        with writer:
            _declare(writer, capture, rnns, modules, gates, logits, topk)
            done = int(writer.cursor or 0) if writer.resumed else 0
            bar = tqdm(total=int(corpus.ids.size), initial=writer.T, unit="tok", unit_scale=True,
                       desc=f"extract {Path(out).name}", disable=not progress or None, file=sys.stderr)
            for lo in range(done, len(corpus), batch_size):
                hi = min(len(corpus), lo + batch_size)
                block = _run_batch(model, capture, corpus, lengths, lo, hi, rnns, modules, gates, logits,
                                   topk, logit_ids, device, forward, pad_id)
                writer.append(**block, cursor=hi)
                bar.update(int(block["tokens"].size))
    finally:
        if bar is not None:
            bar.close()
        capture.remove()
        model.train(was_training)
    return Path(out)


def _declare(writer: ProjectWriter, capture: Capture, rnns, modules, gates, logits, topk) -> None:
    for rname in rnns:
        rnn = capture.modules[rname]
        kind = rnn_kind(rnn)
        gate_names = ("i", "f", "g", "o") if kind == "lstm" else ("r", "z", "n")
        for k in range(1, rnn.num_layers + 1):
            if kind == "lstm":
                writer.add_source(f"{rname}.cell_layer{k}", type="state", layer=k, transform="tanh")
            writer.add_source(f"{rname}.hidden_layer{k}", type="output", layer=k, transform="none")
            if gates:
                for g in gate_names:
                    writer.add_source(f"{rname}.gate_{g}_layer{k}", type=f"gate_{g}", layer=k,
                                      transform="none")
    for mname in modules:
        writer.add_source(mname, type="output", transform="none")
    if logits:
        writer.add_meta(f"top{topk}", kind="wordvec")


def _run_batch(model, capture, corpus, lengths, lo, hi, rnns, modules, gates, logits, topk, logit_ids,
               device, forward, pad_id) -> dict:
    lens = lengths[lo:hi]
    B, L = hi - lo, int(lens.max())
    ids = np.full((B, L), pad_id, dtype=np.int64)
    for b, i in enumerate(range(lo, hi)):
        ids[b, :lens[b]] = corpus.sequence(i)
    mask_np = np.arange(L)[None, :] < lens[:, None]
    ids_t = torch.from_numpy(ids).to(device)
    mask_t = torch.from_numpy(mask_np).to(device)
    capture.clear()
    with torch.no_grad():
        output = forward(model, ids_t, mask_t)
        states: dict[str, np.ndarray] = {}

        def rows(tensor: torch.Tensor) -> np.ndarray:           # (B, L, D) -> (N, D), padding removed
            return tensor[mask_t].float().cpu().numpy()

        for rname in rnns:
            inputs, hx, _ = capture.take(rname)
            rnn = capture.modules[rname]
            layers, _ = unroll(rnn, inputs, torch.from_numpy(lens), hx=hx, gates=gates)
            if layers[0]["hidden"].shape[:2] != (B, L):
                raise ProjectError(f"module {rname!r} ran over shape {tuple(layers[0]['hidden'].shape[:2])}, "
                                   f"not the batch's (batch, steps) = ({B}, {L})")
            for k, layer in enumerate(layers, 1):
                for key, tensor in layer.items():
                    states[f"{rname}.{key}_layer{k}"] = rows(tensor)
        for mname in modules:
            where = f"module {mname!r}"
            tensor = _batch_first(first_tensor(capture.take(mname), where), B, L, capture.modules[mname], where)
            states[mname] = rows(tensor)
        meta = {}
        if logits:
            where = "model output" if logits == "output" else f"module {logits!r}"
            raw = capture.take(logits) if logits != "output" else output
            scores = _batch_first(first_tensor(raw, where), B, L, None, where)
            meta[f"top{topk}"] = topk_from_logits(rows(scores), k=topk, token_ids=logit_ids)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    return {"states": states, "tokens": ids[mask_np], "meta": meta, "starts": starts}
