"""ProjectWriter / write_project: what they write opens with open_project and answers queries."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from gpu_matcher import Engine, ProjectError, open_project
from gpu_matcher.io import ProjectWriter, write_project
from gpu_matcher.io.writer import JOURNAL_NAME


def _arrays(T=50, D=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "cells": rng.normal(size=(T, D)).astype(np.float32),
        "hidden": np.tanh(rng.normal(size=(T, 4))).astype(np.float32),
        "tokens": [["a", "b", "c", " "][i] for i in rng.integers(0, 4, T)],
        "pos": rng.integers(0, 3, T),
        "score": rng.random(T).astype(np.float32),
        "top_ids": rng.integers(4, 7, (T, 3)),
        "top_w": rng.random((T, 3)).astype(np.float32),
        "starts": np.array([0, 7, 20, 33]),
    }


def test_write_project_round_trip(tmp_path):
    a = _arrays()
    folder = write_project(
        tmp_path / "p", {"cells": a["cells"], "hidden": a["hidden"]}, tokens=a["tokens"],
        meta={"pos": a["pos"], "score": a["score"], "top3": (a["top_ids"], a["top_w"])},
        meta_labels={"pos": ["NOUN", "VERB", "ADJ"]}, sequence_starts=a["starts"],
        sources={"hidden": {"type": "output", "layer": 1, "transform": "none"}},
        name="toy", description="a toy")
    p = open_project(folder)
    assert (p.name, p.description, p.T) == ("toy", "a toy", 50)
    assert list(p.sources) == ["states::cells", "states::hidden"]
    assert p.sources["states::hidden"].transform == "none"
    assert p.sources["states::cells"].transform == "tanh"
    np.testing.assert_array_equal(p.sources["states::cells"].raw(0, 50), a["cells"])
    assert p.tokens(0, 50) == a["tokens"]                       # including the single-space token
    assert p.dictionary[1] == "<s>" and p.dictionary[2] == "<unk>" and p.dictionary[3] == "</s>"
    np.testing.assert_array_equal(p.sequence_starts, a["starts"])
    assert p.meta["pos"].kind == "discrete"
    assert [p.meta["pos"].label(v) for v in p.meta["pos"].values(0, 4)] == \
        [["NOUN", "VERB", "ADJ"][i] for i in a["pos"][:4]]
    assert p.meta["score"].kind == "scalar"
    lo, hi = p.meta["score"].value_range
    assert lo == pytest.approx(a["score"].min()) and hi == pytest.approx(a["score"].max())
    assert p.meta["top3"].kind == "wordvec"
    np.testing.assert_array_equal(p.meta["top3"].values(0, 50), a["top_ids"])
    np.testing.assert_allclose(p.meta["top3"].weights_for(0, 50), a["top_w"])
    assert p.meta["top3"].label(a["top_ids"][0, 0]) == p.dictionary[int(a["top_ids"][0, 0])]
    p.close()


def test_written_project_answers_select_and_match(tmp_path):
    """A planted pattern: cells 0 and 1 are on at steps 10-12 and 30-32 only."""
    X = np.full((60, 5), -2.0, dtype=np.float32)
    X[10:13, :2] = X[30:33, :2] = 2.0
    X[30:33, 4] = 2.0                                          # one extra cell at the second place
    folder = write_project(tmp_path / "p", {"s": X}, tokens=[f"w{i % 7}" for i in range(60)])
    p = open_project(folder)
    engine = Engine(p, backend="numpy")
    sel = engine.select("states::s", 10, 12, 0.5, 1, 1)
    assert sel.cells == [0, 1]
    ms = engine.match("states::s", sel.cells, 0.5, 1, 1, top=5)
    assert [(m.start, m.end, m.inter, m.union) for m in ms] == [(10, 12, 2, 2), (30, 32, 2, 3)]
    p.close()


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 49), max_size=6, unique=True))
def test_any_block_split_writes_the_same_project(tmp_path_factory, cuts):
    a = _arrays()
    bounds = [0] + sorted(cuts) + [50]
    folder = tmp_path_factory.mktemp("split")
    with ProjectWriter(folder, dtype="float16") as w:
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            s = a["starts"]
            w.append(states={"cells": a["cells"][lo:hi]}, tokens=a["tokens"][lo:hi],
                     meta={"pos": a["pos"][lo:hi], "top3": (a["top_ids"][lo:hi], a["top_w"][lo:hi])},
                     starts=s[(s >= lo) & (s < hi)] - lo)
    p = open_project(folder)
    np.testing.assert_array_equal(p.sources["states::cells"].raw(0, 50), a["cells"].astype(np.float16))
    assert p.tokens(0, 50) == a["tokens"]
    np.testing.assert_array_equal(p.meta["pos"].values(0, 50), a["pos"])
    np.testing.assert_array_equal(p.sequence_starts, a["starts"])
    p.close()


def test_datasets_are_chunked_resizable_and_float16_on_request(tmp_path):
    a = _arrays(T=3000, D=200)
    write_project(tmp_path / "p", {"cells": a["cells"]}, dtype="float16")
    with h5py.File(tmp_path / "p" / "states.h5") as f:
        ds = f["cells"]
        assert ds.dtype == np.float16 and ds.maxshape == (None, 200)
        assert ds.chunks is not None and ds.chunks[1] == 200 and ds.chunks[0] < 3000


def test_interrupted_run_resumes_to_the_same_project(tmp_path):
    a = _arrays()
    blocks = [(0, 15), (15, 30), (30, 42), (42, 50)]

    def write(folder, stop_after=None, resume=False):
        with ProjectWriter(folder, resume=resume, fingerprint={"corpus": "toy"}) as w:
            start = 0 if w.cursor is None else w.cursor
            for i, (lo, hi) in enumerate(blocks[start:], start):
                if stop_after is not None and i == stop_after:
                    raise KeyboardInterrupt
                s = a["starts"]
                w.append(states={"cells": a["cells"][lo:hi]}, tokens=a["tokens"][lo:hi],
                         meta={"score": a["score"][lo:hi]}, starts=s[(s >= lo) & (s < hi)] - lo,
                         cursor=i + 1)

    write(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "part", stop_after=2)
    assert not (tmp_path / "part" / "lstm.yml").exists()          # never served half-written
    # A block half written when the process died: rows past the journal are cut on resume.
    with h5py.File(tmp_path / "part" / "states.h5", "a") as f:
        f["cells"].resize(35, axis=0)
        f["cells"][30:35] = 99.0
    with pytest.raises(ProjectError, match="different inputs"):
        ProjectWriter(tmp_path / "part", resume=True, fingerprint={"corpus": "other"})
    write(tmp_path / "part", resume=True)
    whole, part = open_project(tmp_path / "whole"), open_project(tmp_path / "part")
    np.testing.assert_array_equal(whole.sources["states::cells"].raw(0, 50),
                                  part.sources["states::cells"].raw(0, 50))
    assert whole.T == part.T == 50 and whole.tokens(0, 50) == part.tokens(0, 50)
    np.testing.assert_array_equal(whole.sequence_starts, part.sequence_starts)
    np.testing.assert_array_equal(whole.meta["score"].values(0, 50), part.meta["score"].values(0, 50))
    assert yaml.safe_load((tmp_path / "whole" / "lstm.yml").read_text())["meta"] == \
        yaml.safe_load((tmp_path / "part" / "lstm.yml").read_text())["meta"]
    whole.close(), part.close()


def test_existing_project_is_kept_unless_overwrite(tmp_path):
    a = _arrays()
    write_project(tmp_path / "p", {"cells": a["cells"]})
    with pytest.raises(ProjectError, match=r"already holds a project .*overwrite"):
        write_project(tmp_path / "p", {"cells": a["cells"]})
    write_project(tmp_path / "p", {"other": a["hidden"]}, overwrite=True)
    p = open_project(tmp_path / "p")
    assert list(p.sources) == ["states::other"]
    p.close()
    (tmp_path / "p" / JOURNAL_NAME).unlink()
    with pytest.raises(ProjectError, match="cannot be resumed"):
        ProjectWriter(tmp_path / "p", resume=True)


@pytest.mark.parametrize("call, message", [
    (lambda w, a: w.append(states={"x": a["cells"], "y": a["hidden"][:10]}),
     r"states\['y'\] has 10 rows .* states\['x'\] has 50"),
    (lambda w, a: w.append(states={"x": a["cells"][:, 0]}), r"states\['x'\] has shape \(50,\); expected \(n, D\)"),
    (lambda w, a: w.append(states={"x": a["cells"]}, tokens=a["tokens"][:49]), "tokens has 49 entries"),
    (lambda w, a: w.append(states={"x": a["cells"]}, meta={"m": a["pos"][:3]}), r"meta\['m'\] has shape \(3,\)"),
    (lambda w, a: w.append(states={"x": a["cells"]}, starts=[5, 3]), "strictly increasing"),
    (lambda w, a: w.append(states={"x": a["cells"] * 1e6}), "beyond float16"),
    (lambda w, a: w.add_source("bad/name"), "source name 'bad/name'"),
    (lambda w, a: w.add_meta("m", kind="colour"), "kind 'colour'"),
])
def test_bad_input_names_the_key_and_value(tmp_path, call, message):
    with pytest.raises(ProjectError, match=message):
        with ProjectWriter(tmp_path / "p", dtype="float16") as w:
            call(w, _arrays())


def test_later_blocks_must_match_the_first(tmp_path):
    a = _arrays()
    with pytest.raises(ProjectError, match=r"every block needs exactly the declared sources \['x'\]"):
        with ProjectWriter(tmp_path / "p") as w:
            w.append(states={"x": a["cells"][:10]})
            w.append(states={"y": a["cells"][10:]})
    with pytest.raises(ProjectError, match="has 4 cells .* earlier blocks had 6"):
        with ProjectWriter(tmp_path / "q") as w:
            w.append(states={"x": a["cells"][:10]})
            w.append(states={"x": a["hidden"][10:]})


def test_token_ids_must_be_in_the_dictionary(tmp_path):
    with pytest.raises(ProjectError, match="token id 9 is not in the dictionary"):
        write_project(tmp_path / "p", {"x": np.zeros((3, 2))}, tokens=np.array([0, 1, 9]),
                      dictionary=["a", "b"])
    with pytest.raises(ProjectError, match="'zz' is not in the dictionary, which has no <unk>"):
        write_project(tmp_path / "q", {"x": np.zeros((3, 2))}, tokens=["a", "zz", "b"],
                      dictionary=["a", "b"])
    folder = write_project(tmp_path / "r", {"x": np.zeros((3, 2))}, tokens=["a", "zz", "b"],
                           dictionary={5: "a", 6: "b", 7: "<unk>"})
    p = open_project(folder)
    assert p.tokens(0, 3) == ["a", "<unk>", "b"]
    p.close()


def test_write_project_checks_lengths_up_front(tmp_path):
    with pytest.raises(ProjectError, match=r"meta\['m'\] has 4 steps but states\['x'\] has 3"):
        write_project(tmp_path / "p", {"x": np.zeros((3, 2))}, meta={"m": np.arange(4)})
