"""Training-step speed: the course's GPTModel against transformers and llms-from-scratch.

All three models are GPT-2 124M with query/key/value biases, dropout 0, and the output
head tied to the token embedding, loaded with the same random weights. One step is
zero_grad + forward + cross-entropy + backward + AdamW step on the same fixed batch.
"""

import copy

import torch
from bench_utils import random_token_ids, round_robin, summarize_times, timed
from torch.nn import functional as F

REFERENCE = "transformers"
LLMS_FROM_SCRATCH_INSTALL = "pip install --no-deps llms-from-scratch"
LEARNING_RATE = 4e-4
WEIGHT_DECAY = 0.1
PEAK_MATMUL_SIZE = 2048
FLOP_FORMULA = (
    "FLOPs per trained token = 6*N + 12*L*T*d (forward + backward). N = non-embedding "
    "parameters (transformer blocks + final LayerNorm) + the output head's V*d weights, "
    "which are tied to the token embedding but still cost a matmul per token; the token "
    "and position embedding lookups cost no matmul FLOPs. 12*L*T*d counts the attention "
    "score and weighted-sum matmuls over the full T x T square (causal masking not "
    "subtracted). L layers, T tokens per sequence, d model width, V vocabulary size."
)


def _load_llms_from_scratch(course_model, cfg: dict):
    """The book's reference GPTModel with the course model's weights, or None if not installed."""
    try:
        from llms_from_scratch.ch04 import GPTModel as ReferenceGPTModel
    except ImportError:
        return None
    model = ReferenceGPTModel(cfg)
    renamed = {  # the book names the feed-forward layers by position in an nn.Sequential
        name.replace(".ff.fc_in.", ".ff.layers.0.").replace(".ff.fc_out.", ".ff.layers.2."): t
        for name, t in course_model.state_dict().items()
    }
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    # the book's attention stores its causal mask as a persistent buffer; the course's does not
    missing = [name for name in missing if not name.endswith(".att.mask")]
    if missing or unexpected:
        raise RuntimeError(
            f"llms_from_scratch.ch04.GPTModel no longer matches the course's parameter names "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); update the renaming in "
            "benchmarks/bench_train.py"
        )
    model.out_head.weight = model.tok_emb.weight  # tie, as the course and GPT-2 do
    return model


def _course_forward(use_sdpa_attention, *, sdpa: bool):
    """Forward pass of the course model with its attention path chosen explicitly."""

    def forward(model, x):
        use_sdpa_attention(model, sdpa)
        return model(x)

    return forward


def flop_model(course_model, seq_len: int) -> dict:
    """FLOPs per trained token from the course model's actual shapes (see FLOP_FORMULA)."""
    n_layers = len(course_model.trf_blocks)
    d_model = course_model.tok_emb.embedding_dim
    unique = sum(p.numel() for p in course_model.parameters())  # tied head counted once
    embeddings = course_model.tok_emb.weight.numel() + course_model.pos_emb.weight.numel()
    non_embedding = unique - embeddings
    head = course_model.out_head.weight.numel()
    attention = 12 * n_layers * seq_len * d_model
    return {
        "formula": FLOP_FORMULA,
        "L": n_layers,
        "T": seq_len,
        "d": d_model,
        "parameters_unique": unique,
        "non_embedding_parameters": non_embedding,
        "output_head_matmul_parameters": head,
        "N": non_embedding + head,
        "flops_per_token": 6 * (non_embedding + head) + attention,
        "flops_per_token_without_head": 6 * non_embedding + attention,
    }


def device_peak(device: str, peak_tflops: float | None) -> dict:
    """The device's name and the published peak to compute MFU against, if one was given."""
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    return {
        "device": device,
        "device_name": name,
        "published_peak_flops_per_s": None if peak_tflops is None else 1e12 * peak_tflops,
        "how": "MFU = achieved FLOP/s (the FLOP model below) / the published peak passed "
        "with --peak-tflops (the device's dense peak for the step's precision, fp32 here, "
        "from its datasheet); 'of peak' is against the matmul peak measured in the same run",
    }


