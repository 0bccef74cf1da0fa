"""LSTMVis projects: discovery of ``lstm.yml`` folders, the YAML keys, dictionaries and meta tracks.

The format is ``../shared/DATA_FORMAT.md`` (the original LSTMVis format plus ``sequences``). Opening a
project reads YAML, dictionaries and HDF5 *shapes* only; arrays are sliced from disk when asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gpu_matcher import storage
from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, inside, load_config, read_dictionary
from gpu_matcher.metatrack import MetaTrack
from gpu_matcher.source import Source

__all__ = ["CONFIG_NAME", "MetaTrack", "Project", "discover_projects", "open_project", "read_dictionary"]

META_KINDS = ("discrete", "scalar", "wordvec")


class DataFiles:
    """The data files of one project, by ``files`` key, opened on first use (``gpu_matcher.storage``)."""

    def __init__(self, folder: Path, files: dict[str, str], config_path: Path):
        self.folder, self.files, self.config_path = folder, files, config_path
        self._open: dict[str, Any] = {}
        self._arrays: list = []                    # Zarr arrays handed out (they may hold chunk files open)

    def path_of(self, key: str, where: str) -> Path:
        if key not in self.files:
            raise ProjectError(f"{self.config_path}: {where} names file key {key!r}, "
                               f"which is not under 'files' (known: {sorted(self.files)})")
        return inside(self.folder, self.files[key], f"files.{key}", self.config_path)

    def dataset(self, key: str, path: str, where: str) -> h5py.Dataset:
        file_path = self.path_of(key, where)
        handle = self._open.get(key)
        if handle is None:
            handle = self._open[key] = storage.open_store(file_path, f"{where}, files key {key!r}")
        array = storage.dataset_in(handle, file_path, path, where)
        if isinstance(array, storage.ZarrDataset):
            self._arrays.append(array)
        return array

    def close(self) -> None:
        for handle in self._open.values():
            storage.close_store(handle)
        for array in self._arrays:
            array.close()
        self._open.clear()
        self._arrays.clear()


@dataclass
class Project:
    """One opened project. ``id`` is the folder path relative to the data folder it was found in."""

    id: str
    path: Path
    name: str
    description: str
    T: int
    sources: dict[str, Source]
    word_ids_dataset: h5py.Dataset | None
    dictionary: dict[int, str]
    meta: dict[str, MetaTrack]
    sequence_starts: np.ndarray | None
    config: dict = field(repr=False, default_factory=dict)
    genome: Any = None                 # gpu_matcher.genome.coords.Genome of a genome project
    _files: DataFiles | None = field(repr=False, default=None)
    _token_index: dict[str, int] | None = field(repr=False, default=None)

    def source(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            raise ProjectError(f"{self.path / CONFIG_NAME}: unknown source {name!r}; "
                               f"known: {', '.join(self.sources)}") from None

    @property
    def default_source(self) -> str:
        if not self.sources:
            raise ProjectError(f"{self.path / CONFIG_NAME}: the project has no states yet; add a source "
                               "(gpu_matcher.io.sources.add_source, lstmvis extract-genome)")
        return next(iter(self.sources))

    def word_ids(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.T, stop)
        if self.word_ids_dataset is None or stop <= start:
            return np.zeros(max(0, stop - start), dtype=np.int64)
        return np.asarray(self.word_ids_dataset[start:stop]).astype(np.int64)

    def tokens(self, start: int, stop: int) -> list[str]:
        """The words of steps ``[start, stop)`` (clipped to the timeline); unknown ids show as ``#id``."""
        ids = self.word_ids(start, stop)
        if self.word_ids_dataset is None:
            return [str(i) for i in range(max(0, start), max(0, start) + len(ids))]
        lookup = self.dictionary
        return [lookup.get(int(i), f"#{int(i)}") for i in ids]

    def token_id(self, token: str) -> int | None:
        if self._token_index is None:
            self._token_index = {tok: idx for idx, tok in self.dictionary.items()}
        return self._token_index.get(token)

    def sequence_bounds(self, use_sequences: bool = True) -> np.ndarray:
        """Sorted start positions of every sequence, with ``T`` appended (``[0, T]`` when none)."""
        starts = self.sequence_starts if (use_sequences and self.sequence_starts is not None) else None
        if starts is None or len(starts) == 0:
            return np.array([0, self.T], dtype=np.int64)
        bounds = np.asarray(starts, dtype=np.int64)
        if bounds[0] != 0:
            bounds = np.concatenate([[0], bounds])
        return np.concatenate([bounds, [self.T]])

    def sequence_of(self, position: int, use_sequences: bool = True) -> tuple[int, int]:
        """``[lo, hi)`` of the sequence holding ``position``."""
        bounds = self.sequence_bounds(use_sequences)
        i = int(np.searchsorted(bounds, position, side="right")) - 1
        i = min(max(i, 0), len(bounds) - 2)
        return int(bounds[i]), int(bounds[i + 1])

    def add_meta(self, name: str, values: Any, kind: str = "discrete", *,
                 labels: dict[int, str] | list[str] | None = None, overwrite: bool = False) -> MetaTrack:
        """Add track ``name`` (one value per step; ``discrete``: ids or strings, ``scalar``: numbers) in a
        new HDF5 file of the project folder, update lstm.yml atomically, and open it."""
        from gpu_matcher.io.tracks import add_meta_file

        entry = add_meta_file(self.path, name, values, T=self.T, kind=kind, labels=labels,
                              existing=list(self.meta), overwrite=overwrite)
        config_path = self.path / CONFIG_NAME
        self.config = load_config(config_path)
        assert self._files is not None
        stale = self._files._open.pop(entry["file"], None)         # a replaced track's file was renamed over
        if stale is not None:
            storage.close_store(stale)
        self._files.files.update({str(k): str(v) for k, v in self.config["files"].items()})
        where = f"meta.{name}"
        track_labels = read_dictionary(self._files.path_of(entry["dict"], where)) if "dict" in entry else None
        self.meta[name] = MetaTrack(name=name, kind=kind, labels=track_labels,
                                    dataset=self._files.dataset(entry["file"], entry["path"], where),
                                    value_range=_parse_range(entry["vis"].get("range"), config_path, where))
        return self.meta[name]

    def summary(self) -> dict:
        return {
            "id": self.id, "name": self.name, "description": self.description, "T": self.T,
            "sources": {n: {"shape": list(s.shape), "dtype": str(s.dtype), "transform": s.transform}
                        for n, s in self.sources.items()},
            "meta": {n: m.kind for n, m in self.meta.items()},
            "sequences": 1 if self.sequence_starts is None else int(len(self.sequence_bounds()) - 1),
        }

    def close(self) -> None:
        for track in self.meta.values():
            closer = getattr(track, "close", None)
            if closer is not None:
                closer()
        if self._files is not None:
            self._files.close()


