"""Write a project (``../shared/DATA_FORMAT.md``) from arrays, chunk by chunk.

:class:`ProjectWriter` streams: each :meth:`ProjectWriter.append` adds the next steps of the timeline
(states of every source, the tokens, every meta track, where sequences start) to resizable, chunked
HDF5 datasets, so a corpus larger than memory is written a block at a time. After each block the files
are flushed and a small journal records how far the run got; ``resume=True`` reopens a run that stopped
(an exception, Ctrl-C) and cuts every dataset back to the last complete block. ``lstm.yml`` is written
last, by :meth:`ProjectWriter.close`, so a half-written project is never served.

Files written (keys under ``files`` in lstm.yml): ``states`` -> states.h5 (one dataset per source),
``train`` -> train.h5 (``words``, ``seq_starts`` and the meta tracks), ``words`` -> words.dict, and one
``<track>.dict`` per meta track that has labels.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, load_config, read_dictionary, write_config, write_dictionary
from gpu_matcher.io.vocab import Vocabulary, as_id_map

JOURNAL_NAME = ".lstmvis-writer.json"
STATES_FILE, TRAIN_FILE, WORDS_DICT = "states.h5", "train.h5", "words.dict"
JOURNAL_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")
STATE_DTYPES = ("float16", "float32", "float64")
META_KINDS = ("discrete", "scalar", "wordvec")
RESERVED_NAMES = {"words", "seq_starts"}


@dataclass
class SourceSpec:
    """One source: dataset ``path`` in states.h5, shown as ``states::<path>``."""

    path: str
    type: str = "state"
    layer: int | None = None
    transform: str = "tanh"
    unsigned: bool = False
    dim: int | None = None


@dataclass
class MetaSpec:
    """One meta track. ``labels`` (id -> label) become ``<name>.dict``; wordvec tracks default to the
    word dictionary."""

    name: str
    kind: str
    labels: dict[int, str] | None = None
    width: int | None = None                     # K of a wordvec track
    weights: bool = False                        # a wordvec track with scores
    low: float | None = None                     # running range, for vis.range of unlabelled tracks
    high: float | None = None


@dataclass
class _Journal:
    version: int = JOURNAL_VERSION
    steps: int = 0
    sequences: int = 0
    cursor: Any = None
    complete: bool = False
    dtype: str = "float32"
    tokens: bool | None = None
    sources: list[dict] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)
    fingerprint: Any = None


def _check_name(name: str, what: str) -> str:
    name = str(name)
    if not NAME_PATTERN.match(name):
        raise ProjectError(f"{what} name {name!r}: use letters, digits, '_', '.' and '-' only")
    return name


class AllOrNothing:
    """A writer used as a context manager: ``close()`` (commit) when the block ends normally, ``abort()``
    (nothing added) when it raises."""

    def close(self):
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ProjectWriter(AllOrNothing):
    """Stream a project into ``folder``. Use as a context manager::

        with ProjectWriter(out, name="my model", dictionary=vocab, dtype="float16") as writer:
            writer.add_source("cell_layer1", type="state", layer=1)
            writer.add_meta("pos", kind="discrete", labels=pos_labels)
            for block in blocks:
                writer.append(states={"cell_layer1": block.cells}, tokens=block.ids,
                              meta={"pos": block.pos}, starts=block.sequence_offsets)

    ``tokens`` are ids into ``dictionary`` (``{id: token}`` or a token list), or strings, which are
    numbered on the fly (``<s>``=1, ``<unk>``=2, ``</s>``=3, then in order of appearance) unless a
    dictionary is given. ``starts`` are the offsets *within the block* where a sequence begins.
    Sources and tracks not declared before the first block are declared from it (``type: state``,
    ``transform: tanh``; int tracks discrete, float tracks scalar, ``(ids, weights)`` pairs wordvec).
    On leaving the ``with`` block normally lstm.yml is written; after an exception the files are
    flushed and closed, and ``resume=True`` continues from the last complete block.
    """

    def __init__(self, folder: str | os.PathLike, *, name: str | None = None,
                 description: str | None = None,
                 dictionary: Mapping[int, str] | Sequence[str] | Vocabulary | None = None,
                 dtype: str = "float32", compression: str | None = None, chunk_bytes: int = 1 << 20,
                 overwrite: bool = False, resume: bool = False, fingerprint: Any = None):
        self.folder = Path(folder)
        self.name, self.description = name, description
        try:
            self.dtype = np.dtype(dtype).name
        except TypeError:
            self.dtype = ""
        if self.dtype not in STATE_DTYPES:
            raise ProjectError(f"dtype {dtype!r}: states are stored as one of {STATE_DTYPES}")
        if compression not in (None, "gzip", "lzf"):
            raise ProjectError(f"compression {compression!r}: expected None, 'gzip' or 'lzf'")
        self.compression, self.chunk_bytes = compression, max(4096, int(chunk_bytes))
        self.sources: dict[str, SourceSpec] = {}
        self.meta: dict[str, MetaSpec] = {}
        self._tokens: bool | None = None
        self._vocab = self._make_vocab(dictionary)
        self._files: dict[str, h5py.File] = {}
        self._steps = 0
        self._sequences = 0
        self._cursor: Any = None
        self._closed = False
        self._fingerprint = fingerprint
        self._resumed = False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"{self.folder}: cannot create the project folder ({exc.strerror})") from None
        journal_path = self.folder / JOURNAL_NAME
        existing = [p for p in (CONFIG_NAME, JOURNAL_NAME, STATES_FILE, TRAIN_FILE)
                    if (self.folder / p).exists()]
        if resume and journal_path.is_file():
            self._load_journal(journal_path)
        elif resume and existing:
            raise ProjectError(f"{self.folder}: holds {', '.join(existing)} but no {JOURNAL_NAME}, so "
                               "the run cannot be resumed; start over with overwrite")
        elif existing and not overwrite:
            raise ProjectError(f"{self.folder}: already holds a project ({', '.join(existing)}); "
                               "pass overwrite (--overwrite) to replace it or resume (--resume) to "
                               "continue an interrupted run")
        elif existing:
            self._remove_previous()

    # --- declarations -----------------------------------------------------------------------------
    def add_source(self, path: str, *, type: str = "state", layer: int | None = None,
                   transform: str = "tanh", unsigned: bool = False) -> "ProjectWriter":
        """Declare a source (before the first block). ``transform``: ``tanh`` or ``none``."""
        path = _check_name(path, "source")
        if transform not in ("tanh", "none"):
            raise ProjectError(f"source {path!r}: transform {transform!r}; expected 'tanh' or 'none'")
        if path in RESERVED_NAMES:
            raise ProjectError(f"source {path!r}: the name is reserved")
        spec = SourceSpec(path=path, type=str(type), layer=None if layer is None else int(layer),
                          transform=transform, unsigned=bool(unsigned))
        old = self.sources.get(path)
        if old is not None:
            if self._resumed and asdict(old) | {"dim": None} == asdict(spec):
                return self                      # the same declaration as the run being resumed
            raise ProjectError(f"source {path!r} is declared twice"
                               + (" (differently from the run being resumed)" if self._resumed else ""))
        self._before_first_block(f"source {path!r}")
        self.sources[path] = spec
        return self

    def add_meta(self, name: str, *, kind: str,
                 labels: Mapping[int, str] | Sequence[str] | None = None) -> "ProjectWriter":
        """Declare a meta track: ``discrete`` (ints, optionally with ``labels`` id -> label),
        ``scalar`` (numbers) or ``wordvec`` (top-K ids with optional scores; labels default to the
        word dictionary)."""
        name = _check_name(name, "meta track")
        if kind not in META_KINDS:
            raise ProjectError(f"meta track {name!r}: kind {kind!r}; expected one of {META_KINDS}")
        if name in RESERVED_NAMES or name.endswith("_weights"):
            raise ProjectError(f"meta track {name!r}: the name is reserved")
        spec = MetaSpec(name=name, kind=kind,
                        labels=None if labels is None else as_id_map(labels, f"meta track {name!r}"))
        old = self.meta.get(name)
        if old is not None:
            if self._resumed and old.kind == spec.kind and old.labels == spec.labels:
                return self
            raise ProjectError(f"meta track {name!r} is declared twice"
                               + (" (differently from the run being resumed)" if self._resumed else ""))
        self._before_first_block(f"meta track {name!r}")
        self.meta[name] = spec
        return self

    def _before_first_block(self, what: str) -> None:
        if self._files or self._steps:
            raise ProjectError(f"{what}: declare every source and track before the first block")

    # --- progress ---------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        """Steps written so far."""
        return self._steps

    @property
    def cursor(self) -> Any:
        """The ``cursor`` of the last complete block (``None`` for a new run): where to resume."""
        return self._cursor

    @property
    def resumed(self) -> bool:
        return self._resumed

    # --- writing ----------------------------------------------------------------------------------
    def append(self, states: Mapping[str, Any], tokens: Any = None, meta: Mapping[str, Any] | None = None,
               starts: Sequence[int] | np.ndarray | None = None, cursor: Any = None) -> None:
        """Add the next ``n`` steps. Every block gives every source and track, all with ``n`` rows.

        ``cursor`` (JSON-able) is stored with the block, and returned by :attr:`cursor` on resume.
        """
        if self._closed:
            raise ProjectError(f"{self.folder}: the writer is closed")
        meta = dict(meta or {})
        if not states:
            raise ProjectError("append: give at least one source in states={name: (n, D) array}")
        arrays = {}
        n = None
        for sname, value in states.items():
            arr = np.asarray(value)
            if arr.ndim != 2:
                raise ProjectError(f"append: states[{sname!r}] has shape {arr.shape}; expected (n, D)")
            if arr.dtype.kind not in "fiub":
                raise ProjectError(f"append: states[{sname!r}] has dtype {arr.dtype}; expected numbers")
            if n is None:
                n, first = arr.shape[0], sname
            elif arr.shape[0] != n:
                raise ProjectError(f"append: states[{sname!r}] has {arr.shape[0]} rows (shape {arr.shape}) "
                                   f"but states[{first!r}] has {n}")
            arrays[str(sname)] = arr
        assert n is not None
        first_block = not self._files
        if first_block:
            self._declare_from(arrays, tokens, meta)
        self._check_keys(arrays, tokens, meta)
        block: dict[tuple[str, str], np.ndarray] = {}
        for sname, spec in self.sources.items():
            arr = arrays[sname]
            if spec.dim is None:
                spec.dim = int(arr.shape[1])
            elif arr.shape[1] != spec.dim:
                raise ProjectError(f"append: states[{sname!r}] has {arr.shape[1]} cells (shape {arr.shape}); "
                                   f"earlier blocks had {spec.dim}")
            block[(STATES_FILE, sname)] = self._cast_states(arr, sname)
        if self._tokens:
            ids = self._token_ids(tokens, n)
            if ids.size and (ids.min() < np.iinfo(np.int32).min or ids.max() > np.iinfo(np.int32).max):
                raise ProjectError(f"append: token ids span {ids.min()}..{ids.max()}, beyond 32-bit integers")
            block[(TRAIN_FILE, "words")] = ids.astype(np.int32)
        for mname, spec in self.meta.items():
            block.update(self._meta_block(spec, meta[mname], n))
        new_starts = self._starts(starts, n)
        if first_block:
            self._open_files(block)
        self._write(block, new_starts, n)
        self._steps += n
        self._sequences += len(new_starts)
        self._cursor = cursor
        self._commit(complete=False)

    def _declare_from(self, arrays, tokens, meta) -> None:
        if not self._resumed:
            for sname in arrays:
                if sname not in self.sources:
                    self.add_source(sname)
            for mname, value in meta.items():
                if mname not in self.meta:
                    self.add_meta(mname, kind=_infer_kind(mname, value))
        if self._tokens is None:
            self._tokens = tokens is not None

    def _check_keys(self, arrays, tokens, meta) -> None:
        if set(arrays) != set(self.sources):
            raise ProjectError(f"append: states has {sorted(arrays)}; every block needs exactly the "
                               f"declared sources {sorted(self.sources)}")
        if set(meta) != set(self.meta):
            raise ProjectError(f"append: meta has {sorted(meta)}; every block needs exactly the "
                               f"declared tracks {sorted(self.meta)}")
        if (tokens is not None) != bool(self._tokens):
            raise ProjectError("append: give tokens in every block or in none "
                               f"(this block {'has' if tokens is not None else 'lacks'} them)")

    def _cast_states(self, arr: np.ndarray, sname: str) -> np.ndarray:
        with np.errstate(over="ignore"):
            out = arr.astype(self.dtype, copy=False)
        if self.dtype == "float16" and arr.dtype != np.float16:
            overflow = np.isinf(out) & np.isfinite(arr)
            if overflow.any():
                worst = float(np.abs(arr[np.isfinite(arr)]).max())
                raise ProjectError(f"append: states[{sname!r}] holds |x| = {worst:.4g}, beyond float16's "
                                   "65504; store this model as float32")
        return out

    def _token_ids(self, tokens: Any, n: int) -> np.ndarray:
        if isinstance(tokens, str):
            raise ProjectError("append: tokens is one string; give a list of tokens or an id array")
        seq = tokens if isinstance(tokens, np.ndarray) else list(tokens)
        if len(seq) != n:
            raise ProjectError(f"append: tokens has {len(seq)} entries but the states have {n} rows")
        arr = np.asarray(seq) if n else np.zeros(0, dtype=np.int64)
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
            if self._vocab is not None and n:
                known = np.fromiter(self._vocab.id_to_token, dtype=np.int64)
                bad = arr[~np.isin(arr, known)]
                if bad.size:
                    raise ProjectError(f"append: token id {int(bad[0])} is not in the dictionary "
                                       f"({len(known)} ids, {int(known.min())}..{int(known.max())})")
            return arr
        if arr.dtype.kind in "UO":
            if self._vocab is None:
                self._vocab = Vocabulary(where=str(self.folder / WORDS_DICT))
            return self._vocab.ids((str(t) for t in seq), where="append: tokens")
        raise ProjectError(f"append: tokens have dtype {arr.dtype}; expected integer ids or strings")

    def _meta_block(self, spec: MetaSpec, value: Any, n: int) -> dict:
        where = f"append: meta[{spec.name!r}]"
        weights = None
        if spec.kind == "wordvec":
            if isinstance(value, tuple):
                if len(value) != 2:
                    raise ProjectError(f"{where}: a wordvec block is ids or (ids, weights)")
                value, weights = value
            ids = np.asarray(value)
            if ids.ndim != 2 or ids.shape[0] != n or ids.dtype.kind not in "iu":
                raise ProjectError(f"{where} has shape {ids.shape}, dtype {ids.dtype}; expected ({n}, K) ids")
            if spec.width is None:
                spec.width, spec.weights = int(ids.shape[1]), weights is not None
            if ids.shape[1] != spec.width or (weights is not None) != spec.weights:
                raise ProjectError(f"{where}: K={ids.shape[1]}{' with' if weights is not None else ' without'} "
                                   f"weights, but earlier blocks had K={spec.width}"
                                   f"{' with' if spec.weights else ' without'} weights")
            out = {(TRAIN_FILE, spec.name): ids.astype(np.int32)}
            if weights is not None:
                w = np.asarray(weights, dtype=np.float32)
                if w.shape != ids.shape:
                    raise ProjectError(f"{where}: weights have shape {w.shape} but ids {ids.shape}")
                out[(TRAIN_FILE, spec.name + "_weights")] = w
            return out
        arr = np.asarray(value)
        if arr.shape != (n,):
            raise ProjectError(f"{where} has shape {arr.shape}; expected ({n},), one value per step")
        if spec.kind == "discrete":
            if arr.dtype.kind not in "iub":
                raise ProjectError(f"{where}: a discrete track holds integer ids, got dtype {arr.dtype}")
            arr = arr.astype(np.int32)
        elif arr.dtype.kind not in "fiub":
            raise ProjectError(f"{where}: a scalar track holds numbers, got dtype {arr.dtype}")
        else:
            arr = arr.astype(np.float32)
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            spec.low = lo if spec.low is None else min(spec.low, lo)
            spec.high = hi if spec.high is None else max(spec.high, hi)
        return {(TRAIN_FILE, spec.name): arr}

    def _starts(self, starts: Any, n: int) -> np.ndarray:
        rel = np.zeros(0, dtype=np.int64) if starts is None else np.asarray(starts, dtype=np.int64).ravel()
        if rel.size and (rel[0] < 0 or rel[-1] >= max(n, 1) or np.any(np.diff(rel) <= 0)):
            raise ProjectError(f"append: starts {rel[:10].tolist()}... must be strictly increasing offsets "
                               f"in [0, {n}) within the block")
        if self._steps == 0 and self._sequences == 0 and n and (rel.size == 0 or rel[0] != 0):
            rel = np.concatenate([[0], rel])             # the timeline's first step starts a sequence
        return rel + self._steps

    def _open_files(self, block: dict) -> None:
        for fname in (STATES_FILE, TRAIN_FILE):
            path = self.folder / fname
            try:
                self._files[fname] = h5py.File(path, "w")
            except OSError as exc:
                raise ProjectError(f"{path}: cannot open for writing ({exc})") from None
        for (fname, dname), arr in block.items():
            self._dataset(fname, dname, arr)
        self._dataset(TRAIN_FILE, "seq_starts", np.zeros(0, dtype=np.int64))

    def _dataset(self, fname: str, dname: str, arr: np.ndarray) -> h5py.Dataset:
        handle = self._files[fname]
        if dname in handle:
            ds = handle[dname]
            if ds.shape[1:] != arr.shape[1:]:
                raise ProjectError(f"{self.folder / fname}: dataset {dname!r} has shape {ds.shape}; this "
                                   f"block has rows of shape {arr.shape[1:]}")
            return ds
        row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
        rows = max(1, min(1 << 16, self.chunk_bytes // max(1, row_bytes)))
        return handle.create_dataset(dname, shape=(0,) + arr.shape[1:], maxshape=(None,) + arr.shape[1:],
                                     dtype=arr.dtype, chunks=(rows,) + arr.shape[1:],
                                     compression=self.compression)

    def _write(self, block: dict, new_starts: np.ndarray, n: int) -> None:
        T = self._steps
        for (fname, dname), arr in block.items():
            ds = self._files[fname][dname]
            ds.resize(T + n, axis=0)
            ds[T:T + n] = arr
        if new_starts.size:
            ds = self._files[TRAIN_FILE]["seq_starts"]
            ds.resize(self._sequences + new_starts.size, axis=0)
            ds[self._sequences:] = new_starts

    # --- journal, resume --------------------------------------------------------------------------
    def _commit(self, complete: bool) -> None:
        for handle in self._files.values():
            handle.flush()
        if self._vocab is not None and self._vocab.changed:
            write_dictionary(self.folder / WORDS_DICT, self._vocab.id_to_token)
            self._vocab.changed = False
        journal = _Journal(steps=self._steps, sequences=self._sequences, cursor=self._cursor,
                           complete=complete, dtype=self.dtype, tokens=self._tokens,
                           sources=[asdict(s) for s in self.sources.values()],
                           meta=[asdict(m) for m in self.meta.values()], fingerprint=self._fingerprint)
        path = self.folder / JOURNAL_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(journal), default=_json_default))
        os.replace(tmp, path)

    def _load_journal(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text())
            journal = _Journal(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise ProjectError(f"{path}: unreadable progress journal ({exc}); start over with overwrite") from None
        if journal.version != JOURNAL_VERSION:
            raise ProjectError(f"{path}: journal version {journal.version}, expected {JOURNAL_VERSION}")
        if journal.dtype != self.dtype:
            raise ProjectError(f"{path}: the interrupted run stored {journal.dtype}, this one asks for "
                               f"{self.dtype}")
        if self._fingerprint is not None and journal.fingerprint != json.loads(
                json.dumps(self._fingerprint, default=_json_default)):
            raise ProjectError(f"{path}: the interrupted run had different inputs or settings "
                               f"({journal.fingerprint!r}); start over with overwrite")
        self._resumed = True
        self._steps, self._sequences, self._cursor = journal.steps, journal.sequences, journal.cursor
        self._tokens = journal.tokens
        self.sources = {s["path"]: SourceSpec(**s) for s in journal.sources}
        self.meta = {}
        for m in journal.meta:
            labels = m.pop("labels")
            self.meta[m["name"]] = MetaSpec(labels=None if labels is None else
                                            {int(k): v for k, v in labels.items()}, **m)
        if self._tokens and (self.folder / WORDS_DICT).is_file() and self._vocab is None:
            self._vocab = Vocabulary(read_dictionary(self.folder / WORDS_DICT), where=str(self.folder))
            self._vocab.changed = False
        if journal.steps or journal.sources:
            self._reopen_and_truncate()

    def _reopen_and_truncate(self) -> None:
        """Cut every dataset back to the last committed block (a block may have been half written)."""
        for fname in (STATES_FILE, TRAIN_FILE):
            path = self.folder / fname
            try:
                self._files[fname] = h5py.File(path, "a")
            except OSError as exc:
                raise ProjectError(f"{path}: cannot reopen the interrupted run ({exc}); "
                                   "start over with overwrite") from None
        expected = [(STATES_FILE, s) for s in self.sources] + [(TRAIN_FILE, m) for m in self.meta]
        if self._tokens:
            expected.append((TRAIN_FILE, "words"))
        for fname, dname in expected + [(TRAIN_FILE, "seq_starts")]:
            handle = self._files[fname]
            if dname not in handle:
                raise ProjectError(f"{self.folder / fname}: dataset {dname!r} missing; the interrupted "
                                   "run cannot be resumed, start over with overwrite")
            limit = self._sequences if dname == "seq_starts" else self._steps
            if handle[dname].shape[0] < limit:
                raise ProjectError(f"{self.folder / fname}: dataset {dname!r} has {handle[dname].shape[0]} "
                                   f"rows, fewer than the journal's {limit}; start over with overwrite")
            handle[dname].resize(limit, axis=0)
            if dname in self.meta and (dname + "_weights") in handle:
                handle[dname + "_weights"].resize(limit, axis=0)

    def _remove_previous(self) -> None:
        names = {CONFIG_NAME, JOURNAL_NAME, JOURNAL_NAME + ".tmp", STATES_FILE, TRAIN_FILE, WORDS_DICT}
        try:
            old = load_config(self.folder / CONFIG_NAME) if (self.folder / CONFIG_NAME).is_file() else {}
            names |= {str(v) for v in (old.get("files") or {}).values() if "/" not in str(v)}
        except (ProjectError, AttributeError):
            pass                                 # an unreadable old lstm.yml: remove only the known names
        for fname in names:
            path = self.folder / fname
            if path.is_file():
                path.unlink()

    # --- finishing --------------------------------------------------------------------------------
    def close(self) -> Path:
        """Write lstm.yml and the dictionaries; returns the project folder."""
        if self._closed:
            return self.folder
        if self._steps == 0:
            self._close_files()
            raise ProjectError(f"{self.folder}: no steps were written; a project needs at least one")
        self._commit(complete=True)
        self._close_files()
        config = self._config()
        write_config(self.folder, config)
        return self.folder

    def abort(self) -> None:
        """Flush and close without writing lstm.yml; the run can be resumed."""
        if not self._closed and self._files:
            self._commit(complete=False)
        self._close_files()

    def _close_files(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        self._closed = True

    def _config(self) -> dict:
        files: dict[str, str] = {"states": STATES_FILE, "train": TRAIN_FILE}
        config: dict[str, Any] = {"name": self.name or self.folder.resolve().name}
        if self.description:
            config["description"] = self.description
        config["files"] = files
        if self._tokens:
            config["word_sequence"] = {"file": "train", "path": "words"}
            if self._vocab is not None:
                files["words"] = WORDS_DICT
                config["word_sequence"]["dict_file"] = "words"
        types = []
        for spec in self.sources.values():
            entry: dict[str, Any] = {"type": spec.type}
            if spec.layer is not None:
                entry["layer"] = spec.layer
            entry["path"] = spec.path
            if spec.transform != "tanh":
                entry["transform"] = spec.transform
            if spec.unsigned:
                entry["unsigned"] = True
            types.append(entry)
        config["states"] = {"file": "states", "types": types}
        meta: dict[str, Any] = {}
        for spec in self.meta.values():
            entry = {"file": "train", "path": spec.name}
            dict_key = None
            if spec.labels is not None:
                dict_key = f"{spec.name}_dict"
                files[dict_key] = f"{spec.name}.dict"
                write_dictionary(self.folder / files[dict_key], spec.labels)
            elif spec.kind == "wordvec" and "words" in files:
                dict_key = "words"
            if dict_key is not None:
                entry["dict"] = dict_key
            if spec.kind == "wordvec":
                if spec.weights:
                    entry["weights_path"] = spec.name + "_weights"
                entry["type"] = "wordvec"
                entry["vis"] = {"type": "wordvec"}
            elif spec.kind == "discrete" and dict_key is not None:
                entry["vis"] = {"type": "discrete", "range": "dict"}
            else:
                vis: dict[str, Any] = {"type": spec.kind}
                if spec.low is not None:
                    vis["range"] = [spec.low, spec.high if spec.high > spec.low else spec.low + 1]
                entry["vis"] = vis
            meta[spec.name] = entry
        if meta:
            config["meta"] = meta
        if self._sequences > 1:                   # one sequence from step 0 is the default anyway
            config["sequences"] = {"file": "train", "path": "seq_starts"}
        return config

    def _make_vocab(self, dictionary) -> Vocabulary | None:
        if dictionary is None:
            return None
        if isinstance(dictionary, Vocabulary):
            dictionary.changed = True
            return dictionary
        vocab = Vocabulary(dictionary, frozen=True, where=str(self.folder / WORDS_DICT))
        vocab.changed = True
        return vocab


def _infer_kind(name: str, value: Any) -> str:
    if isinstance(value, tuple):
        return "wordvec"
    arr = np.asarray(value)
    if arr.ndim == 2:
        return "wordvec"
    if arr.dtype.kind in "iub":
        return "discrete"
    if arr.dtype.kind == "f":
        return "scalar"
    raise ProjectError(f"append: meta[{name!r}] has dtype {arr.dtype}; give numbers, ids, or declare the "
                       "track with add_meta")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_project(folder: str | os.PathLike, states: Mapping[str, Any], *, tokens: Any = None,
                  dictionary: Mapping[int, str] | Sequence[str] | None = None,
                  meta: Mapping[str, Any] | None = None,
                  meta_labels: Mapping[str, Mapping[int, str] | Sequence[str]] | None = None,
                  sequence_starts: Sequence[int] | np.ndarray | None = None,
                  sources: Mapping[str, Mapping[str, Any]] | None = None,
                  name: str | None = None, description: str | None = None, dtype: str = "float32",
                  overwrite: bool = False, block_steps: int = 1 << 16) -> Path:
    """Write a whole project from in-memory arrays (for a larger corpus use :class:`ProjectWriter`).

    ``states``: ``{path: (T, D) array}``; ``sources``: optional ``{path: {type, layer, transform}}``;
    ``meta``: ``{name: (T,) array | (T, K) ids | (ids, weights)}``; ``meta_labels``: ``{name: labels}``
    (a track with labels is discrete); ``sequence_starts``: absolute start positions. Returns ``folder``.
    """
    meta = dict(meta or {})
    meta_labels = dict(meta_labels or {})
    unknown = set(meta_labels) - set(meta)
    if unknown:
        raise ProjectError(f"write_project: meta_labels names {sorted(unknown)}, which are not in meta")
    T = None
    for sname, arr in states.items():
        shape = np.shape(arr)
        if T is None:
            T, first = (shape[0] if len(shape) else 0), sname
    lengths = {f"meta[{m!r}]": len(v[0]) if isinstance(v, tuple) else len(v) for m, v in meta.items()}
    if tokens is not None:
        lengths["tokens"] = len(tokens)
    lengths.update({f"states[{s!r}]": np.shape(a)[0] if np.ndim(a) else 0 for s, a in states.items()})
    for what, length in lengths.items():
        if length != T:
            raise ProjectError(f"write_project: {what} has {length} steps but states[{first!r}] has {T}")
    starts = None if sequence_starts is None else np.asarray(sequence_starts, dtype=np.int64).ravel()
    if starts is not None and starts.size and (np.any(np.diff(starts) <= 0) or starts[0] < 0
                                               or (T is not None and starts[-1] >= T)):
        raise ProjectError(f"write_project: sequence_starts must be strictly increasing in [0, {T})")
    with ProjectWriter(folder, name=name, description=description, dictionary=dictionary, dtype=dtype,
                       overwrite=overwrite) as writer:
        for sname in states:
            writer.add_source(sname, **dict((sources or {}).get(sname, {})))
        for mname, value in meta.items():
            kind = "discrete" if mname in meta_labels and not isinstance(value, tuple) \
                and np.ndim(value) == 1 else _infer_kind(mname, value)
            writer.add_meta(mname, kind=kind, labels=meta_labels.get(mname))
        total = T or 0
        tokens_seq = tokens if tokens is None or isinstance(tokens, np.ndarray) else list(tokens)
        for lo in range(0, max(total, 1), block_steps):
            hi = min(total, lo + block_steps)
            block_meta = {m: (v[0][lo:hi], v[1][lo:hi]) if isinstance(v, tuple) else np.asarray(v)[lo:hi]
                          for m, v in meta.items()}
            block_starts = None if starts is None else starts[(starts >= lo) & (starts < hi)] - lo
            writer.append(states={s: np.asarray(a)[lo:hi] for s, a in states.items()},
                          tokens=None if tokens_seq is None else tokens_seq[lo:hi],
                          meta=block_meta, starts=block_starts)
    return Path(folder)