def run_train(
    folder, *, batch_size: int, seq_len: int, warmup_steps: int, timed_steps: int,
    device: str = "cpu", peak_tflops: float | None = None,
) -> dict:  # fmt: skip
    """Time one optimizer step of each model, interleaved, next to a matmul peak.

    ``device`` "cuda" runs every model on the GPU (fp32, as on the CPU); each step ends with
    ``loss.item()``, which waits for the GPU, and so does the timed matmul.
    """
    from transformers import GPT2LMHeadModel

    import shared

    cfg = shared.gpt2_config("124M", qkv_bias=True, drop_rate=0.0)
    tokens = random_token_ids((batch_size, seq_len + 1)).to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (batch, seq_len) each

    course = shared.load_gpt2(folder, size="124M", drop_rate=0.0).to(device)
    hf = GPT2LMHeadModel.from_pretrained(folder).to(device)
    hf_dropouts = [hf.config.resid_pdrop, hf.config.embd_pdrop, hf.config.attn_pdrop]
    if any(hf_dropouts):
        raise RuntimeError(f"the checkpoint's dropout should be 0, got {hf_dropouts}")
    models = {  # name -> (model, forward returning logits)
        "course": (course, _course_forward(shared.use_sdpa_attention, sdpa=False)),
        REFERENCE: (hf, lambda m, x: m(input_ids=x).logits),
        # the same model object and optimizer, with attention switched per step
        "course_sdpa": (course, _course_forward(shared.use_sdpa_attention, sdpa=True)),
    }
    # every CPU speed option of the speed notebook: fused attention, torch.compile, and
    # (below) the fused AdamW kernel; a copy of the course model with the same weights
    fast = shared.use_sdpa_attention(copy.deepcopy(course), True)
    models["course_fast"] = (torch.compile(fast), lambda m, x: m(x))
    book = _load_llms_from_scratch(course, cfg)
    if book is not None:
        book = book.to(device)
        models["llms_from_scratch"] = (book, lambda m, x: m(x))

    checks = []
    heads = {
        "course": (course.out_head.weight, course.tok_emb.weight),
        REFERENCE: (hf.lm_head.weight, hf.transformer.wte.weight),
    }
    if book is not None:
        heads["llms_from_scratch"] = (book.out_head.weight, book.tok_emb.weight)
    for name, (head, embedding) in heads.items():
        checks.append({"name": f"train: {name} output head tied", "passed": head is embedding})

    # Same weights and architecture: equal parameter counts and equal logits on the batch.
    initial = {}
    with torch.no_grad():
        reference_logits = course.eval()(inputs)
        for name, (model, forward) in models.items():
            logits = forward(model.eval(), inputs)
            initial[name] = {
                "parameters": sum(p.numel() for p in model.parameters()),
                "loss": F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item(),
                "max_abs_logit_diff_vs_course": (logits - reference_logits).abs().max().item(),
            }
    logit_scale = reference_logits.abs().max().item()
    for name, facts in initial.items():
        same_size = facts["parameters"] == initial["course"]["parameters"]
        close = facts["max_abs_logit_diff_vs_course"] <= 1e-4 * max(1.0, logit_scale)
        checks.append(
            {
                "name": f"train: {name} has the course model's parameters and logits",
                "passed": same_size and close,
                "detail": f"{facts['parameters']:,} parameters, max |logit diff| "
                f"{facts['max_abs_logit_diff_vs_course']:.2e} (logits up to {logit_scale:.1f})",
            }
        )

    optimizers = {}  # one per model object: course and course_sdpa share theirs

    def make_step(model, forward):
        if id(model) not in optimizers:
            optimizers[id(model)] = torch.optim.AdamW(
                model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                fused=True if model is models["course_fast"][0] else None,
            )  # fmt: skip
        optimizer = optimizers[id(model)]

        def step():
            optimizer.zero_grad(set_to_none=True)
            logits = forward(model, inputs)  # (batch, seq_len, vocab)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            loss.backward()
            optimizer.step()
            return loss.item()

        return step

    size, seeded = PEAK_MATMUL_SIZE, lambda seed: torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=seeded(0)).to(device)
    b = torch.randn(size, size, generator=seeded(1)).to(device)

    def peak_matmul():
        product = a @ b
        if product.is_cuda:
            torch.cuda.synchronize(product.device)  # a GPU runs it asynchronously
        return product

    steps = {name: make_step(model.train(), fwd) for name, (model, fwd) in models.items()}
    compile_seconds, _ = timed(steps["course_fast"])  # the first call compiles
    peak_name = f"matmul_{PEAK_MATMUL_SIZE}"
    steps[peak_name] = peak_matmul  # sampled in the same rounds, so under the same load
    times, last_loss = round_robin(steps, repeats=timed_steps, warmup=warmup_steps)

    flops = flop_model(course, seq_len)
    peak_stats = summarize_times(times.pop(peak_name))
    peak_flops = 2 * PEAK_MATMUL_SIZE**3 / peak_stats["median_s"]
    tokens_per_step = batch_size * seq_len
    variants = {}
    for name, samples in times.items():
        stats = summarize_times(samples)
        rate = tokens_per_step / stats["median_s"]
        achieved = rate * flops["flops_per_token"]
        variants[name] = {
            **stats,
            "tokens_per_s": rate,
            "achieved_flops_per_s": achieved,
            "fraction_of_matmul_peak": achieved / peak_flops,
            "mfu": None if peak_tflops is None else achieved / (1e12 * peak_tflops),
            "initial_loss": initial[name]["loss"],
            "loss_after_last_step": last_loss[name],
            "parameters": initial[name]["parameters"],
        }
    reference_rate = variants[REFERENCE]["tokens_per_s"]
    for entry in variants.values():
        entry["ratio_vs_transformers"] = entry["tokens_per_s"] / reference_rate
    if "llms_from_scratch" in variants:
        book_rate = variants["llms_from_scratch"]["tokens_per_s"]
        for entry in variants.values():
            entry["ratio_vs_llms_from_scratch"] = entry["tokens_per_s"] / book_rate

    return {
        "settings": {
            "model": "GPT-2 124M, qkv_bias=True, dropout 0.0, output head tied to the token "
            "embedding in all three models, fp32, train mode",
            "course_sdpa": "the course model with use_sdpa_attention(model) (PyTorch's fused "
            "scaled_dot_product_attention); shares the course model's weights and optimizer",
            "course_fast": "a copy of the course model with use_sdpa_attention, wrapped in "
            "torch.compile, trained with AdamW(fused=True): every CPU speed option of the "
            "speed notebook; still fp32",
            "course_fast_compile_s": compile_seconds,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "tokens_per_step": tokens_per_step,
            "optimizer": f"torch.optim.AdamW(lr={LEARNING_RATE}, weight_decay={WEIGHT_DECAY}) "
            "on all parameters; PyTorch's default implementation, the fused kernel for "
            "course_fast",
            "step": "zero_grad(set_to_none) + forward + cross-entropy + backward + AdamW step",
            "warmup_steps": warmup_steps,
            "timed_steps": timed_steps,
            "reported": "tokens_per_s = tokens_per_step / median step time",
            "transformers_attn_implementation": hf.config._attn_implementation,
        },
        "llms_from_scratch_available": book is not None,
        "llms_from_scratch_install": LLMS_FROM_SCRATCH_INSTALL,
        "flops": flops,
        "matmul_peak": {
            **peak_stats,
            "size": PEAK_MATMUL_SIZE,
            "flops_per_s": peak_flops,
            "how": f"median time of a {PEAK_MATMUL_SIZE}x{PEAK_MATMUL_SIZE} fp32 matmul "
            f"(2*n^3 FLOPs), sampled once per round between the training steps",
        },
        "device": device_peak(device, peak_tflops),
        "variants": variants,
        "checks": checks,
    }
