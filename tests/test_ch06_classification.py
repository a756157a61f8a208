"""Chapter 6: data splits, padding, freezing, LoRA, training, classifying, saving, and the CLI."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tiktoken
import torch
from helpers import tiny_gpt_config
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ch04_gpt_model.gpt_model import GPTModel, gpt2_config
from ch06_classification.classification import (
    SpamDataset,
    calc_accuracy_loader,
    calc_classification_loss_batch,
    classify,
    count_trainable_parameters,
    create_balanced_dataset,
    create_spam_dataloaders,
    freeze_all_but_last_block,
    load_sms_spam,
    prepare_spam_splits,
    replace_output_head,
    train_classifier,
)
from ch06_classification.lora import (
    LinearWithLoRA,
    LoRALayer,
    load_classifier,
    merge_lora,
    prepare_classifier,
    replace_linear_with_lora,
    save_classifier,
)
from shared import fetch
from shared.io import JSONFileError
from shared.tensorfiles import TensorFileError

TOKENIZER = tiktoken.get_encoding("gpt2")
PAD = 50256
# GPT-2's vocabulary and q/k/v biases, shrunk to 2 small blocks
TINY = tiny_gpt_config(qkv_bias=True)


def tiny_classifier(seed=0, trainable="last-block", **kwargs):
    torch.manual_seed(seed)
    return prepare_classifier(GPTModel(TINY), trainable, **kwargs)


# --- data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sms():
    return load_sms_spam(fetch("sms-spam"))


def test_the_file_is_read_one_message_per_line(sms):
    # the UCI description: 5,574 messages, 4,827 ham and 747 spam
    assert len(sms) == 5574
    assert sms["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert not sms["Text"].str.contains("\n").any()


def test_balanced_splits_have_the_expected_sizes_and_are_disjoint(sms):
    balanced = create_balanced_dataset(sms, seed=123)
    assert balanced["Label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    assert balanced.index.is_unique
    train, val, test = prepare_spam_splits(fetch("sms-spam"), seed=123)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    indices = [set(part.index) for part in (train, val, test)]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    assert set().union(*indices) == set(balanced.index)
    assert set(pd.concat([train, val, test])["Label"]) == {0, 1}
    # the rows are the file's own rows
    for part in (train, val, test):
        assert (sms.loc[part.index, "Text"] == part["Text"]).all()


def test_splits_are_seeded():
    path = fetch("sms-spam")
    first, again, other = (prepare_spam_splits(path, seed=s)[0] for s in (1, 1, 2))
    assert first.index.equals(again.index)
    assert not first.index.equals(other.index)


def test_load_sms_spam_rejects_unknown_labels(tmp_path):
    bad = tmp_path / "messages.tsv"
    bad.write_text("ham\thello\nmaybe\twhat is this\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 \('maybe\\twhat is this'\)"):
        load_sms_spam(bad)


# --- padding and truncation (properties) -----------------------------------------------

message = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=80),
    st.sampled_from(["<|endoftext|>", "Win <|endoftext|> now", "   ", "ok"]),
)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(message, min_size=1, max_size=6), max_length=st.none() | st.integers(1, 40))
def test_every_row_is_the_message_prefix_then_padding(texts, max_length):
    frame = pd.DataFrame({"Label": [i % 2 for i in range(len(texts))], "Text": texts})
    encoded = [TOKENIZER.encode(text, disallowed_special=()) for text in texts]
    if max_length is None and max(map(len, encoded)) == 0:
        with pytest.raises(ValueError, match="every message is empty"):
            SpamDataset(frame, TOKENIZER, max_length)
        return
    dataset = SpamDataset(frame, TOKENIZER, max_length)
    expected_length = max_length if max_length is not None else max(map(len, encoded))
    assert dataset.max_length == expected_length
    for i, ids in enumerate(encoded):
        row, label = dataset[i]
        assert row.shape == (expected_length,) and row.dtype == torch.long
        assert label.item() == i % 2
        kept = ids[:expected_length]  # truncation keeps the prefix
        assert row[: len(kept)].tolist() == kept
        assert (row[len(kept) :] == PAD).all()  # padding, and only padding, at the end
        assert PAD not in kept  # message text (even "<|endoftext|>") never becomes the pad id


def test_dataset_errors():
    with pytest.raises(ValueError, match="class ids"):
        SpamDataset(pd.DataFrame({"Label": ["spam"], "Text": ["hi"]}), TOKENIZER)
    with pytest.raises(ValueError, match="columns"):
        SpamDataset(pd.DataFrame({"label": [1], "text": ["hi"]}), TOKENIZER)
    with pytest.raises(ValueError, match="context length 32"):
        SpamDataset(pd.DataFrame({"Label": [1], "Text": ["hi"]}), TOKENIZER, 33, context_length=32)


def test_dataset_reads_csv_and_caps_at_the_context_length(tmp_path):
    frame = pd.DataFrame({"Label": [0, 1], "Text": ["short", "word " * 100]})
    frame.to_csv(tmp_path / "part.csv", index=False)
    dataset = SpamDataset(tmp_path / "part.csv", TOKENIZER, context_length=16)
    assert dataset.max_length == 16
    assert dataset[1][0].tolist() == TOKENIZER.encode("word " * 100)[:16]


def test_dataloaders_share_one_length_and_respect_limits():
    train, val, test = prepare_spam_splits(fetch("sms-spam"))
    loaders = create_spam_dataloaders(
        train, val, test, TOKENIZER, batch_size=8, limits=(20, 9, None)
    )
    assert [len(loader.dataset) for loader in loaders] == [20, 9, 300]
    assert len(loaders[0]) == 2  # 20 messages, batches of 8, the last incomplete one dropped
    lengths = {batch.shape[1] for loader in loaders for batch, _ in loader}
    assert lengths == {SpamDataset(train, TOKENIZER).max_length}
    with pytest.raises(ValueError, match="fewer than one batch"):
        create_spam_dataloaders(train, val, test, TOKENIZER, batch_size=8, limits=(5, 5, 5))


# --- head, freezing, loss ----------------------------------------------------------------


def test_new_head_and_frozen_parameters_stay_put_during_a_step():
    model = tiny_classifier()
    assert model.out_head.out_features == 2
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("trf_blocks.1.", "final_norm.", "out_head."))
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-2, weight_decay=0.1
    )  # all params, on purpose
    inputs, targets = torch.randint(0, 50257, (4, 10)), torch.tensor([0, 1, 1, 0])
    calc_classification_loss_batch(inputs, targets, model, "cpu").backward()
    optimizer.step()
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == (name in names), name


def test_replace_output_head():
    model = GPTModel(TINY)
    model.out_head.weight = model.tok_emb.weight  # tied, as GPT-2 loads
    replace_output_head(model, num_classes=3)
    assert (model.out_head.in_features, model.out_head.out_features) == (32, 3)
    assert model.out_head.bias is not None and model.out_head.weight is not model.tok_emb.weight
    assert model(torch.randint(0, 50257, (2, 5))).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        replace_output_head(model, num_classes=1)


def test_freezing_a_tied_head_is_refused():
    model = GPTModel(TINY)
    model.out_head.weight = model.tok_emb.weight
    with pytest.raises(ValueError, match="replace_output_head"):
        freeze_all_but_last_block(model)


def test_loss_reads_only_the_last_position():
    model = tiny_classifier()
    inputs, targets = torch.randint(0, 50257, (3, 7)), torch.tensor([1, 0, 1])
    logits = model(inputs)[:, -1, :]
    expected = torch.nn.functional.cross_entropy(logits, targets)
    torch.testing.assert_close(
        calc_classification_loss_batch(inputs, targets, model, "cpu"), expected
    )


class _LastTokenParity(nn.Module):
    # predicts class (last token id % 2) with certainty: a model whose accuracy we know
    def forward(self, idx):
        return nn.functional.one_hot(idx % 2, 2).float() * 10  # (batch, tokens, 2)


def test_accuracy_counts_correct_predictions_over_the_requested_batches():
    ids = torch.arange(10).unsqueeze(1).repeat(1, 3)  # last token 0..9
    labels = torch.arange(10) % 2
    labels[[4, 7, 9]] = 1 - labels[[4, 7, 9]]  # three wrong: 7 of 10 right, the first 4 all right
    loader = DataLoader(TensorDataset(ids, labels), batch_size=4)
    assert calc_accuracy_loader(loader, _LastTokenParity(), "cpu") == pytest.approx(0.7)
    assert calc_accuracy_loader(loader, _LastTokenParity(), "cpu", num_batches=1) == 1.0
    with pytest.raises(ValueError, match="no batches"):
        calc_accuracy_loader(
            DataLoader(TensorDataset(ids, labels), batch_size=20, drop_last=True),
            _LastTokenParity(),
            "cpu",
        )


def test_a_training_step_lowers_the_loss(capsys):
    model = tiny_classifier(seed=1, trainable="all")
    torch.manual_seed(1)
    inputs, targets = torch.randint(0, 50257, (8, 12)), torch.tensor([0, 1] * 4)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=8)
    loss_before = calc_classification_loss_batch(inputs, targets, model.eval(), "cpu").item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    history = train_classifier(
        model, loader, loader, optimizer, "cpu", num_epochs=1, eval_freq=1, eval_iter=1
    )
    loss_after = calc_classification_loss_batch(inputs, targets, model.eval(), "cpu").item()
    assert loss_after < loss_before
    assert (history.epoch, history.global_step, history.examples_seen) == (1, 0, 8)
    assert len(history.train_losses) == len(history.val_accs) == 1
    assert "Ep 1" in capsys.readouterr().out


# --- LoRA --------------------------------------------------------------------------------


def test_lora_with_zero_b_leaves_outputs_unchanged():
    torch.manual_seed(0)
    model = GPTModel(TINY).eval()
    inputs = torch.randint(0, 50257, (2, 9))
    expected = model(inputs)
    replace_linear_with_lora(model, rank=4, alpha=8)
    assert torch.equal(model(inputs), expected)


def test_lora_trains_only_its_own_matrices_and_counts_rank_times_in_plus_out():
    model = GPTModel(TINY)
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    replace_linear_with_lora(model, rank=3, alpha=6)
    assert count_trainable_parameters(model) == sum(3 * (i + o) for i, o in shapes)
    assert all(
        n.endswith((".lora.A", ".lora.B")) for n, p in model.named_parameters() if p.requires_grad
    )
    wrapped = [m for m in model.modules() if isinstance(m, LinearWithLoRA)]
    assert len(wrapped) == len(shapes)
    inside = {id(m.linear) for m in wrapped}
    assert all(
        id(m) in inside for m in model.modules() if isinstance(m, nn.Linear)
    )  # none left bare
    with pytest.raises(ValueError, match="already has LoRA"):
        replace_linear_with_lora(model, rank=3, alpha=6)


def test_lora_init_and_scaling():
    torch.manual_seed(0)
    layer = LoRALayer(100, 7, rank=5, alpha=10)
    assert layer.scaling == 2.0
    assert torch.equal(layer.B, torch.zeros(5, 7))
    assert layer.A.abs().max() <= 1 / 100**0.5 and layer.A.std() > 0
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(3, 100)
    torch.testing.assert_close(layer(x), 2.0 * x @ layer.A @ layer.B)
    with pytest.raises(ValueError, match="rank must be a positive int"):
        LoRALayer(4, 4, rank=0, alpha=1)


def test_merged_lora_equals_unmerged():
    model = tiny_classifier(seed=2, trainable="lora", rank=4, alpha=8).eval()
    inputs = torch.randint(0, 50257, (2, 11))
    before_training = model(inputs)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALayer):
                module.B.normal_(std=0.1)  # as if trained
    unmerged = model(inputs)
    assert not torch.allclose(unmerged, before_training)  # the update does change the outputs
    merge_lora(model)
    assert not any(isinstance(m, (LinearWithLoRA, LoRALayer)) for m in model.modules())
    torch.testing.assert_close(model(inputs), unmerged, atol=1e-5, rtol=1e-5)


def test_prepare_classifier_trainable_parts():
    with torch.device("meta"):
        counts = {part: count_trainable_parameters(prepare_classifier(GPTModel(gpt2_config("124M", qkv_bias=True)), part))
                  for part in ("last-block", "all", "lora")}  # fmt: skip
    # GPT-2 small with a 2-class head: 124,439,808 - 38,597,376 (vocabulary head) + 1,538
    assert counts["all"] == 124_441_346
    attention = 4 * (768 * 768 + 768)  # query, key, value, output projections, with biases
    mlp = 768 * 3072 + 3072 + 3072 * 768 + 768
    block = attention + mlp + 2 * 2 * 768  # two LayerNorms with scale and shift
    assert counts["last-block"] == block + 2 * 768 + (768 * 2 + 2)  # + final norm + head
    linears = 12 * (4 * (768 + 768) + 2 * (768 + 3072)) + (768 + 2)
    assert counts["lora"] == 16 * linears
    with pytest.raises(ValueError, match="trainable must be one of"):
        prepare_classifier(GPTModel(TINY), "middle")


# --- classify, save, load ----------------------------------------------------------------


def test_classify_rejects_empty_text_and_truncates_long_text():
    model = tiny_classifier()
    for empty in ("", "   ", "\n\t"):
        with pytest.raises(ValueError, match="empty or whitespace-only"):
            classify(empty, model, TOKENIZER, "cpu", max_length=20)
    long_text = "free prize " * 200  # far more than the 32-token context
    assert classify(long_text, model, TOKENIZER, "cpu", max_length=32) in ("spam", "not spam")
    # padded to max_length exactly like the training rows
    ids = SpamDataset(
        pd.DataFrame({"Label": [0], "Text": ["hello"]}), TOKENIZER, 20, context_length=32
    )[0][0]
    expected = ("not spam", "spam")[model.eval()(ids.unsqueeze(0))[0, -1].argmax().item()]
    assert classify("hello", model, TOKENIZER, "cpu", max_length=20) == expected


def test_classify_pads_with_the_given_token():
    model = tiny_classifier(seed=4).eval()
    ids = TOKENIZER.encode("see you at 6") + [0] * 6
    logits = model(torch.tensor([ids]))[0, -1]
    expected = ("not spam", "spam")[logits.argmax().item()]
    assert (
        classify("see you at 6", model, TOKENIZER, "cpu", max_length=len(ids), pad_token_id=0)
        == expected
    )


def test_classify_needs_the_training_length():
    model = tiny_classifier()
    with pytest.raises(TypeError, match="max_length"):
        classify("hello", model, TOKENIZER, "cpu")  # no default: it must match the training rows
    with pytest.raises(TypeError):
        classify("hello", model, TOKENIZER, "cpu", 20)  # keyword only
    for bad in (None, 0, -3, 33, 2.5, "20"):  # the tiny model's context length is 32
        with pytest.raises(
            ValueError, match=r"length the classifier was trained with.*context length 32"
        ):
            classify("hello", model, TOKENIZER, "cpu", max_length=bad)


@pytest.mark.parametrize("trainable", ["last-block", "lora"])
def test_save_and_load_round_trip(tmp_path, trainable):
    model = tiny_classifier(seed=3, trainable=trainable, rank=2, alpha=4).eval()
    if trainable == "lora":
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, LoRALayer):
                    module.B.normal_()
    save_classifier(tmp_path / "clf", model, config=TINY, max_length=20, metadata={"note": "x"})
    save_classifier(
        tmp_path / "clf", model, config=TINY, max_length=20, metadata={"note": "x"}
    )  # replaces
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]
    loaded, meta = load_classifier(tmp_path / "clf")
    assert not loaded.training
    inputs = torch.randint(0, 50257, (3, 20))
    assert torch.equal(loaded(inputs), model(inputs))
    assert meta["max_length"] == 20 and meta["metadata"] == {"note": "x"} and meta["config"] == TINY
    assert meta["lora"] == ({"rank": 2, "alpha": 4} if trainable == "lora" else None)
    assert meta["pad_token_id"] == PAD
    with pytest.raises(FileNotFoundError, match="no classifier.json"):
        load_classifier(tmp_path)


def test_saving_stores_the_pad_token_and_replaces_a_classifier_only_when_complete(
    tmp_path, monkeypatch
):
    from ch06_classification import lora

    model = tiny_classifier(seed=5).eval()
    save_classifier(tmp_path / "clf", model, config=TINY, max_length=12, pad_token_id=0)
    before = (tmp_path / "clf" / "model.safetensors").read_bytes()
    assert load_classifier(tmp_path / "clf")[1]["pad_token_id"] == 0

    def fail_half_way(tensors, filename):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(lora, "save_file", fail_half_way)
    with torch.no_grad():
        model.out_head.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_classifier(tmp_path / "clf", model, config=TINY, max_length=12, pad_token_id=7)
    # the old classifier is untouched and no temporary folder is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]
    assert (tmp_path / "clf" / "model.safetensors").read_bytes() == before
    assert load_classifier(tmp_path / "clf")[1]["pad_token_id"] == 0


# --- command line --------------------------------------------------------------------------------


def _cli(*args, cache, stdin=None, **env):
    env = {**os.environ, "GPT_COURSE_MODE": "test", "GPT_COURSE_CACHE": str(cache), **env}
    return subprocess.run(
        [sys.executable, "-m", "ch06_classification", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_cli_help():
    out = _cli("--help", cache="unused")
    assert out.returncode == 0
    assert all(command in out.stdout for command in ("finetune", "evaluate", "classify"))
    out = _cli("finetune", "--help", cache="unused")
    assert out.returncode == 0 and "--trainable" in out.stdout and "--rank" in out.stdout


@pytest.mark.slow
def test_cli_finetune_evaluate_classify(tmp_path):
    cache = tmp_path / "cache"
    limit = ["--limit", "16", "8", "8"]
    out = _cli("finetune", "--out", str(tmp_path / "clf"), "--trainable", "lora", "--rank", "2",
               "--epochs", "1", *limit, cache=cache)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "TEST MODE" in out.stderr and "test accuracy" in out.stdout
    meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert meta["lora"] == {"rank": 2, "alpha": 16.0} and meta["metadata"]["trainable"] == "lora"

    out = _cli("evaluate", "--model", str(tmp_path / "clf"), *limit, cache=cache)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["train", "validation", "test"]
    assert [line.split("(")[1] for line in lines] == [
        "16 messages)",
        "8 messages)",
        "8 messages)",
    ]
    # the same splits and model give the same accuracies as the end of training
    for line in lines:
        name, accuracy = line.split()[0], float(line.split()[2].rstrip("%")) / 100
        assert accuracy == pytest.approx(meta["metadata"]["accuracy"][name], abs=0.0006)

    # evaluation scores every message, even when a split is not a whole number of batches,
    # or (here the training split, 13 messages) holds less than one batch of 16
    out = _cli("evaluate", "--model", str(tmp_path / "clf"), "--limit", "13", "5", "3",
               "--batch-size", "16", cache=cache)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [line.split("(")[1] for line in out.stdout.splitlines()] == [
        "13 messages)",
        "5 messages)",
        "3 messages)",
    ]

    out = _cli(
        "classify",
        "--model",
        str(tmp_path / "clf"),
        "WIN a FREE prize",
        "see you at 6",
        cache=cache,
    )
    assert out.returncode == 0, out.stderr
    labels = [line.split("\t") for line in out.stdout.splitlines()]
    assert [text for _, text in labels] == ["WIN a FREE prize", "see you at 6"]
    assert all(label in ("spam", "not spam") for label, _ in labels)

    out = _cli(
        "classify",
        "--model",
        str(tmp_path / "clf"),
        cache=cache,
        stdin="WIN a FREE prize\n\nsee you at 6\n",
    )
    assert out.returncode == 0, out.stderr
    assert [line.split("\t") for line in out.stdout.splitlines()] == labels  # blank lines skipped

    out = _cli("classify", "--model", str(tmp_path / "clf"), "  ", cache=cache)
    assert out.returncode != 0 and "empty or whitespace-only" in out.stderr
    out = _cli("evaluate", "--model", str(tmp_path), cache=cache)
    assert out.returncode != 0 and "no classifier.json" in out.stderr


def test_cli_rejects_non_positive_counts_before_loading_anything(capsys):
    from ch06_classification.__main__ import main

    for argv in (
        ["finetune", "--out", "unused", "--limit", "16", "0", "8"],
        ["finetune", "--out", "unused", "--rank", "0"],
        ["evaluate", "--model", "unused", "--batch-size", "0"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "must be a positive number, got 0" in capsys.readouterr().err


def test_cli_user_errors_are_one_line_and_ctrl_c_exits_130(tmp_path, monkeypatch, capsys):
    import io

    from ch06_classification import __main__ as cli_main

    monkeypatch.setattr("sys.stdin", io.StringIO("\n  \n"))  # only blank lines: no messages
    with pytest.raises(SystemExit, match="^error: no messages given"):
        cli_main.main(["classify", "--model", str(tmp_path)])
    (tmp_path / "classifier.json").write_text("{", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"^error: .*classifier\.json is not valid JSON"):
        cli_main.main(["classify", "--model", str(tmp_path), "hello", "--device", "cpu"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli_main.COMMANDS, "classify", interrupted)
    assert cli_main.main(["classify", "--model", str(tmp_path), "hello"]) == 130
    assert "interrupted" in capsys.readouterr().err


# --- fault tests: damaged inputs are refused with a message naming the file ---------------------


def test_sms_reader_splits_each_line_at_its_first_tab(tmp_path):
    # a first line with a second tab was read as an index column, then every label was "wrong"
    data = tmp_path / "messages.tsv"
    data.write_text('ham\tfirst\tsecond half\nspam\t"WIN" now\n', encoding="utf-8")
    frame = load_sms_spam(data)
    assert frame.values.tolist() == [["ham", "first\tsecond half"], ["spam", '"WIN" now']]
    assert frame.index.tolist() == [0, 1]


def test_sms_reader_names_the_lines_without_a_valid_label(tmp_path):
    data = tmp_path / "messages.tsv"
    lines = ["ham\tok", "maybe\twhat", "spam\tok", "no tab here", "", "HAM\tx", "x\ty", "ham\tok"]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")  # line 5 is empty: skipped
    with pytest.raises(ValueError) as err:
        load_sms_spam(data)
    message = str(err.value)
    assert message.startswith(f"{data}: line 2 ('maybe\\twhat'), line 4 ('no tab here'), line 6")
    assert "and 1 more should be 'ham' or 'spam', a tab and the message" in message
    assert "line 5" not in message and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"\n\n"])
def test_sms_reader_refuses_a_file_without_messages(tmp_path, content):
    data = tmp_path / "messages.tsv"
    data.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(data))} holds no messages; get a"):
        load_sms_spam(data)


def test_sms_reader_refuses_a_file_that_is_not_utf8(tmp_path):
    data = tmp_path / "messages.tsv"
    data.write_bytes("ham\tcafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(data))} is not UTF-8 text \(byte 7"):
        load_sms_spam(data)


def test_sms_reader_reads_the_real_file_as_pandas_does_without_quoting():
    path = fetch("sms-spam")
    expected = pd.read_csv(
        path, sep="\t", header=None, names=["Label", "Text"], quoting=csv.QUOTE_NONE,
        dtype=str, keep_default_na=False,
    )  # fmt: skip
    pd.testing.assert_frame_equal(load_sms_spam(path), expected)


@pytest.fixture
def saved_classifier(tmp_path):
    folder = tmp_path / "clf"
    save_classifier(folder, tiny_classifier(seed=7), config=TINY, max_length=12)
    return folder


def test_loading_a_truncated_foreign_or_missing_weights_file_names_it(saved_classifier):
    weights_file = saved_classifier / "model.safetensors"
    remedy = "save the classifier again with save_classifier or 'python -m ch06_classification"
    data = weights_file.read_bytes()
    for damaged in (data[: len(data) // 2], data[:5], b"not a safetensors file at all"):
        weights_file.write_bytes(damaged)
        with pytest.raises(TensorFileError) as err:
            load_classifier(saved_classifier)
        assert str(err.value).startswith(f"{weights_file} is not a readable safetensors file (")
        assert f"the classifier weights are damaged or truncated; {remedy}" in str(err.value)
    weights_file.unlink()
    with pytest.raises(TensorFileError) as err:
        load_classifier(saved_classifier)
    assert str(err.value).startswith(
        f"{weights_file} is missing: the classifier weights should be there; {remedy}"
    )


def test_loading_weights_with_a_missing_or_unknown_tensor_names_it(saved_classifier):
    weights_file = saved_classifier / "model.safetensors"
    weights = load_file(weights_file)
    bias = weights.pop("out_head.bias")
    save_file(weights, weights_file)
    with pytest.raises(
        TensorFileError,
        match=r"model\.safetensors does not fit this model \(missing out_head\.bias\); save the",
    ):
        load_classifier(saved_classifier)
    save_file({**weights, "out_head.bias": bias, "extra.weight": bias.clone()}, weights_file)
    with pytest.raises(TensorFileError, match=r"\(unexpected extra\.weight\)"):
        load_classifier(saved_classifier)


def test_loading_weights_of_another_model_size_lists_the_first_mismatches(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    save_classifier(small, tiny_classifier(seed=1), config=TINY, max_length=12)
    torch.manual_seed(2)
    bigger = prepare_classifier(GPTModel({**TINY, "emb_dim": 64}))
    save_classifier(large, bigger, config={**TINY, "emb_dim": 64}, max_length=12)
    (small / "model.safetensors").write_bytes((large / "model.safetensors").read_bytes())
    with pytest.raises(TensorFileError) as err:
        load_classifier(small)
    message = str(err.value)
    assert message.startswith(
        f"{small / 'model.safetensors'} does not fit this model (wrong shapes: tok_emb.weight "
        "is (50257, 64), the model needs (50257, 32), pos_emb.weight is (32, 64)"
    )
    assert re.search(r" and \d+ more\); save the classifier again", message)
    assert "\n" not in message


def test_loading_broken_or_incomplete_metadata_names_classifier_json(saved_classifier):
    meta_file = saved_classifier / "classifier.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta_file.write_text('{"config": ', encoding="utf-8")
    with pytest.raises(JSONFileError, match=r"classifier\.json is not valid JSON"):
        load_classifier(saved_classifier)
    incomplete = {k: v for k, v in meta.items() if k != "num_classes"}
    incomplete["config"] = {k: v for k, v in meta["config"].items() if k != "n_layers"}
    for broken, problems in (
        (incomplete, r"no 'num_classes'; no config\['n_layers'\]"),
        ({**meta, "lora": "yes", "max_length": "12"}, r"'max_length' is a str; 'lora' is a str"),
        ({**meta, "lora": {"rank": 2}}, r"no lora\['alpha'\]"),
        ([meta], r"it holds a JSON list, not an object"),
    ):
        meta_file.write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(ValueError) as err:
            load_classifier(saved_classifier)
        assert re.fullmatch(
            rf"{re.escape(str(meta_file))} does not describe a classifier \({problems}\); save "
            r"it again with save_classifier or 'python -m ch06_classification finetune'",
            str(err.value),
        ), str(err.value)


def test_cli_names_the_damaged_weights_file_in_one_line(saved_classifier):
    from ch06_classification.__main__ import main

    weights_file = saved_classifier / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:100])
    with pytest.raises(SystemExit) as err:
        main(["classify", "--model", str(saved_classifier), "--device", "cpu", "hello"])
    message = str(err.value.code)
    assert message.startswith(f"error: {weights_file} is not a readable safetensors file")
    assert "\n" not in message


@pytest.fixture
def no_gpt2(monkeypatch):
    # finetune must not reach for GPT-2's weights (a 500 MB download in full mode) before the
    # small inputs are known to be good
    from ch06_classification import __main__ as cli_main

    def gpt2_checkpoint(size):
        raise AssertionError("GPT-2 was fetched before the data and the --out folder were checked")

    monkeypatch.setattr(cli_main, "gpt2_checkpoint", gpt2_checkpoint)
    return cli_main


def test_cli_finetune_reads_the_data_before_fetching_gpt2(tmp_path, monkeypatch, no_gpt2):
    bad = tmp_path / "SMSSpamCollection"
    bad.write_text("ham\tfine\nunknown\tlabel\n", encoding="utf-8")
    real_fetch = no_gpt2.fetch
    monkeypatch.setattr(
        no_gpt2, "fetch", lambda name: bad if name == "sms-spam" else real_fetch(name)
    )
    with pytest.raises(SystemExit, match=rf"^error: {re.escape(str(bad))}: line 2 \('unknown"):
        no_gpt2.main(["finetune", "--out", str(tmp_path / "clf"), "--device", "cpu"])


def test_cli_finetune_refuses_a_foreign_out_folder_before_any_work(tmp_path, monkeypatch, no_gpt2):
    def fetch(name):
        raise AssertionError(f"{name} was fetched before the --out folder was checked")

    monkeypatch.setattr(no_gpt2, "fetch", fetch)
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"^error: .*project already holds files the course"):
        no_gpt2.main(["finetune", "--out", str(out), "--device", "cpu"])
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_cli_resource_errors_end_as_an_error_line_and_fetch_no_weights(tmp_path):
    # a damaged mirror copy (ChecksumError, a ResourceError): one line, and the stand-in GPT-2
    # was not written yet, because the data is fetched first
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    (mirror / "SMSSpamCollection").write_text("ham\tnot the real file\n", encoding="utf-8")
    out = _cli("finetune", "--out", str(tmp_path / "clf"), "--device", "cpu", cache=cache,
               GPT_COURSE_DATA_MIRROR=str(mirror))  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "does not match the pinned checksum of 'sms-spam'" in out.stderr
    assert not (cache / "gpt2-standin").exists() and not (tmp_path / "clf").exists()


def test_cli_no_copy_of_the_data_is_an_error_message_not_a_traceback(
    tmp_path, monkeypatch, no_gpt2
):
    # offline with no copy anywhere: ResourceUnavailableError, whose message lists the ways out
    import shared.resources

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setenv("GPT_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GPT_COURSE_DATA_MIRROR", str(tmp_path))  # holds no SMSSpamCollection
    monkeypatch.setattr(shared.resources, "_download", offline)
    with pytest.raises(SystemExit) as err:
        no_gpt2.main(["finetune", "--out", str(tmp_path / "clf"), "--device", "cpu"])
    message = str(err.value.code)
    assert message.startswith("error: could not get SMSSpamCollection")
    assert "network is unreachable" in message and "GPT_COURSE_DATA_MIRROR" in message
