"""``lstmvis convert-fasta``: a FASTA genome as a project timeline (docs/genomics.md, "Project format additions").

The bases become word ids into ``bases.dict`` (A C G T N, the IUPAC codes, ``-``), each contig a
sequence, and ``genome.chrom.sizes`` names the contigs in timeline order. pyfaidx reads the FASTA through
its ``.fai`` index, one slice of a contig at a time, so memory stays constant whatever the genome's size;
the ids are written in whole storage chunks (Zarr v3 from 10^8 bases under ``format="auto"``, HDF5 below).

The user's files are never modified: a ``.fai`` beside the FASTA is used when it exists and is newer than
the FASTA; otherwise the index is built inside the output folder while converting and removed after (a
FASTA in a read-only folder converts the same way). Soft-masked (lower-case) bases are folded to upper
case and counted; a letter outside the dictionary is a one-line error naming the file, contig and position.

The project has no states yet: a model's states and per-base outputs are added with
``gpu_matcher.io.sources.add_source`` / ``add_dense_track`` (or ``lstmvis extract-genome``), tracks with
``gpu_matcher.genome.tracks.add_bed`` / ``add_bigwig``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME, write_config, write_dictionary
from gpu_matcher.genome import require
from gpu_matcher.genome.coords import Genome
from gpu_matcher.io.sources import ArrayFile, remove_path, suffix_of

#: The bases dictionary: id -> letter (0 is never a base). IUPAC nucleotide codes and the gap.
BASES = ("A", "C", "G", "T", "N", "R", "Y", "S", "W", "K", "M", "B", "D", "H", "V", "-")
BASE_IDS = {letter: i for i, letter in enumerate(BASES, 1)}
#: ``format="auto"`` writes Zarr from this many bases.
ZARR_FROM = 10**8
#: Bases read from the FASTA per slice (constant memory: a few bytes per base of one slice).
SLICE_BASES = 1 << 22
GENOME_FILE, BASES_DICT, CHROM_SIZES = "genome", "bases.dict", "genome.chrom.sizes"
FORMATS = ("auto", "h5", "zarr")


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Byte -> base id (0: not a base) and byte -> soft-masked (a lower-case base)."""
    ids = np.zeros(256, dtype=np.uint8)
    lower = np.zeros(256, dtype=bool)
    for letter, i in BASE_IDS.items():
        ids[ord(letter)] = i
        if letter.isalpha():
            ids[ord(letter.lower())] = i
            lower[ord(letter.lower())] = True
    return ids, lower


BYTE_IDS, BYTE_LOWER = _tables()


class _ChunkedOut:
    """Appends to a 1-D array in whole chunks (a Zarr chunk is then written once, never re-read)."""

    def __init__(self, array, chunk: int):
        self.array, self.chunk = array, int(chunk)
        self._parts: list[np.ndarray] = []
        self._held = 0
        self.at = 0

    def append(self, block: np.ndarray) -> None:
        self._parts.append(block)
        self._held += block.size
        if self._held >= self.chunk:
            data = np.concatenate(self._parts)
            whole = data.size // self.chunk * self.chunk
            self.array[self.at:self.at + whole] = data[:whole]
            self.at += whole
            self._parts, self._held = [data[whole:]], data.size - whole

    def flush(self) -> None:
        if self._held:
            data = np.concatenate(self._parts)
            self.array[self.at:self.at + data.size] = data
            self.at += data.size
        self._parts, self._held = [], 0


def _open_index(path: Path, scratch: Path):
    """A pyfaidx index of ``path`` that writes nothing beside it (see the module docstring)."""
    pyfaidx = require("pyfaidx", "convert-fasta")
    beside = Path(str(path) + ".fai")
    fresh = beside.is_file() and beside.stat().st_mtime >= path.stat().st_mtime
    options: dict = {"as_raw": True, "sequence_always_upper": False, "duplicate_action": "stop"}
    if fresh:
        options.update(indexname=str(beside), rebuild=False, build_index=False)
        gzi = Path(str(path) + ".gzi")
        if gzi.is_file():
            options["gzi_indexname"] = str(gzi)
    else:
        options.update(indexname=str(scratch / (path.name + ".fai")),
                       gzi_indexname=str(scratch / (path.name + ".gzi")))
    try:
        return pyfaidx.Faidx(str(path), **options)
    except ImportError:                          # pyfaidx reads bgzip through Biopython, imported here
        raise ProjectError(f"{path}: a compressed FASTA must be bgzip-compressed and needs Biopython "
                           "(pip install biopython); or decompress it first (gunzip -k)") from None
    except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, ValueError, OSError,
            UnicodeDecodeError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise ProjectError(f"{path}: not a readable FASTA file ({type(exc).__name__}: {message})") from None


def _encode(text: str, fasta: Path, contig: str, offset: int) -> tuple[np.ndarray, int]:
    """Base ids of one slice and its count of soft-masked bases; an unknown letter is an error."""
    raw = np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)
    ids = BYTE_IDS[raw]
    bad = np.flatnonzero(ids == 0)
    if bad.size:
        at = int(bad[0])
        raise ProjectError(f"{fasta}: contig {contig!r} position {offset + at + 1:,} holds {chr(raw[at])!r}, "
                           f"which is not a nucleotide code ({''.join(BASES)}, upper or lower case)")
    return ids, int(np.count_nonzero(BYTE_LOWER[raw]))


