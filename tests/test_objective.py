"""lmlab.lessons.objective against independent references: exact formulas, brute force, torch's own functions."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmlab.lessons.objective import (
    best_window_loss,
    compare_next_tokens,
    conditional_entropies,
    diagnose_run,
    future_token_effect,
    lr_sweep,
    next_token_probs,
    pad_sequences,
    parameter_counts,
    position_losses,
    prefix_losses,
    product_of_probs,
    shape_trace,
    top_next_tokens,
    train_bigram,
)
from lmlab.likelihood import aggregate, token_logprobs
from lmlab.models import GPT, BigramLM, GPTConfig, bigram_counts
from lmlab.text.synthetic import MarkovSource, markov_token_data


@pytest.fixture(scope="module")
def gpt() -> GPT:
    torch.manual_seed(3)
    return GPT(GPTConfig.preset("micro", vocab_size=11, block_size=12)).eval()


@pytest.fixture(scope="module")
def source() -> MarkovSource:
    return MarkovSource(6, 1, seed=4)


# ---------------------------------------------------------------------------------------------- chain rule
def test_log_space_survives_where_the_product_underflows():
    probs = [0.01] * 400  # true product 1e-800: below float64's smallest number
    assert product_of_probs(probs, torch.float32) == 0.0
    assert product_of_probs(probs, torch.float64) == 0.0
    assert product_of_probs(probs[:30], torch.float32) == 0.0  # 1e-60 is below float32's smallest number (1.4e-45)
    assert product_of_probs(probs[:20], torch.float64) == pytest.approx(1e-40, rel=1e-9)
    assert math.fsum(math.log(p) for p in probs) == pytest.approx(400 * math.log(0.01), rel=1e-12)
    assert product_of_probs([0.5] * 10) == 2.0**-10  # exact in binary


def test_product_of_probs_input_types():
    with pytest.raises(TypeError):
        product_of_probs([0.5], dtype=torch.int64)
    with pytest.raises(TypeError):
        product_of_probs("0.5")


# ---------------------------------------------------------------------------------------------- next token
def test_next_token_probs_is_softmax_of_last_logits(gpt):
    ctx = [1, 4, 2, 7]
    expected = F.softmax(gpt(torch.tensor([ctx])).logits[0, -1], -1)
    got = next_token_probs(gpt, ctx)
    torch.testing.assert_close(got, expected.detach())
    assert float(got.sum()) == pytest.approx(1.0, abs=1e-6)


def test_next_token_probs_reads_only_the_last_block(gpt):
    long = list(range(11)) * 3  # 33 tokens > block_size 12
    torch.testing.assert_close(next_token_probs(gpt, long), next_token_probs(gpt, long[-12:]))
    with pytest.raises(ValueError, match="empty"):
        next_token_probs(gpt, [])


def test_next_token_probs_restores_training_mode(gpt):
    gpt.train()
    next_token_probs(gpt, [1, 2])
    assert gpt.training
    gpt.eval()


def test_true_model_gives_the_true_distribution(source):
    model = source.as_model()
    ctx = [3, 1, 5]
    np.testing.assert_allclose(next_token_probs(model, ctx).numpy(), source.next_token_probs(ctx), rtol=1e-6)
    top = top_next_tokens(model, source, source.decode(ctx), k=3)
    p = source.next_token_probs(ctx)
    best = np.argsort(-p, kind="stable")[:3]
    assert [w for w, _ in top] == [source.words[i] for i in best]
    assert [q for _, q in top] == pytest.approx(p[best].tolist(), rel=1e-6)


def test_compare_next_tokens_ranks_by_the_first_model(source, gpt):
    truth = source.as_model()
    uniform = BigramLM(6)
    labels, probs = compare_next_tokens({"truth": truth, "uniform": uniform}, source, source.decode([2]), k=4)
    p = source.next_token_probs([2])
    assert labels == [source.words[i] for i in np.argsort(-p, kind="stable")[:4]]
    assert probs["uniform"] == pytest.approx([1 / 6] * 4)
    with pytest.raises(ValueError, match="tokens"):
        compare_next_tokens({"truth": truth, "gpt": gpt}, source, "ba", k=2)


# ---------------------------------------------------------------------------------------------- bigram by descent
def test_gradient_descent_reaches_the_count_mle(source):
    ids = source.sample(2000, generator=5)
    model, losses = train_bigram(ids, 6, steps=300, lr=0.3)
    assert losses[0] == pytest.approx(math.log(6), rel=1e-6)  # zero logits: uniform
    P = BigramLM.from_counts(bigram_counts(ids, 6), dtype=torch.float64).probs()
    assert (model.probs().double() - P).abs().max() < 5e-3
    mle_nll = -float(torch.log(P[ids[:-1], ids[1:]]).mean())
    assert losses[-1] == pytest.approx(mle_nll, abs=1e-4)
    assert min(losses) >= mle_nll - 1e-6  # the MLE is the minimum of the loss


def test_train_bigram_is_deterministic_and_leaves_unseen_rows_uniform():
    ids = [0, 1, 2, 0, 1, 2, 0]  # token 3 never appears
    a, la = train_bigram(ids, 4, steps=50, optimizer="sgd", lr=5.0)
    b, lb = train_bigram(ids, 4, steps=50, optimizer="sgd", lr=5.0)
    assert la == lb
    torch.testing.assert_close(a.probs()[3], torch.full((4,), 0.25))
    calls = []
    train_bigram(ids, 4, steps=3, callback=lambda step, loss: calls.append(step))
    assert calls == [0, 1, 2]
    with pytest.raises(ValueError, match="optimizer"):
        train_bigram(ids, 4, optimizer="lbfgs")


# ---------------------------------------------------------------------------------------------- teacher forcing
def test_one_pass_equals_the_loop_over_prefixes(gpt):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 11, (13,), generator=g)  # 12 inputs fill block_size exactly
    one = position_losses(gpt, ids)
    loop = prefix_losses(gpt, ids)
    assert one.shape == (12,)
    torch.testing.assert_close(one, loop, atol=1e-5, rtol=1e-5)
    # token_logprobs reads the target inside its window, so one pass of it covers block_size tokens
    torch.testing.assert_close(one[:11], -token_logprobs(gpt, ids[:12]), atol=1e-5, rtol=1e-5)


def test_one_pass_on_the_exact_model(source):
    ids = source.sample(30, generator=2)
    model = source.as_model()
    torch.testing.assert_close(position_losses(model, ids), prefix_losses(model, ids), atol=1e-6, rtol=1e-6)
    expected = -torch.from_numpy(source.token_logprobs(ids)).float()
    torch.testing.assert_close(position_losses(model, ids), expected, atol=1e-6, rtol=1e-6)


def test_scoring_input_checks(gpt):
    with pytest.raises(ValueError, match="context_limit"):
        position_losses(gpt, list(range(11)) * 2)
    with pytest.raises(ValueError, match="at least 2"):
        prefix_losses(gpt, [3])


def test_future_tokens_do_not_change_past_logits(gpt):
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    effect = future_token_effect(gpt, ids, position=5)
    assert effect.shape == (8,)
    assert torch.all(effect[:5] == 0)
    assert torch.all(effect[5:] > 0)
    with pytest.raises(ValueError, match="position"):
        future_token_effect(gpt, ids, position=8)


# ---------------------------------------------------------------------------------------------- model tour
@pytest.mark.parametrize("tie", [True, False])
def test_parameter_counts_add_up(tie):
    config = GPTConfig.preset("micro", vocab_size=20, block_size=16, tie_weights=tie)
    model = GPT(config)
    parts = parameter_counts(model)
    assert sum(parts.values()) == model.num_params(non_embedding=False)
    C, L = config.n_embd, config.n_layer
    assert parts["token embedding"] == 20 * C
    assert parts["position embedding"] == 16 * C
    assert parts["output head"] == (0 if tie else 20 * C)
    assert parts["attention"] == L * (C * 3 * C + 3 * C + C * C + C)
    assert parts["MLP"] == L * (C * 4 * C + 4 * C + 4 * C * C + C)
    assert parts["layer norms"] == (2 * L + 1) * 2 * C


def test_shape_trace(gpt):
    trace = dict(shape_trace(gpt, torch.zeros(2, 5, dtype=torch.long)))
    C = gpt.config.n_embd
    assert trace["transformer.wte"] == (2, 5, C)
    assert trace["transformer.wpe"] == (5, C)
    assert trace["transformer.h.1.attn"] == (2, 5, C)
    assert trace["lm_head"] == (2, 5, 11)
    with pytest.raises(TypeError):
        shape_trace(BigramLM(3), torch.zeros(1, 2, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- known language
def _joint_entropy_brute_force(src: MarkovSource, n: int) -> float:
    seqs = np.array(list(itertools.product(range(src.vocab_size), repeat=n)))
    lp = src.sequence_logprob(seqs)
    return float(-(np.exp(lp) * lp).sum())


@pytest.mark.parametrize("order", [1, 2])
def test_conditional_entropies_by_brute_force(order):
    src = MarkovSource(3, order, seed=2, concentration=0.7)
    h = conditional_entropies(src, 5)
    joint = [0.0] + [_joint_entropy_brute_force(src, n) for n in range(1, 6)]
    np.testing.assert_allclose(h, np.diff(joint), rtol=1e-9, atol=1e-12)
    assert h[-1] == pytest.approx(src.entropy_rate(), rel=1e-9)
    assert np.all(np.diff(h) <= 1e-12)  # more context never hurts


def test_best_window_loss(source):
    assert best_window_loss(source, 16) == pytest.approx(source.entropy_rate(), rel=1e-12)
    src2 = MarkovSource(4, 2, seed=1)
    h = conditional_entropies(src2, 9)
    assert best_window_loss(src2, 8) == pytest.approx(h[1:].mean(), rel=1e-12)
    assert best_window_loss(src2, 8) > src2.entropy_rate()
    # the true model's mean loss over many windows estimates it (standard error ~ 0.01 here)
    windows = src2.sample(9, generator=0, batch_size=4000)
    loss = src2.as_model()(windows[:, :-1], windows[:, 1:]).loss
    assert float(loss) == pytest.approx(best_window_loss(src2, 8), abs=0.04)


# ---------------------------------------------------------------------------------------------- runs
def test_lr_sweep_same_start_and_divergence(source):
    data = markov_token_data(source, 2000, 200, seed=0)
    res = lr_sweep(data, [1e-3, 1e3], steps=4, batch_size=4)
    assert list(res) == [1e-3, 1e3]
    assert res[1e-3][0] == pytest.approx(res[1e3][0], rel=1e-6)  # same weights, same first batch
    assert len(res[1e-3]) == 4
    assert diagnose_run(res[1e3]) in ("diverged", "spiking")
    with pytest.raises(ValueError, match="learning rate"):
        lr_sweep(data, [0.0])


def test_diagnose_run():
    assert diagnose_run([2.0, 1.5, float("nan")]) == "diverged"
    assert diagnose_run([2.0, 5.0, 1.0, 1.0]) == "spiking"
    assert diagnose_run([2.0] * 10 + [1.99]) == "stalled"
    assert diagnose_run([2.0, 1.8, 1.5, 1.2, 1.0]) == "learning"
    with pytest.raises(ValueError):
        diagnose_run([1.0])


def test_pad_sequences_with_aggregate():
    ids, mask = pad_sequences([[1, 2, 3], [4]], pad=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    losses = torch.tensor([[1.0, 1.0, 1.0], [4.0, 9.0, 9.0]])
    assert float(aggregate(losses, mask, "mean_per_token")) == pytest.approx(7 / 4)
    assert float(aggregate(losses, mask, "mean_per_sequence")) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        pad_sequences([])
