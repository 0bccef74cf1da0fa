"""``lstmvis extract-hf MODEL_DIR TEXT... OUT``: a Hugging Face model folder and text to a project.

Everything a user needs between a local ``transformers`` model folder and the app, with no glue:

- **Text**: every TEXT file is one document (``--lines``: every non-empty line is one; ``.jsonl`` files:
  one document per record, its ``"text"`` field, named by its ``"id"`` field if any). Documents become
  the project's sequences.
- **Tokens**: the model's own (fast) tokenizer, with character offsets. The timeline of a document is
  exactly ``tokenizer(document)``: its special tokens included (``[CLS] ... [SEP]`` for BERT, none for
  GPT-2). ``words.dict`` is the tokenizer's whole vocabulary (special and added tokens too), ids as the
  model's. ``offsets.h5`` keeps each step's ``[start, end)`` characters in its document (``-1`` for
  special tokens) and the document names, for ``lstmvis annotate-spans``.
- **Windows**: a document longer than the model's maximum length is cut into overlapping windows of
  that length (``--stride``: the overlap in tokens), each wrapped in the special tokens; every token's
  states come from exactly one window, the one where it has the most context (:func:`plan_windows`).
- **Padding is always masked**: windows are right-padded in a batch and the model gets the
  ``attention_mask``; there is no path without it.
- **What is recorded** (TransformerLens names, layers counted from 0): ``resid_pre`` (a block's input),
  ``resid_post`` (its output), ``attn_out`` (the attention's output projection, before dropout and the
  residual add), ``mlp_post`` (the MLP's hidden activation, the input of its output projection), for
  ``--layers`` (``all``, ``2,5`` or ``0-3``), stored as sources ``blocks.<l>.hook_<hook>``; any module by
  name (``--module``, its output); ``--attention``: each selected layer's attention pattern as the
  source ``blocks.<l>.attn.hook_pattern``, stored as a band of relative offsets (see
  :func:`attention_band`). Decoder models (``...ForCausalLM`` / ``...LMHeadModel``) add the top-K
  next-token predictions as the wordvec track ``top<K>``.
- **Resumable** (``--resume``) through :class:`gpu_matcher.io.ProjectWriter`'s journal; a progress bar
  on stderr. Local folders only: the hub is never contacted (``local_files_only`` and
  ``HF_HUB_OFFLINE=1``).

PyTorch and ``transformers`` are imported only when a command runs (the ``hf`` extra), so registering
the command costs nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.extract.hooks import HookSet

HOOKS = ("resid_pre", "resid_post", "attn_out", "mlp_post")
OFFSETS_FILE, OFFSETS_KEY = "offsets.h5", "offsets"
#: Where, inside one block, the attention's and the MLP's output projections sit (first found wins):
#: BERT/RoBERTa/ELECTRA, GPT-2, Llama/Mistral/Qwen, OPT/BART, DistilBERT, GPT-NeoX, GPT-J, ...
ATTN_OUT_PROJECTIONS = ("attention.output.dense", "attn.c_proj", "self_attn.o_proj", "self_attn.out_proj",
                        "attn.out_proj", "attention.out_lin", "attention.dense", "attn.o_proj",
                        "self_attention.dense", "attn.attention.out_proj")
MLP_OUT_PROJECTIONS = ("output.dense", "mlp.c_proj", "mlp.down_proj", "mlp.fc2", "fc2", "ffn.lin2",
                       "mlp.dense_4h_to_h", "mlp.fc_out")


# --- documents ------------------------------------------------------------------------------------
@dataclass
class Document:
    name: str
    text: str


def read_documents(paths: Sequence[str | os.PathLike], *, lines: bool = False,
                   encoding: str = "utf-8") -> list[Document]:
    """The documents in ``paths``: a file each, a non-empty line each (``lines``), or a JSONL record each."""
    docs: list[Document] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise ProjectError(f"{path}: text file missing")
        try:
            text = path.read_text(encoding=encoding)
        except UnicodeDecodeError as exc:
            raise ProjectError(f"{path}: not {encoding} text ({exc.reason} at byte {exc.start})") from None
        if path.suffix == ".jsonl":
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ProjectError(f"{path}:{lineno}: not JSON ({exc})") from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ProjectError(f"{path}:{lineno}: a JSONL record needs a string field 'text'")
                docs.append(Document(str(record.get("id", f"{path.name}:{lineno}")), record["text"]))
        elif lines:
            docs.extend(Document(f"{path.name}:{lineno}", line)
                        for lineno, line in enumerate(text.splitlines(), 1) if line.strip())
        else:
            docs.append(Document(path.name, text))
    names = [d.name for d in docs]
    if len(set(names)) != len(names):
        dupe = next(n for n in names if names.count(n) > 1)
        raise ProjectError(f"document name {dupe!r} appears twice; give the files distinct names or ids")
    return docs


# --- windows --------------------------------------------------------------------------------------
@dataclass
class Window:
    """Content tokens ``[lo, hi)`` of document ``doc`` run together; this window's states are kept for
    the content tokens ``[own_lo, own_hi)`` (plus the leading special tokens when ``first`` and the
    trailing ones when ``last``)."""

    doc: int
    lo: int
    hi: int
    own_lo: int
    own_hi: int
    first: bool
    last: bool


def plan_windows(n: int, capacity: int, stride: int, causal: bool) -> list[tuple[int, int, int, int]]:
    """Cut ``n`` content tokens into windows of ``capacity`` that overlap by ``stride`` tokens.

    Returns ``(lo, hi, own_lo, own_hi)`` per window. Each token is owned by exactly one window: the one
    where it has the most context, counting only context cut off by a window edge that is not the
    document's edge: for a causal model the tokens to its left, otherwise the nearer side; ties go to
    the earlier window. Owned ranges are contiguous and tile ``[0, n)`` in order.
    """
    if capacity < 1:
        raise ProjectError(f"window capacity {capacity}: the model's maximum length leaves no room for tokens")
    if not 0 <= stride < capacity:
        raise ProjectError(f"--stride {stride}: must be at least 0 and below the window's {capacity} tokens")
    if n <= 0:
        return []
    starts = [0]
    while starts[-1] + capacity < n:
        starts.append(starts[-1] + capacity - stride)
    best = np.full(n, -1.0)
    owner = np.zeros(n, dtype=np.int64)
    for k, lo in enumerate(starts):
        hi = min(n, lo + capacity)
        pos = np.arange(lo, hi)
        left = (pos - lo).astype(float) if lo > 0 else np.full(pos.size, np.inf)
        right = (hi - 1 - pos).astype(float) if hi < n else np.full(pos.size, np.inf)
        score = left if causal else np.minimum(left, right)
        better = score > best[lo:hi]                        # strict: ties stay with the earlier window
        best[lo:hi][better] = score[better]
        owner[lo:hi][better] = k
    out = []
    for k, lo in enumerate(starts):
        owned = np.flatnonzero(owner == k)
        hi = min(n, lo + capacity)
        if owned.size:
            assert owned[-1] - owned[0] + 1 == owned.size   # contiguous, by the monotone scores
            out.append((lo, hi, int(owned[0]), int(owned[-1]) + 1))
    return out


# --- the model ------------------------------------------------------------------------------------
def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")              # never a hub download
    try:
        import torch
        import transformers
    except ModuleNotFoundError as exc:
        raise ProjectError(f"extract-hf needs PyTorch and transformers ({exc}): "
                           "pip install 'lstmvis-gpu[hf]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()             # ours is the one bar
    return torch, transformers


def is_causal(config: Any) -> bool:
    """A decoder language model: its architecture ends in ``ForCausalLM`` or ``LMHeadModel``."""
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def load_model(model_dir: str | os.PathLike, *, attention: bool = False, device: str | None = None):
    """``(model, tokenizer, causal)`` from a local folder: ``AutoModelForCausalLM`` for decoders, else
    ``AutoModel``; eager attention when patterns are wanted (the fused kernels do not return them)."""
    torch, transformers = _transformers()
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise ProjectError(f"{folder}: not a model folder (no config.json); extract-hf reads local folders "
                           "only, e.g. one written by save_pretrained")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        causal = is_causal(config)
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        kwargs = {"attn_implementation": "eager"} if attention else {}
        model = auto.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ProjectError(f"{folder}: cannot load the model or its tokenizer "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ProjectError(f"{folder}: the tokenizer is not a fast (tokenizers-backed) one, which character "
                           "offsets need; save the folder with a tokenizer.json")
    model.eval()
    if device:
        model.to(device)
    return model, tokenizer, causal


def window_length(model: Any, tokenizer: Any, requested: int | None) -> int:
    """The longest window the model takes: the tokenizer's ``model_max_length`` capped by the position
    embeddings (``--max-length`` may only lower it)."""
    limits = [int(tokenizer.model_max_length)] if 0 < tokenizer.model_max_length < 10**7 else []
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(model.config, key, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
    if not limits and requested is None:
        raise ProjectError("the model declares no maximum length; pass --max-length")
    longest = min(limits) if limits else requested
    if requested is not None:
        if not 0 < requested <= longest:
            raise ProjectError(f"--max-length {requested}: the model takes at most {longest} tokens")
        longest = requested
    return longest


def find_blocks(model: Any) -> tuple[str, list]:
    """The name and members of the model's list of layers (the ``ModuleList`` of ``num_hidden_layers``)."""
    from torch import nn

    n = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n:
            return name, list(module)
    raise ProjectError(f"{type(model).__name__}: no list of {n} layers found; record modules by name "
                       "with --module")


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``all``, ``2,5``, ``0-3`` or a mix, layers counted from 0 (negative: from the end, ``-1`` the last)."""
    if spec.strip() == "all":
        return list(range(n_layers))
    out: list[int] = []
    for part in spec.replace(" ", "").split(","):
        found = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
        if found is None:
            raise ProjectError(f"--layers {spec!r}: expected 'all', or layers such as 2,5 or 0-3")
        a, b = (int(g) if g is not None else None for g in found.groups())
        a = a + n_layers if a < 0 else a
        b = a if b is None else (b + n_layers if b < 0 else b)
        if b < a:
            raise ProjectError(f"--layers {spec!r}: the range {part} runs backwards")
        for layer in range(a, b + 1):
            if not 0 <= layer < n_layers:
                raise ProjectError(f"--layers {spec!r}: layer {layer} does not exist (the model has "
                                   f"{n_layers}, counted from 0)")
            if layer not in out:
                out.append(layer)
    return out


def parse_hooks(spec: str) -> list[str]:
    """``all``, or comma-separated names from :data:`HOOKS`; an empty string records none."""
    if not spec.strip():
        return []
    names = list(HOOKS) if spec.strip() == "all" else [h.strip() for h in spec.split(",") if h.strip()]
    bad = [h for h in names if h not in HOOKS]
    if bad:
        raise ProjectError(f"--hooks {spec!r}: expected 'all' or some of {', '.join(HOOKS)}")
    return names


# --- capture --------------------------------------------------------------------------------------
@dataclass
class Probe:
    """One recorded quantity: source ``name`` from ``module``'s input (``pre``) or output."""

    name: str
    module_name: str
    pre: bool
    type: str
    layer: int | None


