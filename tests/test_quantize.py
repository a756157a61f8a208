"""The int8 decoder of the speed notebook: per-channel quantization, Int8Linear, quantized_copy.

Every bound asserted here is derived from the rounding rules, not read off a run.
"""

import pytest
import torch
from helpers import tiny_gpt_config

from ch04_gpt_model.gpt_model import GPTModel
from ch05_pretraining.compiled_decoder import CompiledDecoder, compile_unavailable
from ch05_pretraining.pretraining import generate
from ch05_pretraining.quantize import (
    Int8Linear,
    dequantize,
    linear_weight_bytes,
    quantize_per_channel,
    quantize_per_row,
    quantized_copy,
)
from ch05_pretraining.speed import CachedDecoder, _fused_qkv, generate_cached
from ch05_pretraining.training_setup import hide_padded_vocab

CFG = tiny_gpt_config(context_length=24, qkv_bias=True)


@pytest.fixture(scope="module")
def model(tiny_tied_gpt):
    return tiny_tied_gpt(CFG, seed=3)


def _matrices():
    g = torch.Generator().manual_seed(0)
    mixed = torch.randn(6, 40, generator=g) * torch.logspace(-4, 1, 6)[:, None]
    with_zero_row = torch.randn(5, 7, generator=g)
    with_zero_row[2] = 0.0
    transposed_view = torch.randn(33, 17, generator=g).T  # (17, 33), not contiguous
    return {"mixed magnitudes": mixed, "zero row": with_zero_row, "view": transposed_view}


@pytest.mark.parametrize("name", list(_matrices()))
def test_every_weight_is_within_half_a_step_of_its_rows_grid(name):
    w = _matrices()[name]
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and q.is_contiguous()
    assert scale.dtype == torch.float32 and scale.shape == (w.shape[0],)
    assert int(q.abs().max()) <= 127
    error = (dequantize(q, scale) - w).abs()
    assert bool((error <= scale[:, None] / 2 * (1 + 1e-5)).all())
    nonzero = w.abs().amax(dim=1) > 0
    # each row uses its full range: its largest weight maps to +-127
    assert bool((q.abs().amax(dim=1)[nonzero] == 127).all())
    assert bool((q[~nonzero] == 0).all())


def test_per_channel_scales_follow_each_row_not_the_matrix():
    w = torch.tensor([[0.5, -0.25], [0.002, 0.001]])
    q, scale = quantize_per_channel(w)
    assert q.tolist() == [[127, -64], [127, 64]]
    assert torch.allclose(scale, torch.tensor([0.5, 0.002]) / 127)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.ones(4), r"of shape \(4,\)"),
        (torch.ones(2, 3, dtype=torch.int64), "floating-point"),
        (torch.tensor([[1.0, float("nan")]]), "NaN or infinite"),
    ],
)
def test_bad_weights_are_refused_with_a_clear_message(bad, message):
    with pytest.raises(ValueError, match=message):
        quantize_per_channel(bad)


def _layer(bias=True, seed=1):
    torch.manual_seed(seed)
    return torch.nn.Linear(48, 20, bias=bias)


@torch.no_grad()
def _rounded_product(layer, x):
    q, scale = quantize_per_channel(layer.weight)
    return torch.nn.functional.linear(x, dequantize(q, scale), layer.bias)


@pytest.mark.parametrize("bias", [True, False])
def test_weight_only_kernels_compute_the_product_with_the_rounded_weights(bias):
    layer = _layer(bias)
    x = torch.randn(5, 48)
    expected = _rounded_product(layer, x)
    for kernel in ("dequantize", "weight_int8pack"):
        out = Int8Linear(layer, kernel)(x)
        assert torch.allclose(out, expected, rtol=1e-5, atol=1e-6), kernel


def test_int8_matmul_error_is_bounded_by_the_rounding_of_the_activations():
    layer = _layer()
    x = torch.randn(7, 48) * torch.logspace(-2, 1, 7)[:, None]  # rows of different sizes
    q, w_scale = quantize_per_channel(layer.weight)
    _, x_scale = quantize_per_row(x)
    # each input moves by at most x_scale / 2, so each output by that times sum_j |W_rj|
    bound = x_scale / 2 * dequantize(q, w_scale).abs().sum(dim=1)  # (rows, out)
    error = (Int8Linear(layer, "int8_matmul")(x) - _rounded_product(layer, x)).abs()
    assert bool((error <= bound * (1 + 1e-4) + 1e-6).all())
    assert float(error.max()) > 0  # it does round: the bound is not met by doing nothing


