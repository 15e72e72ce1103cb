"""lmlab.models.rnn: a GRU/LSTM language model against hand-written recurrences, its decoding state, and
the library's likelihood, generation and training code run on it unchanged."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from _train_support import make_data, small_config

from lmlab.generation import beam_search, exact_search, greedy, prefill, sample, sample_batch
from lmlab.likelihood import sequence_logprob, token_logprobs
from lmlab.lm import context_limit, lm_loss
from lmlab.models import GPT, RNNLM, GPTConfig, RNNConfig, StateCache
from lmlab.train import Callback, Trainer, load_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: a recurrence is T small sequential matmuls, and on a busy 2-core machine each of them
    waiting for a second thread made training steps 30x slower (495 ms against 15 ms for micro)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = RNNConfig(vocab_size=11, n_embd=8, n_hidden=12, n_layer=2)  # tied, with a 12 -> 8 projection


def make(seed: int = 0, **overrides) -> RNNLM:
    torch.manual_seed(seed)
    return RNNLM(dataclasses.replace(SMALL, **overrides)).eval()


# ---------------------------------------------------------------------------------------------- references
def gru_step(x, h, w_ih, w_hh, b_ih, b_hh, *, swap_update: bool = False):
    """One GRU step as the PyTorch nn.GRU docs write it (Cho et al. 2014): rows r, z, n of each matrix.

    ``swap_update`` uses h' = z n + (1 - z) h instead, the convention of Chung et al. 2014 (for a test that
    shows the comparison can fail)."""
    W_ir, W_iz, W_in = w_ih.chunk(3)
    W_hr, W_hz, W_hn = w_hh.chunk(3)
    b_ir, b_iz, b_in = b_ih.chunk(3)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    r = torch.sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
    z = torch.sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
    n = torch.tanh(x @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))
    return z * n + (1 - z) * h if swap_update else (1 - z) * n + z * h


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step as the PyTorch nn.LSTM docs write it (Hochreiter & Schmidhuber 1997): rows i, f, g, o."""
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def reference_logits(model: RNNLM, idx: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) from the model's own weights, in float64, one token and one layer at a time."""
    c = model.config
    p = {k: v.detach().double() for k, v in model.named_parameters()}
    B, T = idx.shape
    x = p["wte.weight"][idx]  # (B, T, E)
    for layer in range(c.n_layer):
        w = [p[f"layers.{layer}.{name}_l0"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h = torch.zeros(B, c.n_hidden, dtype=torch.float64)
        cell = torch.zeros_like(h)
        outs = []
        for t in range(T):
            if c.cell == "gru":
                h = gru_step(x[:, t], h, *w)
            else:
                h, cell = lstm_step(x[:, t], h, cell, *w)
            outs.append(h)
        x = torch.stack(outs, dim=1)  # (B, T, H)
    if "proj.weight" in p:
        x = x @ p["proj.weight"].T  # (B, T, E)
    head = p["lm_head.weight"] if "lm_head.weight" in p else p["wte.weight"]  # tied: listed once, as wte
    return x @ head.T


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize(
    "shape",
    [dict(n_layer=1, n_embd=12, n_hidden=12), dict(n_layer=2), dict(n_layer=2, tie_weights=False)],
    ids=["1-layer-tied", "2-layer-projected", "2-layer-untied"],
)
def test_logits_equal_the_hand_written_recurrence(cell, shape):
    model = make(cell=cell, **shape)
    assert (model.proj is not None) == (shape.get("tie_weights", True) and model.config.n_hidden != model.config.n_embd)
    idx = torch.randint(0, 11, (3, 17))
    out = model(idx)
    assert out.logits.shape == (3, 17, 11) and out.loss is None
    torch.testing.assert_close(out.logits.double(), reference_logits(model, idx), atol=1e-5, rtol=1e-5)


def test_the_reference_pins_the_update_convention():
    """The comparison can fail: Chung et al. 2014 write the update the other way round, h' = z n + (1 - z) h;
    that recurrence, with the same weights, does not give the module's logits."""
    model = make(n_layer=1, n_embd=12, n_hidden=12)
    idx = torch.randint(0, 11, (2, 9))
    p = {k: v.detach().double() for k, v in model.named_parameters()}
    w = [p[f"layers.0.{name}_l0"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    x, h = p["wte.weight"][idx], torch.zeros(2, 12, dtype=torch.float64)
    outs = []
    for t in range(9):
        h = gru_step(x[:, t], h, *w, swap_update=True)
        outs.append(h)
    swapped = torch.stack(outs, dim=1) @ p["wte.weight"].T
    assert not torch.allclose(swapped, model(idx).logits.double(), atol=1e-3)
    torch.testing.assert_close(reference_logits(model, idx), model(idx).logits.double(), atol=1e-5, rtol=1e-5)


def test_tied_weights_share_one_matrix_and_init_is_as_documented():
    model = make(cell="lstm")
    assert model.lm_head.weight is model.wte.weight
    assert model.wte.weight.abs().max() <= 0.1 and model.proj.weight.abs().max() <= 0.1
    H = SMALL.n_hidden
    for layer in model.layers:  # forget-gate bias 1 in total, the rest in U(-1/sqrt(H), 1/sqrt(H))
        total = layer.bias_ih_l0 + layer.bias_hh_l0
        assert torch.all(total[H : 2 * H] == 1.0)
        assert layer.weight_hh_l0.abs().max() <= 1 / math.sqrt(H)
    untied = make(tie_weights=False)
    assert untied.proj is None and untied.lm_head.weight.shape == (11, 12)
    assert make(seed=3).state_dict().keys() == make(seed=4).state_dict().keys()
    for (name, a), b in zip(make(seed=3).state_dict().items(), make(seed=3).state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # deterministic for a seed
    assert not torch.equal(make(seed=3).wte.weight, make(seed=4).wte.weight)


def test_dropout_acts_on_the_non_recurrent_connections_in_training_only():
    model = make(n_layer=3, dropout=0.5).train()
    seen = []
    model.drop.register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))
    idx = torch.randint(0, 11, (2, 6))
    a, b = model(idx).logits, model(idx).logits
    # the embeddings (E = 8), then the output of each of the 3 layers (H = 12), on every call
    assert seen == [(2, 6, 8), (2, 6, 12), (2, 6, 12), (2, 6, 12)] * 2
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(idx).logits, model(idx).logits, atol=0, rtol=0)
    torch.testing.assert_close(model(idx).logits.double(), reference_logits(model, idx), atol=1e-5, rtol=1e-5)


def test_loss_reductions_masks_and_hidden_states_follow_lm_loss():
    model = make()
    idx = torch.randint(0, 11, (2, 10))
    targets = torch.randint(0, 11, (2, 10))
    mask = torch.rand(2, 10) > 0.3
    logits, loss, hidden = model(idx, targets, loss_mask=mask, reduction="sum", return_hidden=True)
    torch.testing.assert_close(loss, lm_loss(logits, targets, loss_mask=mask, reduction="sum"))
    want = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(model(idx, targets, reduction="none").loss, want)
    torch.testing.assert_close(model(idx, targets).loss, want.mean())
    assert hidden.shape == (2, 10, 8)  # what the tied output layer reads: the projection's output
    torch.testing.assert_close(hidden @ model.wte.weight.T, logits)


# ---------------------------------------------------------------------------------------------- decoding state
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cached_decoding_equals_one_pass(cell):
    model = make(cell=cell)
    idx = torch.randint(0, 11, (2, 30))
    want = model(idx).logits
    cache = model.new_cache(2)
    assert isinstance(cache, StateCache) and cache.capacity is None and cache.length == 0
    steps = [model(idx[:, :7], cache=cache).logits]  # the prompt, then one token at a time (and a chunk of 3)
    size = cache.nbytes
    per_layer = (1 if cell == "gru" else 2) * 2 * 12 * 4  # h (and c), (B, H) float32
    assert size == 2 * per_layer
    for t in range(7, 20):
        steps.append(model(idx[:, t : t + 1], cache=cache).logits)
        assert cache.nbytes == size, "the state does not grow with the text"
    steps.append(model(idx[:, 20:23], cache=cache).logits)
    steps += [model(idx[:, t : t + 1], cache=cache).logits for t in range(23, 30)]
    torch.testing.assert_close(torch.cat(steps, dim=1), want, atol=1e-5, rtol=1e-5)
    assert cache.length == 30
    for state in cache.states:  # batch first, one (B, H) tensor per part of the state
        assert [tuple(t.shape) for t in state] == [(2, 12)] * (1 if cell == "gru" else 2)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_reorder_selects_rows_like_beams_and_snapshots_restore(cell):
    model = make(cell=cell)
    prompt = torch.randint(0, 11, (3, 6))
    more = torch.randint(0, 11, (4, 5))
    cache = model.new_cache(3)
    model(prompt, cache=cache)
    rows = torch.tensor([2, 0, 0, 1])  # beams: reorder, repeat, drop none
    cache.reorder(rows)
    assert cache.batch_size == 4
    got = model(more, cache=cache).logits
    want = model(torch.cat([prompt[rows], more], dim=1)).logits[:, 6:]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    saved = cache.snapshot()
    after = model(more[:, :1], cache=cache).logits
    model(more[:, 1:3], cache=cache)
    assert cache.length == 14
    cache.restore(saved)
    assert cache.length == 11
    torch.testing.assert_close(model(more[:, :1], cache=cache).logits, after)
    with pytest.raises(ValueError, match="cannot be cropped"):
        cache.crop(3)


def test_a_wrong_cache_is_refused():
    model = make()
    idx = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="cache holds 1 sequences but idx has batch size 2"):
        model(idx, cache=model.new_cache(1))
    with pytest.raises(TypeError, match="cache must be a StateCache"):
        model(idx, cache=GPT(GPTConfig.preset("micro", vocab_size=11)).new_cache(2))
    with pytest.raises(ValueError, match="cache holds 1 layers' states but the model has 2"):
        model(idx, cache=StateCache(1, 2))
    other = make(n_hidden=8)
    cache = other.new_cache(2)
    other(idx, cache=cache)
    with pytest.raises(ValueError, match=r"layer 0 has shapes \[\(2, 8\)\]; this model needs \(2, 12\)"):
        model(idx, cache=cache)
    with pytest.raises(ValueError, match="max_len must be a positive int or None"):
        model.new_cache(1, 0)


# ---------------------------------------------------------------------------------------------- likelihood
def test_likelihood_reads_a_long_text_in_one_pass_and_agrees_with_the_loss():
    model = make(dropout=0.3).train()  # likelihood must switch dropout off, and give the mode back
    assert context_limit(model) is None
    ids = torch.randint(0, 11, (2, 400))
    calls = []
    handle = model.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    try:
        total = sequence_logprob(model, ids)
        per_token = token_logprobs(model, ids[0])
    finally:
        handle.remove()
    assert calls == [(2, 400), (1, 400)]  # no windows: the whole text, once
    assert model.training
    with torch.no_grad():
        logits = model.eval()(ids[:, :-1]).logits
    want = -lm_loss(logits, ids[:, 1:], reduction="none").sum(-1)  # by hand, from the logits
    torch.testing.assert_close(total, want, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(per_token, -lm_loss(logits[:1], ids[:1, 1:], reduction="none")[0])
    mask = torch.arange(400) % 3 == 0
    masked = sequence_logprob(model, ids, mask=mask.expand(2, 400))
    manual = -lm_loss(logits, ids[:, 1:], loss_mask=mask[1:].expand(2, 399), reduction="none").sum(-1)
    torch.testing.assert_close(masked, manual, atol=1e-4, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_every_decoder_runs_with_and_without_the_state(cell):
    model = make(cell=cell)
    prompt = [1, 2, 3, 4]
    cached = greedy(model, prompt, max_new_tokens=40)
    assert cached == greedy(model, prompt, max_new_tokens=40, use_cache=False)
    assert len(cached) == 44 and cached[:4] == prompt
    logits, state = prefill(model, prompt, max_new_tokens=5)
    assert isinstance(state.cache, StateCache) and state.cache.length == 4 and logits.shape == (1, 11)

    beams = beam_search(model, prompt, num_beams=3, max_new_tokens=8, num_return_sequences=3)
    reread = beam_search(model, prompt, num_beams=3, max_new_tokens=8, num_return_sequences=3, use_cache=False)
    assert [h.tokens for h in beams] == [h.tokens for h in reread]
    assert [h.score for h in beams] == pytest.approx([h.score for h in reread], abs=1e-5)

    a = sample(model, prompt, max_new_tokens=30, generator=torch.Generator().manual_seed(7), top_k=5)
    b = sample(model, prompt, max_new_tokens=30, generator=torch.Generator().manual_seed(7), top_k=5)
    c = sample(model, prompt, max_new_tokens=30, generator=torch.Generator().manual_seed(7), top_k=5, use_cache=False)
    d = sample(model, prompt, max_new_tokens=30, generator=torch.Generator().manual_seed(8), top_k=5)
    assert a == b == c and a != d
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    rows = sample_batch(model, prompt, num_samples=4, max_new_tokens=12, generator=g1)
    assert rows.shape == (4, 12)
    assert torch.equal(
        rows, sample_batch(model, prompt, num_samples=4, max_new_tokens=12, generator=g2, use_cache=False)
    )


def test_exact_search_finds_the_most_probable_continuation():
    model = make(vocab_size=5)
    prompt = [2, 1]
    best = exact_search(model, prompt, max_new_tokens=3, eos_token_id=0, return_tree=False)

    @torch.no_grad()
    def logprob(gen: tuple[int, ...]) -> float:
        ids = torch.tensor([[*prompt, *gen]])
        logp = torch.log_softmax(model(ids[:, :-1]).logits[0].double(), -1)
        return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(gen)))

    candidates = [g for n in range(1, 4) for g in itertools.product(range(5), repeat=n)
                  if 0 not in g[:-1] and (g[-1] == 0 or n == 3)]  # fmt: skip
    top = max(candidates, key=logprob)
    assert best.tokens == [*prompt, *top]
    assert best.logprob == pytest.approx(logprob(top), abs=1e-5)


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data():
    return make_data()


def micro(seed: int = 0, **overrides) -> RNNLM:
    torch.manual_seed(seed)
    return RNNLM(RNNConfig.preset("micro", **overrides))


class StopAt(Callback):
    def __init__(self, n: int) -> None:
        self.n = n

    def on_step(self, trainer, record):
        if record["step"] == self.n:
            trainer.should_stop = True


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_trainer_lowers_the_loss_on_repetitive_text(data, cell):
    config = small_config(max_steps=40, batch_size=8, lr=1e-2, warmup_steps=5, eval_interval=40, eval_batches=None)
    trainer = Trainer(micro(cell=cell), data, config)
    assert trainer.flops_per_token == micro(cell=cell).flops_per_token(16)
    history = trainer.fit()
    losses = [r["train_loss"] for r in history.train]
    assert len(losses) == 40 and history.stop_reason == "max_steps"
    assert losses[0] > 5.0  # about ln(256) = 5.55 at initialisation
    assert sum(losses[-5:]) / 5 < losses[0] - 2.0
    assert history.evals[-1]["val_loss"] < losses[0] - 2.0
    assert history.train[-1]["flops"] == history.train[-1]["tokens"] * trainer.flops_per_token


def test_the_trainer_needs_a_block_size_for_a_model_of_any_length(data):
    with pytest.raises(ValueError, match="set TrainConfig.block_size"):
        Trainer(micro(), data, small_config(block_size=None))
    budget = Trainer(micro(), data, small_config(max_steps=None, max_flops=1.2e8)).fit()  # 6N x 64 tokens a step
    assert budget.stop_reason == "max_flops" and budget.train[-1]["flops"] >= 1.2e8


def test_checkpoint_and_exact_resume(data, tmp_path):
    path = tmp_path / "rnn.pt"
    config = small_config(max_steps=10, eval_interval=5, checkpoint_path=str(path))
    full_model = micro(dropout=0.1)
    full = Trainer(full_model, data, dataclasses.replace(config, checkpoint_path=str(tmp_path / "full.pt"))).fit()
    Trainer(micro(dropout=0.1), data, config, callbacks=[StopAt(4)]).fit()
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 4 and ckpt["model_config"] == RNNConfig.preset("micro", dropout=0.1).to_dict()
    assert RNNConfig.from_dict(ckpt["model_config"]) == full_model.config

    resumed_model = micro(seed=99, dropout=0.1)
    resumed = Trainer(resumed_model, data, config).fit(resume_from=path)
    assert [r["train_loss"] for r in resumed.train] == [r["train_loss"] for r in full.train]
    for (name, p), q in zip(full_model.named_parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q), name
    with pytest.raises(ValueError, match=r"fields that differ: dropout \(checkpoint 0.1, model 0.0\)"):
        Trainer(micro(), data, config).fit(resume_from=path)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (dict(cell="transformer"), ValueError, r"cell must be one of \('gru', 'lstm'\), got 'transformer'"),
        (dict(cell="GRU"), ValueError, r"cell must be one of \('gru', 'lstm'\)"),
        (dict(cell=None), TypeError, "cell must be a string"),
        (dict(n_hidden=0), ValueError, "n_hidden must be a positive integer, got 0"),
        (dict(n_layer=-1), ValueError, "n_layer must be a positive integer, got -1"),
        (dict(vocab_size=0), ValueError, "vocab_size must be a positive integer"),
        (dict(n_embd=64.0), TypeError, "n_embd must be a positive integer, got float"),
        (dict(n_layer=True), TypeError, "n_layer must be a positive integer, got bool"),
        (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\), got 1.0"),
        (dict(dropout="0.1"), TypeError, "dropout must be a number"),
        (dict(tie_weights=1), TypeError, "tie_weights must be True or False"),
    ],
)  # fmt: skip
def test_bad_config_values_say_what_is_allowed(overrides, error, message):
    with pytest.raises(error, match=message):
        dataclasses.replace(SMALL, **overrides)


