"""The bonus notebook ch05_pretraining/modern_llms.ipynb: Llama 3 / Qwen3 parts and loader.

Unit checks of each part (RMSNorm, RoPE, grouped-query attention, the KV cache), parity
with ``transformers`` on the test-mode stand-ins of both families (logits, greedy tokens),
the chat formats, the cost table against the published sizes, and the loader's errors.
"""

import json
import shutil
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ch03_attention.attention import MultiHeadAttention
from ch05_pretraining.hf_decoder import (
    chat_prompt,
    chat_reply,
    decoder_config_from_hf,
    generate_decoder,
    load_hf_decoder,
    load_tokenizer,
)
from ch05_pretraining.modern_llms import (
    LLAMA_3_2_1B_CONFIG,
    QWEN3_0_6B_CONFIG,
    GroupedQueryAttention,
    ModernDecoder,
    RMSNorm,
    apply_rope,
    inference_costs,
    rope_angles,
    rope_frequencies,
)
from ch05_pretraining.speed import KVCache
from shared.tensorfiles import TensorFileError
from shared.weights import DECODER_STANDIN_CONFIGS, write_standin_decoder

FAMILIES = ["llama-3.2-1b", "qwen3-0.6b"]
# The Llama stand-in's 2 layers of 4 query heads sharing 2 K/V heads, narrowed for unit checks
STANDIN = decoder_config_from_hf(DECODER_STANDIN_CONFIGS["llama-3.2-1b"])
TINY = replace(STANDIN, vocab_size=50, hidden_size=32, intermediate_size=48, head_dim=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models here are tiny: one thread is fastest, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """Both stand-ins, written by transformers into a fresh folder (not the user's cache)."""
    root = tmp_path_factory.mktemp("decoders")
    return {name: write_standin_decoder(name, root / name) for name in FAMILIES}


@pytest.fixture(scope="module")
def hf_models(standins):
    from transformers import AutoModelForCausalLM

    return {
        name: AutoModelForCausalLM.from_pretrained(
            folder, attn_implementation="eager", dtype=torch.float32
        ).eval()
        for name, folder in standins.items()
    }


# --- the parts ------------------------------------------------------------------------


def test_rmsnorm_matches_torch_rms_norm():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.scale.uniform_(0.5, 1.5)
    x = 3 * torch.randn(2, 5, 16) + 1  # a mean far from zero: a LayerNorm would differ
    expected = F.rms_norm(x, (16,), norm.scale, eps=1e-5)
    torch.testing.assert_close(norm(x), expected)
    assert not torch.allclose(norm(x), F.layer_norm(x, (16,), norm.scale, eps=1e-5), atol=1e-3)


def test_rmsnorm_of_bfloat16_is_computed_in_float32():
    x = (torch.randn(4, 64) * 100).bfloat16()
    out = RMSNorm(64).bfloat16()(x)
    assert out.dtype == torch.bfloat16
    # normalized in float32, then rounded once to bfloat16 (as transformers does)
    torch.testing.assert_close(
        out, F.rms_norm(x.float(), (64,), eps=1e-6).bfloat16(), atol=0, rtol=0
    )


@pytest.mark.parametrize("scaling", [None, DECODER_STANDIN_CONFIGS["llama-3.2-1b"]["rope_scaling"]])
def test_rope_scores_depend_only_on_the_offset(scaling):
    torch.manual_seed(1)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)  # (b, heads, tokens, head_dim)
    inv_freq = rope_frequencies(16, 500_000.0, scaling)

    def score(m, n):
        rotate = [rope_angles(inv_freq, torch.tensor([p])) for p in (m, n)]
        return (apply_rope(q, *rotate[0]) * apply_rope(k, *rotate[1])).sum()

    torch.testing.assert_close(score(7, 3), score(207, 203), atol=1e-4, rtol=0)
    assert abs(score(7, 3) - score(7, 6)) > 1e-2  # another offset, another score
    cos, sin = rope_angles(inv_freq, torch.tensor([123]))
    torch.testing.assert_close(apply_rope(q, cos, sin).norm(), q.norm())


def test_llama3_scaling_keeps_fast_pairs_and_slows_slow_ones():
    scaling = LLAMA_3_2_1B_CONFIG.rope_scaling  # the published one: factor 32 over 8,192
    plain, scaled = rope_frequencies(64, 500_000.0), rope_frequencies(64, 500_000.0, scaling)
    ratio = plain / scaled
    assert torch.equal(scaled[:15], plain[:15])  # wavelength < 2,048 tokens: untouched
    torch.testing.assert_close(ratio[18:], torch.full((14,), 32.0))  # > 8,192 tokens
    assert ((ratio[15:18] > 1) & (ratio[15:18] < 32)).all()  # blended in between
    assert (ratio[1:] >= ratio[:-1]).all()  # slower pairs are never slowed less
    with pytest.raises(ValueError, match="rope_type 'yarn' is not supported"):
        rope_frequencies(64, 500_000.0, {"rope_type": "yarn", "factor": 4.0})


