"""attention="linear": causal linear attention (Katharopoulos et al. 2020) in three forms that agree, a
fixed-size decoding state, the same engine."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lmlab.generation import beam_search, exact_search, greedy, sample_batch
from lmlab.models import GPT, GPTConfig, StateCache
from lmlab.models.gpt import (
    linear_attention_chunked,
    linear_attention_quadratic,
    linear_attention_step,
    linear_feature_map,
)

BASE = GPTConfig(vocab_size=11, block_size=40, n_layer=2, n_head=2, n_embd=16, attention="linear")


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The paper's eq. 6 read literally, one query at a time: sum_{s<=t} phi(q_t)·phi(k_s) v_s over the same sum
    without v_s (plus the 1e-6 the library adds to the normaliser)."""
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    out = torch.empty_like(v)
    for t in range(q.shape[2]):
        w = (phi_q[:, :, t : t + 1] * phi_k[:, :, : t + 1]).sum(-1)  # (B, nh, t + 1)
        out[:, :, t] = (w.unsqueeze(-1) * v[:, :, : t + 1]).sum(2) / (w.sum(-1, keepdim=True) + 1e-6)
    return out


def qkv(T: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, T, 8, generator=g, dtype=torch.float64) for _ in range(3))


def test_the_feature_map_is_elu_plus_one_and_positive():
    x = torch.linspace(-30, 5, 200, dtype=torch.float64)
    torch.testing.assert_close(linear_feature_map(x), torch.where(x > 0, x + 1, torch.exp(x)))
    assert torch.all(linear_feature_map(x) > 0)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_quadratic_chunked_and_recurrent_forms_equal_the_definition(chunk):
    q, k, v = qkv(37)
    want = reference(q, k, v)
    pq, pk = linear_feature_map(q), linear_feature_map(k)
    y_quadratic, s_quadratic = linear_attention_quadratic(pq, pk, v)
    y_chunked, s_chunked = linear_attention_chunked(pq, pk, v, chunk=chunk)
    state = (torch.zeros(2, 3, 8, 8, dtype=torch.float64), torch.zeros(2, 3, 8, dtype=torch.float64))
    steps = []
    for t in range(37):  # the recurrent form, token by token
        y, state = linear_attention_step(pq[:, :, t], pk[:, :, t], v[:, :, t], state)
        steps.append(y)
    for y in (y_quadratic, y_chunked, torch.stack(steps, dim=2)):
        torch.testing.assert_close(y, want, atol=1e-10, rtol=1e-10)
    # the final state is the sum over every token of phi(k) vᵀ and of phi(k)
    S = torch.einsum("bhti,bhtj->bhij", pk, v)
    for s in (s_quadratic, s_chunked, state):
        torch.testing.assert_close(s[0], S)
        torch.testing.assert_close(s[1], pk.sum(2))


def test_a_state_carries_the_prefix_over():
    q, k, v = qkv(30, seed=1)
    pq, pk = linear_feature_map(q), linear_feature_map(k)
    whole, _ = linear_attention_chunked(pq, pk, v, chunk=8)
    _, state = linear_attention_quadratic(pq[:, :, :11], pk[:, :, :11], v[:, :, :11])
    for form in (linear_attention_quadratic, linear_attention_chunked):
        rest, _ = form(pq[:, :, 11:], pk[:, :, 11:], v[:, :, 11:], state)
        torch.testing.assert_close(rest, whole[:, :, 11:], atol=1e-10, rtol=1e-10)


