"""GPT and GPTConfig: shapes, attention implementations, KV cache, loss, counting, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab import GPT, GPTConfig
from lmlab.lm import lm_loss
from lmlab.models import PRESETS


def micro(**kw) -> GPT:
    return GPT(GPTConfig.preset("micro", **kw)).eval()


# ---------------------------------------------------------------- config and presets
def test_presets_have_the_advertised_sizes():
    sizes = {name: GPT(GPTConfig.preset(name)).num_params(non_embedding=False) for name in ("micro", "tiny", "small")}
    assert 0.08e6 < sizes["micro"] < 0.15e6
    assert 0.7e6 < sizes["tiny"] < 0.9e6
    assert 9e6 < sizes["small"] < 12e6
    tiny = GPTConfig.preset("tiny")
    assert (tiny.n_layer, tiny.n_head, tiny.n_embd, tiny.block_size) == (4, 4, 128, 64)


def test_gpt2_preset_has_gpt2_parameter_count():
    # GPT-2 small has 124,439,808 parameters with tied embeddings (the count transformers reports).
    model = GPT(GPTConfig.preset("gpt2"))
    assert model.num_params(non_embedding=False) == 124_439_808


def test_preset_overrides_and_errors():
    cfg = GPTConfig.preset("tiny", vocab_size=96, attention_impl="naive")
    assert cfg.vocab_size == 96 and cfg.attention == "full" and cfg.attention_impl == "naive"
    assert PRESETS["tiny"].vocab_size == 256  # the preset itself is not changed
    with pytest.raises(ValueError, match="known presets: micro, tiny, small, gpt2"):
        GPTConfig.preset("huge")
    with pytest.raises(TypeError, match="n_embed"):
        GPTConfig.preset("tiny", n_embed=64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=130, n_head=4), r"n_embd \(130\) must be divisible by n_head \(4\)"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
        (dict(vocab_size=2.5), "vocab_size must be a positive integer"),
        (dict(activation="relu"), "activation must be one of"),
        (dict(attention="flash"), "attention must be one of"),
        (dict(attention_impl="flash"), "attention_impl must be one of"),
        (dict(attention="naive"), "attention must be one of"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**kwargs)


def test_config_dict_round_trip():
    cfg = GPTConfig.preset("micro", n_inner=100, tie_weights=False)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        GPTConfig.from_dict({**cfg.to_dict(), "colour": 1})


# ---------------------------------------------------------------- forward
def test_logits_for_every_position_and_loss_reductions():
    model = micro(vocab_size=50)
    idx = torch.randint(0, 50, (3, 20))
    targets = torch.randint(0, 50, (3, 20))
    out = model(idx)
    assert out.logits.shape == (3, 20, 50) and out.loss is None
    logits, loss = model(idx, targets)
    ref = F.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1))
    torch.testing.assert_close(loss, ref)
    total = model(idx, targets, reduction="sum").loss
    torch.testing.assert_close(total, ref * 60, rtol=1e-5, atol=1e-5)
    per_token = model(idx, targets, reduction="none").loss
    assert per_token.shape == (3, 20)
    ref_none = F.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1), reduction="none").view(3, 20)
    torch.testing.assert_close(per_token, ref_none)


def test_loss_mask_and_ignore_index_score_only_chosen_positions():
    model = micro(vocab_size=50)
    idx = torch.randint(0, 50, (2, 10))
    targets = torch.randint(0, 50, (2, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 3:7] = True
    mask[1, 9] = True
    logits = model(idx).logits
    per_token = F.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1), reduction="none").view(2, 10)
    expected = per_token[mask].mean()
    torch.testing.assert_close(model(idx, targets, loss_mask=mask).loss, expected)
    ignored = torch.where(mask, targets, torch.full_like(targets, -100))
    torch.testing.assert_close(model(idx, ignored).loss, expected)
    none = model(idx, targets, loss_mask=mask, reduction="none").loss
    assert torch.all(none[~mask] == 0)


def test_lm_loss_is_stable_for_huge_logits():
    logits = torch.tensor([[[1e4, -1e4, 0.0], [0.0, 3e4, -3e4]]])
    targets = torch.tensor([[1, 1]])
    ref = F.cross_entropy(logits.view(-1, 3), targets.view(-1))
    got = lm_loss(logits, targets)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, ref)


def test_causal_logits_do_not_depend_on_future_tokens():
    model = micro(vocab_size=30)
    idx = torch.randint(0, 30, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 30
    a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_naive_and_sdpa_attention_agree(activation):
    torch.manual_seed(1)
    cfg = GPTConfig.preset("tiny", vocab_size=64, activation=activation, attention_impl="sdpa")
    sdpa = GPT(cfg).eval()
    naive = GPT(GPTConfig.preset("tiny", vocab_size=64, activation=activation, attention_impl="naive")).eval()
    naive.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 64, (4, 64))
    torch.testing.assert_close(naive(idx).logits, sdpa(idx).logits, atol=1e-5, rtol=0)


def test_auto_attention_uses_the_explicit_path_for_short_cpu_contexts(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    short = GPT(GPTConfig.preset("micro", block_size=256)).eval()
    short(torch.zeros(1, 256, dtype=torch.long))
    assert calls == []
    long = GPT(GPTConfig.preset("micro", block_size=300)).eval()
    long(torch.zeros(1, 300, dtype=torch.long))
    assert len(calls) == 2  # one per layer
    explicit = GPT(GPTConfig.preset("micro", block_size=300, attention_impl="naive")).eval()
    explicit.load_state_dict(long.state_dict())
    idx = torch.randint(0, 256, (1, 300))
    torch.testing.assert_close(explicit(idx).logits, long(idx).logits, atol=1e-5, rtol=0)


def test_naive_attention_rows_are_causal_probabilities():
    model = micro(vocab_size=20, attention_impl="naive")
    attn = model.transformer.h[0].attn
    q = k = v = torch.randn(1, 2, 5, 32)
    out = attn._naive(q, k, v)
    # position 0 may only attend to itself, so its output is its own value vector
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0])


def test_gelu_variants_differ_as_expected():
    x = torch.linspace(-4, 4, 101)
    exact = GPT(GPTConfig.preset("micro")).transformer.h[0].mlp.act(x)
    tanh = GPT(GPTConfig.preset("micro", activation="gelu_tanh")).transformer.h[0].mlp.act(x)
    torch.testing.assert_close(exact, F.gelu(x))
    torch.testing.assert_close(tanh, F.gelu(x, approximate="tanh"))
    assert not torch.equal(exact, tanh)


# ---------------------------------------------------------------- KV cache
@pytest.mark.parametrize("attention", ["sdpa", "naive"])
def test_kv_cache_gives_the_uncached_logits(attention):
    model = micro(vocab_size=40, attention_impl=attention)
    idx = torch.randint(0, 40, (2, 32))
    full = model(idx).logits
    cache = model.new_cache(batch_size=2)
    pieces = [model(idx[:, a:b], cache=cache).logits for a, b in [(0, 7), (7, 8), (8, 20), (20, 21), (21, 32)]]
    assert cache.length == 32
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_reorder_expands_and_permutes_rows():
    model = micro(vocab_size=40)
    prompt = torch.randint(0, 40, (1, 5))
    cache = model.new_cache(batch_size=1)
    model(prompt, cache=cache)
    cache.reorder(torch.tensor([0, 0, 0]))  # one prefill shared by three continuations
    nxt = torch.tensor([[1], [2], [3]])
    step = model(nxt, cache=cache).logits[:, -1]
    full = model(torch.cat([prompt.expand(3, 5), nxt], dim=1)).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
    cache.reorder(torch.tensor([2, 0]))
    assert cache.batch_size == 2
    torch.testing.assert_close(cache.k[0][0, :, :6], cache.k[0][0, :, :6])


def test_kv_cache_crop_then_continue_matches_uncached():
    model = micro(vocab_size=40)
    idx = torch.randint(0, 40, (1, 12))
    cache = model.new_cache()
    model(idx, cache=cache)
    cache.crop(8)
    alt = torch.tensor([[5, 6]])
    got = model(alt, cache=cache).logits
    ref = model(torch.cat([idx[:, :8], alt], dim=1)).logits[:, 8:]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_kv_cache_overflow_and_batch_mismatch_are_errors():
    model = micro(vocab_size=40)  # block_size 32
    cache = model.new_cache(batch_size=1)
    model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="30 cached \\+ 3 new tokens is longer than the model's block_size 32"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cache holds 1 sequences but idx has batch size 2"):
        model(torch.zeros(2, 1, dtype=torch.long), cache=cache)


# ---------------------------------------------------------------- bad input
def test_context_longer_than_block_size_names_both_numbers():
    model = micro()
    with pytest.raises(ValueError, match="context of 33 tokens is longer than the model's block_size 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("bad", [-1, 256, 1000])
def test_token_ids_outside_vocabulary_are_rejected_where_they_enter(bad):
    """forward does not read the ids' values (that would wait for the GPU at every step); the entry points do."""
    from lmlab.generation import greedy
    from lmlab.likelihood import token_logprobs

    idx = torch.zeros(1, 4, dtype=torch.long)
    idx[0, 2] = bad
    model = micro()
    with pytest.raises(ValueError, match=rf"token id {bad}, outside"):
        token_logprobs(model, idx)
    with pytest.raises(ValueError, match=rf"token id {bad}, outside the vocabulary \[0, 256\)"):
        greedy(model, idx[0], max_new_tokens=2)
    with pytest.raises((IndexError, RuntimeError)):  # PyTorch's own error, not a silent wrong answer
        model(idx)


