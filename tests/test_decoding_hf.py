"""lmlab.generation against Hugging Face transformers on the same (randomly initialised) GPT-2 weights.

Beam search is compared with ``generate(num_beams=..., do_sample=False)`` over a grid of beam counts,
length penalties and early-stopping modes; greedy decoding and sampling with ``generate``; and
``warp_logits`` with transformers' logits processors, bit for bit. Nothing is downloaded.
"""

import itertools
import random

import pytest
import torch

from lmlab import GPT
from lmlab.generation import beam_search, greedy, sample, warp_logits

transformers = pytest.importorskip("transformers")
lp_mod = pytest.importorskip("transformers.generation.logits_process")


def hf_gpt2(seed: int, vocab_size: int = 10, eos: int = 2, scale: float = 0.5, eos_boost: float = 2.0):
    """A random GPT-2 with peaked next-token distributions (weights of std ``scale``, not 0.02, so that
    the top candidates are not near-ties) and EOS made likely: the final LayerNorm's bias gets a component
    along EOS's (tied) output embedding, adding about ``eos_boost`` to EOS's logit everywhere."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=2, activation_function="gelu",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=eos, pad_token_id=eos,
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if ".ln_" in name or "ln_f" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, scale)
        w = hf.transformer.wte.weight[eos]
        hf.transformer.ln_f.bias.add_(eos_boost * w / w.dot(w))
    return hf


def hf_beams(hf, prompt, **kw):
    """transformers' sequences (padding after EOS stripped) and sequence scores (None for greedy search)."""
    x = torch.tensor([prompt])
    out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, output_scores=True,
                      return_dict_in_generate=True, pad_token_id=kw["eos_token_id"], **kw)
    seqs = []
    for row in out.sequences.tolist():
        gen = row[len(prompt):]
        if kw["eos_token_id"] in gen:
            gen = gen[: gen.index(kw["eos_token_id"]) + 1]
        seqs.append(row[: len(prompt)] + gen)
    scores = getattr(out, "sequences_scores", None)
    return seqs, None if scores is None else scores.tolist()


def assert_same_beams(hf, ours, prompt, **kw):
    seqs, scores = hf_beams(hf, prompt, **kw)
    hyps = beam_search(ours, prompt, **kw)
    assert [h.tokens for h in hyps] == seqs, kw
    if scores is not None:  # num_beams=1 runs greedy search in transformers: no scores
        for h, s in zip(hyps, scores, strict=True):
            # compare the summed log-probs to 1e-4: a length_penalty < 0 multiplies the ~1e-6 differences of
            # the two implementations' logits by length ** -length_penalty (81 for 9 tokens and -2), so the
            # scores themselves are compared through the exact normalisation formula
            norm = (len(h.tokens) - len(prompt)) ** kw.get("length_penalty", 1.0)
            assert h.logprob == pytest.approx(s * norm, abs=1e-4), kw
            assert h.score == pytest.approx(h.logprob / norm, rel=1e-6), kw
    return seqs


@pytest.fixture(scope="module", params=[0, 2, 4])  # seeds whose models reach EOS early with every beam count
def models(request):
    hf = hf_gpt2(request.param)
    return hf, GPT.from_hf_gpt2(hf).eval(), [request.param, 5, 7, 1]


@pytest.mark.parametrize("num_beams", [1, 2, 3, 4])
def test_beam_search_equals_transformers(models, num_beams):
    hf, ours, prompt = models
    ended_early = 0
    for length_penalty, early_stopping in itertools.product([0.0, -0.5, 1.0, 2.0], [True, False, "never"]):
        seqs = assert_same_beams(hf, ours, prompt, num_beams=num_beams, max_new_tokens=8, length_penalty=length_penalty,
                                 early_stopping=early_stopping, num_return_sequences=num_beams, eos_token_id=2)
        ended_early += sum(len(s) < len(prompt) + 8 for s in seqs)
    assert ended_early > 0  # EOS was reached before the length limit, so the finishing rules were exercised


def test_beam_search_without_eos_and_with_fewer_return_sequences(models):
    hf, ours, prompt = models
    x = torch.tensor([prompt])
    out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, num_beams=3, max_new_tokens=6,
                      num_return_sequences=2, eos_token_id=None, pad_token_id=0, output_scores=True,
                      return_dict_in_generate=True)
    hyps = beam_search(ours, prompt, num_beams=3, max_new_tokens=6, num_return_sequences=2)
    assert [h.tokens for h in hyps] == out.sequences.tolist()
    assert [h.score for h in hyps] == pytest.approx(out.sequences_scores.tolist(), abs=1e-4)


