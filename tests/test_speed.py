"""Chapter 5 speed options: KV cache, fused attention, training options. Same results, faster."""

import pytest
import torch
from helpers import tiny_gpt_config

from ch03_attention.attention import MultiHeadAttention
from ch04_gpt_model.gpt_model import GPTModel, generate_text_simple
from ch05_pretraining.compiled_decoder import CompiledDecoder, compile_unavailable
from ch05_pretraining.pretraining import calc_loss_batch, generate
from ch05_pretraining.speed import (
    CachedDecoder,
    KVCache,
    forward_with_cache,
    generate_cached,
    generate_text_simple_cached,
    stream_generate,
    use_sdpa_attention,
)
from ch05_pretraining.training_setup import (
    adamw_param_groups,
    hide_padded_vocab,
    make_training_setup,
    padded_vocab_size,
)
from shared.derived import side_by_side

# GPT-2's vocabulary and q/k/v biases, two small blocks, a short context to fill quickly
CFG = tiny_gpt_config(context_length=24, qkv_bias=True)
# one narrow block and an 8-token context: quick for torch.compile to compile
ONE_BLOCK = tiny_gpt_config(context_length=8, emb_dim=16, n_heads=2, n_layers=1, qkv_bias=True)


@pytest.fixture(scope="module")
def model(tiny_tied_gpt):
    return tiny_tied_gpt(CFG, seed=11)


PROMPTS = [
    (torch.tensor([[5, 17, 923]]), 12),  # short prompt
    (torch.tensor([[1, 2, 3, 4], [50000, 7, 7, 7]]), 10),  # a batch
    (torch.arange(100, 120).unsqueeze(0), 4),  # runs exactly to the full context (24)
    (torch.tensor([[42]]), 23),  # one token, then fill the context
]


# --- the KV cache in a few lines (the notebook's teaching version) -------------------------


@pytest.mark.parametrize("prompt,new", PROMPTS)  # each run fits in the 24-token context
def test_simple_cached_generation_equals_generate_text_simple(model, prompt, new):
    cached = generate_text_simple_cached(model, prompt, new)
    assert torch.equal(cached, generate_text_simple(model, prompt, new, CFG["context_length"]))


def test_forward_with_cache_matches_the_full_forward_in_any_chunks(model):
    tokens = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(len(model.trf_blocks), CFG["context_length"])
        chunks = [
            forward_with_cache(model, tokens[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 12))
        ]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)


def test_simple_cached_generation_rejects_a_run_longer_than_the_context(model):
    assert torch.equal(
        generate_text_simple_cached(model, torch.tensor([[7]]), 0), torch.tensor([[7]])
    )
    with pytest.raises(ValueError, match="exceed the context length 24"):
        generate_text_simple_cached(model, torch.arange(20).unsqueeze(0), 5)


# --- the fast decoder ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", KVCache.STRATEGIES)
@pytest.mark.parametrize("layout", CachedDecoder.LAYOUTS)
@pytest.mark.parametrize("prompt,new", PROMPTS)
def test_cached_greedy_equals_uncached(model, prompt, new, strategy, layout):
    decoder = CachedDecoder(model, cache_strategy=strategy, weight_layout=layout)
    cached = generate_cached(model, prompt, new, decoder=decoder)
    assert torch.equal(cached, generate(model, prompt, new, context_size=CFG["context_length"]))


def test_decoder_is_reset_between_prompts(model):
    decoder = CachedDecoder(model)
    first = generate_cached(model, torch.tensor([[3, 4, 5]]), 6, decoder=decoder)
    generate_cached(model, torch.tensor([[9, 9]]), 6, decoder=decoder)
    assert torch.equal(generate_cached(model, torch.tensor([[3, 4, 5]]), 6, decoder=decoder), first)


def test_cached_logits_match_the_full_forward(model):
    tokens = torch.randint(0, 50257, (2, 10), generator=torch.Generator().manual_seed(0))
    decoder = CachedDecoder(model)
    decoder.forward(tokens[:, :6])
    step_logits = [decoder.forward(tokens[:, i : i + 1]) for i in range(6, 10)]
    with torch.no_grad():
        full = model(tokens)
    for i, logits in zip(range(6, 10), step_logits, strict=True):
        torch.testing.assert_close(logits, full[:, i, :], rtol=1e-4, atol=1e-4)


def test_context_full_stop_and_slide(model):
    prompt = torch.arange(1, 21).unsqueeze(0)  # 20 of 24 positions used
    stopped = list(stream_generate(model, prompt, 10, on_full="stop"))
    assert len(stopped) == 5  # 4 fill the cache, the 5th comes from the full cache's logits
    slid = list(stream_generate(model, prompt, 10, on_full="slide"))
    assert len(slid) == 10
    reference = generate(model, prompt, 5, context_size=24)[0, 20:]
    assert torch.equal(torch.stack(slid[:5], 1)[0], reference)  # identical until the context fills
    with pytest.raises(ValueError, match="on_full must be"):
        next(stream_generate(model, prompt, 1, on_full="wrap"))


