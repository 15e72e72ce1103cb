"""The generation engine's cache protocol, exact search's memory, and the shared language-model contract.

The protocol is tested with a decoding state that is nothing like a KV cache: a recurrent model whose
state has a fixed size and cannot be cropped by position. Every decoder must give the same tokens with
that state as without it (re-reading the whole prefix), which is the reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.generation import beam_search, exact_search, greedy, prefill, sample, sample_batch
from lmlab.lm import IGNORE_INDEX, LMOutput, lm_loss
from lmlab.models import GPT, DecodeCache, GPTConfig, KVCache
from lmlab.text import MarkovSource


class RecurrentState:
    """A fixed-size decoding state: one vector per row, the summary of everything read so far."""

    def __init__(self, batch_size: int, width: int) -> None:
        self.h = torch.zeros(batch_size, width, dtype=torch.float64)
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.h.shape[0]

    @property
    def capacity(self) -> None:
        return None  # reads any number of tokens

    @property
    def can_crop(self) -> bool:
        return False

    def reorder(self, index: torch.Tensor) -> None:
        self.h = self.h.index_select(0, index)

    def crop(self, length: int) -> None:
        raise NotImplementedError("a recurrent state cannot forget by position; use snapshot/restore")

    def snapshot(self) -> tuple[torch.Tensor, int]:
        return self.h.clone(), self.length

    def restore(self, snapshot: tuple[torch.Tensor, int]) -> None:
        h, self.length = snapshot
        self.h = h.clone()


class TinyRNN(nn.Module):
    """h_t = tanh(E[x_t] + W h_{t-1}), logits_t = H h_t: a language model whose state is RecurrentState."""

    context_limit = None

    def __init__(self, vocab_size: int = 9, width: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size
        self.width = width
        self.emb = nn.Parameter(torch.randn(vocab_size, width, generator=g, dtype=torch.float64))
        self.rec = nn.Parameter(torch.randn(width, width, generator=g, dtype=torch.float64) * 0.7)
        self.head = nn.Parameter(torch.randn(vocab_size, width, generator=g, dtype=torch.float64) * 2)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> RecurrentState:
        return RecurrentState(batch_size, self.width)

    def forward(self, idx, targets=None, *, cache: RecurrentState | None = None, **_) -> LMOutput:
        B, T = idx.shape
        h = torch.zeros(B, self.width, dtype=torch.float64) if cache is None else cache.h
        outs = []
        for t in range(T):
            h = torch.tanh(self.emb[idx[:, t]] + h @ self.rec.T)
            outs.append(h @ self.head.T)
        if cache is not None:
            cache.h, cache.length = h, cache.length + T
        return LMOutput(torch.stack(outs, dim=1), None)


@pytest.fixture(scope="module")
def rnn() -> TinyRNN:
    return TinyRNN().eval()


def test_both_caches_follow_the_protocol():
    assert isinstance(RecurrentState(1, 2), DecodeCache)
    kv = GPT(GPTConfig.preset("micro", vocab_size=10)).new_cache(2, 8)
    assert isinstance(kv, KVCache) and isinstance(kv, DecodeCache)
    assert kv.capacity == 8 and kv.can_crop and kv.batch_size == 2
    kv.length = 5
    snap = kv.snapshot()
    kv.length = 7
    kv.restore(snap)
    assert kv.length == 5


def test_greedy_and_sampling_with_a_recurrent_state_equal_rereading_the_prefix(rnn):
    prompt = [1, 4, 2]
    assert greedy(rnn, prompt, max_new_tokens=25) == greedy(rnn, prompt, max_new_tokens=25, use_cache=False)
    for seed in range(3):
        a = sample(rnn, prompt, max_new_tokens=20, generator=torch.Generator().manual_seed(seed), top_p=0.9)
        b = sample(rnn, prompt, max_new_tokens=20, generator=torch.Generator().manual_seed(seed), top_p=0.9,
                   use_cache=False)  # fmt: skip
        assert a == b


def test_beam_search_reorders_a_recurrent_state(rnn):
    for k in (2, 3, 5):
        with_state = beam_search(rnn, [3, 3], num_beams=k, max_new_tokens=8, num_return_sequences=k)
        reread = beam_search(rnn, [3, 3], num_beams=k, max_new_tokens=8, num_return_sequences=k, use_cache=False)
        assert [h.tokens for h in with_state] == [h.tokens for h in reread]
        assert [h.score for h in with_state] == pytest.approx([h.score for h in reread], abs=1e-9)


def test_exact_search_restores_a_state_that_cannot_be_cropped(rnn):
    """Exact search returns to the prompt's state for every prefix it expands: snapshot and restore."""
    best = exact_search(rnn, [2, 5], max_new_tokens=4, eos_token_id=0, return_tree=False)
    # brute force over every continuation of up to 4 tokens (ending at 0 or at the limit)
    import itertools

    def logprob(gen):
        ids = torch.tensor([[2, 5, *gen]])
        logp = torch.log_softmax(rnn(ids).logits[0].double(), -1)
        return float(sum(logp[1 + i, t] for i, t in enumerate(gen)).detach())

    candidates = [g for n in range(1, 5) for g in itertools.product(range(9), repeat=n)
                  if (0 not in g[:-1]) and (g[-1] == 0 or n == 4)]  # fmt: skip
    top = max(candidates, key=logprob)
    assert best.tokens == [2, 5, *top]
    assert best.logprob == pytest.approx(logprob(top), abs=1e-9)


