"""Which GPT-2 checkpoint the notebooks load: OpenAI's weights, or a stand-in in test mode.

In full mode ``gpt2_checkpoint("124M")`` downloads ``openai-community/gpt2`` from the
Hugging Face Hub (once; cached by ``huggingface_hub``, and read from that cache without
the network afterwards). In test mode it returns a small GPT-2 checkpoint with random
weights, written by Hugging Face ``transformers`` (``GPT2LMHeadModel.save_pretrained``)
into the course cache. Both are folders holding ``model.safetensors`` and
``config.json``, read by the same loader, so the tests cover the code path that reads
the real weights. ``gpt2_checkpoint`` also takes such a folder of your own (in any mode):
what the CLIs' ``--gpt2 <folder>`` passes on.

Offline, a missing download fails within seconds with what to do, instead of after the
Hub client's retries.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.io import atomic_folder, read_json
from shared.resources import ResourceUnavailableError, cache_dir
from shared.settings import MODE_ENV_VAR, get_settings

__all__ = [
    "GPT2_HUB_REPOS",
    "STANDIN_CONFIG",
    "GPT2Checkpoint",
    "SafetensorsReader",
    "download_gpt2",
    "gpt2_checkpoint",
    "write_standin_gpt2",
]

# Hugging Face Hub repositories of the four GPT-2 sizes, keyed like the chapter-4 presets.
GPT2_HUB_REPOS = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}

# (n_embd, n_layer, n_head) of each size, to recognise a local folder's config.json; all
# four have GPT-2's vocabulary of 50,257 tokens and context of 1,024.
_GPT2_SHAPES = {
    "124M": (768, 12, 12),
    "355M": (1024, 24, 16),
    "774M": (1280, 36, 20),
    "1558M": (1600, 48, 25),
}
_CHECKPOINT_FILES = ("model.safetensors", "config.json")

# The stand-in keeps GPT-2's vocabulary and context length but is tiny everywhere else.
STANDIN_CONFIG = {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 1024, "vocab_size": 50257}
STANDIN_SEED = 20240607


@dataclass(frozen=True)
class GPT2Checkpoint:
    folder: Path  # holds model.safetensors and config.json
    # the preset the weights have ("124M", ...); None for the stand-in and for a local
    # folder of another shape (the loader then builds the model from its config.json)
    size: str | None
    is_standin: bool
    is_local: bool = False  # a folder the user passed, not the Hub download

    @property
    def label(self) -> str:
        if self.is_standin:
            return "stand-in GPT-2 (random weights)"
        if self.is_local:
            return f"GPT-2 {self.size or 'checkpoint'} from {self.folder}"
        return f"GPT-2 {self.size} (OpenAI weights)"

    @property
    def description(self) -> str:
        if self.is_standin:
            return (
                "TEST MODE: loading a small stand-in GPT-2 checkpoint (random weights, "
                f"{STANDIN_CONFIG['n_layer']} layers, {STANDIN_CONFIG['n_embd']}-dim), written by "
                "transformers, instead of downloading OpenAI's weights. Its text is gibberish; "
                "in full mode this cell loads the real GPT-2."
            )
        if self.is_local:
            shape = self.size or "checkpoint (shapes from its config.json)"
            return f"Loading the GPT-2 {shape} in the local folder {self.folder}"
        return f"Loading OpenAI's GPT-2 {self.size} weights from {self.folder}"


def write_standin_gpt2(folder: Path, seed: int = STANDIN_SEED) -> Path:
    """Write the stand-in checkpoint with ``transformers`` into ``folder`` (atomically).

    The weights are drawn from our own seeded generator (not transformers' initialiser) so
    the file is identical across transformers versions.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(**STANDIN_CONFIG))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return Path(folder)


def _standin_folder() -> Path:
    folder = cache_dir() / "gpt2-standin"
    config = folder / "config.json"
    expected = {k: v for k, v in STANDIN_CONFIG.items()}
    if config.is_file() and (folder / "model.safetensors").is_file():
        stored = read_json(config, "stand-in GPT-2 config")
        if all(stored.get(k) == v for k, v in expected.items()):
            return folder
    return write_standin_gpt2(folder)


def gpt2_checkpoint(spec: str | os.PathLike = "124M") -> GPT2Checkpoint:
    """The GPT-2 checkpoint for ``spec``: a size (``"124M"``, ...) or a local folder.

    A size gives the Hub download in full mode and the stand-in in test mode (see the
    module docstring). A folder holding ``model.safetensors`` and ``config.json`` (a Hugging
    Face GPT-2 checkpoint) is used as it is, in either mode.
    """
    if isinstance(spec, str) and spec in GPT2_HUB_REPOS:
        if get_settings().gpt2_source == "standin":
            return GPT2Checkpoint(folder=_standin_folder(), size=None, is_standin=True)
        return GPT2Checkpoint(folder=download_gpt2(spec), size=spec, is_standin=False)
    return _local_checkpoint(spec)


