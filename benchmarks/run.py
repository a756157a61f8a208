"""Side-by-side speed and memory benchmarks of the course's GPT-2 code.

    python benchmarks/run.py [--quick] [--only decode,train,load,tokenizer] [--out PATH]

Prints a table per benchmark and a table of targets, and writes everything (settings,
machine, raw samples, ratios, targets) to a JSON summary. Every ratio is computed against
a reference measured in the same run. Nothing here asserts on wall-clock time; the run
fails (exit status 1, after writing the summary) only when a correctness check fails,
e.g. two implementations decoding different tokens from the same weights.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_utils import REPO_ROOT, load_average, machine_info, quiet_transformers, write_random_gpt2

BENCHMARKS = ("decode", "train", "load", "tokenizer")
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "summary.json"
FULL = {
    "decode": {"new_tokens": 200, "repeats": 3, "warmup_tokens": 8},
    "train": {"batch_size": 2, "seq_len": 256, "warmup_steps": 1, "timed_steps": 5},
    "load": {"repeats": 3, "warmup": True},
    "tokenizer": {"copies": 1, "repeats": 7},
}
QUICK = {  # a smoke check: same code paths, fewer tokens and repeats
    "decode": {"new_tokens": 24, "repeats": 1, "warmup_tokens": 4},
    "train": {"batch_size": 2, "seq_len": 64, "warmup_steps": 1, "timed_steps": 2},
    "load": {"repeats": 1, "warmup": False},
    "tokenizer": {"copies": 1, "repeats": 1},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer tokens and repeats: a smoke check"
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run (default: {','.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON summary (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip the bf16-weight cached decoding variant"
    )
    parser.add_argument(
        "--no-int8", action="store_true", help="skip the int8-weight cached decoding variants"
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the decoding variants with the compiled one-token step (CompiledDecoder), "
        "which need a C++ compiler and take a while to compile",
    )
    parser.add_argument(
        "--train-device",
        default="cpu",
        help="device of the training benchmark: cpu (default) or cuda[:N]; the other "
        "benchmarks measure the CPU",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the training device's published dense fp32 peak in TFLOP/s, from its "
        "datasheet: the report then gives MFU against it",
    )
    args = parser.parse_args(argv)
    if args.train_device != "cpu":
        import torch

        if not args.train_device.startswith("cuda") or not torch.cuda.is_available():
            parser.error(
                f"--train-device {args.train_device!r}: expected cpu or cuda[:N] on a machine "
                f"with a CUDA GPU (CUDA available here: {torch.cuda.is_available()})"
            )
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        parser.error(f"--peak-tflops must be a positive number, got {args.peak_tflops}")
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown or not selected:
        parser.error(
            f"--only got {args.only!r}; expected a comma-separated subset of "
            f"{','.join(BENCHMARKS)}, e.g. --only decode,load"
        )
    args.selected = [name for name in BENCHMARKS if name in selected]
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


# --- targets ------------------------------------------------------------------------------


# (id, benchmark, path to the measured value in its results, comparison, target, description)
TARGETS = [
    (
        "decode_cached_vs_transformers",
        "decode",
        ("fastest", "fp32", "ratio_vs_transformers"),
        ">=",
        1.3,
        "cached fp32 decode (the faster of CachedDecoder and CompiledDecoder) tokens/s / "
        "transformers generate tokens/s",
    ),
    (
        "decode_bf16_cached_vs_transformers_fp32",
        "decode",
        ("fastest", "bf16", "ratio_vs_transformers"),
        ">=",
        2.0,
        "cached bf16-weight decode (the faster of eager and compiled) tokens/s / transformers "
        "fp32 tokens/s",
    ),
    (
        "decode_int8_cached_vs_transformers_fp32",
        "decode",
        ("fastest", "int8", "ratio_vs_transformers"),
        ">=",
        3.0,
        "cached int8-weight decode (the fastest of int8_matmul and prepacked, each eager "
        "and compiled) tokens/s / transformers fp32",
    ),
    (
        "kv_cache_speedup",
        "decode",
        ("kv_cache_speedup",),
        ">=",
        6.0,
        "course cached decode tokens/s / course decode without cache tokens/s",
    ),
    (
        "train_vs_transformers",
        "train",
        ("variants", "course", "ratio_vs_transformers"),
        ">=",
        1.0,
        "course training tokens/s / transformers training tokens/s",
    ),
    (
        "train_vs_llms_from_scratch",
        "train",
        ("variants", "course", "ratio_vs_llms_from_scratch"),
        ">=",
        1.3,
        "course training tokens/s / llms-from-scratch training tokens/s",
    ),
    (
        "train_sdpa_vs_transformers",
        "train",
        ("variants", "course_sdpa", "ratio_vs_transformers"),
        ">=",
        1.0,
        "course training tokens/s with use_sdpa_attention / transformers training tokens/s",
    ),
    (
        "train_sdpa_vs_llms_from_scratch",
        "train",
        ("variants", "course_sdpa", "ratio_vs_llms_from_scratch"),
        ">=",
        1.3,
        "course training tokens/s with use_sdpa_attention / llms-from-scratch training tokens/s",
    ),
    (
        "train_fast_vs_transformers",
        "train",
        ("variants", "course_fast", "ratio_vs_transformers"),
        ">=",
        1.0,
        "course training tokens/s with SDPA, torch.compile and fused AdamW / transformers",
    ),
    (
        "train_fast_vs_llms_from_scratch",
        "train",
        ("variants", "course_fast", "ratio_vs_llms_from_scratch"),
        ">=",
        1.3,
        "course training tokens/s with SDPA, torch.compile and fused AdamW / llms-from-scratch",
    ),
    (
        "loader_peak_memory_vs_file",
        "load",
        ("variants", "course", "net_peak_over_file_size"),
        "<=",
        1.3,
        "course loader net peak RSS / model.safetensors size",
    ),
    (
        "loader_time_vs_from_pretrained",
        "load",
        ("variants", "course", "time_ratio_vs_transformers"),
        "<=",
        1.0,
        "course loader time until every weight is read / the same for from_pretrained",
    ),
]


def _lookup(node, path):
    for key in path:
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return node


def _why_missing(benchmark: str, path: tuple, results: dict) -> str:
    result = results.get(benchmark)
    if result is None:
        return f"not measured: the {benchmark} benchmark was not run (see --only)"
    if any("bf16" in key for key in path) and "course_cache_bf16" not in result["variants"]:
        return "not measured: the bf16 variant was skipped (--no-bf16)"
    if any("int8" in key for key in path) and "course_cache_int8" not in result["variants"]:
        return "not measured: the int8 variant was skipped (--no-int8)"
    if any(key.endswith("_compiled") for key in path):
        return f"not measured: the compiled step was {result['compiled_step']}"
    if path[0] == "fastest":
        return "not measured: no cached decoder of these weights ran"
    if "ratio_vs_llms_from_scratch" in path:
        return (
            "not available: llms-from-scratch is not installed; "
            + (result["llms_from_scratch_install"])
        )
    return "not measured"


def _cache_bytes(machine: dict, level: str = "L3") -> int | None:
    # "491520K" (Linux sysfs) -> bytes; None when the machine info has no such cache
    size = (machine or {}).get("cpu_caches", {}).get(level)
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if not size:
        return None
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def _decode_limit(
    results: dict, dtype: str, wanted: float, machine: dict | None = None
) -> str | None:
    # What bounds one decoded token: reading every weight matrix once (see weight_stream_rate).
    decode = results.get("decode")
    if decode is None or dtype not in decode.get("fastest", {}):
        return None
    variant = decode["fastest"][dtype]["variant"]
    streamed = "int8_prepacked" if "_prepacked" in variant else dtype
    if streamed not in decode["weight_streaming"]:
        return None
    ours = decode["variants"][variant]["ms_per_token"]
    theirs = decode["variants"]["transformers_cache"]["ms_per_token"]
    stream = decode["weight_streaming"][streamed]
    floor, needed = stream["floor_ms_per_token"], theirs / wanted
    text = (
        f"per token the course's fastest {dtype} decoder ({variant}) takes {ours:.1f} ms and "
        f"transformers (fp32) {theirs:.1f} ms. "
        f"A token reads every weight matrix once: {stream['weight_bytes_read_per_token'] / 1e6:.0f} MB "
        f"in {dtype}; at the {stream['bytes_per_s'] / 1e9:.1f} GB/s this machine reaches in a "
        f"one-token {dtype} product with the output head ({stream['head_matvec_ms']:.2f} ms for "
        f"the head alone), that costs at least {floor:.1f} ms. {wanted}x transformers needs "
        f"{needed:.1f} ms per token"
    )
    cache = _cache_bytes(machine)
    weights = stream["weight_bytes_read_per_token"]
    if cache is not None and cache >= weights / 2:
        text += (
            f" (this CPU's last-level cache, {cache / 1e6:.0f} MB, can hold "
            f"{min(1.0, cache / weights):.0%} of those weights, so the rate of a repeatedly "
            "timed matrix is partly a cache rate and the floor is optimistic)"
        )
    if needed < floor:
        return text + ", below that floor: memory bandwidth, not computation, is the limit."
    return text + (
        f", {needed - floor:.1f} ms above that floor, while the course spends "
        f"{ours - floor:.1f} ms above it: the block matrices, read one after another, stream "
        "below the head's rate, and norms, attention and Python work per layer add the rest."
    )


def _train_limit(results: dict, variant: str, reference: str, wanted: float) -> str | None:
    # Split each variant's step into matrix products (at this machine's measured matmul
    # peak) and everything else, from the same run's numbers.
    train = results.get("train")
    if train is None or reference not in train["variants"] or variant not in train["variants"]:
        return None
    per_step = train["settings"]["tokens_per_step"] * train["flops"]["flops_per_token"]
    matmul_s = per_step / train["matmul_peak"]["flops_per_s"]
    rest = {name: v["median_s"] - matmul_s for name, v in train["variants"].items()}
    ours, theirs = train["variants"][variant]["median_s"], train["variants"][reference]["median_s"]
    needed = theirs / wanted
    return (
        f"a step of {per_step / 1e12:.2f} TFLOP of matrix products would take {matmul_s:.2f} s "
        f"at this machine's fp32 matmul peak; the time each implementation spends beyond "
        f"that (memory-bound passes: attention softmax, LayerNorm, GELU, the loss, AdamW) is "
        + ", ".join(f"{name} {value:.2f} s" for name, value in rest.items())
        + f". {wanted}x {reference} means a step of {needed:.2f} s, i.e. at most "
        f"{max(needed - matmul_s, 0):.2f} s beyond the products where {variant} takes "
        f"{ours - matmul_s:.2f} s. Eager PyTorch runs each of those passes separately; "
        "course_fast (torch.compile, fused attention and fused AdamW) removes much of that "
        "time." + _attention_note(train, variant, reference)
    )


def _attention_note(train: dict, variant: str, reference: str) -> str:
    implementation = train["settings"].get("transformers_attn_implementation")
    if reference != "transformers" or variant != "course" or implementation in (None, "eager"):
        return ""
    return (
        f" transformers computes attention with its {implementation!r} implementation (its "
        "default; 'sdpa' is PyTorch's fused scaled_dot_product_attention), while the eager "
        "course model computes chapter 3's explicit softmax(Q K^T / sqrt(d)) V: course_sdpa "
        "is the like-for-like comparison."
    )


def _load_limit(results: dict) -> str | None:
    load = results.get("load")
    if load is None:
        return None
    ours, theirs = load["variants"]["course"], load["variants"]["transformers"]
    size = load["file_bytes"]
    return (
        f"from_pretrained maps the file into memory and makes every weight a view of the "
        f"mapping: it copies nothing, and touching pages already in the operating system's "
        f"cache took {theirs['median_s']:.2f} s in all. The course loader reads the "
        f"{size / 1e6:.0f} MB into memory of its own ({ours['median_s']:.2f} s, "
        f"{size / ours['median_s'] / 1e9:.1f} GB/s), which makes the model independent of "
        "the file."
    )


def limits(results: dict, machine: dict | None = None) -> dict[str, str | None]:
    """For each target, what bounds the measured value, in numbers from this run."""
    return {
        "decode_cached_vs_transformers": _decode_limit(results, "fp32", 1.3, machine),
        "decode_bf16_cached_vs_transformers_fp32": _decode_limit(results, "bf16", 2.0, machine),
        "decode_int8_cached_vs_transformers_fp32": _decode_limit(results, "int8", 3.0, machine),
        "train_vs_transformers": _train_limit(results, "course", "transformers", 1.0),
        "train_vs_llms_from_scratch": _train_limit(results, "course", "llms_from_scratch", 1.3),
        "train_sdpa_vs_transformers": _train_limit(results, "course_sdpa", "transformers", 1.0),
        "train_sdpa_vs_llms_from_scratch": _train_limit(
            results, "course_sdpa", "llms_from_scratch", 1.3
        ),
        "train_fast_vs_transformers": _train_limit(results, "course_fast", "transformers", 1.0),
        "train_fast_vs_llms_from_scratch": _train_limit(
            results, "course_fast", "llms_from_scratch", 1.3
        ),
        "loader_time_vs_from_pretrained": _load_limit(results),
    }


def evaluate_targets(results: dict, quick: bool, machine: dict | None = None) -> list[dict]:
    """Every target with its measured value, whether it is met, and by how much it is missed."""
    evaluated = []
    for target_id, benchmark, path, comparison, target, description in TARGETS:
        measured = _lookup(results.get(benchmark), path)
        entry = {
            "id": target_id,
            "description": description,
            "comparison": comparison,
            "target": target,
            "measured": measured,
        }
        if measured is None:
            entry.update(met=None, gap=None, status=_why_missing(benchmark, path, results))
        else:
            met = measured >= target if comparison == ">=" else measured <= target
            gap = None if met else abs(measured - target)
            entry.update(
                met=met,
                gap=gap,  # how far from the target, in the measured value's units
                measured_over_target=measured / target,
                status="met" if met else f"missed by {gap:.2f} ({measured:.2f} vs {target})",
            )
            if not met:
                entry["limit"] = limits(results, machine).get(target_id)
            if quick:
                entry["note"] = "--quick run: fewer tokens and repeats than the targets assume"
        evaluated.append(entry)
    return evaluated


# --- printing -------------------------------------------------------------------------------


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [headers, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _int8_perplexity_line(quality: dict | None) -> str:
    if quality is None:
        return ""
    if "error" in quality:
        return f"\nint8 perplexity: not measured ({quality['error']})"
    values, change = quality["perplexity"], quality["change_vs_fp32"]
    int8 = ", ".join(f"{name} {values[name]:.1f} ({change[name]:+.3%})" for name in change)
    return (
        f"\nPerplexity on The Verdict ({quality['windows']} windows of 256 tokens): fp32 "
        f"{values['fp32']:.1f}, {int8}; random weights, so a check that int8 changes "
        "predictions little, not a quality figure"
    )


def _compile_time_line(decode: dict) -> str:
    compiled = {k: v for k, v in decode["variants"].items() if k.endswith("_compiled")}
    if not compiled:
        return ""
    times = ", ".join(f"{k} {v['warmup_s']:.0f} s" for k, v in compiled.items())
    return f"\nwarm-up generation including torch.compile: {times}"


def _mfu_line(train: dict) -> str:
    device = train.get("device", {"device": "cpu", "published_peak_flops_per_s": None})
    where = f"\nDevice: {device['device']}" + (
        f" ({device['device_name']})" if device.get("device_name") not in (None, "cpu") else ""
    )
    published = device.get("published_peak_flops_per_s")
    if published is None:
        return where + "; MFU needs the device's published peak (--peak-tflops)"
    return (
        where
        + f"; MFU against its published {published / 1e12:g} TFLOP/s: "
        + ", ".join(f"{name} {100 * v['mfu']:.1f}%" for name, v in train["variants"].items())
    )


def report(summary: dict) -> str:
    parts = []
    machine = summary["machine"]
    parts.append(
        f"machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs"
        + "".join(f", {level} {size}" for level, size in machine.get("cpu_caches", {}).items())
        + f", torch "
        f"{machine['torch']} ({machine['torch_num_threads']} threads), transformers "
        f"{machine['transformers']}; load average {machine['load_average_at_start']} at start, "
        f"{summary['load_average_at_end']} at end"
    )
    results = summary["results"]
    if "decode" in results:
        decode = results["decode"]
        s = decode["settings"]
        rows = [
            [
                name,
                f"{v['tokens_per_s']:.1f}",
                f"{v['median_s']:.2f}",
                _ratio(v["ratio_vs_transformers"]),
                f"{v['prefix_agreement_with_fp32']}/{v['new_tokens']}"
                if "prefix_agreement_with_fp32" in v
                else "",
            ]
            for name, v in decode["variants"].items()
        ]
        parts.append(
            f"\nDecode: batch 1, {s['prompt_tokens']}-token prompt, {s['new_tokens']} greedy "
            f"tokens, median of {s['repeats']}\n"
            + format_table(
                ["variant", "tokens/s", "median s", "vs transformers", "agreeing prefix"],
                rows,
            )
            + f"\nKV-cache speedup: {_ratio(decode['kv_cache_speedup'])}; the reference "
            f"output has {decode['reference_distinct_tokens']} distinct tokens; compiled "
            f"one-token step: {decode['compiled_step']}"
            + _compile_time_line(decode)
            + _int8_perplexity_line(decode.get("int8_perplexity"))
        )
    if "train" in results:
        train = results["train"]
        s, flops, peak = train["settings"], train["flops"], train["matmul_peak"]
        rows = [
            [
                name,
                f"{v['tokens_per_s']:.0f}",
                f"{v['median_s']:.2f}",
                _ratio(v["ratio_vs_transformers"]),
                _ratio(v.get("ratio_vs_llms_from_scratch")),
                f"{v['achieved_flops_per_s'] / 1e9:.1f}",
                f"{100 * v['fraction_of_matmul_peak']:.0f}%",
            ]
            for name, v in train["variants"].items()
        ]
        if not train["llms_from_scratch_available"]:
            rows.append(
                ["llms_from_scratch", "not installed: " + train["llms_from_scratch_install"]]
                + [""] * 5
            )
        parts.append(
            f"\nTraining step: batch {s['batch_size']} x {s['seq_len']} tokens, fp32 AdamW, "
            f"tied heads, dropout 0, median of {s['timed_steps']}\n"
            + format_table(
                [
                    "variant",
                    "tokens/s",
                    "step s",
                    "vs transformers",
                    "vs llms-from-scratch",
                    "GFLOP/s",
                    "of peak",
                ],
                rows,
            )
            + f"\n{flops['formula']}\nHere N = {flops['N']:,} "
            f"({flops['non_embedding_parameters']:,} non-embedding + "
            f"{flops['output_head_matmul_parameters']:,} head), L = {flops['L']}, "
            f"T = {flops['T']}, d = {flops['d']}: {flops['flops_per_token'] / 1e6:.1f} MFLOP "
            f"per token. Matmul peak ({peak['size']}x{peak['size']} fp32): "
            f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s." + _mfu_line(train)
        )
    if "load" in results:
        load = results["load"]
        mb = 1e6
        rows = [
            [
                name,
                f"{v['load_call_median_s']:.2f}",
                f"{v['median_s']:.2f}",
                f"{v['raw_peak_rss_bytes'] / mb:.0f}",
                f"{v['net_peak_rss_bytes'] / mb:.0f}",
                f"{v['net_peak_over_file_size']:.2f}x",
                _ratio(v["time_ratio_vs_transformers"]),
            ]
            for name, v in load["variants"].items()
        ]
        parts.append(
            f"\nLoading: model.safetensors {load['file_bytes'] / mb:.0f} MB, fresh process per "
            f"load, median of {load['settings']['repeats']}; imports alone peak at "
            f"{load['imports_only_peak_rss_bytes'] / mb:.0f} MB; 'ready' = after reading "
            "every weight once\n"
            + format_table(
                [
                    "variant",
                    "load call s",
                    "ready s",
                    "raw peak MB",
                    "net peak MB",
                    "net/file",
                    "ready time vs transformers",
                ],
                rows,
            )
        )
    if "tokenizer" in results:
        from bench_tokenizer import tokenizer_rows

        tok = results["tokenizer"]
        parts.append(
            f"\nTokenizer: encode {tok['characters']:,} characters ({tok['tokens']:,} GPT-2 "
            f"tokens) of {tok['text']}, median of {tok['settings']['repeats']}; the ratio is "
            "reported, not a target\n"
            + format_table(
                ["variant", "tokens/s", "ms per encode", "vs tiktoken"], tokenizer_rows(tok)
            )
        )
    rows = [
        [
            t["id"],
            f"{t['comparison']} {t['target']}",
            "-" if t["measured"] is None else f"{t['measured']:.2f}",
            t["status"],
        ]
        for t in summary["targets"]
    ]
    parts.append("\nTargets\n" + format_table(["target", "wanted", "measured", "status"], rows))
    for t in summary["targets"]:
        if t.get("limit"):
            parts.append(f"\n{t['id']}: {t['limit']}")
    failed = [c for c in summary["checks"] if not c["passed"]]
    parts.append(
        f"\nChecks: {len(summary['checks']) - len(failed)} of {len(summary['checks'])} passed"
        + "".join(f"\n  FAILED {c['name']}: {c.get('detail', '')}" for c in failed)
    )
    return "\n".join(parts)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_transformers()
    settings = QUICK if args.quick else FULL
    machine = machine_info()
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpt-benchmark-") as tmp:
        folder = None  # the tokenizer benchmark needs no checkpoint
        if set(args.selected) - {"tokenizer"}:
            print("writing a random GPT-2 124M checkpoint ...", file=sys.stderr, flush=True)
            folder = write_random_gpt2(Path(tmp) / "gpt2-124M-random")
        for name in args.selected:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            if name == "decode":
                from bench_decode import run_decode

                results[name] = run_decode(
                    folder, **settings[name], bf16=not args.no_bf16, int8=not args.no_int8,
                    compiled=not args.no_compile,
                )  # fmt: skip
            elif name == "train":
                from bench_train import run_train

                results[name] = run_train(
                    folder, **settings[name], device=args.train_device,
                    peak_tflops=args.peak_tflops,
                )  # fmt: skip
            elif name == "load":
                from bench_load import run_load

                results[name] = run_load(folder, **settings[name], threads=args.threads)
            else:
                from bench_tokenizer import run_tokenizer

                results[name] = run_tokenizer(**settings[name])
            results[name]["load_average_after"] = load_average()

    checks = [check for result in results.values() for check in result.pop("checks")]
    summary = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
        "quick": args.quick,
        "benchmarks": args.selected,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "machine": machine,
        "load_average_at_end": load_average(),
        "results": results,
        "targets": evaluate_targets(results, args.quick, machine),
        "checks": checks,
    }
    print(report(summary))
    write_json(args.out, summary)
    print(f"\nsummary written to {args.out}")
    if any(not check["passed"] for check in checks):
        print("a correctness check failed; see 'Checks' above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