@pytest.mark.slow
def test_beam_search_equals_transformers_on_random_settings():
    rng = random.Random(0)
    for trial in range(120):
        V = rng.choice([4, 6, 8, 12])
        K = rng.randint(2, min(5, V // 2))  # vocab_size >= 2 * num_beams: see beam_search's deviation note
        eos = rng.randrange(V)
        hf = hf_gpt2(trial, vocab_size=V, eos=eos, scale=rng.choice([0.2, 0.5, 1.0]), eos_boost=rng.choice([0, 1, 3]))
        ours = GPT.from_hf_gpt2(hf).eval()
        prompt = [rng.randrange(V) for _ in range(rng.randint(1, 6))]
        assert_same_beams(hf, ours, prompt, num_beams=K, max_new_tokens=rng.randint(1, 12),
                          length_penalty=rng.choice([0.0, -2.0, -0.5, 0.5, 1.0, 3.0]),
                          early_stopping=rng.choice([True, False, "never"]),
                          num_return_sequences=rng.randint(1, K), eos_token_id=eos)


def test_greedy_equals_transformers(models):
    hf, ours, prompt = models
    seqs, _ = hf_beams(hf, prompt, num_beams=1, max_new_tokens=20, eos_token_id=2)
    assert greedy(ours, prompt, max_new_tokens=20, eos_token_id=2) == seqs[0]


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.8), dict(min_p=0.1, temperature=1.5),
     dict(repetition_penalty=1.5, top_k=4, top_p=0.9)],
)
def test_sampling_equals_transformers_with_the_same_seed(kw):
    hf = hf_gpt2(0, vocab_size=12, scale=0.3, eos_boost=0.5)
    ours = GPT.from_hf_gpt2(hf).eval()
    prompt = [1, 5, 7]
    x = torch.tensor([prompt])
    for seed in range(4):
        torch.manual_seed(seed)
        out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=True, max_new_tokens=15, eos_token_id=2,
                          pad_token_id=2, **{"top_k": 0, **kw})[0].tolist()  # generate's default top_k is 50
        if 2 in out[3:]:
            out = out[: 3 + out[3:].index(2) + 1]
        torch.manual_seed(seed)  # both draw from PyTorch's global generator
        assert sample(ours, prompt, max_new_tokens=15, eos_token_id=2, **kw) == out


@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.8, top_p=0.9), dict(repetition_penalty=1.3, top_k=6)])
def test_batched_samples_equal_transformers_num_return_sequences(kw):
    """16 samples of one prompt, drawn together, are generate(num_return_sequences=16)'s for the same seed:
    both draw all rows of a step at once from one generator. Rows that produced EOS repeat it (transformers
    pads them with pad_token_id, here also the EOS id)."""
    from lmlab.generation import sample_batch

    hf = hf_gpt2(1, vocab_size=12, scale=0.3, eos_boost=0.5)
    ours = GPT.from_hf_gpt2(hf).eval()
    x = torch.tensor([[1, 5, 7]])
    for seed in range(3):
        torch.manual_seed(seed)
        out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=True, max_new_tokens=15, eos_token_id=2,
                          pad_token_id=2, num_return_sequences=16, **{"top_k": 0, **kw})[:, 3:]  # fmt: skip
        rows = sample_batch(ours, [1, 5, 7], num_samples=16, max_new_tokens=15, eos_token_id=2,
                            generator=torch.Generator().manual_seed(seed), **kw)  # fmt: skip
        assert torch.equal(rows, out)


def hf_processors(temperature, top_k, top_p, min_p, repetition_penalty):
    """The processors transformers' generate(do_sample=True) builds for these options, in its order."""
    procs = lp_mod.LogitsProcessorList()
    if repetition_penalty != 1.0:
        procs.append(lp_mod.RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if temperature != 1.0:
        procs.append(lp_mod.TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(lp_mod.TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        procs.append(lp_mod.TopPLogitsWarper(top_p))
    if min_p is not None:
        procs.append(lp_mod.MinPLogitsWarper(min_p))
    return procs


def warp_cases():
    g = torch.Generator().manual_seed(0)
    yield "random", torch.randn(4, 12, generator=g) * 3
    yield "ties", torch.randint(-3, 4, (4, 12), generator=g).float()
    x = torch.randn(4, 12, generator=g)
    x[0, 3] = 1e4
    x[1, 5] = -1e4
    x[2, :4] = float("-inf")
    x[3, 7] = x[3, 8] = 1e4
    yield "extreme", x


@pytest.mark.parametrize("name, logits", list(warp_cases()))
def test_warp_logits_equals_transformers_processors(name, logits):
    prev = torch.randint(0, 12, (4, 7), generator=torch.Generator().manual_seed(1))
    grid = itertools.product([1.0, 1.3, 0.7], [1.0, 0.5, 2.0], [None, 0, 1, 3, 50], [None, 0.05, 0.5, 0.9, 1.0],
                             [None, 0.0, 0.1, 0.5, 1.0])
    for rp, t, k, p, mp in grid:
        ref = hf_processors(t, k, p, mp, rp)(prev, logits.clone())
        got = warp_logits(logits, prev, temperature=t, top_k=k, top_p=p, min_p=mp, repetition_penalty=rp)
        assert torch.equal(got, ref), (name, rp, t, k, p, mp)
        one = warp_logits(logits[1], prev[1], temperature=t, top_k=k, top_p=p, min_p=mp, repetition_penalty=rp)
        assert torch.equal(one, ref[1]), (name, rp, t, k, p, mp)
