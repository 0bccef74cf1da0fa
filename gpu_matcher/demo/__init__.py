"""The bundled demo: the paper's counting-language LSTM (section 6.1), regenerated from committed weights.

``ensure_demo()`` returns a data folder holding the project ``parens/``; it is generated with the NumPy
forward pass (no PyTorch) the first time, and again whenever the weights or the generator change.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from gpu_matcher.demo import language
from gpu_matcher.demo.model import DemoModel, forward, load_model, one_blas_thread
from gpu_matcher.errors import ProjectError

#: Bump when the generated project changes for the same weights (layout, tracks, corpus).
DEMO_VERSION = 1
DEMO_SEED = 2016                              # the corpus; the model was trained on other samples
DEMO_STEPS = 40_000
PROJECT_NAME = "parens"
STAMP_NAME = "demo.json"
#: The sources, in the order the app lists them (the first is the default).
SOURCES = (("cell_layer1", "state", 1, "tanh"), ("hidden_layer1", "output", 1, "none"),
           ("cell_layer2", "state", 2, "tanh"), ("hidden_layer2", "output", 2, "none"))

__all__ = ["ensure_demo", "ensure_genome_demo", "generate_demo", "default_demo_dir", "DEMO_STEPS",
           "PROJECT_NAME"]


def default_demo_dir() -> Path:
    """``$LSTMVIS_CACHE_DIR/demo``, else ``~/.cache/lstmvis/demo`` (never inside the package)."""
    from gpu_matcher.source import default_cache_dir

    return default_cache_dir() / "demo"


def _stamp(model: DemoModel, steps: int) -> dict:
    return {"version": DEMO_VERSION, "weights_sha1": model.digest, "seed": DEMO_SEED, "steps": steps}


def ensure_demo(out: str | os.PathLike | None = None, *, force: bool = False,
                steps: int = DEMO_STEPS) -> Path:
    """The data folder holding the demo project ``parens/``, generated if missing or stale."""
    model = load_model()
    return _ensure(out, PROJECT_NAME, _stamp(model, steps), force,
                   lambda folder: generate_demo(folder, model=model, steps=steps))


def ensure_genome_demo(out: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """The data folder holding the genomic demo project ``genome/``, generated if missing or stale
    (``gpu_matcher.demo.genome_demo``; needs the ``genomics`` extra, not PyTorch)."""
    from gpu_matcher.demo import genome_demo

    model = genome_demo.load_model()
    return _ensure(out, genome_demo.PROJECT_NAME, genome_demo.stamp(model), force,
                   lambda folder: genome_demo.generate(folder, model=model))


def _ensure(out, project_name: str, stamp: dict, force: bool, generate) -> Path:
    """``out`` (or the default demo folder) holding ``project_name`` made by ``generate(folder)``,
    regenerated unless its stamp equals ``stamp``."""
    data_dir = Path(out) if out is not None else default_demo_dir()
    project_dir = data_dir / project_name
    if not force and _is_current(project_dir, stamp):
        return data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(f"{data_dir}: cannot create the demo folder ({exc.strerror}); "
                           "pass --out or set LSTMVIS_CACHE_DIR") from None
    # Build beside the target and swap it in, so a reader never sees half a project.
    tmp = data_dir / f".{project_name}.tmp-{os.getpid()}"
    old = data_dir / f".{project_name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate(tmp)
        (tmp / STAMP_NAME).write_text(json.dumps(stamp))
        if project_dir.exists():
            os.replace(project_dir, old)
        os.replace(tmp, project_dir)
    except OSError as exc:
        # Another process (a second server, say) may have swapped in the same demo meanwhile.
        if not _is_current(project_dir, stamp):
            raise ProjectError(f"{project_dir}: cannot write the demo project ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return data_dir


def _is_current(project_dir: Path, stamp: dict) -> bool:
    try:
        return (project_dir / "lstm.yml").is_file() and \
            json.loads((project_dir / STAMP_NAME).read_text()) == stamp
    except (OSError, ValueError):
        return False                              # no or broken stamp: regenerate


def generate_demo(folder: str | os.PathLike, *, model: DemoModel | None = None,
                  steps: int = DEMO_STEPS, seed: int = DEMO_SEED) -> dict:
    """Write the demo project into ``folder``: a corpus of the counting language, the LSTM's cell and
    hidden states of both layers (float16), the tokens, the true ``depth`` and the top-5 predictions."""
    t0 = time.perf_counter()
    model = model or load_model()
    with one_blas_thread():
        stats = _write_demo(folder, model, steps, seed)
    return stats | {"seconds": round(time.perf_counter() - t0, 2)}


def _write_demo(folder, model: DemoModel, steps: int, seed: int) -> dict:
    from gpu_matcher.io.predictions import topk_from_logits
    from gpu_matcher.io.writer import ProjectWriter

    sentences = language.sample_corpus(np.random.default_rng(seed), steps)
    description = (f"{len(model.layers)}x{model.hidden} LSTM language model on the paper's counting "
                   "language: ( ) and digits equal to the nesting depth (LSTMVis, section 6.1)")
    with ProjectWriter(folder, name=PROJECT_NAME, description=description,
                       dictionary=list(language.TOKENS), dtype="float16", overwrite=True) as writer:
        for path, kind, layer, transform in SOURCES:
            writer.add_source(path, type=kind, layer=layer, transform=transform)
        writer.add_meta("depth", kind="discrete", labels=[str(d) for d in range(language.MAX_DEPTH + 1)])
        writer.add_meta("top5", kind="wordvec")
        block = 256                                # sentences per write: about 14,000 steps
        for lo in range(0, len(sentences), block):
            group = sentences[lo:lo + block]
            states = forward(model, group)
            ids = np.concatenate(group)
            top_ids, top_probs = topk_from_logits(states.pop("logits"), k=5)
            starts = np.concatenate([[0], np.cumsum([len(s) for s in group])[:-1]])
            writer.append(states={path: states[path.replace("_layer", "")] for path, *_ in SOURCES},
                          tokens=ids, starts=starts,
                          meta={"depth": language.depths_of_sentences(group),
                                "top5": (top_ids, top_probs)})
        T = writer.T
    return {"folder": str(folder), "steps": T, "sentences": len(sentences)}