def test_stream_stops_at_eos_and_validates_settings(model):
    prompt = torch.tensor([[5, 6]])
    greedy = generate(model, prompt, 8, 24)[0, 2:]
    eos = greedy[2].item()
    streamed = list(stream_generate(model, prompt, 8, eos_id=eos))
    first = (greedy == eos).nonzero()[0].item()
    assert [t.item() for t in streamed] == greedy[: first + 1].tolist()
    with pytest.raises(ValueError, match="top_p must be"):
        next(stream_generate(model, prompt, 3, top_p=0.0))


def test_sampling_with_cache_matches_uncached_sampling(model):
    prompt = torch.tensor([[8, 9, 10]])
    kwargs = dict(temperature=0.9, top_k=20, top_p=0.95)
    cached = generate_cached(
        model, prompt, 10, generator=torch.Generator().manual_seed(4), **kwargs
    )
    plain = generate(model, prompt, 10, 24, generator=torch.Generator().manual_seed(4), **kwargs)
    assert torch.equal(cached, plain)


# --- fused attention ---------------------------------------------------------------------


def test_sdpa_path_equals_from_scratch_attention_and_keeps_the_state_dict():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 16, context_length=12, dropout=0.0, num_heads=4, qkv_bias=True)
    x = torch.randn(3, 12, 16)
    keys_before = list(mha.state_dict())
    reference = mha(x)
    mha.use_sdpa = True
    torch.testing.assert_close(mha(x), reference, rtol=1e-5, atol=1e-6)
    assert list(mha.state_dict()) == keys_before


def test_use_sdpa_attention_switches_a_whole_model(model):
    tokens = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens)
        use_sdpa_attention(model, True)
        fused = model(tokens)
        use_sdpa_attention(model, False)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-4)
    assert all(not m.use_sdpa for m in model.modules() if isinstance(m, MultiHeadAttention))
    with pytest.raises(ValueError, match="no MultiHeadAttention"):
        use_sdpa_attention(torch.nn.Linear(2, 2))


def test_state_dict_keys_are_the_same_for_every_speed_option():
    keys = set(GPTModel(CFG).state_dict())
    for options in [{}, {"tie_weights": True}, {"pad_vocab": True}]:
        model, _, _ = make_training_setup(CFG, "cpu", **options)
        assert set(model.state_dict()) == keys


# --- training options ------------------------------------------------------------------------


def test_weight_decay_only_on_matrices():
    model, optimizer, autocast_dtype = make_training_setup(CFG, "cpu", tie_weights=True)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(
        p.dim() < 2 for p in no_decay["params"]
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert autocast_dtype is None  # bf16 autocast is for GPUs only
    assert optimizer.defaults["fused"] is True  # PyTorch's fused AdamW kernel runs on CPUs too
    _, plain, _ = make_training_setup(CFG, "cpu", fused_adamw=False)
    assert not plain.defaults["fused"]
    groups = adamw_param_groups(model, 0.05)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("vocab,expected", [(50257, 50304), (64, 64), (65, 128)])
def test_padded_vocab_size(vocab, expected):
    assert padded_vocab_size(vocab) == expected


def test_padded_vocabulary_is_never_sampled_nor_counted():
    torch.manual_seed(0)
    model, _, _ = make_training_setup(CFG, "cpu", pad_vocab=True)
    assert model.out_head.out_features == 50304
    with torch.no_grad():  # make a padded id the most likely output, were it visible
        model.final_norm.shift.fill_(1.0)
        model.out_head.weight[50300].fill_(1.0)
    tokens = torch.randint(0, 50257, (2, 8))
    hidden = model.final_norm(model.trf_blocks(model.tok_emb(tokens) + model.pos_emb.weight[:8]))
    raw = hidden @ model.out_head.weight.T  # all 50,304 logits, bypassing the hook
    assert (raw.argmax(-1) == 50300).all()  # the trap is armed
    logits = model(tokens)
    assert logits.shape[-1] == 50257
    loss = calc_loss_batch(tokens, torch.roll(tokens, -1, 1), model, "cpu")
    manual = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), torch.roll(tokens, -1, 1).flatten()
    )
    torch.testing.assert_close(loss, manual)
    model.eval()
    sampled = generate(
        model, tokens[:1, :3], 20, 24, temperature=5.0, generator=torch.Generator().manual_seed(1)
    )
    assert sampled.max().item() < 50257
    for layout in CachedDecoder.LAYOUTS:
        decoder = CachedDecoder(model, weight_layout=layout)
        cached = generate_cached(model, tokens[:1, :3], 5, decoder=decoder)
        assert cached.max().item() < 50257
        assert torch.equal(generate(model, tokens[:1, :3], 5, 24), cached)
    with pytest.raises(ValueError, match="exceeds"):
        hide_padded_vocab(model, 60000)


