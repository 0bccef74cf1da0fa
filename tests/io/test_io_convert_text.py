"""convert-text: a text file to word ids, sequence starts and a dictionary."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gpu_matcher import ProjectError
from gpu_matcher.cli import main
from gpu_matcher.io import text as text_mod
from gpu_matcher.io.text import Corpus, convert_text
from gpu_matcher.project import read_dictionary


def _read(folder):
    with h5py.File(folder / "train.h5") as f:
        ids, starts = f["words"][()], f["seq_starts"][()]
    d = read_dictionary(folder / "words.dict")
    return [d[int(i)] for i in ids], starts.tolist(), d


def test_word_level_with_the_original_reserved_ids(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("the cat sat\n\n  the dog \nsat\n", encoding="utf-8")
    s = convert_text(src, tmp_path / "out", eos=True)
    tokens, starts, d = _read(tmp_path / "out")
    assert tokens == ["the", "cat", "sat", "</s>", "the", "dog", "</s>", "sat", "</s>"]
    assert starts == [0, 4, 7]
    assert (d[1], d[2], d[3], d[4], d[5]) == ("<s>", "<unk>", "</s>", "the", "cat")
    assert (s.tokens, s.sequences, s.skipped_empty, s.vocabulary) == (9, 3, 1, 7)


def test_char_level_keeps_spaces(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("ab a\nba\n", encoding="utf-8")
    convert_text(src, tmp_path / "out", level="char")
    tokens, starts, _ = _read(tmp_path / "out")
    assert tokens == ["a", "b", " ", "a", "b", "a"] and starts == [0, 4]


def test_fixed_dictionary_maps_unknown_words_to_unk(tmp_path):
    (tmp_path / "v.dict").write_text("<unk> 0\nthe 5\ncat 6\n")
    src = tmp_path / "c.txt"
    src.write_text("the cat\nthe zebra\n")
    s = convert_text(src, tmp_path / "out", dictionary=tmp_path / "v.dict")
    tokens, _, d = _read(tmp_path / "out")
    assert tokens == ["the", "cat", "the", "<unk>"] and s.unknown == 1
    assert d == {0: "<unk>", 5: "the", 6: "cat"}


def test_streams_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "BLOCK", 7)
    lines = [" ".join(f"w{(i * j) % 11}" for j in range(1 + i % 5)) for i in range(40)]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n")
    convert_text(tmp_path / "c.txt", tmp_path / "out")
    tokens, starts, _ = _read(tmp_path / "out")
    assert tokens == " ".join(lines).split()
    assert starts == list(np.cumsum([0] + [len(l.split()) for l in lines[:-1]]))
    corpus = Corpus.from_folder(tmp_path / "out")
    assert len(corpus) == 40 and corpus.lengths.tolist() == [len(l.split()) for l in lines]


@pytest.mark.parametrize("content, kwargs, message", [
    ("a\tb\n", {"level": "char"}, r"c.txt:1: token '\\t' cannot be stored"),
    ("\n\n", {}, "no tokens"),
    (b"caf\xe9\n", {}, "not utf-8 text"),
])
def test_bad_text_is_a_one_line_error(tmp_path, content, kwargs, message):
    src = tmp_path / "c.txt"
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ProjectError, match=message):
        convert_text(src, tmp_path / "out", **kwargs)


def test_cli_convert_text_and_its_errors(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("x y\nz\n")
    assert main(["convert-text", str(tmp_path / "c.txt"), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "3 tokens in 2 sequences" in out and "word_sequence:" in out
    assert main(["convert-text", str(tmp_path / "c.txt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.h5: exists; pass --overwrite" in err
    assert main(["convert-text", str(tmp_path / "missing.txt"), str(tmp_path / "o2")]) == 2
    assert "missing.txt: text file missing" in capsys.readouterr().err
