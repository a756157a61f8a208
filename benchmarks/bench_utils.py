"""Pieces every benchmark shares: the random checkpoint, the inputs, timing and machine facts."""

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

WEIGHT_SEED = 0  # seeds the random GPT-2 weights every variant loads
TOKEN_SEED = 1  # seeds the prompt and the training batch every variant sees
# GPT-2 initializes its weights with std 0.02; a random model with that init greedily
# repeats one token forever, so checking that two implementations produce the same tokens
# would compare almost nothing. With std 0.1 the greedy continuation is varied (about 100
# distinct tokens in 200). Much wider inits (0.2) make the network chaotic: fp32 rounding
# differences between implementations grow to 1e-2 in the logits and could flip a token.
INIT_STD = 0.1
GPT2_VOCAB_SIZE = 50257


def quiet_transformers() -> None:
    """Silence transformers' progress bars and advisory warnings in the printed report."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def write_random_gpt2(folder: Path) -> Path:
    """Write a GPT-2 124M checkpoint with seeded random weights, as transformers saves one.

    The folder holds model.safetensors (the output head is tied to the token embedding,
    so it is stored once), config.json and generation_config.json. Dropout is 0 in
    config.json, so models loaded from it train without dropout.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    quiet_transformers()
    torch.manual_seed(WEIGHT_SEED)
    config = GPT2Config(  # the defaults are GPT-2 small: 12 layers, 12 heads, 768 dims
        initializer_range=INIT_STD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def random_token_ids(shape: tuple[int, ...], seed: int = TOKEN_SEED) -> torch.Tensor:
    """Token ids drawn uniformly from GPT-2's vocabulary with their own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, GPT2_VOCAB_SIZE, shape, generator=generator)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Run ``fn`` once; return (seconds, its result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def round_robin(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Time each variant ``repeats`` times, interleaved, after ``warmup`` untimed calls each.

    On a machine shared with other work the load changes over minutes; interleaving the
    variants (and rotating who goes first each round) spreads that noise over all of them
    instead of penalizing whichever ran during a busy spell. Returns the times per variant
    and each variant's last result.
    """
    names = list(variants)
    last: dict[str, object] = {}
    for _ in range(warmup):
        for name in names:
            last[name] = variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, last[name] = timed(variants[name])
            times[name].append(seconds)
    return times, last


def summarize_times(times: list[float]) -> dict:
    """Median (the reported figure), spread and raw samples of one variant's timings."""
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
        "samples_s": [round(t, 6) for t in times],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags(prefixes: tuple[str, ...]) -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(prefixes))
    except OSError:
        pass
    return []


def _memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)  # the value is in KiB
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, or None where the OS does not report them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_caches() -> dict[str, str]:
    # e.g. {"L2": "2048K", "L3": "491520K"} for CPU 0, from Linux's sysfs; {} elsewhere.
    # A last-level cache near the size of the weights makes decoding partly a cache benchmark.
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            if kind in ("Unified", "Data"):
                level = (index / "level").read_text().strip()
                caches[f"L{level}"] = (index / "size").read_text().strip()
        except OSError:
            continue
    return caches


def machine_info() -> dict:
    """What ran the benchmark: CPU, memory, library versions, thread settings, current load."""
    import transformers

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_flags_avx512_amx": _cpu_flags(("avx512", "amx")),
        "cpu_caches": _cpu_caches(),
        "memory_total_gib": _memory_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "load_average_at_start": load_average(),
        "git_commit": _git_commit(),
        "executable": sys.executable,
    }
