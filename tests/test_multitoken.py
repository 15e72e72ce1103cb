"""MultiTokenGPT (Gloeckle et al. 2024): with one head it is a GPT; its loss is the sum of the heads'
shifted cross-entropies; its extra heads' logits are never kept for backward together; it works with the
trainer, likelihood scoring and the decoders through head 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmlab.generation import beam_search, greedy, sample
from lmlab.likelihood import token_logprobs
from lmlab.models import GPT, GPTConfig, KVCache, MultiTokenGPT
from lmlab.train import Trainer

V, BLOCK = 20, 16


def config(**overrides) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32), **overrides})


def model(n_future: int = 3, seed: int = 0, **kw) -> MultiTokenGPT:
    torch.manual_seed(seed)
    return MultiTokenGPT(config(**kw.pop("cfg", {})), n_future, **kw)


def batch(B: int = 2, T: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


# ------------------------------------------------------------------------------------------ one head is a GPT
@pytest.mark.parametrize("tie", [True, False])
def test_one_head_is_exactly_a_gpt(tie):
    torch.manual_seed(0)
    gpt = GPT(config(tie_weights=tie)).eval()
    mtp = MultiTokenGPT.from_gpt(gpt, 1).eval()
    x, y = batch()
    a, b = gpt(x, y), mtp(x, y)
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=0)
    torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=0)
    assert mtp.num_params() == gpt.num_params() and mtp.num_params(False) == gpt.num_params(False)
    assert mtp.flops_per_token() == gpt.flops_per_token() and mtp.flops_per_token(5) == gpt.flops_per_token(5)
    # and the other way: a fresh one-head model's weights copied into a GPT give the same logits
    fresh = model(1, seed=3, cfg=dict(tie_weights=tie)).eval()
    torch.testing.assert_close(fresh.to_gpt()(x).logits, fresh(x).logits, rtol=0, atol=0)


def test_head_one_of_a_many_head_model_is_its_gpt():
    torch.manual_seed(0)
    gpt = GPT(config()).eval()
    mtp = MultiTokenGPT.from_gpt(gpt, 3).eval()  # extra heads start as copies of head 1
    x, _ = batch()
    torch.testing.assert_close(mtp(x).logits, gpt(x).logits, rtol=0, atol=0)
    states = mtp.head_states(x)  # (3, B, T, C): three equal heads
    torch.testing.assert_close(states[2], states[0], rtol=0, atol=0)
    torch.testing.assert_close(mtp.to_gpt()(x).logits, gpt(x).logits, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ the loss
def test_loss_is_the_sum_of_shifted_cross_entropies():
    m = model(3).eval()
    x, y = batch(T=8)
    B, T = y.shape
    states = m.head_states(x)  # (3, B, T, C)
    expected = []
    for k in range(3):  # head k + 1 at position t predicts y[:, t + k], i.e. the token k + 1 ahead of x[:, t]
        logits = m.lm_head(states[k])[:, : T - k]  # (B, T - k, V)
        expected.append(F.cross_entropy(logits.reshape(-1, V), y[:, k:].reshape(-1)))
    losses = m.head_losses(x, y)
    torch.testing.assert_close(losses, torch.stack(expected))
    torch.testing.assert_close(m(x, y).loss, sum(expected))
    torch.testing.assert_close(m(x, y).logits, m.lm_head(states[0]))
    # "sum" and "none" agree with each other, per head and summed
    none = m(x, y, reduction="none")
    assert none.loss.shape == (B, T)
    torch.testing.assert_close(none.loss.sum(), m(x, y, reduction="sum").loss)
    torch.testing.assert_close(m.head_losses(x, y, reduction="none").sum((1, 2)), m.head_losses(x, y, reduction="sum"))
    # a mask applies to every head, aligned with the targets
    mask = torch.ones_like(y)
    mask[:, 5:] = 0
    masked = m.head_losses(x, y, loss_mask=mask, reduction="sum")
    torch.testing.assert_close(masked, m.head_losses(x[:, :5], y[:, :5], reduction="sum"))


def test_a_head_with_nothing_to_predict_adds_nothing():
    m = model(4).eval()
    x, y = batch(T=2)  # head 3 and 4 look 3 and 4 tokens ahead: no target in a window of 2
    losses = m.head_losses(x, y)
    assert losses[2] == 0 and losses[3] == 0
    torch.testing.assert_close(m(x, y).loss, losses.sum())


# ------------------------------------------------------------------------------------------ memory
def saved_logits(m: MultiTokenGPT, x: torch.Tensor, y: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(distinct (B, T, V)-sized tensors saved for backward during the forward pass, the loss)."""
    B, T = x.shape
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() == B * T * V and t.shape[-1] == V:
            seen.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = m(x, y).loss
    return len(seen), loss


