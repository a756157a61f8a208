"""Chapter 5: loss, training, resuming, decoding, checkpoints, and GPT-2 weight loading."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_module, tiny_gpt_config

from ch04_gpt_model.gpt_model import GPTModel, generate_text_simple, gpt2_config
from ch05_pretraining.checkpoints import load_checkpoint, save_checkpoint
from ch05_pretraining.gpt2_weights import gpt2_config_from_hf, load_gpt2
from ch05_pretraining.pretraining import (
    NonFiniteLossError,
    apply_top_k,
    apply_top_p,
    calc_loss_batch,
    calc_loss_loader,
    generate,
    train_model,
)
from shared import create_dataloader

# GPT-2's vocabulary and layout, shrunk to 2 small blocks (the chapter-4 preset factory)
TINY = tiny_gpt_config(drop_rate=0.1)


class _SilentTokenizer:
    """tiktoken stand-in good enough for the per-epoch sample: ids <-> text of ids."""

    def encode(self, text, allowed_special=()):
        return [int(t) for t in text.split()]

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def loaders(text, seed=1, batch_size=4):
    kw = dict(
        batch_size=batch_size, max_length=TINY["context_length"], stride=TINY["context_length"]
    )
    split = int(0.9 * len(text))
    return (
        create_dataloader(text[:split], shuffle=True, drop_last=True, seed=seed, **kw),
        create_dataloader(text[split:], shuffle=False, drop_last=False, **kw),
    )


def run_training(model, train_loader, val_loader, epochs, state=None, optimizer=None):
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    state = train_model(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=epochs, eval_freq=3, eval_iter=2,
        start_context="40 367", tokenizer=_SilentTokenizer(), state=state,
    )  # fmt: skip
    return state, optimizer


# --- loss and training ------------------------------------------------------------


def test_calc_loss_batch_is_cross_entropy_of_the_targets():
    torch.manual_seed(0)
    model = GPTModel(TINY).eval()
    inputs = torch.randint(0, 50257, (2, 5))
    targets = torch.randint(0, 50257, (2, 5))
    logits = model(inputs)
    manual = -torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(calc_loss_batch(inputs, targets, model, "cpu"), manual)


def test_calc_loss_loader_rejects_an_empty_loader(verdict_text):
    loader = create_dataloader(
        verdict_text[:200], batch_size=64, max_length=8, stride=8, drop_last=True
    )
    assert len(loader) == 0
    with pytest.raises(ValueError, match="yields no batches"):
        calc_loss_loader(loader, GPTModel(TINY), "cpu")


@pytest.mark.slow
def test_training_lowers_the_loss(verdict_text, capsys):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    train_loader, val_loader = loaders(verdict_text[:6000])
    before = calc_loss_loader(train_loader, model.eval(), "cpu")
    state, _ = run_training(model, train_loader, val_loader, epochs=2)
    after = calc_loss_loader(train_loader, model.eval(), "cpu")
    assert after < before - 1.0
    assert (
        state.epoch == 2 and state.tokens_seen == 2 * len(train_loader) * 4 * TINY["context_length"]
    )
    assert len(state.train_losses) == len(state.val_losses) == len(state.track_tokens_seen) > 0


def test_non_finite_loss_stops_training_naming_the_step(verdict_text):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    with torch.no_grad():
        model.final_norm.scale.fill_(float("nan"))
    train_loader, val_loader = loaders(verdict_text[:6000])
    with pytest.raises(NonFiniteLossError, match="at step 0 "):
        run_training(model, train_loader, val_loader, epochs=1)


@pytest.mark.slow
def test_resume_from_checkpoint_matches_an_uninterrupted_run(verdict_text, tmp_path, capsys):
    text = verdict_text[:8000]
    torch.manual_seed(42)
    model = GPTModel(TINY)
    train_loader, val_loader = loaders(text)
    full_state, _ = run_training(model, train_loader, val_loader, epochs=3)
    full_weights = {k: v.clone() for k, v in model.state_dict().items()}

    # the same run, stopped after one epoch, saved, and continued in fresh objects
    torch.manual_seed(42)
    first = GPTModel(TINY)
    train_loader, val_loader = loaders(text)
    state, optimizer = run_training(first, train_loader, val_loader, epochs=1)
    save_checkpoint(
        tmp_path / "ckpt", first, optimizer, config=TINY, state=state, train_loader=train_loader
    )
    torch.manual_seed(999)  # disturb the global RNG: the checkpoint must restore it
    train_loader, val_loader = loaders(text, seed=7)  # and the shuffling state
    resumed = GPTModel(TINY)
    optimizer = torch.optim.AdamW(resumed.parameters(), lr=5e-3, weight_decay=0.1)
    loaded = load_checkpoint(tmp_path / "ckpt", resumed, optimizer, train_loader=train_loader)
    resumed_state, _ = run_training(
        resumed, train_loader, val_loader, epochs=2, state=loaded["state"], optimizer=optimizer
    )

    assert resumed_state.train_losses == full_state.train_losses
    assert resumed_state.val_losses == full_state.val_losses
    assert resumed_state.track_tokens_seen == full_state.track_tokens_seen
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, full_weights[name]), name


# --- checkpoints -----------------------------------------------------------------------


def test_checkpoint_round_trip_with_tied_head_and_no_leftovers(tmp_path):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    model.out_head.weight = model.tok_emb.weight
    save_checkpoint(tmp_path / "ckpt", model, config=TINY)
    save_checkpoint(tmp_path / "ckpt", model, config=TINY)  # replacing an existing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        ".gpt-course.json", "checkpoint.json", "model.safetensors", "optimizer.safetensors",
    ]  # fmt: skip
    loaded = load_checkpoint(tmp_path / "ckpt", restore_rng=False)["model"]
    assert loaded.out_head.weight is loaded.tok_emb.weight
    x = torch.randint(0, 50257, (1, 7))
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)
    meta = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert meta["config"] == TINY and meta["tied_output_head"] is True


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path)
    model = GPTModel(TINY)
    save_checkpoint(tmp_path / "ckpt", model, config=TINY)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "ckpt", GPTModel(TINY), torch.optim.AdamW(model.parameters()))


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import ch05_pretraining.checkpoints as checkpoints

    model = GPTModel(TINY)
    save_checkpoint(tmp_path / "ckpt", model, config=TINY, extra={"version": 1})

    def broken_save_file(tensors, path):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", model, config=TINY, extra={"version": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary leftovers
    assert load_checkpoint(tmp_path / "ckpt", restore_rng=False)["extra"] == {"version": 1}


def test_a_save_cut_off_between_its_renames_is_still_found(tmp_path):
    model = GPTModel(TINY)
    save_checkpoint(tmp_path / "ckpt", model, config=TINY, extra={"version": 1})
    (tmp_path / "ckpt").rename(tmp_path / ".ckpt-old")  # the state after the first rename
    assert load_checkpoint(tmp_path / "ckpt", restore_rng=False)["extra"] == {"version": 1}
    save_checkpoint(tmp_path / "ckpt", model, config=TINY, extra={"version": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert load_checkpoint(tmp_path / "ckpt", restore_rng=False)["extra"] == {"version": 2}


# --- damaged checkpoints: one sentence naming the file (fault tests) ---------------------


@pytest.fixture
def saved_checkpoint(tmp_path):
    model = GPTModel(TINY)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "ckpt", model, optimizer, config=TINY)
    return tmp_path / "ckpt"


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: b"PK\x03\x04 not safetensors at all"],
    ids=["truncated", "not-safetensors"],
)
def test_a_damaged_weights_file_is_named_in_the_error(saved_checkpoint, damage):
    from shared.tensorfiles import TensorFileError

    weights = saved_checkpoint / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(TensorFileError, match=r"model\.safetensors is not a readable safetensors"):
        load_checkpoint(saved_checkpoint, restore_rng=False)


def test_a_missing_tensor_or_a_checkpoint_of_another_size_is_explained(saved_checkpoint):
    from safetensors.torch import load_file, save_file

    from shared.tensorfiles import TensorFileError

    weights = saved_checkpoint / "model.safetensors"
    tensors = load_file(weights)
    del tensors["final_norm.scale"]
    save_file(tensors, weights)
    with pytest.raises(TensorFileError, match="missing final_norm.scale"):
        load_checkpoint(saved_checkpoint, restore_rng=False)
    wider = gpt2_config("124M", context_length=32, emb_dim=48, n_heads=4, n_layers=2)
    with pytest.raises(TensorFileError, match=r"wrong shapes: .*the model needs \(50257, 48\)"):
        load_checkpoint(saved_checkpoint, GPTModel(wider), restore_rng=False)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{ not json", "is not valid JSON"),
        ('{"format": "something else"}', "was not written by save_checkpoint"),
        ('{"format": "gpt-from-scratch checkpoint v1", "config": {"emb_dim": 8}}',
         "unusable model config"),
        ('{"format": "gpt-from-scratch checkpoint v1", "config": null, "training_state": 3}',
         "damaged training_state"),
    ],
)  # fmt: skip
def test_broken_checkpoint_json_is_named_in_the_error(saved_checkpoint, text, message):
    (saved_checkpoint / "checkpoint.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(saved_checkpoint, restore_rng=False)


def test_a_model_only_load_does_not_need_the_optimizer_file(saved_checkpoint):
    (saved_checkpoint / "optimizer.safetensors").unlink()
    assert isinstance(load_checkpoint(saved_checkpoint)["model"], GPTModel)
    model = GPTModel(TINY)
    with pytest.raises(ValueError, match=r"optimizer\.safetensors is missing"):
        load_checkpoint(saved_checkpoint, model, torch.optim.AdamW(model.parameters()))


def test_the_cli_answers_a_damaged_checkpoint_in_one_line(saved_checkpoint):
    (saved_checkpoint / "model.safetensors").write_bytes(b"\x00" * 10)
    result = run_module(
        "ch05_pretraining", "generate", "--checkpoint", str(saved_checkpoint), "--prompt", "Hi"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "model.safetensors is not a readable safetensors file" in result.stderr


# --- decoding --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(3)
    return GPTModel({**TINY, "drop_rate": 0.0}).eval()


def test_temperature_zero_and_top_k_one_equal_greedy(tiny_model):
    prompt = torch.tensor([[40, 367, 2885]])
    greedy = generate_text_simple(tiny_model, prompt, 15, TINY["context_length"])
    assert torch.equal(
        generate(tiny_model, prompt, 15, TINY["context_length"], temperature=0.0), greedy
    )
    gen = torch.Generator().manual_seed(0)
    top1 = generate(
        tiny_model, prompt, 15, TINY["context_length"], temperature=1.7, top_k=1, generator=gen
    )
    assert torch.equal(top1, greedy)


def test_seeded_sampling_is_reproducible_and_respects_top_k(tiny_model):
    prompt = torch.tensor([[40, 367]])

    def sample(seed):
        gen = torch.Generator().manual_seed(seed)
        return generate(tiny_model, prompt, 10, 32, temperature=1.0, top_k=5, generator=gen)

    assert torch.equal(sample(1), sample(1))
    # every sampled token is among the 5 most likely at its step
    out = sample(2)
    for t in range(2, out.shape[1]):
        logits = tiny_model(out[:, :t])[:, -1, :]
        assert out[0, t].item() in torch.topk(logits, 5).indices[0].tolist()


def test_eos_stops_generation(tiny_model):
    prompt = torch.tensor([[40, 367]])
    greedy = generate(tiny_model, prompt, 10, 32)
    eos = greedy[0, 4].item()  # the third generated token, used as end-of-sequence
    out = generate(tiny_model, prompt, 10, 32, eos_id=eos)
    first_eos = (greedy[0, 2:] == eos).nonzero()[0].item() + 2
    assert torch.equal(out, greedy[:, : first_eos + 1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": -0.5}, "temperature must be"),
        ({"temperature": float("nan")}, "temperature must be"),
        ({"top_k": 0}, "top_k must be"),
        ({"top_k": 2.5}, "top_k must be"),
        ({"top_k": True}, "top_k must be"),  # bool is an int subclass: not a count
        ({"temperature": True}, "temperature must be"),
        ({"top_p": "0.9"}, "top_p must be"),
        ({"top_p": 0.0}, "top_p must be"),
        ({"top_p": 1.5}, "top_p must be"),
    ],
)
def test_invalid_decoding_settings_raise(tiny_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(tiny_model, torch.tensor([[1, 2]]), 3, 32, **kwargs)


def test_empty_prompt_raises(tiny_model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(tiny_model, torch.zeros((1, 0), dtype=torch.long), 3, 32)


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert torch.isfinite(apply_top_k(logits, 2)).tolist() == [[True, False, True, False]]
    probs = torch.softmax(logits, -1)[0].tolist()  # about .64 .09 .24 .03
    assert torch.isfinite(apply_top_p(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(apply_top_p(logits, probs[0] + probs[2] - 1e-6)).tolist() == [
        [True, False, True, False]
    ]
    assert torch.isfinite(apply_top_p(logits, 1.0)).all()
    # p = 1 keeps every token even where float32 sums reach 1.0 before the rarest ones
    wide = torch.randn(200, 50, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.isfinite(apply_top_p(wide, 1.0)).all()


# --- GPT-2 weights: parity with transformers --------------------------------------------


def _hf_checkpoint(tmp_path, **config):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1234)
    hf = GPT2LMHeadModel(GPT2Config(**config)).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    return hf


TINY_HF = {"n_embd": 48, "n_layer": 3, "n_head": 4, "n_positions": 64, "vocab_size": 50257}
FULL_124M_HF = {
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_positions": 1024,
    "vocab_size": 50257,
}


@pytest.mark.parametrize(
    "config,size", [(TINY_HF, None), (FULL_124M_HF, "124M")], ids=["tiny", "124M"]
)
@pytest.mark.slow
def test_loader_matches_transformers(tmp_path, config, size):
    hf = _hf_checkpoint(tmp_path, **config)
    ours = load_gpt2(tmp_path, size=size)
    tokens = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        hf_logits = hf(tokens).logits
        our_logits = ours(tokens)
    assert (hf_logits - our_logits).abs().max().item() <= 1e-4
    targets = torch.roll(tokens, -1, dims=1)
    hf_loss = torch.nn.functional.cross_entropy(hf_logits.flatten(0, 1), targets.flatten())
    our_loss = calc_loss_batch(tokens, targets, ours, "cpu")
    assert abs(hf_loss.item() - our_loss.item()) <= 1e-5
    prompt = tokens[:1, :4]
    hf_greedy = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=50256)
    assert torch.equal(generate(ours, prompt, 20, config["n_positions"]), hf_greedy)


def test_loaded_weights_keep_the_file_layout_and_behave_like_any_parameter(tmp_path):
    _hf_checkpoint(tmp_path, **TINY_HF)
    model = load_gpt2(tmp_path)
    block = model.trf_blocks[0]
    fc = block.ff.fc_in.weight
    assert fc.shape == (4 * TINY_HF["n_embd"], TINY_HF["n_embd"])  # nn.Linear's (out, in)
    assert not fc.is_contiguous() and fc.T.is_contiguous()  # stored as the file's (in, out)
    qkv = [block.att.W_query, block.att.W_key, block.att.W_value]
    # the three weights are column blocks of the file's one c_attn matrix
    assert len({p.weight.untyped_storage().data_ptr() for p in qkv}) == 1
    assert len({p.bias.untyped_storage().data_ptr() for p in qkv}) == 3  # biases are copies
    assert model.out_head.weight is model.tok_emb.weight
    file_bytes = (tmp_path / "model.safetensors").read_bytes()
    # a checkpoint of the loaded model round-trips, and training steps work
    save_checkpoint(tmp_path / "ckpt", model, config=gpt2_config_from_hf(TINY_HF))
    again = load_checkpoint(tmp_path / "ckpt", restore_rng=False)["model"]
    tokens = torch.randint(0, 50257, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again(tokens), model(tokens))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = fc.detach().clone()
    loss = calc_loss_batch(tokens, torch.roll(tokens, -1, 1), model, "cpu")
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, fc.detach())
    # the weights are copy-on-write maps of the file: training never changes the file
    assert (tmp_path / "model.safetensors").read_bytes() == file_bytes
    assert torch.equal(load_gpt2(tmp_path).trf_blocks[0].ff.fc_in.weight, before)


def test_loader_names_first_mismatching_tensor(tmp_path):
    _hf_checkpoint(tmp_path, **TINY_HF)
    with pytest.raises(ValueError, match=r"'wte.weight'.*\(50257, 48\).*\(50257, 768\)"):
        load_gpt2(tmp_path, size="124M")
    with pytest.raises(ValueError, match="choose one of 124M, 355M, 774M, 1558M"):
        load_gpt2(tmp_path, size="125M")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_gpt2(tmp_path / "missing")


def test_loader_answers_a_damaged_weights_file_or_config(tmp_path):
    _hf_checkpoint(tmp_path, **TINY_HF)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(ValueError, match=r"model\.safetensors is not a complete safetensors file"):
        load_gpt2(tmp_path)
    weights.write_bytes(b"<html>404 Not Found</html>")  # a web page saved under the name
    with pytest.raises(ValueError, match="not a complete safetensors file.*download it again"):
        load_gpt2(tmp_path)
    weights.write_bytes(data)
    (tmp_path / "config.json").write_text('{"n_embd": 48,', encoding="utf-8")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text('{"n_embd": 48}', encoding="utf-8")
    with pytest.raises(ValueError, match="config.json lacks 'vocab_size'"):
        load_gpt2(tmp_path)


# --- command line ---------------------------------------------------------------------------


def _cli(*args, cwd):
    return run_module(
        "ch05_pretraining", *args, cwd=cwd, env={**os.environ, "GPT_COURSE_MODE": "test"}
    )


def test_cli_help():
    out = _cli("--help", cwd=None)
    assert out.returncode == 0 and "train" in out.stdout and "generate" in out.stdout
    out = _cli("train", "--help", cwd=None)
    assert out.returncode == 0 and "--resume" in out.stdout


@pytest.mark.slow
def test_cli_train_resume_and_generate(tmp_path, verdict_text):
    (tmp_path / "story.txt").write_text(verdict_text[:6000], encoding="utf-8")
    common = ["--text", "story.txt", "--out", "ckpt", "--emb-dim", "32", "--n-layers", "1", "--n-heads", "2",
              "--context-length", "32", "--batch-size", "4"]  # fmt: skip
    out = _cli("train", *common, "--epochs", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = _cli("train", *common, "--epochs", "2", cwd=tmp_path)  # forgot --resume
    assert out.returncode == 1 and "already holds a saved run; pass --resume" in out.stderr
    out = _cli("train", *common, "--epochs", "2", "--resume", "--lr", "1e-3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "resuming ckpt after epoch 1" in out.stdout
    assert "lr: 0.001 from now on (the checkpoint used 0.0004)" in out.stdout
    meta = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert meta["training_state"]["epoch"] == 2
    assert {g["lr"] for g in meta["optimizer"]["param_groups"]} == {1e-3}  # trained at the new rate
    out = _cli(
        "generate",
        "--checkpoint",
        "ckpt",
        "--prompt",
        "Every effort",
        "--max-new-tokens",
        "5",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Every effort")
    out = _cli("generate", "--checkpoint", "ckpt", "--prompt", "x", "--top-p", "2", cwd=tmp_path)
    assert out.returncode != 0 and "top_p must be in (0, 1]" in out.stderr


@pytest.mark.slow
def test_cli_generate_with_gpt2_uses_the_standin_in_test_mode(tmp_path):
    env_cache = {"GPT_COURSE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-m", "ch05_pretraining", "generate", "--gpt2", "124M", "--prompt", "Hello", "--max-new-tokens", "3"],
        env={**os.environ, "GPT_COURSE_MODE": "test", **env_cache}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "TEST MODE" in out.stderr and out.stdout.startswith("Hello")


# --- the command line never loses a user's files, and names bad input (fault tests) ---


def test_cli_train_refuses_an_out_folder_holding_other_files(tmp_path):
    (tmp_path / "story.txt").write_text("Once upon a time. " * 200, encoding="utf-8")
    (tmp_path / "notes.md").write_text("mine", encoding="utf-8")
    out = _cli("train", "--text", "story.txt", "--out", ".", "--epochs", "1", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "already holds files the course did not save there" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md", "story.txt"]
    assert (tmp_path / "story.txt").read_text(encoding="utf-8").startswith("Once upon")


def test_cli_train_names_a_text_file_that_is_not_utf8(tmp_path):
    (tmp_path / "story.txt").write_bytes("Caf\xe9 au lait. ".encode("latin-1") * 100)
    out = _cli("train", "--text", "story.txt", "--out", "ckpt", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "story.txt is not UTF-8 text" in out.stderr
    assert not (tmp_path / "ckpt").exists()


def test_cli_refuses_an_empty_prompt_by_its_name(tmp_path):
    out = _cli("generate", "--gpt2", "124M", "--prompt", "  ", cwd=tmp_path)
    assert out.returncode == 2 and "--prompt: must not be empty" in out.stderr


def test_cli_train_without_the_tokenizer_names_vocab_bpe_and_writes_nothing(tmp_path, monkeypatch):
    # Offline without the BPE files: the course's one tokenizer function raises the course's
    # resource error, and `train` answers with that one line before it creates anything.
    import shared.resources
    from ch05_pretraining.__main__ import main

    def offline():
        raise shared.resources.ResourceUnavailableError(
            "tiktoken could not load the GPT-2 encoding: it needs encoder.json and vocab.bpe"
        )

    monkeypatch.setattr(shared.resources, "gpt2_tokenizer", offline)
    (tmp_path / "story.txt").write_text("Once upon a time. " * 200, encoding="utf-8")
    small = "--emb-dim 32 --n-layers 1 --n-heads 2 --context-length 32 --epochs 1".split()
    with pytest.raises(SystemExit) as exited:
        main(["train", "--text", str(tmp_path / "story.txt"), "--out", str(tmp_path / "ckpt"), *small])  # fmt: skip
    message = str(exited.value.code)
    assert message.startswith("error: ") and "\n" not in message and "vocab.bpe" in message
    assert not (tmp_path / "ckpt").exists()
