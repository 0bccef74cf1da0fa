"""Loading LSTMVis projects: every key of DATA_FORMAT.md, and one-line errors for bad projects."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from gpu_matcher import Engine, ProjectError, discover_projects, open_project
from gpu_matcher.project import read_dictionary

FULL_YML = """\
name: parens
description: 2x4 LSTM on a counting language
files:
  states: states.h5
  states_u: other.h5
  train: train.h5
  words: words.dict
  pos_dict: pos.dict
  preds: preds.h5
word_sequence: {file: train, path: words, dict_file: words}
states:
  file: states
  types: [
    {type: state, layer: 1, path: states1},
    {file: states_u, type: state, layer: 2, path: states2, unsigned: true},
    {type: output, layer: 1, path: output1, transform: none},
  ]
meta:
  pos:
    file: train
    path: pos
    dict: pos_dict
    vis: {type: discrete, range: dict}
  depth:
    file: train
    path: depth
    vis: {type: scalar, range: "0...4"}
  topk:
    file: preds
    path: indices
    weights_path: scores
    dict: words
    type: wordvec
    vis: {type: wordvec}
  cluster:
    file: train
    path: cluster_table
    index: cluster_index
    vis: {type: scalar, range: [0, 10]}
cluster_index: {file: train, path: cluster_rows}
sequences: {file: train, path: seq_starts}
etc:
  regex_search: false