def test_int8_matmul_is_exact_when_the_input_is_already_on_the_int8_grid():
    layer = _layer()
    x = torch.randint(-127, 128, (3, 48)).float()
    x[:, 0] = 127.0  # every row's largest magnitude is 127: its scale is exactly 1
    out = Int8Linear(layer, "int8_matmul")(x)
    assert torch.allclose(out, _rounded_product(layer, x), rtol=1e-5, atol=1e-4)


def test_prepacked_error_is_bounded_by_a_7_bit_rounding_of_each_row():
    layer = _layer()
    x = torch.randn(6, 48) * torch.logspace(-2, 1, 6)[:, None]
    q, w_scale = quantize_per_channel(layer.weight)
    # each row is quantized to 128 levels over its own [min, max] (reduce_range: 7 bits)
    step = (
        x.amax(dim=1, keepdim=True).clamp(min=0) - x.amin(dim=1, keepdim=True).clamp(max=0)
    ) / 127
    bound = step / 2 * dequantize(q, w_scale).abs().sum(dim=1)  # (rows, out)
    error = (Int8Linear(layer, "prepacked")(x) - _rounded_product(layer, x)).abs()
    assert bool((error <= bound * 1.01 + 1e-5).all())
    assert float(error.max()) > 0


def test_prepacked_rows_do_not_depend_on_the_rest_of_the_batch():
    int8 = Int8Linear(_layer(), "prepacked")
    x = torch.randn(5, 48)
    x[3] *= 100.0  # one large row would coarsen a grid shared by the batch
    together = int8(x)
    for i in range(len(x)):
        assert torch.equal(together[i], int8(x[i : i + 1])[0])


def test_prepacked_weights_are_repacked_when_the_int8_weight_changes():
    layer = _layer()
    int8 = Int8Linear(layer, "prepacked")
    x = torch.randn(2, 48)
    before = int8(x)
    with torch.no_grad():
        layer.weight.mul_(-1.0)
    int8.load_state_dict(Int8Linear(layer, "prepacked").state_dict())  # in-place copies
    torch.testing.assert_close(int8(x) - int8.bias, -(before - int8.bias), rtol=1e-4, atol=1e-4)


def test_the_prepacked_product_is_an_operator_with_a_shape_only_fake():
    int8 = Int8Linear(_layer(), "prepacked")
    x = torch.randn(3, 48)
    rows = torch.cat([int8(row[None]) for row in x])  # one call per row: the decoding path
    product = torch.ops.gpt_course.prepacked_linear(x, int8.qweight, int8.scale)
    assert torch.equal(product + int8.bias, rows)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:  # what torch.compile sees
        fake = torch.ops.gpt_course.prepacked_linear(
            mode.from_tensor(x), mode.from_tensor(int8.qweight), mode.from_tensor(int8.scale)
        )
    assert fake.shape == (3, 20) and fake.dtype == torch.float32


@pytest.mark.parametrize("kernel", Int8Linear.KERNELS)
def test_stacked_layers_put_their_outputs_side_by_side(kernel):
    layers = [Int8Linear(_layer(seed=s), kernel) for s in (1, 2, 3)]
    stack = Int8Linear.stacked(layers)
    assert (stack.out_features, stack.kernel) == (60, kernel)
    assert torch.equal(stack.qweight[20:40], layers[1].qweight)  # the stored numbers, unchanged
    for rows in (1, 5):
        x = torch.randn(rows, 48)
        assert torch.equal(stack(x), torch.cat([layer(x) for layer in layers], dim=-1))
    with pytest.raises(ValueError, match="same kernel, input size and bias"):
        Int8Linear.stacked([layers[0], Int8Linear(_layer(bias=False), kernel)])


def test_the_decoder_stacks_query_key_and_value_of_an_int8_copy_and_restacks_after_a_change(model):
    att = quantized_copy(model, "int8_matmul").trf_blocks[0].att
    stack = _fused_qkv(att, {})
    assert isinstance(stack, Int8Linear) and stack.out_features == 3 * att.d_out
    assert _fused_qkv(att, {}) is stack  # made once
    with torch.no_grad():
        att.W_key.qweight.neg_()  # an in-place change, as load_state_dict makes
    restacked = _fused_qkv(att, {})
    assert torch.equal(restacked.qweight[att.d_out : 2 * att.d_out], att.W_key.qweight)


def test_int8_linear_keeps_shapes_and_dtype_and_refuses_unknown_kernels():
    layer = _layer(bias=False)
    x = torch.randn(2, 3, 48)
    for kernel in Int8Linear.KERNELS:
        assert Int8Linear(layer, kernel)(x).shape == (2, 3, 20)
    out = Int8Linear(layer, "int8_matmul")(x.bfloat16())
    assert out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown kernel 'int4'"):
        Int8Linear(layer, "int4")


