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
    "DECODER_HUB_REPOS",
    "DECODER_STANDIN_CONFIGS",
    "GPT2_HUB_REPOS",
    "STANDIN_CONFIG",
    "STANDIN_SPECIAL_TOKENS",
    "DecoderCheckpoint",
    "GPT2Checkpoint",
    "SafetensorsReader",
    "decoder_checkpoint",
    "download_decoder",
    "download_gpt2",
    "gpt2_checkpoint",
    "write_standin_decoder",
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
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(**STANDIN_CONFIG))
    norms = ("ln_1.weight", "ln_2.weight", "ln_f.weight")
    _fill_seeded(model, seed, is_norm=lambda name: name.endswith(norms), std=0.02)
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return Path(folder)


def _fill_seeded(model, seed: int, is_norm, std: float) -> None:
    """Overwrite every parameter from one seeded generator, in name order.

    Norm scales (``is_norm(name)``) are drawn around 1, everything else around 0 with ``std``.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if is_norm(name):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(std * torch.randn(param.shape, generator=generator))


def _cached_standin(folder: Path, files, expected: dict, what: str, write) -> Path:
    """``folder`` when it holds ``files`` and its config.json has the ``expected`` values;
    otherwise the stand-in is written again there by ``write()`` (a stale or damaged one too).
    """
    if all((folder / file).is_file() for file in files):
        stored = read_json(folder / "config.json", what)
        if all(stored.get(k) == v for k, v in expected.items()):
            return folder
    return write()


def _standin_folder() -> Path:
    folder = cache_dir() / "gpt2-standin"
    return _cached_standin(
        folder, ("config.json", "model.safetensors"), STANDIN_CONFIG, "stand-in GPT-2 config",
        write=lambda: write_standin_gpt2(folder),
    )  # fmt: skip


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
    if size not in GPT2_HUB_REPOS:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_HUB_REPOS)}")
    return _hub_files(
        GPT2_HUB_REPOS[size], _CHECKPOINT_FILES, lambda reason: _hub_unavailable(size, reason)
    )


def _hub_files(repo: str, files, unavailable, revision: str | None = None) -> Path:
    """The folder holding ``files`` of the Hub ``repo``: from the cache, else downloaded.

    ``unavailable(reason)`` builds the error raised when the files cannot be had.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # the cache first: no network, no retries
        paths = [
            hf_hub_download(repo, name, revision=revision, local_files_only=True) for name in files
        ]
        return Path(paths[0]).parent
    except LocalEntryNotFoundError:
        pass
    if _hub_offline_mode():
        raise unavailable("HF_HUB_OFFLINE is set and the files are not in its cache")
    unreachable = _hub_unreachable()
    if unreachable:
        raise unavailable(unreachable)
    try:  # the small files first, the weights last
        paths = [hf_hub_download(repo, name, revision=revision) for name in reversed(files)]
        return Path(paths[-1]).parent
    except Exception as err:  # connection, offline-mode and HTTP errors of the Hub client
        reason = " ".join(str(err).split())  # the client's messages span several lines
        raise unavailable(f"{type(err).__name__}: {reason}") from err


def SafetensorsReader(path):  # noqa: N802 -- kept under the class name chapter 5 once used
    """Open a .safetensors file for reading tensors without copying them.

    Chapter 5 used to parse the format by hand in a class of this name; it now uses the
    ``safetensors`` library, and this name opens a file the same way:
    ``with SafetensorsReader(path) as f: f.keys(); f.get_tensor(name)``.
    """
    from safetensors import safe_open

    return safe_open(str(path), framework="pt")


# --- Llama 3 and Qwen3 (the bonus notebook ch05_pretraining/modern_llms.ipynb) ----------

# Hub repositories of the two modern models the course loads. Llama 3.2 is gated: accept
# Meta's licence on its model page and log in (``hf auth login`` or ``HF_TOKEN``) first.
DECODER_HUB_REPOS = {
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
}
_DECODER_FILES = ("model.safetensors", "config.json", "tokenizer.json")

