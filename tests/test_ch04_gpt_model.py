"""Tests for chapter 4's GPT model (ch04_gpt_model/gpt_model.py).

Everything runs on tiny configurations, except parameter counts of the real GPT-2
sizes, which build the models on PyTorch's meta device (shapes only, no memory).
"""

import pytest
import torch
from helpers import tiny_gpt_config
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ch04_gpt_model.gpt_model import (
    GELU,
    GPT2_PRESETS,
    GPT_CONFIG_124M,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    count_parameters,
    generate_text_simple,
    gpt2_config,
    parameter_memory_mb,
)

TINY = tiny_gpt_config(vocab_size=97, context_length=8, emb_dim=16)


def build_tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPTModel({**TINY, **overrides})


def gpt2_count_by_formula(cfg, tied):
    """Parameter count of GPT-2 from its sizes alone (independent of the code under test)."""
    d, layers = cfg["emb_dim"], cfg["n_layers"]
    qkv_bias = 3 * d if cfg["qkv_bias"] else 0
    attention = 3 * d * d + qkv_bias + d * d + d  # q, k, v, out_proj (with bias)
    feed_forward = d * 4 * d + 4 * d + 4 * d * d + d
    block = attention + feed_forward + 2 * 2 * d  # two layer norms: scale + shift
    embeddings = cfg["vocab_size"] * d + cfg["context_length"] * d
    head = 0 if tied else cfg["vocab_size"] * d
    return embeddings + layers * block + 2 * d + head


# --- configuration ----------------------------------------------------------------


def test_config_124m_values():
    assert GPT_CONFIG_124M == {
        "vocab_size": 50257,
        "context_length": 1024,
        "emb_dim": 768,
        "n_heads": 12,
        "n_layers": 12,
        "drop_rate": 0.1,
        "qkv_bias": False,
    }


@pytest.mark.parametrize(
    "size, emb_dim, n_layers, n_heads",
    [
        ("124M", 768, 12, 12),
        ("355M", 1024, 24, 16),
        ("774M", 1280, 36, 20),
        ("1558M", 1600, 48, 25),
    ],
)
def test_presets(size, emb_dim, n_layers, n_heads):
    cfg = GPT2_PRESETS[size]
    assert (cfg["emb_dim"], cfg["n_layers"], cfg["n_heads"]) == (emb_dim, n_layers, n_heads)
    for key in ("vocab_size", "context_length", "drop_rate", "qkv_bias"):
        assert cfg[key] == GPT_CONFIG_124M[key]
    assert set(cfg) == set(GPT_CONFIG_124M)


def test_gpt2_config_returns_new_dict_with_overrides():
    cfg = gpt2_config("355M", drop_rate=0.0, qkv_bias=True)
    assert cfg["drop_rate"] == 0.0 and cfg["qkv_bias"] is True and cfg["emb_dim"] == 1024
    cfg["emb_dim"] = 7
    assert GPT2_PRESETS["355M"]["emb_dim"] == 1024
    assert gpt2_config("124M") is not GPT2_PRESETS["124M"]
    assert gpt2_config("124M") == GPT_CONFIG_124M


def test_gpt2_config_unknown_size_lists_valid_sizes():
    with pytest.raises(ValueError, match="unknown GPT-2 size") as info:
        gpt2_config("125M")
    for size in GPT2_PRESETS:
        assert repr(size) in str(info.value)


def test_gpt2_config_unknown_key():
    with pytest.raises(ValueError, match="n_head") as info:
        gpt2_config("124M", n_head=8)
    assert "n_heads" in str(info.value)  # the message lists the valid keys


# --- parameter counts ---------------------------------------------------------------


def test_124m_counts():
    with torch.device("meta"):
        model = GPTModel(GPT_CONFIG_124M)
    assert count_parameters(model) == 163_009_536
    assert count_parameters(model, tied_output_head=True) == 124_412_160
    assert parameter_memory_mb(model) == pytest.approx(163_009_536 * 4 / 1e6)
    assert parameter_memory_mb(model, dtype=torch.bfloat16) == pytest.approx(163_009_536 * 2 / 1e6)


