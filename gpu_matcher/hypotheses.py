"""Hypotheses that fit unbounded activations: "at least m of the k cells of S on" as a detector of a label
(a grid over m and the threshold), and a per-unit profile (top activating contexts, an activation
histogram, the tokens a unit fires on) in the manner of Neuronpedia's feature dashboards.

Pure computation over the Engine's public API, plain data out; no Bokeh. "On" is MATCHING.md's exact
comparison under a scale: cell c is on at t iff ``key(raw[t, c]) >= Engine.key_thresholds(θ)[c]`` (what
``Engine.counts`` computes); m = k is ``gpu_matcher.stats.detector``'s "every cell of S on". Every count
is an exact integer over the whole corpus; a source is read in bounded blocks or one cell row at a time, by
the engine's backend when it declares ``Capability.LEVEL_HISTOGRAMS`` (NumPy; the sharded and Dask
backends shard by shard), else by NumPy over the host layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gpu_matcher import stats
from gpu_matcher.backends.base import Capability
from gpu_matcher.errors import ProjectError
from gpu_matcher.source import KEY_DTYPES, keys_to_floats, transform_values
from gpu_matcher.threshold import SCALE_DEFAULTS, Threshold, check_scale

__all__ = ["AtLeast", "AtLeastGrid", "at_least_grid", "at_least_detector", "UnitProfile", "unit_profile",
           "top_contexts", "activation_histogram", "token_rates"]



# --- at least m of k on --------------------------------------------------------------------------
@dataclass(frozen=True)
class AtLeast:
    """One point of the grid: "at least ``m`` of the ``k`` cells on at the threshold" scored as a detector."""

    m: int
    k: int
    detection: stats.Detection

    def as_dict(self) -> dict:
        return {"m": self.m, "k": self.k, **self.detection.as_dict()}


@dataclass(frozen=True, eq=False)
class AtLeastGrid:
    """Exact counts for every m in 1..k and every threshold (in the order given): row ``m - 1``."""

    cells: tuple[int, ...]
    thresholds: tuple[float, ...]
    positives: int
    predicted: np.ndarray = field(repr=False)          # (k, J) int64: steps with >= m cells on
    true_positives: np.ndarray = field(repr=False)     # (k, J) int64: those with the label

    @property
    def k(self) -> int:
        return len(self.cells)

    def point(self, m: int, j: int) -> AtLeast:
        """m of k at the j-th threshold."""
        if not 1 <= m <= self.k:
            raise ProjectError(f"at least {m} of {self.k} cells: choose m in [1, {self.k}]")
        return AtLeast(m, self.k, stats.scores(self.thresholds[j], int(self.predicted[m - 1, j]),
                                               self.positives, int(self.true_positives[m - 1, j])))

    def curve(self, m: int) -> stats.DetectorCurve:
        """The curve over thresholds at one m (``m = k`` is ``stats.detector_curve``)."""
        points = [self.point(m, j).detection for j in range(len(self.thresholds))]
        return stats.DetectorCurve(points=points, best=stats.best_f1(points))

    def over_m(self, j: int) -> list[AtLeast]:
        """The curve over m = 1..k at the j-th threshold."""
        return [self.point(m, j) for m in range(1, self.k + 1)]

    def best_by_m(self) -> list[AtLeast | None]:
        """Per m, the best threshold (``stats.best_f1``'s rule); None where every F1 is 0."""
        out: list[AtLeast | None] = []
        for m in range(1, self.k + 1):
            best = self.curve(m).best
            out.append(None if best is None else AtLeast(m, self.k, best))
        return out

    def best(self) -> AtLeast | None:
        """The highest F1 over the grid; ties: the lowest threshold, then the largest m (the stricter
        detector). None when every F1 is 0."""
        found = None
        for b in self.best_by_m():
            if b is None:
                continue
            if found is None or (b.detection.f1, -b.detection.threshold, b.m) > \
                    (found.detection.f1, -found.detection.threshold, found.m):
                found = b
        return found


def _bounds(engine, source: str, cells: np.ndarray, thresholds: Sequence[float], scale: str) -> np.ndarray:
    """(k, J) keys: cell ``cells[i]`` is on at threshold j iff its key is ``>= bounds[i, j]``."""
    src = engine.project.source(source)
    kdt = KEY_DTYPES[src.dtype.itemsize]
    nothing = np.iinfo(kdt).max             # above every stored key: nothing is on
    out = np.full((cells.size, len(thresholds)), nothing, dtype=kdt)
    for j, th in enumerate(thresholds):
        keys = engine.key_thresholds(source, Threshold.of(float(th), scale))
        if keys is not None:
            out[:, j] = keys[cells]
    return out


def at_least_grid(engine, source: str, cells: Sequence[int], thresholds: Sequence[float] | None,
                  track: str, label: Any, scale: str = "none") -> AtLeastGrid:
    """Precision, recall and F1 of "at least m of the cells on at t" as a prediction of ``track ==
    label``, for every m in 1..k and every threshold (default: ``stats.default_thresholds``)."""
    check_scale(scale)
    src = engine.project.source(source)
    chosen = np.unique(np.asarray(list(cells), dtype=np.int64))
    if chosen.size == 0:
        raise ProjectError(f"source {source}: the cell set is empty; a detector needs at least one cell")
    if chosen[0] < 0 or chosen[-1] >= src.D:
        bad = chosen[(chosen < 0) | (chosen >= src.D)][0]
        raise ProjectError(f"source {source}: cell {int(bad)} is out of range [0, {src.D})")
    if thresholds is None:
        thresholds = stats.default_thresholds(engine, source, scale=scale)
    given = [float(t) for t in thresholds]
    if any(math.isnan(t) for t in given):
        raise ProjectError(f"thresholds {given}: a threshold is not a number")
    order = np.argsort(np.asarray(given), kind="stable")
    bounds = _bounds(engine, source, chosen, [given[i] for i in order], scale)
    if np.any(bounds[:, 1:] < bounds[:, :-1]):          # scaling's contract; the levels rely on it
        raise AssertionError("threshold keys must not fall as the threshold rises")
    positive = stats.label_target(engine, track, label)
    backend, layout = engine.scan_backend(source, ability=Capability.LEVEL_HISTOGRAMS)
    with backend.lock:
        # For each m (row k - m), steps without / with the label whose m-th highest level is l: cell c is
        # on at the j-th (sorted) threshold iff its level is > j (``NumpyBackend.level_histograms``).
        hist = backend.level_histograms(layout, chosen, bounds, positive)
    above = np.cumsum(hist[:, :, ::-1], axis=2)[:, :, ::-1][:, :, 1:]   # steps with level > j
    tp_sorted = above[::-1, 1, :]                                       # row m - 1
    pred_sorted = tp_sorted + above[::-1, 0, :]
    predicted = np.empty_like(pred_sorted)
    tp = np.empty_like(tp_sorted)
    predicted[:, order] = pred_sorted                                   # back to the order given
    tp[:, order] = tp_sorted
    return AtLeastGrid(cells=tuple(int(c) for c in chosen), thresholds=tuple(given),
                       positives=stats.label_count(engine, track, label), predicted=predicted,
                       true_positives=tp)


def at_least_detector(engine, source: str, cells: Sequence[int], m: int, threshold: float, track: str,
                      label: Any, scale: str = "none") -> AtLeast:
    """Precision, recall and F1 of "at least ``m`` cells on at t" at one threshold."""
    return at_least_grid(engine, source, cells, [threshold], track, label, scale).point(int(m), 0)


# --- the profile of one unit ---------------------------------------------------------------------
@dataclass(frozen=True)
class UnitProfile:
    source: str
    cell: int
    transform: str
    threshold: float
    scale: str
    steps: int
    contexts: list[dict]       # the top activating contexts, best first
    histogram: dict            # fixed bins over the finite value range; NaN and infinities apart
    on_steps: int              # steps the unit is on at the threshold (under the scale)
    tokens: list[dict]         # the tokens with the most on-steps and their on-rates

    def as_dict(self) -> dict:
        return {"source": self.source, "cell": self.cell, "transform": self.transform,
                "threshold": self.threshold, "scale": self.scale, "steps": self.steps,
                "on_steps": self.on_steps, "on_rate": self.on_steps / self.steps if self.steps else 0.0,
                "contexts": self.contexts, "histogram": self.histogram, "tokens": self.tokens}


def _window(bounds: np.ndarray, t: int, window: int) -> tuple[int, int]:
    """``[a, b)``: ``window`` steps either side of t, clipped to t's sequence."""
    i = int(np.searchsorted(bounds, t, side="right")) - 1
    lo, hi = int(bounds[i]), int(bounds[i + 1])
    return max(lo, t - window), min(hi, t + window + 1)


def top_contexts(values: np.ndarray, bounds: np.ndarray, top: int, window: int) -> list[tuple[int, int, int]]:
    """The ``top`` highest non-NaN values (ties: the earlier step) with distinct windows: a step inside an
    already chosen context's window is skipped. Returns ``(t, a, b)`` with the window ``[a, b)``.

    Each chosen step hides at most ``2 window`` others, so the first ``top (2 window + 1)`` ranked steps
    hold the answer; only those are sorted."""
    top, window = max(0, int(top)), max(0, int(window))
    valid = np.flatnonzero(~np.isnan(values))
    if top == 0 or valid.size == 0:
        return []
    need = top * (2 * window + 1)
    vals = values[valid]
    if valid.size > need:
        cut = np.partition(vals, valid.size - need)[valid.size - need]     # the need-th highest value
        keep = vals >= cut
        valid, vals = valid[keep], vals[keep]
    ranked = valid[np.lexsort((valid, -vals.astype(np.float64)))]
    chosen: list[tuple[int, int, int]] = []
    for t in ranked.tolist():
        if any(a <= t < b for _, a, b in chosen):
            continue
        chosen.append((t, *_window(bounds, t, window)))
        if len(chosen) == top:
            break
    return chosen


def activation_histogram(values: np.ndarray, bins: int) -> dict:
    """Exact counts in ``bins`` equal bins over the finite values' range ``[min, max]`` (each bin
    ``[e_i, e_i+1)``, the last closed); NaN and infinities are counted apart."""
    if bins < 1:
        raise ProjectError(f"--bins {bins}: need at least one bin")
    v = np.asarray(values, dtype=np.float64)
    nan = int(np.isnan(v).sum())
    finite = v[np.isfinite(v)]
    out = {"edges": [], "counts": [], "nan": nan, "neg_inf": int(np.isneginf(v).sum()),
           "pos_inf": int(np.isposinf(v).sum())}
    if finite.size == 0:
        return out
    lo, hi = float(finite.min()), float(finite.max())
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo, hi])
    which = np.clip(np.searchsorted(edges, finite, side="right") - 1, 0, edges.size - 2)
    out["edges"] = edges.tolist()
    out["counts"] = np.bincount(which, minlength=edges.size - 1).tolist()
    return out


