"""Genomic coordinates over the timeline: contig i covers global steps ``[starts[i], starts[i] + lengths[i])``.

Shown as genome browsers show them: 1-based positions with thousands separators (``chr2:1,234,567``);
a range ``chr2:1,001-1,100`` is 1-based and inclusive at both ends (steps ``[off + 1000, off + 1100)``).
``parse`` accepts those, a bare contig name (the whole contig) and plain step numbers (0-based global
steps, ``"1234"`` or ``"1234-1300"``, inclusive, as the app's brushed ranges are).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from gpu_matcher.errors import ProjectError

#: Contig names shown in an error about an unknown one.
SHOWN_NAMES = 5
#: A number or an inclusive range of numbers, with optional thousands separators.
_NUMBERS = re.compile(r"^\s*(\d[\d,_]*)\s*(?:-\s*(\d[\d,_]*)\s*)?$")


def _number(text: str) -> int:
    return int(text.replace(",", "").replace("_", ""))


@dataclass(frozen=True)
class Piece:
    """The part of a global range ``[start, stop)`` that lies in one contig."""

    index: int            # contig index
    name: str
    begin: int            # 0-based offset in the contig (inclusive)
    end: int              # 0-based offset in the contig (exclusive)
    start: int            # the global step of ``begin``


@dataclass(frozen=True, eq=False)
class Genome:
    """Contig names and lengths in timeline order (a genome project's ``genome.chrom.sizes``)."""

    names: tuple[str, ...]
    lengths: np.ndarray
    starts: np.ndarray = field(init=False, repr=False)
    _index: dict = field(init=False, repr=False)

    def __init__(self, names: Sequence[str], lengths: Sequence[int]):
        names = tuple(str(n) for n in names)
        lengths = np.asarray(lengths, dtype=np.int64).ravel()
        if len(names) != lengths.size or not names:
            raise ProjectError(f"genome: {len(names)} contig names but {lengths.size} lengths "
                               "(at least one contig needed)")
        if np.any(lengths <= 0):
            bad = names[int(np.flatnonzero(lengths <= 0)[0])]
            raise ProjectError(f"genome: contig {bad!r} has length <= 0")
        index = {}
        for i, name in enumerate(names):
            if name in index:
                raise ProjectError(f"genome: contig {name!r} appears twice")
            index[name] = i
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "starts", np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))
        object.__setattr__(self, "_index", index)

    @classmethod
    def of(cls, project) -> "Genome | None":
        """The genome of a project (read and checked by the loader from its ``genome`` section), or None."""
        return getattr(project, "genome", None)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Genome":
        """Read a UCSC ``chrom.sizes`` file (``name<TAB>length`` per line; blank and ``#`` lines skipped)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ProjectError(f"{path}: cannot read chrom sizes ({exc.strerror})") from None
        names, lengths = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise ProjectError(f"{path}:{lineno}: expected 'name<TAB>length', got {line[:40]!r}")
            try:
                length = int(parts[1])
            except ValueError:
                raise ProjectError(f"{path}:{lineno}: length {parts[1][:20]!r} is not an integer") from None
            names.append(parts[0])
            lengths.append(length)
        if not names:
            raise ProjectError(f"{path}: no contigs")
        try:
            return cls(names, lengths)
        except ProjectError as exc:
            raise ProjectError(f"{path}: {exc}") from None

    def write(self, path: str | os.PathLike) -> None:
        Path(path).write_text("".join(f"{n}\t{int(l)}\n" for n, l in zip(self.names, self.lengths)),
                              encoding="utf-8")

    # --- lookups ------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str, where: str = "") -> int:
        """The index of contig ``name``; a ProjectError listing a few known names otherwise."""
        i = self._index.get(str(name))
        if i is None:
            raise ProjectError(f"{where or 'genome'}: unknown contig {name!r}; known: {self.shown_names()}")
        return i

    def shown_names(self) -> str:
        more = f", ... ({len(self.names)} contigs)" if len(self.names) > SHOWN_NAMES else ""
        return ", ".join(self.names[:SHOWN_NAMES]) + more

    def span(self, name: str) -> tuple[int, int]:
        """Global steps ``[start, stop)`` of contig ``name``."""
        i = self.index(name)
        return int(self.starts[i]), int(self.starts[i] + self.lengths[i])

    def contig_of(self, step: int) -> tuple[int, str, int]:
        """``(index, name, 0-based offset in the contig)`` of a global step."""
        step = int(step)
        if not 0 <= step < self.T:
            raise ProjectError(f"step {step} is outside the genome [0, {self.T})")
        i = int(np.searchsorted(self.starts, step, side="right")) - 1
        return i, self.names[i], step - int(self.starts[i])

    def pieces(self, start: int, stop: int) -> Iterator[Piece]:
        """The per-contig parts of global steps ``[start, stop)`` (clipped to the genome), in order."""
        start, stop = max(0, int(start)), min(self.T, int(stop))
        if stop <= start:
            return
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        while i < len(self.names) and self.starts[i] < stop:
            c0 = int(self.starts[i])
            a, b = max(start, c0), min(stop, c0 + int(self.lengths[i]))
            yield Piece(i, self.names[i], a - c0, b - c0, a)
            i += 1

    def to_global(self, names: Sequence[str] | np.ndarray, offsets: np.ndarray, where: str) -> np.ndarray:
        """Global steps of 0-based ``offsets`` in contigs ``names`` (vectorised; unknown names are an error
        listing a few of them)."""
        names = np.asarray(names, dtype=object).astype(str)
        uniq, inverse = np.unique(names, return_inverse=True)
        missing = [n for n in uniq if n not in self._index]
        if missing:
            shown = ", ".join(missing[:SHOWN_NAMES]) + (f", ... ({len(missing)} names)" if len(missing) >
                                                        SHOWN_NAMES else "")
            raise ProjectError(f"{where}: contig(s) not in the genome: {shown}; the genome has "
                               f"{self.shown_names()}")
        idx = np.array([self._index[n] for n in uniq], dtype=np.int64)[inverse]
        return self.starts[idx] + np.asarray(offsets, dtype=np.int64)

    # --- text ---------------------------------------------------------------------------------
    def format(self, step: int) -> str:
        """``"chr2:1,234,567"``: the contig and the 1-based position of a global step."""
        _, name, offset = self.contig_of(step)
        return f"{name}:{offset + 1:,}"

    def format_range(self, start: int, stop: int) -> str:
        """Global steps ``[start, stop)`` as ``"chr2:1,001-1,100"`` (1-based, inclusive); a range over two
        contigs as ``"chr1:9,901-chr2:100"``."""
        first = self.contig_of(start)
        last = self.contig_of(max(start, stop - 1))
        if first[0] == last[0]:
            return f"{first[1]}:{first[2] + 1:,}-{last[2] + 1:,}"
        return f"{self.format(start)}-{self.format(max(start, stop - 1))}"

    def parse(self, text: str) -> tuple[int, int]:
        """Global steps ``[start, stop)`` of ``"chr2:1,234,567"`` (one base), ``"chr2:1234567-1234600"``
        (1-based, inclusive), ``"chr2"`` (the whole contig), ``"1234"`` or ``"1234-1300"`` (0-based global
        steps, inclusive). A ProjectError naming the text otherwise."""
        raw = str(text)
        clean = raw.strip()
        if clean in self._index:
            return self.span(clean)
        plain = _NUMBERS.match(clean)
        if plain:
            a = _number(plain.group(1))
            b = _number(plain.group(2)) if plain.group(2) else a
            if not a <= b < self.T:
                raise ProjectError(f"{raw!r}: steps {a}..{b} are not an ordered range inside the genome "
                                   f"[0, {self.T - 1}]")
            return a, b + 1
        name, sep, where = clean.rpartition(":")
        if not sep or not name:
            raise ProjectError(f"{raw!r}: not a coordinate; expected chr2:1,234,567, chr2:1234567-1234600, "
                               f"a contig name or a step number")
        i = self._index.get(name)
        if i is None:
            raise ProjectError(f"{raw!r}: unknown contig {name!r}; known: {self.shown_names()}")
        found = _NUMBERS.match(where)
        if not found:
            raise ProjectError(f"{raw!r}: position {where!r} is not a number or a range such as 1,001-1,100")
        a = _number(found.group(1))
        b = _number(found.group(2)) if found.group(2) else a
        length = int(self.lengths[i])
        if a < 1 or b < a:
            raise ProjectError(f"{raw!r}: positions are 1-based and ordered (got {a}..{b})")
        if b > length:
            raise ProjectError(f"{raw!r}: position {b:,} is past the end of {name} (length {length:,})")
        offset = int(self.starts[i])
        return offset + a - 1, offset + b