def _section(config: dict, key: str, config_path: Path, required: bool = True) -> dict | None:
    value = config.get(key)
    if value is None:
        if required:
            raise ProjectError(f"{config_path}: key {key!r} missing")
        return None
    if not isinstance(value, dict):
        raise ProjectError(f"{config_path}: key {key!r} must be a mapping, got {type(value).__name__}")
    return value


def _need(section: dict, key: str, where: str, config_path: Path) -> Any:
    if key not in section or section[key] is None:
        raise ProjectError(f"{config_path}: key {where}.{key} missing")
    return section[key]


def open_project(path: str | os.PathLike, project_id: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Project:
    """Open the project in folder ``path`` (which holds ``lstm.yml``). Reads shapes only."""
    folder = Path(path)
    config_path = folder / CONFIG_NAME
    if folder.is_file() and folder.name == CONFIG_NAME:
        folder, config_path = folder.parent, folder
    if not config_path.is_file():
        raise ProjectError(f"{config_path}: file missing (a project folder holds {CONFIG_NAME})")
    config = load_config(config_path)
    files = _section(config, "files", config_path)
    files = {str(k): str(v) for k, v in files.items()}
    h5 = DataFiles(folder, files, config_path)
    try:
        return _build(folder, config_path, config, files, h5, project_id, cache_dir)
    except Exception:
        h5.close()
        raise


def _build(folder, config_path, config, files, h5, project_id, cache_dir) -> Project:
    # --- states (sources); a genome project may have none yet ------------------------------------
    is_genome = config.get("genome") is not None
    states = _section(config, "states", config_path, required=not is_genome) or {}
    types = states.get("types")
    if not (is_genome and not states) and (not isinstance(types, list) or not types):
        raise ProjectError(f"{config_path}: key states.types must be a non-empty list")
    types = types or []
    default_file = states.get("file")
    sources: dict[str, Source] = {}
    T: int | None = None
    first_name = None
    for i, entry in enumerate(types):
        where = f"states.types[{i}]"
        if not isinstance(entry, dict):
            raise ProjectError(f"{config_path}: {where} must be a mapping")
        file_key = entry.get("file", default_file)
        if file_key is None:
            raise ProjectError(f"{config_path}: {where} has no 'file' and states.file is not set")
        ds_path = str(_need(entry, "path", where, config_path))
        transform = str(entry.get("transform", states.get("transform", "tanh"))).lower()
        if transform not in ("tanh", "none"):
            raise ProjectError(f"{config_path}: {where}.transform is {transform!r}; "
                               "expected 'tanh' or 'none'")
        dataset = h5.dataset(str(file_key), ds_path, where)
        if dataset.ndim != 2:
            raise ProjectError(f"{h5.path_of(str(file_key), where)}: dataset {ds_path!r} has shape "
                               f"{dataset.shape}; states must be 2-D (T, D)")
        if dataset.dtype.kind != "f":
            raise ProjectError(f"{h5.path_of(str(file_key), where)}: dataset {ds_path!r} has dtype "
                               f"{dataset.dtype}; states must be float16/32/64")
        name = f"{file_key}::{ds_path}"
        if T is None:
            T, first_name = int(dataset.shape[0]), name
        elif dataset.shape[0] != T:
            raise ProjectError(f"{h5.path_of(str(file_key), where)}: dataset {ds_path!r} has "
                               f"{dataset.shape[0]} steps (shape {dataset.shape}) but {first_name} "
                               f"has {T}")
        sources[name] = Source(
            name=name, dataset=dataset, file_path=h5.path_of(str(file_key), where),
            transform=transform, unsigned=bool(entry.get("unsigned", states.get("unsigned", False))),
            layer=entry.get("layer"), state_type=str(entry.get("type", "state")),
            cache_dir=cache_dir)

    def check_length(dataset: h5py.Dataset, file_key: str, where: str, ndim: tuple[int, ...]) -> None:
        if dataset.ndim not in ndim:
            raise ProjectError(f"{h5.path_of(file_key, where)}: dataset {dataset.name.lstrip('/')!r} "
                               f"has shape {dataset.shape}; expected {' or '.join(f'{n}-D' for n in ndim)} ({where})")
        if dataset.shape[0] != T:
            theirs = f"shape {sources[first_name].shape}" if sources else "the word timeline's length"
            raise ProjectError(f"{h5.path_of(file_key, where)}: dataset {dataset.name.lstrip('/')!r} "
                               f"has shape {dataset.shape} but the states have T={T} ({theirs}) ({where})")

    # --- the word timeline ---------------------------------------------------------------------
    dictionary: dict[int, str] = {}
    words = None
    ws = _section(config, "word_sequence", config_path, required=False)
    if ws is not None:
        wfile = str(_need(ws, "file", "word_sequence", config_path))
        words = h5.dataset(wfile, str(_need(ws, "path", "word_sequence", config_path)), "word_sequence")
        if T is None:
            T = int(words.shape[0])           # a genome project without states: the bases set T
        check_length(words, wfile, "word_sequence", (1,))
        if ws.get("dict_file") is not None:
            dictionary = read_dictionary(h5.path_of(str(ws["dict_file"]), "word_sequence.dict_file"))

    if T is None:
        raise ProjectError(f"{config_path}: a genome project without states needs a word_sequence (the bases)")
    genome = _read_genome(config, config_path, h5, T) if is_genome else None

    # --- meta tracks ---------------------------------------------------------------------------
    meta: dict[str, MetaTrack] = {}
    meta_cfg = _section(config, "meta", config_path, required=False) or {}
    for mname, m in meta_cfg.items():
        where = f"meta.{mname}"
        if not isinstance(m, dict):
            raise ProjectError(f"{config_path}: {where} must be a mapping")
        vis = m.get("vis") or {}
        if str(m.get("type", "")).lower() in ("intervals", "bigwig"):
            from gpu_matcher.genome.readers import load_track

            meta[str(mname)] = load_track(str(mname), m, str(m["type"]).lower(), h5, T, genome, config_path,
                                          _parse_range(vis.get("range"), config_path, where))
            continue
        kind = str(vis.get("type", m.get("type", "scalar"))).lower()
        if kind not in META_KINDS:
            raise ProjectError(f"{config_path}: {where}.vis.type is {kind!r}; expected one of {META_KINDS}")
        mfile = str(_need(m, "file", where, config_path))
        dataset = h5.dataset(mfile, str(_need(m, "path", where, config_path)), where)
        index = None
        index_name = m.get("index", "self")
        if index_name not in (None, "self"):
            idx_cfg = config.get(index_name)
            if not isinstance(idx_cfg, dict):
                raise ProjectError(f"{config_path}: {where}.index names section {index_name!r}, "
                                   "which is missing or not a {file, path} mapping")
            ifile = str(_need(idx_cfg, "file", str(index_name), config_path))
            index = h5.dataset(ifile, str(_need(idx_cfg, "path", str(index_name), config_path)),
                               f"{where}.index")
            check_length(index, ifile, f"{where}.index", (1,))
        else:
            check_length(dataset, mfile, where, (2,) if kind == "wordvec" else (1,))
        labels = None
        if m.get("dict") is not None:
            dkey = str(m["dict"])
            labels = dictionary if (ws is not None and dkey == str(ws.get("dict_file"))) else \
                read_dictionary(h5.path_of(dkey, f"{where}.dict"))
        elif kind == "discrete" and vis.get("range") == "dict":
            raise ProjectError(f"{config_path}: {where} has vis.range 'dict' but no 'dict' key")
        weights = None
        if m.get("weights_path") is not None:
            weights = h5.dataset(mfile, str(m["weights_path"]), f"{where}.weights_path")
            if weights.shape != dataset.shape:
                raise ProjectError(f"{h5.path_of(mfile, where)}: {where}.weights_path {m['weights_path']!r} "
                                   f"has shape {weights.shape}, but {m['path']!r} has {dataset.shape}")
        meta[str(mname)] = MetaTrack(name=str(mname), kind=kind, dataset=dataset, labels=labels,
                                     weights=weights, index=index,
                                     value_range=_parse_range(vis.get("range"), config_path, where))

    # --- sequences (new) -----------------------------------------------------------------------
    sequence_starts = None
    seq = _section(config, "sequences", config_path, required=False)
    if seq is not None:
        sfile = str(_need(seq, "file", "sequences", config_path))
        sds = h5.dataset(sfile, str(_need(seq, "path", "sequences", config_path)), "sequences")
        starts = np.asarray(sds[()]).astype(np.int64).ravel()
        if starts.size and (np.any(np.diff(starts) <= 0) or starts[0] < 0 or starts[-1] >= T):
            raise ProjectError(f"{h5.path_of(sfile, 'sequences')}: dataset {seq['path']!r} must hold "
                               f"strictly increasing starts in [0, {T}) (shape {starts.shape})")
        sequence_starts = starts
    if genome is not None and (sequence_starts is None or not np.array_equal(sequence_starts, genome.starts)):
        raise ProjectError(f"{config_path}: the contigs of genome.chrom_sizes start at "
                           f"{genome.starts[:5].tolist()}..., but 'sequences' starts at "
                           f"{None if sequence_starts is None else sequence_starts[:5].tolist()}; "
                           "each contig must be one sequence, in the same order")

    name = str(config.get("name") or folder.resolve().name)
    return Project(id=project_id if project_id is not None else folder.resolve().name,
                   path=folder, name=name, description=str(config.get("description") or name),
                   T=T, sources=sources, word_ids_dataset=words, dictionary=dictionary, meta=meta,
                   sequence_starts=sequence_starts, config=config, _files=h5, genome=genome)


def _read_genome(config: dict, config_path: Path, h5: DataFiles, T: int):
    """The ``genome`` section's contigs (``chrom_sizes``: a files key), checked against ``T``."""
    from gpu_matcher.genome.coords import Genome

    section = _section(config, "genome", config_path)
    key = str(_need(section, "chrom_sizes", "genome", config_path))
    path = h5.path_of(key, "genome.chrom_sizes")
    genome = Genome.read(path)
    if genome.T != T:
        raise ProjectError(f"{path}: the contig lengths sum to {genome.T:,}, but the timeline has T={T:,} steps")
    return genome


def _parse_range(value: Any, config_path: Path, where: str) -> tuple[float, float] | None:
    if value is None or value == "dict":
        return None
    try:
        if isinstance(value, str) and "..." in value:
            lo, hi = value.split("...")
            return float(lo), float(hi)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return float(value[0]), float(value[1])
    except ValueError:
        pass
    raise ProjectError(f"{config_path}: {where}.vis.range is {value!r}; expected 'dict', 'a...b' or [min, max]")


def discover_projects(data_dir: str | os.PathLike) -> dict[str, Path]:
    """Every folder under ``data_dir`` holding ``lstm.yml``, keyed by its path relative to ``data_dir``.

    When ``data_dir`` is itself a project its id is its folder name.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise ProjectError(f"{root}: data folder missing or not a folder")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if CONFIG_NAME in filenames:
            rel = Path(dirpath).relative_to(root).as_posix()
            found[root.resolve().name if rel == "." else rel] = Path(dirpath)
    return found