def test_transposed_copies_follow_weight_updates():
    torch.manual_seed(3)
    model = GPTModel(CFG).eval()
    prompt = torch.tensor([[5, 6, 7]])
    decoder = CachedDecoder(model, weight_layout="all")
    generate_cached(model, prompt, 3, decoder=decoder)  # makes the copies
    with torch.no_grad():  # change every weight in place, as an optimizer step does
        for param in model.parameters():
            param.mul_(1.5)
    assert torch.equal(
        generate_cached(model, prompt, 8, decoder=decoder),
        generate(model, prompt, 8, context_size=CFG["context_length"]),
    )


def test_stream_generate_rejects_bad_arguments_and_handles_a_one_token_context():
    torch.manual_seed(4)
    tiny = GPTModel({**CFG, "context_length": 1}).eval()
    out = generate_cached(tiny, torch.tensor([[3]]), 5)
    assert out.shape == (1, 6)
    assert torch.equal(out, generate(tiny, torch.tensor([[3]]), 5, context_size=1))
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(stream_generate(tiny, torch.tensor([[3]]), -1))
    with pytest.raises(ValueError, match="weight_layout"):
        CachedDecoder(tiny, weight_layout="sideways")


def test_compiled_model_loss_equals_eager_loss():
    small = {**ONE_BLOCK, "vocab_size": 128}
    torch.manual_seed(0)
    eager = GPTModel(small).eval()
    tokens = torch.randint(0, 128, (2, 8))
    targets = torch.roll(tokens, -1, 1)
    reference = calc_loss_batch(tokens, targets, eager, "cpu")
    if (reason := compile_unavailable()) is not None:
        pytest.skip(reason)
    compiled = torch.compile(eager)
    loss = calc_loss_batch(tokens, targets, compiled, "cpu")
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-4)


def test_training_setup_with_compile_trains_like_eager():
    if (reason := compile_unavailable()) is not None:
        pytest.skip(reason)
    small = ONE_BLOCK
    tokens = torch.randint(0, 50257, (2, 8), generator=torch.Generator().manual_seed(5))
    targets = torch.roll(tokens, -1, 1)
    losses = {}
    for compile_model in (False, True):
        torch.manual_seed(0)
        model, optimizer, _ = make_training_setup(
            small, "cpu", pad_vocab=True, tie_weights=True, compile_model=compile_model
        )
        history = []
        for _ in range(3):
            optimizer.zero_grad()
            loss = calc_loss_batch(tokens, targets, model, "cpu")
            loss.backward()
            optimizer.step()
            history.append(loss.item())
        losses[compile_model] = history
        raw = getattr(model, "_orig_mod", model)
        assert not any(k.startswith("_orig_mod") for k in raw.state_dict())
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-4)


def test_compiled_step_gives_the_eager_tokens_from_one_graph_and_follows_weight_updates():
    if (reason := compile_unavailable()) is not None:
        pytest.skip(reason)
    import torch._dynamo

    torch.manual_seed(6)
    model = GPTModel(CFG).eval()  # its own model: the weights are changed below
    torch._dynamo.reset()  # start without compiled graphs, and count only this test's
    torch._dynamo.utils.counters.clear()
    decoder = CompiledDecoder(model, weight_layout="all")

    def expected(prompt, new):
        return generate(model, prompt, new, context_size=CFG["context_length"])

    single_rows = [(prompt, new) for prompt, new in PROMPTS if prompt.shape[0] == 1]
    for prompt, new in single_rows:  # up to the full context, and from a one-token prompt
        assert torch.equal(
            generate_cached(model, prompt, new, decoder=decoder), expected(prompt, new)
        )
    # one graph for every position (23 of them in the last prompt)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    with torch.no_grad():  # an optimizer step changes the weights in place
        for param in model.parameters():
            param.mul_(1.5)
    prompt, new = single_rows[0]
    assert torch.equal(generate_cached(model, prompt, new, decoder=decoder), expected(prompt, new))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # weights are inputs
    long_prompt = torch.arange(1, 21).unsqueeze(0)  # 20 of 24 positions: it slides once
    slid = generate_cached(model, long_prompt, 10, decoder=decoder)
    assert torch.equal(slid, generate_cached(model, long_prompt, 10))  # the eager decoder's
    batch, new = PROMPTS[1]
    assert torch.equal(generate_cached(model, batch, new, decoder=decoder), expected(batch, new))


