"""shared.cli: the shared options and the one error handler of the three command lines."""

import json

import pytest
import torch
from safetensors.torch import save_file

from shared.cli import (
    add_decoding_options,
    add_device_option,
    add_gpt2_option,
    add_seed_option,
    add_speed_options,
    add_subcommand,
    error_message,
    make_parser,
    non_empty_text,
    override_optimizer,
    read_text_file,
    run_command,
)
from shared.io import read_json
from shared.resources import ResourceUnavailableError


def _parser():
    parser, sub = make_parser("demo", "A demo.")
    cmd = add_subcommand(sub, "go", "do the thing")
    add_device_option(cmd)
    add_seed_option(cmd)
    add_decoding_options(cmd, max_new_tokens=7)
    add_speed_options(cmd)
    return parser


def test_shared_options_parse_with_their_defaults():
    args = _parser().parse_args(["go", "--top-k", "5", "--no-bf16", "--sdpa"])
    assert (args.device, args.seed, args.max_new_tokens, args.temperature) == (None, 123, 7, 0.0)
    assert (args.top_k, args.top_p, args.bf16, args.sdpa, args.tf32) == (5, None, False, True, True)


def test_help_shows_defaults_only_where_they_say_something(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["go", "--help"])
    text = capsys.readouterr().out
    assert "Do the thing." in text
    assert "(default: 7)" in text  # --max-new-tokens
    assert "(default: None)" not in text and "(default: False)" not in text


def _fails_with(err):
    def command(args):
        raise err

    return command


@pytest.mark.parametrize(
    "err, expected",
    [
        (FileNotFoundError("story.txt does not exist"), "error: story.txt does not exist"),
        (ValueError("temperature must be >= 0"), "error: temperature must be >= 0"),
        (KeyError("unknown resource 'x'"), "error: unknown resource 'x'"),
        (FloatingPointError("the loss became nan"), "error: the loss became nan"),
        (ResourceUnavailableError("offline: set the mirror"), "error: offline: set the mirror"),
        (PermissionError(13, "Permission denied"), "error: [Errno 13] Permission denied"),
    ],
)
def test_user_errors_become_one_line(err, expected):
    with pytest.raises(SystemExit) as exit_info:
        run_command(_parser(), {"go": _fails_with(err)}, ["go"])
    assert str(exit_info.value.code) == expected


def test_a_damaged_safetensors_file_and_a_mismatched_state_dict_are_answered(tmp_path):
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"not a safetensors file at all")

    def load_junk(args):
        from safetensors.torch import load_file

        load_file(junk)

    with pytest.raises(SystemExit, match="error: .*header"):
        run_command(_parser(), {"go": load_junk}, ["go"])

    save_file({"weight": torch.zeros(3, 2)}, tmp_path / "other.safetensors")

    def load_mismatch(args):
        from safetensors.torch import load_file

        torch.nn.Linear(2, 4, bias=False).load_state_dict(load_file(tmp_path / "other.safetensors"))

    with pytest.raises(SystemExit, match="error: the saved weights do not fit the model"):
        run_command(_parser(), {"go": load_mismatch}, ["go"])


def test_a_damaged_json_file_is_named(tmp_path):
    broken = tmp_path / "checkpoint.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"error: .*checkpoint\.json is not valid JSON"):
        run_command(_parser(), {"go": lambda args: read_json(broken)}, ["go"])


def test_a_chapter_error_class_is_answered_when_passed(tmp_path):
    class ShardTrouble(Exception):
        pass

    with pytest.raises(SystemExit, match="error: shard 3 is short"):
        run_command(
            _parser(),
            {"go": _fails_with(ShardTrouble("shard 3 is short"))},
            ["go"],
            (ShardTrouble,),
        )


def test_bugs_keep_their_traceback():
    with pytest.raises(TypeError, match="a bug"):
        run_command(_parser(), {"go": _fails_with(TypeError("a bug"))}, ["go"])
    assert error_message(AttributeError("x")) is None
    assert error_message(RuntimeError("CUDA out of memory")) is None


def test_ctrl_c_exits_with_130(capsys):
    assert run_command(_parser(), {"go": _fails_with(KeyboardInterrupt())}, ["go"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_successful_command_returns_its_status():
    assert run_command(_parser(), {"go": lambda args: json.dumps({}) and 0}, ["go"]) == 0


# --- bad input named by what it is (fault tests) ---


def test_non_empty_text_refuses_a_blank_prompt():
    import argparse

    assert non_empty_text("Hi") == "Hi"
    with pytest.raises(argparse.ArgumentTypeError, match="must not be empty"):
        non_empty_text(" \n ")


def test_read_text_file_names_a_file_that_is_not_utf8(tmp_path):
    (tmp_path / "ok.txt").write_text("naïve", encoding="utf-8")
    assert read_text_file(tmp_path / "ok.txt") == "naïve"
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt is not UTF-8 text \(byte 3"):
        read_text_file(tmp_path / "latin.txt")
    with pytest.raises(ValueError, match="is a folder"):
        read_text_file(tmp_path)


def test_override_optimizer_applies_new_values_and_says_so(capsys):
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.AdamW(
        [{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}], lr=4e-4
    )
    override_optimizer(optimizer, lr=None)  # nothing passed: the saved value stays
    assert [g["lr"] for g in optimizer.param_groups] == [4e-4, 4e-4]
    override_optimizer(optimizer, lr=1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3]
    assert "lr: 0.001 from now on (the checkpoint used 0.0004)" in capsys.readouterr().out


def test_gpt2_option_takes_a_size_or_a_folder_and_keeps_the_old_spelling():
    parser, sub = make_parser("demo", "A demo.")
    add_gpt2_option(add_subcommand(sub, "go", "do it"), default="124M")
    assert parser.parse_args(["go"]).gpt2 == "124M"
    assert parser.parse_args(["go", "--gpt2", "weights/gpt2"]).gpt2 == "weights/gpt2"
    assert parser.parse_args(["go", "--size", "355M"]).gpt2 == "355M"  # the name before --gpt2
