"""attention="sliding_window": a band of the causal mask, a bounded decoding cache, the same engine."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lmlab.generation import beam_search, exact_search, greedy, sample_batch
from lmlab.models import GPT, GPTConfig, SlidingWindowCache

BASE = GPTConfig(vocab_size=11, block_size=24, n_layer=2, n_head=2, n_embd=16)


def twin(config: GPTConfig, **changes) -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    a = GPT(config).eval()
    b = GPT(replace(config, **changes)).eval()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("impl", ["naive", "sdpa"])
@pytest.mark.parametrize("window", [24, 100])
def test_a_window_at_least_the_sequence_equals_full_attention(impl, window):
    full, sliding = twin(replace(BASE, attention_impl=impl), attention="sliding_window", window=window)
    idx = torch.randint(0, 11, (3, 24))
    torch.testing.assert_close(sliding(idx).logits, full(idx).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_each_position_sees_exactly_its_window(impl):
    torch.manual_seed(0)
    model = GPT(replace(BASE, attention="sliding_window", window=4, attention_impl=impl)).eval()
    w = model.attention_weights(torch.randint(0, 11, (2, 20)))  # (L, B, nh, T, T)
    t, s = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    band = (s <= t) & (s > t - 4)
    assert torch.all(w[..., ~band] == 0) and torch.all(w[..., band] > 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 2, 20))
    # the logits of position t depend only on tokens t-3..t of each layer's input: 2 layers reach back 6
    idx = torch.randint(0, 11, (1, 20))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % 11
    moved = (model(changed).logits - model(idx).logits).abs().amax(-1)[0]  # (T,)
    assert torch.all(moved[:5] == 0) and torch.all(moved[12:] == 0) and moved[5] > 0


def test_cached_decoding_scores_every_token_as_one_pass_does():
    torch.manual_seed(0)
    model = GPT(replace(BASE, attention="sliding_window", window=5)).eval()
    idx = torch.randint(0, 11, (2, 24))
    reference = model(idx).logits  # (2, 24, V), no cache
    cache = model.new_cache(2)
    assert isinstance(cache, SlidingWindowCache)
    steps = [model(idx[:, :7], cache=cache).logits]  # a prompt of 7, then one token at a time
    for t in range(7, 24):
        steps.append(model(idx[:, t : t + 1], cache=cache).logits)
        assert cache.kept == 4, "memory is bounded by the window"
    torch.testing.assert_close(torch.cat(steps, dim=1), reference, atol=1e-5, rtol=1e-5)
    assert cache.length == 24


def test_every_decoder_gives_the_same_tokens_with_and_without_the_cache():
    torch.manual_seed(0)
    model = GPT(replace(BASE, attention="sliding_window", window=3)).eval()
    prompt = [1, 2, 3, 4]
    assert greedy(model, prompt, max_new_tokens=40) == greedy(model, prompt, max_new_tokens=40, use_cache=False)
    beams = beam_search(model, prompt, num_beams=3, max_new_tokens=8)
    assert [h.tokens for h in beams] == [h.tokens for h in beam_search(model, prompt, num_beams=3, max_new_tokens=8,
                                                                        use_cache=False)]  # fmt: skip
    best = exact_search(model, prompt, max_new_tokens=3, eos_token_id=0, return_tree=False)  # snapshots, no crop
    with torch.no_grad():  # its score, recomputed in one uncached pass
        ids = torch.tensor([best.tokens])
        logp = model(ids[:, :-1]).logits.log_softmax(-1)[0, len(prompt) - 1 :].gather(-1, ids[0, len(prompt) :, None])
    assert best.logprob == pytest.approx(logp.sum().item(), abs=1e-4)
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    assert torch.equal(sample_batch(model, prompt, num_samples=4, max_new_tokens=30, generator=g1),
                       sample_batch(model, prompt, num_samples=4, max_new_tokens=30, generator=g2, use_cache=False))


def test_the_cache_cannot_be_cropped_but_restores_a_snapshot():
    torch.manual_seed(0)
    model = GPT(replace(BASE, attention="sliding_window", window=3)).eval()
    cache = model.new_cache(1)
    model(torch.tensor([[1, 2, 3, 4]]), cache=cache)
    saved = cache.snapshot()
    after = model(torch.tensor([[5]]), cache=cache).logits
    model(torch.tensor([[6]]), cache=cache)
    cache.restore(saved)
    assert cache.length == 4
    torch.testing.assert_close(model(torch.tensor([[5]]), cache=cache).logits, after)
    assert not cache.can_crop
    with pytest.raises(ValueError, match="cannot be cropped"):
        cache.crop(2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attention": "sliding_window"}, "window must be an integer >= 1"),
        ({"attention": "sliding_window", "window": 0}, "window must be an integer >= 1"),
        ({"window": 4}, "only for attention='sliding_window'"),
        ({"attention": "banded"}, "must be one of"),
    ],
)
def test_bad_configurations_say_what_is_allowed(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(BASE, **changes)


def test_compiled_decoding_is_for_full_attention_only():
    with pytest.raises(ValueError, match="attention='full' only"):
        GPT(replace(BASE, attention="sliding_window", window=4)).compile_decoding()


@pytest.mark.parametrize(("window", "T"), [(1, 9), (3, 24), (4, 13), (5, 11)])
def test_the_blocked_path_equals_the_explicit_band_with_its_gradients(window, T):
    # sdpa computes a whole sequence longer than 2 * window in blocks (cost ~ T * window); naive builds the band
    naive, blocked = twin(replace(BASE, attention="sliding_window", window=window, attention_impl="naive"),
                          attention_impl="sdpa")  # fmt: skip
    idx = torch.randint(0, 11, (2, T))
    outs = []
    for model in (naive, blocked):
        model.zero_grad()
        out = model(idx, idx)
        out.loss.backward()
        outs.append((out.logits, [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-5)
    for g_blocked, g_naive in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(g_blocked, g_naive, atol=1e-5, rtol=1e-4)
