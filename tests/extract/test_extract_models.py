"""extract(): small random models in, projects out; padding removed, sequences concatenated, resumable."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="extraction needs PyTorch (pip install -e '.[torch]')")
from torch import nn  # noqa: E402

from gpu_matcher import ProjectError, open_project  # noqa: E402
from gpu_matcher.cli import main  # noqa: E402
from gpu_matcher.extract import extract, hf_forward, unroll  # noqa: E402
from gpu_matcher.io import Corpus, topk_from_logits  # noqa: E402

V = 12
SEQS = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10, 11, 1, 2, 3], [4], [5, 6, 7, 8], [9, 10, 11], [1, 1, 2]]
DICT = {i: f"w{i}" for i in range(V)}


class RecurrentLM(nn.Module):
    def __init__(self, cell=nn.LSTM, layers=2):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(V, 6)
        self.rnn = cell(6, 8, layers, batch_first=True)
        self.decoder = nn.Linear(8, V)

    def forward(self, ids):
        return self.decoder(self.rnn(self.embedding(ids))[0])


class Block(nn.Module):
    """Returns a tuple, like a transformer layer."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return torch.relu(self.lin(x)), {"attention": None}


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.embedding = nn.Embedding(V, 4)
        self.blocks = nn.ModuleList([Block(4), Block(4)])
        self.time_major = nn.GRU(4, 3)                    # (L, B, D) in and out
        self.head = nn.Linear(3, V)

    def forward(self, ids):
        x = self.embedding(ids)
        for block in self.blocks:
            x = block(x)[0]
        y, _ = self.time_major(x.transpose(0, 1))
        return self.head(y.transpose(0, 1))


def _corpus():
    return Corpus.from_sequences(SEQS, dictionary=DICT)


def _states(folder):
    p = open_project(folder)
    out = {name: s.raw(0, p.T) for name, s in p.sources.items()}
    out["tokens"] = p.tokens(0, p.T)
    out["starts"] = p.sequence_starts
    out.update({f"meta:{n}": m.values(0, p.T) for n, m in p.meta.items()})
    out.update({f"weights:{n}": m.weights_for(0, p.T) for n, m in p.meta.items() if m.weights is not None})
    p.close()
    return out


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_rnn_states_per_sequence_without_padding(tmp_path, cell):
    model = RecurrentLM(cell)
    extract(model, _corpus(), tmp_path / "p", rnns=["rnn"], logits="output", topk=3, batch_size=3,
            progress=False)
    got = _states(tmp_path / "p")
    starts = np.cumsum([0] + [len(s) for s in SEQS[:-1]])
    np.testing.assert_array_equal(got["starts"], starts)
    assert got["tokens"] == [DICT[i] for s in SEQS for i in s]
    names = ["states::rnn.cell_layer1", "states::rnn.hidden_layer1", "states::rnn.cell_layer2",
             "states::rnn.hidden_layer2"]
    assert [n for n in got if n.startswith("states::")] == (names if cell is nn.LSTM else names[1::2])
    for seq, a in zip(SEQS, starts):
        ids = torch.tensor([seq])
        with torch.no_grad():
            x = model.embedding(ids)
            out, state = model.rnn(x)
            logits = model.decoder(out)[0].numpy()
        rows = slice(a, a + len(seq))
        # the sequence alone, unpadded: the module's own output and final states
        np.testing.assert_allclose(got["states::rnn.hidden_layer2"][rows], out[0].numpy(), atol=1e-5)
        h_n = state[0] if cell is nn.LSTM else state
        np.testing.assert_allclose(got["states::rnn.hidden_layer1"][a + len(seq) - 1], h_n[0, 0], atol=1e-5)
        if cell is nn.LSTM:
            np.testing.assert_allclose(got["states::rnn.cell_layer2"][a + len(seq) - 1], state[1][1, 0],
                                       atol=1e-5)
        ids3, w3 = topk_from_logits(logits, 3)
        np.testing.assert_array_equal(got["meta:top3"][rows], ids3)
        np.testing.assert_allclose(got["weights:top3"][rows], w3, atol=1e-5)
    p = open_project(tmp_path / "p")
    assert p.sources["states::rnn.hidden_layer1"].transform == "none"
    assert p.meta["top3"].label(got["meta:top3"][0, 0]) == DICT[int(got["meta:top3"][0, 0])]
    p.close()


