"""Command line for chapter 7: fine-tune GPT-2 to follow instructions, answer, score, and chat.

    python -m ch07_instruction finetune --out runs/instruct
    python -m ch07_instruction respond --checkpoint runs/instruct --out runs/answers.json
    python -m ch07_instruction evaluate --checkpoint runs/instruct --responses runs/answers.json
    python -m ch07_instruction chat --checkpoint runs/instruct

The code is the chapter's own (``ch07_instruction/instruction.py``, generated from
``ch07.ipynb``, and chapter 5's training loop and checkpoints); this file only wires it to
arguments. Defaults that differ between the course modes come from ``shared.get_settings()``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FINETUNE_INFO = "finetune.json"  # written next to the checkpoint files by 'finetune'
DEFAULT_SPLIT_SEED = 123


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # Show "(default: ...)" only where there is a default worth showing.
    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from shared.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m ch07_instruction",
        description=(
            "Fine-tune GPT-2 on the course's instruction data, answer the test instructions, "
            f"score the answers, or chat with the model (course mode: {settings.mode})."
        ),
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    formatter = _HelpFormatter

    tune = sub.add_parser(
        "finetune", help="fine-tune GPT-2 and save a checkpoint", formatter_class=formatter
    )
    tune.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    tune.add_argument(
        "--size",
        default="355M",
        help="GPT-2 size: 124M, 355M, 774M, 1558M (test mode: the stand-in)",
    )
    tune.add_argument(
        "--epochs", type=int, default=settings.instruct_epochs, help="passes over the training set"
    )
    tune.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate")
    tune.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    tune.add_argument("--batch-size", type=int, default=8, help="examples per batch")
    tune.add_argument(
        "--mask-instruction", action="store_true", help="leave the prompt tokens out of the loss"
    )
    tune.add_argument(
        "--allowed-max-length", type=int, default=1024, help="cut examples to this many tokens"
    )
    tune.add_argument(
        "--train-subset",
        type=int,
        default=settings.instruct_train_subset,
        help="use the first N training examples; unset: all",
    )
    tune.add_argument(
        "--val-subset",
        type=int,
        default=settings.instruct_val_subset,
        help="use the first N validation examples; unset: all",
    )
    tune.add_argument(
        "--eval-freq", type=int, default=settings.instruct_eval_freq, help="evaluate every N steps"
    )
    tune.add_argument(
        "--eval-iter", type=int, default=settings.instruct_eval_iter, help="batches per evaluation"
    )
    tune.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SPLIT_SEED,
        help="seed of the data split and the training",
    )
    _add_data_and_device(tune)

    respond = sub.add_parser(
        "respond",
        help="answer the test instructions and save them as JSON",
        formatter_class=formatter,
    )
    respond.add_argument(
        "--checkpoint", type=Path, required=True, help="folder written by 'finetune'"
    )
    respond.add_argument("--out", type=Path, required=True, help="JSON file to write")
    respond.add_argument(
        "--limit",
        type=int,
        default=settings.instruct_test_subset,
        help="answer the first N test instructions; unset: all",
    )
    respond.add_argument(
        "--split-seed",
        type=int,
        help=f"seed of the data split; unset: the one saved by 'finetune', else {DEFAULT_SPLIT_SEED}",
    )
    _add_generation(respond, settings)
    _add_data_and_device(respond)

    evaluate = sub.add_parser(
        "evaluate",
        help="score saved answers: offline scores, and an LLM judge if one runs",
        formatter_class=formatter,
    )
    evaluate.add_argument(
        "--responses", type=Path, required=True, help="JSON file written by 'respond'"
    )
    evaluate.add_argument(
        "--checkpoint", type=Path, help="fine-tuned model: adds the answer loss and perplexity"
    )
    evaluate.add_argument(
        "--ollama-url", default="http://localhost:11434", help="Ollama server of the judge"
    )
    evaluate.add_argument(
        "--judge-model", default="llama3", help="Ollama model that grades the answers"
    )
    evaluate.add_argument(
        "--judge-timeout", type=float, default=120.0, help="seconds to wait for each grade"
    )
    evaluate.add_argument("--no-judge", action="store_true", help="skip the LLM judge")
    evaluate.add_argument("--out", type=Path, help="also write the scores to this JSON file")
    evaluate.add_argument("--device", help="cpu, cuda, cuda:1, mps; unset: the best available")

    chat = sub.add_parser(
        "chat",
        help="type instructions, read the answers as they are generated",
        formatter_class=formatter,
    )
    chat.add_argument("--checkpoint", type=Path, required=True, help="folder written by 'finetune'")
    _add_generation(chat, settings)
    chat.add_argument("--device", help="cpu, cuda, cuda:1, mps; unset: the best available")
    return parser  # fmt: skip


def _add_generation(parser: argparse.ArgumentParser, settings) -> None:
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=settings.instruct_max_new_tokens,
        help="longest answer",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature; 0 (the default) = greedy",
    )
    parser.add_argument("--top-k", type=int, help="sample only from the K most likely tokens")
    parser.add_argument("--top-p", type=float, help="sample only from the nucleus of probability P")
    parser.add_argument("--seed", type=int, default=123, help="seed for sampling")


def _add_data_and_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, help="instruction JSON file; unset: the course's data set"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps; unset: the best available")


def _load_data(path: Path | None) -> list[dict]:
    from shared import fetch, load_instruction_data

    return load_instruction_data(path if path is not None else fetch("instruction-data"))


def _load_finetuned(folder: Path, device):
    from shared import load_checkpoint

    return load_checkpoint(folder, restore_rng=False)["model"].to(device).eval()


def _finetune(args) -> int:
    import tiktoken
    import torch

    from shared import (
        config_from_model,
        create_instruction_dataloader,
        format_prompt,
        get_device,
        gpt2_checkpoint,
        load_gpt2,
        save_checkpoint,
        set_seed,
        split_instruction_data,
        train_model,
        write_json_atomically,
    )

    device = get_device(args.device)
    set_seed(args.seed)
    train_data, val_data, _ = split_instruction_data(_load_data(args.data), seed=args.seed)
    train_data, val_data = train_data[: args.train_subset], val_data[: args.val_subset]
    if len(train_data) < args.batch_size:
        raise SystemExit(
            f"error: {len(train_data)} training examples cannot fill one batch of {args.batch_size}; "
            "lower --batch-size or raise --train-subset"
        )
    if not val_data:
        raise SystemExit("error: the validation set is empty; raise --val-subset")
    tokenizer = tiktoken.get_encoding("gpt2")
    loader_args = dict(
        device=device,
        allowed_max_length=args.allowed_max_length,
        mask_instruction=args.mask_instruction,
    )
    train_loader = create_instruction_dataloader(
        train_data,
        tokenizer,
        args.batch_size,
        shuffle=True,
        drop_last=True,
        seed=args.seed,
        **loader_args,
    )
    val_loader = create_instruction_dataloader(val_data, tokenizer, args.batch_size, **loader_args)

    checkpoint = gpt2_checkpoint(args.size)
    print(checkpoint.description, file=sys.stderr)
    model = load_gpt2(checkpoint.folder, size=checkpoint.size, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    print(
        f"fine-tuning {checkpoint.label} on {len(train_data)} examples ({len(train_loader)} batches of "
        f"{args.batch_size}) for {args.epochs} epoch{'s' if args.epochs != 1 else ''} on {device}"
        + (", prompt tokens masked" if args.mask_instruction else "")
    )
    state = train_model(
        model, train_loader, val_loader, optimizer, device,
        num_epochs=args.epochs, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
        start_context=format_prompt(val_data[0]), tokenizer=tokenizer,
    )  # fmt: skip
    save_checkpoint(args.out, model, config=config_from_model(model), state=state)
    write_json_atomically(
        args.out / FINETUNE_INFO,
        {
            "base_model": checkpoint.label,
            "split_seed": args.seed,
            "train_examples": len(train_data),
            "epochs": args.epochs,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "batch_size": args.batch_size,
            "mask_instruction": args.mask_instruction,
            "allowed_max_length": args.allowed_max_length,
        },
    )
    print(f"saved {args.out}")
    return 0


def _split_seed(args) -> int:
    import json

    if args.split_seed is not None:
        return args.split_seed
    info = args.checkpoint / FINETUNE_INFO
    if info.is_file():
        return int(json.loads(info.read_text(encoding="utf-8"))["split_seed"])
    return DEFAULT_SPLIT_SEED


def _respond(args) -> int:
    import tiktoken
    import torch

    from shared import generate_responses, get_device, save_responses, split_instruction_data

    device = get_device(args.device)
    model = _load_finetuned(args.checkpoint, device)
    seed = _split_seed(args)
    _, _, test_data = split_instruction_data(_load_data(args.data), seed=seed)
    test_data = test_data[: args.limit]
    tokenizer = tiktoken.get_encoding("gpt2")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    print(f"answering {len(test_data)} test instructions (split seed {seed}) on {device}")
    answered = generate_responses(
        model, test_data, tokenizer, device, args.max_new_tokens, progress=True,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, generator=generator,
    )  # fmt: skip
    save_responses(args.out, answered)
    print(f"saved {len(answered)} answers to {args.out}")
    return 0


def _evaluate(args) -> int:
    from shared import (
        JudgeUnavailableError,
        get_device,
        judge_responses,
        load_responses,
        mean_rouge_l,
        ollama_status,
        write_json_atomically,
    )

    entries = load_responses(args.responses)
    if not entries:
        raise SystemExit(f"error: {args.responses} holds no answers")
    scores: dict = {"responses": str(args.responses), "records": len(entries)}
    print(f"{len(entries)} answers in {args.responses}")
    scores["rouge_l"] = mean_rouge_l(entries)
    print(f"ROUGE-L (mean F1 against the reference answers): {scores['rouge_l']:.3f}")

    if args.checkpoint is not None:
        import tiktoken

        from shared import response_token_loss

        device = get_device(args.device)
        model = _load_finetuned(args.checkpoint, device)
        score = response_token_loss(model, entries, tiktoken.get_encoding("gpt2"), device)
        scores["answer_loss"], scores["answer_perplexity"] = score["loss"], score["perplexity"]
        print(
            f"answer loss {score['loss']:.3f}, perplexity {score['perplexity']:.2f} "
            f"(over {score['tokens']} reference answer tokens)"
        )

    if args.no_judge:
        print("LLM judge: skipped (--no-judge)")
    else:
        ready, explanation = ollama_status(args.ollama_url, args.judge_model, timeout=2.0)
        if not ready:
            print(f"LLM judge skipped: {explanation}")
        else:
            try:
                report = judge_responses(
                    entries, model=args.judge_model, url=args.ollama_url,
                    timeout=args.judge_timeout, progress=True,
                )  # fmt: skip
            except JudgeUnavailableError as err:
                print(f"LLM judge stopped: {err}")
            else:
                scores["judge_model"], scores["judge_scores"] = args.judge_model, report.scores
                scores["judge_mean"] = report.mean
                graded = sum(s is not None for s in report.scores)
                mean = "n/a" if report.mean is None else f"{report.mean:.1f}"
                print(
                    f"LLM judge ({args.judge_model}): mean score {mean} over {graded} of {len(entries)} answers"
                )
                for problem in report.problems:
                    print(f"  no score for {problem}")
    if args.out is not None:
        write_json_atomically(args.out, scores)
        print(f"saved the scores to {args.out}")
    return 0


def _chat(args) -> int:
    import tiktoken
    import torch

    from shared import CachedDecoder, format_prompt, get_device, stream_answer

    device = get_device(args.device)
    model = _load_finetuned(args.checkpoint, device)
    tokenizer = tiktoken.get_encoding("gpt2")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    decoder = CachedDecoder(model)  # one KV cache for the whole session, reset for every answer
    print(
        "Type an instruction and press Enter. 'exit', 'quit' or Ctrl-D ends the chat.", flush=True
    )
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        instruction = line.strip()
        if not instruction:
            continue
        if instruction.lower() in {"exit", "quit"}:
            return 0
        prompt = format_prompt({"instruction": instruction, "input": ""})
        pieces = stream_answer(
            model, prompt, tokenizer, args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, generator=generator, decoder=decoder,
        )  # fmt: skip
        sys.stdout.write("model> ")
        try:
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()


COMMANDS = {"finetune": _finetune, "respond": _respond, "evaluate": _evaluate, "chat": _chat}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from shared import ResourceError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, ResourceError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
