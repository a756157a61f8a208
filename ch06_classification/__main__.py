"""Command line for chapter 6: fine-tune GPT-2 as a spam classifier, evaluate it, use it.

    python -m ch06_classification finetune --out runs/spam
    python -m ch06_classification finetune --trainable lora --rank 16 --alpha 16 --out runs/spam-lora
    python -m ch06_classification evaluate --model runs/spam
    python -m ch06_classification classify --model runs/spam "WIN a FREE prize now!" "See you at 6"
    cat messages.txt | python -m ch06_classification classify --model runs/spam

Wires the chapter's code (``classification.py`` and ``lora.py``, generated from ``ch06.ipynb``)
to arguments. Defaults that differ between course modes come from ``shared.settings``: test
mode uses the small stand-in checkpoint and the chapter's test-mode subsets, like the notebook.
"""

import sys
import time
from pathlib import Path

import shared.cli as cli
from shared.io import check_output_folder, read_json
from shared.resources import fetch, gpt2_tokenizer
from shared.settings import get_settings
from shared.weights import gpt2_checkpoint

SPLITS = ("train", "validation", "test")
TRAINABLE = ("last-block", "all", "lora")  # lora.TRAINABLE_PARTS (importing lora loads torch)


def build_parser():
    s = get_settings()
    limits = (s.classify_train_subset, s.classify_val_subset, s.classify_test_subset)
    parser, sub = cli.make_parser(
        "python -m ch06_classification",
        f"Fine-tune GPT-2 to tell spam from ordinary text messages (course mode: {s.mode}).",
    )
    # fmt: off
    tune = cli.add_subcommand(sub, "finetune", "fine-tune GPT-2 on the balanced SMS spam training split and save the classifier")
    tune.add_argument("--out", type=Path, required=True, help="folder to write the classifier to")
    cli.add_gpt2_option(tune, default="124M")
    tune.add_argument("--trainable", default="last-block", choices=TRAINABLE, help="which weights to train: the last block with the final norm and the new head, all weights, or LoRA layers")
    tune.add_argument("--rank", type=cli.positive_int, default=16, help="LoRA rank")
    tune.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha; the update is scaled by alpha/rank")
    tune.add_argument("--epochs", type=int, default=s.classify_epochs, help="passes over the training split")
    tune.add_argument("--lr", type=float, help=f"AdamW learning rate; unset: {s.classify_lr}, or {s.classify_lora_lr} for LoRA")
    tune.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    tune.add_argument("--eval-freq", type=cli.positive_int, default=s.classify_eval_freq, help="evaluate the losses every N steps")
    tune.add_argument("--eval-iter", type=cli.positive_int, default=s.classify_eval_iter, help="batches per evaluation")
    cli.add_seed_option(tune, help="seed for the data split, the new weights and the shuffling")
    evaluate = cli.add_subcommand(sub, "evaluate", "accuracy of a saved classifier on the splits it was trained with (same seed)")
    classify = cli.add_subcommand(sub, "classify", "print 'spam' or 'not spam', a tab and the message, for each message given or read from stdin")
    for command in (evaluate, classify):
        command.add_argument("--model", type=Path, required=True, help="folder written by 'finetune'")
    evaluate.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to evaluate (default: all three)")
    classify.add_argument("texts", nargs="*", help="messages to classify; none: read stdin, one message per line")
    for command in (tune, evaluate):
        command.add_argument("--batch-size", type=cli.positive_int, default=8, help="messages per batch")
        command.add_argument("--limit", type=cli.positive_int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=limits,
                             help="use only the first N messages of each split (default: all; in test mode the course's subsets)")
    # fmt: on
    for command in (tune, evaluate, classify):
        cli.add_device_option(command)
    return parser


def _print_accuracies(model, datasets: dict, names, batch_size: int, device) -> dict:
    # each message once, in order (no shuffling, no drop_last): the count printed is the count scored
    from torch.utils.data import DataLoader

    from ch06_classification import classification

    accuracy = {}
    for name in names:
        loader = DataLoader(datasets[name], batch_size=batch_size)
        accuracy[name] = classification.calc_accuracy_loader(loader, model, device)
        print(f"{name:>10} accuracy: {accuracy[name]:.1%} ({len(datasets[name])} messages)")
    return accuracy