# Published sizes of OpenAI's checkpoints (Hugging Face num_parameters()): tied head, qkv biases.
PUBLISHED = {"124M": 124_439_808, "355M": 354_823_168, "774M": 774_030_080, "1558M": 1_557_611_200}


@pytest.mark.parametrize("size", list(GPT2_PRESETS))
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_preset_counts_match_formula(size, qkv_bias):
    cfg = gpt2_config(size, qkv_bias=qkv_bias)
    with torch.device("meta"):
        model = GPTModel(cfg)
    assert next(model.parameters()).is_meta
    assert count_parameters(model) == gpt2_count_by_formula(cfg, tied=False)
    assert count_parameters(model, tied_output_head=True) == gpt2_count_by_formula(cfg, tied=True)
    if qkv_bias:
        assert count_parameters(model, tied_output_head=True) == PUBLISHED[size]


def test_count_parameters_with_real_tying():
    model = build_tiny_gpt()
    untied = count_parameters(model)
    model.out_head.weight = model.tok_emb.weight
    expected = untied - TINY["vocab_size"] * TINY["emb_dim"]
    assert count_parameters(model) == expected
    assert count_parameters(model, tied_output_head=True) == expected  # not subtracted twice


# --- module structure (chapter 5 maps GPT-2 weights onto these names) -----------------


def test_module_names():
    model = build_tiny_gpt()
    names = dict(model.named_children())
    assert list(names) == ["tok_emb", "pos_emb", "drop_emb", "trf_blocks", "final_norm", "out_head"]
    assert isinstance(model.trf_blocks, nn.Sequential) and len(model.trf_blocks) == TINY["n_layers"]
    assert model.out_head.bias is None
    assert model.out_head.weight.shape == (TINY["vocab_size"], TINY["emb_dim"])
    assert model.pos_emb.weight.shape == (TINY["context_length"], TINY["emb_dim"])
    block = model.trf_blocks[0]
    assert set(dict(block.named_children())) == {"att", "ff", "norm1", "norm2", "drop_shortcut"}
    ff = block.ff
    assert (ff.fc_in.in_features, ff.fc_in.out_features) == (16, 64)
    assert (ff.fc_out.in_features, ff.fc_out.out_features) == (64, 16)
    assert isinstance(ff.gelu, GELU)
    assert [n for n, _ in block.norm1.named_parameters()] == ["scale", "shift"]


# --- building blocks ------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 4),
    dim=st.integers(2, 32),
    scale=st.floats(0.1, 100.0),
    offset=st.floats(-50.0, 50.0),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_matches_torch_and_normalizes(rows, dim, scale, offset, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, dim, generator=gen, dtype=torch.float64) * scale + offset
    ours = LayerNorm(dim).double()
    reference = nn.LayerNorm(dim, eps=1e-5).double()
    out = ours(x)
    torch.testing.assert_close(out, reference(x))
    torch.testing.assert_close(
        out.mean(-1), torch.zeros(rows, 3, dtype=torch.float64), atol=1e-9, rtol=0
    )


def test_layer_norm_uses_biased_variance():
    x = torch.tensor([[1.0, 3.0]])  # biased variance 1, unbiased 2
    out = LayerNorm(2, eps=0.0)(x)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0]]))


def test_gelu_is_tanh_approximation():
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(GELU()(x), nn.functional.gelu(x, approximate="tanh"))


def test_feed_forward_and_block_keep_shape():
    torch.manual_seed(0)
    x = torch.randn(3, 5, TINY["emb_dim"])
    assert FeedForward(TINY)(x).shape == x.shape
    assert TransformerBlock(TINY)(x).shape == x.shape


def test_block_is_causal():
    """Changing a later token must not change the block's output at earlier positions."""
    torch.manual_seed(0)
    block = TransformerBlock(TINY).eval()
    x = torch.randn(1, 6, TINY["emb_dim"])
    y = x.clone()
    y[0, 4:] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(block(x)[:, :4], block(y)[:, :4])
        assert not torch.allclose(block(x)[:, 4:], block(y)[:, 4:])


