"""Positions as the user reads and types them (issue 15, "genomic coordinates everywhere"): no Bokeh.

A genome project (a ``genome`` section in lstm.yml) shows and takes ``chr2:1,234,567`` through
``gpu_matcher.genome.coords.Genome`` (1-based, as genome browsers show it); every other project shows
step numbers and takes them, with or without thousands separators, and ``START-END`` ranges.
"""

from __future__ import annotations

import re

from gpu_matcher import ProjectError

_NUMBER = re.compile(r"^\s*(\d[\d,_]*)\s*(?:[-–]\s*(\d[\d,_]*))?\s*$")


def genome_of(project):
    """The project's ``Genome`` (None for other projects)."""
    return getattr(project, "genome", None)


class Locator:
    """Formats and parses positions of one project."""

    def __init__(self, project, genome=None):
        self.T = int(project.T)
        self.genome = genome

    @classmethod
    def of(cls, project) -> "Locator":
        return cls(project, genome_of(project))

    def where(self, step: int) -> str:
        """``chr2:1,234,567`` or ``step 1,234``."""
        if self.genome is not None:
            return self.genome.format(int(step))
        return f"step {int(step):,}"

    def tick(self, step: int) -> str:
        """An axis label: the 1-based position within its contig, or the step."""
        if self.genome is not None:
            return self.genome.format(int(step)).split(":", 1)[-1]
        return f"{int(step):,}"

    def span_text(self, start: int, stop: int) -> str:
        """``[start, stop)`` for a title: ``chr2:1,001-1,960`` or ``steps 1,000–1,959``."""
        if self.genome is not None:
            return self.genome.format_range(int(start), int(stop))
        return f"steps {int(start):,}–{max(int(start), int(stop) - 1):,}"

    def url_value(self, step: int) -> str:
        """``pos=`` in the URL: the coordinate in a genome project, else the step."""
        return self.genome.format(int(step)) if self.genome is not None else str(int(step))

    def parse(self, text: str) -> tuple[int, int]:
        """``[start, stop)`` global steps of a typed position: a coordinate, a contig name or a range of a
        genome project, else a step number or ``START-END``; ``ProjectError`` naming the text otherwise."""
        text = str(text or "").strip()
        shown = text if len(text) <= 60 else text[:60] + "…"
        if not text:
            raise ProjectError("type a position, e.g. 1234" + (" or chr1:1,234" if self.genome else ""))
        if self.genome is not None:               # coordinates, contigs, and plain 0-based steps
            return tuple(int(v) for v in self.genome.parse(text))
        plain = _NUMBER.match(text)
        if plain is None:
            raise ProjectError(f"{shown!r} is not a step number or START-END")
        start = int(plain.group(1).replace(",", "").replace("_", ""))
        stop = int(plain.group(2).replace(",", "").replace("_", "")) + 1 if plain.group(2) else start + 1
        if start >= self.T or stop <= start:
            raise ProjectError(f"{shown!r} is outside the timeline [0, {self.T - 1:,}]")
        return start, min(stop, self.T)

    def contig(self, step: int) -> tuple[int, int, str]:
        """``(start, stop, name)`` of the contig holding ``step``; the whole timeline without a genome."""
        if self.genome is not None:
            _, name, _ = self.genome.contig_of(int(step))
            start, stop = self.genome.span(name)
            return int(start), int(stop), str(name)
        return 0, self.T, "the timeline"
