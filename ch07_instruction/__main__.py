"""Command line for chapter 7: fine-tune GPT-2 to follow instructions, answer, score, and chat.

    python -m ch07_instruction finetune --out runs/instruct
    python -m ch07_instruction respond --checkpoint runs/instruct --out runs/answers.json
    python -m ch07_instruction evaluate --checkpoint runs/instruct --responses runs/answers.json
    python -m ch07_instruction chat --checkpoint runs/instruct

Wires the modules generated from ``ch07.ipynb`` to arguments; mode defaults: ``shared.settings``.
"""

import sys
from pathlib import Path

import shared.cli as cli
from shared.io import check_output_folder, write_json
from shared.judge import OLLAMA_MODEL, OLLAMA_URL, JudgeUnavailableError
from shared.resources import fetch, gpt2_tokenizer
from shared.settings import get_settings
from shared.weights import gpt2_checkpoint

SPLIT_SEED = 123
RECORDED = ("epochs", "lr", "weight_decay", "batch_size", "mask_instruction", "allowed_max_length")


def build_parser():
    s = get_settings()
    parser, sub = cli.make_parser(
        "python -m ch07_instruction",
        "Fine-tune GPT-2 on the course's instruction data, answer the test instructions, "
        f"score the answers, or chat with the model (course mode: {s.mode}).",
    )
    # fmt: off
    tune = cli.add_subcommand(sub, "finetune", "fine-tune GPT-2 and save a checkpoint")
    tune.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    cli.add_gpt2_option(tune, default="355M")
    tune.add_argument("--epochs", type=int, default=s.instruct_epochs, help="passes over the training set")
    tune.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate")
    tune.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    tune.add_argument("--batch-size", type=int, default=8, help="examples per batch")
    tune.add_argument("--mask-instruction", action="store_true", help="leave the prompt tokens out of the loss")
    tune.add_argument("--allowed-max-length", type=int, default=1024, help="cut examples to this many tokens")
    tune.add_argument("--train-subset", type=int, default=s.instruct_train_subset, help="use the first N training examples; unset: all")
    tune.add_argument("--val-subset", type=int, default=s.instruct_val_subset, help="use the first N validation examples; unset: all")
    tune.add_argument("--eval-freq", type=int, default=s.instruct_eval_freq, help="evaluate every N steps")
    tune.add_argument("--eval-iter", type=int, default=s.instruct_eval_iter, help="batches per evaluation")
    cli.add_seed_option(tune, help="seed of the data split and the training")
    respond = cli.add_subcommand(sub, "respond", "answer the test instructions and save them as JSON")
    respond.add_argument("--out", type=Path, required=True, help="JSON file to write")
    respond.add_argument("--limit", type=cli.positive_int, default=s.instruct_test_subset, help="answer the first N test instructions; unset: all")
    respond.add_argument("--split-seed", type=int, help=f"seed of the data split; unset: the one saved by 'finetune', else {SPLIT_SEED}")
    evaluate = cli.add_subcommand(sub, "evaluate", "score saved answers: offline scores, and an LLM judge if one runs")
    evaluate.add_argument("--responses", type=Path, required=True, help="JSON file written by 'respond'")
    evaluate.add_argument("--checkpoint", type=Path, help="fine-tuned model: adds the answer loss and perplexity")
    evaluate.add_argument("--ollama-url", default=OLLAMA_URL, help="Ollama server of the judge")
    evaluate.add_argument("--judge-model", default=OLLAMA_MODEL, help="Ollama model that grades the answers")
    evaluate.add_argument("--judge-timeout", type=float, default=120.0, help="seconds to wait for each grade")
    evaluate.add_argument("--no-judge", action="store_true", help="skip the LLM judge")
    evaluate.add_argument("--out", type=Path, help="also write the scores to this JSON file")
    chat = cli.add_subcommand(sub, "chat", "type instructions, read the answers as they are generated")
    for command in (respond, chat):
        command.add_argument("--checkpoint", type=Path, required=True, help="folder written by 'finetune'")
        cli.add_decoding_options(command, max_new_tokens=s.instruct_max_new_tokens)
        cli.add_seed_option(command, help="seed for sampling")
    for command in (tune, respond):
        command.add_argument("--data", type=Path, help="instruction JSON file; unset: the course's data set")
    # fmt: on
    for command in (tune, respond, evaluate, chat):
        cli.add_device_option(command)
    return parser


def _load_finetuned(args):  # (device, the model 'finetune' saved in --checkpoint, its record)
    from ch05_pretraining.checkpoints import load_checkpoint
    from shared.runtime import get_device

    device, loaded = get_device(args.device), load_checkpoint(args.checkpoint, restore_rng=False)
    return device, loaded["model"].to(device).eval(), loaded["extra"] or {}


def _json_out(path):  # an --out that names a folder is refused first, not after all the work
    if path is not None and path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; --out names a JSON file, e.g. {path}/a.json")


def _decoding(args, device) -> dict:  # generate's keyword arguments: --temperature, --top-k...
    import torch

    gen = torch.Generator(device=device).manual_seed(args.seed)
    return {**cli.decoding_settings(args), "generator": gen}


