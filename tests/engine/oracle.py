"""A deliberately simple brute-force reading of ../shared/MATCHING.md, for property tests only."""

from __future__ import annotations

import math

import numpy as np


def on_matrix(raw: np.ndarray, threshold: float, transform: str) -> np.ndarray:
    T, D = raw.shape
    on = np.zeros((T, D), dtype=bool)
    for t in range(T):
        for c in range(D):
            x = float(raw[t, c])
            if transform == "tanh":
                if threshold >= 1:
                    on[t, c] = False
                elif threshold <= -1:
                    on[t, c] = not math.isnan(x)
                else:
                    # numpy's float64 arctanh, as the engine (libm's math.atanh can differ by an ulp)
                    on[t, c] = x >= float(np.arctanh(np.float64(threshold)))
            else:
                on[t, c] = x >= threshold
    return on


def sequence_of(t: int, starts: list[int], T: int) -> tuple[int, int]:
    edges = sorted(set([0] + list(starts))) + [T]
    for lo, hi in zip(edges, edges[1:]):
        if lo <= t < hi:
            return lo, hi
    raise AssertionError(t)


def is_on(on, t, c, lo, hi) -> bool:
    return lo <= t < hi and bool(on[t, c])


def select(on, s, e, left, right, starts) -> list[int]:
    T, D = on.shape
    lo, hi = sequence_of(s, starts, T)
    return [c for c in range(D)
            if all(is_on(on, t, c, lo, hi) for t in range(s, e + 1))
            and not any(is_on(on, t, c, lo, hi) for t in range(s - left, s))
            and not any(is_on(on, t, c, lo, hi) for t in range(e + 1, e + 1 + right))]


def match(on, cells, left, right, starts, top=50, min_length=2, phrase_length=0, distinct=True):
    T, D = on.shape
    S = set(cells)
    n = [sum(bool(on[t, c]) for c in S) for t in range(T)]
    cands = set()
    for m in range(1, len(S) + 1):
        t = 0
        while t < T:
            if n[t] >= m:
                lo, hi = sequence_of(t, starts, T)
                a = t
                while t + 1 < hi and n[t + 1] >= m:
                    t += 1
                length = t - a + 1
                if (length == phrase_length) if phrase_length > 0 else (length >= min_length):
                    cands.add((a, t))
            t += 1
    rows = []
    for a, b in cands:
        A = set(select(on, a, b, left, right, starts))        # the active cells are a selection
        rows.append((-len(A & S), len(A | S), -(b - a + 1), a, b))
    rows.sort()
    kept = []
    for neg_inter, union, neg_len, a, b in rows:
        if distinct and any(not (b < ka or a > kb) for ka, kb, *_ in kept):
            continue
        kept.append((a, b, -neg_len, -neg_inter, union))
        if len(kept) == top:
            break
    return [{"start": a, "end": b, "length": l, "inter": i, "union": u} for a, b, l, i, u in kept]


def scaled_on_matrix(raw: np.ndarray, threshold: float, transform: str, scale: str) -> np.ndarray:
    """On under a per-cell scale (``gpu_matcher.scaling``), elementwise in float64: ``z >= threshold``
    with ``z`` the cell's z-score of the transformed value (0 for a constant cell) or its empirical CDF
    over the stored values; NaN is never on."""
    T, D = raw.shape
    x = raw.astype(np.float64)
    v = np.tanh(x) if transform == "tanh" else x
    on = np.zeros((T, D), dtype=bool)
    for c in range(D):
        col = v[:, c]
        good = col[~np.isnan(col)]
        stored = x[:, c][~np.isnan(x[:, c])]
        for t in range(T):
            if math.isnan(col[t]):
                continue
            if scale == "zscore":
                mu = float(good.mean())
                sd = float(np.sqrt(np.mean((good - mu) ** 2)))
                z = 0.0 if sd <= 0 else (col[t] - mu) / sd
            else:
                z = np.count_nonzero(stored <= x[t, c]) / stored.size
            on[t, c] = z >= threshold
    return on
