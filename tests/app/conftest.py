"""Test projects for the app tests: ``benchmarks/synth.py`` states plus a second source and meta tracks.

``make_app_project`` writes a complete project with two sources (``states::states1`` tanh and
``states::states2`` transform none, ReLU-like, so the value range is not [-1, 1]) and the three kinds
of meta track: ``pos`` (discrete, with a dict), ``score`` (scalar) and ``topk`` (wordvec, K=3).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.synth import make_project  # noqa: E402

POS_LABELS = ["NOUN", "VERB", "ADJ", "DET", "ADV"]


def make_app_project(folder: Path, T: int, D: int, *, seed: int = 0, dtype: str = "float16",
                     tracks: bool = True, second_source: bool = True, mean_sequence: int = 300,
                     name: str | None = None, outlier: tuple[int, float] | None = None) -> Path:
    """``outlier=(cell, factor)`` multiplies one unit of ``states2`` by ``factor`` (a transformer's
    outlier dimension)."""
    folder = Path(folder)
    make_project(folder, T, D, dtype=dtype, seed=seed, mean_sequence=mean_sequence)
    rng = np.random.default_rng(seed + 1)
    types = ["    - {type: state, layer: 1, path: states1}"]
    if second_source:
        with h5py.File(folder / "states.h5", "a") as f:
            src = f["states1"]
            out = f.create_dataset("states2", shape=src.shape, dtype="float16")
            step = max(1, (8 << 20) // (D * 4))
            for a in range(0, T, step):
                block = np.asarray(src[a:a + step], dtype=np.float32)
                block = np.maximum(0.0, 1.7 * block)
                if outlier is not None:
                    block[:, outlier[0]] *= outlier[1]
                out[a:a + step] = block.astype(np.float16)
        types.append("    - {type: output, layer: 1, path: states2, transform: none}")
    meta = ""
    if tracks:
        words_ids = None
        with h5py.File(folder / "train.h5", "a") as f:
            words_ids = np.asarray(f["words"][()])
            f.create_dataset("pos", data=(words_ids % len(POS_LABELS)).astype(np.int32))
            f.create_dataset("score", data=rng.random(T).astype(np.float32) * 4 - 1)
            top = np.stack([words_ids, np.roll(words_ids, -1), (words_ids * 7) % 500 + 4], axis=1)
            logits = rng.normal(size=(T, 3)).astype(np.float32)
            weights = np.sort(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), axis=1)[:, ::-1]
            f.create_dataset("topk", data=top.astype(np.int32))
            f.create_dataset("topk_scores", data=np.ascontiguousarray(weights))
        (folder / "pos.dict").write_text("".join(f"{lab} {i}\n" for i, lab in enumerate(POS_LABELS)))
        meta = ("meta:\n"
                "  pos: {file: train, path: pos, dict: pos, vis: {type: discrete, range: dict}}\n"
                "  score: {file: train, path: score, vis: {type: scalar}}\n"
                "  topk: {file: train, path: topk, weights_path: topk_scores, dict: words, type: wordvec,"
                " vis: {type: wordvec}}\n")
    files = "files: {states: states.h5, train: train.h5, words: words.dict" + \
            (", pos: pos.dict}" if tracks else "}")
    (folder / "lstm.yml").write_text(
        f"name: {name or folder.name}\n"
        f"description: app test project T={T} D={D}\n"
        f"{files}\n"
        "word_sequence: {file: train, path: words, dict_file: words}\n"
        "sequences: {file: train, path: seq_starts}\n"
        "states:\n  file: states\n  types:\n" + "\n".join(types) + "\n" + meta)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _layout_cache(tmp_path_factory):
    """The engine's layout cache goes to a temporary folder, never the user's."""
    old = os.environ.get("LSTMVIS_CACHE_DIR")
    os.environ["LSTMVIS_CACHE_DIR"] = str(tmp_path_factory.mktemp("layout-cache"))
    yield
    if old is None:
        os.environ.pop("LSTMVIS_CACHE_DIR", None)
    else:
        os.environ["LSTMVIS_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def app_data(tmp_path_factory) -> Path:
    """A data folder with two projects: ``small`` (T=3000, D=48) and ``nested/wide`` (T=4000, D=160)."""
    root = tmp_path_factory.mktemp("app-data")
    make_app_project(root / "small", 3000, 48, seed=1, name="small test project")
    make_app_project(root / "nested" / "wide", 4000, 160, seed=2, tracks=False, name="wide test project")
    return root


@pytest.fixture(scope="session")
def test_output() -> Path:
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    return out


@contextlib.contextmanager
def running_server(data_dir: Path, start_timeout: float = 60):
    """The ``lstmvis serve`` server for ``data_dir`` in a thread with its own event loop (NumPy backend,
    a free port); yields the started server and stops it afterwards."""
    import asyncio
    import threading

    from bokeh_app.server import make_server

    ready = threading.Event()
    box: dict = {}

    def run():
        asyncio.set_event_loop(asyncio.new_event_loop())
        from tornado.ioloop import IOLoop
        srv = make_server(data_dir, port=0, backend="numpy", io_loop=IOLoop.current())
        srv.start()
        box["server"] = srv
        ready.set()
        srv.io_loop.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(start_timeout), "the server did not start"
    srv = box["server"]
    try:
        yield srv
    finally:
        srv.io_loop.add_callback(srv.stop)
        srv.io_loop.add_callback(srv.io_loop.stop)
        thread.join(10)
