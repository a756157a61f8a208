"""Load one GPT-2 checkpoint in a fresh process and report time and peak memory as JSON.

Run by bench_load.py: ``python benchmarks/load_worker.py VARIANT FOLDER THREADS``, where
VARIANT is ``imports_only``, ``course`` or ``transformers``. Every variant imports the same
modules before measuring, so their memory before the load is the same.

A loader may return before it has read the weights: transformers' from_pretrained can
hand back tensors that still point into the memory-mapped file, read from disk only when
first used. So after the load call the worker touches every parameter once (sums it) and
measures again; "ready" time and memory are the fair comparison between an eager and a
lazy loader.
"""

import json
import resource
import sys
import time

import torch
from transformers import GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from ch05_pretraining.gpt2_weights import load_gpt2


def _status_bytes(*fields: str) -> dict[str, int]:
    """Fields of /proc/self/status given in kB, as bytes; empty where there is no /proc."""
    found = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in fields:
                    found[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return found


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    On Linux this is VmHWM, the high-water mark of this program's own memory. ru_maxrss
    would be wrong here: Linux carries it over from the parent across fork and exec, so a
    child of a large benchmark process would report at least the parent's size.
    """
    peak = _status_bytes("VmHWM").get("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, else KiB


def main(variant: str, folder: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    before = max_rss_bytes()
    start = time.perf_counter()
    if variant == "course":
        model = load_gpt2(folder, size="124M")
        embedding = model.tok_emb.weight
    elif variant == "transformers":
        model = GPT2LMHeadModel.from_pretrained(folder)
        embedding = model.transformer.wte.weight
    elif variant == "imports_only":
        model = embedding = None
    else:
        raise SystemExit(
            f"unknown variant {variant!r}; expected imports_only, course or transformers"
        )
    load_s = time.perf_counter() - start
    after_load = max_rss_bytes()
    checksum = None
    if model is not None:
        with torch.no_grad():  # read every weight once; a shared (tied) tensor is read once
            checksum = sum(float(p.sum()) for p in model.parameters())
    ready_s = time.perf_counter() - start
    return {
        "variant": variant,
        "load_s": load_s,
        "ready_s": ready_s,
        "max_rss_before_load_bytes": before,
        "max_rss_after_load_bytes": after_load,
        "max_rss_ready_bytes": max_rss_bytes(),
        "resident_ready_bytes": _status_bytes("RssAnon", "RssFile"),
        "ru_maxrss_raw": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        # a few weights and a sum of all, so the parent can check both loaders read the same
        "fingerprint": None if embedding is None else embedding[:2, :4].flatten().tolist(),
        "checksum": checksum,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
