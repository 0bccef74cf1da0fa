"""Tracks from character spans, and ``lstmvis add-meta`` / ``lstmvis annotate-spans``.

Spans are ``doc start end label``: characters ``[start, end)`` of a document, in a JSONL file (one
object per line with those keys) or a TSV / white-space separated file (the label is the rest of the
line; a first line ``doc start end label`` is a header). ``doc`` is a document's name as
``lstmvis extract-hf`` stored it (the file name, ``file:line``, or a JSONL record's ``id``) or its
0-based index. Every token whose characters overlap a span gets the span's label (the offsets come
from the project's ``offsets.h5``); other tokens, and special tokens, get ``_``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from gpu_matcher.errors import ProjectError

NO_LABEL = "_"
OVERLAP = ("error", "first", "last")


@dataclass
class Span:
    where: str                        # file:line, for messages
    doc: str
    start: int
    end: int
    label: str


def read_spans(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[Span]:
    path = Path(path)
    try:
        text = path.read_text(encoding=encoding)
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read ({exc.strerror})") from None
    jsonl = path.suffix == ".jsonl"
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        if jsonl:
            try:
                rec = json.loads(line)
                doc, start, end, label = rec["doc"], rec["start"], rec["end"], rec["label"]
            except (ValueError, KeyError, TypeError):
                raise ProjectError(f"{where}: expected a JSON object with doc, start, end, label") from None
        else:
            cols = line.split("\t") if "\t" in line else line.split(None, 3)
            if lineno == 1 and [c.strip().lower() for c in cols[:3]] == ["doc", "start", "end"]:
                continue
            if len(cols) < 4:
                raise ProjectError(f"{where}: expected 'doc start end label', got {line[:80]!r}")
            doc, start, end, label = cols[0], cols[1], cols[2], "\t".join(cols[3:]).strip()
        try:
            start, end = int(start), int(end)
        except (TypeError, ValueError):
            raise ProjectError(f"{where}: start {start!r} and end {end!r} must be integers") from None
        if not 0 <= start < end:
            raise ProjectError(f"{where}: span [{start}, {end}) must have 0 <= start < end")
        label = str(label)
        if not label or any(c.isspace() for c in label):
            raise ProjectError(f"{where}: label {label!r} must be non-empty without white space")
        yield Span(where, str(doc), start, end, label)


def spans_to_labels(spans_path: str | os.PathLike, offsets: np.ndarray, bounds: np.ndarray,
                    documents: list[str], *, overlap: str = "error") -> tuple[np.ndarray, dict[int, str], int]:
    """Per-step label ids (0 = ``_``), the labels, and the number of spans that cover no token.

    ``offsets``: ``(T, 2)`` characters per step (``-1`` for special tokens); ``bounds``: the sequence
    bounds (document ``i`` is steps ``bounds[i]:bounds[i+1]``); ``documents``: their names.
    """
    if overlap not in OVERLAP:
        raise ProjectError(f"--overlap {overlap!r}: expected one of {OVERLAP}")
    by_name = {name: i for i, name in enumerate(documents)}
    labels: dict[str, int] = {NO_LABEL: 0}
    values = np.zeros(offsets.shape[0], dtype=np.int32)
    span_at = np.full(offsets.shape[0], -1, dtype=np.int64)     # step -> the span that labelled it
    wheres: list[str] = []
    empty = 0
    for span in read_spans(spans_path):
        doc = by_name.get(span.doc)
        if doc is None and span.doc.lstrip("-").isdigit() and 0 <= int(span.doc) < len(documents):
            doc = int(span.doc)
        if doc is None:
            raise ProjectError(f"{span.where}: document {span.doc!r} is not in the project "
                               f"({len(documents)} documents, e.g. {', '.join(documents[:3])})")
        lo, hi = int(bounds[doc]), int(bounds[doc + 1])
        offs = offsets[lo:hi]
        hit = np.flatnonzero((offs[:, 1] > offs[:, 0]) & (offs[:, 0] < span.end) & (offs[:, 1] > span.start)) + lo
        if hit.size == 0:
            empty += 1
            continue
        label_id = labels.setdefault(span.label, len(labels))
        taken = hit[(values[hit] != 0) & (values[hit] != label_id)]
        if taken.size and overlap == "error":
            step = int(taken[0])
            raise ProjectError(f"{span.where}: span {span.label!r} overlaps the span at {wheres[span_at[step]]} on step "
                               f"{step}; pass --overlap first or last to keep one of them")
        if overlap == "first":
            hit = hit[values[hit] == 0]
        values[hit] = label_id
        span_at[hit] = len(wheres)
        wheres.append(span.where)
    return values, {i: name for name, i in labels.items()}, empty


def read_offsets(project: Any) -> tuple[np.ndarray, list[str]]:
    """The ``offsets`` and document names ``lstmvis extract-hf`` stored beside the project."""
    import h5py

    name = (project.config.get("files") or {}).get("offsets", "offsets.h5")
    path = project.path / str(name)
    if not path.is_file():
        raise ProjectError(f"{path}: file missing; character offsets come with projects written by "
                           "lstmvis extract-hf")
    with h5py.File(path, "r") as handle:
        offsets = np.asarray(handle["offsets"][()], dtype=np.int64)
        documents = [d.decode() if isinstance(d, bytes) else str(d) for d in handle["documents"][()]]
    if offsets.shape != (project.T, 2):
        raise ProjectError(f"{path}: dataset 'offsets' has shape {offsets.shape}, but the project has "
                           f"T={project.T} steps")
    return offsets, documents


def annotate_spans(spans_path: str | os.PathLike, project_dir: str | os.PathLike, name: str, *,
                   overlap: str = "error", overwrite: bool = False) -> dict:
    """Add the discrete track ``name`` from the spans in ``spans_path``; returns a summary."""
    from gpu_matcher.project import open_project

    project = open_project(project_dir)
    try:
        offsets, documents = read_offsets(project)
        bounds = project.sequence_bounds()
        if len(bounds) - 1 != len(documents):
            raise ProjectError(f"{project.path}: {len(bounds) - 1} sequences but {len(documents)} document "
                               "names in the offsets file")
        values, labels, empty = spans_to_labels(spans_path, offsets, bounds, documents, overlap=overlap)
        project.add_meta(name, values, "discrete", labels=labels, overwrite=overwrite)
    finally:
        project.close()
    return {"project": str(project.path), "track": name, "labels": len(labels),
            "labelled_steps": int(np.count_nonzero(values)), "empty_spans": empty}


def read_values(path: str | os.PathLike, kind: str) -> np.ndarray:
    """Values for ``add-meta``: a ``.npy`` array, or a text file with one value per line."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{path}: not a readable .npy array ({exc})") from None
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read ({exc.strerror})") from None
    if kind == "scalar":
        try:
            return np.array([float(v) for v in lines], dtype=np.float64)
        except ValueError as exc:
            raise ProjectError(f"{path}: a scalar track needs one number per line ({exc})") from None
    return np.array(lines, dtype=object).astype(str)