@pytest.mark.parametrize("n_future", [2, 4])
def test_heads_logits_are_not_kept_together(n_future):
    x, y = batch(B=2, T=8)
    frugal, naive = model(n_future), model(n_future, checkpoint_heads=False)
    n_frugal, loss_frugal = saved_logits(frugal, x, y)
    n_naive, loss_naive = saved_logits(naive, x, y)
    assert n_naive == n_future  # the check sees every head's logits in the naive version...
    assert n_frugal == 1  # ...and only head 1's (which forward returns) in the checkpointed one
    torch.testing.assert_close(loss_frugal, loss_naive)
    loss_frugal.backward()
    loss_naive.backward()
    grads = dict(naive.named_parameters())
    for name, p in frugal.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name)


def test_checkpointed_heads_replay_dropout():
    x, y = batch()
    grads = []
    for checkpointed in (True, False):
        m = model(3, checkpoint_heads=checkpointed, cfg=dict(dropout=0.2)).train()
        torch.manual_seed(7)
        m(x, y).loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], msg=name)


# ------------------------------------------------------------------------------------------ decoding state
def test_cached_head_states_equal_the_full_pass():
    m = model(3).double().eval()
    x, _ = batch(B=1, T=10)
    full = m.head_states(x)  # (3, 1, 10, C)
    cache = m.new_cache(1, heads=3)
    assert isinstance(cache, KVCache) and len(cache.k) == 1 + 3
    parts = [m.head_states(x[:, :4], cache=cache), m.head_states(x[:, 4:7], cache=cache)]
    cache.crop(6)  # forget position 6, then read it again with the rest
    parts[-1] = parts[-1][:, :, :2]
    parts.append(m.head_states(x[:, 6:], cache=cache))
    torch.testing.assert_close(torch.cat(parts, dim=2), full)
    assert cache.length == 10
    # the default cache holds head 1 only: a GPT's cache, as the engine uses it
    small = m.new_cache(1)
    assert len(small.k) == 2 and m.cached_heads(small) == 1
    torch.testing.assert_close(m(x[:, :6], cache=small).logits, m(x).logits[:, :6])


def test_decoders_and_likelihood_work_through_head_one():
    m = model(3).eval()
    gpt = m.to_gpt().eval()
    prompt = [1, 2, 3]
    assert greedy(m, prompt, max_new_tokens=20) == greedy(gpt, prompt, max_new_tokens=20)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert sample(m, prompt, max_new_tokens=10, generator=g1) == sample(gpt, prompt, max_new_tokens=10, generator=g2)
    beams = beam_search(m, prompt, num_beams=3, max_new_tokens=5)
    assert [h.tokens for h in beams] == [h.tokens for h in beam_search(gpt, prompt, num_beams=3, max_new_tokens=5)]
    ids = torch.randint(0, V, (30,), generator=torch.Generator().manual_seed(2))  # longer than block_size
    torch.testing.assert_close(token_logprobs(m, ids), token_logprobs(gpt, ids))


class TinyData:
    """Random tokens with get_batch / iter_split, as Trainer needs."""

    vocab_size = V

    def __init__(self) -> None:
        self.ids = torch.randint(0, V, (400,), generator=torch.Generator().manual_seed(0))

    def get_batch(self, split, batch_size, block_size, generator=None, device="cpu"):
        starts = torch.randint(0, self.ids.numel() - block_size - 1, (batch_size,), generator=generator)
        x = torch.stack([self.ids[s : s + block_size] for s in starts])
        y = torch.stack([self.ids[s + 1 : s + block_size + 1] for s in starts])
        return x.to(device), y.to(device)

    def iter_split(self, split, batch_size, block_size, device="cpu"):
        yield self.get_batch(split, batch_size, block_size, torch.Generator().manual_seed(1), device)


def test_trainer_trains_it_and_is_deterministic():
    finals = []
    for _ in range(2):
        m = model(2)
        history = Trainer(m, TinyData(), max_steps=3, batch_size=4, warmup_steps=1, progress=False, device="cpu",
                          eval_interval=3).fit()  # fmt: skip
        assert history.train[-1]["step"] == 3
        trainer = Trainer(m, TinyData(), max_steps=1, warmup_steps=1, progress=False)
        assert trainer.flops_per_token == m.flops_per_token(BLOCK)
        finals.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    torch.testing.assert_close(finals[0], finals[1], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="n_future must be an int >= 1"):
        MultiTokenGPT(config(), 0)
    for bad in (2.0, True, "2", None):
        with pytest.raises(TypeError, match="n_future must be an int >= 1"):
            MultiTokenGPT(config(), bad)
    with pytest.raises(TypeError, match="needs a GPTConfig"):
        MultiTokenGPT({"vocab_size": V}, 2)
    with pytest.raises(TypeError, match="checkpoint_heads"):
        MultiTokenGPT(config(), 2, checkpoint_heads="yes")
    with pytest.raises(TypeError, match="needs an lmlab GPT"):
        MultiTokenGPT.from_gpt(model(2), 2)
    m = model(2)
    with pytest.raises(ValueError, match=r"heads must be an int in \[1, 2\]"):
        m.new_cache(1, heads=3)
    with pytest.raises(ValueError, match="block_size 16"):
        m(torch.zeros(1, BLOCK + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction must be one of"):
        m(*batch(), reduction="avg")
    with pytest.raises(ValueError, match="targets or a cache"):
        x, y = batch()
        m(x, y, cache=m.new_cache(2))