def _finetune(args) -> int:
    import torch

    from ch05_pretraining import checkpoints, gpt2_weights, pretraining
    from ch07_instruction import instruction
    from shared.runtime import get_device, set_seed

    check_output_folder(args.out)  # first: a bad --out is refused before any data or weights
    device = get_device(args.device)
    set_seed(args.seed)
    data = instruction.load_instruction_data(args.data or fetch("instruction-data"))
    train_data, val_data, _ = instruction.split_instruction_data(data, seed=args.seed)
    train_data, val_data = train_data[: args.train_subset], val_data[: args.val_subset]
    tokenizer = gpt2_tokenizer()
    train_loader, val_loader = instruction.create_instruction_dataloaders(
        train_data, val_data, tokenizer, args.batch_size, seed=args.seed, device=device,
        allowed_max_length=args.allowed_max_length, mask_instruction=args.mask_instruction,
    )  # fmt: skip
    checkpoint = gpt2_checkpoint(args.gpt2)
    print(checkpoint.description, file=sys.stderr)
    model = gpt2_weights.load_gpt2(checkpoint.folder, size=checkpoint.size, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    batches, masked = len(train_loader), ", prompt tokens masked" if args.mask_instruction else ""
    print(f"fine-tuning {checkpoint.label} on {len(train_data)} examples ({batches} batches of "
          f"{args.batch_size}) for {args.epochs} epoch{'s' if args.epochs != 1 else ''} on {device}{masked}")  # fmt: skip
    state = pretraining.train_model(
        model, train_loader, val_loader, optimizer, device,
        num_epochs=args.epochs, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
        start_context=instruction.format_prompt(val_data[0]), tokenizer=tokenizer,
    )  # fmt: skip
    info = dict(base_model=checkpoint.label, split_seed=args.seed, train_examples=len(train_data))
    info |= {key: getattr(args, key) for key in RECORDED}  # the record goes into checkpoint.json
    checkpoints.save_checkpoint(args.out, model, config=instruction.config_from_model(model), state=state, extra=info)  # fmt: skip
    print(f"saved {args.out}")
    return 0


def _respond(args) -> int:
    from ch07_instruction import instruction

    _json_out(args.out)
    device, model, record = _load_finetuned(args)
    saved = record.get("split_seed", SPLIT_SEED) if isinstance(record, dict) else SPLIT_SEED
    if type(seed := saved if args.split_seed is None else args.split_seed) is not int:  # damaged
        raise ValueError(f"{args.checkpoint} records the split seed {seed!r}, not a whole number; pass --split-seed")  # fmt: skip
    data = instruction.load_instruction_data(source := args.data or fetch("instruction-data"))
    if not (test_data := instruction.split_instruction_data(data, seed=seed)[2][: args.limit]):
        raise ValueError(f"no test instructions to answer: {source} holds {len(data)} records, too few "
                         "for a test set (10% of them); pass a larger --data file. Nothing was written")  # fmt: skip
    print(f"answering {len(test_data)} test instructions (split seed {seed}) on {device}")
    answered = instruction.generate_responses(model, test_data, gpt2_tokenizer(), device,
                                              args.max_new_tokens, progress=True, **_decoding(args, device))  # fmt: skip
    instruction.save_responses(args.out, answered)
    print(f"saved {len(answered)} answers to {args.out}")
    return 0


def _evaluate(args) -> int:
    from ch07_instruction.evaluation import judge_if_available, mean_rouge_l, response_token_loss
    from ch07_instruction.instruction import load_responses

    _json_out(args.out)
    entries = load_responses(args.responses)
    if not (n := len(entries)):
        raise ValueError(f"{args.responses} holds no answers")
    scores = dict(responses=str(args.responses), records=n, rouge_l=mean_rouge_l(entries))
    print(f"{n} answers in {args.responses}")
    print(f"ROUGE-L (mean F1 against the reference answers): {scores['rouge_l']:.3f}")
    if args.checkpoint is not None:
        device, model, _ = _load_finetuned(args)
        score = response_token_loss(model, entries, gpt2_tokenizer(), device)
        scores.update(answer_loss=score["loss"], answer_perplexity=score["perplexity"])
        print(f"answer loss {score['loss']:.3f}, perplexity {score['perplexity']:.2f} "
              f"(over {score['tokens']} reference answer tokens)")  # fmt: skip
    report, status = None, "skipped (--no-judge)"  # the LLM judge, when one runs
    if not args.no_judge:
        report, status = judge_if_available(entries, model=args.judge_model, url=args.ollama_url,
                                            timeout=args.judge_timeout, progress=True)  # fmt: skip
    print(f"LLM judge {status}" if report is None else f"LLM judge ({args.judge_model}): {status}")
    if report is not None:
        for problem in report.problems:
            print(f"  no score for {problem}")
        scores.update(judge_model=args.judge_model, judge_scores=report.scores)
        scores["judge_mean"] = report.mean
    if args.out is not None:
        write_json(args.out, scores)
        print(f"saved the scores to {args.out}")
    return 0


def _chat(args) -> int:
    from ch07_instruction.chat import chat_session

    device, model, _ = _load_finetuned(args)
    chat_session(model, gpt2_tokenizer(), args.max_new_tokens, **_decoding(args, device))
    return 0


COMMANDS = {"finetune": _finetune, "respond": _respond, "evaluate": _evaluate, "chat": _chat}


def main(argv: list[str] | None = None) -> int:
    return cli.run_command(build_parser(), COMMANDS, argv, extra_errors=(JudgeUnavailableError,))


if __name__ == "__main__":
    sys.exit(main())
