"""Weight files as untrusted input: read with ``safetensors``, checked against the model.

A checkpoint on disk may be truncated by a full disk, replaced by another file, or come
from a model of another size. The course's loaders read every weights file through
``read_tensors`` and compare it with the model through ``check_tensors`` before
``load_state_dict``, so each of these ends in one sentence that names the file and says
what to do, instead of a traceback from deep inside a library. Nothing is ever
unpickled: safetensors files hold only a JSON header and raw tensor bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["TensorFileError", "check_tensors", "read_tensors"]


class TensorFileError(ValueError):
    """A weights file is missing, damaged, or does not fit the model it is loaded into."""


def read_tensors(path, what: str = "weights", remedy: str = "save it again") -> dict:
    """All tensors of the safetensors file ``path`` (on the CPU), or a ``TensorFileError``.

    ``what`` names the file's role for the message (e.g. ``"model weights"``) and
    ``remedy`` says what to do about a missing or damaged file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise TensorFileError(f"{path} is missing: the {what} should be there; {remedy}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TensorFileError(
            f"{path} is not a readable safetensors file ({reason}): the {what} are damaged "
            f"or truncated; {remedy}"
        ) from None


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_tensors(tensors: Mapping, expected: Mapping, path, remedy: str) -> None:
    """Raise ``TensorFileError`` unless ``tensors`` has exactly the names and shapes of ``expected``.

    ``expected`` maps names to shapes or to tensors (a ``state_dict()`` works). The
    message lists the first few missing, unexpected and wrongly shaped tensors, so a
    checkpoint of another model size reads as exactly that.
    """
    want = {name: tuple(getattr(value, "shape", value)) for name, value in expected.items()}
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    wrong = [
        f"{name} is {tuple(tensors[name].shape)}, the model needs {shape}"
        for name, shape in want.items()
        if name in tensors and tuple(tensors[name].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_few(wrong)}")
    if problems:
        raise TensorFileError(f"{path} does not fit this model ({'; '.join(problems)}); {remedy}")