def test_config_round_trips_and_presets():
    assert RNNConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match=r"unknown RNNConfig field\(s\) \['block_size'\]"):
        RNNConfig.from_dict({**SMALL.to_dict(), "block_size": 64})
    with pytest.raises(ValueError, match="unknown preset 'huge'; known presets: micro, tiny"):
        RNNConfig.preset("huge")
    with pytest.raises(TypeError, match=r"unknown RNNConfig field\(s\) \['n_head'\]"):
        RNNConfig.preset("micro", n_head=4)
    assert RNNConfig.preset("tiny", cell="lstm").cell == "lstm"
    assert RNNLM(RNNConfig.preset("micro")).num_params(non_embedding=False) < 50_000
    with pytest.raises(TypeError, match="RNNLM needs an RNNConfig, got GPTConfig"):
        RNNLM(GPTConfig())


def test_bad_idx_is_refused_with_a_message():
    model = make()
    with pytest.raises(TypeError, match="idx must be a torch.Tensor of token ids, got list"):
        model([[1, 2]])
    with pytest.raises(ValueError, match=r"idx must have shape \(B, T\), got shape \(5,\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="idx must hold integer token ids, got dtype torch.float32"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="idx is empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        model(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))
    small = torch.tensor([[1, 2, 3]])
    for dtype in (torch.uint8, torch.int16, torch.int32):  # every integer type the check lets through works
        torch.testing.assert_close(model(small.to(dtype)).logits, model(small).logits)


def test_flops_per_token_counts_matmul_weights_six_times():
    model = make()  # GRU: 3H(E + H) + 3H(H + H), a 12 -> 8 projection, the tied 11 x 8 output layer
    N = 3 * 12 * (8 + 12) + 3 * 12 * (12 + 12) + 12 * 8 + 11 * 8
    assert model.flops_per_token(64) == model.flops_per_token(1) == model.flops_per_token() == 6 * N
    lstm = make(cell="lstm", tie_weights=False)
    assert lstm.flops_per_token(16) == 6 * (4 * 12 * (8 + 12) + 4 * 12 * (12 + 12) + 11 * 12)
    # every matmul weight is a parameter that is not a bias and not the embedding lookup (counted once more
    # when it is also the tied output layer)
    weights = sum(p.numel() for n, p in model.named_parameters() if "bias" not in n)
    assert 6 * weights == model.flops_per_token()
    assert model.num_params() == model.num_params(non_embedding=False) - 11 * 8
    with pytest.raises(ValueError, match="T must be an int >= 1 or None, got 0"):
        model.flops_per_token(0)
