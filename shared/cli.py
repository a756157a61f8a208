"""What the chapters' command lines share: option definitions and the one error handler.

Each chapter's ``__main__.py`` builds its sub-commands from these definitions, so an option
means the same everywhere (``--device``, ``--seed``, the decoding options, the speed
options), and runs them through ``run_command``, which turns every error a user can cause
(a missing file, a damaged checkpoint, bad settings, no network) into one line on stderr
instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "CLIHelpFormatter",
    "add_decoding_options",
    "add_device_option",
    "add_gpt2_option",
    "add_seed_option",
    "add_speed_options",
    "add_subcommand",
    "decoding_settings",
    "error_message",
    "fraction",
    "make_parser",
    "non_empty_text",
    "override_optimizer",
    "positive_int",
    "read_text_file",
    "run_command",
    "speed_settings",
]


class CLIHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows "(default: ...)" only where there is a default worth showing."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (sizes, counts, frequencies)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def non_empty_text(text: str) -> str:
    """An argparse type: text with at least one non-blank character (a prompt)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty: give some text to start from")
    return text


def read_text_file(path) -> str:
    """The UTF-8 text of a file a user passed, or a ValueError naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {err.start} cannot be decoded); "
            "convert it to UTF-8 first, e.g. iconv -f latin1 -t utf-8"
        ) from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder; pass a text file") from None


def override_optimizer(optimizer, **values) -> None:
    """Apply the hyperparameters a user passed again with ``--resume`` (None = keep the saved).

    A resumed optimizer carries its saved values (e.g. ``lr``); a new value given on the
    command line wins, and a line says so, so ``--resume --lr X`` never trains silently at
    the old rate.
    """
    for key, value in values.items():
        saved = optimizer.param_groups[0][key]
        if value is not None and value != saved:
            print(f"{key}: {value:g} from now on (the checkpoint used {saved:g})")
            for group in optimizer.param_groups:
                group[key] = value


def fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a share of the data)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def make_parser(prog: str, description: str):
    """A top-level parser and its required sub-command group."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=CLIHelpFormatter
    )
    return parser, parser.add_subparsers(dest="command", required=True)


def add_subcommand(subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` starts with the same sentence as the overview."""
    return subparsers.add_parser(
        name, help=help, description=help[0].upper() + help[1:] + ".",
        formatter_class=CLIHelpFormatter,
    )  # fmt: skip


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:1 or mps; unset: the best available (CPU in test mode)"
    )


def add_gpt2_option(parser: argparse.ArgumentParser, default: str) -> None:
    """``--gpt2 SIZE|FOLDER`` (also spelled ``--size``): the GPT-2 weights to start from.

    A size name (124M, 355M, 774M, 1558M) is downloaded from the Hugging Face Hub, or is
    the small stand-in in test mode; a folder holding ``model.safetensors`` and
    ``config.json`` is read from disk (see ``shared.weights.gpt2_checkpoint``).
    """
    parser.add_argument(
        "--gpt2", "--size", dest="gpt2", metavar="SIZE|FOLDER", default=default,
        help="GPT-2 to start from: 124M, 355M, 774M or 1558M (test mode: the small stand-in), "
        "or a folder with model.safetensors and config.json",
    )  # fmt: skip


def add_seed_option(parser: argparse.ArgumentParser, help: str = "random seed") -> None:
    parser.add_argument("--seed", type=int, default=123, help=help)


def add_decoding_options(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """The settings of chapter 5's ``generate``: length, temperature, top-k, top-p."""
    parser.add_argument(
        "--max-new-tokens", type=int, default=max_new_tokens, help="most tokens to generate"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy"
    )
    parser.add_argument("--top-k", type=int, help="sample only from the K most likely tokens")
    parser.add_argument("--top-p", type=float, help="sample only from the nucleus of probability P")


def add_speed_options(parser: argparse.ArgumentParser) -> None:
    """The training speed options of chapter 5's speed notebook (``make_training_setup``).

    GPU-only options are ignored on other devices.
    """
    on_off = argparse.BooleanOptionalAction
    parser.add_argument("--sdpa", action=on_off, default=False, help="fused attention kernel")
    parser.add_argument("--compile", action=on_off, default=False, help="torch.compile the model")
    parser.add_argument("--bf16", action=on_off, default=True, help="bf16 autocast (CUDA)")
    parser.add_argument("--tf32", action=on_off, default=True, help="TF32 matmuls (CUDA)")
    parser.add_argument(
        "--fused-adamw", action=on_off, default=True, help="fused AdamW (CUDA or CPU)"
    )
    parser.add_argument(
        "--decay-2d-only", action=on_off, default=False, help="no weight decay on biases, norms"
    )
    parser.add_argument(
        "--tie-weights", action=on_off, default=False, help="tie head and embedding"
    )
    parser.add_argument("--pad-vocab", action=on_off, default=False, help="vocabulary to x64")


def speed_settings(args: argparse.Namespace) -> dict:
    """The speed options parsed by ``add_speed_options``, as ``make_training_setup`` keywords."""
    names = ("tf32", "bf16", "fused_adamw", "decay_2d_only", "tie_weights", "pad_vocab")
    return {"compile_model": args.compile, **{name: getattr(args, name) for name in names}}


def decoding_settings(args: argparse.Namespace) -> dict:
    """The sampling options parsed by ``add_decoding_options``, as ``generate`` keywords."""
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}


def _user_errors() -> tuple[type[BaseException], ...]:
    # Errors a user's input or environment can cause: each becomes one line, not a traceback.
    # ValueError covers bad settings and damaged JSON (shared.io.JSONFileError); OSError covers
    # missing or unreadable files and network failures (requests' errors are OSErrors);
    # ArithmeticError covers a loss that became NaN.
    errors: list[type[BaseException]] = [ValueError, OSError, KeyError, ArithmeticError]
    from shared.resources import ResourceError

    errors.append(ResourceError)
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a requirement
        pass
    else:
        errors.append(SafetensorError)
    return tuple(errors)


def error_message(err: BaseException) -> str | None:
    """The one-line message for an error a user caused; None for a bug (keep the traceback)."""
    if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in str(err):
        first = str(err).splitlines()[0]
        return (
            f"the saved weights do not fit the model ({first.strip()}); the checkpoint was "
            "written for another model size or layout: pass the matching size or checkpoint"
        )
    if isinstance(err, _user_errors()):
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        return str(text) or type(err).__name__
    return None


def run_command(
    parser: argparse.ArgumentParser,
    commands: Mapping[str, Callable[[argparse.Namespace], int]],
    argv: Sequence[str] | None = None,
    extra_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse ``argv``, run the chosen sub-command, and answer user errors in one line.

    ``extra_errors`` adds a chapter's own error classes. Ctrl-C exits with status 130.
    """
    args = parser.parse_args(argv)
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = str(err) if isinstance(err, extra_errors) else error_message(err)
        if message is None:
            raise
        raise SystemExit(f"error: {message}") from None
