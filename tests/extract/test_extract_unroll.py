"""unroll(): per-step states of every layer agree with nn.LSTM / nn.GRU themselves."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="extraction needs PyTorch (pip install -e '.[torch]')")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from gpu_matcher.extract import unroll  # noqa: E402
from gpu_matcher.extract.recurrent import per_step_states  # noqa: E402

ATOL = 1e-5


def _rnn(kind, **kw):
    torch.manual_seed(0)
    return (nn.LSTM if kind == "lstm" else nn.GRU)(input_size=5, hidden_size=7, **kw).eval()


def _final(rnn, out, layer, lengths):
    """(h, c) of ``layer`` after each sequence's last step, in nn.LSTM's h_n layout (dirs, B, H)."""
    dirs = 2 if rnn.bidirectional else 1
    B = len(lengths)
    last = torch.tensor(lengths) - 1
    res = []
    for key in ("hidden", "cell"):
        if key not in out[layer]:
            continue
        x = out[layer][key]
        size = x.shape[2] // dirs
        fwd = x[torch.arange(B), last, :size]
        parts = [fwd]
        if dirs == 2:
            parts.append(x[:, 0, size:])                 # the reverse direction ends at step 0
        res.append(torch.stack(parts))
    return res


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("kw", [
    {"num_layers": 1, "batch_first": True},
    {"num_layers": 3, "batch_first": True},
    {"num_layers": 2, "batch_first": False},
    {"num_layers": 2, "batch_first": True, "bidirectional": True},
    {"num_layers": 2, "batch_first": True, "bias": False},
])
def test_matches_the_module_for_variable_lengths(kind, kw):
    rnn = _rnn(kind, **kw)
    lengths = [6, 9, 3, 9]
    x = torch.randn(4, 9, 5)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        output, state = rnn(packed)
    h_n = state[0] if kind == "lstm" else state
    layers, lens = unroll(rnn, packed, gates=True)
    assert lens.tolist() == lengths and len(layers) == rnn.num_layers
    padded_out, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True)
    last = layers[-1]["hidden"]
    for b, n in enumerate(lengths):
        # h at every step of the last layer equals the module's own output
        torch.testing.assert_close(last[b, :n], padded_out[b, :n], atol=ATOL, rtol=0)
    dirs = 2 if rnn.bidirectional else 1
    for k in range(rnn.num_layers):
        finals = _final(rnn, layers, k, lengths)
        torch.testing.assert_close(finals[0], h_n[k * dirs:(k + 1) * dirs], atol=ATOL, rtol=0)
        if kind == "lstm":                               # final c equals c_n, for every layer
            torch.testing.assert_close(finals[1], state[1][k * dirs:(k + 1) * dirs], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_every_layer_at_every_step_equals_the_module_on_that_prefix(kind):
    """Layer k's state at step t is what nn.LSTM reports as h_n/c_n for the first t+1 inputs."""
    rnn = _rnn(kind, num_layers=3, batch_first=True)
    x = torch.randn(2, 8, 5)
    layers, _ = unroll(rnn, x)
    for t in range(8):
        with torch.no_grad():
            _, state = rnn(x[:, :t + 1])
        h_n = state[0] if kind == "lstm" else state
        for k in range(3):
            torch.testing.assert_close(layers[k]["hidden"][:, t], h_n[k], atol=ATOL, rtol=0)
            if kind == "lstm":
                torch.testing.assert_close(layers[k]["cell"][:, t], state[1][k], atol=ATOL, rtol=0)


def test_lstm_gates_obey_the_cell_update_and_initial_state_is_used():
    rnn = _rnn("lstm", num_layers=2, batch_first=True)
    x = torch.randn(3, 5, 5)
    h0, c0 = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    layers, _ = unroll(rnn, x, hx=(h0, c0), gates=True)
    with torch.no_grad():
        out, _ = rnn(x, (h0, c0))
    torch.testing.assert_close(layers[1]["hidden"], out, atol=ATOL, rtol=0)
    L = layers[0]
    c_prev = torch.cat([c0[0].unsqueeze(1), L["cell"][:, :-1]], dim=1)
    torch.testing.assert_close(L["cell"], L["gate_f"] * c_prev + L["gate_i"] * L["gate_g"], atol=ATOL, rtol=0)
    torch.testing.assert_close(L["hidden"], L["gate_o"] * torch.tanh(L["cell"]), atol=ATOL, rtol=0)
    assert L["gate_i"].min() >= 0 and L["gate_i"].max() <= 1


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_lstm_with_projections():
    rnn = _rnn("lstm", num_layers=2, batch_first=True, proj_size=3)
    x = torch.randn(2, 6, 5)
    layers, _ = unroll(rnn, x)
    with torch.no_grad():
        out, (h_n, c_n) = rnn(x)
    assert layers[0]["hidden"].shape == (2, 6, 3) and layers[0]["cell"].shape == (2, 6, 7)
    torch.testing.assert_close(layers[1]["hidden"], out, atol=ATOL, rtol=0)
    torch.testing.assert_close(layers[0]["cell"][:, -1], c_n[0], atol=ATOL, rtol=0)


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("kw", [
    {"num_layers": 1, "batch_first": True, "bidirectional": True},
    {"num_layers": 3, "batch_first": False},
    {"num_layers": 2, "batch_first": True, "bidirectional": True, "bias": False},
    {"num_layers": 2, "batch_first": True, "bidirectional": True, "proj_size": 3},
])
@pytest.mark.parametrize("initial", [False, True])
def test_per_step_states_from_the_module_output_equal_the_unrolled_ones(kind, kw, initial):
    """The fast path of extract-genome (hidden states from the module's own kernel, cells from them)
    gives what the step-by-step unroll gives, for every layer, both directions and an initial state."""
    if kind == "gru" and "proj_size" in kw:
        return
    rnn = _rnn(kind, **kw)
    x = torch.randn(3, 11, 5) if kw["batch_first"] else torch.randn(11, 3, 5)
    dirs = 2 if rnn.bidirectional else 1
    H_out = kw.get("proj_size") or 7
    hx = None
    if initial:
        h0 = torch.randn(rnn.num_layers * dirs, 3, H_out)
        hx = (h0, torch.randn(rnn.num_layers * dirs, 3, 7)) if kind == "lstm" else h0
    with torch.no_grad():
        output = rnn(x, hx)
    fast = per_step_states(rnn, x, hx, output)
    slow, _ = unroll(rnn, x, hx=hx)
    assert [sorted(layer) for layer in fast] == [sorted(layer) for layer in slow]
    for mine, theirs in zip(fast, slow):
        for key in theirs:
            torch.testing.assert_close(mine[key], theirs[key], atol=ATOL, rtol=0)
    # Without the module's output every layer is computed; without cells only hidden states come back.
    alone = per_step_states(rnn, x, hx, cells=False)
    assert all(sorted(layer) == ["hidden"] for layer in alone)
    torch.testing.assert_close(alone[-1]["hidden"], slow[-1]["hidden"], atol=ATOL, rtol=0)