def cmd_add_meta(args: argparse.Namespace) -> int:
    from gpu_matcher.project import open_project

    values = read_values(args.values, args.kind)
    project = open_project(args.project_dir)
    try:
        track = project.add_meta(args.name, values, args.kind, overwrite=args.overwrite)
        labels = f", {len(track.labels)} labels" if track.labels else ""
        print(f"{project.path}: added {args.kind} meta track {args.name} over {project.T} steps{labels}")
    finally:
        project.close()
    return 0


def cmd_annotate_spans(args: argparse.Namespace) -> int:
    s = annotate_spans(args.spans, args.project_dir, args.name, overlap=args.overlap, overwrite=args.overwrite)
    print(f"{s['project']}: added meta track {s['track']} ({s['labels']} labels, {s['labelled_steps']} "
          f"labelled steps" + (f"; {s['empty_spans']} spans cover no token" if s["empty_spans"] else "") + ")")
    return 0


def register(sub: Any) -> None:
    """Add ``add-meta`` and ``annotate-spans`` to the ``lstmvis`` subcommands."""
    p = sub.add_parser("add-meta", help="add a meta track (one value per step) to an existing project")
    p.add_argument("project_dir", help="the project folder (holds lstm.yml)")
    p.add_argument("name", help="the track's name")
    p.add_argument("values", help="a .npy array, or a text file with one value per line")
    p.add_argument("--kind", choices=["discrete", "scalar"], default="discrete",
                   help="discrete: labels (strings or integer ids); scalar: numbers")
    p.add_argument("--overwrite", action="store_true", help="replace a track of the same name")
    p.set_defaults(func=cmd_add_meta)

    p = sub.add_parser("annotate-spans", help="character spans (doc start end label) -> a discrete meta track, "
                                              "through the offsets extract-hf stored")
    p.add_argument("spans", help="a JSONL file (doc, start, end, label) or a TSV 'doc start end label'")
    p.add_argument("project_dir", help="the project folder (written by lstmvis extract-hf)")
    p.add_argument("--name", default="spans", help="the track's name (default spans)")
    p.add_argument("--overlap", choices=list(OVERLAP), default="error",
                   help="two spans with different labels on one token: stop (default), keep the first or "
                        "the last")
    p.add_argument("--overwrite", action="store_true", help="replace a track of the same name")
    p.set_defaults(func=cmd_annotate_spans)
