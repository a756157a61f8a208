"""The CUDA paths: TF32, bf16 autocast, fused AdamW, flash attention, cached and compiled
decoding, NCCL DDP.

Every test here needs a CUDA GPU and is skipped, with that reason, where there is none (the
CPU versions of the same code are tested in test_speed.py and test_corpus.py). Each one
compares the GPU path with a reference computed in the same test, never with stored numbers.
"""

import json
import subprocess
import sys

import pytest
import torch
from helpers import tiny_gpt_config

from ch04_gpt_model.gpt_model import GPTModel
from ch05_pretraining.pretraining import calc_loss_batch, generate
from ch05_pretraining.speed import CachedDecoder, generate_cached, use_sdpa_attention
from ch05_pretraining.training_setup import make_training_setup

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# head_dim 64 (flash attention needs a multiple of 8), GPT-2's vocabulary, q/k/v biases
CFG = tiny_gpt_config(context_length=64, emb_dim=128, n_heads=2, qkv_bias=True)


@pytest.fixture
def restore_tf32():
    """make_training_setup switches TF32 on for the process; put the flags back afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def batch(device, size=(2, 64), seed=0):
    tokens = torch.randint(0, 50257, size, generator=torch.Generator().manual_seed(seed))
    return tokens.to(device), torch.roll(tokens, -1, 1).to(device)


def test_training_setup_on_cuda_switches_on_tf32_bf16_and_fused_adamw(restore_tf32):
    torch.backends.cuda.matmul.allow_tf32 = False
    model, optimizer, autocast_dtype = make_training_setup(CFG, "cuda")
    assert next(model.parameters()).is_cuda
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert optimizer.defaults["fused"] is True
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert autocast_dtype == expected
    _, _, off = make_training_setup(CFG, "cuda", bf16=False)
    assert off is None


def test_bf16_autocast_step_matches_fp32_and_keeps_fp32_weights(restore_tf32):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16 support")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    inputs, targets = batch("cuda")
    losses, grads = {}, {}
    for name, options in (("fp32", dict(bf16=False, tf32=False)), ("bf16", {})):
        torch.manual_seed(0)
        model, optimizer, autocast_dtype = make_training_setup(CFG, "cuda", **options)
        with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = calc_loss_batch(inputs, targets, model, "cuda")
        loss.backward()
        losses[name] = loss.item()
        grads[name] = model.tok_emb.weight.grad.float().norm().item()
        optimizer.step()
        assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast casts ops only
        assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
    assert grads["bf16"] == pytest.approx(grads["fp32"], rel=5e-2)


def test_fused_adamw_on_cuda_takes_the_same_steps_as_the_plain_one():
    updated = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = GPTModel(CFG).cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
        inputs, targets = batch("cuda")
        for _ in range(3):
            optimizer.zero_grad()
            calc_loss_batch(inputs, targets, model, "cuda").backward()
            optimizer.step()
        updated[fused] = [p.detach().clone() for p in model.parameters()]
    for plain, fused in zip(updated[False], updated[True], strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)


def test_flash_attention_kernel_runs_the_sdpa_path_and_matches_from_scratch_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("PyTorch's flash attention kernel needs an Ampere or newer GPU")
    torch.manual_seed(0)
    model = GPTModel(CFG).cuda().eval()
    inputs, _ = batch("cuda")
    with torch.no_grad():
        reference = model(inputs).float()  # chapter 3's attention, fp32
        use_sdpa_attention(model)
        with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            flash = model(inputs).float()  # fails if the flash kernel cannot take these inputs
    scale = reference.abs().max()
    assert (flash - reference).abs().max() <= 3e-2 * scale


def test_cached_decoding_on_cuda_gives_the_uncached_tokens():
    torch.manual_seed(0)
    model = GPTModel(CFG).cuda().eval()
    model.out_head.weight = model.tok_emb.weight
    prompt = torch.tensor([[5, 17, 923, 4]], device="cuda")
    with torch.no_grad():
        cached = generate_cached(model, prompt, 40, temperature=0.0)
        uncached = generate(model, prompt, 40, CFG["context_length"], temperature=0.0)
    assert cached.is_cuda
    assert torch.equal(cached, uncached)


def test_compiled_decoder_on_cuda_gives_the_eager_cached_tokens():
    from ch05_pretraining.compiled_decoder import CompiledDecoder

    torch.manual_seed(0)
    model = GPTModel(CFG).cuda().eval()
    model.out_head.weight = model.tok_emb.weight
    prompt = torch.tensor([[5, 17, 923, 4], [8, 8, 1, 2]], device="cuda")
    compiled = CompiledDecoder(model)  # one graph of generated GPU kernels for every position
    with torch.no_grad():
        eager = generate_cached(model, prompt, 40, temperature=0.0)
        tokens = generate_cached(model, prompt, 40, temperature=0.0, decoder=compiled)
        compiled.reset()
        compiled.forward(prompt)  # eager prefill, then one compiled step, against eager
        step = compiled.forward(eager[:, 4:5])
        reference = CachedDecoder(model)
        reference.forward(prompt)
        expected = reference.forward(eager[:, 4:5])
    assert tokens.is_cuda and torch.equal(tokens, eager)
    torch.testing.assert_close(step, expected, rtol=1e-4, atol=1e-4)


def test_nccl_ddp_with_torchrun_matches_one_process(tmp_path):
    # two processes, one GPU each, talking through NCCL, against one process doing the same
    # steps (NCCL cannot put two ranks on one GPU, so one GPU is not enough)
    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL DDP needs two GPUs")
    from test_corpus import REPO_ROOT, TINY, cli_env

    from ch05_pretraining.corpus import PretrainConfig, prepare_corpus
    from ch05_pretraining.pretrain_loop import pretrain
    from shared import fetch

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = fetch("the-verdict").read_text(encoding="utf-8")
    for i in range(4):
        (corpus / f"part-{i}.txt").write_text(text[i::4], encoding="utf-8")
    shards = tmp_path / "shards"
    prepare_corpus(corpus, shards, shard_tokens=1500, val_fraction=0.1, progress=False)
    cfg = PretrainConfig(**{**TINY, "max_steps": 6, "eval_every": 3})
    single = pretrain(cfg, shards, tmp_path / "single", device="cuda", progress=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "ch05_pretraining", "pretrain",
               "--data", str(shards), "--out", str(tmp_path / "ddp"), "--device", "cuda",
               "--no-progress", *cfg.command_line()]  # fmt: skip
    completed = subprocess.run(
        command, env=cli_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "process 0 of 2" in completed.stdout
    ddp = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ddp] == [r["step"] for r in single["history"]]
    for mine, theirs in zip(ddp, single["history"], strict=True):
        for key in ("loss", "val_loss"):
            if key in theirs:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-3, abs=1e-4), (key, mine)


def test_int8_copy_on_cuda_matches_the_cpu_copy_and_keeps_the_cache_promise():
    from ch05_pretraining.quantize import Int8Linear, quantized_copy

    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    cpu = quantized_copy(model, "dequantize")
    gpu = quantized_copy(model, "dequantize").to("cuda")  # buffers move with the module
    inputs, _ = batch("cpu", size=(1, 16))
    with torch.no_grad():
        expected = cpu(inputs)
        got = gpu(inputs.to("cuda")).cpu()
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    prompt = inputs[:, :4].to("cuda")
    assert torch.equal(
        generate_cached(gpu, prompt, 12), generate(gpu, prompt, 12, CFG["context_length"])
    )
    layer = Int8Linear(torch.nn.Linear(32, 16), "int8_matmul").to("cuda")
    with pytest.raises(RuntimeError, match="runs on CPUs"):
        layer(torch.randn(2, 32, device="cuda"))