def probes_for(model: Any, layers: Sequence[int], hooks: Sequence[str], modules: Sequence[str]) -> list[Probe]:
    """The TransformerLens-style hooks of ``layers`` and the named ``modules`` as forward hooks."""
    import difflib

    named = dict(model.named_modules())
    out: list[Probe] = []
    if hooks and layers:
        blocks_name, _ = find_blocks(model)
        for layer in layers:
            block = f"{blocks_name}.{layer}"
            for hook in hooks:
                name = f"blocks.{layer}.hook_{hook}"
                if hook == "resid_pre":
                    out.append(Probe(name, block, True, hook, layer))
                elif hook == "resid_post":
                    out.append(Probe(name, block, False, hook, layer))
                else:
                    candidates = ATTN_OUT_PROJECTIONS if hook == "attn_out" else MLP_OUT_PROJECTIONS
                    found = next((f"{block}.{c}" for c in candidates if f"{block}.{c}" in named), None)
                    if found is None:
                        raise ProjectError(f"--hooks {hook}: no {'attention' if hook == 'attn_out' else 'MLP'} "
                                           f"output projection found in {block} of {type(model).__name__} "
                                           f"(looked for {', '.join(candidates)}); name it with --module")
                    out.append(Probe(name, found, hook == "mlp_post", hook, layer))
    for mname in modules:
        if mname not in named or not mname:
            close = difflib.get_close_matches(mname, [n for n in named if n], n=5, cutoff=0.5)
            listing = close or [n for n in named if n][:8]
            raise ProjectError(f"--module {mname!r} not found in {type(model).__name__}; "
                               f"{'similar' if close else 'modules include'}: {', '.join(listing)}")
        out.append(Probe(mname, mname, False, "output", None))
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ProjectError(f"a source is asked for twice: {sorted({n for n in names if names.count(n) > 1})}")
    return out