def test_the_chunked_form_has_the_gradients_of_the_quadratic_one():
    q, k, v = (t.requires_grad_() for t in qkv(29, seed=2))
    grads = []
    for form in (linear_attention_quadratic, lambda a, b, c: linear_attention_chunked(a, b, c, chunk=8)):
        y, _ = form(linear_feature_map(q), linear_feature_map(k), v)
        grads.append(torch.autograd.grad((y * torch.cos(y)).sum(), (q, k, v)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def twin(config: GPTConfig, **changes) -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    a = GPT(config).eval()
    b = GPT(replace(config, **changes)).eval()
    b.load_state_dict(a.state_dict())
    return a, b


def test_naive_and_chunked_implementations_give_the_same_model():
    naive, auto = twin(replace(BASE, attention_impl="naive"), attention_impl="auto")
    idx = torch.randint(0, 11, (3, 40))
    torch.testing.assert_close(auto(idx).logits, naive(idx).logits, atol=1e-5, rtol=1e-5)
    _, sdpa = twin(BASE, attention_impl="sdpa")
    torch.testing.assert_close(sdpa(idx).logits, naive(idx).logits, atol=1e-5, rtol=1e-5)


def test_the_weights_are_causal_positive_and_normalised():
    torch.manual_seed(0)
    model = GPT(BASE).eval()
    w = model.attention_weights(torch.randint(0, 11, (2, 12)))  # (L, B, nh, T, T)
    future = torch.triu(torch.ones(12, 12, dtype=torch.bool), diagonal=1)
    assert torch.all(w[..., future] == 0) and torch.all(w[..., ~future] > 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 2, 12))
    # position 0 sees only itself: weight 1 whatever the inputs
    assert torch.all(w[..., 0, 0] == 1)


@pytest.mark.parametrize("impl", ["naive", "auto"])
def test_cached_decoding_scores_every_token_as_one_pass_does(impl):
    torch.manual_seed(0)
    model = GPT(replace(BASE, attention_impl=impl)).eval()
    idx = torch.randint(0, 11, (2, 40))
    want = model(idx).logits
    cache = model.new_cache(2)
    assert isinstance(cache, StateCache)
    steps = [model(idx[:, :9], cache=cache).logits]  # a prompt, then one token at a time
    size = cache.nbytes
    for t in range(9, 40):
        steps.append(model(idx[:, t : t + 1], cache=cache).logits)
        assert cache.nbytes == size, "the state does not grow with the text"
    torch.testing.assert_close(torch.cat(steps, dim=1), want, atol=1e-5, rtol=1e-5)
    # per layer: S (B, nh, hs, hs) and z (B, nh, hs), float32
    assert size == 2 * (2 * 2 * 8 * 8 + 2 * 2 * 8) * 4
    assert cache.length == 40


def test_every_decoder_gives_the_same_tokens_with_and_without_the_state():
    torch.manual_seed(0)
    model = GPT(BASE).eval()
    prompt = [1, 2, 3, 4]
    assert greedy(model, prompt, max_new_tokens=30) == greedy(model, prompt, max_new_tokens=30, use_cache=False)
    cached = beam_search(model, prompt, num_beams=3, max_new_tokens=8)
    uncached = beam_search(model, prompt, num_beams=3, max_new_tokens=8, use_cache=False)
    assert [h.tokens for h in cached] == [h.tokens for h in uncached]
    best = exact_search(model, prompt, max_new_tokens=3, eos_token_id=0, return_tree=False)
    with torch.no_grad():
        ids = torch.tensor([best.tokens])
        logp = model(ids[:, :-1]).logits.log_softmax(-1)[0, len(prompt) - 1 :].gather(-1, ids[0, len(prompt) :, None])
    assert best.logprob == pytest.approx(logp.sum().item(), abs=1e-4)
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    assert torch.equal(
        sample_batch(model, prompt, num_samples=4, max_new_tokens=20, generator=g1),
        sample_batch(model, prompt, num_samples=4, max_new_tokens=20, generator=g2, use_cache=False),
    )


def test_the_state_restores_a_snapshot_but_cannot_be_cropped():
    torch.manual_seed(0)
    model = GPT(BASE).eval()
    cache = model.new_cache(1)
    model(torch.tensor([[1, 2, 3, 4]]), cache=cache)
    saved = cache.snapshot()
    after = model(torch.tensor([[5]]), cache=cache).logits
    model(torch.tensor([[6, 7]]), cache=cache)
    cache.restore(saved)
    assert cache.length == 4
    torch.testing.assert_close(model(torch.tensor([[5]]), cache=cache).logits, after)
    with pytest.raises(ValueError, match="cannot be cropped"):
        cache.crop(2)


def test_flops_per_token_counts_the_state_not_the_context():
    n = GPT(BASE)
    N = n.num_params(non_embedding=True) + n.lm_head.weight.numel()
    hs = BASE.head_size
    assert n.flops_per_token(40) == 6 * N + 12 * 2 * 16 * hs
    assert n.flops_per_token(40) == n.flops_per_token(10)
    w = GPT(replace(BASE, attention="sliding_window", window=4))
    assert w.flops_per_token(40) == 6 * N + 12 * 2 * 16 * 4
    assert w.flops_per_token(3) == 6 * N + 12 * 2 * 16 * 3


def test_it_learns_a_pattern_that_needs_the_past():
    torch.manual_seed(0)
    model = GPT(replace(BASE, vocab_size=8, block_size=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):  # each row repeats 3 random tokens: after the first 3, every token is predictable
        x = torch.randint(0, 8, (16, 3), generator=g).repeat(1, 6)[:, :17]
        targets = x[:, 1:].clone()
        targets[:, :2] = -100
        loss = model(x[:, :-1], targets).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # a model that ignored the past could do no better than ln 8 = 2.08 nats
    assert sum(losses[-10:]) / 10 < 1.75  # (it learns more slowly than softmax attention: no sharp lookup)
