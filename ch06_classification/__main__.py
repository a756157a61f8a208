"""Command line for chapter 6: fine-tune GPT-2 as a spam classifier, evaluate it, use it.

    python -m ch06_classification finetune --out runs/spam
    python -m ch06_classification finetune --trainable lora --rank 16 --alpha 16 --out runs/spam-lora
    python -m ch06_classification evaluate --model runs/spam
    python -m ch06_classification classify --model runs/spam "WIN a FREE prize now!" "See you at 6"
    cat messages.txt | python -m ch06_classification classify --model runs/spam

The code is the chapter's own (``ch06_classification/classification.py``, generated from
``ch06.ipynb``); this file only wires it to arguments. In test mode
(``GPT_COURSE_MODE=test``) it uses the small stand-in checkpoint and the chapter's
test-mode subsets, like the notebook.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SPLITS = ("train", "validation", "test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ch06_classification",
        description="Fine-tune GPT-2 to tell spam from ordinary text messages (SMS Spam Collection).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    finetune = sub.add_parser(
        "finetune",
        help="fine-tune GPT-2 on the balanced SMS spam training split and save the classifier",
        description="Fine-tune GPT-2 on the balanced SMS spam training split and save the classifier.",
    )
    finetune.add_argument(
        "--out", type=Path, required=True, help="folder to write the classifier to"
    )
    finetune.add_argument("--size", default="124M", choices=("124M", "355M", "774M", "1558M"),
                          help="GPT-2 size to start from (default: %(default)s; test mode always uses "
                               "the small stand-in)")  # fmt: skip
    finetune.add_argument("--trainable", default="last-block", choices=("last-block", "all", "lora"),
                          help="which weights to train: the last block with the final norm and the new "
                               "head, all weights, or LoRA layers (default: %(default)s)")  # fmt: skip
    finetune.add_argument("--rank", type=int, default=16, help="LoRA rank (default: %(default)s)")
    finetune.add_argument("--alpha", type=float, default=16.0,
                          help="LoRA alpha; the update is scaled by alpha/rank (default: %(default)s)")  # fmt: skip
    finetune.add_argument(
        "--epochs", type=int, help="epochs (default: the course setting, 5 in full mode)"
    )
    finetune.add_argument("--lr", type=float,
                          help="AdamW learning rate (default: the course setting for --trainable: 5e-5, "
                               "or 5e-4 for LoRA, in full mode)")  # fmt: skip
    finetune.add_argument(
        "--weight-decay", type=float, default=0.1, help="AdamW weight decay (default: %(default)s)"
    )
    finetune.add_argument(
        "--batch-size", type=int, default=8, help="messages per batch (default: %(default)s)"
    )
    finetune.add_argument(
        "--eval-freq", type=int, help="evaluate the losses every N steps (default: course setting)"
    )
    finetune.add_argument(
        "--eval-iter", type=int, help="batches per evaluation (default: course setting)"
    )
    _add_data(finetune)
    _add_device(finetune)

    evaluate = sub.add_parser(
        "evaluate",
        help="accuracy of a saved classifier on the training, validation and test splits",
        description="Accuracy of a saved classifier on the splits it was trained with (same seed).",
    )
    evaluate.add_argument("--model", type=Path, required=True, help="folder written by 'finetune'")
    evaluate.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                          help="splits to evaluate (default: all three)")  # fmt: skip
    evaluate.add_argument(
        "--batch-size", type=int, default=8, help="messages per batch (default: %(default)s)"
    )
    _add_data(evaluate, with_seed=False)
    _add_device(evaluate)

    classify = sub.add_parser(
        "classify",
        help="label messages given as arguments, or read from stdin one per line",
        description="Print 'spam' or 'not spam', a tab, and the message, for every message.",
    )
    classify.add_argument("--model", type=Path, required=True, help="folder written by 'finetune'")
    classify.add_argument(
        "texts", nargs="*", help="messages to classify; none: read stdin, one message per line"
    )
    _add_device(classify)
    return parser


def _add_data(parser: argparse.ArgumentParser, with_seed: bool = True) -> None:
    if with_seed:
        parser.add_argument("--seed", type=int, default=123,
                            help="seed for the data split, the new weights and the shuffling (default: %(default)s)")  # fmt: skip
    parser.add_argument("--limit", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        help="use only the first N messages of each split (default: all of them; the "
                             "course setting in test mode)")  # fmt: skip


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:1, mps (default: best available; CPU in test mode)"
    )


def _limits(args, settings) -> tuple[int | None, int | None, int | None]:
    if args.limit is not None:
        if min(args.limit) < 1:
            raise SystemExit(f"error: --limit needs three positive numbers, got {args.limit}")
        return tuple(args.limit)
    return (
        settings.classify_train_subset,
        settings.classify_val_subset,
        settings.classify_test_subset,
    )


def _loaders(args, seed: int, context_length: int, settings) -> dict:
    # training loaders as the chapter builds them: the training split shuffled, last batch dropped
    import tiktoken

    from shared import create_spam_dataloaders, fetch, prepare_spam_splits

    train_df, val_df, test_df = prepare_spam_splits(fetch("sms-spam"), seed=seed)
    loaders = create_spam_dataloaders(
        train_df, val_df, test_df, tiktoken.get_encoding("gpt2"),
        batch_size=args.batch_size, context_length=context_length,
        limits=_limits(args, settings), seed=seed,
    )  # fmt: skip
    return dict(zip(SPLITS, loaders, strict=True))


def _scoring_loaders(datasets: dict, batch_size: int) -> dict:
    # Every message of each split exactly once, in order: scoring needs no shuffling and no
    # drop_last, so the count printed next to an accuracy is the number of messages scored.
    from torch.utils.data import DataLoader

    return {name: DataLoader(data, batch_size=batch_size) for name, data in datasets.items()}


def _finetune(args) -> int:
    import json

    import torch

    from shared import (
        calc_accuracy_loader,
        get_device,
        get_settings,
        gpt2_checkpoint,
        gpt2_config_from_hf,
        load_gpt2,
        prepare_classifier,
        save_classifier,
        set_seed,
        train_classifier,
    )

    settings = get_settings()
    if args.batch_size < 1 or args.rank < 1:
        raise SystemExit("error: --batch-size and --rank must be positive")
    epochs = settings.classify_epochs if args.epochs is None else args.epochs
    default_lr = settings.classify_lora_lr if args.trainable == "lora" else settings.classify_lr
    lr = default_lr if args.lr is None else args.lr
    device = get_device(args.device)

    checkpoint = gpt2_checkpoint(args.size)
    print(checkpoint.description, file=sys.stderr)
    config = gpt2_config_from_hf(
        json.loads((checkpoint.folder / "config.json").read_text(encoding="utf-8"))
    )
    loaders = _loaders(args, args.seed, config["context_length"], settings)
    rows = loaders["train"].dataset  # a SpamDataset, or a Subset of one with --limit
    padding = getattr(rows, "dataset", rows)  # how every row was padded: saved for classify

    set_seed(args.seed)
    model = load_gpt2(checkpoint.folder, size=checkpoint.size, drop_rate=0.0)
    prepare_classifier(model, args.trainable, rank=args.rank, alpha=args.alpha)
    model.to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(
        f"training {trainable:,} of {total:,} parameters ({args.trainable}) on {device} for {epochs} epochs, lr {lr}"
    )
    optimizer = torch.optim.AdamW(
        (p for p in model.parameters() if p.requires_grad), lr=lr, weight_decay=args.weight_decay
    )
    start = time.perf_counter()
    history = train_classifier(
        model, loaders["train"], loaders["validation"], optimizer, device, num_epochs=epochs,
        eval_freq=args.eval_freq or settings.classify_eval_freq,
        eval_iter=args.eval_iter or settings.classify_eval_iter,
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    scoring = _scoring_loaders(
        {name: loader.dataset for name, loader in loaders.items()}, args.batch_size
    )
    accuracy = {
        name: calc_accuracy_loader(loader, model, device) for name, loader in scoring.items()
    }
    for name, value in accuracy.items():
        print(f"{name:>10} accuracy: {value:.1%} ({len(scoring[name].dataset)} messages)")
    save_classifier(
        args.out, model, config=config, max_length=padding.max_length, pad_token_id=padding.pad_token_id,
        metadata={
            "gpt2": checkpoint.label, "size": args.size, "trainable": args.trainable,
            "rank": args.rank if args.trainable == "lora" else None,
            "alpha": args.alpha if args.trainable == "lora" else None,
            "epochs": epochs, "lr": lr, "weight_decay": args.weight_decay, "batch_size": args.batch_size,
            "seed": args.seed, "limits": _limits(args, settings), "minutes": round(minutes, 2),
            "accuracy": accuracy, "train_losses": history.train_losses, "val_losses": history.val_losses,
        },
    )  # fmt: skip
    print(f"saved {args.out} ({minutes:.1f} minutes of training)")
    return 0


def _evaluate(args) -> int:
    import tiktoken

    from shared import (
        SpamDataset,
        calc_accuracy_loader,
        fetch,
        get_device,
        get_settings,
        load_classifier,
        prepare_spam_splits,
        take_first,
    )

    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be positive, got {args.batch_size}")
    device = get_device(args.device)
    model, meta = load_classifier(args.model, device=device)
    seed = meta["metadata"].get("seed", 123)
    frames = prepare_spam_splits(fetch("sms-spam"), seed=seed)
    tokenizer = tiktoken.get_encoding("gpt2")
    datasets = {}
    for name, frame, limit in zip(SPLITS, frames, _limits(args, get_settings()), strict=True):
        if name in args.splits:
            # padded exactly like the rows the classifier was trained on
            full = SpamDataset(
                frame, tokenizer, meta["max_length"], meta["pad_token_id"],
                context_length=meta["config"]["context_length"],
            )  # fmt: skip
            datasets[name] = take_first(full, limit)
    loaders = _scoring_loaders(datasets, args.batch_size)
    for name in dict.fromkeys(args.splits):  # in the order asked for, each once
        accuracy = calc_accuracy_loader(loaders[name], model, device)
        print(f"{name:>10} accuracy: {accuracy:.1%} ({len(datasets[name])} messages)")
    return 0


def _classify(args) -> int:
    import tiktoken

    from shared import classify, get_device, load_classifier

    # arguments are classified as given (an empty one is an error); on stdin, blank lines are skipped
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise SystemExit(
            "error: no messages given; pass them as arguments or on stdin, one per line"
        )
    device = get_device(args.device)
    model, meta = load_classifier(args.model, device=device)
    tokenizer = tiktoken.get_encoding("gpt2")
    for text in texts:
        label = classify(
            text,
            model,
            tokenizer,
            device,
            max_length=meta["max_length"],
            pad_token_id=meta["pad_token_id"],
        )
        print(f"{label}\t{text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"finetune": _finetune, "evaluate": _evaluate, "classify": _classify}
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
