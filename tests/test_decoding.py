"""Greedy decoding and sampling: cached generation equals uncached, determinism, the sliding window."""

import pytest
import torch

from lmlab import GPT, GPTConfig
from lmlab.decoding import greedy, sample


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(3)
    return GPT(GPTConfig.preset("micro", vocab_size=20, block_size=16)).eval()


def greedy_without_cache(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ctx = torch.tensor([ids[-model.block_size :]])
        ids.append(int(model(ctx).logits[0, -1].argmax()))
    return ids


def test_greedy_equals_uncached_argmax_loop_also_past_block_size(model):
    prompt = [1, 2, 3]
    got = greedy(model, prompt, max_new_tokens=30)  # 33 tokens > block_size 16: the window slides
    assert got == greedy_without_cache(model, prompt, 30)
    assert got[:3] == prompt and len(got) == 33


def test_greedy_stops_at_eos(model):
    full = greedy(model, [1], max_new_tokens=10)
    eos = full[4]
    stopped = greedy(model, [1], max_new_tokens=10, eos_token_id=eos)
    assert stopped == full[: full.index(eos, 1) + 1]


def test_sampling_is_reproducible_and_temperature_zero_is_greedy(model):
    a = sample(model, [1, 2], max_new_tokens=20, generator=torch.Generator().manual_seed(5))
    b = sample(model, [1, 2], max_new_tokens=20, generator=torch.Generator().manual_seed(5))
    c = sample(model, [1, 2], max_new_tokens=20, generator=torch.Generator().manual_seed(6))
    assert a == b and a != c
    assert sample(model, [1, 2], max_new_tokens=20, temperature=0) == greedy(model, [1, 2], max_new_tokens=20)


def test_top_k_one_is_greedy(model):
    got = sample(model, torch.tensor([4]), max_new_tokens=12, top_k=1, generator=torch.Generator().manual_seed(0))
    assert got == greedy(model, [4], max_new_tokens=12)


def test_sampling_follows_the_model_distribution(model):
    # first sampled token: empirical frequencies vs the softmax, 4000 draws, within 5 standard errors
    probs = torch.softmax(model(torch.tensor([[7]])).logits[0, -1], -1)
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(20)
    for _ in range(4000):
        counts[sample(model, [7], max_new_tokens=1, generator=g)[-1]] += 1
    freq = counts / 4000
    se = (probs * (1 - probs) / 4000).sqrt()
    assert torch.all((freq - probs).abs() <= 5 * se + 1e-3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0"),
        (dict(max_new_tokens=3, temperature=-0.5), "temperature must be >= 0"),
        (dict(max_new_tokens=3, top_k=-2), "top_k must be None or an integer >= 0"),
    ],
)
def test_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(model, [1], **kwargs)


def test_empty_prompt_is_rejected(model):
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        greedy(model, [], max_new_tokens=3)
    with pytest.raises(TypeError, match="encode the text"):
        greedy(model, "hello", max_new_tokens=3)