def test_gates_are_sources(tmp_path):
    model = RecurrentLM(nn.LSTM, layers=1)
    extract(model, _corpus(), tmp_path / "p", rnns=["rnn"], gates=True, progress=False)
    got = _states(tmp_path / "p")
    assert {f"states::rnn.gate_{g}_layer1" for g in "ifgo"} <= set(got)
    x = model.embedding(torch.tensor([SEQS[0]]))
    layers, _ = unroll(model.rnn, x, gates=True)
    np.testing.assert_allclose(got["states::rnn.gate_f_layer1"][:5], layers[0]["gate_f"][0].numpy(), atol=1e-6)


def test_hooked_modules_any_layout(tmp_path):
    model = Stack()
    extract(model, SEQS, tmp_path / "p", modules=["blocks.0", "blocks.1.lin", "time_major"],
            batch_size=4, dtype="float16", progress=False)
    got = _states(tmp_path / "p")
    assert got["states::blocks.0"].dtype == np.float16
    at = 0
    for seq in SEQS:
        with torch.no_grad():
            x = model.embedding(torch.tensor([seq]))
            b0 = model.blocks[0](x)[0]
            lin1 = model.blocks[1].lin(b0)
            gru, _ = model.time_major(torch.relu(lin1).transpose(0, 1))
        rows = slice(at, at + len(seq))
        np.testing.assert_allclose(got["states::blocks.0"][rows], b0[0].numpy(), atol=2e-3)
        np.testing.assert_allclose(got["states::blocks.1.lin"][rows], lin1[0].numpy(), atol=2e-3)
        np.testing.assert_allclose(got["states::time_major"][rows], gru[:, 0].numpy(), atol=2e-3)
        at += len(seq)
    assert got["tokens"] == [f"#{i}" for s in SEQS for i in s]      # ids without a dictionary


def test_hugging_face_style_call(tmp_path):
    class HFLike(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.embed = nn.Embedding(V, 4)
            self.layer = Block(4)
            self.lm_head = nn.Linear(4, V)

        def forward(self, input_ids=None, attention_mask=None):
            assert attention_mask is not None and attention_mask.dtype == torch.long
            h = self.layer(self.embed(input_ids))[0]
            return SimpleNamespace(logits=self.lm_head(h))

    model = HFLike()
    extract(model, _corpus(), tmp_path / "p", modules=["layer"], logits="output", forward=hf_forward,
            progress=False)
    got = _states(tmp_path / "p")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([SEQS[2]]), attention_mask=torch.ones(1, 7).long()).logits
    rows = slice(7, 14)
    np.testing.assert_array_equal(got["meta:top5"][rows], topk_from_logits(logits[0].numpy(), 5)[0])


def test_a_model_that_takes_a_mask_always_gets_it(tmp_path):
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.embed = nn.Embedding(V, 4)
            self.out = nn.Identity()

        def forward(self, ids, attention_mask=None):             # padding would leak into the mean
            x = self.embed(ids)
            mask = attention_mask[..., None].float()
            return self.out(x + (x * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True))

    model = Masked()
    extract(model, _corpus(), tmp_path / "p", modules=["out"], batch_size=3, progress=False)
    got = _states(tmp_path / "p")["states::out"]
    with torch.no_grad():
        alone = model(torch.tensor([SEQS[2]]), attention_mask=torch.ones(1, 7, dtype=torch.long))[0].numpy()
    np.testing.assert_allclose(got[7:14], alone, rtol=1e-6)