def _local_checkpoint(spec) -> GPT2Checkpoint:
    folder = Path(spec).expanduser()
    choices = (
        f"pass a GPT-2 size ({', '.join(GPT2_HUB_REPOS)}) or a folder holding "
        f"{' and '.join(_CHECKPOINT_FILES)}"
    )
    text = str(spec)
    if not folder.exists():
        if os.sep in text or "/" in text or text.startswith((".", "~")):
            raise FileNotFoundError(f"the GPT-2 folder {folder} does not exist; {choices}")
        raise ValueError(f"unknown GPT-2 size {text!r}; {choices}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a GPT-2 checkpoint folder; {choices}")
    missing = [name for name in _CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a GPT-2 checkpoint folder: it has no {' and no '.join(missing)}. "
            f"Pass a folder holding {' and '.join(_CHECKPOINT_FILES)} (as on the Hugging Face Hub "
            "or written by transformers' save_pretrained)"
        )
    config = read_json(folder / "config.json", "GPT-2 config")
    return GPT2Checkpoint(
        folder=folder, size=_size_of(config, folder), is_standin=False, is_local=True
    )


def _size_of(config, folder: Path) -> str | None:
    """The GPT-2 size whose shapes ``config`` has, or None for another shape."""
    keys = ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size")
    if not isinstance(config, dict):
        raise ValueError(f"{folder / 'config.json'} is not a GPT-2 config (not a JSON object)")
    lacking = [key for key in keys if not isinstance(config.get(key), int)]
    if lacking or config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(
            f"{folder / 'config.json'} is not a GPT-2 config (model_type "
            f"{config.get('model_type')!r}; missing or non-integer: {', '.join(lacking) or 'none'})"
        )
    if (config["n_positions"], config["vocab_size"]) != (1024, 50257):
        return None
    shape = (config["n_embd"], config["n_layer"], config["n_head"])
    return next((size for size, known in _GPT2_SHAPES.items() if known == shape), None)


_HUB_CONNECT_TIMEOUT = 5  # seconds to wait for the Hub before calling the machine offline
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _hub_offline_mode() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()  # read now, not at import
    return constants.HF_HUB_OFFLINE or flag in {"1", "ON", "YES", "TRUE"}


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (one quick connection), or None when it can."""
    from huggingface_hub import constants

    if any(os.environ.get(name) for name in _PROXY_VARS):
        return None  # behind a proxy a direct connection says nothing: let the client try
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=_HUB_CONNECT_TIMEOUT).close()
    except OSError as err:
        return f"cannot connect to {url.hostname} ({err})"
    return None


def _hub_unavailable(size: str, reason: str) -> ResourceUnavailableError:
    from huggingface_hub import constants

    return ResourceUnavailableError(
        f"could not get GPT-2 {size} ({GPT2_HUB_REPOS[size]}) from the Hugging Face Hub: "
        f"{reason}. Pass a local folder holding model.safetensors and config.json with "
        f"--gpt2 <folder> (gpt2_checkpoint('<folder>') in Python), or set HF_HUB_OFFLINE=1 "
        f"with the files already in the Hugging Face cache ({constants.HF_HUB_CACHE}), or "
        f"use test mode ({MODE_ENV_VAR}=test), which loads a small stand-in instead"
    )


def download_gpt2(size: str = "124M") -> Path:
    """Download GPT-2 ``size`` (model.safetensors + config.json) once; returns the folder.

    ``huggingface_hub`` keeps the files in its cache, resumes interrupted downloads and
    verifies them. Files already in its cache are used without the network. Otherwise,
    with ``HF_HUB_OFFLINE`` set or the Hub out of reach, it raises
    ``ResourceUnavailableError`` at once, saying what to do.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if size not in GPT2_HUB_REPOS:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_HUB_REPOS)}")
    repo = GPT2_HUB_REPOS[size]
    try:  # the cache first: no network, no retries
        paths = [hf_hub_download(repo, name, local_files_only=True) for name in _CHECKPOINT_FILES]
        return Path(paths[0]).parent
    except LocalEntryNotFoundError:
        pass
    if _hub_offline_mode():
        raise _hub_unavailable(size, "HF_HUB_OFFLINE is set and the files are not in its cache")
    unreachable = _hub_unreachable()
    if unreachable:
        raise _hub_unavailable(size, unreachable)
    try:
        hf_hub_download(repo, "config.json")
        return Path(hf_hub_download(repo, "model.safetensors")).parent
    except Exception as err:  # connection, offline-mode and HTTP errors of the Hub client
        reason = " ".join(str(err).split())  # the client's messages span several lines
        raise _hub_unavailable(size, f"{type(err).__name__}: {reason}") from err


def SafetensorsReader(path):  # noqa: N802 -- kept under the class name chapter 5 once used
    """Open a .safetensors file for reading tensors without copying them.

    Chapter 5 used to parse the format by hand in a class of this name; it now uses the
    ``safetensors`` library, and this name opens a file the same way:
    ``with SafetensorsReader(path) as f: f.keys(); f.get_tensor(name)``.
    """
    from safetensors import safe_open

    return safe_open(str(path), framework="pt")
