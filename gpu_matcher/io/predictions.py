"""Top-K next-token predictions from a model's logits, as a ``wordvec`` meta track (ids and scores)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gpu_matcher.errors import ProjectError


def topk_from_logits(logits: np.ndarray, k: int = 5,
                     token_ids: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely tokens per step and their softmax probabilities, most likely first.

    ``logits``: ``(n, V)``. ``token_ids``: the dictionary id of each logit column (default: the column
    index). Returns ``ids`` ``(n, k)`` int32 and ``probs`` ``(n, k)`` float32, ready for
    ``ProjectWriter.append(meta={"top5": (ids, probs)})``. Equal logits are ordered by column.
    """
    scores = np.asarray(logits)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ProjectError(f"top-k: logits have shape {scores.shape}; expected (steps, vocabulary)")
    n, V = scores.shape
    if not 1 <= k <= V:
        raise ProjectError(f"top-k: k={k} must be between 1 and the vocabulary size {V}")
    scores = scores.astype(np.float64, copy=False)
    if k < V // 4:                                  # a large vocabulary: partition, then sort k
        cols = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        cols = np.sort(cols, axis=1)
    else:
        cols = np.broadcast_to(np.arange(V), (n, V))
    picked = np.take_along_axis(scores, cols, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")[:, :k]
    cols = np.take_along_axis(cols, order, axis=1)
    top = np.take_along_axis(picked, order, axis=1)
    peak = scores.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scores - peak).sum(axis=1, keepdims=True)) + peak
    probs = np.exp(top - log_norm).astype(np.float32)
    if token_ids is not None:
        mapping = np.asarray(token_ids, dtype=np.int64)
        if mapping.shape != (V,):
            raise ProjectError(f"top-k: token_ids has shape {mapping.shape}; expected ({V},), "
                               "one dictionary id per logit column")
        cols = mapping[cols]
    return cols.astype(np.int32), probs