def test_wrong_types_and_shapes_are_rejected():
    model = micro()
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match="reduction must be one of"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long), reduction="avg")
    with pytest.raises((IndexError, RuntimeError)):  # out-of-range targets: PyTorch's own error
        model(torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), 999))


# ---------------------------------------------------------------- weights and counting
def test_weight_tying_and_gpt2_initialisation():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("small"))
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = GPT(GPTConfig.preset("micro", tie_weights=False))
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_params(False) == GPT(GPTConfig.preset("micro")).num_params(False) + 256 * 64
    std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    proj_std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02) < 0.001
    assert abs(proj_std - 0.02 / math.sqrt(2 * 6)) < 0.0005
    assert torch.all(model.transformer.h[0].attn.c_attn.bias == 0)


def test_num_params_and_flops_per_token_follow_their_formulas():
    model = GPT(GPTConfig.preset("tiny"))
    total = sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=False) == total
    non_emb = total - 256 * 128 - 64 * 128
    assert model.num_params() == non_emb
    # PaLM Appendix B: 6N + 12 L d T, N including the (tied) output projection
    n_matmul = non_emb + 256 * 128
    assert model.flops_per_token(64) == 6 * n_matmul + 12 * 4 * 128 * 64
    assert model.flops_per_token() == model.flops_per_token(64)
    with pytest.raises(ValueError):
        model.flops_per_token(0)