def test_sample_batch_copies_a_recurrent_state_to_every_row(rnn):
    g = torch.Generator().manual_seed(0)
    rows = sample_batch(rnn, [1, 2], num_samples=5, max_new_tokens=6, generator=g, temperature=0)
    assert rows.tolist() == [greedy(rnn, [1, 2], max_new_tokens=6)[2:]] * 5


def test_prefill_sizes_no_cache_for_an_unbounded_state(rnn):
    logits, state = prefill(rnn, [1, 2, 3], max_new_tokens=4)
    assert isinstance(state.cache, RecurrentState) and state.cache.length == 3 and logits.shape == (1, 9)


# ---------------------------------------------------------------------------------------------- exact search memory
@pytest.mark.slow
def test_exact_search_memory_grows_with_expansions_not_with_the_vocabulary():
    """A GPT-2-sized vocabulary (50,257) and 1,500 expansions: keeping two (V,) tensors per expanded node, as
    a naive lazy search does, would take 1,500 x 2 x 50,257 x 8 bytes = 1.2 GB; this one stays far below."""
    script = textwrap.dedent(
        """
        import json, resource, torch
        from lmlab.generation import SearchBudgetExceeded, exact_search
        from lmlab.models import GPT, GPTConfig
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()
        exact_search(model, [1, 2], max_new_tokens=1, return_tree=False)  # warm-up: allocator, kernels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            exact_search(model, [1, 2], max_new_tokens=6, max_expansions=1500, return_tree=False)
            raise SystemExit("expected the budget to run out on a nearly uniform model")
        except SearchBudgetExceeded as err:
            expansions = err.expansions
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"expansions": expansions, "grown_mb": (after - before) / 1024}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["expansions"] >= 1500
    assert result["grown_mb"] < 300, result  # the naive layout needs about 1,200 MB here


# ---------------------------------------------------------------------------------------------- lm_loss and the model
def test_lm_loss_with_shifted_targets_scores_the_token_k_ahead():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 5, (2, 7), generator=g)
    targets[1, 5] = IGNORE_INDEX
    for k in (0, 1, 3):
        got = lm_loss(logits, targets, shift=k, reduction="none")  # (B, T)
        for b in range(2):
            for t in range(7):
                want = 0.0
                if t + k < 7 and targets[b, t + k] != IGNORE_INDEX:
                    want = float(F.cross_entropy(logits[b, t], targets[b, t + k]))
                assert float(got[b, t]) == pytest.approx(want, abs=1e-12)
        scored = [(b, t) for b in range(2) for t in range(7 - k) if targets[b, t + k] != IGNORE_INDEX]
        mean = sum(float(got[b, t]) for b, t in scored) / len(scored)
        assert float(lm_loss(logits, targets, shift=k)) == pytest.approx(mean, abs=1e-12)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4] = False  # the target at position 4 is not scored: with shift 2, logits[0, 2] are not
    got = lm_loss(logits, targets, shift=2, loss_mask=mask, reduction="none")
    assert float(got[0, 2]) == 0.0 and float(got[0, 1]) > 0.0
    with pytest.raises(ValueError, match="shift"):
        lm_loss(logits, targets, shift=7)
    with pytest.raises(ValueError, match="shift"):
        lm_loss(logits, targets, shift=-1)


def test_a_float64_model_keeps_float64_losses():
    src = MarkovSource(5, 2, seed=1)
    ids = src.sample(40, generator=0).unsqueeze(0)
    loss = src.as_model()(ids[:, :-1], ids[:, 1:]).loss
    assert loss.dtype == torch.float64
    exact = -float(src.token_logprobs(ids[0].numpy()).mean())  # MarkovSource's own float64 numbers
    assert float(loss) == pytest.approx(exact, rel=1e-12)
    model = GPT(GPTConfig.preset("micro", vocab_size=5)).double()
    assert model(ids[:, :20], ids[:, 1:21]).loss.dtype == torch.float64
    half = lm_loss(torch.randn(1, 3, 5).bfloat16(), torch.tensor([[0, 1, 2]]))
    assert half.dtype == torch.float32


def test_forward_returns_the_hidden_states_the_output_layer_reads():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("micro", vocab_size=30)).eval()
    idx = torch.randint(0, 30, (2, 9))
    logits, loss, hidden = model(idx, idx, return_hidden=True)
    assert hidden.shape == (2, 9, model.config.n_embd)
    torch.testing.assert_close(hidden @ model.lm_head.weight.T, logits)
    plain = model(idx, idx)
    assert len(plain) == 2 and torch.equal(plain.logits, logits) and torch.equal(plain.loss, loss)


@pytest.mark.slow
def test_the_model_compiles_as_one_graph_on_the_cpu():
    """No host synchronisation or other graph break in forward and lm_loss: fullgraph=True would fail."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("micro", vocab_size=40)).train()
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    idx = torch.randint(0, 40, (2, 16))
    eager = model(idx, idx)
    out = compiled(idx, idx)
    torch.testing.assert_close(out.logits, eager.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, eager.loss, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    assert model.transformer.wte.weight.grad is not None


# ---------------------------------------------------------------------------------------------- one loop for all
@pytest.fixture(scope="module")
def micro_gpt() -> GPT:
    torch.manual_seed(1)
    return GPT(GPTConfig.preset("micro", vocab_size=12, block_size=16)).eval()


def test_one_sample_row_is_sample(micro_gpt):
    """sample is one row of sample_batch: the same draws from the same generator."""
    for seed, opts in [(0, {}), (1, {"top_k": 4}), (2, {"repetition_penalty": 1.3, "temperature": 0.7})]:
        one = sample_batch(micro_gpt, [1, 2], num_samples=1, max_new_tokens=30,
                           generator=torch.Generator().manual_seed(seed), **opts)  # fmt: skip
        ref = sample(micro_gpt, [1, 2], max_new_tokens=30, generator=torch.Generator().manual_seed(seed), **opts)
        assert one[0].tolist() == ref[2:]


def test_sample_batch_rows_stop_at_eos_and_repeat_it(micro_gpt):
    rows = sample_batch(micro_gpt, [3], num_samples=40, max_new_tokens=25, eos_token_id=0,
                        generator=torch.Generator().manual_seed(0), temperature=1.5)  # fmt: skip
    assert rows.shape[0] == 40 and 1 <= rows.shape[1] <= 25
    ended = 0
    for row in rows.tolist():
        if 0 in row:
            ended += 1
            first = row.index(0)
            assert all(t == 0 for t in row[first:]), row  # after its EOS a row only repeats it
    assert ended > 0
    if rows.shape[1] < 25:  # cut early only when every row had finished
        assert ended == 40


def test_sample_batch_penalises_each_rows_own_history(micro_gpt):
    """With a repetition penalty each row is penalised for its own tokens, as sample penalises its one row."""
    g = torch.Generator().manual_seed(0)
    rows = sample_batch(micro_gpt, [1], num_samples=3, max_new_tokens=12, generator=g, temperature=0,
                        repetition_penalty=5.0)  # fmt: skip
    # temperature 0 is deterministic: every row is the greedy path with the penalty on its own history
    ref = sample(micro_gpt, [1], max_new_tokens=12, temperature=0, repetition_penalty=5.0)
    assert rows.tolist() == [ref[1:]] * 3
    assert len(set(ref[1:])) > 3  # a strong penalty keeps the path from repeating one token


def test_recording_a_tree_changes_no_output(micro_gpt):
    for k in (1, 3):
        plain = beam_search(micro_gpt, [4, 5], num_beams=k, max_new_tokens=10, eos_token_id=0, num_return_sequences=k)
        recorded, tree = beam_search(micro_gpt, [4, 5], num_beams=k, max_new_tokens=10, eos_token_id=0,
                                     num_return_sequences=k, return_tree=True)  # fmt: skip
        assert plain == recorded
        assert [tree.nodes[i].tokens for i in tree.results] == [tuple(h.tokens[2:]) for h in plain]
    tokens, tree = greedy(micro_gpt, [4, 5], max_new_tokens=10, return_tree=True)
    assert tokens == greedy(micro_gpt, [4, 5], max_new_tokens=10)
    assert tree.expansions == 10 and tree.nodes[tree.results[0]].tokens == tuple(tokens[2:])


@pytest.mark.slow
def test_compiled_decoding_gives_the_eager_tokens():
    """compile_decoding: one static-shape step per token (torch.compile), the same tokens as eager decoding."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("micro", vocab_size=50, block_size=48)).eval()
    prompt = [3, 1, 4, 1, 5]
    eager_greedy = greedy(model, prompt, max_new_tokens=60)  # past the context limit: the window slides
    eager_beam = beam_search(model, prompt, num_beams=3, max_new_tokens=12, num_return_sequences=3)
    eager_rows = sample_batch(model, prompt, num_samples=4, max_new_tokens=20,
                              generator=torch.Generator().manual_seed(1))  # fmt: skip
    model.compile_decoding()
    assert greedy(model, prompt, max_new_tokens=60) == eager_greedy
    beams = beam_search(model, prompt, num_beams=3, max_new_tokens=12, num_return_sequences=3)
    assert [h.tokens for h in beams] == [h.tokens for h in eager_beam]
    assert [h.score for h in beams] == pytest.approx([h.score for h in eager_beam], abs=1e-4)
    rows = sample_batch(model, prompt, num_samples=4, max_new_tokens=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rows, eager_rows)
    logits, state = prefill(model, prompt, max_new_tokens=3)
    assert state.cache.step_fn is not None and state.cache.capacity == model.context_limit
    model.compile_decoding(False)
    assert model.new_cache(1).step_fn is None
