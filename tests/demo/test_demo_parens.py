"""The bundled demo: the language, the committed model, the generated project and the paper's observation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gpu_matcher import Engine, open_project
from gpu_matcher.cli import main
from gpu_matcher.demo import PROJECT_NAME, ensure_demo, default_demo_dir, language
from gpu_matcher.demo.model import WEIGHTS_PATH, forward, load_model
from gpu_matcher.demo.train import evaluate


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """The demo as a user gets it: ``lstmvis demo --out DIR``."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out


def test_sampled_sentences_belong_to_the_language():
    rng = np.random.default_rng(7)
    corpus = language.sample_corpus(rng, 5000)
    assert all(language.is_valid(s) for s in corpus)
    d = language.depths_of_sentences(corpus)
    assert d.max() == language.MAX_DEPTH and d.min() == 0
    assert not language.is_valid(np.array([language.OPEN, language.DIGIT0 + 2, language.CLOSE]))  # wrong digit
    for depth in range(5):
        for n in (0, 20, 100):
            assert language.next_distribution(depth, n).sum() == pytest.approx(1.0)


def test_committed_model_has_learned_the_language():
    """Digits are determined by the nesting depth: the model must always get them right, and its
    cross-entropy must be close to the language's own entropy (the best any model can do)."""
    figures = evaluate(WEIGHTS_PATH, sentences=300)
    print(f"\ndemo LSTM on {figures['eval_steps']} held-out steps: {figures}")
    assert figures["digit_accuracy"] >= 0.99
    assert figures["cross_entropy_nats"] - figures["true_entropy_nats"] < 0.03
    assert figures["top1_accuracy"] >= figures["oracle_top1_accuracy"] - 0.02
    info = load_model().info
    assert info["hidden"] >= 128 and info["layers"] == 2 and info["digit_accuracy"] >= 0.99


def test_numpy_forward_pass_equals_pytorch():
    torch = pytest.importorskip("torch", reason="the comparison runs the same weights through nn.LSTM")
    model = load_model()
    sentences = language.sample_corpus(np.random.default_rng(3), 400)
    ours = forward(model, sentences)
    lstm = torch.nn.LSTM(model.embedding.shape[1], model.hidden, len(model.layers), batch_first=True)
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            getattr(lstm, f"weight_ih_l{k}").copy_(torch.from_numpy(layer.w_ih))
            getattr(lstm, f"weight_hh_l{k}").copy_(torch.from_numpy(layer.w_hh))
            getattr(lstm, f"bias_ih_l{k}").copy_(torch.from_numpy(layer.bias))
            getattr(lstm, f"bias_hh_l{k}").zero_()
        at = 0
        for s in sentences:
            x = torch.from_numpy(model.embedding[s])[None]
            out, (h_n, c_n) = lstm(x)
            n = len(s)
            np.testing.assert_allclose(ours["hidden2"][at:at + n], out[0].numpy(), atol=2e-5)
            np.testing.assert_allclose(ours["cell1"][at + n - 1], c_n[0, 0].numpy(), atol=2e-5)
            np.testing.assert_allclose(ours["cell2"][at + n - 1], c_n[1, 0].numpy(), atol=2e-5)
            np.testing.assert_allclose(ours["hidden1"][at + n - 1], h_n[0, 0].numpy(), atol=2e-5)
            at += n


