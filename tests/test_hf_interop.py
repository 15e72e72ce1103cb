"""GPT.from_hf_gpt2: the same logits as Hugging Face transformers, for randomly initialised GPT-2s."""

import pytest
import torch

from lmlab import GPT

transformers = pytest.importorskip("transformers")


def hf_gpt2(**kw):
    cfg = transformers.GPT2Config(
        vocab_size=kw.pop("vocab_size", 97),
        n_positions=kw.pop("n_positions", 48),
        n_embd=kw.pop("n_embd", 64),
        n_layer=kw.pop("n_layer", 2),
        n_head=kw.pop("n_head", 4),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **kw,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    # random init leaves biases and LayerNorms at trivial values: perturb them so the test sees them
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize(
    "kw",
    [
        dict(activation_function="gelu_new"),
        dict(activation_function="gelu"),
        dict(activation_function="gelu_pytorch_tanh", n_inner=80, n_layer=3, n_head=2),
        dict(activation_function="gelu", tie_word_embeddings=False, layer_norm_epsilon=1e-3),
        dict(n_embd=96, n_head=6, n_layer=1, vocab_size=11, n_positions=16),
    ],
)
def test_logits_equal_transformers(kw):
    hf = hf_gpt2(**kw)
    ours = GPT.from_hf_gpt2(hf).eval()
    assert ours.config.tie_weights == hf.config.tie_word_embeddings
    expected_act = "gelu" if hf.config.activation_function == "gelu" else "gelu_tanh"
    assert ours.config.activation == expected_act
    idx = torch.randint(0, hf.config.vocab_size, (3, hf.config.n_positions))
    with torch.no_grad():
        ref = hf(idx).logits
        got = ours(idx).logits
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_loss_equals_transformers_loss():
    hf = hf_gpt2()
    ours = GPT.from_hf_gpt2(hf).eval()
    idx = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        ref = hf(idx, labels=idx).loss  # transformers shifts labels inside
        got = ours(idx[:, :-1], idx[:, 1:]).loss
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_naive_attention_after_loading_still_matches():
    hf = hf_gpt2()
    ours = GPT.from_hf_gpt2(hf)
    naive = GPT(type(ours.config)(**{**ours.config.to_dict(), "attention_impl": "naive"})).eval()
    naive.load_state_dict(ours.state_dict())
    idx = torch.randint(0, 97, (2, 48))
    with torch.no_grad():
        torch.testing.assert_close(naive(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)


def test_unsupported_models_are_rejected():
    with pytest.raises(ValueError, match="activation 'relu' is not supported"):
        GPT.from_hf_gpt2(hf_gpt2(activation_function="relu"))
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        GPT.from_hf_gpt2(torch.nn.Linear(2, 2))