"""

T, D = 30, 4


def write_full_project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(folder / "states.h5", "w") as f:
        f["states1"] = rng.normal(size=(T, D)).astype("float32")
        f["output1"] = rng.normal(size=(T, D)).astype("float64")
    with h5py.File(folder / "other.h5", "w") as f:
        f["states2"] = np.abs(rng.normal(size=(T, 2 * D))).astype("float16")
    with h5py.File(folder / "train.h5", "w") as f:
        f["words"] = (np.arange(T) % 5 + 1).astype("int32")
        f["pos"] = (np.arange(T) % 3).astype("int16")
        f["depth"] = (np.arange(T) % 5).astype("float32")
        f["cluster_table"] = np.array([1.5, 2.5, 3.5])
        f["cluster_rows"] = (np.arange(T) % 3)[::-1].astype("int64")
        f["seq_starts"] = np.array([0, 10, 22], dtype="int64")
    with h5py.File(folder / "preds.h5", "w") as f:
        f["indices"] = rng.integers(1, 6, size=(T, 3)).astype("int32")
        f["scores"] = rng.random((T, 3)).astype("float32")
    (folder / "words.dict").write_text("<s> 1\n<unk> 2\n</s> 3\n 4\nthe 5\n")
    (folder / "pos.dict").write_text("NOUN 0\nVERB 1\nADJ 2\n")
    (folder / "lstm.yml").write_text(FULL_YML)
    return folder


def test_every_documented_key_loads(tmp_path):
    p = open_project(write_full_project(tmp_path / "a" / "parens"))
    assert (p.name, p.description, p.T) == ("parens", "2x4 LSTM on a counting language", T)
    assert list(p.sources) == ["states::states1", "states_u::states2", "states::output1"]
    assert p.source("states_u::states2").shape == (T, 2 * D)
    assert p.source("states_u::states2").unsigned
    assert p.source("states::output1").transform == "none"
    assert p.source("states::states1").transform == "tanh"
    assert p.tokens(2, 5) == ["</s>", " ", "the"]                      # leading-space token
    assert {n: m.kind for n, m in p.meta.items()} == {
        "pos": "discrete", "depth": "scalar", "topk": "wordvec", "cluster": "scalar"}
    assert [p.meta["pos"].label(v) for v in p.meta["pos"].values(0, 3)] == ["NOUN", "VERB", "ADJ"]
    assert p.meta["depth"].value_range == (0.0, 4.0)
    assert p.meta["topk"].values(0, 4).shape == (4, 3)
    assert p.meta["topk"].weights_for(0, 4).shape == (4, 3)
    # `index`: per step, the row of the meta array to use.
    rows = (np.arange(T) % 3)[::-1]
    assert np.array_equal(p.meta["cluster"].values(5, 9), np.array([1.5, 2.5, 3.5])[rows[5:9]])
    assert list(p.sequence_bounds()) == [0, 10, 22, T]
    assert p.sequence_of(12) == (10, 22)
    assert p.sequence_of(12, use_sequences=False) == (0, T)


def test_values_follow_the_transform(tmp_path):
    p = open_project(write_full_project(tmp_path / "p"))
    with h5py.File(tmp_path / "p" / "states.h5") as f:
        raw1, raw_out = f["states1"][3:7], f["output1"][3:7]
    np.testing.assert_allclose(p.source("states::states1").values(3, 7), np.tanh(raw1), rtol=1e-6)
    np.testing.assert_array_equal(p.source("states::output1").values(3, 7), raw_out.astype("float32"))
    lo, hi = p.source("states::output1").value_range()
    assert lo < 0 < hi and (lo, hi) != (-1.0, 1.0)


def test_original_lstmvis_folder_without_new_keys(tmp_path):
    """A folder made for the original (no sequences, no description, no meta) loads unchanged."""
    folder = tmp_path / "old"
    folder.mkdir()
    with h5py.File(folder / "states.h5", "w") as f:
        f["states1"] = np.zeros((8, 3), dtype="float32")
    with h5py.File(folder / "train.h5", "w") as f:
        f["words"] = np.ones(8, dtype="int32")
    (folder / "words.dict").write_text("a 1\n")
    (folder / "lstm.yml").write_text(
        "name: old\nfiles: {states: states.h5, train: train.h5, words: words.dict}\n"
        "word_sequence: {file: train, path: words, dict_file: words}\n"
        "states:\n  file: states\n  types: [{type: state, layer: 1, path: states1}]\n"
        "etc: {regex_search: false}\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    p = open_project(folder)
    assert p.description == "old" and p.sequence_starts is None and p.tokens(0, 2) == ["a", "a"]
    Engine(p, backend="numpy").match("states::states1", [0], 0.5)
    assert {q.name: q.read_bytes() for q in folder.iterdir()} == before, "the project was modified"


def test_discovery_is_recursive_and_ids_are_relative_paths(tmp_path):
    write_full_project(tmp_path / "a" / "parens")
    write_full_project(tmp_path / "b" / "parens")                  # same folder name, other id
    (tmp_path / "b" / "parens" / "nested").mkdir()
    found = discover_projects(tmp_path)
    assert sorted(found) == ["a/parens", "b/parens"]
    assert discover_projects(tmp_path / "a" / "parens") == {"parens": tmp_path / "a" / "parens"}


def _broken(tmp_path, edit) -> Path:
    folder = write_full_project(tmp_path / "bad")
    edit(folder)
    return folder


def _replace_yml(old, new):
    def edit(folder):
        text = (folder / "lstm.yml").read_text()
        assert old in text
        (folder / "lstm.yml").write_text(text.replace(old, new))
    return edit


@pytest.mark.parametrize("edit,fragments", [
    (lambda f: os.remove(f / "other.h5"), ["other.h5", "file missing", "states_u"]),
    (lambda f: (f / "lstm.yml").write_text("name: [unclosed\n"), ["lstm.yml", "unreadable YAML", "line"]),
    (_replace_yml("path: states1}", "path: nothere}"), ["states.h5", "'nothere'", "missing"]),
    (_replace_yml("  file: states\n  types", "  types"), ["states.types[0]", "no 'file'"]),
    (_replace_yml("file: states_u,", "file: nokey,"), ["'nokey'", "not under 'files'"]),
    (_replace_yml("word_sequence: {file: train, path: words", "word_sequence: {file: train"),
     ["word_sequence.path", "missing"]),
    (lambda f: (f / "words.dict").write_text("the five\n"), ["words.dict:1", "'five'"]),
    (lambda f: (f / "pos.dict").write_text("NOUN\n"), ["pos.dict:1", "token id"]),
    (_replace_yml("transform: none", "transform: sigmoid"), ["states.types[2].transform", "'sigmoid'"]),
    (_replace_yml("type: wordvec\n    vis: {type: wordvec}", "vis: {type: pie}"), ["meta.topk", "'pie'"]),
])
def test_bad_projects_raise_one_line_errors(tmp_path, edit, fragments):
    folder = _broken(tmp_path, edit)
    with pytest.raises(ProjectError) as err:
        open_project(folder)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_shapes_that_disagree_name_file_dataset_and_shapes(tmp_path):
    def edit(folder):
        with h5py.File(folder / "train.h5", "a") as f:
            del f["pos"]
            f["pos"] = np.zeros(T + 3, dtype="int16")
    with pytest.raises(ProjectError, match=r"train\.h5.*'pos'.*\(33,\).*T=30"):
        open_project(_broken(tmp_path, edit))

    def edit2(folder):
        with h5py.File(folder / "other.h5", "a") as f:
            del f["states2"]
            f["states2"] = np.zeros((T - 1, D), dtype="float16")
    with pytest.raises(ProjectError, match=r"other\.h5.*'states2'.*29 steps.*\(29, 4\).*states::states1"):
        open_project(_broken(tmp_path / "x", edit2))


def test_unknown_source_and_bad_queries(tmp_path):
    engine = Engine(open_project(write_full_project(tmp_path / "p")), backend="numpy")
    with pytest.raises(ProjectError, match="unknown source 'states::nope'.*states::states1"):
        engine.match("states::nope", [0], 0.3)
    with pytest.raises(ProjectError, match="cell 9 is out of range"):
        engine.match("states::states1", [0, 9], 0.3)
    with pytest.raises(ProjectError, match="empty"):
        engine.match("states::states1", [], 0.3)
    with pytest.raises(ProjectError, match="crosses a sequence boundary at 10"):
        engine.select("states::states1", 8, 12, 0.3)
    assert engine.select("states::states1", 8, 12, -1.0, sequences=False).cells == [0, 1, 2, 3]
    with pytest.raises(ProjectError, match="outside the timeline"):
        engine.select("states::states1", 25, 31, 0.3)


def test_dictionary_leading_space_and_noncontiguous_ids(tmp_path):
    path = tmp_path / "d.dict"
    path.write_text("a 10\n 7\nb\t3\n\n")
    assert read_dictionary(path) == {10: "a", 7: " ", 3: "b"}


def test_layout_cache_is_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    from gpu_matcher import source as source_module

    monkeypatch.setattr(source_module, "IN_MEMORY_BYTES", 0)
    folder = write_full_project(tmp_path / "p")
    cache = tmp_path / "cache"
    engine = Engine(open_project(folder, cache_dir=cache), backend="numpy")
    first = engine.match("states::states1", [0, 1], 0.0, top=5)
    built = sorted(cache.rglob("layout.json"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    engine.project.close()
    with h5py.File(folder / "states.h5", "a") as f:               # the user re-exports the states
        f["states1"][...] = -f["states1"][...]
    os.utime(folder / "states.h5", ns=(stamp + 10**9, stamp + 10**9))
    engine2 = Engine(open_project(folder, cache_dir=cache), backend="numpy")
    second = engine2.match("states::states1", [0, 1], 0.0, top=5)
    assert built[0].stat().st_mtime_ns != stamp, "the cached layout was not rebuilt"
    # The answer follows the new data, exactly as a fresh in-memory engine computes it.
    monkeypatch.setattr(source_module, "IN_MEMORY_BYTES", 1 << 30)
    fresh = Engine(open_project(folder), backend="numpy").match("states::states1", [0, 1], 0.0, top=5)
    assert second == fresh and second != first


def test_search_finds_every_occurrence(tmp_path):
    engine = Engine(open_project(write_full_project(tmp_path / "p")), backend="numpy")
    # words cycle 1..5: "<s> <unk> </s> ' ' the"; sequences start at 0, 10, 22.
    assert engine.search("the").tolist() == [4, 9, 14, 19, 24, 29]
    assert engine.search(["the", "<s>"]).tolist() == [4, 14, 19, 24]          # 9->10 crosses a start
    assert engine.search(["the", "<s>"], sequences=False).tolist() == [4, 9, 14, 19, 24]
    assert engine.search("nothing").tolist() == []


@pytest.mark.parametrize("w0", [0, 5, 37])
def test_source_rows_read_like_the_stored_keys(tmp_path, monkeypatch, w0):
    """Row keys read from the source's chunks (cells-only layouts) equal the stored row-major keys, for
    any read pattern, with a window that starts inside a chunk and a cache smaller than the reads."""
    from gpu_matcher import source as source_module
    from gpu_matcher.sharded import WindowDataset
    from gpu_matcher.source import SourceRows, float_keys

    rng = np.random.default_rng(w0)
    raw = rng.normal(size=(300, 5)).astype(np.float16)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("x", data=raw, chunks=(16, 5))
    monkeypatch.setattr(source_module.SourceRows, "BLOCK_BYTES", 3 * 16 * 5 * 2)   # 3 chunks a block
    monkeypatch.setattr(source_module.SourceRows, "CACHE_BYTES", 0)                # 2 blocks kept
    with h5py.File(tmp_path / "s.h5", "r") as f:
        view = WindowDataset(f["x"], w0, 290)
        rows, want = SourceRows(view), float_keys(raw[w0:290])
        assert rows.shape == want.shape and rows.dtype == want.dtype and rows.block_rows == 48
        assert np.array_equal(rows.block(0, rows.shape[0]), want)
        assert np.array_equal(rows.block(11, 12), want[11:12])
        pick = rng.integers(0, want.shape[0], size=200)
        assert np.array_equal(rows.take(pick), want[pick])
        assert np.array_equal(rows.rows_at_least(pick, want[7, 2]), want[pick] >= want[7, 2])
        lo = np.array([200, 3, 40, 40]); hi = np.array([240, 3, 100, 41])
        assert np.array_equal(rows.spans(lo, hi), np.concatenate([want[a:b] for a, b in zip(lo, hi)]))
        assert rows.take(np.array([], dtype=np.int64)).shape == (0, 5)
        with pytest.raises(IndexError):
            rows.take(np.array([want.shape[0]]))
        # Every read of the source starts on a chunk edge of the whole array (or at the window's start)
        # and reads whole chunks (or up to the window's end); each block is read once while cached.
        seen = []

        class Recording(WindowDataset):
            def __getitem__(self, key):
                seen.append((self.w0 + key.start, self.w0 + key.stop))
                return super().__getitem__(key)

        rows = SourceRows(Recording(f["x"], w0, 290))
        assert np.array_equal(rows.take(pick), want[pick])
        assert seen and rows.reads == len(seen) == len(set(seen))
        for a, b in seen:
            assert (a % 16 == 0 or a == w0) and (b % 16 == 0 or b == 290), (a, b)
