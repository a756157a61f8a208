"""Tokenizer throughput: the course's byte-level BPE (ch02_data/bpe.ipynb) against tiktoken.

Both tokenizers encode the same text: the 1,100 records of chapter 7's instruction data
(instruction, input and output of each), joined by ``<|endoftext|>``, repeated ``copies``
times, with ``allowed_special={"<|endoftext|>"}``. Reported figure: tokens per second
(tokens / median wall time of one whole encode). The course's tokenizer caches the ids of
each pre-token it has seen, so it is timed twice: ``course_cold`` empties the cache before
every encode, ``course_warm`` keeps it from the warm-up. The ratio to tiktoken (Rust) is
reported, not targeted. Check: all variants produce exactly tiktoken's ids.

    python benchmarks/bench_tokenizer.py [--quick]
"""

import argparse
import json
import sys

from bench_utils import round_robin, summarize_times

EOT = "<|endoftext|>"
REFERENCE = "tiktoken"


def benchmark_text(copies: int) -> str:
    """The instruction data as one text, its records joined by ``<|endoftext|>``."""
    from shared import fetch

    records = json.loads(fetch("instruction-data").read_text(encoding="utf-8"))
    text = EOT.join(f"{r['instruction']}\n\n{r['input']}\n\n{r['output']}" for r in records)
    return EOT.join([text] * copies)


def run_tokenizer(*, copies: int, repeats: int) -> dict:
    """Time every variant ``repeats`` times, interleaved, after one warm-up each."""
    from shared import gpt2_bpe_tokenizer, gpt2_tokenizer

    course, reference = gpt2_bpe_tokenizer(), gpt2_tokenizer()
    text = benchmark_text(copies)

    def course_cold():
        course.cache.clear()
        return course.encode(text, allowed_special={EOT})

    variants = {
        "course_cold": course_cold,
        "course_warm": lambda: course.encode(text, allowed_special={EOT}),
        REFERENCE: lambda: reference.encode(text, allowed_special={EOT}),
    }
    times, outputs = round_robin(variants, repeats=repeats, warmup=1)
    expected = outputs[REFERENCE]
    results = {}
    for name in variants:
        entry = summarize_times(times[name])
        entry["tokens_per_s"] = len(outputs[name]) / entry["median_s"]
        results[name] = entry
    for entry in results.values():
        entry["ratio_vs_tiktoken"] = entry["tokens_per_s"] / results[REFERENCE]["tokens_per_s"]
    checks = [
        {
            "name": f"tokenizer: {name} ids == tiktoken ids",
            "passed": outputs[name] == expected,
            "detail": "identical" if outputs[name] == expected else "the ids differ",
        }
        for name in ("course_cold", "course_warm")
    ]
    return {
        "settings": {"copies": copies, "repeats": repeats},
        "text": "chapter 7's instruction data, records joined by <|endoftext|>",
        "characters": len(text),
        "tokens": len(expected),
        "variants": results,
        "checks": checks,
    }


def tokenizer_rows(result: dict) -> list[list[str]]:
    """Table rows (variant, tokens/s, ms per encode, ratio to tiktoken) for a report."""
    return [
        [
            name,
            f"{v['tokens_per_s']:,.0f}",
            f"{v['median_s'] * 1e3:.1f}",
            f"{v['ratio_vs_tiktoken']:.3f}x",
        ]
        for name, v in result["variants"].items()
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one timed encode per variant instead of 7"
    )
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 7
    result = run_tokenizer(copies=1, repeats=repeats)
    print(
        f"encode {result['characters']:,} characters ({result['tokens']:,} tokens) of "
        f"{result['text']}, median of {result['settings']['repeats']}"
    )
    print(f"{'variant':12} {'tokens/s':>12} {'ms':>9} {'vs tiktoken':>12}")
    for row in tokenizer_rows(result):
        print(f"{row[0]:12} {row[1]:>12} {row[2]:>9} {row[3]:>12}")
    for check in result["checks"]:
        print(f"{'ok' if check['passed'] else 'FAILED'}: {check['name']} ({check['detail']})")
    return 0 if all(check["passed"] for check in result["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
