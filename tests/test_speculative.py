"""Self-speculative greedy decoding: exactly greedy's tokens; the acceptance counts of a brute-force
reference; exact forward-pass counts with perfect and useless draft heads; eos, max_new_tokens and the
context limit as greedy has them; and `lmlab bench speculative` end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.cli import main
from lmlab.generation import SpeculativeStats, accept_drafts, greedy, speculative_greedy
from lmlab.lm import LMOutput
from lmlab.models import GPT, GPTConfig, KVCache, MultiTokenGPT


def real_model(n_future: int, seed: int, dtype: torch.dtype = torch.float64, block_size: int = 48) -> MultiTokenGPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=20, block_size=block_size, n_layer=2, n_head=2, n_embd=32)
    return MultiTokenGPT(cfg, n_future).to(dtype).eval()


@pytest.mark.parametrize("n_future", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_tokens_as_greedy(n_future, dtype):
    drafted = 0
    for seed in range(3):
        m = real_model(n_future, seed, dtype)
        g = torch.Generator().manual_seed(seed)
        for P in (1, 5):
            prompt = torch.randint(0, 20, (P,), generator=g).tolist()
            for N in (0, 1, 2, 17, 60):  # 60: past block_size 48, where both slide the window
                for eos in (None, 3):
                    want = greedy(m, prompt, max_new_tokens=N, eos_token_id=eos)
                    got, stats = speculative_greedy(m, prompt, max_new_tokens=N, eos_token_id=eos, return_stats=True)
                    assert got == want, (seed, P, N, eos)
                    assert stats.new_tokens == len(want) - P
                    assert stats.forward_passes <= max(N, 0)
                    drafted += stats.drafted
    assert drafted > 0


def test_fewer_drafts_and_none():
    m = real_model(4, 0)
    prompt = [1, 2, 3]
    want = greedy(m, prompt, max_new_tokens=30)
    for n_draft in (0, 1, 2, 3):
        got, stats = speculative_greedy(m, prompt, max_new_tokens=30, n_draft=n_draft, return_stats=True)
        assert got == want
        assert len(stats.drafted_by_head) == n_draft
    assert stats.drafted == sum(stats.drafted_by_head) and stats.accepted == sum(stats.accepted_by_head)
    _, plain = speculative_greedy(m, prompt, max_new_tokens=30, n_draft=0, return_stats=True)
    assert plain.forward_passes == 30 and plain.drafted == 0 and math.isnan(plain.acceptance_rate)
    assert plain.tokens_per_pass == 1.0


# ------------------------------------------------------------------------------------------ a model with known heads
def successor(t: int, V: int) -> int:
    return (3 * t + 1) % V


class ChainLM(nn.Module):
    """A deterministic language, next = (3 t + 1) mod V, that head 1 knows perfectly. Head k (k >= 2) at a
    position holding token t drafts the true token k ahead when ``right(k, t)``, else a wrong one. Its head
    states are one-hot vectors read by an identity unembedding; its cache is a KVCache with one layer per
    head (capacity and crop checked by the cache itself)."""

    def __init__(self, n_future: int, right, V: int = 11, block_size: int = 64) -> None:
        super().__init__()
        self.n_future, self.right, self.vocab_size, self.context_limit = n_future, right, V, block_size
        self.lm_head = nn.Identity()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device

    def head_token(self, k: int, t: int) -> int:
        true = t
        for _ in range(k):
            true = successor(true, self.vocab_size)
        return true if k == 1 or self.right(k, t) else (true + 1) % self.vocab_size

    def new_cache(self, batch_size: int = 1, max_len: int | None = None, *, heads: int = 1) -> KVCache:
        return KVCache(heads, 1, 1, batch_size, max_len or self.context_limit)

    def _check(self, T: int, cache: KVCache | None) -> None:
        past = 0 if cache is None else cache.length
        if past + T > (self.context_limit if cache is None else cache.capacity):
            raise ValueError("more tokens than the model or the cache can take")

    def head_states(self, idx: torch.Tensor, *, cache: KVCache | None = None) -> torch.Tensor:
        self._check(idx.shape[1], cache)
        heads = self.n_future if cache is None else len(cache.k)
        tokens = [[[self.head_token(k, t) for t in row] for row in idx.tolist()] for k in range(1, heads + 1)]
        if cache is not None:
            cache.advance(idx.shape[1])
        return F.one_hot(torch.tensor(tokens), self.vocab_size).double()  # (heads, B, T, V)

    def forward(self, idx: torch.Tensor, targets=None, *, cache: KVCache | None = None, **_) -> LMOutput:
        self._check(idx.shape[1], cache)
        if cache is not None:
            cache.advance(idx.shape[1])
        nxt = idx.clone().apply_(lambda t: successor(t, self.vocab_size))
        return LMOutput(F.one_hot(nxt, self.vocab_size).double())


def reference(model: ChainLM, prompt: list[int], N: int, n_draft: int, eos: int | None) -> tuple[list[int], dict]:
    """Blockwise parallel decoding by hand, on the known greedy sequence: (tokens, counts)."""
    seq = list(prompt)
    while len(seq) < len(prompt) + N + 1:
        seq.append(successor(seq[-1], model.vocab_size))  # greedy's continuation, one spare
    done = len(prompt) + 1  # tokens known: the prompt and the prefill's token
    passes, per_step = 1, []
    while done < len(prompt) + N and (eos is None or eos not in seq[len(prompt) : done]):
        m = min(n_draft, len(prompt) + N - done - 1)
        drafts = [model.head_token(j + 1, seq[done - 2]) for j in range(1, m + 1)]  # from the last fed position
        a = 0
        while a < m and drafts[a] == seq[done + a]:
            a += 1
        per_step.append(a)
        passes += 1
        done += a + 1
    out = seq[len(prompt) : done]
    if eos is not None and eos in out:
        out = out[: out.index(eos) + 1]
    return prompt + out, dict(forward_passes=passes, accepted_per_step=per_step)


@pytest.mark.parametrize("H", [2, 3, 4])
def test_perfect_heads_accept_everything(H):
    m = ChainLM(H, right=lambda k, t: True)
    for N in (1, 2, 5, 13, 40):
        got, stats = speculative_greedy(m, [4], max_new_tokens=N, return_stats=True)
        assert got == greedy(m, [4], max_new_tokens=N)
        assert stats.forward_passes == 1 + math.ceil((N - 1) / H)
        assert stats.acceptance_rate == 1.0 if N > 2 else stats.drafted == 0  # the last token is never drafted
        assert stats.tokens_per_pass == N / stats.forward_passes


@pytest.mark.parametrize("H", [2, 3, 4])
def test_useless_heads_accept_nothing(H):
    m = ChainLM(H, right=lambda k, t: False)
    for N in (2, 5, 13):
        got, stats = speculative_greedy(m, [4], max_new_tokens=N, return_stats=True)
        assert got == greedy(m, [4], max_new_tokens=N)
        assert stats.forward_passes == N and stats.accepted == 0
        assert stats.acceptance_rate == 0.0 if N > 2 else stats.drafted == 0
        assert stats.drafted == sum(min(H - 1, N - i - 1) for i in range(1, N))


@pytest.mark.parametrize("H", [2, 3, 4])
def test_acceptance_matches_a_brute_force_reference(H):
    rules = {
        "even tokens": lambda k, t: t % 2 == 0,
        "head 2 only": lambda k, t: k == 2,
        "near heads on small tokens": lambda k, t: t < 12 - 3 * k,
    }
    for rule in rules.values():
        m = ChainLM(H, right=rule)
        for prompt in ([0], [5, 7]):
            for N in (1, 3, 10, 31):
                for n_draft in range(H):
                    for eos in (None, 2, 9):
                        want, counts = reference(m, prompt, N, n_draft, eos)
                        got, stats = speculative_greedy(
                            m, prompt, max_new_tokens=N, n_draft=n_draft, eos_token_id=eos, return_stats=True
                        )
                        assert got == want == greedy(m, prompt, max_new_tokens=N, eos_token_id=eos)
                        assert stats.forward_passes == counts["forward_passes"]
                        assert stats.accepted_per_step == counts["accepted_per_step"]
                        assert stats.accepted == sum(counts["accepted_per_step"])


def test_context_limit_slides_as_greedy_does():
    m = ChainLM(3, right=lambda k, t: True, block_size=10)
    got, stats = speculative_greedy(m, [1, 2, 3], max_new_tokens=20, return_stats=True)
    assert got == greedy(m, [1, 2, 3], max_new_tokens=20)
    # the prefill reads 3 tokens; passes of 3, 3 and (room for) 1 token fill the 10 positions, giving 1 + 3 + 3
    # + 1 = 8 tokens; then the window slides, one token per pass, for the other 12
    assert stats.forward_passes == 1 + 3 + 12
    long_prompt = list(range(11)) * 2  # longer than the context: no cache at all, every token by sliding
    got, stats = speculative_greedy(m, long_prompt, max_new_tokens=5, return_stats=True)
    assert got == greedy(m, long_prompt, max_new_tokens=5) and stats.forward_passes == 5 and stats.drafted == 0


def test_accept_drafts():
    t = torch.tensor
    assert accept_drafts(t([], dtype=torch.long), t([4])) == 0
    assert accept_drafts(t([1, 2, 3]), t([1, 2, 3, 4])) == 3
    assert accept_drafts(t([1, 9, 3]), t([1, 2, 3, 4])) == 1  # the draft after a wrong one does not count
    assert accept_drafts(t([0, 2]), t([1, 2, 3])) == 0


def test_bad_arguments_say_what_is_allowed():
    m = real_model(3, 0)
    with pytest.raises(TypeError, match="multi-token model such as lmlab.models.MultiTokenGPT"):
        speculative_greedy(GPT(GPTConfig(vocab_size=20, n_layer=1, n_embd=32)), [1], max_new_tokens=3)
    with pytest.raises(ValueError, match=r"n_draft must be an integer in \[0, 2\]"):
        speculative_greedy(m, [1], max_new_tokens=3, n_draft=3)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        speculative_greedy(m, [1], max_new_tokens=-1)
    with pytest.raises(ValueError, match="eos_token_id must be None or an integer in"):
        speculative_greedy(m, [1], max_new_tokens=3, eos_token_id=20)
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        speculative_greedy(m, [], max_new_tokens=3)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32, attention="sliding_window", window=4)
    with pytest.raises(ValueError, match="cannot do; use a model with full attention"):
        speculative_greedy(MultiTokenGPT(cfg, 2).eval(), [1], max_new_tokens=3)


def test_stats_properties():
    s = SpeculativeStats(new_tokens=10, forward_passes=4, drafted=8, accepted=6)
    assert s.acceptance_rate == 0.75 and s.tokens_per_pass == 2.5
    assert math.isnan(SpeculativeStats().acceptance_rate) and math.isnan(SpeculativeStats().tokens_per_pass)


# ------------------------------------------------------------------------------------------ the bench
def test_bench_speculative_runs_and_prints_its_table(capsys):
    assert main(["bench", "speculative", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "speculative bench" in out and "plain greedy" in out
    for H in (2, 3, 4):
        assert f"\n  {H} heads" in out or f"\n  {H}" in out
    assert "identical: yes" in out
