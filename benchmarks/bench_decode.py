"""Greedy decoding speed: the course's generators against transformers' ``generate``.

Every variant starts from the same random GPT-2 124M weights and the same 4-token prompt
and decodes greedily for ``new_tokens`` tokens at batch size 1. Reported figure: new tokens
per second (new tokens / median wall time of one whole generation, prompt included).
"""

import copy

import torch
from bench_utils import random_token_ids, round_robin, summarize_times, timed

PROMPT_TOKENS = 4
REFERENCE = "transformers_cache"


def _transformers_generator(model, prompt: torch.Tensor):
    from transformers import GenerationConfig

    def run(new_tokens: int) -> torch.Tensor:
        config = GenerationConfig(
            max_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            # the course generators run to max_new_tokens; stopping at GPT-2's
            # <|endoftext|> would make transformers' output shorter than theirs
            eos_token_id=None,
            pad_token_id=None,
        )
        return model.generate(
            prompt, attention_mask=torch.ones_like(prompt), generation_config=config
        )

    return run


def _prefix_agreement(tokens: torch.Tensor, reference: torch.Tensor, prompt_len: int) -> int:
    """How many generated tokens agree with the reference before the first difference."""
    import shared

    return shared.greedy_agreement(tokens[0, prompt_len:], reference[0, prompt_len:])


def _stream_rate(product, matrix_bytes: int, model, repeats: int) -> dict:
    # Median time of one head product, the rate it reads the head at, and the floor that
    # rate puts on a token that reads every linear layer's weights once.
    import shared

    with torch.no_grad():
        for _ in range(3):
            product()
        samples = [timed(product)[0] for _ in range(repeats)]
    seconds = summarize_times(samples)["median_s"]
    rate = matrix_bytes / seconds
    weight_bytes = shared.linear_weight_bytes(model)
    return {
        "head_matvec_ms": 1e3 * seconds,
        "bytes_per_s": rate,
        "weight_bytes_read_per_token": weight_bytes,
        "floor_ms_per_token": 1e3 * weight_bytes / rate,
    }


def weight_stream_rate(model, repeats: int = 15) -> dict:
    """How fast this machine reads weights in a one-token matrix-vector product.

    Decoding one token at batch 1 multiplies a single vector by every weight matrix once, so
    its cost has a floor: the bytes of all those matrices divided by the rate at which the
    CPU streams a matrix through a matrix-vector product. We measure that rate on the
    largest matrix, the output head, in the layout the cached decoder uses for this dtype.
    """
    import shared

    head = model.out_head.weight
    decoder = shared.CachedDecoder(model)  # its "auto" layout decides how the head is read
    vector = torch.randn(1, head.shape[1], dtype=head.dtype)
    if decoder.weight_layout in ("head", "all"):
        matrix, multiply = shared.transposed_weight(head), torch.matmul  # (in, out)
    else:
        matrix, multiply = head, torch.nn.functional.linear  # (out, in)
    matrix_bytes = matrix.numel() * matrix.element_size()
    return {
        "dtype": str(head.dtype).removeprefix("torch."),
        "head_layout": decoder.weight_layout,
        **_stream_rate(lambda: multiply(vector, matrix), matrix_bytes, model, repeats),
        "how": "median time of one (1 x d) @ head product; floor = bytes of every Linear "
        "weight (blocks + head) / that rate",
    }


def int8_stream_rate(model_int8, repeats: int = 15) -> dict:
    """``weight_stream_rate`` for an int8 copy: one ``Int8Linear`` head product, its bytes."""
    head = model_int8.out_head
    vector = torch.randn(1, head.in_features)
    head_bytes = head.qweight.numel() + 4 * head.scale.numel()
    return {
        "dtype": "int8",
        "head_layout": f"Int8Linear, kernel {head.kernel!r}",
        **_stream_rate(lambda: head(vector), head_bytes, model_int8, repeats),
        "how": "median time of one (1 x d) Int8Linear head product (activation quantization "
        "included); floor = int8 bytes + scales of every Int8Linear / that rate",
    }


