"""The genomic demo's DanQ-like model in NumPy: committed weights in, per-base states and predictions out.

``Conv1d(4, C, K, padding=K//2) -> ReLU -> bidirectional LSTM(C, H) -> Linear(2H, P) -> sigmoid``, one
output per base and protein (DanQ, Quang & Xie 2016, without its max-pool, so the states stay per
base), trained by ``gpu_matcher/demo/train_danq.py``. The forward pass follows PyTorch (``nn.Conv1d``
is a cross-correlation; ``nn.LSTM`` gate order i, f, g, o; the backward direction runs over the window
reversed), so no PyTorch is needed to write the demo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_matcher.demo.model import lstm_steps, open_weights, sigmoid
from gpu_matcher.errors import ProjectError
from gpu_matcher.extract.dna import kept_rows, one_hot_windows, window_batches

WEIGHTS_PATH = Path(__file__).with_name("danq_genome.npz")
#: The demo's windows: 1,000 bases (DanQ's input length) every 500, the centre half of each kept.
WINDOW, STRIDE = 1000, 500
ARRAYS = ("conv_w", "conv_b", "fw_w_ih", "fw_w_hh", "fw_bias", "bw_w_ih", "bw_w_hh", "bw_bias",
          "out_w", "out_b")


@dataclass
class DanQModel:
    proteins: tuple[str, ...]
    conv_w: np.ndarray        # (C, 4, K)
    conv_b: np.ndarray        # (C,)
    fw: tuple[np.ndarray, np.ndarray, np.ndarray]     # w_ih (4H, C), w_hh (4H, H), bias (4H,) = b_ih + b_hh
    bw: tuple[np.ndarray, np.ndarray, np.ndarray]
    out_w: np.ndarray         # (P, 2H)
    out_b: np.ndarray         # (P,)
    info: dict
    digest: str

    @property
    def hidden(self) -> int:
        return int(self.fw[1].shape[1])

    @property
    def filters(self) -> int:
        return int(self.conv_w.shape[0])


def save_weights(path: Path, proteins, arrays: dict[str, np.ndarray], info: dict) -> None:
    """``arrays``: the names of :data:`ARRAYS`; stored as float16 (a few tens of KiB)."""
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ProjectError(f"{path}: weights lack {missing}")
    np.savez_compressed(path, proteins=np.array(proteins), info=np.array(json.dumps(info)),
                        **{k: np.asarray(arrays[k], dtype=np.float16) for k in ARRAYS})


def load_model(path: Path | None = None) -> DanQModel:
    path = Path(path) if path is not None else WEIGHTS_PATH
    digest, data = open_weights(path, "the genomic demo's weights")
    with data:
        missing = [k for k in ARRAYS + ("proteins", "info") if k not in data.files]
        if missing:
            raise ProjectError(f"{path}: not DanQ-like demo weights (missing {missing})")
        w = {k: data[k].astype(np.float32) for k in ARRAYS}
        return DanQModel(proteins=tuple(str(p) for p in data["proteins"]), conv_w=w["conv_w"],
                         conv_b=w["conv_b"], fw=(w["fw_w_ih"], w["fw_w_hh"], w["fw_bias"]),
                         bw=(w["bw_w_ih"], w["bw_w_hh"], w["bw_bias"]), out_w=w["out_w"], out_b=w["out_b"],
                         info=json.loads(str(data["info"])), digest=digest)


def conv_relu(model: DanQModel, x: np.ndarray) -> np.ndarray:
    """``(B, L, 4)`` one-hot -> ``(B, L, C)`` ReLU outputs ("same" padding with zeros)."""
    B, L, _ = x.shape
    C, _, K = model.conv_w.shape
    padded = np.pad(x, ((0, 0), (K // 2, K - 1 - K // 2), (0, 0)))
    cols = np.lib.stride_tricks.sliding_window_view(padded, K, axis=1)      # (B, L, 4, K)
    out = cols.reshape(B * L, 4 * K) @ model.conv_w.reshape(C, 4 * K).T + model.conv_b
    return np.maximum(out, 0.0).reshape(B, L, C).astype(np.float32)


def forward(model: DanQModel, x: np.ndarray) -> dict[str, np.ndarray]:
    """One batch of windows ``(B, L, 4)``, each from a zero state. Returns ``(B, L, ...)`` arrays:
    ``conv`` (C), ``cell`` and ``hidden`` (2H: forward cells, then backward ones, as ``nn.LSTM``
    concatenates them) and ``prob`` (P, the sigmoid outputs)."""
    B, L, _ = x.shape
    conv = conv_relu(model, x)
    seq = np.ascontiguousarray(conv.transpose(1, 0, 2)).reshape(L * B, -1)      # time-major rows
    parts = []
    for (w_ih, w_hh, bias), reverse in ((model.fw, False), (model.bw, True)):
        pre = (seq @ np.ascontiguousarray(w_ih.T) + bias).reshape(L, B, -1)
        hs, cs = lstm_steps(pre[::-1] if reverse else pre, w_hh)
        parts.append((hs[::-1], cs[::-1]) if reverse else (hs, cs))
    hidden = np.concatenate([parts[0][0], parts[1][0]], axis=2).transpose(1, 0, 2)
    cell = np.concatenate([parts[0][1], parts[1][1]], axis=2).transpose(1, 0, 2)
    prob = sigmoid(hidden @ model.out_w.T + model.out_b)
    return {"conv": conv, "cell": np.ascontiguousarray(cell), "hidden": np.ascontiguousarray(hidden),
            "prob": prob.astype(np.float32)}


def forward_windows(model: DanQModel, ids_of, table: np.ndarray, bounds: np.ndarray, *, window: int,
                    stride: int, batch: int = 64):
    """The model over every contig in sliding windows (:func:`gpu_matcher.extract.dna.plan_windows`):
    yields, in timeline order, the kept steps' ``conv``, ``cell``, ``hidden`` and ``prob`` ``(n, ...)``.
    ``ids_of(start, stop)`` reads base ids (global steps), ``table`` maps them to one-hot rows."""
    for group in window_batches(bounds, window, stride, batch):
        states = forward(model, one_hot_windows(ids_of, table, group))
        yield {name: kept_rows(group, values) for name, values in states.items()}
