"""Helpers shared by several test files (importable because pytest puts tests/ on the path)."""

import subprocess
import sys


def run_module(module: str, *args: str, cwd=None, env=None, timeout: float = 600):
    """Run ``python -m module args`` in a child process; its text output is captured."""
    command = [sys.executable, "-m", module, *args]
    options = {"cwd": cwd, "env": env, "timeout": timeout}
    return subprocess.run(command, capture_output=True, text=True, check=False, **options)


def tiny_gpt_config(**overrides) -> dict:
    """A chapter-4 config with GPT-2's vocabulary shrunk to two small blocks (fast on a CPU).

    Every test file starts from this one definition and overrides what it needs (a context
    long enough for an instruction prompt, q/k/v biases like GPT-2, a toy vocabulary).
    """
    from ch04_gpt_model.gpt_model import gpt2_config

    base = dict(context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    return gpt2_config("124M", **{**base, **overrides})
