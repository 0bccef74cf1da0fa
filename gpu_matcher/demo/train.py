"""Train the demo LSTM on the counting language and write ``parens_lstm.npz`` (needs PyTorch).

    pip install -e ".[torch]"
    python -m gpu_matcher.demo.train            # ~3 minutes on one CPU core; overwrites the weights

The model is ``Embedding(8, 32) -> LSTM(32, 128, 2 layers) -> Linear(128, 8)``, a next-token language
model over ``( ) 0 1 2 3 4 </s>``. Every batch is a fresh sample of the language (from a seeded NumPy
generator), so there is no fixed training set to overfit. The run is deterministic: fixed seeds, one
CPU thread, deterministic algorithms; the same PyTorch version gives the same weights.

After training, the float16 weights as committed are evaluated with the NumPy forward pass
(``gpu_matcher.demo.model``) on a held-out sample, and the figures are stored in the file's ``info``:
``digit_accuracy`` (when the next token is a digit, the most likely digit is the right one: digits are
fully determined by the nesting depth), ``top1_accuracy`` beside ``oracle_top1_accuracy`` (the best any
model can do, as the language is random), and the cross-entropy beside the language's true entropy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gpu_matcher.demo import language
from gpu_matcher.demo.model import WEIGHTS_PATH, forward, load_model, save_weights

SEED = 1234
EVAL_SEED = 99
EMBED, HIDDEN, LAYERS = 32, 128, 2


def _batch(rng: np.random.Generator, size: int):
    import torch

    sentences = [language.sample_sequence(rng) for _ in range(size)]
    L = max(len(s) for s in sentences)
    inputs = np.zeros((size, L), dtype=np.int64)
    targets = np.full((size, L), -100, dtype=np.int64)        # -100: ignored by the loss (padding)
    for b, s in enumerate(sentences):
        inputs[b, :len(s)] = s
        targets[b, :len(s)] = np.append(s[1:], language.EOS)
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def fit(model, optimizer, schedule, steps: int, batch_loss, log_every: int) -> tuple[float, float]:
    """The loop both demo models are trained with: ``batch_loss()`` is the loss of a fresh batch;
    gradients clipped to norm 1. Returns the last batch's loss and the seconds taken."""
    from torch import nn

    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        loss = batch_loss()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            print(f"step {step:5d}  loss {loss.item():.5f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return loss.item(), time.perf_counter() - t0


def train(steps: int, batch_size: int, lr: float, log_every: int = 100):
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)

    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(len(language.TOKENS), EMBED)
            self.lstm = nn.LSTM(EMBED, HIDDEN, LAYERS, batch_first=True)
            self.decoder = nn.Linear(HIDDEN, len(language.TOKENS))

        def forward(self, ids):
            return self.decoder(self.lstm(self.embedding(ids))[0])

    model = LanguageModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)

    def batch_loss():
        inputs, targets = _batch(rng, batch_size)
        return loss_fn(model(inputs).reshape(-1, len(language.TOKENS)), targets.reshape(-1))

    final_loss, seconds = fit(model, optimizer, schedule, steps, batch_loss, log_every)
    lstm = model.lstm
    layers = [(getattr(lstm, f"weight_ih_l{k}").detach().numpy(),
               getattr(lstm, f"weight_hh_l{k}").detach().numpy(),
               (getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")).detach().numpy())
              for k in range(LAYERS)]
    info = {"seed": SEED, "steps": steps, "batch_size": batch_size, "lr": lr, "embed": EMBED,
            "hidden": HIDDEN, "layers": LAYERS, "torch": torch.__version__,
            "train_seconds": round(seconds, 1), "final_loss": round(final_loss, 4)}
    return model.embedding.weight.detach().numpy(), layers, \
        model.decoder.weight.detach().numpy(), model.decoder.bias.detach().numpy(), info


def evaluate(path: Path, sentences: int = 2000) -> dict:
    """Accuracy of the weights in ``path`` (NumPy forward pass) on a held-out sample of the language."""
    model = load_model(path)
    sample = [language.sample_sequence(np.random.default_rng([EVAL_SEED, i])) for i in range(sentences)]
    logits = forward(model, sample)["logits"].astype(np.float64)
    targets = np.concatenate([np.append(s[1:], language.EOS) for s in sample])
    truth = np.concatenate([np.stack([language.next_distribution(int(d), n + 1)
                                      for n, d in enumerate(language.depths(s))]) for s in sample])
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    digit_cols = slice(language.DIGIT0, language.DIGIT0 + language.MAX_DEPTH + 1)
    is_digit = (targets >= language.DIGIT0) & (targets < language.DIGIT0 + language.MAX_DEPTH + 1)
    best_digit = logits[:, digit_cols].argmax(axis=1) + language.DIGIT0
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(truth > 0, truth * np.log(truth), 0.0).sum(axis=1)
    return {
        "eval_steps": int(len(targets)),
        "digit_accuracy": round(float((best_digit[is_digit] == targets[is_digit]).mean()), 5),
        "top1_accuracy": round(float((logits.argmax(axis=1) == targets).mean()), 5),
        "oracle_top1_accuracy": round(float((truth.argmax(axis=1) == targets).mean()), 5),
        "cross_entropy_nats": round(float(-logp[np.arange(len(targets)), targets].mean()), 5),
        "true_entropy_nats": round(float(entropy.mean()), 5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--evaluate-only", action="store_true", help="only print the figures of --out")
    args = parser.parse_args(argv)
    if not args.evaluate_only:
        embedding, layers, decoder_w, decoder_b, info = train(args.steps, args.batch_size, args.lr)
        save_weights(args.out, language.TOKENS, embedding, layers, decoder_w, decoder_b, info)
        info.update(evaluate(args.out))           # the figures of the weights as stored (float16)
        save_weights(args.out, language.TOKENS, embedding, layers, decoder_w, decoder_b, info)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    else:
        info = load_model(args.out).info | evaluate(args.out)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