def test_gqa_with_one_kv_head_per_query_head_is_chapter_3_attention():
    torch.manual_seed(2)
    cfg = replace(TINY, num_kv_heads=4)
    gqa = GroupedQueryAttention(cfg)
    mha = MultiHeadAttention(32, 32, context_length=16, dropout=0.0, num_heads=4)
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value", "out_proj"):
            getattr(mha, name).weight.copy_(getattr(gqa, name).weight)
        mha.out_proj.bias.zero_()
    x = torch.randn(2, 9, 32)
    no_rotation = torch.ones(9, 8), torch.zeros(9, 8)
    torch.testing.assert_close(gqa(x, *no_rotation), mha(x))


def test_gqa_shares_each_kv_head_with_its_group():
    # 4 query heads, 2 K/V heads: equal to MHA whose heads 0,1 and 2,3 have equal K/V weights
    torch.manual_seed(3)
    gqa = GroupedQueryAttention(TINY)
    mha = GroupedQueryAttention(replace(TINY, num_kv_heads=4))
    with torch.no_grad():
        mha.load_state_dict(
            {
                "W_query.weight": gqa.W_query.weight,
                "W_key.weight": gqa.W_key.weight.view(2, 8, 32).repeat_interleave(2, 0).reshape(32, 32),
                "W_value.weight": gqa.W_value.weight.view(2, 8, 32).repeat_interleave(2, 0).reshape(32, 32),
                "out_proj.weight": gqa.out_proj.weight,
            }
        )  # fmt: skip
    x = torch.randn(1, 6, 32)
    cos, sin = rope_angles(rope_frequencies(8, 10_000.0), torch.arange(6))
    torch.testing.assert_close(gqa(x, cos, sin), mha(x, cos, sin))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_cached_logits_equal_one_pass(qk_norm):
    torch.manual_seed(4)
    model = ModernDecoder(replace(TINY, qk_norm=qk_norm, head_dim=16)).eval()
    ids = torch.randint(0, 50, (2, 11))
    cache = KVCache(num_layers=2, capacity=11, strategy="grow")
    with torch.no_grad():
        full = model(ids)
        steps = [model(ids[:, :4], cache)] + [model(ids[:, i : i + 1], cache) for i in range(4, 11)]
    assert cache.keys[0].shape == (2, 2, 11, 16)  # only the K/V heads are cached
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_tied_and_untied_heads_and_no_biases():
    tied, untied = ModernDecoder(TINY), ModernDecoder(replace(TINY, tie_word_embeddings=False))
    assert tied.out_head.weight is tied.tok_emb.weight
    assert untied.out_head.weight is not untied.tok_emb.weight
    n = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters())
    assert n == 50 * 32
    assert not [name for name, _ in untied.named_parameters() if "bias" in name]


def test_config_rejects_heads_that_do_not_group():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        replace(TINY, num_kv_heads=3)


def test_costs_match_the_published_sizes():
    with torch.device("meta"):
        qwen = inference_costs(ModernDecoder(QWEN3_0_6B_CONFIG))
        llama = inference_costs(ModernDecoder(LLAMA_3_2_1B_CONFIG))
    assert qwen["parameters"] == 596_049_920  # Qwen3-0.6B: "0.6B", 0.44B non-embedding
    assert qwen["non-embedding"] == 440_467_456
    assert llama["parameters"] == 1_235_814_400  # Llama 3.2 1B: "1.24B"
    assert llama["KV bytes/token bf16"] == 2 * 16 * 8 * 64 * 2
    assert qwen["KV bytes/token fp32"] == 2 * 28 * 8 * 128 * 4


# --- parity with transformers on the stand-ins ------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_transformers_beyond_the_original_context(name, standins, hf_models):
    torch.manual_seed(5)
    ids = torch.randint(0, 256, (2, 100))  # > original_max_position_embeddings (64)
    model = load_hf_decoder(standins[name])
    with torch.no_grad():
        diff = (model(ids) - hf_models[name](ids).logits).abs().max().item()
    assert diff <= 1e-4


