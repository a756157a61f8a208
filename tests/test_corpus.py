"""Corpus shards, the pretraining loop, exact resumption, and DDP with torchrun (issue: scale-out)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from ch05_pretraining.checkpoints import load_checkpoint
from ch05_pretraining.corpus import (
    MANIFEST_NAME,
    PretrainConfig,
    ShardError,
    TokenWindows,
    cosine_lr,
    load_manifest,
    open_shards,
    prepare_corpus,
)
from ch05_pretraining.pretrain_loop import pretrain
from ch05_pretraining.pretraining import NonFiniteLossError

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = tiktoken.get_encoding("gpt2")
EOT = TOKENIZER.eot_token

# A model small enough that a CPU step takes milliseconds.
TINY = dict(
    size="124M", emb_dim=32, n_layers=2, n_heads=2, context_length=16, micro_batch_size=2,
    tokens_per_step=128, max_steps=12, warmup_steps=3, max_lr=3e-3, min_lr=3e-4,
    log_every=100, eval_every=4, eval_windows=8, checkpoint_every=4, sample_tokens=5, seed=7,
)  # fmt: skip


def write_corpus(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def verdict_corpus(tmp_path_factory) -> Path:
    from shared import fetch

    text = fetch("the-verdict").read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    # 12 documents of a few paragraphs each, one in a subfolder
    docs = {f"part-{i:02d}.txt": "\n\n".join(paragraphs[i::12]) for i in range(11)}
    docs["more/part-11.txt"] = "\n\n".join(paragraphs[11::12])
    return write_corpus(tmp_path_factory.mktemp("corpus"), docs)


@pytest.fixture(scope="module")
def shards(verdict_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    prepare_corpus(verdict_corpus, out, shard_tokens=1500, val_fraction=0.1, progress=False)
    return out


# --- shard writer --------------------------------------------------------------------


def test_manifest_counts_match_the_shards_and_the_documents(verdict_corpus, shards):
    manifest = load_manifest(shards, check_hashes=True)
    assert len(manifest["shards"]) >= 3
    documents = sorted(verdict_corpus.rglob("*.txt"))
    assert [i["path"] for i in manifest["inputs"]] == [
        p.relative_to(verdict_corpus).as_posix() for p in documents
    ]
    expected_train = expected_val = 0
    for path in documents:
        body = len(TOKENIZER.encode_ordinary(path.read_text(encoding="utf-8")))
        n_val = round(body * 0.1)
        expected_train += body - n_val + 1
        expected_val += n_val + 1
    for record in manifest["shards"]:
        assert (shards / record["file"]).stat().st_size == 2 * record["tokens"]
    assert sum(r["tokens"] for r in manifest["shards"]) == expected_train
    assert manifest["val"]["tokens"] == expected_val
    # the shards cover the documents in order, without gaps
    ranges = [r["documents"] for r in manifest["shards"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == len(documents)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_documents_are_separated_by_the_end_of_text_token(tmp_path):
    corpus = write_corpus(tmp_path / "in", {"a.txt": "alpha beta gamma", "b.txt": "delta epsilon"})
    prepare_corpus(corpus, tmp_path / "out", shard_tokens=1000, val_fraction=0.0, progress=False)
    (train,) = open_shards(tmp_path / "out", "train")
    a, b = TOKENIZER.encode_ordinary("alpha beta gamma"), TOKENIZER.encode_ordinary("delta epsilon")
    assert train.tolist() == a + [EOT] + b + [EOT]
    assert train.dtype == np.uint16


def test_validation_holds_the_tail_of_every_document(tmp_path):
    texts = {
        "a.txt": " ".join(f"w{i}" for i in range(40)),
        "b.txt": " ".join(f"v{i}" for i in range(30)),
    }
    corpus = write_corpus(tmp_path / "in", texts)
    prepare_corpus(corpus, tmp_path / "out", shard_tokens=10_000, val_fraction=0.25, progress=False)
    (train,) = open_shards(tmp_path / "out", "train")
    (val,) = open_shards(tmp_path / "out", "val")
    a, b = (TOKENIZER.encode_ordinary(texts[k]) for k in ("a.txt", "b.txt"))
    cut_a, cut_b = len(a) - round(len(a) * 0.25), len(b) - round(len(b) * 0.25)
    assert train.tolist() == a[:cut_a] + [EOT] + b[:cut_b] + [EOT]
    assert val.tolist() == a[cut_a:] + [EOT] + b[cut_b:] + [EOT]


def test_a_truncated_shard_is_detected(shards, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(shards, damaged)
    with open(damaged / "train_000001.bin", "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 2)
    with pytest.raises(ShardError, match="train_000001.bin.*truncated"):
        open_shards(damaged, "train")


def test_a_changed_shard_fails_the_hash_check(shards, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(shards, damaged)
    with open(damaged / "train_000000.bin", "r+b") as handle:
        handle.write(b"\x00\x00")
    open_shards(damaged, "train")  # sizes still match: only the hash notices
    with pytest.raises(ShardError, match="train_000000.bin.*sha256"):
        load_manifest(damaged, check_hashes=True)


def test_a_folder_without_a_manifest_says_how_to_prepare_it(tmp_path):
    (tmp_path / "train_000000.bin").write_bytes(b"\x00\x00")  # shards, but no manifest
    with pytest.raises(
        ShardError, match=f"has no {MANIFEST_NAME}; prepare it first: .*prepare-corpus"
    ):
        load_manifest(tmp_path)


def test_rerunning_skips_finished_shards(verdict_corpus, tmp_path):
    out = tmp_path / "out"
    first = prepare_corpus(verdict_corpus, out, shard_tokens=1500, val_fraction=0.1, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = prepare_corpus(verdict_corpus, out, shard_tokens=1500, val_fraction=0.1, progress=False)
    assert again == first
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_an_interrupted_preparation_resumes_and_matches_a_clean_run(
    verdict_corpus, tmp_path, monkeypatch
):
    import ch05_pretraining.corpus as corpus

    clean = prepare_corpus(
        verdict_corpus, tmp_path / "clean", shard_tokens=1500, val_fraction=0.1, progress=False
    )
    # Kill the preparation while it writes its third training shard.
    real_write = corpus.write_atomically
    calls = {"train": 0}

    def failing_write(path, data):
        if path.name.startswith("train_"):
            calls["train"] += 1
            if calls["train"] == 3:
                (path.parent / f".{path.name}-interrupted.tmp").write_bytes(data[: len(data) // 2])
                raise KeyboardInterrupt("simulated interruption")
        real_write(path, data)

    monkeypatch.setattr(corpus, "write_atomically", failing_write)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(verdict_corpus, out, shard_tokens=1500, val_fraction=0.1, progress=False)
    partial = json.loads((out / MANIFEST_NAME).read_text())
    assert not partial["complete"] and len(partial["shards"]) == 2
    assert not (out / "train_000002.bin").exists()  # only a temporary file, never the shard
    with pytest.raises(ShardError, match="unfinished"):
        open_shards(out, "train")

    monkeypatch.setattr(corpus, "write_atomically", real_write)
    resumed = prepare_corpus(
        verdict_corpus, out, shard_tokens=1500, val_fraction=0.1, progress=False
    )
    assert resumed == clean
    for record in clean["shards"] + [clean["val"]]:
        assert (out / record["file"]).read_bytes() == (
            tmp_path / "clean" / record["file"]
        ).read_bytes()


def test_other_settings_or_inputs_are_refused(verdict_corpus, shards):
    with pytest.raises(ShardError, match="shard_tokens"):
        prepare_corpus(verdict_corpus, shards, shard_tokens=999, val_fraction=0.1, progress=False)


def test_bad_inputs_get_clear_errors(tmp_path):
    with pytest.raises(ShardError, match="no .txt files"):
        prepare_corpus(tmp_path, tmp_path / "out", progress=False)
    write_corpus(tmp_path / "latin1", {})
    (tmp_path / "latin1" / "bad.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ShardError, match="bad.txt is not UTF-8"):
        prepare_corpus(tmp_path / "latin1", tmp_path / "out2", progress=False)
    with pytest.raises(ShardError, match="no manifest.json"):
        open_shards(tmp_path, "train")


# --- windows and schedule ---------------------------------------------------------------


def test_windows_stay_inside_one_shard_and_targets_are_shifted():
    shards = [np.arange(0, 10, dtype=np.uint16), np.arange(100, 104, dtype=np.uint16)]
    windows = TokenWindows(shards, context_length=3)
    assert windows.num_windows == 7 + 1
    rows = [windows.window(i).tolist() for i in range(windows.num_windows)]
    assert rows[0] == [0, 1, 2, 3] and rows[6] == [6, 7, 8, 9] and rows[7] == [100, 101, 102, 103]
    x, y = windows.batch([0, 7])
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.dtype == torch.long


def test_window_choice_depends_only_on_seed_and_step(shards):
    windows = TokenWindows(open_shards(shards, "train"), 16)
    a = windows.random_indices(seed=1, step=5, count=32)
    assert np.array_equal(a, windows.random_indices(seed=1, step=5, count=32))
    assert not np.array_equal(a, windows.random_indices(seed=1, step=6, count=32))


def test_cosine_schedule_warms_up_then_decays_to_the_minimum():
    lrs = [cosine_lr(s, 1.0, 0.1, warmup_steps=10, max_steps=100) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:100], strict=False))
    assert lrs[99] == pytest.approx(0.1, abs=1e-3) and lrs[110] == 0.1


def test_tokens_per_step_must_divide_into_passes():
    cfg = PretrainConfig(**TINY)
    assert cfg.accumulation_steps(1) == 4 and cfg.accumulation_steps(2) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        cfg.accumulation_steps(3)


def test_config_round_trips_through_the_command_line():
    import argparse

    parser = argparse.ArgumentParser()
    PretrainConfig.add_arguments(parser)
    cfg = PretrainConfig(**{**TINY, "compile": True, "sdpa": False, "sample_prompt": "Once upon"})
    assert PretrainConfig.from_arguments(parser.parse_args(cfg.command_line())) == cfg


# --- training ----------------------------------------------------------------------------


def losses(history):
    return [r["loss"] for r in history if "loss" in r]


@pytest.mark.slow
def test_pretraining_lowers_the_loss_and_writes_a_loadable_checkpoint(shards, tmp_path):
    cfg = PretrainConfig(**{**TINY, "max_steps": 30, "eval_every": 10})
    result = pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False)
    train = losses(result["history"])
    val = [r["val_loss"] for r in result["history"] if "val_loss" in r]
    assert len(train) == 30 and len(val) == 3
    assert np.mean(train[-5:]) < np.mean(train[:5]) - 1.0
    assert val[-1] < val[0]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log == result["history"]
    loaded = load_checkpoint(tmp_path / "run" / "checkpoint", restore_rng=False)
    assert loaded["extra"]["steps_done"] == 30
    assert isinstance(result["sample"], str) and result["sample"].startswith(cfg.sample_prompt)


@pytest.mark.slow
def test_stop_and_resume_gives_the_same_losses_and_weights(shards, tmp_path):
    cfg = PretrainConfig(**{**TINY, "drop_rate": 0.1})  # dropout too: its masks must repeat
    straight = pretrain(cfg, shards, tmp_path / "straight", device="cpu", progress=False)
    pretrain(cfg, shards, tmp_path / "stopped", device="cpu", progress=False, stop_at_step=5)
    resumed = pretrain(cfg, shards, tmp_path / "stopped", device="cpu", progress=False, resume=True)
    assert resumed["history"] == straight["history"]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint", restore_rng=False)["model"]
    b = load_checkpoint(tmp_path / "stopped" / "checkpoint", restore_rng=False)["model"]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_resume_refuses_changed_settings(shards, tmp_path):
    cfg = PretrainConfig(**TINY)
    pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False, stop_at_step=2)
    changed = PretrainConfig(**{**TINY, "seed": 8})
    with pytest.raises(ValueError, match=r"seed \(7 -> 8\)"):
        pretrain(changed, shards, tmp_path / "run", device="cpu", progress=False, resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        pretrain(cfg, shards, tmp_path / "empty", device="cpu", progress=False, resume=True)


def test_a_fresh_run_never_replaces_a_saved_one(shards, tmp_path):
    cfg = PretrainConfig(**TINY)
    pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False, stop_at_step=2)
    with pytest.raises(FileExistsError, match="already holds a saved run; pass --resume"):
        pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False)
    loaded = load_checkpoint(tmp_path / "run" / "checkpoint", restore_rng=False)
    assert loaded["extra"]["steps_done"] == 2


def test_resume_with_a_lower_max_lr_applies_it_from_the_next_step(shards, tmp_path, capsys):
    cfg = PretrainConfig(**TINY)
    pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False, stop_at_step=4)
    lower = PretrainConfig(**{**TINY, "max_lr": 1e-3})
    result = pretrain(lower, shards, tmp_path / "run", device="cpu", progress=False, resume=True)
    assert "changed schedule from step 5: max_lr 0.003 -> 0.001" in capsys.readouterr().out
    steps = [r for r in result["history"] if "lr" in r]
    expected = [cosine_lr(r["step"] - 1, 1e-3, 3e-4, 3, 12) for r in steps if r["step"] > 4]
    assert [r["lr"] for r in steps if r["step"] > 4] == pytest.approx(expected)
    saved = load_checkpoint(tmp_path / "run" / "checkpoint", restore_rng=False)["extra"]
    assert saved["config"]["max_lr"] == 1e-3  # the next resume compares with the new value


def test_resume_finds_a_checkpoint_cut_off_between_its_renames(shards, tmp_path):
    cfg = PretrainConfig(**TINY)
    straight = pretrain(cfg, shards, tmp_path / "straight", device="cpu", progress=False)
    pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False, stop_at_step=4)
    checkpoint = tmp_path / "run" / "checkpoint"
    checkpoint.rename(checkpoint.with_name(".checkpoint-old"))  # a kill between the renames
    resumed = pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False, resume=True)
    assert resumed["history"] == straight["history"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint", "log.jsonl"]


def test_a_non_finite_loss_stops_training_naming_the_step(shards, tmp_path):
    cfg = PretrainConfig(**{**TINY, "max_lr": 1e30, "warmup_steps": 1, "grad_clip": 1e30})
    advice = r"at step 2; no checkpoint was written yet: .* again with --max-lr 5e\+29 "
    with pytest.raises(NonFiniteLossError, match=advice) as err:
        pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False)
    # checkpoint_every=4: nothing to resume yet, so the advice must not say --resume
    assert "--resume" not in str(err.value)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["log.jsonl"]
    # following it (the same folder, no --resume) is accepted; 5e29 is still far too high
    with pytest.raises(NonFiniteLossError, match=advice.replace("5e\\+29", "2.5e\\+29")):
        pretrain(replace(cfg, max_lr=5e29), shards, tmp_path / "run", device="cpu", progress=False)


def train_following_the_advice(cfg, shards, out, tmp_path) -> list[str]:
    """Run ``pretrain``; after each non-finite loss, do literally what the error says.

    Returns the messages seen. Any other error (a refused folder, nothing to resume, a
    refused setting) escapes, and so fails the test.
    """
    messages, resume = [], False
    for _ in range(4):
        try:
            pretrain(cfg, shards, out, device="cpu", progress=False, resume=resume)
            return messages
        except NonFiniteLossError as err:
            messages.append(str(err))
        advised = re.search(r"--max-lr ([0-9.e+-]+)", messages[-1])
        assert advised, messages[-1]
        cfg = replace(cfg, max_lr=float(advised.group(1)))
        resume = "--resume" in messages[-1]
        if "--out NEW_FOLDER" in messages[-1]:
            out = tmp_path / f"new-{len(messages)}"
    pytest.fail("following the advice never got past the non-finite loss:\n" + "\n".join(messages))


# The loss becomes NaN at step 11; half the learning rate (from step 9 on, or from the start) is fine.
NEAR_THE_EDGE = {**TINY, "max_lr": 450.0, "warmup_steps": 1, "grad_clip": 1e30}


@pytest.mark.slow
def test_the_advice_after_a_non_finite_loss_without_a_checkpoint_works(shards, tmp_path):
    # Nothing was saved before the NaN: the run folder holds only log.jsonl. A fresh run with a
    # lower --max-lr must be accepted there (advising --resume ends in "nothing to resume").
    cfg = PretrainConfig(**{**NEAR_THE_EDGE, "checkpoint_every": 100})
    messages = train_following_the_advice(cfg, shards, tmp_path / "run", tmp_path)
    assert messages and all("no checkpoint was written yet" in m for m in messages)
    assert load_checkpoint(tmp_path / "run" / "checkpoint")["extra"]["steps_done"] == 12


@pytest.mark.slow
def test_the_advice_after_a_non_finite_loss_resumes_an_earlier_checkpoint(shards, tmp_path):
    # The checkpoint of step 8 predates the weights that went bad: resume it, with a lower max_lr.
    cfg = PretrainConfig(**{**NEAR_THE_EDGE, "checkpoint_every": 4})
    messages = train_following_the_advice(cfg, shards, tmp_path / "run", tmp_path)
    assert messages and all("--resume --max-lr" in m for m in messages)
    loaded = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert loaded["extra"]["steps_done"] == 12 and loaded["extra"]["config"]["max_lr"] < 450


@pytest.mark.slow
def test_the_advice_after_a_non_finite_loss_never_resumes_the_bad_weights(shards, tmp_path):
    # checkpoint_every=1: the last checkpoint holds the weights that gave the NaN, so resuming
    # would compute the same loss again; the advice is a fresh run in another folder.
    cfg = PretrainConfig(**{**NEAR_THE_EDGE, "checkpoint_every": 1})
    messages = train_following_the_advice(cfg, shards, tmp_path / "run", tmp_path)
    assert messages and all("--resume" not in m and "--out NEW_FOLDER" in m for m in messages)
    assert load_checkpoint(tmp_path / "run" / "checkpoint")["extra"]["steps_done"] == 10
    assert load_checkpoint(tmp_path / "new-1" / "checkpoint")["extra"]["steps_done"] == 12


def test_weights_that_run_away_with_a_finite_loss_stop_at_the_sample_and_keep_the_checkpoint(
    shards, tmp_path, monkeypatch
):
    import ch05_pretraining.pretrain_loop as loop

    log_step = loop._log_step

    def log_then_break_the_weights(run, *args):  # the loss of step 6 was finite
        log_step(run, *args)
        if run.steps_done == 6:
            with torch.no_grad():
                run.raw_model.tok_emb.weight.mul_(1e38)  # finite, but the next pass overflows

    monkeypatch.setattr(loop, "_log_step", log_then_break_the_weights)
    cfg = PretrainConfig(**{**TINY, "sample_every": 6, "checkpoint_every": 4})
    advice = r"when sampling after step 6; continue from the checkpoint of step 4 .* --resume"
    with pytest.raises(NonFiniteLossError, match=advice):
        pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False)
    kept = load_checkpoint(tmp_path / "run" / "checkpoint", restore_rng=False)
    assert kept["extra"]["steps_done"] == 4  # the run-away weights never replaced it
    assert torch.isfinite(kept["model"](torch.tensor([[EOT]]))).all()


def test_padded_vocabulary_and_tied_weights_train_and_sample(shards, tmp_path):
    cfg = PretrainConfig(**{**TINY, "pad_vocab": True, "tie_weights": True, "max_steps": 4})
    result = pretrain(cfg, shards, tmp_path / "run", device="cpu", progress=False)
    loaded = load_checkpoint(tmp_path / "run" / "checkpoint", restore_rng=False)
    assert loaded["config"]["vocab_size"] == 50304 and loaded["extra"]["real_vocab_size"] == 50257
    assert loaded["model"].out_head.weight is loaded["model"].tok_emb.weight
    assert TOKENIZER.encode(result["sample"])  # decodable: no padded ids were sampled


# --- command line: interruption by a signal, and torchrun ------------------------------------


def cli_env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(shards, tmp_path):
    cfg = PretrainConfig(**{**TINY, "max_steps": 40, "checkpoint_every": 5, "eval_every": 10})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): the same summation order
    try:
        straight = pretrain(cfg, shards, tmp_path / "straight", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "ch05_pretraining", "pretrain", "--data", str(shards),
               "--out", str(run), "--device", "cpu", "--no-progress", *cfg.command_line()]  # fmt: skip
    process = subprocess.Popen(
        command, env=cli_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    log = run / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a checkpoint exists and training went on
        steps = len(log.read_text().splitlines()) if log.exists() else 0
        if (run / "checkpoint").is_dir() and steps >= 12:
            break
        if process.poll() is not None:
            pytest.fail(
                f"the run ended before it could be killed: {process.stderr.read().decode()}"
            )
        time.sleep(0.005)
    process.kill()  # SIGKILL: no chance to clean up
    process.wait()
    assert process.returncode == -signal.SIGKILL
    done = load_checkpoint(run / "checkpoint", restore_rng=False)["extra"]["steps_done"]
    assert 0 < done < cfg.max_steps
    resumed = subprocess.run(
        command + ["--resume"],
        env=cli_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after step {done}" in resumed.stdout
    history = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert history == straight["history"]


def test_sigterm_finishes_the_step_and_writes_a_checkpoint(shards, tmp_path):
    cfg = PretrainConfig(**{**TINY, "max_steps": 2000, "checkpoint_every": 1000})
    run = tmp_path / "run"
    command = [sys.executable, "-m", "ch05_pretraining", "pretrain", "--data", str(shards),
               "--out", str(run), "--device", "cpu", "--no-progress", *cfg.command_line()]  # fmt: skip
    process = subprocess.Popen(
        command,
        env=cli_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = run / "log.jsonl"
    deadline = time.monotonic() + 120
    while (
        not (log.exists() and len(log.read_text().splitlines()) >= 3)
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    done = load_checkpoint(run / "checkpoint", restore_rng=False)["extra"]["steps_done"]
    assert 3 <= done < cfg.max_steps
    assert f"stopped after step {done}; continue with --resume" in out


@pytest.mark.slow
def test_torchrun_with_two_processes_matches_one_process(shards, tmp_path):
    cfg = PretrainConfig(**{**TINY, "max_steps": 6, "eval_every": 3})
    single = pretrain(cfg, shards, tmp_path / "single", device="cpu", progress=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "ch05_pretraining", "pretrain", "--data", str(shards), "--out", str(tmp_path / "ddp"),
               "--device", "cpu", "--no-progress", *cfg.command_line()]  # fmt: skip
    completed = subprocess.run(
        command, env=cli_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "process 0 of 2" in completed.stdout
    assert completed.stdout.count("process 0 of") == 1  # only rank 0 prints
    ddp = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ddp] == [r["step"] for r in single["history"]]
    for mine, theirs in zip(ddp, single["history"], strict=True):
        for key in ("loss", "val_loss", "grad_norm"):
            if key in theirs:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), (
                    key,
                    mine["step"],
                )
    a = load_checkpoint(tmp_path / "ddp" / "checkpoint", restore_rng=False)["model"]
    b = load_checkpoint(tmp_path / "single" / "checkpoint", restore_rng=False)["model"]
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_commands_take_text_files_to_a_sampled_model(verdict_corpus, tmp_path):
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "ch05_pretraining", *args],
        env=cli_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    prepared = run("prepare-corpus", str(verdict_corpus), "--out", str(tmp_path / "shards"),
                   "--shard-tokens", "2000", "--no-progress")  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    assert "12 documents ->" in prepared.stdout
    small = ["--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "16",
             "--micro-batch-size", "2", "--tokens-per-step", "64", "--max-steps", "5",
             "--warmup-steps", "1", "--eval-every", "5", "--sample-tokens", "6",
             "--sample-prompt", "I had", "--pad-vocab"]  # fmt: skip
    trained = run("pretrain", "--data", str(tmp_path / "shards"), "--out", str(tmp_path / "run"),
                  "--no-progress", *small)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "step     5 sample: 'I had" in trained.stdout
    generated = run("generate", "--checkpoint", str(tmp_path / "run" / "checkpoint"),
                    "--prompt", "I had", "--max-new-tokens", "8", "--temperature", "1.0")  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("I had")
    missing = run("pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"))
    assert missing.returncode != 0 and "no manifest.json" in missing.stderr
    assert "Traceback" not in missing.stderr


# --- the GPT-2 tokenizer comes from one course function (fault tests) ---


def test_prepare_corpus_and_pretrain_get_the_tokenizer_from_the_course(
    tmp_path, verdict_corpus, shards, monkeypatch
):
    import shared.resources
    from shared.resources import ResourceUnavailableError

    def offline():
        raise ResourceUnavailableError("could not get encoder.json (the mirror named here)")

    monkeypatch.setattr(shared.resources, "gpt2_tokenizer", offline)
    with pytest.raises(ResourceUnavailableError, match="could not get encoder.json"):
        prepare_corpus(verdict_corpus, tmp_path / "out", progress=False)
    with pytest.raises(ResourceUnavailableError, match="could not get encoder.json"):
        pretrain(PretrainConfig(**TINY), shards, tmp_path / "run", device="cpu", progress=False)


@pytest.mark.slow
def test_cli_prepare_corpus_works_offline_from_the_mirror(tmp_path, verdict_corpus):
    env = {**cli_env(), "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache")}
    out = subprocess.run(
        [sys.executable, "-m", "ch05_pretraining", "prepare-corpus", str(verdict_corpus),
         "--out", str(tmp_path / "shards"), "--no-progress"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "shards" / "manifest.json").is_file()
