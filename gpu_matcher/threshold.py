"""The threshold of a query: a value and the scale it is read on (MATCHING.md "On and off"; per-cell
scales: ``gpu_matcher.scaling``). One small value type that every layer passes along unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from gpu_matcher.errors import ProjectError

#: ``none``: θ on the value after the source's transform; ``zscore`` / ``quantile``: θ on a per-cell
#: normalised value (``gpu_matcher.scaling``).
SCALES = ("none", "zscore", "quantile")
#: The threshold range a user is offered per scale (the value range of the source for "none").
SCALE_RANGES = {"zscore": (-4.0, 4.0), "quantile": (0.0, 1.0)}
SCALE_DEFAULTS = {"zscore": 1.0, "quantile": 0.9}


def check_scale(scale: str) -> str:
    """``scale`` itself, or a ProjectError naming the choices."""
    if scale not in SCALES:
        raise ProjectError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return scale


@dataclass(frozen=True)
class Threshold:
    """θ and the scale it is read on: a cell is on at t iff its (scaled) value is ``>= value``."""

    value: float
    scale: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        check_scale(self.scale)

    @property
    def scaled(self) -> bool:
        """True when on is decided per cell (one key per cell), False for one key for all cells."""
        return self.scale != "none"

    @classmethod
    def of(cls, threshold: "float | Threshold", scale: str = "none") -> "Threshold":
        """A ``Threshold`` from a float and a scale, or a ``Threshold`` as it is (a float's scale
        argument may not contradict it)."""
        if isinstance(threshold, Threshold):
            if scale != "none" and scale != threshold.scale:
                raise ProjectError(f"threshold {threshold.value} is on scale {threshold.scale!r}, "
                                   f"but scale={scale!r} was asked")
            return threshold
        return cls(float(threshold), check_scale(scale))