def test_interrupted_extraction_resumes_to_the_same_project(tmp_path):
    model = RecurrentLM()
    corpus = _corpus()
    extract(model, corpus, tmp_path / "whole", rnns=["rnn"], logits="output", batch_size=2, progress=False)
    calls = {"n": 0}

    def flaky(m, ids, mask):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return m(ids)

    with pytest.raises(KeyboardInterrupt):
        extract(model, corpus, tmp_path / "part", rnns=["rnn"], logits="output", batch_size=2,
                forward=flaky, progress=False)
    assert not (tmp_path / "part" / "lstm.yml").exists()
    with pytest.raises(ProjectError, match="different inputs or settings"):
        extract(model, corpus, tmp_path / "part", rnns=["rnn"], logits="output", batch_size=3,
                resume=True, progress=False)
    seen = []
    extract(model, corpus, tmp_path / "part", rnns=["rnn"], logits="output", batch_size=2, resume=True,
            forward=lambda m, ids, mask: seen.append(ids.shape[0]) or m(ids), progress=False)
    assert sum(seen) == len(SEQS) - 4                # the first two batches were not run again
    whole, part = _states(tmp_path / "whole"), _states(tmp_path / "part")
    assert whole.keys() == part.keys()
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(part[key]), err_msg=key)


def test_model_mode_is_restored_and_errors_are_clear(tmp_path):
    model = RecurrentLM()
    model.train()
    extract(model, SEQS, tmp_path / "p", rnns=["rnn"], progress=False)
    assert model.training
    with pytest.raises(ProjectError, match=r"module 'rnn2' not found in RecurrentLM; similar: rnn"):
        extract(model, SEQS, tmp_path / "q", rnns=["rnn2"], progress=False)
    with pytest.raises(ProjectError, match="Linear is not an nn.LSTM or nn.GRU"):
        extract(model, SEQS, tmp_path / "q", rnns=["decoder"], progress=False)
    with pytest.raises(ProjectError, match="name at least one"):
        extract(model, SEQS, tmp_path / "q", progress=False)
    with pytest.raises(ProjectError, match="sequence 1 is empty"):
        extract(model, [[1], []], tmp_path / "q", rnns=["rnn"], progress=False)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lin = nn.Embedding(V, 3), nn.Linear(3, 3)

        def forward(self, ids):
            return self.lin(self.lin(self.emb(ids)))

    with pytest.raises(ProjectError, match="module 'lin' ran 2 times in one forward pass"):
        extract(Twice(), SEQS, tmp_path / "r", modules=["lin"], progress=False)


MODEL_FILE = """
import torch
from torch import nn

class LM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(50, 5)
        self.lstm = nn.LSTM(5, 7, 2, batch_first=True)
        self.out = nn.Linear(7, 50)

    def forward(self, ids):
        return self.out(self.lstm(self.embedding(ids))[0])

def make():
    return LM()
"""


def test_cli_convert_then_extract(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL_FILE)
    (tmp_path / "c.txt").write_text("the cat sat\nthe dog\nsat on the mat\n")
    assert main(["convert-text", str(tmp_path / "c.txt"), str(tmp_path / "corpus")]) == 0
    args = ["extract", str(tmp_path / "corpus"), str(tmp_path / "proj"), "--model",
            f"{tmp_path / 'model.py'}:make", "--rnn", "lstm", "--logits", "output", "--float16", "--quiet"]
    assert main(args) == 0
    assert "project written" in capsys.readouterr().out
    p = open_project(tmp_path / "proj")
    assert p.T == 9 and p.tokens(0, 3) == ["the", "cat", "sat"] and len(p.sources) == 4
    assert p.sources["states::lstm.cell_layer2"].dtype == np.float16
    assert p.sequence_starts.tolist() == [0, 3, 5]
    p.close()
    assert main(args) == 2
    assert "already holds a project" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "corpus"), str(tmp_path / "p2"), "--model",
                 f"{tmp_path / 'model.py'}:nothing", "--rnn", "lstm"]) == 2
    assert "has no attribute 'nothing'" in capsys.readouterr().err
