"""``lstmvis annotate``: CoNLL-style columns (token, tag, ...) to meta tracks aligned with a timeline.

One token per line, columns separated by tabs or spaces; blank lines (sentence breaks), comment lines
(``#`` then a space, or a lone ``#``; ``##ing`` and tab-separated rows starting ``#`` are tokens),
``-DOCSTART-`` lines and CoNLL-U multi-word / empty-node lines (ids ``3-4``, ``5.1``) are skipped. The token column must spell the project's timeline, step by step; the first step where they
disagree is an error that names the line and the step. Each other named column becomes a discrete
meta track (labels in ``<name>.dict``) in ``annotations.h5``, and lstm.yml gains its ``meta`` entry.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, load_config, write_config, write_dictionary
from gpu_matcher.io.vocab import UNK_TOKENS, Vocabulary

ANNOTATIONS_FILE, FILES_KEY = "annotations.h5", "annotations"
SKIP_COLUMN = "_"
NO_LABEL = "_"                                 # the label of timeline steps that --ignore skips
MULTIWORD = re.compile(r"^\d+[-.]\d+$")
BLOCK = 1 << 16


@dataclass
class AnnotateSummary:
    project: Path
    tracks: dict[str, int]                      # track -> number of labels
    steps: int
    ignored: int


def _conll_rows(path: Path, width: int, encoding: str) -> Iterator[tuple[int, list[str]]]:
    try:
        with open(path, encoding=encoding) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("-DOCSTART-") or _is_comment(line, width):
                    continue
                cols = line.split("\t") if "\t" in line else line.split()
                cols = [c.strip() for c in cols]
                if MULTIWORD.match(cols[0]):
                    continue
                if len(cols) < width:
                    raise ProjectError(f"{path}:{lineno}: {len(cols)} columns, but --columns names {width}: "
                                       f"{line[:80]!r}")
                yield lineno, cols
    except UnicodeDecodeError as exc:
        raise ProjectError(f"{path}: not {encoding} text ({exc.reason})") from None
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read ({exc.strerror})") from None


def _is_comment(line: str, width: int) -> bool:
    """``# sent_id = 1`` or a lone ``#`` is a comment; ``##bu`` (a WordPiece token) or a tab-separated
    row with every column (``#<TAB>SYM``) is a token."""
    if not line.startswith("#"):
        return False
    if "\t" in line and len(line.split("\t")) >= width:
        return False
    return line.rstrip() == "#" or line[1].isspace()


def parse_columns(spec: str | Sequence[str]) -> list[str]:
    names = [c.strip() for c in spec.split(",")] if isinstance(spec, str) else [str(c) for c in spec]
    if names.count("token") != 1:
        raise ProjectError(f"--columns {','.join(names)!r}: name exactly one column 'token'")
    tracks = [n for n in names if n not in ("token", SKIP_COLUMN)]
    if not tracks:
        raise ProjectError(f"--columns {','.join(names)!r}: name at least one tag column besides 'token' "
                           f"('{SKIP_COLUMN}' skips a column)")
    dupes = {n for n in tracks if tracks.count(n) > 1}
    if dupes:
        raise ProjectError(f"--columns: {sorted(dupes)} named twice")
    for n in tracks:
        if not re.match(r"^[A-Za-z0-9_.\-]+$", n) or n in ("words", "seq_starts"):
            raise ProjectError(f"--columns: track name {n!r}: use letters, digits, '_', '.', '-'")
    return names


def annotate(conll_path: str | os.PathLike, project_dir: str | os.PathLike,
             columns: str | Sequence[str] = ("token", "tag"), *, ignore: Sequence[str] = (),
             unk: str | None = None, lowercase: bool = False, overwrite: bool = False,
             encoding: str = "utf-8") -> AnnotateSummary:
    """Add one discrete meta track per tag column of ``conll_path`` to the project in ``project_dir``.

    ``ignore``: timeline tokens absent from the CoNLL file (say ``</s>``); those steps get label ``_``.
    ``unk``: a timeline token that matches any CoNLL token (words the model's vocabulary lacks); by
    default each conventional spelling (``<unk>``, BERT's ``[UNK]``, ... : ``vocab.UNK_TOKENS``).
    ``lowercase``: compare tokens case-insensitively.
    """
    from gpu_matcher.project import open_project

    conll_path = Path(conll_path)
    names = parse_columns(columns)
    token_col = names.index("token")
    tracks = {n: i for i, n in enumerate(names) if n not in ("token", SKIP_COLUMN)}
    unks = set(UNK_TOKENS) if unk is None else {unk}
    project = open_project(project_dir)
    config_path = project.path / CONFIG_NAME
    try:
        if project.word_ids_dataset is None:
            raise ProjectError(f"{config_path}: the project has no word_sequence to align annotations with")
        existing = set(project.config.get("meta") or {}) & set(tracks)
        if existing and not overwrite:
            raise ProjectError(f"{config_path}: meta track(s) {sorted(existing)} exist; pass --overwrite")
        labels = {n: Vocabulary({0: NO_LABEL}, where=f"{conll_path} column {n!r}") for n in tracks}
        ignore_set = set(ignore)
        values = {n: np.zeros(project.T, dtype=np.int32) for n in tracks}
        rows = _conll_rows(conll_path, len(names), encoding)
        ignored = 0
        for lo in range(0, project.T, BLOCK):
            timeline = project.tokens(lo, min(project.T, lo + BLOCK))
            for offset, expected in enumerate(timeline):
                step = lo + offset
                if expected in ignore_set:
                    ignored += 1
                    continue                       # label 0 ("_") is already there
                try:
                    lineno, cols = next(rows)
                except StopIteration:
                    raise ProjectError(f"{conll_path}: ends after {step - ignored} tokens, but the timeline "
                                       f"has {project.T} steps (step {step} is {expected!r})") from None
                token = cols[token_col]
                a, b = (token.lower(), expected.lower()) if lowercase else (token, expected)
                if a != b and expected not in unks:
                    raise ProjectError(f"{conll_path}:{lineno}: token {token!r} but the timeline has "
                                       f"{expected!r} at step {step} (sequence {_sequence_index(project, step)}); "
                                       f"the first {step} steps agreed"
                                       + (f"; if the CoNLL file leaves out {expected}, pass --ignore '{expected}'"
                                          if expected.startswith("<") and expected.endswith(">") else ""))
                for n, col in tracks.items():
                    values[n][step] = labels[n].id_of(cols[col], f"{conll_path}:{lineno}")
        extra = next(rows, None)
        if extra is not None:
            raise ProjectError(f"{conll_path}:{extra[0]}: token {extra[1][token_col]!r} is past the end of "
                               f"the timeline ({project.T} steps)")
        folder = project.path
    finally:
        project.close()
    _write_tracks(folder, config_path, values, labels)
    return AnnotateSummary(project=folder, tracks={n: len(v) for n, v in labels.items()},
                           steps=int(len(next(iter(values.values())))), ignored=ignored)


def _sequence_index(project, step: int) -> int:
    if project.sequence_starts is None:
        return 0
    return int(np.searchsorted(project.sequence_starts, step, side="right")) - 1


def _write_tracks(folder: Path, config_path: Path, values: dict, labels: dict) -> None:
    config = load_config(config_path)
    files = config.setdefault("files", {})
    if files.get(FILES_KEY, ANNOTATIONS_FILE) != ANNOTATIONS_FILE:
        raise ProjectError(f"{config_path}: files key {FILES_KEY!r} already names {files[FILES_KEY]!r}")
    files[FILES_KEY] = ANNOTATIONS_FILE
    meta = config.get("meta") or {}
    with h5py.File(folder / ANNOTATIONS_FILE, "a") as handle:
        for name, arr in values.items():
            if name in handle:
                del handle[name]
            handle.create_dataset(name, data=arr, chunks=(min(len(arr), BLOCK),))
            dict_key = f"{name}_dict"
            if files.get(dict_key, f"{name}.dict") != f"{name}.dict":
                raise ProjectError(f"{config_path}: files key {dict_key!r} already names {files[dict_key]!r}")
            files[dict_key] = f"{name}.dict"
            write_dictionary(folder / files[dict_key], labels[name].id_to_token)
            meta[name] = {"file": FILES_KEY, "path": name, "dict": dict_key,
                          "vis": {"type": "discrete", "range": "dict"}}
    config["meta"] = meta
    write_config(folder, config)