def test_llama3_scaling_matters_for_the_parity(standins, hf_models):
    # without the scaling the Llama stand-in must NOT match: the test above can fail
    model = load_hf_decoder(standins["llama-3.2-1b"])
    model.inv_freq = rope_frequencies(model.cfg.head_dim, model.cfg.rope_theta)
    ids = torch.randint(0, 256, (1, 100), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        diff = (model(ids) - hf_models["llama-3.2-1b"](ids).logits).abs().max().item()
    assert diff > 1e-3


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_tokens_match_transformers_cached_and_uncached(name, standins, hf_models):
    model = load_hf_decoder(standins[name])
    ids = torch.randint(0, 256, (1, 90), generator=torch.Generator().manual_seed(7))
    eos_id = hf_models[name].generation_config.eos_token_id
    cached = generate_decoder(model, ids, 20, eos_id=eos_id)
    uncached = generate_decoder(model, ids, 20, use_cache=False, eos_id=eos_id)
    with torch.no_grad():
        expected = hf_models[name].generate(ids, max_new_tokens=20, do_sample=False)
    assert torch.equal(cached, expected)
    assert torch.equal(uncached, expected)


@pytest.mark.parametrize("name", FAMILIES)
def test_generation_stops_at_eos_as_transformers_does(name, standins, hf_models):
    # make the 6th greedy token the stop token: both keep its first appearance and stop there
    model = load_hf_decoder(standins[name])
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(10))
    free = generate_decoder(model, ids, 10)
    eos_id = free[0, 45].item()
    stop = 40 + free[0, 40:].tolist().index(eos_id) + 1  # its first appearance, <= 46
    ours = generate_decoder(model, ids, 10, eos_id=eos_id)
    with torch.no_grad():
        expected = hf_models[name].generate(
            ids, max_new_tokens=10, do_sample=False, eos_token_id=eos_id
        )
    assert ours.shape[1] == stop < 50
    assert torch.equal(ours, expected)


def test_seeded_sampling_is_the_same_with_and_without_the_cache(standins):
    model = load_hf_decoder(standins["qwen3-0.6b"])
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(8))
    runs = [
        generate_decoder(
            model, ids, 15, use_cache=cache, temperature=1.0, top_k=50,
            generator=torch.Generator().manual_seed(9),
        )
        for cache in (True, False)
    ]  # fmt: skip
    assert torch.equal(runs[0], runs[1])


# --- chat format and tokenizer ------------------------------------------------------------


def test_chat_prompts_follow_each_family_format():
    assert chat_prompt("qwen3", "Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert chat_prompt("qwen3", "Hi", thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert chat_prompt("llama", "Hi") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    with pytest.raises(ValueError, match="no chat format for 'gpt2'"):
        chat_prompt("gpt2", "Hi")


@pytest.mark.parametrize(
    ("name", "eos"), [("qwen3-0.6b", "<|im_end|>"), ("llama-3.2-1b", "<|eot_id|>")]
)
def test_chat_markers_are_single_tokens_and_the_reply_stops_before_eos(name, eos, standins):
    tokenizer = load_tokenizer(standins[name])
    model = load_hf_decoder(standins[name])
    ids = tokenizer.encode(chat_prompt(model.cfg.model_type, "Hi"), add_special_tokens=False).ids
    assert tokenizer.token_to_id(eos) in ids
    assert tokenizer.decode(ids[-1:]) == "\n"
    reply = chat_reply(model, tokenizer, "Hi", max_new_tokens=8)
    assert eos not in reply and len(reply.encode("utf-8", "replace")) <= 8 * 4


# --- the loader's errors --------------------------------------------------------------------


def test_both_rope_spellings_give_the_same_config(standins):
    new_style = json.loads((standins["llama-3.2-1b"] / "config.json").read_text())
    old_style = {k: v for k, v in new_style.items() if k != "rope_parameters"}
    rope = dict(new_style["rope_parameters"])
    old_style.update(rope_theta=rope.pop("rope_theta"), rope_scaling=rope)  # the Hub's spelling
    assert decoder_config_from_hf(old_style) == decoder_config_from_hf(new_style)
    assert decoder_config_from_hf(new_style).rope_scaling["factor"] == 8.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gpt2"}, "model_type 'gpt2'"),
        ({"num_hidden_layers": None}, "lacks 'num_hidden_layers'"),
        ({"attention_bias": True}, "sets attention_bias"),
        ({"num_key_value_heads": 3}, "multiple of num_kv_heads"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_type 'yarn'"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}}, "lacks 'factor'"),
    ],
)
def test_bad_configs_are_explained(change, message, standins):
    config = json.loads((standins["llama-3.2-1b"] / "config.json").read_text())
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ValueError, match=message) as err:
        decoder_config_from_hf(config, source="some/config.json")
    assert "some/config.json" in str(err.value)


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "checkpoint")


def test_missing_tensor_is_named(standins, tmp_path):
    folder = _copy(standins["qwen3-0.6b"], tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(TensorFileError, match=r"missing model\.layers\.1\.self_attn\.k_norm"):
        load_hf_decoder(folder)


def test_wrong_shape_is_named(standins, tmp_path):
    folder = _copy(standins["llama-3.2-1b"], tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(65)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(
        TensorFileError, match=r"model\.norm\.weight is \(65,\), the model needs \(64,\)"
    ):
        load_hf_decoder(folder)


def test_untied_config_with_a_tied_file_names_the_missing_head(standins, tmp_path):
    folder = _copy(standins["llama-3.2-1b"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(TensorFileError, match=r"missing lm_head\.weight"):
        load_hf_decoder(folder)


def test_damaged_weights_or_config_name_the_file(standins, tmp_path):
    folder = _copy(standins["qwen3-0.6b"], tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(TensorFileError, match="not a readable safetensors file"):
        load_hf_decoder(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        load_hf_decoder(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json is missing"):
        load_tokenizer(folder)