# the cached decoders of each weight type: eager and compiled, and for int8 a second kernel
WEIGHT_TYPES = {
    "fp32": ("course_cache", "course_cache_compiled"),
    "bf16": ("course_cache_bf16", "course_cache_bf16_compiled"),
    "int8": (
        "course_cache_int8",
        "course_cache_int8_compiled",
        "course_cache_int8_prepacked",
        "course_cache_int8_prepacked_compiled",
    ),
}


def fastest_variants(variants: dict) -> dict:
    """For each weight type, the fastest of its measured cached decoders (what its target reads)."""
    fastest = {}
    for weights, names in WEIGHT_TYPES.items():
        measured = [name for name in names if name in variants]
        if measured:
            name = max(measured, key=lambda n: variants[n]["tokens_per_s"])
            fastest[weights] = {
                "variant": name,
                "of": measured,
                "ratio_vs_transformers": variants[name]["ratio_vs_transformers"],
                "ms_per_token": variants[name]["ms_per_token"],
            }
    return fastest


def verdict_perplexity(models: dict) -> dict:
    """Perplexity of each model on The Verdict (256-token windows, no overlap)."""
    import math

    import shared

    try:
        text = shared.fetch("the-verdict", progress=False).read_text(encoding="utf-8")
    except shared.ResourceError as err:  # offline without the data mirror
        return {"error": f"The Verdict is not available: {err}"}
    loader = shared.create_dataloader(
        text, batch_size=4, max_length=256, stride=256, shuffle=False, drop_last=False
    )
    with torch.no_grad():
        values = {k: math.exp(shared.calc_loss_loader(loader, m, "cpu")) for k, m in models.items()}
    return {
        "perplexity": values,
        "change_vs_fp32": {k: v / values["fp32"] - 1 for k, v in values.items() if k != "fp32"},
        "windows": len(loader.dataset),
        "note": "the benchmark's model has random weights: this checks that int8 changes the "
        "model's predictions little, it is not a quality figure (the speed notebook measures "
        "int8 on a model it trains, and on GPT-2 in full mode)",
    }


