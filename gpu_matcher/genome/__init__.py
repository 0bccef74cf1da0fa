"""Genomes (issue 15; design and contract: ``docs/genomics.md``): FASTA in, BED/narrowPeak/bigWig tracks,
genomic coordinates, IUPAC motif search.

Nothing here imports the ``genomics`` extra (pyfaidx, pyBigWig, bioframe) at module level: a command that
needs one asks :func:`require`, which names the extra in a one-line error when it is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from gpu_matcher.errors import ProjectError

EXTRA_HINT = "pip install 'lstmvis-gpu[genomics]'"


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (pyfaidx, pyBigWig, bioframe) for ``what``; a one-line ProjectError if missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ProjectError(f"{what} needs the {module} package: {EXTRA_HINT}") from None
