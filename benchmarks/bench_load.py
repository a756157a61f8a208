"""Checkpoint loading: wall time and peak memory of the course loader and ``from_pretrained``.

Each measurement is a fresh process (load_worker.py), so one loader's memory can't hide
in another's. Peak memory is the process's high-water resident set size (VmHWM; see
load_worker.max_rss_bytes for why not ru_maxrss) once every weight has been read. Raw
peaks include the Python interpreter, torch and transformers; the net figure subtracts
the peak of a process that only does the same imports (the ``imports_only`` variant).
Net peak is what loading costs on top of having the libraries imported, and is compared
with the weight file's size.
"""

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench_utils import REPO_ROOT, summarize_times

WORKER = Path(__file__).resolve().parent / "load_worker.py"
VARIANTS = ("imports_only", "course", "transformers")
REFERENCE = "transformers"


def _run_worker(variant: str, folder: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, str(WORKER), variant, str(folder), str(threads)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the {variant} load worker failed (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_load(folder: Path, *, repeats: int, warmup: bool, threads: int) -> dict:
    """Run every variant ``repeats`` times in fresh processes, interleaved; report medians."""
    folder = Path(folder)
    file_bytes = (folder / "model.safetensors").stat().st_size
    if warmup:  # fills the page cache and compiles .pyc files before anything is timed
        for variant in VARIANTS:
            _run_worker(variant, folder, threads)
    runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for round_index in range(repeats):
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            runs[variant].append(_run_worker(variant, folder, threads))

    def median_of(samples: list[dict], key: str) -> float:
        return statistics.median(sample[key] for sample in samples)

    baseline_peak = median_of(runs["imports_only"], "max_rss_ready_bytes")
    variants = {}
    for variant in ("course", "transformers"):
        samples = runs[variant]
        raw_peak = median_of(samples, "max_rss_ready_bytes")
        raw_after_call = median_of(samples, "max_rss_after_load_bytes")
        variants[variant] = {
            **summarize_times([r["ready_s"] for r in samples]),  # until every weight is read
            "load_call_median_s": median_of(samples, "load_s"),
            "raw_peak_rss_bytes": raw_peak,
            "net_peak_rss_bytes": raw_peak - baseline_peak,
            "net_peak_rss_after_load_call_bytes": raw_after_call - baseline_peak,
            "in_process_peak_growth_bytes": statistics.median(
                r["max_rss_ready_bytes"] - r["max_rss_before_load_bytes"] for r in samples
            ),
            "resident_when_ready_bytes": samples[-1]["resident_ready_bytes"],
            "net_peak_over_file_size": (raw_peak - baseline_peak) / file_bytes,
        }
    reference = variants[REFERENCE]
    for entry in variants.values():
        entry["time_ratio_vs_transformers"] = entry["median_s"] / reference["median_s"]
        entry["load_call_time_ratio_vs_transformers"] = (
            entry["load_call_median_s"] / reference["load_call_median_s"]
        )

    course_run, hf_run = runs["course"][-1], runs["transformers"][-1]
    same_values = course_run["fingerprint"] == hf_run["fingerprint"]
    # the sums differ in the last bits: q, k and v are summed apart in one model, fused in the other
    same_sum = math.isclose(course_run["checksum"], hf_run["checksum"], rel_tol=1e-5, abs_tol=1.0)
    checks = [
        {
            "name": "load: both loaders read the same weights",
            "passed": same_values and same_sum,
            "detail": f"first embedding values {'match' if same_values else 'differ'}; sums of "
            f"all weights {course_run['checksum']:.3f} vs {hf_run['checksum']:.3f}",
        }
    ]
    return {
        "settings": {
            "checkpoint": "GPT-2 124M random weights, model.safetensors + config.json written "
            "by transformers' save_pretrained",
            "course": "ch05_pretraining.pretraining.load_gpt2(folder, size='124M')",
            "transformers": "GPT2LMHeadModel.from_pretrained(folder)",
            "repeats": repeats,
            "warmup": "one untimed process per variant first" if warmup else "none",
            "process": "every measurement in a fresh process importing torch, transformers "
            "(GPT2LMHeadModel) and the course loader before the timed load",
            "ready": "after the load call every parameter is summed once, so a loader that "
            "returns tensors still backed by the unread file pays for reading them too; "
            "median_s and the peaks are taken at that point (load_call_* before it)",
            "memory": "raw peak = high-water RSS (VmHWM; ru_maxrss on systems without "
            "/proc) once ready; net = raw peak minus the median peak of an imports_only "
            "process; in_process growth = peak when ready minus peak before the load in "
            "the same process. RSS counts the pages of the memory-mapped safetensors file "
            "that were read (RssFile) as well as private copies (RssAnon). ru_maxrss is "
            "not used on Linux because a child inherits its parent's value across fork "
            "and exec.",
        },
        "file_bytes": file_bytes,
        "imports_only_peak_rss_bytes": baseline_peak,
        "variants": variants,
        "checks": checks,
    }
