"""shared.cli: the shared options and the one error handler of the three command lines."""

import json

import pytest
import torch
from safetensors.torch import save_file

from shared.cli import (
    add_decoding_options,
    add_device_option,
    add_seed_option,
    add_speed_options,
    add_subcommand,
    error_message,
    make_parser,
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
