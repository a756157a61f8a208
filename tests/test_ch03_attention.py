"""Tests for chapter 3's attention modules (ch03_attention/attention.py)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ch03_attention.attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttentionV1,
    SelfAttentionV2,
    causal_mask,
)


def test_causal_mask_hides_exactly_the_future():
    mask = causal_mask(4)
    assert mask.dtype == torch.bool and mask.shape == (4, 4)
    for query in range(4):
        assert mask[query].tolist() == [key > query for key in range(4)]
    assert causal_mask(1).tolist() == [[False]]


def _fuse_heads_into(wrapper: MultiHeadAttentionWrapper, mha: MultiHeadAttention) -> None:
    """Copy each wrapper head's q/k/v weights into the matching rows of mha's projections."""
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            fused = getattr(mha, name)
            heads = [getattr(head, name) for head in wrapper.heads]
            fused.weight.copy_(torch.cat([h.weight for h in heads], dim=0))
            if fused.bias is not None:
                fused.bias.copy_(torch.cat([h.bias for h in heads], dim=0))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_multihead_equals_wrapper_with_same_weights(qkv_bias):
    torch.manual_seed(0)
    d_in, d_out, context_length, num_heads = 5, 8, 7, 4
    wrapper = MultiHeadAttentionWrapper(d_in, d_out, context_length, 0.0, num_heads, qkv_bias)
    mha = MultiHeadAttention(d_in, d_out, context_length, 0.0, num_heads, qkv_bias)
    _fuse_heads_into(wrapper, mha)
    x = torch.randn(3, 6, d_in)
    # the wrapper has no output projection: apply mha's to its concatenated heads
    torch.testing.assert_close(mha(x), mha.out_proj(wrapper(x)))


def test_multihead_without_fused_weights_differs_from_wrapper():
    # guards the previous test against passing trivially
    torch.manual_seed(0)
    wrapper = MultiHeadAttentionWrapper(5, 8, 7, 0.0, num_heads=4)
    mha = MultiHeadAttention(5, 8, 7, 0.0, num_heads=4)
    x = torch.randn(2, 6, 5)
    assert not torch.allclose(mha(x), mha.out_proj(wrapper(x)), atol=1e-4)


@pytest.mark.parametrize("num_tokens", [1, 5, 16])
def test_multihead_matches_scaled_dot_product_attention(num_tokens):
    torch.manual_seed(1)
    b, d_in, d_out, num_heads = 2, 12, 16, 4
    mha = MultiHeadAttention(d_in, d_out, 16, dropout=0.0, num_heads=num_heads, qkv_bias=True)
    mha.eval()
    x = torch.randn(b, num_tokens, d_in)

    def heads(t):
        return t.view(b, num_tokens, num_heads, d_out // num_heads).transpose(1, 2)

    q, k, v = heads(mha.W_query(x)), heads(mha.W_key(x)), heads(mha.W_value(x))
    context = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    expected = mha.out_proj(context.transpose(1, 2).reshape(b, num_tokens, d_out))
    torch.testing.assert_close(mha(x), expected)


def test_return_attn_weights_rows_are_causal_distributions():
    torch.manual_seed(2)
    mha = MultiHeadAttention(4, 6, 8, dropout=0.0, num_heads=3)
    out, weights = mha(torch.randn(2, 5, 4), return_attn_weights=True)
    assert out.shape == (2, 5, 6)
    assert weights.shape == (2, 3, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert torch.all(weights.triu(1) == 0)


@settings(max_examples=25, deadline=None)
@given(
    num_tokens=st.integers(2, 10),
    t=st.integers(0, 9),
    seed=st.integers(0, 2**16),
    module_kind=st.sampled_from(["mha", "causal", "wrapper"]),
)
def test_changing_later_tokens_never_changes_earlier_outputs(num_tokens, t, seed, module_kind):
    t = t % num_tokens
    torch.manual_seed(seed)
    d_in, d_out = 6, 8
    module = {
        "mha": lambda: MultiHeadAttention(d_in, d_out, 10, 0.0, num_heads=2),
        "causal": lambda: CausalAttention(d_in, d_out, 10, 0.0),
        "wrapper": lambda: MultiHeadAttentionWrapper(d_in, d_out, 10, 0.0, num_heads=2),
    }[module_kind]()
    x = torch.randn(1, num_tokens, d_in)
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(1, num_tokens - t - 1, d_in) * 5
    with torch.no_grad():
        before, after = module(x), module(changed)
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1])
    if t + 1 < num_tokens:  # the changed positions themselves do see the change
        assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])


@pytest.mark.parametrize(
    "b, num_tokens, d_in, d_out, context_length, num_heads",
    [(1, 1, 3, 2, 1, 1), (2, 6, 3, 4, 6, 2), (3, 5, 16, 12, 8, 3), (2, 7, 8, 32, 64, 8)],
)
def test_output_shapes(b, num_tokens, d_in, d_out, context_length, num_heads):
    torch.manual_seed(3)
    x = torch.randn(b, num_tokens, d_in)
    mha = MultiHeadAttention(d_in, d_out, context_length, 0.1, num_heads)
    assert mha(x).shape == (b, num_tokens, d_out)
    assert mha.head_dim * mha.num_heads == mha.d_out == d_out
    wrapper = MultiHeadAttentionWrapper(d_in, d_out, context_length, 0.1, num_heads)
    assert wrapper(x).shape == (b, num_tokens, d_out)
    assert CausalAttention(d_in, d_out, context_length, 0.1)(x).shape == (b, num_tokens, d_out)
    assert SelfAttentionV1(d_in, d_out)(x[0]).shape == (num_tokens, d_out)
    assert SelfAttentionV2(d_in, d_out)(x[0]).shape == (num_tokens, d_out)


def test_attribute_names_used_by_later_chapters():
    mha = MultiHeadAttention(d_in=10, d_out=12, context_length=5, dropout=0.1, num_heads=3)
    for name, (fan_in, fan_out) in {
        "W_query": (10, 12),
        "W_key": (10, 12),
        "W_value": (10, 12),
        "out_proj": (12, 12),
    }.items():
        layer = getattr(mha, name)
        assert isinstance(layer, torch.nn.Linear)
        assert (layer.in_features, layer.out_features) == (fan_in, fan_out)
    assert isinstance(mha.dropout, torch.nn.Dropout) and mha.dropout.p == 0.1
    assert (mha.num_heads, mha.head_dim, mha.d_out, mha.context_length) == (3, 4, 12, 5)
    assert mha.W_query.bias is None
    assert MultiHeadAttention(10, 12, 5, 0.0, 3, qkv_bias=True).W_key.bias is not None


@pytest.mark.parametrize("d_out, num_heads", [(10, 4), (7, 2), (6, 0)])
def test_indivisible_heads_raise_clear_error(d_out, num_heads):
    for cls in (MultiHeadAttention, MultiHeadAttentionWrapper):
        with pytest.raises(ValueError, match=f"num_heads.*{num_heads}") as info:
            cls(4, d_out, 8, 0.0, num_heads)
        if num_heads:
            assert str(d_out) in str(info.value) and "multiple" in str(info.value)


@pytest.mark.parametrize("cls", ["mha", "causal"])
def test_too_many_tokens_raise_clear_error(cls):
    module = (
        MultiHeadAttention(4, 8, context_length=5, dropout=0.0, num_heads=2)
        if cls == "mha"
        else CausalAttention(4, 8, context_length=5, dropout=0.0)
    )
    module(torch.randn(1, 5, 4))  # exactly context_length tokens is fine
    with pytest.raises(ValueError, match=r"7 tokens.*context_length=5") as info:
        module(torch.randn(1, 7, 4))
    assert "Shorten" in str(info.value)


def test_unbatched_input_raises_clear_error():
    mha = MultiHeadAttention(4, 8, 5, 0.0, num_heads=2)
    with pytest.raises(ValueError, match=r"\(batch, num_tokens, 4\).*unsqueeze"):
        mha(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"d_in=4"):
        mha(torch.randn(1, 5, 3))


def test_mask_is_a_buffer_but_not_in_state_dict():
    for module in (
        MultiHeadAttention(4, 8, 6, 0.0, num_heads=2),
        CausalAttention(4, 8, 6, 0.0),
        MultiHeadAttentionWrapper(4, 8, 6, 0.0, num_heads=2),
    ):
        names = dict(module.named_buffers())
        assert names and all(name.endswith("mask") for name in names)
        assert not any("mask" in key for key in module.state_dict())
    mha = MultiHeadAttention(4, 8, 6, 0.0, num_heads=2, qkv_bias=True)
    assert set(mha.state_dict()) == {
        f"{layer}.{p}"
        for layer in ("W_query", "W_key", "W_value", "out_proj")
        for p in ("weight", "bias")
    }


def test_state_dict_round_trip_gives_same_outputs():
    torch.manual_seed(4)
    source = MultiHeadAttention(4, 8, 6, 0.0, num_heads=2)
    target = MultiHeadAttention(4, 8, 6, 0.0, num_heads=2)
    target.load_state_dict(source.state_dict())  # strict: no missing or unexpected keys
    x = torch.randn(2, 6, 4)
    torch.testing.assert_close(source(x), target(x))


def test_dropout_only_acts_in_training_mode():
    torch.manual_seed(5)
    mha = MultiHeadAttention(4, 8, 6, dropout=0.5, num_heads=2)
    x = torch.randn(2, 6, 4)
    mha.train()
    assert not torch.allclose(mha(x), mha(x))
    mha.eval()
    torch.testing.assert_close(mha(x), mha(x))


@pytest.mark.parametrize("d_in, d_out", [(3, 2), (8, 5)])
def test_self_attention_v1_with_v2_weights_gives_identical_output(d_in, d_out):
    torch.manual_seed(6)
    v1, v2 = SelfAttentionV1(d_in, d_out), SelfAttentionV2(d_in, d_out)
    x = torch.randn(6, d_in)
    assert not torch.allclose(v1(x), v2(x))
    with torch.no_grad():
        # nn.Linear stores its weight as (d_out, d_in) and computes x @ weight.T
        v1.W_query.copy_(v2.W_query.weight.T)
        v1.W_key.copy_(v2.W_key.weight.T)
        v1.W_value.copy_(v2.W_value.weight.T)
    torch.testing.assert_close(v1(x), v2(x))


def test_causal_attention_first_token_attends_only_to_itself():
    torch.manual_seed(7)
    attn = CausalAttention(3, 4, 6, dropout=0.0)
    x = torch.randn(2, 6, 3)
    # with a single visible position, the context vector is that token's value vector
    torch.testing.assert_close(attn(x)[:, 0], attn.W_value(x)[:, 0])