def test_demo_project_contents(demo_dir):
    p = open_project(demo_dir / PROJECT_NAME)
    assert 20_000 <= p.T <= 100_000
    assert list(p.sources) == ["states::cell_layer1", "states::hidden_layer1", "states::cell_layer2",
                               "states::hidden_layer2"]
    assert all(s.D >= 128 for s in p.sources.values())
    assert set(p.meta) == {"depth", "top5"} and p.meta["depth"].kind == "discrete"
    assert p.meta["top5"].kind == "wordvec" and p.meta["top5"].weights is not None
    starts = p.sequence_starts
    assert starts is not None and len(starts) > 100
    ids = p.word_ids(0, p.T)
    depth = p.meta["depth"].values(0, p.T)
    for a, b in zip(starts[:50], list(starts[1:51])):
        assert language.is_valid(ids[a:b])
        np.testing.assert_array_equal(depth[a:b], language.depths(ids[a:b]))
    assert p.meta["depth"].label(4) == "4" and p.tokens(0, 3)[0] in language.TOKENS
    # Where the next token is a digit, the model's top-1 prediction is that digit or a parenthesis,
    # and the digit is always among the top 5.
    top = p.meta["top5"].values(0, p.T)
    nxt = np.append(ids[1:], language.EOS)
    last = np.isin(np.arange(p.T), np.append(starts[1:], p.T) - 1)
    digit_next = (nxt >= language.DIGIT0) & (nxt <= language.DIGIT0 + 4) & ~last
    assert (top[digit_next] == nxt[digit_next, None]).any(axis=1).all()
    p.close()


def test_paper_observation_depth_4_selections_match_at_depth_4(demo_dir):
    """Paper, section 6.1: brushing a range at nesting depth 4 selects cells whose matches lie at depth 4.

    For the first 20 maximal runs of depth 4 (3+ steps; a run starts at the opening parenthesis),
    select at threshold 0.3 without margins, take the top 50 matches and count the matched steps at
    depth 4. Depth 4 is only about a fifth of the corpus, so chance would give about 0.2.
    """
    p = open_project(demo_dir / PROJECT_NAME)
    engine = Engine(p, backend="numpy")
    depth = p.meta["depth"].values(0, p.T)
    at4 = depth == 4
    edges = np.flatnonzero(np.diff(np.concatenate([[0], at4.astype(int), [0]])))
    runs = [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 3][:20]
    assert len(runs) == 20
    base_rate = float(at4.mean())
    figures = {}
    for source in p.sources:
        fractions = []
        for start, end in runs:
            cells = engine.select(source, start, end, 0.3).cells
            assert cells, f"{source}: the selection [{start}, {end}] picks no cells"
            matches = engine.match(source, cells, 0.3, top=50)
            assert len(matches) == 50
            steps = np.concatenate([np.arange(m.start, m.end + 1) for m in matches])
            fractions.append(float(at4[steps].mean()))
        figures[source] = (float(np.mean(fractions)), float(np.min(fractions)))
    print(f"\ndepth-4 fraction of matched steps (mean, worst of 20 selections; chance {base_rate:.2f}):")
    for source, (mean, worst) in figures.items():
        print(f"  {source}: {mean:.3f} (worst {worst:.3f})")
    assert base_rate < 0.3
    for source, (mean, worst) in figures.items():
        assert mean >= 0.95 and worst >= 0.8, (source, mean, worst)
    p.close()


def test_ensure_demo_caches_and_regenerates_when_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMVIS_CACHE_DIR", str(tmp_path / "cache"))
    assert default_demo_dir() == tmp_path / "cache" / "demo"
    data_dir = ensure_demo(steps=3000)
    assert data_dir == tmp_path / "cache" / "demo"
    config = data_dir / PROJECT_NAME / "lstm.yml"
    first = config.stat().st_mtime_ns
    assert ensure_demo(steps=3000) == data_dir and config.stat().st_mtime_ns == first   # up to date
    stamp = data_dir / PROJECT_NAME / "demo.json"
    stamp.write_text(json.dumps(json.loads(stamp.read_text()) | {"weights_sha1": "old"}))
    ensure_demo(steps=3000)
    assert json.loads(stamp.read_text())["weights_sha1"] == load_model().digest   # regenerated
    assert [d.name for d in data_dir.iterdir()] == [PROJECT_NAME]                 # no leftovers
    assert not str(data_dir).startswith(os.path.dirname(WEIGHTS_PATH))


def test_cli_demo_reports_where(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"demo project: {tmp_path / PROJECT_NAME}" in out and f"lstmvis serve {tmp_path}" in out