def _finetune(args) -> int:
    import torch

    from ch05_pretraining.gpt2_weights import gpt2_config_from_hf, load_gpt2
    from ch06_classification import classification, lora
    from shared.runtime import get_device, set_seed

    s = get_settings()
    default_lr = s.classify_lora_lr if args.trainable == "lora" else s.classify_lr
    lr = default_lr if args.lr is None else args.lr
    device = get_device(args.device)
    # the small inputs first: a bad --out or bad data is refused before GPT-2 is downloaded
    check_output_folder(args.out)
    frames = classification.prepare_spam_splits(fetch("sms-spam"), seed=args.seed)
    tokenizer = gpt2_tokenizer()
    checkpoint = gpt2_checkpoint(args.gpt2)
    print(checkpoint.description, file=sys.stderr)
    config = gpt2_config_from_hf(read_json(checkpoint.folder / "config.json", "GPT-2 config"))
    train_loader, val_loader, test_loader = classification.create_spam_dataloaders(
        *frames, tokenizer, batch_size=args.batch_size,
        context_length=config["context_length"], limits=args.limit, seed=args.seed,
    )  # fmt: skip

    set_seed(args.seed)
    model = load_gpt2(checkpoint.folder, size=checkpoint.size, drop_rate=0.0)
    lora.prepare_classifier(model, args.trainable, rank=args.rank, alpha=args.alpha)
    model.to(device)
    total = sum(p.numel() for p in model.parameters())
    print(f"training {classification.count_trainable_parameters(model):,} of {total:,} parameters "
          f"({args.trainable}) on {device} for {args.epochs} epochs, lr {lr}")  # fmt: skip
    optimizer = torch.optim.AdamW(
        (p for p in model.parameters() if p.requires_grad), lr=lr, weight_decay=args.weight_decay
    )
    start = time.perf_counter()
    history = classification.train_classifier(
        model, train_loader, val_loader, optimizer, device,
        num_epochs=args.epochs, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    loaders = (train_loader, val_loader, test_loader)
    datasets = {name: loader.dataset for name, loader in zip(SPLITS, loaders, strict=True)}
    accuracy = _print_accuracies(model, datasets, SPLITS, args.batch_size, device)

    with_lora = args.trainable == "lora"
    metadata = dict(
        gpt2=checkpoint.label, size=args.gpt2, trainable=args.trainable,
        rank=args.rank if with_lora else None, alpha=args.alpha if with_lora else None,
        epochs=args.epochs, lr=lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
        seed=args.seed, limits=args.limit, minutes=round(minutes, 2), accuracy=accuracy,
        train_losses=history.train_losses, val_losses=history.val_losses,
    )  # fmt: skip
    padding = getattr(datasets["train"], "dataset", datasets["train"])  # under a --limit Subset
    lora.save_classifier(
        args.out, model, config=config, max_length=padding.max_length,
        pad_token_id=padding.pad_token_id, metadata=metadata,
    )  # fmt: skip
    print(f"saved {args.out} ({minutes:.1f} minutes of training)")
    return 0


def _evaluate(args) -> int:
    from ch06_classification import classification, lora
    from shared.runtime import get_device

    device = get_device(args.device)
    model, meta = lora.load_classifier(args.model, device=device)
    seed = meta["metadata"].get("seed", 123)  # the seed of the split it was trained on
    frames = classification.prepare_spam_splits(fetch("sms-spam"), seed=seed)
    tokenizer = gpt2_tokenizer()
    padding = dict(max_length=meta["max_length"], pad_token_id=meta["pad_token_id"])  # as trained
    context_length = meta["config"]["context_length"]
    datasets = {}
    for name, frame, limit in zip(SPLITS, frames, args.limit, strict=True):
        if name in args.splits:
            rows = classification.SpamDataset(
                frame, tokenizer, **padding, context_length=context_length
            )
            datasets[name] = classification.take_first(rows, limit)
    names = dict.fromkeys(args.splits)  # in the order asked for, each once
    _print_accuracies(model, datasets, names, args.batch_size, device)
    return 0


def _classify(args) -> int:
    from ch06_classification import classification, lora
    from shared.runtime import get_device

    # arguments are classified as given (an empty one is an error); blank stdin lines are skipped
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ValueError("no messages given; pass them as arguments or on stdin, one per line")
    device = get_device(args.device)
    model, meta = lora.load_classifier(args.model, device=device)
    tokenizer = gpt2_tokenizer()
    padding = dict(max_length=meta["max_length"], pad_token_id=meta["pad_token_id"])  # as trained
    for text in texts:
        label = classification.classify(text, model, tokenizer, device, **padding)
        print(f"{label}\t{text}")
    return 0


COMMANDS = {"finetune": _finetune, "evaluate": _evaluate, "classify": _classify}


def main(argv: list[str] | None = None) -> int:
    return cli.run_command(build_parser(), COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
