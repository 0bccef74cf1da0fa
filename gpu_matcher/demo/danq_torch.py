"""The genomic demo's DanQ-like model as a PyTorch module (needs the ``torch`` extra): what
``train_danq`` trains, and a model ``lstmvis extract-genome`` can be tried on
(``--model gpu_matcher.demo.danq_torch:demo_model``).

Input ``(B, 4, L)`` one-hot DNA (channels first, as ``nn.Conv1d`` and DanQ take it); output
``(B, L, P)`` per-base probabilities, one column per protein.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from gpu_matcher.demo.danq import load_model


class DanQLike(nn.Module):
    def __init__(self, proteins: tuple[str, ...] = ("ctcf", "gata", "tata"), filters: int = 32,
                 kernel: int = 15, hidden: int = 32):
        super().__init__()
        self.proteins = tuple(proteins)
        self.conv = nn.Conv1d(4, filters, kernel, padding=kernel // 2)
        self.relu = nn.ReLU()
        self.lstm = nn.LSTM(filters, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, len(self.proteins))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 4, L)`` -> ``(B, L, P)`` logits (training uses these, with a logistic loss)."""
        features = self.relu(self.conv(x)).transpose(1, 2)
        return self.out(self.lstm(features)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def weights_of(model: DanQLike) -> dict[str, np.ndarray]:
    """The arrays :func:`gpu_matcher.demo.danq.save_weights` stores (biases of a gate summed)."""
    lstm = model.lstm

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    out = {"conv_w": arr(model.conv.weight), "conv_b": arr(model.conv.bias),
           "out_w": arr(model.out.weight), "out_b": arr(model.out.bias)}
    for prefix, suffix in (("fw", ""), ("bw", "_reverse")):
        out[f"{prefix}_w_ih"] = arr(getattr(lstm, f"weight_ih_l0{suffix}"))
        out[f"{prefix}_w_hh"] = arr(getattr(lstm, f"weight_hh_l0{suffix}"))
        out[f"{prefix}_bias"] = arr(getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}"))
    return out


def demo_model(path: str | Path | None = None) -> DanQLike:
    """The committed demo weights (or ``path``, a ``danq_genome.npz``-style file) in a :class:`DanQLike`."""
    numpy_model = load_model(Path(path) if path is not None else None)
    C, _, K = numpy_model.conv_w.shape
    model = DanQLike(numpy_model.proteins, filters=C, kernel=K, hidden=numpy_model.hidden)
    with torch.no_grad():
        model.conv.weight.copy_(torch.from_numpy(numpy_model.conv_w))
        model.conv.bias.copy_(torch.from_numpy(numpy_model.conv_b))
        model.out.weight.copy_(torch.from_numpy(numpy_model.out_w))
        model.out.bias.copy_(torch.from_numpy(numpy_model.out_b))
        for (w_ih, w_hh, bias), suffix in ((numpy_model.fw, ""), (numpy_model.bw, "_reverse")):
            getattr(model.lstm, f"weight_ih_l0{suffix}").copy_(torch.from_numpy(w_ih))
            getattr(model.lstm, f"weight_hh_l0{suffix}").copy_(torch.from_numpy(w_hh))
            getattr(model.lstm, f"bias_ih_l0{suffix}").copy_(torch.from_numpy(bias))
            getattr(model.lstm, f"bias_hh_l0{suffix}").zero_()
    return model.eval()
