"""lmlab.likelihood against independent references: F.cross_entropy, brute-force windows, exact models."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.likelihood import (
    DEFAULT_TEMPLATE,
    LN2,
    ChatTemplate,
    Evaluation,
    aggregate,
    bits_per_byte,
    bits_per_char,
    bits_per_token,
    bits_to_nats,
    dialogue_tokens,
    evaluate_text,
    nats_to_bits,
    nll,
    perplexity,
    render_dialogue,
    sequence_logprob,
    token_logprobs,
)
from lmlab.models import GPT, GPTConfig
from lmlab.text.synthetic import MarkovSource


@pytest.fixture(scope="module")
def gpt() -> GPT:
    torch.manual_seed(1)
    return GPT(GPTConfig.preset("micro", vocab_size=50, block_size=16)).eval()


def window_start(p: int, T: int, block_size: int, stride: int) -> int:
    """Independent statement of the context rule: where the window that scores target p begins."""
    if p < block_size:
        return 0
    j = (p - block_size) // stride + 1  # first window whose end block_size + j * stride exceeds p
    return min(block_size + j * stride, T) - block_size


def brute_force_logprobs(model, ids: torch.Tensor, block_size: int, stride: int) -> torch.Tensor:
    """Each target scored by its own forward pass over exactly the context the rule gives it."""
    B, T = ids.shape
    out = torch.empty(B, T - 1)
    for p in range(1, T):
        b = window_start(p, T, block_size, stride)
        assert p - b >= min(p, block_size - stride)  # the promised minimum context
        assert p - b < block_size  # the window fits the model
        logits = model(ids[:, b:p]).logits[:, -1]
        out[:, p - 1] = F.log_softmax(logits, -1).gather(-1, ids[:, p : p + 1])[:, 0]
    return out


class CharTokenizer:
    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    def encode(self, s: str) -> list[int]:
        return [self.stoi[c] for c in s]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


class Windowed(nn.Module):
    """An unlimited-context model restricted to context_limit tokens, as a GPT would be."""

    def __init__(self, inner: nn.Module, context_limit: int) -> None:
        super().__init__()
        self.inner, self.context_limit = inner, context_limit

    def forward(self, idx):
        if idx.shape[1] > self.context_limit:
            raise ValueError("context longer than context_limit")
        return self.inner(idx)


TURNS = [
    ("system", "Be brief."),
    ("user", "What is 2+2?"),
    ("assistant", "4."),
    ("user", "And 3+3?"),
    ("assistant", "6, of course."),
]


# ------------------------------------------------------------------ token log-probs
def test_token_logprobs_equal_log_softmax_gather(gpt):
    ids = torch.randint(0, 50, (3, 16))
    ref = F.log_softmax(gpt(ids).logits, -1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    got = token_logprobs(gpt, ids)
    assert got.shape == (3, 15) and got.dtype == torch.float32 and got.device == ids.device
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(token_logprobs(gpt, ids[1]), ref[1], rtol=0, atol=1e-6)  # 1-D in, 1-D out
    torch.testing.assert_close(token_logprobs(gpt, ids[1].tolist()), ref[1], rtol=0, atol=1e-6)
    # sequence_logprob sums the targets; 1-D input gives a 0-dim tensor
    torch.testing.assert_close(sequence_logprob(gpt, ids), ref.sum(1), rtol=0, atol=1e-5)
    assert sequence_logprob(gpt, ids[0]).shape == ()


@pytest.mark.parametrize("T", [17, 23, 50])
@pytest.mark.parametrize("stride", [1, 5, 8, 15, None])
def test_strided_windows_equal_brute_force(gpt, T, stride):
    ids = torch.randint(0, 50, (2, T))
    got = token_logprobs(gpt, ids, stride=stride, batch_size=5)
    ref = brute_force_logprobs(gpt, ids, 16, 8 if stride is None else stride)
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)


def test_windows_are_batched_without_changing_results(gpt):
    ids = torch.randint(0, 50, (1, 61))
    a = token_logprobs(gpt, ids, stride=3, batch_size=1)
    b = token_logprobs(gpt, ids, stride=3, batch_size=1000)
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5)


def test_strided_scoring_is_exact_for_a_markov_model_with_enough_context():
    src = MarkovSource(6, 2, 0)
    ids = src.sample(101, 0, batch_size=2)
    exact = src.token_logprobs(ids)
    for stride in (1, 3, 6):  # block_size - stride >= order: every scored token sees its full context
        got = token_logprobs(Windowed(src.as_model(), 8), ids, stride=stride)
        np.testing.assert_allclose(got.numpy(), exact, atol=1e-12)
    with pytest.raises(ValueError, match="stride"):
        token_logprobs(Windowed(src.as_model(), 8), ids, stride=8)


def test_markov_adapter_likelihood_equals_exact_sequence_logprob():
    src = MarkovSource(7, 3, 2)
    model = src.as_model()
    ids = src.sample(40, 1, batch_size=3)
    first = src.token_logprobs(ids, include_first=True)[:, 0]  # the first token is context only
    got = sequence_logprob(model, ids).numpy() + first
    np.testing.assert_allclose(got, src.sequence_logprob(ids), atol=1e-11)
    ev = evaluate_text(model, ids[0])
    assert ev.total_nats == pytest.approx(-(src.sequence_logprob(ids[0]) - first[0]), abs=1e-11)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: lambda idx: m(idx).logits,  # a plain tensor
        lambda m: lambda idx: (m(idx).logits, None),  # a tuple
        lambda m: lambda idx: SimpleNamespace(logits=m(idx).logits),  # an object with .logits
    ],
)
def test_any_output_kind_is_accepted(gpt, wrap):
    ids = torch.randint(0, 50, (2, 10))
    torch.testing.assert_close(token_logprobs(wrap(gpt), ids), token_logprobs(gpt, ids))


def test_model_scored_in_eval_mode_and_mode_restored():
    model = GPT(GPTConfig.preset("micro", vocab_size=20, block_size=8, dropout=0.5)).train()
    ids = torch.randint(0, 20, (2, 20))
    a, b = token_logprobs(model, ids), token_logprobs(model, ids)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # no dropout noise
    assert model.training and not a.requires_grad


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "ids, exc, match",
    [
        (torch.zeros(0, dtype=torch.long), ValueError, "at least 2"),
        (torch.zeros(1, dtype=torch.long), ValueError, "at least 2"),
        (torch.zeros(3, 1, dtype=torch.long), ValueError, "at least 2"),
        (torch.zeros(0, 5, dtype=torch.long), ValueError, "empty"),
        (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, "shape"),
        (torch.zeros(1, 4), TypeError, "integer"),
        ("hello", TypeError, "string"),
        (torch.tensor([1, -2, 3]), ValueError, "token id -2, outside"),
        (torch.tensor([1, 2, 50]), ValueError, "vocabulary"),
    ],
)
def test_bad_ids_raise(gpt, ids, exc, match):
    with pytest.raises(exc, match=match):
        token_logprobs(gpt, ids)


def test_bad_options_raise(gpt):
    ids = torch.randint(0, 50, (1, 40))
    for stride in (0, 16, 2.5, True):
        with pytest.raises(ValueError, match="stride"):
            token_logprobs(gpt, ids, stride=stride)
    with pytest.raises(ValueError, match="batch_size"):
        token_logprobs(gpt, ids, batch_size=0)
    with pytest.raises(ValueError, match="mask shape"):
        sequence_logprob(gpt, ids, mask=torch.ones(39, dtype=torch.bool))

    def zero_context(idx):
        return gpt(idx)

    zero_context.block_size = 0
    with pytest.raises(ValueError, match="block_size"):
        token_logprobs(zero_context, ids)
    with pytest.raises(TypeError, match="expected logits"):
        token_logprobs(lambda idx: "nope", ids)
    with pytest.raises(ValueError, match="logits have shape"):
        token_logprobs(lambda idx: torch.zeros(3, 3), ids)


def test_sequence_logprob_mask_selects_targets(gpt):
    ids = torch.randint(0, 50, (2, 12))
    mask = torch.rand(2, 12) > 0.5
    lp = token_logprobs(gpt, ids)
    ref = (lp * mask[:, 1:]).sum(1)
    torch.testing.assert_close(sequence_logprob(gpt, ids, mask=mask), ref)
    mask[:, 0] = ~mask[:, 0]  # the first token is never a target, so its mask entry is ignored
    torch.testing.assert_close(sequence_logprob(gpt, ids, mask=mask.int()), ref)


# ------------------------------------------------------------------ nll
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_agrees_with_cross_entropy(scale, reduction):
    logits = torch.randn(4, 7, 11) * scale
    targets = torch.randint(0, 11, (4, 7))
    targets[0, :3] = -100
    ref = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), reduction=reduction)
    got = nll(logits, targets, reduction=reduction)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.reshape(ref.shape), ref, rtol=1e-6, atol=1e-4 * scale)
    # float64 reference written from the definition: -(x_y - log sum exp x)
    x = logits.double()
    exact = x.logsumexp(-1) - x.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    exact = exact * (targets != -100)
    if reduction == "none":
        torch.testing.assert_close(got.double(), exact, rtol=1e-6, atol=1e-3)


def test_nll_mask_and_edge_cases():
    logits = torch.randn(2, 5, 6)
    targets = torch.randint(0, 6, (2, 5))
    mask = torch.tensor([[1, 1, 0, 0, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    ref = F.cross_entropy(logits[mask], targets[mask])
    torch.testing.assert_close(nll(logits, targets, mask=mask), ref)
    none = nll(logits, targets, mask=mask, reduction="none")
    assert (none[~mask] == 0).all()
    assert math.isnan(float(nll(logits, targets, mask=torch.zeros(2, 5, dtype=torch.bool))))  # as PyTorch
    half = nll(logits.half(), targets, reduction="none")
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="reduction"):
        nll(logits, targets, reduction="avg")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        nll(logits, targets + 6)
    with pytest.raises(ValueError, match="shape"):
        nll(logits, targets[:, :4])
    with pytest.raises(TypeError, match="floating"):
        nll(targets, targets)


# ------------------------------------------------------------------ units and evaluations
def test_unit_conversions_match_math():
    assert nats_to_bits(math.log(2)) == pytest.approx(1.0, rel=1e-15)
    assert nats_to_bits(1.0) == pytest.approx(math.log2(math.e), rel=1e-15)
    assert bits_to_nats(nats_to_bits(3.7)) == pytest.approx(3.7, rel=1e-15)
    assert perplexity(math.log(7.0)) == pytest.approx(7.0, rel=1e-14)
    assert float(perplexity(torch.tensor(math.log(7.0), dtype=torch.float64))) == pytest.approx(7.0)
    assert bits_per_token(10 * math.log(8), 10) == pytest.approx(3.0, rel=1e-15)
    assert bits_per_char(100.0, 40) == pytest.approx(100.0 / (40 * math.log(2)), rel=1e-15)
    assert bits_per_byte(100.0, 50) == pytest.approx(100.0 / (50 * LN2), rel=1e-15)
    for bad in (0, -3, 2.5, None):
        with pytest.raises(ValueError, match="n_chars"):
            bits_per_char(1.0, bad)


def test_uniform_model_has_perplexity_v_and_log2_v_bits():
    V = 13

    def uniform(idx):
        return torch.zeros(*idx.shape, V, dtype=torch.float64)

    uniform.block_size = 8
    ids = torch.randint(0, V, (101,))
    ev = evaluate_text(uniform, ids, n_chars=250, n_bytes=300)
    assert ev.n_tokens == 100
    assert ev.perplexity == pytest.approx(V, rel=1e-12)
    assert ev.bits_per_token == pytest.approx(math.log2(V), rel=1e-12)
    assert ev.bits_per_char == pytest.approx(100 * math.log2(V) / 250, rel=1e-12)
    assert ev.bits_per_byte == pytest.approx(100 * math.log2(V) / 300, rel=1e-12)


def test_evaluation_totals_and_pooling(gpt):
    ids = torch.randint(0, 50, (70,))
    ev = evaluate_text(gpt, ids, n_chars=140, stride=4)
    lp = token_logprobs(gpt, ids, stride=4)
    assert ev.total_nats == pytest.approx(-float(lp.double().sum()), rel=1e-12)
    assert ev.n_tokens == 69 and ev.bits_per_byte is None
    assert ev.nats_per_token == pytest.approx(ev.total_nats / 69)
    assert ev.bits_per_char == pytest.approx(ev.total_nats / (140 * math.log(2)))
    assert "nats/token" in str(ev) and "bits/char" in str(ev)
    a, b = Evaluation(10.0, 4, 8, None), Evaluation(2.0, 2, 4, 5)
    pooled = a + b  # sums before division: 12 nats over 6 tokens, not the mean of 2.5 and 1.0
    assert pooled == Evaluation(12.0, 6, 12, None) and pooled.nats_per_token == 2.0
    with pytest.raises(ValueError, match="n_tokens"):
        Evaluation(1.0, 0)
    with pytest.raises(ValueError, match="n_chars"):
        Evaluation(1.0, 3, n_chars=0)


# ------------------------------------------------------------------ aggregation
def test_aggregate_hand_computed():
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert float(aggregate(losses, mask, "sum")) == 16.0  # 1 + 2 + 3 + 10
    assert float(aggregate(losses, mask, "mean_per_token")) == 4.0  # 16 / 4 tokens
    assert float(aggregate(losses, mask, "mean_per_sequence")) == 6.0  # (6/3 + 10/1) / 2; row 3 left out
    assert float(aggregate(losses[:2], how="mean_per_token")) == 5.0  # no mask: 40 / 8
    assert float(aggregate(losses[0], how="sum")) == 10.0
    with pytest.raises(ValueError, match="no token"):
        aggregate(losses, torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="how"):
        aggregate(losses, mask, "median")
    with pytest.raises(ValueError, match="mask shape"):
        aggregate(losses, mask[:, :3])


# ------------------------------------------------------------------ dialogue
def test_dialogue_rendering_and_mask_content():
    rendered = "".join(text for text, _ in render_dialogue(TURNS))
    assert rendered == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n4.<|end|>\n"
        "<|user|>\nAnd 3+3?<|end|>\n<|assistant|>\n6, of course.<|end|>\n"
    )
    tok = CharTokenizer(rendered)
    ids, mask = dialogue_tokens(TURNS, tok)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape
    assert tok.decode(ids) == rendered
    assert tok.decode(ids[mask]) == "4.<|end|>\n" + "6, of course.<|end|>\n"
    dicts = [{"role": r, "content": c} for r, c in TURNS]
    ids2, mask2 = dialogue_tokens(dicts, tok)
    assert torch.equal(ids, ids2) and torch.equal(mask, mask2)
    template = ChatTemplate(header="### {role}: ", end="\n")
    ids3, mask3 = dialogue_tokens(TURNS[1:3], CharTokenizer(rendered + "#:"), template=template)
    assert CharTokenizer(rendered + "#:").decode(ids3[mask3]) == "4.\n"
    assert DEFAULT_TEMPLATE == ChatTemplate()


@pytest.mark.parametrize(
    "turns, exc, match",
    [
        ([], ValueError, "empty"),
        ([("robot", "hi")], ValueError, "role"),
        ([{"role": "user"}], ValueError, "content"),
        ([("user", 3)], TypeError, "str"),
        ([("user",)], TypeError, "pair"),
        ("user: hi", TypeError, "list"),
    ],
)
def test_bad_dialogues_raise(turns, exc, match):
    with pytest.raises(exc, match=match):
        dialogue_tokens(turns, CharTokenizer("abc"))


def test_bad_templates_and_tokenizers_raise():
    with pytest.raises(ValueError, match="role"):
        ChatTemplate(header="<|user|>")
    with pytest.raises(ValueError, match="end"):
        ChatTemplate(end="")
    with pytest.raises(TypeError, match="encode"):
        dialogue_tokens(TURNS, object())
    with pytest.raises(TypeError, match="list of ints"):
        dialogue_tokens(TURNS, SimpleNamespace(encode=lambda s: list(s)))


@pytest.mark.parametrize("kind", ["markov", "gpt"])
def test_dialogue_logprob_decomposes_over_turns(kind):
    rendered = "".join(text for text, _ in render_dialogue(TURNS))
    tok = CharTokenizer(rendered)
    ids, mask = dialogue_tokens(TURNS, tok)
    V = len(tok.chars)
    if kind == "markov":
        src = MarkovSource(V, 2, 0)
        model = src.as_model()
    else:
        model = GPT(GPTConfig.preset("micro", vocab_size=V, block_size=32)).eval()  # T > 32: windows
    turn_lengths = [len(dialogue_tokens([t], tok)[0]) for t in TURNS]
    assert sum(turn_lengths) == len(ids)  # the template is a plain concatenation of turns
    per_turn, replies, start = [], [], 0
    for n, (role, _) in zip(turn_lengths, TURNS, strict=True):
        turn_mask = torch.zeros_like(mask)
        turn_mask[start : start + n] = True
        per_turn.append(float(sequence_logprob(model, ids, mask=turn_mask)))
        assert bool((turn_mask & mask).any()) == (role == "assistant")  # only replies are masked in
        replies.append(float(sequence_logprob(model, ids, mask=turn_mask & mask)))
        start += n
    total = float(sequence_logprob(model, ids))
    assert sum(per_turn) == pytest.approx(total, abs=1e-4)
    assistant = float(sequence_logprob(model, ids, mask=mask))
    assert assistant == pytest.approx(sum(replies), abs=1e-4)
    assert assistant == pytest.approx(float(token_logprobs(model, ids)[mask[1:]].sum()), abs=1e-4)
    if kind == "markov":  # chain rule: log p(dialogue) = log p(first token) + sum of the turns
        first = src.token_logprobs(ids, include_first=True)[0]
        assert first + sum(per_turn) == pytest.approx(src.sequence_logprob(ids), abs=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_results_follow_the_device(gpt):
    ids = torch.randint(0, 50, (2, 40))
    ref = token_logprobs(gpt, ids)
    model = GPT(GPTConfig.preset("micro", vocab_size=50, block_size=16))
    model.load_state_dict(gpt.state_dict())
    model = model.cuda().eval()
    got = token_logprobs(model, ids.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=1e-4)
    src = MarkovSource(5, 2, 0)
    x = src.sample(30, 0)
    lp = token_logprobs(src.as_model().cuda(), x.cuda())
    np.testing.assert_allclose(lp.cpu().numpy(), src.token_logprobs(x), atol=1e-12)
    assert token_logprobs(src.as_model().cuda(), x.tolist()).device.type == "cuda"  # lists go to the model