def token_rates(words: np.ndarray, on: np.ndarray, dictionary: dict[int, str], top: int) -> list[dict]:
    """The ``top`` tokens with the most on-steps (ties: the lower id) and their on-rate = on-steps /
    occurrences in the corpus."""
    ids, inverse = np.unique(np.asarray(words, dtype=np.int64), return_inverse=True)
    occurrences = np.bincount(inverse, minlength=ids.size)
    fired = np.bincount(inverse[on], minlength=ids.size)
    hit = np.flatnonzero(fired)
    order = hit[np.lexsort((ids[hit], -fired[hit]))][:max(0, int(top))]
    return [{"id": int(ids[i]), "token": dictionary.get(int(ids[i]), f"#{int(ids[i])}"),
             "on": int(fired[i]), "occurrences": int(occurrences[i]),
             "rate": int(fired[i]) / int(occurrences[i])} for i in order]


def unit_profile(engine, source: str, cell: int, threshold: float | None = None, scale: str = "none",
                 top: int = 10, window: int = 5, bins: int = 40, tokens: int | None = None,
                 sequences: bool = True) -> UnitProfile:
    """One cell over the whole corpus: its top activating contexts (values after the transform), an
    activation histogram, and the tokens it is on at (``threshold`` on ``scale``; default: the scale's
    default, 0.3 for ``none``). Reads one cell row of the layout, never the (T, D) source."""
    check_scale(scale)
    src = engine.project.source(source)
    if not 0 <= int(cell) < src.D:
        raise ProjectError(f"source {source}: cell {int(cell)} is out of range [0, {src.D})")
    if top < 0 or window < 0:
        raise ProjectError(f"top={top}, window={window}: need top >= 0 and window >= 0")
    cell = int(cell)
    theta = float(SCALE_DEFAULTS.get(scale, 0.3) if threshold is None else threshold)
    keys = src.layout(progress=False).keys_cells.take(np.array([cell]))[0]
    values = transform_values(keys_to_floats(keys, src.dtype), src.transform)
    project = engine.project
    bounds = project.sequence_bounds(sequences)
    scaled = engine.normalised_row(source, cell, scale) if scale != "none" else None
    contexts = []
    for t, a, b in top_contexts(values, bounds, top, window):
        row = {"position": t, "value": float(values[t]), "start": a, "stop": b, "at": t - a,
               "words": project.tokens(a, b)}
        if scaled is not None:
            row["scaled"] = float(scaled[t])
        contexts.append(row)
    key = engine.key_thresholds(source, Threshold.of(theta, scale))
    on = keys >= key[cell] if key is not None else np.zeros(keys.size, dtype=bool)
    fired = []
    if project.word_ids_dataset is not None:
        fired = token_rates(engine.word_ids(), on, project.dictionary, top if tokens is None else tokens)
    return UnitProfile(source=source, cell=cell, transform=src.transform, threshold=theta, scale=scale,
                       steps=int(keys.size), contexts=contexts, histogram=activation_histogram(values, bins),
                       on_steps=int(np.count_nonzero(on)), tokens=fired)
