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


def _initial_states(kind: str, hx: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(h0, c0)``, each ``(layers * directions, B, size)`` or None, from the ``hx`` an RNN was called with."""
    if hx is None:
        return None, None
    h0, c0 = hx if kind == "lstm" else (hx, None)
    if h0 is not None and h0.dim() == 2:                  # an unbatched call
        h0 = h0.unsqueeze(1)
        c0 = c0.unsqueeze(1) if c0 is not None else None
    return h0, c0


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
    h0, c0 = _initial_states(kind, hx)
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


@torch.inference_mode()
def per_step_states(rnn: nn.Module, inputs: Any, hx: Any = None, output: Any = None,
                    cells: bool = True) -> list[dict[str, torch.Tensor]]:
    """What :func:`unroll` returns without gates, ``layers[k]`` = ``hidden`` and ``cell`` (LSTM, with
    ``cells``) ``(B, L, size * directions)``, for a batch of sequences of one length, with no Python loop
    over the layer's arithmetic.

    The hidden states come from PyTorch's own LSTM/GRU kernel: ``output``, what ``rnn`` returned, for
    the last layer (nothing is recomputed for a one-layer RNN), a one-layer call per layer below it.
    An LSTM's cell states follow from them: the gates of every step at once from the layer's input and
    the hidden state of the step before (two matrix products over all steps, the same arithmetic as
    :func:`unroll`), then ``c = f * c + i * g``, one elementwise operation per step for every sequence
    and both directions. A PackedSequence (sequences of different lengths) goes to :func:`unroll`.
    """
    if isinstance(inputs, PackedSequence):
        layers, _ = unroll(rnn, inputs, hx=hx)
        return [{k: v for k, v in layer.items() if cells or k != "cell"} for layer in layers]
    kind = rnn_kind(rnn)
    x, _ = as_batch_first(rnn, inputs)
    dirs = 2 if rnn.bidirectional else 1
    h0, c0 = _initial_states(kind, hx)
    last = None
    if output is not None:
        last = as_batch_first(rnn, output[0] if isinstance(output, tuple) else output)[0]
    layers = []
    for k in range(rnn.num_layers):
        own = slice(k * dirs, (k + 1) * dirs)
        hk = h0[own] if h0 is not None else None
        ck = c0[own] if c0 is not None else None
        top = k == rnn.num_layers - 1 and last is not None
        hidden = last if top else _layer_output(rnn, kind, k, x, hk, ck)
        layer = {"hidden": hidden}
        if kind == "lstm" and cells:
            layer["cell"] = _lstm_cells(rnn, k, x, hidden, hk, ck)
        layers.append(layer)
        x = hidden
    return layers


def _layer_output(rnn: nn.Module, kind: str, k: int, x: torch.Tensor, h0: torch.Tensor | None,
                  c0: torch.Tensor | None) -> torch.Tensor:
    """Layer ``k``'s hidden states ``(B, L, size * directions)`` over its input ``x`` (batch first), by
    PyTorch's kernel (what ``nn.LSTM`` / ``nn.GRU`` call) on that layer's weights alone."""
    B = x.shape[0]
    dirs = 2 if rnn.bidirectional else 1
    H_out = getattr(rnn, "proj_size", 0) or rnn.hidden_size
    params = []
    for d in range(dirs):
        w = _weights(rnn, k, reverse=d == 1)
        params += [w["weight_ih"], w["weight_hh"]]
        params += [w["bias_ih"], w["bias_hh"]] if rnn.bias else []
        params += [w["weight_hr"]] if w["weight_hr"] is not None else []
    h = h0.contiguous() if h0 is not None else x.new_zeros(dirs, B, H_out)
    if kind == "gru":
        return torch.gru(x, h, params, rnn.bias, 1, 0.0, False, rnn.bidirectional, True)[0]
    c = c0.contiguous() if c0 is not None else x.new_zeros(dirs, B, rnn.hidden_size)
    return torch.lstm(x, (h, c), params, rnn.bias, 1, 0.0, False, rnn.bidirectional, True)[0]


def _lstm_cells(rnn: nn.Module, k: int, x: torch.Tensor, hidden: torch.Tensor, h0: torch.Tensor | None,
                c0: torch.Tensor | None) -> torch.Tensor:
    """Layer ``k``'s cell states ``(B, L, H * directions)`` from its input ``x`` and its hidden states."""
    B, L = x.shape[:2]
    dirs = 2 if rnn.bidirectional else 1
    H = rnn.hidden_size
    H_out = getattr(rnn, "proj_size", 0) or H
    # Time-major, the backward direction reversed in time, so one operation advances both directions.
    forget = x.new_empty(L, dirs, B, H)
    update = x.new_empty(L, dirs, B, H)
    rows = x.shape[0] * L
    for d in range(dirs):
        w = _weights(rnn, k, reverse=d == 1)
        own = hidden[..., d * H_out:(d + 1) * H_out]
        start = (h0[d] if h0 is not None else x.new_zeros(B, H_out)).unsqueeze(1)
        # the state each step starts from: the step before it (forward), or after it (backward)
        before = torch.cat([start, own[:, :-1]] if d == 0 else [own[:, 1:], start], dim=1)
        # The gates i, f and g (o is not needed) of every step: two matrix products, biases folded in.
        bias = sum(b[:3 * H] for b in (w["bias_ih"], w["bias_hh"]) if b is not None)
        gates = torch.addmm(bias if torch.is_tensor(bias) else x.new_zeros(3 * H),
                            x.reshape(rows, -1), w["weight_ih"][:3 * H].T)
        gates.addmm_(before.reshape(rows, -1), w["weight_hh"][:3 * H].T)
        gates = gates.view(B, L, 3 * H)
        f = torch.sigmoid(gates[..., H:2 * H])
        ig = torch.sigmoid_(gates[..., :H]).mul_(torch.tanh_(gates[..., 2 * H:]))
        del gates, before
        if d == 1:
            f, ig = f.flip(1), ig.flip(1)
        forget[:, d] = f.transpose(0, 1)
        update[:, d] = ig.transpose(0, 1)
        del f, ig
    cells = torch.empty_like(forget)
    c = c0.contiguous() if c0 is not None else x.new_zeros(dirs, B, H)
    for t in range(L):
        c = torch.addcmul(update[t], forget[t], c, out=cells[t])
    del forget, update
    parts = [cells[:, 0].transpose(0, 1)] + ([cells[:, 1].flip(0).transpose(0, 1)] if dirs == 2 else [])
    return torch.cat(parts, dim=2)