class Capture(HookSet):
    """Forward hooks that keep, per forward pass, each probe's tensor ``(B, L, D)``."""

    def __init__(self, model: Any, probes: Sequence[Probe]):
        super().__init__()
        named = dict(model.named_modules())
        self.model = model
        self.probes = list(probes)
        self.seen.update({p.name: [] for p in probes})
        for probe in probes:
            module = named[probe.module_name]
            if probe.pre:
                self.handles.append(module.register_forward_pre_hook(self._pre(probe.name), with_kwargs=True))
            else:
                self.handles.append(module.register_forward_hook(self._post(probe.name)))

    def _pre(self, name: str):
        def hook(module, args, kwargs):
            self.seen[name].append(args[0] if args else kwargs.get("hidden_states"))
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            self.seen[name].append(output)
        return hook

    def take(self, probe: Probe, B: int, L: int):
        import torch

        calls = self.seen[probe.name]
        what = f"module {probe.module_name!r} ({type(self.model.get_submodule(probe.module_name)).__name__})"
        if not calls:
            raise ProjectError(f"{what} did not run in a forward pass of {type(self.model).__name__}, so it "
                               "has no states to record (e.g. a dropout in eval mode); "
                               "for attention patterns use --attention")
        if len(calls) != 1:
            raise ProjectError(f"{what} ran {len(calls)} times in one forward pass; extraction needs exactly one "
                               "call over the whole batch")
        value = calls[0]
        if not torch.is_tensor(value):
            value = getattr(value, "last_hidden_state", None) if not isinstance(value, (tuple, list)) else \
                (value[0] if value and torch.is_tensor(value[0]) else None)
        if value is None or value.dim() < 2 or tuple(value.shape[:2]) != (B, L):
            shape = tuple(value.shape) if value is not None else type(calls[0]).__name__
            raise ProjectError(f"{what}: output {shape} does not start with (batch, steps) = ({B}, {L}); "
                               "record a module whose output has one row per token")
        return value.reshape(B, L, -1)



