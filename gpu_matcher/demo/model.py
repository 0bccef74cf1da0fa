"""The demo language model in NumPy: committed weights in, per-step cell and hidden states out.

The model is ``Embedding -> LSTM (2 layers) -> Linear`` trained by ``gpu_matcher/demo/train.py``; the
forward pass here follows ``torch.nn.LSTM`` (gate order i, f, g, o; ``c = f*c + i*g``, ``h = o*tanh(c)``)
so no PyTorch is needed to regenerate the demo.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_matcher.errors import ProjectError

WEIGHTS_PATH = Path(__file__).with_name("parens_lstm.npz")


@dataclass
class LSTMLayer:
    w_ih: np.ndarray          # (4H, I)
    w_hh: np.ndarray          # (4H, H)
    bias: np.ndarray          # (4H,) = b_ih + b_hh


@dataclass
class DemoModel:
    tokens: tuple[str, ...]
    embedding: np.ndarray     # (V, E)
    layers: list[LSTMLayer]
    decoder_w: np.ndarray     # (V, H)
    decoder_b: np.ndarray     # (V,)
    info: dict                # how it was trained, and its measured accuracy
    digest: str               # sha1 of the weights file: the demo project is stale when it changes

    @property
    def hidden(self) -> int:
        return int(self.layers[0].w_hh.shape[1])


def save_weights(path: Path, tokens, embedding, layers, decoder_w, decoder_b, info: dict) -> None:
    """Weights as float16 (the model is small; half precision keeps the repository small)."""
    arrays = {"embedding": embedding, "decoder_w": decoder_w, "decoder_b": decoder_b}
    for k, (w_ih, w_hh, bias) in enumerate(layers):
        arrays[f"l{k}_w_ih"], arrays[f"l{k}_w_hh"], arrays[f"l{k}_bias"] = w_ih, w_hh, bias
    arrays = {k: np.asarray(v, dtype=np.float16) for k, v in arrays.items()}
    np.savez_compressed(path, tokens=np.array(tokens), info=np.array(json.dumps(info)), **arrays)


def open_weights(path: Path, what: str):
    """``(sha1 of the file, the opened .npz)`` of a weights file; a ProjectError naming it if unreadable."""
    try:
        raw = path.read_bytes()
        return hashlib.sha1(raw).hexdigest(), np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ProjectError(f"{path}: cannot read {what} ({exc})") from None


def load_model(path: Path | None = None) -> DemoModel:
    path = Path(path) if path is not None else WEIGHTS_PATH
    digest, data = open_weights(path, "the demo weights")
    with data:
        f32 = {k: data[k].astype(np.float32) for k in data.files if k not in ("tokens", "info")}
        n_layers = sum(1 for k in f32 if k.endswith("_w_ih"))
        layers = [LSTMLayer(f32[f"l{k}_w_ih"], f32[f"l{k}_w_hh"], f32[f"l{k}_bias"]) for k in range(n_layers)]
        return DemoModel(tokens=tuple(str(t) for t in data["tokens"]), embedding=f32["embedding"],
                         layers=layers, decoder_w=f32["decoder_w"], decoder_b=f32["decoder_b"],
                         info=json.loads(str(data["info"])), digest=digest)


def one_blas_thread():
    """The recurrent step multiplies small matrices, where BLAS threads cost more than they save (4x
    slower on a busy 2-core machine); threadpoolctl, when installed, keeps BLAS to one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))      # no overflow warnings for large |x|


def lstm_steps(pre: np.ndarray, w_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM layer from a zero state, time-major: ``pre`` ``(L, B, 4H)`` is the input part of the
    gates plus both biases at every step, ``w_hh`` ``(4H, H)``. Returns hidden and cell ``(L, B, H)``."""
    L, B, H = pre.shape[0], pre.shape[1], w_hh.shape[1]
    w_hh_t = np.ascontiguousarray(w_hh.T)
    h = np.zeros((B, H), dtype=np.float32)
    c = np.zeros((B, H), dtype=np.float32)
    hs = np.empty((L, B, H), dtype=np.float32)
    cs = np.empty((L, B, H), dtype=np.float32)
    for t in range(L):
        g = pre[t] + h @ w_hh_t
        i, f = sigmoid(g[:, :H]), sigmoid(g[:, H:2 * H])
        cand, o = np.tanh(g[:, 2 * H:3 * H]), sigmoid(g[:, 3 * H:])
        c = f * c + i * cand
        h = o * np.tanh(c)
        hs[t], cs[t] = h, c
    return hs, cs


def forward(model: DemoModel, sentences: list[np.ndarray], batch: int = 256) -> dict[str, np.ndarray]:
    """Run each sentence from a zero state. Returns the steps of all sentences concatenated in order:
    ``cell{k}`` and ``hidden{k}`` ``(T, H)`` for layer ``k`` (1-based) and ``logits`` ``(T, V)``."""
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    order = np.argsort(lengths, kind="stable")         # similar lengths together: little padding
    out: dict[str, np.ndarray] = {}
    for lo in range(0, len(order), batch):
        group = order[lo:lo + batch]
        parts = _forward_batch(model, [sentences[i] for i in group])
        for name, rows in parts.items():
            if name not in out:
                out[name] = np.empty((int(offsets[-1]), rows.shape[1]), dtype=np.float32)
            at = 0
            for i in group:
                out[name][offsets[i]:offsets[i + 1]] = rows[at:at + lengths[i]]
                at += lengths[i]
    return out


def _forward_batch(model: DemoModel, sentences: list[np.ndarray]) -> dict[str, np.ndarray]:
    lengths = np.array([len(s) for s in sentences])
    B, L = len(sentences), int(lengths.max())
    ids = np.zeros((B, L), dtype=np.int64)
    for b, s in enumerate(sentences):
        ids[b, :len(s)] = s
    valid = np.arange(L)[:, None] < lengths[None, :]          # (L, B): time-major, like the loop
    x = model.embedding[ids.T]                                 # (L, B, E)
    out: dict[str, np.ndarray] = {}
    for k, layer in enumerate(model.layers, 1):
        # The input part of all gates for all steps in one 2-D product (3-D matmul is slow in NumPy).
        pre = (x.reshape(L * B, -1) @ np.ascontiguousarray(layer.w_ih.T) + layer.bias).reshape(L, B, -1)
        hs, cs = lstm_steps(pre, layer.w_hh)
        x = hs
        # Sentence by sentence, step by step: transpose to (B, L) order before dropping padding.
        out[f"cell{k}"] = cs.transpose(1, 0, 2)[valid.T]
        out[f"hidden{k}"] = hs.transpose(1, 0, 2)[valid.T]
    out["logits"] = out[f"hidden{len(model.layers)}"] @ model.decoder_w.T + model.decoder_b
    return out