def convert_fasta(fasta: str | os.PathLike, out: str | os.PathLike, *, format: str = "auto",
                  chunk: int = 1 << 22, progress: bool = True, overwrite: bool = False,
                  slice_bases: int = SLICE_BASES, name: str | None = None) -> Path:
    """Write a genome project for ``fasta`` into folder ``out``; returns ``out``. The soft-masked count
    and the contigs skipped for being empty are recorded in lstm.yml's ``genome`` section."""
    from tqdm import tqdm

    fasta, out = Path(fasta), Path(out)
    if format not in FORMATS:
        raise ProjectError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    if chunk < 1 or slice_bases < 1:
        raise ProjectError(f"--chunk {chunk}: must be >= 1")
    if not fasta.is_file():
        raise ProjectError(f"{fasta}: FASTA file missing")
    occupied = (out.is_dir() and any(out.iterdir())) or out.is_file()
    if occupied and not overwrite:
        raise ProjectError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    if out.resolve() == fasta.resolve().parent or out.resolve() in fasta.resolve().parents:
        raise ProjectError(f"{out}: the output must not be a folder holding the FASTA {fasta}")
    partial = out.parent / (out.name + ".partial")
    remove_path(partial)
    try:
        partial.mkdir(parents=True)
    except OSError as exc:
        raise ProjectError(f"{partial}: cannot create the output folder ({exc.strerror})") from None
    scratch = partial / ".index"
    scratch.mkdir()
    try:
        index = _open_index(fasta, scratch)
        contigs = [(n, int(index.index[n].rlen)) for n in index.index]
        kept = [(n, length) for n, length in contigs if length > 0]
        if not kept:
            raise ProjectError(f"{fasta}: no contig holds any bases")
        genome = Genome([n for n, _ in kept], [length for _, length in kept])
        T = genome.T
        fmt = ("zarr" if T >= ZARR_FROM else "h5") if format == "auto" else format
        file_name = GENOME_FILE + suffix_of(fmt)
        store = ArrayFile(partial / file_name, fmt)
        soft = 0
        try:
            words = store.create("words", (T,), np.uint8, chunk, compress=True)
            store.create("seq_starts", (len(genome),), np.int64, max(1, len(genome)), data=genome.starts)
            writer = _ChunkedOut(words, words.chunks[0])
            bar = tqdm(total=T, desc="convert-fasta", unit="b", unit_scale=True, file=sys.stderr,
                       disable=not progress or None)
            for contig, length in kept:
                for lo in range(0, length, slice_bases):
                    hi = min(length, lo + slice_bases)
                    ids, masked = _encode(_fetch(index, fasta, contig, lo, hi), fasta, contig, lo)
                    if ids.size != hi - lo:
                        raise ProjectError(f"{fasta}: contig {contig!r} gave {ids.size} bases for "
                                           f"positions {lo + 1}..{hi}; is the .fai index stale?")
                    writer.append(ids)
                    soft += masked
                    bar.update(ids.size)
            writer.flush()
            bar.close()
        finally:
            store.close()
            index.close()
        shutil.rmtree(scratch, ignore_errors=True)
        genome.write(partial / CHROM_SIZES)
        write_dictionary(partial / BASES_DICT, dict(enumerate(BASES, 1)))
        section = {"chrom_sizes": "chrom_sizes", "fasta": fasta.name, "soft_masked": soft}
        if len(kept) < len(contigs):
            section["skipped_empty"] = [n for n, length in contigs if length == 0]
        write_config(partial, {
            "name": name or fasta.name.split(".")[0],
            "description": f"{fasta.name}: {T:,} bases in {len(genome)} contigs",
            "files": {GENOME_FILE: file_name, "bases": BASES_DICT, "chrom_sizes": CHROM_SIZES},
            "word_sequence": {"file": GENOME_FILE, "path": "words", "dict_file": "bases"},
            "sequences": {"file": GENOME_FILE, "path": "seq_starts"},
            "genome": section,
        })
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    remove_path(out)
    os.replace(partial, out)
    return out


def _fetch(index, fasta: Path, contig: str, lo: int, hi: int) -> str:
    try:
        return str(index.fetch(contig, lo + 1, hi))
    except Exception as exc:  # pyfaidx raises several types for a malformed file (line lengths, ...)
        message = " ".join(str(exc).split())[:200]
        raise ProjectError(f"{fasta}: contig {contig!r} positions {lo + 1}..{hi} unreadable "
                           f"({type(exc).__name__}: {message})") from None


def genome_section_summary(folder: str | os.PathLike) -> dict:
    """The ``genome`` section of a converted project's lstm.yml (what ``convert-fasta`` reports)."""
    from gpu_matcher.formats import load_config

    return dict(load_config(Path(folder) / CONFIG_NAME).get("genome") or {})