def attention_band(attn, b_idx, r_idx, window: int, causal: bool):
    """Attention rows of the given query positions as a band of relative offsets, per head.

    ``attn``: ``(B, H, L, L)``. Returns ``(N, H * (offsets + 1))``: for each head (head-major), the
    weight on the key at offset ``-window .. +window`` from the query (``-window .. 0`` for a causal
    model), then the weight on every key outside the band (so a head's columns sum to 1). Keys past a
    window's edge or in padding count as 0.
    """
    import torch

    rows = attn[b_idx, :, r_idx, :]                              # (N, H, L)
    padded = torch.nn.functional.pad(rows, (window, window))
    width = window + 1 if causal else 2 * window + 1
    idx = (r_idx[:, None] + torch.arange(width, device=rows.device)[None, :])   # padded coordinates
    idx = idx[:, None, :].expand(-1, rows.shape[1], -1)
    band = torch.gather(padded, 2, idx)
    rest = (1.0 - band.sum(dim=2, keepdim=True).double()).to(band.dtype)
    return torch.cat([band, rest], dim=2).reshape(rows.shape[0], -1)


def topk_predictions(logits, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` token ids and softmax probabilities per row of ``logits`` ``(N, V)``, most likely first,
    equal logits by id (as :func:`gpu_matcher.io.topk_from_logits`)."""
    import torch

    scores = logits.double()
    values, ids = torch.topk(scores, k, dim=1)
    probs = torch.exp(values - torch.logsumexp(scores, dim=1, keepdim=True))
    ids_np, values_np, probs_np = ids.cpu().numpy(), values.cpu().numpy(), probs.cpu().numpy()
    order = np.lexsort((ids_np, -values_np), axis=1) if ids_np.size else np.zeros_like(ids_np)
    return (np.take_along_axis(ids_np, order, 1).astype(np.int32),
            np.take_along_axis(probs_np, order, 1).astype(np.float32))


# --- the vocabulary -------------------------------------------------------------------------------
def vocabulary_dictionary(tokenizer: Any) -> dict[int, str]:
    """The tokenizer's vocabulary (special and added tokens too) as ``{id: token}`` for a ``.dict`` file;
    white space inside a token is written ``<0xNN>`` (the format splits on it), an empty token ``<empty>``."""
    vocab = tokenizer.get_vocab()
    out: dict[int, str] = {}
    used: set[str] = set()
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        shown = "".join(f"<0x{ord(c):02X}>" if c.isspace() else c for c in token) if token else "<empty>"
        if shown in used:
            shown = f"{shown}#{idx}"
        used.add(shown)
        out[int(idx)] = shown
    return out


# --- tokenizing -----------------------------------------------------------------------------------
@dataclass
class Tokenized:
    """The timeline: per document its ids and offsets (special tokens included), and the windows."""

    ids: list[np.ndarray]
    offsets: list[np.ndarray]
    prefix: int                       # special tokens before the content of every window
    suffix: int                       # and after it
    windows: list[Window]
    skipped: list[str]                # documents without a content token


def special_layout(tokenizer: Any) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text."""
    enc = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    mask = list(enc["special_tokens_mask"])
    content = [i for i, m in enumerate(mask) if not m]
    if not content:
        return 0, 0
    return content[0], len(mask) - content[-1] - 1


def tokenize(docs: Sequence[Document], tokenizer: Any, length: int, stride: int, causal: bool) -> Tokenized:
    prefix, suffix = special_layout(tokenizer)
    capacity = length - prefix - suffix
    ids, offsets, windows, skipped = [], [], [], []
    for doc in docs:
        enc = tokenizer(doc.text, add_special_tokens=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True, truncation=False, verbose=False)
        doc_ids = np.asarray(enc["input_ids"], dtype=np.int64)
        n = doc_ids.size - prefix - suffix
        if n <= 0:
            skipped.append(doc.name)
            continue
        offs = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        special = np.zeros(doc_ids.size, dtype=bool)
        special[:prefix] = True
        special[doc_ids.size - suffix:] = True
        offs[special] = -1
        index = len(ids)
        ids.append(doc_ids)
        offsets.append(offs)
        plan = plan_windows(n, capacity, stride, causal)
        for k, (lo, hi, own_lo, own_hi) in enumerate(plan):
            windows.append(Window(index, lo, hi, own_lo, own_hi, k == 0, k == len(plan) - 1))
    return Tokenized(ids, offsets, prefix, suffix, windows, skipped)


# --- extraction -----------------------------------------------------------------------------------
@dataclass
class Batch:
    input_ids: Any                    # (B, L) torch, right-padded
    attention_mask: Any               # (B, L), 1 on tokens
    b_idx: Any                        # (N,) the batch row of every kept step, in timeline order
    r_idx: Any                        # (N,) its position in the window
    starts: np.ndarray                # block offsets where a document starts


def make_batch(tok: Tokenized, windows: Sequence[Window], pad_id: int, device: Any = None) -> Batch:
    import torch

    P, S = tok.prefix, tok.suffix
    rows, b_idx, r_idx, starts = [], [], [], []
    kept = 0
    for b, w in enumerate(windows):
        ids = tok.ids[w.doc]
        content = ids[P + w.lo:P + w.hi]
        rows.append(np.concatenate([ids[:P], content, ids[ids.size - S:]]))
        keep = np.arange(P + w.own_lo - w.lo, P + w.own_hi - w.lo)
        if w.first:
            keep = np.concatenate([np.arange(P), keep])
            starts.append(kept)
        if w.last:
            keep = np.concatenate([keep, np.arange(P + w.hi - w.lo, P + w.hi - w.lo + S)])
        b_idx.append(np.full(keep.size, b))
        r_idx.append(keep)
        kept += keep.size
    L = max(r.size for r in rows)
    input_ids = np.full((len(rows), L), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), L), dtype=np.int64)
    for b, r in enumerate(rows):
        input_ids[b, :r.size] = r
        mask[b, :r.size] = 1
    return Batch(torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device),
                 torch.from_numpy(np.concatenate(b_idx)).to(device),
                 torch.from_numpy(np.concatenate(r_idx)).to(device), np.asarray(starts, dtype=np.int64))


def forward(model: Any, batch: Batch, attention: bool):
    """The one way the model is called: token ids with their attention mask (padding never attended)."""
    kwargs = {"output_attentions": True} if attention else {}
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)


def run_batch(model: Any, capture: Capture, batch: Batch, *, attention_layers: Sequence[int] = (),
              window: int = 8, causal: bool = False, topk: int = 0, dtype: str = "float32") -> dict:
    """One forward pass; the kept steps of every probe, attention band and top-K, in timeline order,
    as ``dtype`` (converted by PyTorch, on all threads: NumPy's float16 cast is single-threaded)."""
    import torch

    B, L = batch.input_ids.shape
    store = getattr(torch, dtype)

    def rows(name: str, tensor) -> np.ndarray:
        if store == torch.float16 and tensor.numel():
            low, high = torch.aminmax(tensor)                  # one pass; isinf on both sides took two
            if max(-float(low), float(high)) > 65504 and torch.isfinite(tensor).all():
                raise ProjectError(f"source {name!r} holds |x| = {max(-float(low), float(high)):.4g}, beyond "
                                   "float16's 65504; store this model without --float16")
        return tensor.to(store).cpu().numpy()

    capture.clear()
    with torch.inference_mode():
        output = forward(model, batch, bool(attention_layers))
        states = {}
        for probe in capture.probes:
            tensor = capture.take(probe, B, L)
            states[probe.name] = rows(probe.name, tensor[batch.b_idx, batch.r_idx])
        if attention_layers:
            patterns = getattr(output, "attentions", None)
            if not patterns:
                raise ProjectError(f"{type(model).__name__} returned no attention patterns "
                                   "(output_attentions is not supported by this model)")
            for layer in attention_layers:
                name = f"blocks.{layer}.attn.hook_pattern"
                states[name] = rows(name, attention_band(patterns[layer], batch.b_idx, batch.r_idx, window, causal))
        meta = {}
        if topk:
            logits = output.logits[batch.b_idx, batch.r_idx]
            meta[f"top{topk}"] = topk_predictions(logits, topk)
        tokens = batch.input_ids[batch.b_idx, batch.r_idx].cpu().numpy()
    return {"states": states, "tokens": tokens, "meta": meta, "starts": batch.starts}


def _fingerprint(model_dir: Path, docs: Sequence[Document], settings: dict) -> dict:
    digest = hashlib.sha1()
    for doc in docs:
        digest.update(doc.name.encode() + b"\0" + doc.text.encode() + b"\0")
    config = (model_dir / "config.json").read_bytes()
    weights = sorted((p.name, p.stat().st_size) for p in model_dir.iterdir()
                     if p.suffix in (".safetensors", ".bin"))
    return {"texts_sha1": digest.hexdigest(), "documents": len(docs), "model": str(model_dir.resolve()),
            "config_sha1": hashlib.sha1(config).hexdigest(), "weights": weights, **settings}


@dataclass
class ExtractSummary:
    project: Path
    steps: int
    documents: int
    windows: int
    sources: dict[str, int]           # name -> D
    skipped: list[str]
    seconds: float                    # the forward passes and writes, without loading the model
    new_steps: int                    # steps written by this run (less than steps after a resume)


def extract_hf(model_dir: str | os.PathLike, texts: Sequence[str | os.PathLike], out: str | os.PathLike, *,
               layers: str = "all", hooks: str | Sequence[str] = "resid_post", modules: Sequence[str] = (),
               attention: bool = False, attention_window: int = 8, topk: int = 5, lines: bool = False,
               max_length: int | None = None, stride: int | None = None, batch_size: int = 8,
               dtype: str = "float32", device: str | None = None, name: str | None = None,
               resume: bool = False, overwrite: bool = False, progress: bool = True,
               on_block: Callable[[int], None] | None = None) -> ExtractSummary:
    """Write the project ``out`` from the model folder ``model_dir`` over the documents in ``texts``.

    See the module docstring. ``hooks``: names from :data:`HOOKS` (or ``"all"``), for ``layers``;
    ``modules``: more sources by module name; ``attention``: the selected layers' patterns as bands of
    ``attention_window`` offsets; ``topk``: for decoder models, the ``top<K>`` track (0: none);
    ``stride``: the tokens shared by consecutive windows (default a quarter of a window, at most 128).
    ``on_block(steps_written)`` is called after every block (tests use it to interrupt a run).
    """
    from tqdm import tqdm

    from gpu_matcher.io.tracks import set_file_entry
    from gpu_matcher.io.writer import ProjectWriter

    model_dir, out = Path(model_dir), Path(out)
    if batch_size < 1:
        raise ProjectError(f"--batch-size {batch_size}: must be at least 1")
    if attention_window < 0:
        raise ProjectError(f"--attention-window {attention_window}: must be at least 0")
    hook_names = parse_hooks(hooks if isinstance(hooks, str) else ",".join(hooks))
    docs = read_documents(texts, lines=lines)
    if not docs:
        raise ProjectError(f"{', '.join(map(str, texts))}: no documents (every file or line is empty)")
    model, tokenizer, causal = load_model(model_dir, attention=attention, device=device)
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    picked = parse_layers(layers, n_layers) if (hook_names or attention) else []
    probes = probes_for(model, picked, hook_names, modules)
    attention_layers = picked if attention else []
    if not probes and not attention_layers:
        raise ProjectError("nothing to record: give --hooks with --layers, --module or --attention")
    k = topk if causal else 0
    length = window_length(model, tokenizer, max_length)
    capacity_hint = length - sum(special_layout(tokenizer))
    if stride is None:
        stride = min(128, max(0, capacity_hint // 4))
    tok = tokenize(docs, tokenizer, length, stride, causal)
    if not tok.windows:
        raise ProjectError(f"{', '.join(map(str, texts))}: no document has a token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device_t = next(model.parameters()).device
    capture = Capture(model, probes)
    try:
        # a short pass first: a module that does not run fails here, before OUT is created
        first = tok.windows[0]
        probe_window = Window(first.doc, first.lo, min(first.hi, first.lo + 4), first.lo,
                              min(first.hi, first.lo + 4), True, True)
        run_batch(model, capture, make_batch(tok, [probe_window], pad_id, device_t),
                  attention_layers=attention_layers, window=attention_window, causal=causal, topk=k)
        settings = {"layers": picked, "hooks": hook_names, "modules": list(modules), "attention": attention,
                    "attention_window": attention_window if attention else None, "topk": k, "lines": lines,
                    "max_length": length, "stride": stride, "batch_size": batch_size, "dtype": dtype}
        existed = out.exists()
        dictionary = vocabulary_dictionary(tokenizer)
        writer = ProjectWriter(out, name=name,             # default: the project folder's name
                               description=f"{type(model).__name__} ({n_layers} layers) from "
                                           f"{model_dir.resolve()}, extracted with lstmvis extract-hf",
                               dictionary=dictionary, dtype=dtype, overwrite=overwrite, resume=resume,
                               fingerprint=_fingerprint(model_dir, docs, settings))
        bar = None
        try:
            with writer:
                for probe in probes:
                    writer.add_source(probe.name, type=probe.type, layer=probe.layer, transform="none")
                for layer in attention_layers:
                    writer.add_source(f"blocks.{layer}.attn.hook_pattern", type="attn_pattern", layer=layer,
                                      transform="none")
                if k:
                    writer.add_meta(f"top{k}", kind="wordvec")
                done = int(writer.cursor or 0) if writer.resumed else 0
                t0, start_steps = time.perf_counter(), writer.T
                total = int(sum(ids.size for ids in tok.ids))
                bar = tqdm(total=total, initial=writer.T, unit="tok", unit_scale=True,
                           desc=f"extract-hf {out.name}", disable=not progress or None, file=sys.stderr)
                # block i is written on a second thread while block i + 1 runs (a GPU is not kept
                # waiting on HDF5); blocks are appended in order, at most one waits
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstmvis-write") as pool:
                    pending: Future | None = None

                    def settle() -> None:
                        n = pending.result()          # re-raises the writer's error here
                        bar.update(n)
                        if on_block is not None:
                            on_block(writer.T)

                    def write(block: dict, cursor: int) -> int:
                        writer.append(**block, cursor=cursor)
                        return int(block["tokens"].size)

                    try:
                        for lo in range(done, len(tok.windows), batch_size):
                            hi = min(len(tok.windows), lo + batch_size)
                            batch = make_batch(tok, tok.windows[lo:hi], pad_id, device_t)
                            block = run_batch(model, capture, batch, attention_layers=attention_layers,
                                              window=attention_window, causal=causal, topk=k, dtype=dtype)
                            if pending is not None:
                                settle()
                            pending = pool.submit(write, block, hi)
                        if pending is not None:
                            settle()
                    finally:
                        if pending is not None and not pending.done():
                            pending.exception()       # let a block being written finish before abort
                _write_offsets(out, tok, [d.name for i, d in enumerate(docs) if d.name not in tok.skipped])
        except BaseException:
            if not existed and writer.T == 0 and out.is_dir():
                shutil.rmtree(out)                  # a run that wrote nothing leaves nothing behind
            raise
        finally:
            if bar is not None:
                bar.close()
        set_file_entry(out, OFFSETS_KEY, OFFSETS_FILE)
        dims = {name: spec.dim for name, spec in writer.sources.items()}
        return ExtractSummary(out, writer.T, len(tok.ids), len(tok.windows), dims, tok.skipped,
                              time.perf_counter() - t0, writer.T - start_steps)
    finally:
        capture.remove()


def _write_offsets(out: Path, tok: Tokenized, names: Sequence[str]) -> None:
    """``offsets.h5``: ``offsets`` ``(T, 2)`` characters of every step in its document, ``documents``
    the document names (sequence ``i`` is document ``i``); written whole, atomically."""
    import h5py

    tmp = out / (OFFSETS_FILE + ".tmp")
    with h5py.File(tmp, "w") as handle:
        handle.create_dataset("offsets", data=np.concatenate(tok.offsets).astype(np.int64), chunks=True)
        handle.create_dataset("documents", data=np.array(list(names), dtype=object),
                              dtype=h5py.string_dtype())
    os.replace(tmp, out / OFFSETS_FILE)


# --- the command ----------------------------------------------------------------------------------
def cmd_extract_hf(args: argparse.Namespace) -> int:
    s = extract_hf(args.model_dir, args.texts, args.out, layers=args.layers, hooks=args.hooks,
                   modules=args.module or (), attention=args.attention, attention_window=args.attention_window,
                   topk=args.topk, lines=args.lines, max_length=args.max_length, stride=args.stride,
                   batch_size=args.batch_size, dtype="float16" if args.float16 else "float32",
                   device=args.device, name=args.name, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.quiet)
    sources = ", ".join(f"{n} (D={d})" for n, d in s.sources.items())
    print(f"{s.project}: {s.steps} tokens in {s.documents} documents ({s.windows} windows, "
          f"{s.new_steps / max(s.seconds, 1e-9):,.0f} tokens/s); sources: {sources}"
          + (f"; {len(s.skipped)} documents without tokens skipped" if s.skipped else ""))
    return 0


def register(sub: Any) -> None:
    """Add ``extract-hf`` to the ``lstmvis`` subcommands."""
    p = sub.add_parser("extract-hf", help="a local Hugging Face model folder and text files -> a project "
                                          "(needs the hf extra: torch, transformers)")
    p.add_argument("model_dir", help="a local model folder (config.json, weights, tokenizer); never downloaded")
    p.add_argument("texts", nargs="+", metavar="TEXT",
                   help="text files, one document each (--lines: one per line; .jsonl: one per record's 'text')")
    p.add_argument("out", help="the project folder to write")
    p.add_argument("--layers", default="all", help="layers counted from 0: all, 2,5 or 0-3 (default all)")
    p.add_argument("--hooks", default="resid_post",
                   help=f"comma-separated, or all: {', '.join(HOOKS)} (default resid_post; '' for none)")
    p.add_argument("--module", action="append", metavar="NAME", help="also record this module's output "
                                                                      "(a name from model.named_modules())")
    p.add_argument("--attention", action="store_true", help="record the selected layers' attention patterns")
    p.add_argument("--attention-window", type=int, default=8,
                   help="attention kept for keys within this many tokens of the query, per head (default 8)")
    p.add_argument("--topk", type=int, default=5, help="decoders: top-K next-token track (0: none)")
    p.add_argument("--lines", action="store_true", help="every non-empty line is a document")
    p.add_argument("--max-length", type=int, help="window length (default: the model's maximum)")
    p.add_argument("--stride", type=int, help="tokens shared by consecutive windows (default: a quarter "
                                              "window, at most 128)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--float16", action="store_true", help="store states as float16 (half the size)")
    p.add_argument("--device", help="e.g. cuda or cpu (default cpu)")
    p.add_argument("--name", help="project name shown in the app (default: OUT's folder name)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    p.add_argument("--overwrite", action="store_true", help="replace a project in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract_hf)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gpu_matcher.extract.hf MODEL_DIR TEXT... OUT``: the command on its own."""
    parser = argparse.ArgumentParser(prog="lstmvis")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["extract-hf", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except ProjectError as exc:
        print(f"lstmvis: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
