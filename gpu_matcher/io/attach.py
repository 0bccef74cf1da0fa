"""Add states and dense per-step tracks to an existing project whose timeline is already written.

A genome converted by ``lstmvis convert-fasta`` has its bases (the timeline) but no states; a model's
states and per-base predictions come later, from ``extract-genome`` or the genomic demo, streamed block
by block in timeline order. :class:`StatesAppender` writes them into one new HDF5 file under a
temporary name, and on :meth:`StatesAppender.close` checks that exactly ``T`` steps came, renames the
file into place and names its sources (``states.types``) and tracks (``meta``) in ``lstm.yml``, in one
locked update (:func:`gpu_matcher.io.tracks.update_config`). Nothing the project held is modified.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, load_config
from gpu_matcher.io.sources import FORMATS, ArrayFile, remove_path, suffix_of
from gpu_matcher.io.tracks import update_config
from gpu_matcher.io.writer import NAME_PATTERN, STATE_DTYPES, AllOrNothing

CHUNK_BYTES = 1 << 20


def _chunk_rows(width: int, itemsize: int) -> int:
    return max(1, min(1 << 16, CHUNK_BYTES // max(1, width * itemsize)))


class StatesAppender(AllOrNothing):
    """Stream ``T`` steps of states (``(n, D)`` per source) and scalar tracks (``(n,)``) into
    ``folder/states.h5`` (``format="zarr"``: a Zarr v3 store ``states.zarr``, for --dask); use as a
    context manager (``close`` on success, the partial file removed on an error)::

        with StatesAppender(project, T=T, dtype="float16") as out:
            out.add_source("cell_layer1", type="state", layer=1, transform="tanh")
            out.add_track("pred_ctcf", value_range=(0, 1))
            for block in blocks:
                out.append({"cell_layer1": block.cells}, {"pred_ctcf": block.pred})

    ``overwrite`` replaces sources the project already lists (and tracks of the same names).
    """

    def __init__(self, folder: str | os.PathLike, *, T: int, file_key: str = "states", format: str = "h5",
                 dtype: str = "float32", overwrite: bool = False):
        if format not in FORMATS:
            raise ProjectError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
        file_name = file_key + suffix_of(format)
        self.folder, self.T, self.file_name, self.file_key = Path(folder), int(T), file_name, file_key
        self.format = format
        self.dtype = np.dtype(dtype).name
        if self.dtype not in STATE_DTYPES:
            raise ProjectError(f"dtype {dtype!r}: states are stored as one of {STATE_DTYPES}")
        config = load_config(self.folder / CONFIG_NAME)
        files = config.get("files") or {}
        if not overwrite and ((config.get("states") or {}).get("types") or files.get(file_key) not in
                              (None, file_name) or (self.folder / file_name).exists()):
            raise ProjectError(f"{self.folder / CONFIG_NAME}: the project already has states "
                               f"(or a file {file_name}); pass overwrite (--overwrite) to replace them")
        self.sources: dict[str, dict[str, Any]] = {}
        self.tracks: dict[str, dict[str, Any]] = {}
        self._tmp = self.folder / (file_name + ".tmp")
        self._handle: ArrayFile | None = None
        self._arrays: dict[str, Any] = {}
        self._steps = 0
        self._overwrite = overwrite

    def add_source(self, path: str, *, type: str = "state", layer: int | None = None,
                   transform: str = "tanh") -> None:
        self._declare(path, "source")
        if transform not in ("tanh", "none"):
            raise ProjectError(f"source {path!r}: transform {transform!r}; expected 'tanh' or 'none'")
        self.sources[path] = {"type": type, "path": path, "transform": transform} | \
            ({"layer": int(layer)} if layer is not None else {})

    def add_track(self, name: str, *, value_range: tuple[float, float] | None = None) -> None:
        """A dense scalar track (one float per step), e.g. a model's per-base prediction."""
        self._declare(name, "meta track")
        self.tracks[name] = {"file": self.file_key, "path": name,
                             "vis": {"type": "scalar"} | ({"range": [float(v) for v in value_range]}
                                                          if value_range is not None else {})}

    def _declare(self, name: str, what: str) -> None:
        if not NAME_PATTERN.match(name) or name in self.sources or name in self.tracks:
            raise ProjectError(f"{what} name {name!r}: use letters, digits, '_', '.' and '-' only, once")
        if self._handle is not None:
            raise ProjectError(f"{what} {name!r}: declare every source and track before the first block")

    @property
    def steps(self) -> int:
        return self._steps

    def append(self, states: Mapping[str, np.ndarray], tracks: Mapping[str, np.ndarray] | None = None) -> None:
        tracks = dict(tracks or {})
        if set(states) != set(self.sources) or set(tracks) != set(self.tracks):
            raise ProjectError(f"append: give exactly the sources {sorted(self.sources)} and tracks "
                               f"{sorted(self.tracks)}; got {sorted(states)} and {sorted(tracks)}")
        rows = {len(np.asarray(v)) for v in list(states.values()) + list(tracks.values())}
        if len(rows) != 1:
            raise ProjectError(f"append: the block's arrays have different numbers of rows {sorted(rows)}")
        n = rows.pop()
        if self._steps + n > self.T:
            raise ProjectError(f"append: {self._steps + n} steps written, more than the timeline's T={self.T}")
        if self._handle is None:
            self._open(states)
        for name, value in list(states.items()) + list(tracks.items()):
            ds = self._arrays[name]
            arr = np.asarray(value, dtype=ds.dtype)
            if arr.shape[1:] != ds.shape[1:]:
                raise ProjectError(f"append: {name!r} has rows of shape {arr.shape[1:]}; expected {ds.shape[1:]}")
            ds[self._steps:self._steps + n] = arr
        self._steps += n

    def _open(self, states: Mapping[str, np.ndarray]) -> None:
        remove_path(self._tmp)
        try:
            self._handle = ArrayFile(self._tmp, self.format)
        except OSError as exc:
            raise ProjectError(f"{self._tmp}: cannot open for writing ({exc})") from None
        for name, value in states.items():
            D = int(np.asarray(value).shape[1])
            self._arrays[name] = self._handle.create(name, (self.T, D), self.dtype,
                                                     _chunk_rows(D, np.dtype(self.dtype).itemsize))
        for name in self.tracks:
            self._arrays[name] = self._handle.create(name, (self.T,), "float32", _chunk_rows(1, 4))

    def close(self) -> Path:
        """Check the step count, move the file into place and name it in lstm.yml."""
        if self._handle is None or self._steps != self.T:
            self.abort()
            raise ProjectError(f"{self.folder}: {self._steps} steps of states written for a timeline of "
                               f"T={self.T}; nothing was added")
        self._close_handle()
        target = self.folder / self.file_name

        def change(config: dict) -> None:
            files = config.setdefault("files", {})
            files[self.file_key] = self.file_name
            config["states"] = {"file": self.file_key, "types": list(self.sources.values())}
            meta = config.get("meta") or {}
            clash = [n for n in self.tracks if n in meta and meta[n].get("file") != self.file_key]
            if clash and not self._overwrite:
                raise ProjectError(f"{self.folder / CONFIG_NAME}: meta track {clash[0]!r} exists; pass "
                                   "overwrite (--overwrite)")
            meta = {n: m for n, m in meta.items() if m.get("file") != self.file_key}
            config["meta"] = meta | self.tracks
            remove_path(target)
            os.replace(self._tmp, target)         # inside the lock, just before lstm.yml names it

        try:
            update_config(self.folder, change)
        finally:
            remove_path(self._tmp)
        return target

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._arrays.clear()

    def abort(self) -> None:
        self._close_handle()
        remove_path(self._tmp)
