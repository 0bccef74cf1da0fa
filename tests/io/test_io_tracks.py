"""Annotations without glue: WordPiece '#' tokens in CoNLL, BERT's [UNK] in convert-text, tracks added to an
existing project (Project.add_meta, lstmvis add-meta) without touching its other files."""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest

from gpu_matcher import ProjectError, open_project
from gpu_matcher.io import annotate, convert_text, write_project
from gpu_matcher.io.spans import register

TOKENS = ["[CLS]", "#", "as", "##bu", "##rt", "##s", "[UNK]", "[SEP]"]


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "p"
    write_project(folder, {"s": np.arange(len(TOKENS) * 2, dtype=np.float32).reshape(-1, 2)}, tokens=TOKENS)
    return folder


def _digests(folder):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name != "lstm.yml"}


def test_conll_keeps_wordpiece_and_hash_tokens(tmp_path, project):
    (tmp_path / "a.conll").write_text("# sent_id = 1\n#\n#\tSYM\nas\tX\n##bu\tX\n##rt\tX\n##s\tPL\n"
                                      "zebra\tN\n")                      # [UNK] in the timeline matches any word
    annotate(tmp_path / "a.conll", project, "token,tag", ignore=["[CLS]", "[SEP]"])
    p = open_project(project)
    assert [p.meta["tag"].label(v) for v in p.meta["tag"].values(0, p.T)] == ["_", "SYM", "X", "X", "X", "PL", "N", "_"]
    p.close()


def test_convert_text_takes_berts_unknown_token(tmp_path):
    (tmp_path / "bert.dict").write_text("[PAD] 0\n[UNK] 100\n[CLS] 101\nthe 1996\ncat 4937\n")
    (tmp_path / "c.txt").write_text("the cat\nthe zebra\n")
    s = convert_text(tmp_path / "c.txt", tmp_path / "out", dictionary=tmp_path / "bert.dict")
    assert s.unknown == 1
    import h5py

    with h5py.File(tmp_path / "out" / "train.h5") as handle:
        assert handle["words"][()].tolist() == [1996, 4937, 1996, 100]
    (tmp_path / "none.dict").write_text("the 1\n")
    with pytest.raises(ProjectError, match=r"no unknown token .*\[UNK\]"):
        convert_text(tmp_path / "c.txt", tmp_path / "out2", dictionary=tmp_path / "none.dict")


def test_add_meta_adds_a_file_and_leaves_the_others(project):
    before = _digests(project)
    p = open_project(project)
    track = p.add_meta("position", np.linspace(0, 1, p.T), "scalar")
    labels = p.add_meta("piece", ["start" if not t.startswith("##") else "cont" for t in TOKENS])
    assert track.value_range == (0.0, 1.0) and labels.labels == {0: "start", 1: "cont"}
    with pytest.raises(ProjectError, match="exists; pass overwrite"):
        p.add_meta("piece", np.zeros(p.T, dtype=int))
    with pytest.raises(ProjectError, match="3 values, but the project has T=8"):
        p.add_meta("short", np.zeros(3, dtype=int))
    p.add_meta("piece", np.arange(p.T) % 2, overwrite=True)
    assert p.meta["piece"].values(0, p.T).tolist() == (np.arange(8) % 2).tolist()
    p.close()
    after = _digests(project)
    assert {k: v for k, v in after.items() if k in before} == before          # no other file touched
    assert set(after) - set(before) == {"meta_position.h5", "meta_piece.h5", "piece.dict"}
    q = open_project(project)
    assert q.meta["piece"].labels is None and q.meta["position"].kind == "scalar"
    assert [q.meta["position"].values(0, q.T)[i] for i in (0, 7)] == [0.0, 1.0]
    q.close()
    assert not (project / "lstm.yml.lock").exists() and not (project / "lstm.yml.tmp").exists()


def test_add_meta_command(tmp_path, project, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    (tmp_path / "v.txt").write_text("\n".join("a b".split() * 3 + ["c", "c"]) + "\n")
    args = parser.parse_args(["add-meta", str(project), "letters", str(tmp_path / "v.txt")])
    assert args.func(args) == 0 and "added discrete meta track letters over 8 steps, 3 labels" in capsys.readouterr().out
    np.save(tmp_path / "v.npy", np.arange(8) * 0.5)
    args = parser.parse_args(["add-meta", str(project), "half", str(tmp_path / "v.npy"), "--kind", "scalar"])
    assert args.func(args) == 0
    p = open_project(project)
    assert [p.meta["letters"].label(v) for v in p.meta["letters"].values(0, 8)] == "a b a b a b c c".split()
    assert p.meta["half"].values(0, 8).tolist() == (np.arange(8) * 0.5).tolist()
    p.close()