def test_gradients_reach_every_parameter():
    model = GPT(GPTConfig.preset("micro", vocab_size=30)).train()
    idx = torch.randint(0, 30, (2, 8))
    model(idx, idx).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    model = micro(vocab_size=40)
    idx = torch.randint(0, 40, (2, 16))
    cpu = model(idx).logits
    gpu = model.to("cuda")(idx.cuda()).logits.cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


# --- attention weights, against transformers' explicit ("eager") attention -------------------------------


def test_attention_weights_match_transformers_eager_attention():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                     activation_function="gelu", attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = GPT.from_hf_gpt2(hf).eval()
    idx = torch.randint(0, 40, (3, 11))
    with torch.no_grad():
        theirs = torch.stack(hf(idx, output_attentions=True).attentions)  # (n_layer, B, nh, T, T)
    mine = ours.attention_weights(idx)
    assert mine.shape == (2, 3, 4, 11, 11)
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)


def test_attention_weights_are_causal_rows_of_probabilities_and_reproduce_the_forward():
    model = GPT(GPTConfig(vocab_size=20, block_size=12, n_layer=2, n_head=2, n_embd=16)).train()
    idx = torch.randint(0, 20, (2, 9))
    w = model.attention_weights(idx)
    assert model.training, "the model's mode is restored"
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 2, 9))
    assert torch.all(w.triu(diagonal=1) == 0), "no weight on later positions"
    assert torch.allclose(w[:, :, :, 0, 0], torch.ones(())), "the first position can only look at itself"
    # the first layer's output, rebuilt from its weights, equals the attention sublayer's output
    model.eval()
    block = model.transformer.h[0]
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(9))
    h = block.ln_1(x)
    v = block.attn.c_attn(h).split(16, dim=-1)[2].view(2, 9, 2, 8).transpose(1, 2)  # (B, nh, T, hs)
    y = (w[0] @ v).transpose(1, 2).reshape(2, 9, 16)
    with torch.no_grad():
        torch.testing.assert_close(block.attn.c_proj(y), block.attn(h), atol=1e-6, rtol=1e-5)
    for bad in (torch.zeros(2, 13, dtype=torch.long), torch.zeros(9, dtype=torch.long), torch.zeros(1, 3)):
        with pytest.raises(ValueError, match="attention_weights"):
            model.attention_weights(bad)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_small_integer_ids_give_the_same_logits_as_long_ones(dtype):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("micro")).eval()
    idx = torch.randint(0, 200, (2, 9))
    torch.testing.assert_close(model(idx.to(dtype)).logits, model(idx).logits)
