"""annotate: CoNLL columns become discrete meta tracks aligned with the timeline."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_matcher import ProjectError, open_project
from gpu_matcher.cli import main
from gpu_matcher.io import annotate, write_project

TOKENS = ["The", "cat", "sat", "</s>", "A", "<unk>", "ran", "</s>"]
CONLL = """\
-DOCSTART- -X- O
# a comment
The DT B-NP O
cat NN I-NP O
sat VBD B-VP O

A DT B-NP O
Zorro NNP I-NP B-PER
ran VBD B-VP O
"""


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "p"
    write_project(folder, {"s": np.zeros((len(TOKENS), 3), np.float32)}, tokens=TOKENS,
                  sequence_starts=[0, 4], meta={"old": np.arange(len(TOKENS))})
    return folder


def test_columns_become_tracks(tmp_path, project):
    (tmp_path / "a.conll").write_text(CONLL)
    s = annotate(tmp_path / "a.conll", project, "token,pos,_,ner", ignore=["</s>"])
    assert s.ignored == 2 and s.tracks == {"pos": 5, "ner": 3}   # labels include "_"
    p = open_project(project)
    pos = p.meta["pos"]
    assert [pos.label(v) for v in pos.values(0, 8)] == ["DT", "NN", "VBD", "_", "DT", "NNP", "VBD", "_"]
    ner = p.meta["ner"]
    assert [ner.label(v) for v in ner.values(4, 7)] == ["O", "B-PER", "O"]
    assert pos.kind == "discrete" and "old" in p.meta               # earlier tracks are kept
    p.close()


def test_disagreeing_token_names_line_and_step(tmp_path, project):
    (tmp_path / "a.conll").write_text(CONLL.replace("sat VBD", "sits VBD"))
    with pytest.raises(ProjectError, match=r"a.conll:5: token 'sits' but the timeline has 'sat' at step 2 "
                                           r"\(sequence 0\); the first 2 steps agreed"):
        annotate(tmp_path / "a.conll", project, "token,pos,_,ner", ignore=["</s>"])
    assert "pos" not in open_project(project).meta                 # nothing written


def test_length_mismatches_are_errors(tmp_path, project):
    (tmp_path / "short.conll").write_text("The DT\ncat NN\n")
    with pytest.raises(ProjectError, match="ends after 2 tokens, but the timeline has 8 steps"):
        annotate(tmp_path / "short.conll", project, "token,pos", ignore=["</s>"])
    (tmp_path / "long.conll").write_text(CONLL + "extra NN B-NP O\n")
    with pytest.raises(ProjectError, match=r"long.conll:10: token 'extra' is past the end"):
        annotate(tmp_path / "long.conll", project, "token,pos,_,ner", ignore=["</s>"])
    with pytest.raises(ProjectError, match="token 'A' but the timeline has '</s>' at step 3 .*"
                                           "pass --ignore '</s>'"):
        annotate(tmp_path / "long.conll", project, "token,pos,_,ner")  # forgot --ignore </s>


def test_cli_annotate_and_overwrite(tmp_path, project, capsys):
    (tmp_path / "a.conll").write_text(CONLL)
    args = ["annotate", str(tmp_path / "a.conll"), str(project), "--columns", "token,pos,chunk,ner",
            "--ignore", "</s>"]
    assert main(args) == 0
    assert "added meta tracks pos (5 labels), chunk" in capsys.readouterr().out
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "meta track(s) ['chunk', 'ner', 'pos'] exist; pass --overwrite" in err
    assert main(args + ["--overwrite"]) == 0
    assert main(["annotate", str(tmp_path / "a.conll"), str(project), "--columns", "pos,ner"]) == 2
    assert "name exactly one column 'token'" in capsys.readouterr().err
