"""The genomic demo (``lstmvis demo --genome``): the paper's section 6.3 case at a small scale.

A synthetic genome (``gpu_matcher.demo.genome``, seed :data:`GENOME_SEED`, which the model never saw
in training) is written as FASTA and BED, brought in the way a user's genome is (``convert_fasta``,
``add_bed``: the ground truth as interval tracks ``ctcf``, ``gata``, ``tata``), and the committed
DanQ-like model (``gpu_matcher.demo.danq``) is run over it in NumPy in sliding windows of
:data:`gpu_matcher.demo.danq.WINDOW` bases every :data:`gpu_matcher.demo.danq.STRIDE`, the centre of
each window kept (``gpu_matcher.extract.dna``). Sources: the BiLSTM's cell and hidden states (64
cells: 0-31 the forward direction, 32-63 the backward one) and the convolution's ReLU outputs (32
filters, ``transform: none``); the per-base predictions are scalar tracks ``pred_<protein>`` in [0, 1]
beside the ground truth. The FASTA and BED files are kept in the project's ``inputs/`` folder.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from gpu_matcher.demo import danq
from gpu_matcher.demo.genome import synthesize, write_genome
from gpu_matcher.demo.model import one_blas_thread
from gpu_matcher.extract.dna import read_timeline
from gpu_matcher.io.attach import StatesAppender

#: Bump when the generated project changes for the same weights (layout, tracks, genome).
VERSION = 1
GENOME_SEED = 2016
PROJECT_NAME = "genome"
#: (dataset, type, layer, transform) of each source, the default first.
SOURCES = (("cell_layer1", "state", 1, "tanh"), ("hidden_layer1", "output", 1, "none"),
           ("conv1", "conv", 1, "none"))
load_model = danq.load_model


def stamp(model: danq.DanQModel) -> dict:
    return {"version": VERSION, "weights_sha1": model.digest, "seed": GENOME_SEED, "window": danq.WINDOW,
            "stride": danq.STRIDE}


def generate(folder: str | os.PathLike, *, model: danq.DanQModel | None = None,
             seed: int = GENOME_SEED) -> dict:
    """Write the genomic demo project into ``folder`` (which must not exist or be empty)."""
    from gpu_matcher.genome.fasta import convert_fasta
    from gpu_matcher.genome.tracks import add_bed

    t0 = time.perf_counter()
    model = model or load_model()
    folder = Path(folder)
    inputs = folder.parent / f".{folder.name}.inputs-{os.getpid()}"
    shutil.rmtree(inputs, ignore_errors=True)
    try:
        genome = synthesize(seed)
        fasta, beds = write_genome(genome, inputs)
        convert_fasta(fasta, folder, format="h5", progress=False, name=PROJECT_NAME)
        for protein, bed in beds.items():
            add_bed(folder, protein, bed)
        with one_blas_thread():
            T = write_states(folder, model)
        shutil.move(str(inputs), str(folder / "inputs"))
    finally:
        shutil.rmtree(inputs, ignore_errors=True)
    return {"folder": str(folder), "steps": T, "sites": len(genome.sites),
            "seconds": round(time.perf_counter() - t0, 2)}


def write_states(folder: Path, model: danq.DanQModel) -> int:
    """The model's states and predictions over the genome project in ``folder``; returns T."""
    timeline = read_timeline(folder)
    with StatesAppender(folder, T=timeline.T, dtype="float16") as out:
        for path, kind, layer, transform in SOURCES:
            out.add_source(path, type=kind, layer=layer, transform=transform)
        for protein in model.proteins:
            out.add_track(f"pred_{protein}", value_range=(0.0, 1.0))
        for part in danq.forward_windows(model, timeline.ids, timeline.table, timeline.bounds,
                                         window=danq.WINDOW, stride=danq.STRIDE):
            out.append({"cell_layer1": part["cell"], "hidden_layer1": part["hidden"], "conv1": part["conv"]},
                       {f"pred_{p}": part["prob"][:, j] for j, p in enumerate(model.proteins)})
    return timeline.T
