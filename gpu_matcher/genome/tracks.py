"""Genome tracks: BED / narrowPeak intervals and bigWig signal (docs/genomics.md).

Interval tracks are stored as ``tracks/<name>.intervals.h5``: global ``start``/``end`` (int64, sorted by
start), ``max_end`` (the running maximum of ``end``, so the intervals touching a window are found with two
binary searches however they overlap) and ``score`` (float32: the BED score column, narrowPeak's
signalValue, 1 when the file has none). A step's value is the number of intervals covering it, so
overlapping intervals are counted, never lost. A bigWig file is placed in the project folder (hard link,
else copy) and read on demand through pyBigWig; its overview comes from the file's zoom levels.

The loader opens them as ``gpu_matcher.genome.readers`` tracks (``type: intervals`` and ``type: bigwig``
entries). Adding them needs the ``genomics`` extra (bioframe / pyBigWig); reading an interval track needs
only h5py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, load_config
from gpu_matcher.genome import require
from gpu_matcher.genome.coords import Genome
from gpu_matcher.io.sources import remove_path
from gpu_matcher.io.tracks import NAME_PATTERN, RESERVED_NAMES, update_config
from gpu_matcher.genome.readers import open_bigwig

TRACKS_DIR = "tracks"
BED_KINDS = {"bed": "bed", "narrowPeak": "narrowPeak", "narrowpeak": "narrowPeak"}
HEADER_PREFIXES = ("track", "browser", "#")


# --- adding tracks ----------------------------------------------------------------------------------
def _project_genome(folder: Path) -> Genome:
    from gpu_matcher.project import open_project

    project = open_project(folder)
    try:
        genome = Genome.of(project)
    finally:
        project.close()
    if genome is None:
        raise ProjectError(f"{folder / CONFIG_NAME}: not a genome project (no 'genome' section); "
                           "write one with lstmvis convert-fasta")
    return genome


def _check_track_name(folder: Path, name: str, overwrite: bool) -> str:
    name = str(name)
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        raise ProjectError(f"track name {name!r}: use letters, digits, '_', '.' and '-' only")
    meta = load_config(folder / CONFIG_NAME).get("meta") or {}
    if name in meta and not overwrite:
        raise ProjectError(f"{folder / CONFIG_NAME}: meta track {name!r} exists; pass overwrite (--overwrite)")
    return name


def _header_rows(path: Path) -> int:
    """Leading ``track`` / ``browser`` / ``#`` lines of a BED file (bioframe would read them as rows)."""
    count = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip() and not line.startswith(HEADER_PREFIXES):
                    break
                count += 1
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read ({exc.strerror})") from None
    return count


