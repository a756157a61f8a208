"""Which GPT-2 checkpoint the notebooks load: OpenAI's weights, or a stand-in in test mode.

In full mode ``gpt2_checkpoint("124M")`` downloads ``openai-community/gpt2`` from the
Hugging Face Hub (once; cached by ``huggingface_hub``). In test mode it returns a small
GPT-2 checkpoint with random weights, written by Hugging Face ``transformers``
(``GPT2LMHeadModel.save_pretrained``) into the course cache. Both are folders holding
``model.safetensors`` and ``config.json``, read by the same loader, so the tests cover
the code path that reads the real weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.io import atomic_folder, read_json
from shared.resources import cache_dir
from shared.settings import get_settings

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

# The stand-in keeps GPT-2's vocabulary and context length but is tiny everywhere else.
STANDIN_CONFIG = {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 1024, "vocab_size": 50257}
STANDIN_SEED = 20240607


@dataclass(frozen=True)
class GPT2Checkpoint:
    folder: Path  # holds model.safetensors and config.json
    size: str | None  # the preset the weights have ("124M", ...); None for the stand-in
    is_standin: bool

    @property
    def label(self) -> str:
        return (
            "stand-in GPT-2 (random weights)"
            if self.is_standin
            else f"GPT-2 {self.size} (OpenAI weights)"
        )

    @property
    def description(self) -> str:
        if self.is_standin:
            return (
                "TEST MODE: loading a small stand-in GPT-2 checkpoint (random weights, "
                f"{STANDIN_CONFIG['n_layer']} layers, {STANDIN_CONFIG['n_embd']}-dim), written by "
                "transformers, instead of downloading OpenAI's weights. Its text is gibberish; "
                "in full mode this cell loads the real GPT-2."
            )
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


def gpt2_checkpoint(size: str = "124M") -> GPT2Checkpoint:
    """The GPT-2 checkpoint for ``size`` in the current course mode (see module docstring)."""
    if size not in GPT2_HUB_REPOS:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_HUB_REPOS)}")
    if get_settings().gpt2_source == "standin":
        return GPT2Checkpoint(folder=_standin_folder(), size=None, is_standin=True)
    return GPT2Checkpoint(folder=download_gpt2(size), size=size, is_standin=False)


def download_gpt2(size: str = "124M") -> Path:
    """Download GPT-2 ``size`` (model.safetensors + config.json) once; returns the folder.

    ``huggingface_hub`` keeps the files in its cache, resumes interrupted downloads and
    verifies them.
    """
    from huggingface_hub import hf_hub_download

    if size not in GPT2_HUB_REPOS:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_HUB_REPOS)}")
    repo = GPT2_HUB_REPOS[size]
    hf_hub_download(repo, "config.json")
    return Path(hf_hub_download(repo, "model.safetensors")).parent


def SafetensorsReader(path):  # noqa: N802 -- kept under the class name chapter 5 once used
    """Open a .safetensors file for reading tensors without copying them.

    Chapter 5 used to parse the format by hand in a class of this name; it now uses the
    ``safetensors`` library, and this name opens a file the same way:
    ``with SafetensorsReader(path) as f: f.keys(); f.get_tensor(name)``.
    """
    from safetensors import safe_open

    return safe_open(str(path), framework="pt")