@pytest.mark.parametrize("kernel", ["int8_matmul", "prepacked"])
def test_cpu_kernels_refuse_a_device_they_do_not_run_on(kernel):
    int8 = Int8Linear(_layer(), kernel).to("meta")
    with pytest.raises(RuntimeError, match=f"the {kernel} kernel runs on CPUs"):
        int8(torch.empty(1, 48, device="meta"))


def test_quantized_copy_replaces_every_linear_and_leaves_the_model_as_it_was(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    int8 = quantized_copy(model)
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.modules())
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert [n for n, m in int8.named_modules() if isinstance(m, Int8Linear)] == linears
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.out_head.weight is model.tok_emb.weight  # the original keeps its tying
    assert int8.tok_emb.weight.dtype == torch.float32
    assert torch.equal(int8.tok_emb.weight, model.tok_emb.weight)
    q, _ = quantize_per_channel(model.tok_emb.weight)
    assert torch.equal(int8.out_head.qweight, q)  # the tied head gets its own int8 copy


def test_quantized_copy_refuses_bad_requests(model):
    with pytest.raises(ValueError, match="unknown kernel"):
        quantized_copy(model, "fp8")
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantized_copy(torch.nn.Sequential(torch.nn.LayerNorm(4)))


def test_linear_weight_bytes_counts_a_quarter_plus_the_scales(model):
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = sum(m.weight.numel() for m in linears)
    outputs = sum(m.out_features for m in linears)
    assert linear_weight_bytes(model) == 4 * weights
    assert linear_weight_bytes(quantized_copy(model)) == weights + 4 * outputs


@pytest.mark.parametrize("kernel", Int8Linear.KERNELS)
def test_cached_decoder_on_an_int8_copy_equals_generate_on_it(model, kernel):
    int8 = quantized_copy(model, kernel)
    decoder = CachedDecoder(int8)
    assert decoder.weight_layout == "native" and decoder.qkv_weight(int8.trf_blocks[0].att) is None
    for prompt, new in ((torch.tensor([[5, 17, 923]]), 12), (torch.arange(100, 120)[None], 4)):
        expected = generate(int8, prompt, new, context_size=CFG["context_length"])
        assert torch.equal(generate_cached(int8, prompt, new, decoder=decoder), expected)


@pytest.mark.parametrize("kernel", ["int8_matmul", "prepacked"])  # the ones the benchmark compiles
def test_the_compiled_step_on_an_int8_copy_gives_the_eager_tokens(model, kernel):
    if (reason := compile_unavailable()) is not None:
        pytest.skip(reason)
    int8 = quantized_copy(model, kernel)
    compiled = CompiledDecoder(int8)
    for prompt, new in ((torch.tensor([[5, 17, 923]]), 12), (torch.arange(100, 120)[None], 4)):
        eager = generate_cached(int8, prompt, new)
        assert torch.equal(generate_cached(int8, prompt, new, decoder=compiled), eager)


def test_an_int8_copy_of_loaded_gpt2_weights_decodes_like_generate(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from ch05_pretraining.gpt2_weights import load_gpt2

    torch.manual_seed(5)
    config = GPT2Config(n_embd=48, n_layer=2, n_head=4, n_positions=32, vocab_size=50257)
    GPT2LMHeadModel(config).save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_gpt2(tmp_path)  # block weights are transposed views of the file's matrices
    int8 = quantized_copy(loaded)
    assert all(m.qweight.is_contiguous() for m in int8.modules() if isinstance(m, Int8Linear))
    prompt = torch.tensor([[11, 12, 13], [7, 8, 9]])
    expected = generate(int8, prompt, 10, context_size=32)
    assert torch.equal(generate_cached(int8, prompt, 10), expected)


def test_a_padded_head_stays_hidden_after_quantization():
    torch.manual_seed(0)
    padded = GPTModel({**CFG, "vocab_size": 50304}).eval()
    hide_padded_vocab(padded, 50257)
    with torch.no_grad():  # a padded row that would win every argmax if it were visible
        padded.final_norm.shift.fill_(1.0)
        padded.out_head.weight[50300].fill_(1.0)
    int8 = quantized_copy(padded)
    assert int8.out_head.real_vocab_size == 50257
    tokens = generate_cached(int8, torch.tensor([[1, 2, 3]]), 8)
    assert int(tokens.max()) < 50257
    assert int8(torch.tensor([[1, 2]])).shape[-1] == 50257