# --- the model ------------------------------------------------------------------------


@pytest.mark.parametrize("batch, tokens", [(1, 1), (2, 5), (3, 8)])
def test_output_shape(batch, tokens):
    model = build_tiny_gpt()
    ids = torch.randint(0, TINY["vocab_size"], (batch, tokens))
    assert model(ids).shape == (batch, tokens, TINY["vocab_size"])


def test_same_seed_same_logits():
    ids = torch.randint(0, TINY["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = build_tiny_gpt(seed=5).eval()(ids)
        b = build_tiny_gpt(seed=5).eval()(ids)
        c = build_tiny_gpt(seed=6).eval()(ids)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    model = build_tiny_gpt(drop_rate=0.5)
    ids = torch.randint(0, TINY["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))
        model.train()
        assert not torch.equal(model(ids), model(ids))


def test_model_rejects_too_long_and_unbatched_input():
    model = build_tiny_gpt()
    with pytest.raises(ValueError, match="context_length is 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.zeros(5, dtype=torch.long))


# --- generation -----------------------------------------------------------------------


class InputLengthRecorder(nn.Module):
    """Wraps a model and records the number of tokens of every input it receives."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.lengths = []

    def forward(self, idx):
        self.lengths.append(idx.shape[1])
        return self.model(idx)


def test_generation_is_cropped_to_context():
    recorder = InputLengthRecorder(build_tiny_gpt())
    prompt = torch.tensor([[1, 2, 3]])
    out = generate_text_simple(recorder, prompt, max_new_tokens=20, context_size=8)
    assert out.shape == (1, 23)
    assert torch.equal(out[:, :3], prompt)
    assert len(recorder.lengths) == 20
    assert max(recorder.lengths) <= 8
    assert recorder.lengths[:6] == [3, 4, 5, 6, 7, 8] and set(recorder.lengths[5:]) == {8}


def test_prompt_longer_than_context_is_cropped():
    recorder = InputLengthRecorder(build_tiny_gpt())
    prompt = torch.arange(15).unsqueeze(0) % TINY["vocab_size"]  # (1, 15) > context 8
    out = generate_text_simple(recorder, prompt, max_new_tokens=3, context_size=8)
    assert recorder.lengths == [8, 8, 8]
    assert torch.equal(out[:, :15], prompt) and out.shape == (1, 18)


def test_generation_is_greedy():
    """Each new token is the argmax of the model's last-position logits on the cropped window."""
    model = build_tiny_gpt(seed=3).eval()
    prompt = torch.tensor([[4, 8, 15], [16, 23, 42]])
    out = generate_text_simple(model, prompt, max_new_tokens=10, context_size=8)
    with torch.no_grad():
        for step in range(3, out.shape[1]):
            window = out[:, max(0, step - 8) : step]
            expected = model(window)[:, -1, :].argmax(dim=-1)
            assert torch.equal(out[:, step], expected)


def test_generation_restores_training_mode_and_builds_no_graph():
    model = build_tiny_gpt(drop_rate=0.3)
    model.train()
    out = generate_text_simple(model, torch.tensor([[1]]), max_new_tokens=4, context_size=8)
    assert model.training
    assert not out.requires_grad
    # dropout was off during generation: the result is reproducible despite train mode
    again = generate_text_simple(model, torch.tensor([[1]]), max_new_tokens=4, context_size=8)
    assert torch.equal(out, again)


def test_empty_prompt_raises():
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text_simple(build_tiny_gpt(), torch.zeros(1, 0, dtype=torch.long), 5, 8)


@pytest.mark.parametrize("context_size", [0, -3])
def test_non_positive_context_size_raises(context_size):
    with pytest.raises(ValueError, match="context_size must be a positive"):
        generate_text_simple(build_tiny_gpt(), torch.tensor([[1, 2]]), 5, context_size)


def test_unbatched_prompt_raises():
    with pytest.raises(ValueError, match=r"\(batch, num_tokens\)"):
        generate_text_simple(build_tiny_gpt(), torch.tensor([1, 2]), 5, 8)
