"""Per-step states of every layer of ``nn.LSTM`` / ``nn.GRU``, recomputed from the module's weights.

``nn.LSTM`` returns the hidden state of the *last* layer at every step and only the *final* cell state,
so a visualisation of cell states (the LSTMVis default) needs the recurrence unrolled. This follows
PyTorch's equations exactly (gate order i, f, g, o for LSTM; r, z, n for GRU; ``proj_size``;
bidirectional layers; initial states), in inference mode (no inter-layer dropout).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from gpu_matcher.errors import ProjectError

LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("r", "z", "n")


def rnn_kind(module: nn.Module) -> str:
    if isinstance(module, nn.LSTM):
        return "lstm"
    if isinstance(module, nn.GRU):
        return "gru"
    raise ProjectError(f"{type(module).__name__} is not an nn.LSTM or nn.GRU; hook it as a module instead")


def as_batch_first(rnn: nn.Module, inputs: Any, lengths: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The input an RNN was called with as ``(B, L, I)`` plus the length of every sequence."""
    if isinstance(inputs, PackedSequence):
        padded, packed_lengths = pad_packed_sequence(inputs, batch_first=True)
        return padded, packed_lengths.to(torch.long)
    if not torch.is_tensor(inputs) or inputs.dim() not in (2, 3):
        raise ProjectError(f"{type(rnn).__name__} input must be a (batched) tensor or PackedSequence, got "
                           f"{type(inputs).__name__} {getattr(inputs, 'shape', '')}")
    x = inputs if inputs.dim() == 3 else inputs.unsqueeze(0 if rnn.batch_first else 1)
    if not rnn.batch_first:
        x = x.transpose(0, 1)
    B, L = x.shape[:2]
    if lengths is None:
        lengths = torch.full((B,), L, dtype=torch.long)
    return x, lengths.to(torch.long).cpu()


def _reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence over its own length (padding stays in place); its own inverse."""
    B, L = x.shape[:2]
    t = torch.arange(L).unsqueeze(0).expand(B, L)
    lens = lengths.unsqueeze(1)
    index = torch.where(t < lens, lens - 1 - t, t).to(x.device)
    return torch.gather(x, 1, index.unsqueeze(-1).expand_as(x))


def _weights(rnn: nn.Module, layer: int, reverse: bool) -> dict[str, torch.Tensor | None]:
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return {name: getattr(rnn, name + suffix, None)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}


def _run_direction(kind: str, w: dict, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None,
                   gates: bool) -> dict[str, torch.Tensor]:
    """One layer, one direction, over all steps of ``x`` (B, L, I)."""
    B, L, _ = x.shape
    pre = x @ w["weight_ih"].T
    if w["bias_ih"] is not None:
        pre = pre + w["bias_ih"]
    w_hh_t = w["weight_hh"].T
    b_hh = w["bias_hh"]
    hs, cs, gs = [], [], []
    for t in range(L):
        rec = h @ w_hh_t
        if b_hh is not None:
            rec = rec + b_hh
        if kind == "lstm":
            i, f, g, o = (pre[:, t] + rec).chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            if w["weight_hr"] is not None:
                h = h @ w["weight_hr"].T
            cs.append(c)
            if gates:
                gs.append((i, f, g, o))
        else:
            xr, xz, xn = pre[:, t].chunk(3, dim=1)
            hr, hz, hn = rec.chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            if gates:
                gs.append((r, z, n))
        hs.append(h)
    out = {"hidden": torch.stack(hs, dim=1)}
    if kind == "lstm":
        out["cell"] = torch.stack(cs, dim=1)
    if gates:
        for j, name in enumerate(LSTM_GATES if kind == "lstm" else GRU_GATES):
            out[f"gate_{name}"] = torch.stack([g[j] for g in gs], dim=1)
    return out


@torch.no_grad()
def unroll(rnn: nn.Module, inputs: Any, lengths: torch.Tensor | None = None, hx: Any = None,
           gates: bool = False) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """Every layer's per-step states for the input ``rnn`` was (or would be) called with.

    Returns ``(layers, lengths)``: ``layers[k]`` maps ``hidden``, ``cell`` (LSTM) and, with ``gates``,
    ``gate_i/f/g/o`` (LSTM) or ``gate_r/z/n`` (GRU) to ``(B, L, size * directions)`` tensors, batch
    first, the two directions concatenated like ``nn.LSTM``'s output. Steps past a sequence's length
    hold no meaningful values.
    """
    kind = rnn_kind(rnn)
    x, lengths = as_batch_first(rnn, inputs, lengths)
    B = x.shape[0]
    dirs = 2 if rnn.bidirectional else 1
    H = rnn.hidden_size
    H_out = getattr(rnn, "proj_size", 0) or H
    h0 = c0 = None
    if hx is not None:
        h0, c0 = hx if kind == "lstm" else (hx, None)
        if h0 is not None and h0.dim() == 2:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
    layers = []
    for k in range(rnn.num_layers):
        per_dir = []
        for d in range(dirs):
            w = _weights(rnn, k, reverse=d == 1)
            idx = k * dirs + d
            h = h0[idx] if h0 is not None else x.new_zeros(B, H_out)
            c = (c0[idx] if c0 is not None else x.new_zeros(B, H)) if kind == "lstm" else None
            xin = _reverse_within(x, lengths) if d == 1 else x
            out = _run_direction(kind, w, xin, h, c, gates)
            if d == 1:
                out = {name: _reverse_within(t, lengths) for name, t in out.items()}
            per_dir.append(out)
        layer = {name: torch.cat([o[name] for o in per_dir], dim=2) for name in per_dir[0]}
        layers.append(layer)
        x = layer["hidden"]
    return layers, lengths