# The stand-ins: each model's layout (GQA, RoPE, SwiGLU, tied embeddings; Llama 3's RoPE
# scaling, Qwen3's query/key norms and head_dim wider than hidden_size / heads), tiny.
# original_max_position_embeddings is small so that the scaling matters within 256 tokens.
_STANDIN_SHARED = {
    "vocab_size": 512,  # 256 bytes + the chat templates' special tokens, with room to spare
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}
DECODER_STANDIN_CONFIGS = {
    "qwen3-0.6b": {
        **_STANDIN_SHARED,
        "model_type": "qwen3",
        "head_dim": 32,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
    },
    "llama-3.2-1b": {
        **_STANDIN_SHARED,
        "model_type": "llama",
        "head_dim": 16,
        "rope_theta": 500_000.0,
        "rms_norm_eps": 1e-5,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    },
}
# The special tokens of both chat templates, given ids 256.. in the stand-in tokenizer.
STANDIN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)


@dataclass(frozen=True)
class DecoderCheckpoint:
    folder: Path  # holds model.safetensors, config.json and tokenizer.json
    name: str  # "qwen3-0.6b" or "llama-3.2-1b"
    is_standin: bool

    @property
    def description(self) -> str:
        repo = DECODER_HUB_REPOS[self.name]
        if self.is_standin:
            cfg = DECODER_STANDIN_CONFIGS[self.name]
            return (
                f"TEST MODE: a small stand-in for {repo} (random weights, "
                f"{cfg['num_hidden_layers']} layers, {cfg['hidden_size']}-dim, a byte-level "
                "tokenizer), written by transformers; in full mode this loads the real model"
            )
        return f"Loading {repo} from {self.folder}"


def write_standin_decoder(name: str, folder: Path, seed: int = STANDIN_SEED) -> Path:
    """Write the stand-in for ``name`` with ``transformers`` (and its tokenizer) into ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config = dict(DECODER_STANDIN_CONFIGS[name])
    config_class, model_class = {
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
    }[config.pop("model_type")]
    eos = STANDIN_SPECIAL_TOKENS.index("<|im_end|>" if name.startswith("qwen") else "<|eot_id|>")
    model = model_class(config_class(**config, bos_token_id=None, eos_token_id=256 + eos))
    _fill_seeded(model, seed, is_norm=lambda name: name.endswith("norm.weight"), std=0.05)
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        _standin_tokenizer().save(str(Path(tmp) / "tokenizer.json"))
    return Path(folder)


def _standin_tokenizer():
    """A byte-level tokenizer (one token per byte, no merges) plus the chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())  # 256 printable stand-ins for bytes
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(byte_chars)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(STANDIN_SPECIAL_TOKENS))  # ids 256, 257, ...
    return tokenizer


def _decoder_standin_folder(name: str) -> Path:
    folder = cache_dir() / f"{name}-standin"
    expected = {k: v for k, v in DECODER_STANDIN_CONFIGS[name].items() if isinstance(v, int | str)}
    return _cached_standin(
        folder, _DECODER_FILES, expected, f"stand-in {name} config",
        write=lambda: write_standin_decoder(name, folder),
    )  # fmt: skip


def download_decoder(name: str, revision: str | None = None) -> Path:
    """Download ``name``'s weights, config and tokenizer once (see ``download_gpt2``).

    ``revision`` pins a commit of the Hub repository (default: its main branch).
    """
    from huggingface_hub import constants

    if name not in DECODER_HUB_REPOS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(DECODER_HUB_REPOS)}")
    repo = DECODER_HUB_REPOS[name]
    gated = " (a gated model: accept its licence on the Hub and log in)" if "llama" in name else ""

    def unavailable(reason: str) -> ResourceUnavailableError:
        return ResourceUnavailableError(
            f"could not get {repo}{gated} from the Hugging Face Hub: {reason}. Pass a local "
            f"folder holding {', '.join(_DECODER_FILES)} to load_hf_decoder, or set "
            f"HF_HUB_OFFLINE=1 with the files already in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), or use test mode ({MODE_ENV_VAR}=test), which "
            "loads a small stand-in instead"
        )

    return _hub_files(repo, _DECODER_FILES, unavailable, revision)


def decoder_checkpoint(name: str = "qwen3-0.6b") -> DecoderCheckpoint:
    """The checkpoint of ``name``: the Hub download in full mode, the stand-in in test mode."""
    if name not in DECODER_HUB_REPOS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(DECODER_HUB_REPOS)}")
    if get_settings().gpt2_source == "standin":
        return DecoderCheckpoint(_decoder_standin_folder(name), name, is_standin=True)
    return DecoderCheckpoint(download_decoder(name), name, is_standin=False)