def read_intervals(path: str | os.PathLike, genome: Genome, kind: str = "bed") -> dict[str, np.ndarray]:
    """Global ``start``, ``end``, ``score`` of a BED / narrowPeak file, sorted by start (then end), and
    ``max_end``; contig names and ends checked against ``genome``."""
    bioframe = require("bioframe", "add-bed")
    path = Path(path)
    schema = BED_KINDS.get(kind)
    if schema is None:
        raise ProjectError(f"{path}: kind {kind!r}; expected 'bed' or 'narrowPeak'")
    if not path.is_file():
        raise ProjectError(f"{path}: file missing")
    try:
        frame = bioframe.read_table(str(path), schema=schema, skiprows=_header_rows(path), comment="#")
    except Exception as exc:  # pandas raises several types for a malformed table
        raise ProjectError(f"{path}: not a readable {schema} file ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:160]})") from None
    if frame.empty:
        raise ProjectError(f"{path}: no intervals")
    for column in ("chrom", "start", "end"):
        missing = np.flatnonzero(frame[column].isna().to_numpy())
        if missing.size:
            raise ProjectError(f"{path}: data row {int(missing[0]) + 1} has no {column} "
                               f"(a {schema} line is chrom, start, end, ... separated by tabs)")
    begin = frame["start"].to_numpy(dtype=np.float64)
    end = frame["end"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero((begin != np.round(begin)) | (begin < 0) | (end < begin))
    if bad.size:
        i = int(bad[0])
        raise ProjectError(f"{path}: data row {i + 1} has start {begin[i]:g}, end {end[i]:g}; expected whole "
                           "numbers with 0 <= start <= end")
    chrom = frame["chrom"].astype(str).to_numpy()
    global_start = genome.to_global(chrom, begin.astype(np.int64), str(path))
    lengths = genome.lengths[np.searchsorted(genome.starts, global_start, side="right") - 1]
    past = np.flatnonzero(end.astype(np.int64) > lengths)
    if past.size:
        i = int(past[0])
        raise ProjectError(f"{path}: data row {i + 1} ends at {chrom[i]}:{int(end[i]):,}, past the contig's "
                           f"length {int(lengths[i]):,}")
    global_end = global_start + (end - begin).astype(np.int64)
    score_column = "fc" if schema == "narrowPeak" else "score"
    score = frame[score_column].to_numpy(dtype=np.float64, na_value=np.nan) if score_column in frame else \
        np.ones(len(frame))
    score = np.where(np.isnan(score), 1.0, score).astype(np.float32)
    order = np.lexsort((global_end, global_start))
    out = {"start": global_start[order], "end": global_end[order], "score": score[order]}
    out["max_end"] = np.maximum.accumulate(out["end"])
    return out


def _max_depth(starts: np.ndarray, ends: np.ndarray) -> int:
    """The most intervals covering any one step."""
    events = np.concatenate([starts, ends])
    delta = np.concatenate([np.ones(starts.size, np.int64), -np.ones(ends.size, np.int64)])
    order = np.lexsort((delta, events))                  # at one position, ends (-1) before starts
    return int(np.cumsum(delta[order]).max(initial=0))


def add_bed(project_dir: str | os.PathLike, name: str, path: str | os.PathLike, *, kind: str = "bed",
            overwrite: bool = False) -> dict:
    """Add a BED / narrowPeak file as interval track ``name``; returns ``{intervals, overlapping,
    max_depth, file}`` (``overlapping``: intervals overlapping an earlier one, all kept and counted)."""
    folder = Path(project_dir)
    name = _check_track_name(folder, name, overwrite)
    genome = _project_genome(folder)
    arrays = read_intervals(path, genome, kind)
    depth = _max_depth(arrays["start"], arrays["end"])
    previous_end = np.concatenate([[-1], arrays["max_end"][:-1]])
    overlapping = int(np.count_nonzero(arrays["start"] < previous_end))
    rel = f"{TRACKS_DIR}/{name}.intervals.h5"
    (folder / TRACKS_DIR).mkdir(exist_ok=True)
    tmp = folder / (rel + ".tmp")
    with h5py.File(tmp, "w") as handle:
        for key, values in arrays.items():
            handle.create_dataset(key, data=values, chunks=(max(1, min(values.size, 1 << 16)),))
        handle.attrs["source_file"] = Path(path).name
        handle.attrs["kind"] = BED_KINDS[kind]
    entry = {"type": "intervals", "file": f"track_{name}",
             "vis": {"type": "discrete", "range": [0, max(1, depth)]}}
    _register(folder, name, entry, rel, tmp)
    return {"intervals": int(arrays["start"].size), "overlapping": overlapping, "max_depth": depth,
            "file": rel}


def add_bigwig(project_dir: str | os.PathLike, name: str, path: str | os.PathLike, *,
               overwrite: bool = False) -> dict:
    """Add a bigWig file as scalar track ``name``: its contigs and lengths are checked against the
    genome, and the file is hard-linked (else copied) into ``tracks/`` unless it already lies in the
    project folder. Returns ``{contigs, file, range}``."""
    folder = Path(project_dir)
    name = _check_track_name(folder, name, overwrite)
    genome = _project_genome(folder)
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: file missing")
    bw = open_bigwig(path)
    try:
        chroms = dict(bw.chroms())
        header = bw.header()
    finally:
        bw.close()
    genome.to_global(list(chroms), np.zeros(len(chroms), dtype=np.int64), str(path))   # names known
    wrong = [f"{c} ({n:,} vs {int(genome.lengths[genome.index(c)]):,})" for c, n in chroms.items()
             if n != int(genome.lengths[genome.index(c)])]
    if wrong:
        raise ProjectError(f"{path}: contig lengths differ from the genome's: {', '.join(wrong[:5])}; "
                           "was the file made for another assembly?")
    root = folder.resolve()
    if path.resolve().is_relative_to(root):
        rel, tmp = path.resolve().relative_to(root).as_posix(), None
    else:
        rel = f"{TRACKS_DIR}/{name}{path.suffix or '.bw'}"
        (folder / TRACKS_DIR).mkdir(exist_ok=True)
        tmp = folder / (rel + ".tmp")
        remove_path(tmp)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
    lo, hi = float(header.get("minVal", 0.0)), float(header.get("maxVal", 1.0))
    entry = {"type": "bigwig", "file": f"track_{name}",
             "vis": {"type": "scalar", "range": [lo, hi if hi > lo else lo + 1]}}
    _register(folder, name, entry, rel, tmp)
    return {"contigs": len(chroms), "file": rel, "range": entry["vis"]["range"]}


def _register(folder: Path, name: str, entry: dict, rel: str, tmp: Path | None) -> None:
    """Move ``tmp`` to ``rel`` and name it in lstm.yml (``files`` and ``meta``) in one locked update."""
    file_key = entry["file"]

    def change(config: dict) -> None:
        files = config.setdefault("files", {})
        if files.get(file_key, rel) != rel and name not in (config.get("meta") or {}):
            raise ProjectError(f"{folder / CONFIG_NAME}: files key {file_key!r} already names {files[file_key]!r}")
        files[file_key] = rel
        meta = config.get("meta") or {}
        meta[name] = entry
        config["meta"] = meta
        if tmp is not None:
            os.replace(tmp, folder / rel)

    try:
        update_config(folder, change)
    finally:
        if tmp is not None:
            remove_path(tmp)