def test_compiled_decoder_without_a_cpp_compiler_says_so_before_any_work(model, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)  # no compiler on PATH
    with pytest.raises(RuntimeError, match=r"needs a C\+\+ compiler.*CachedDecoder gives"):
        CompiledDecoder(model)


def test_feeding_a_prompt_in_chunks_equals_feeding_it_at_once(model):
    prompt = torch.tensor([[5, 17, 923, 4, 4, 8, 100, 7]])
    with torch.no_grad():
        full_logits = model(prompt)[:, -1, :]
    for layout in ("native", "all"):
        decoder = CachedDecoder(model, weight_layout=layout)
        at_once = decoder.forward(prompt)
        decoder.reset()
        decoder.forward(prompt[:, :3])
        in_chunks = decoder.forward(prompt[:, 3:])  # 5 new tokens after 3 cached ones
        torch.testing.assert_close(in_chunks, at_once, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(at_once, full_logits, rtol=1e-5, atol=1e-5)


def _qkv_parts(att):
    return [proj.weight.detach().T for proj in (att.W_query, att.W_key, att.W_value)]


def test_fused_qkv_is_a_view_for_loaded_gpt2_weights(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from ch05_pretraining.gpt2_weights import load_gpt2

    torch.manual_seed(5)
    config = GPT2Config(n_embd=48, n_layer=2, n_head=4, n_positions=32, vocab_size=50257)
    GPT2LMHeadModel(config).save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_gpt2(tmp_path)
    for layout in ("native", "head"):
        decoder = CachedDecoder(loaded, weight_layout=layout)
        for block in loaded.trf_blocks:
            fused = decoder.qkv_weight(block.att)
            assert fused is not None and fused.is_contiguous()
            assert fused.data_ptr() == block.att.W_query.weight.data_ptr()  # a view, no copy
            assert torch.equal(fused, torch.cat(_qkv_parts(block.att), dim=1))
        prompt = torch.tensor([[11, 12, 13], [7, 8, 9]])
        assert torch.equal(
            generate_cached(loaded, prompt, 10, decoder=decoder),
            generate(loaded, prompt, 10, context_size=32),
        )


def test_bf16_gpt2_weights_on_a_cpu_multiply_with_row_major_copies(tmp_path):
    """load_gpt2's (in, out) views are slow in bf16 on AVX2 CPUs: "auto" copies them row-major."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from ch05_pretraining.gpt2_weights import load_gpt2

    torch.manual_seed(6)
    config = GPT2Config(n_embd=48, n_layer=2, n_head=4, n_positions=32, vocab_size=50257)
    GPT2LMHeadModel(config).save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_gpt2(tmp_path).to(torch.bfloat16)  # .to keeps the transposed strides
    decoder = CachedDecoder(loaded)
    assert decoder.weight_layout == "rows"
    for block in loaded.trf_blocks:
        assert not block.ff.fc_in.weight.is_contiguous()  # the file's order, as loaded
        fused = decoder.qkv_weight(block.att)  # (in, 3 * d_out), a view of a row-major copy
        assert fused.T.is_contiguous() and fused.data_ptr() != block.att.W_query.weight.data_ptr()
        assert torch.equal(fused, torch.cat(_qkv_parts(block.att), dim=1))
    prompt = torch.tensor([[11, 12, 13, 14]])
    rows, native = decoder.forward(prompt), CachedDecoder(loaded, weight_layout="native")
    torch.testing.assert_close(rows, native.forward(prompt), rtol=2e-2, atol=2e-2)
    assert CachedDecoder(loaded.float()).weight_layout == "head"  # float32 keeps its default


def test_fused_qkv_is_a_copy_under_all_and_absent_otherwise(model):
    att = model.trf_blocks[0].att
    assert CachedDecoder(model, weight_layout="head").qkv_weight(att) is None  # three products
    fused = CachedDecoder(model, weight_layout="all").qkv_weight(att)
    assert fused.shape == (CFG["emb_dim"], 3 * CFG["emb_dim"]) and fused.is_contiguous()
    assert torch.equal(fused, torch.cat(_qkv_parts(att), dim=1))
    assert fused.data_ptr() != att.W_query.weight.data_ptr()
    # three separate matrices that merely sit next to each other in memory in the wrong order
    # are not taken for a fused one
    joint = torch.randn(CFG["emb_dim"], 3 * CFG["emb_dim"])
    parts = list(joint.split(CFG["emb_dim"], dim=1))
    assert torch.equal(side_by_side(parts), joint)
    assert side_by_side([parts[1], parts[0], parts[2]]) is None
    assert side_by_side([parts[0], parts[1]]) is None  # adjacent, but not a whole row-major matrix
