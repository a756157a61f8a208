"""Helpers shared by several test files (importable because pytest puts tests/ on the path)."""

import subprocess
import sys


def run_module(module: str, *args: str, cwd=None, env=None, timeout: float = 600):
    """Run ``python -m module args`` in a child process; its text output is captured."""
    command = [sys.executable, "-m", module, *args]
    options = {"cwd": cwd, "env": env, "timeout": timeout}
    return subprocess.run(command, capture_output=True, text=True, check=False, **options)