def run_decode(
    folder,
    *,
    new_tokens: int,
    repeats: int,
    warmup_tokens: int,
    bf16: bool,
    int8: bool = True,
    compiled: bool = True,
) -> dict:
    """Time every decoding variant, interleaved, and check they produce the same tokens.

    With ``compiled``, each cached variant also runs with ``CompiledDecoder``
    (suffix ``_compiled``); its compilation happens in the warm-up generation.
    """
    from transformers import GPT2LMHeadModel

    import shared

    context_size = 1024  # GPT-2's context length; the prompt plus new tokens stay below it
    prompt = random_token_ids((1, PROMPT_TOKENS))
    course = shared.load_gpt2(folder, size="124M")  # eval mode, output head tied
    hf = GPT2LMHeadModel.from_pretrained(folder).eval()

    makers = {
        "course_no_cache": lambda n: shared.generate(
            course, prompt, n, context_size, temperature=0.0
        ),
        REFERENCE: _transformers_generator(hf, prompt),
        "course_cache": lambda n: shared.generate_cached(course, prompt, n, temperature=0.0),
    }
    course_bf16 = None
    if bf16:
        course_bf16 = copy.deepcopy(course).to(torch.bfloat16)
        makers["course_cache_bf16"] = lambda n: shared.generate_cached(
            course_bf16, prompt, n, temperature=0.0
        )
    course_int8 = course_int8_prepacked = None
    if int8:
        course_int8 = shared.quantized_copy(course, "int8_matmul")
        makers["course_cache_int8"] = lambda n: shared.generate_cached(
            course_int8, prompt, n, temperature=0.0
        )
        if torch.backends.quantized.engine != "none":  # a PyTorch build with int8 kernels
            course_int8_prepacked = shared.quantized_copy(course, "prepacked")
            makers["course_cache_int8_prepacked"] = lambda n: shared.generate_cached(
                course_int8_prepacked, prompt, n, temperature=0.0
            )

    compile_skipped = shared.compile_unavailable() if compiled else "skipped (--no-compile)"
    if compile_skipped is None:
        for name, variant_model in [
            ("course_cache", course),
            ("course_cache_bf16", course_bf16),
            ("course_cache_int8", course_int8),
            ("course_cache_int8_prepacked", course_int8_prepacked),
        ]:
            if variant_model is not None:
                decoder = shared.CompiledDecoder(variant_model)
                makers[f"{name}_compiled"] = lambda n, m=variant_model, d=decoder: (
                    shared.generate_cached(m, prompt, n, temperature=0.0, decoder=d)
                )

    def no_grad_call(make, n):
        def call():
            with torch.no_grad():
                return make(n)

        return call

    warmup_s = {}  # warm-up: a short generation (allocator, threads, lazy init, compiling)
    for name, make in makers.items():
        warmup_s[name] = timed(no_grad_call(make, warmup_tokens))[0]
    times, outputs = round_robin(
        {k: no_grad_call(m, new_tokens) for k, m in makers.items()}, repeats, 0
    )

    reference_tokens = outputs[REFERENCE]
    variants = {}
    for name, samples in times.items():
        stats = summarize_times(samples)
        variants[name] = {
            **stats,
            "tokens_per_s": new_tokens / stats["median_s"],
            "new_tokens": int(outputs[name].shape[1] - PROMPT_TOKENS),
            "warmup_s": warmup_s[name],  # compiled variants: includes torch.compile's work
        }
    reference_rate = variants[REFERENCE]["tokens_per_s"]
    for entry in variants.values():
        entry["ratio_vs_transformers"] = entry["tokens_per_s"] / reference_rate

    checks = []
    for name in ("course_no_cache", "course_cache", "course_cache_compiled"):
        if name in outputs:
            same = torch.equal(outputs[name], reference_tokens)
            checks.append(
                {
                    "name": f"decode: {name} tokens == transformers tokens",
                    "passed": same,
                    "detail": "identical"
                    if same
                    else "first difference after "
                    f"{_prefix_agreement(outputs[name], reference_tokens, PROMPT_TOKENS)} "
                    "generated tokens",
                }
            )
    for name in outputs:
        if "bf16" in name or "int8" in name:
            variants[name]["prefix_agreement_with_fp32"] = _prefix_agreement(
                outputs[name], reference_tokens, PROMPT_TOKENS
            )
        eager = name.removesuffix("_compiled")
        if eager != name and eager in outputs:  # the compiled step's own floating-point sums
            variants[name]["prefix_agreement_with_eager"] = _prefix_agreement(
                outputs[name], outputs[eager], PROMPT_TOKENS
            )

    for entry in variants.values():
        entry["ms_per_token"] = 1e3 * entry["median_s"] / new_tokens
    streaming = {"fp32": weight_stream_rate(course)}
    if course_bf16 is not None:
        streaming["bf16"] = weight_stream_rate(course_bf16)
    int8_quality = None
    if course_int8 is not None:
        streaming["int8"] = int8_stream_rate(course_int8)
        int8_models = {"fp32": course, "int8": course_int8}
        if course_int8_prepacked is not None:
            streaming["int8_prepacked"] = int8_stream_rate(course_int8_prepacked)
            int8_models["int8_prepacked"] = course_int8_prepacked
        int8_quality = verdict_perplexity(int8_models)

    kv_speedup = (
        variants["course_cache"]["tokens_per_s"] / variants["course_no_cache"]["tokens_per_s"]
    )
    generated = reference_tokens[0, PROMPT_TOKENS:].tolist()
    return {
        "settings": {
            "model": "GPT-2 124M, random weights (tied output head), fp32 unless noted",
            "batch_size": 1,
            "prompt_tokens": PROMPT_TOKENS,
            "new_tokens": new_tokens,
            "decoding": "greedy (temperature 0), no early stop at <|endoftext|>",
            "repeats": repeats,
            "warmup": f"one {warmup_tokens}-token generation per variant",
            "reported": "tokens_per_s = new_tokens / median wall time of one generation",
            "reference": f"{REFERENCE} (GPT2LMHeadModel.generate, use_cache=True, fp32, "
            f"attn_implementation={hf.config._attn_implementation!r})",
        },
        "prompt_ids": prompt[0].tolist(),
        "reference_generated_ids": generated,
        "reference_distinct_tokens": len(set(generated)),
        "variants": variants,
        "kv_cache_speedup": kv_speedup,
        "fastest": fastest_variants(variants),
        "compiled_step": compile_skipped or "measured: variants ending in _compiled",
        "weight_streaming": streaming,
        "int8_perplexity": int8_quality,
        "checks": checks,
    }
