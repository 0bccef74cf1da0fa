"""Targets of the statistics' corpus scans: which steps count as "inside" (a label, a brushed range), told
as a description a shard worker can read for its own steps, never as a whole-timeline array.

A ``Target`` answers ``mask(start, stop)``: a ``(stop - start,)`` bool array. ``for_shard(t0, t1)`` gives
what travels to the worker that scans shard ``[t0, t1)``: a ``TrackTarget`` sends the track's file and
dataset names (``TrackLocator``) and the label value, and the worker reads the track's rows of its shard
as stored (int32 / uint8 ...), chunk by chunk; a track that no worker can open (held in memory) sends
the shard's mask, read on the client one shard at a time. ``as_mask`` turns any target (or a plain bool
array, as the backends also accept) into the whole ``(T,)`` mask for a one-process backend.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpu_matcher.errors import ProjectError

__all__ = ["Target", "MaskTarget", "RangeTarget", "TrackTarget", "TrackLocator", "ArrayRef", "array_ref",
           "as_mask", "shard_target", "TARGET_CHUNK"]

#: Steps of a track read at once when a target's mask is built (bounds the temporaries: int64 per step).
TARGET_CHUNK = 1 << 22


class Target(ABC):
    """Which steps of the timeline are inside."""

    @abstractmethod
    def mask(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start,)`` bool: the steps of ``[start, stop)`` that are inside."""

    def for_shard(self, t0: int, t1: int) -> "Target":
        """A small picklable target that answers ``mask`` for steps inside ``[t0, t1)``."""
        return MaskTarget(self.mask(t0, t1), t0)


@dataclass(frozen=True, eq=False)
class MaskTarget(Target):
    """A mask given as an array of steps ``[offset, offset + len(array))``."""

    array: np.ndarray
    offset: int = 0

    def mask(self, start: int, stop: int) -> np.ndarray:
        a, b = int(start) - self.offset, int(stop) - self.offset
        if a < 0 or b > self.array.size:
            raise ValueError(f"mask [{start}, {stop}) outside the target's steps "
                             f"[{self.offset}, {self.offset + self.array.size})")
        return np.asarray(self.array[a:b], dtype=bool)

    def for_shard(self, t0: int, t1: int) -> Target:
        return MaskTarget(self.mask(t0, t1).copy(), int(t0))


@dataclass(frozen=True)
class RangeTarget(Target):
    """The steps ``[start, end]`` (inclusive: a brushed range)."""

    start: int
    end: int

    def mask(self, start: int, stop: int) -> np.ndarray:
        steps = np.arange(int(start), int(stop), dtype=np.int64)
        return (steps >= self.start) & (steps <= self.end)

    def for_shard(self, t0: int, t1: int) -> Target:
        return self


# --- tracks a worker can open -------------------------------------------------------------------------
@dataclass(frozen=True)
class ArrayRef:
    """Where a process opens a stored array: an HDF5 file or a Zarr store, and the array inside it."""

    kind: str            # "hdf5" or "zarr"
    file: str            # absolute path
    dataset: str         # the dataset / array path inside it

    def open(self, where: str):
        from gpu_matcher import storage

        return storage.open_dataset(self.file, self.dataset, where)


def array_ref(ds) -> ArrayRef | None:
    """The ``ArrayRef`` of an opened dataset (h5py or ``storage.ZarrDataset``); None when it lives in
    memory only (no other process can open it)."""
    from gpu_matcher.storage import ZarrDataset

    if isinstance(ds, ZarrDataset):
        return ArrayRef("zarr", str(ds.store.resolve()), ds.path)
    handle = getattr(ds, "file", None)
    filename = getattr(handle, "filename", None)
    if not filename or getattr(handle, "driver", None) == "core" or not Path(filename).is_file():
        return None
    return ArrayRef("hdf5", str(Path(filename).resolve()), ds.name)


@dataclass(frozen=True)
class TrackLocator:
    """A discrete track as files: a dense track's values (and index), or an interval track's arrays."""

    kind: str                          # "dense" or "intervals"
    arrays: tuple[ArrayRef, ...]       # dense: (values,) or (values, index); intervals: start, end, max_end, score
    T: int

    @staticmethod
    def of(track, T: int) -> "TrackLocator | None":
        """The locator of a project's ``MetaTrack``; None when one of its arrays is not in a file."""
        from gpu_matcher.genome.readers import IntervalTrack

        if isinstance(track, IntervalTrack):
            kind, datasets = "intervals", (track.dataset, track.ends, track.max_ends, track.scores)
        else:
            kind = "dense"
            datasets = (track.dataset,) if track.index is None else (track.dataset, track.index)
        refs = tuple(array_ref(d) for d in datasets)
        if any(r is None for r in refs):
            return None
        return TrackLocator(kind, refs, int(T))       # type: ignore[arg-type]

    def open(self):
        """The track, opened in this process (a ``MetaTrack`` or an ``IntervalTrack``)."""
        where = "label track, on this worker"
        arrays = [r.open(where) for r in self.arrays]
        if self.kind == "intervals":
            from gpu_matcher.genome.readers import IntervalTrack

            return IntervalTrack(name="label", kind="discrete", dataset=arrays[0], ends=arrays[1],
                                 max_ends=arrays[2], scores=arrays[3], T=self.T)
        if self.kind != "dense":
            raise ProjectError(f"unknown track kind {self.kind!r}")
        from gpu_matcher.metatrack import MetaTrack

        return MetaTrack(name="label", kind="discrete", dataset=arrays[0],
                         index=arrays[1] if len(arrays) > 1 else None)


_OPENED: dict[TrackLocator, object] = {}
_OPENED_LOCK = threading.Lock()


def _opened(locator: TrackLocator):
    """A process's opened track for a locator (opened once)."""
    with _OPENED_LOCK:
        track = _OPENED.get(locator)
        if track is None:
            track = _OPENED[locator] = locator.open()
        return track


@dataclass(frozen=True, eq=False)
class TrackTarget(Target):
    """The steps where a discrete track holds ``value``. On the client it reads the project's own track
    object; on a worker (``for_shard``) it opens the track from its ``TrackLocator``."""

    value: int
    locator: TrackLocator | None = None
    track: object = field(default=None, repr=False, compare=False)     # the client's MetaTrack

    def mask(self, start: int, stop: int) -> np.ndarray:
        track = self.track if self.track is not None else _opened(self.locator)
        out = np.empty(max(0, int(stop) - int(start)), dtype=bool)
        for a in range(int(start), int(stop), TARGET_CHUNK):
            b = min(int(stop), a + TARGET_CHUNK)
            np.equal(np.asarray(track.values(a, b)), self.value, out=out[a - start:b - start])
        return out

    def for_shard(self, t0: int, t1: int) -> Target:
        if self.locator is None:
            return super().for_shard(t0, t1)
        return TrackTarget(self.value, self.locator)


def as_mask(target, T: int) -> np.ndarray:
    """The whole ``(T,)`` bool mask of a target (or of a bool array, returned as such)."""
    if isinstance(target, Target):
        return target.mask(0, T)
    return np.asarray(target, dtype=bool)


def shard_target(target, t0: int, t1: int) -> Target:
    """What travels for shard ``[t0, t1)``: ``for_shard`` of a target, or the slice of a bool array."""
    if isinstance(target, Target):
        return target.for_shard(t0, t1)
    return MaskTarget(np.asarray(target[t0:t1], dtype=bool).copy(), int(t0))
