"""Device selection and seeding, shared by every chapter."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = [
    "get_device",
    "set_seed",
]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) in one call."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(preferred: str | None = None) -> torch.device:
    """The device to run on: ``preferred`` if given, else CUDA, then Apple MPS, then CPU.

    Test mode (``GPT_COURSE_MODE=test``) always answers CPU so that stored notebook
    outputs reproduce on any machine.
    """
    from shared.settings import get_settings

    if preferred is not None:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {preferred!r} was requested but CUDA is not available here; "
                "use 'cpu' or leave the device unset to pick automatically."
            )
        return device
    if get_settings().is_test:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
