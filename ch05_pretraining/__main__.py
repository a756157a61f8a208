"""Command line for chapter 5: pretrain a GPT on a text file, and generate text.

    python -m ch05_pretraining train --text story.txt --out checkpoints/story
    python -m ch05_pretraining generate --checkpoint checkpoints/story --prompt "Every effort"
    python -m ch05_pretraining generate --gpt2 124M --prompt "Every effort" --temperature 0.8 --top-k 50

The code is the chapter's own (``ch05_pretraining/pretraining.py``, generated from
``ch05.ipynb``); this file only wires it to arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ch05_pretraining",
        description="Pretrain the course's GPT on a text file, or generate text from a checkpoint or GPT-2.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train on a UTF-8 text file and save a checkpoint after every epoch",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--text", type=Path, required=True, help="UTF-8 text file to train on")
    train.add_argument(
        "--out", type=Path, required=True, help="checkpoint folder to write (and to resume from)"
    )
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument(
        "--size", default="124M", help="GPT-2 preset for the architecture: 124M, 355M, 774M, 1558M"
    )
    train.add_argument("--context-length", type=int, default=256, help="training window (tokens)")
    train.add_argument("--emb-dim", type=int, help="override the preset's embedding size")
    train.add_argument("--n-layers", type=int, help="override the preset's number of blocks")
    train.add_argument("--n-heads", type=int, help="override the preset's number of heads")
    train.add_argument("--drop-rate", type=float, default=0.1)
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=2)
    train.add_argument("--lr", type=float, default=4e-4)
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument(
        "--val-ratio", type=float, default=0.1, help="share of the text (at the end) held out"
    )
    train.add_argument("--eval-freq", type=int, default=5, help="evaluate every N optimizer steps")
    train.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    train.add_argument(
        "--prompt", default="Every effort moves you", help="sample printed after each epoch"
    )
    _add_common(train)

    gen = sub.add_parser(
        "generate",
        help="continue a prompt with a trained checkpoint or a GPT-2 size",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="folder written by 'train'")
    source.add_argument(
        "--gpt2", metavar="SIZE", help="OpenAI GPT-2 weights: 124M, 355M, 774M or 1558M"
    )
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    _add_common(gen)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--seed", type=int, default=123)


def _train(args) -> int:
    import tiktoken
    import torch
    from tqdm.auto import tqdm

    from shared import (
        GPTModel,
        create_dataloader,
        get_device,
        gpt2_config,
        load_checkpoint,
        save_checkpoint,
        set_seed,
        train_model,
    )

    if not args.text.is_file():
        raise SystemExit(f"error: --text {args.text} is not a file")
    if not 0 < args.val_ratio < 1:
        raise SystemExit(f"error: --val-ratio must be between 0 and 1, got {args.val_ratio}")
    device = get_device(args.device)
    set_seed(args.seed)
    text = args.text.read_text(encoding="utf-8")
    split = int((1 - args.val_ratio) * len(text))
    tokenizer = tiktoken.get_encoding("gpt2")
    overrides = {
        "context_length": args.context_length,
        "drop_rate": args.drop_rate,
        **{
            k: v
            for k, v in (
                ("emb_dim", args.emb_dim),
                ("n_layers", args.n_layers),
                ("n_heads", args.n_heads),
            )
            if v
        },
    }
    cfg = gpt2_config(args.size, **overrides)
    loader_args = dict(
        batch_size=args.batch_size, max_length=cfg["context_length"], stride=cfg["context_length"]
    )
    try:
        train_loader = create_dataloader(
            text[:split], shuffle=True, drop_last=True, seed=args.seed, **loader_args
        )
        val_loader = create_dataloader(text[split:], shuffle=False, drop_last=False, **loader_args)
    except ValueError as err:
        raise SystemExit(
            f"error: {err} (train split {split} characters, validation {len(text) - split})"
        ) from None

    model = GPTModel(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    state = None
    if args.resume:
        if not (args.out / "checkpoint.json").is_file():
            raise SystemExit(f"error: --resume given but {args.out} holds no checkpoint")
        loaded = load_checkpoint(args.out, model, optimizer, train_loader=train_loader)
        if loaded["config"] != cfg:
            raise SystemExit(
                f"error: {args.out} was trained with config {loaded['config']}, not {cfg}"
            )
        state = loaded["state"]
        print(f"resuming {args.out} after epoch {state.epoch} (step {state.global_step})")
    done = state.epoch if state else 0
    if done >= args.epochs:
        print(
            f"{args.out} has already trained for {done} epochs (asked for {args.epochs}); nothing to do"
        )
        return 0
    print(
        f"training {sum(p.numel() for p in model.parameters()):,} parameters on {device} for {args.epochs - done} epochs"
    )
    for _ in tqdm(range(done, args.epochs), desc="epochs", initial=0):
        state = train_model(
            model, train_loader, val_loader, optimizer, device,
            num_epochs=1, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
            start_context=args.prompt, tokenizer=tokenizer, state=state,
        )  # fmt: skip
        save_checkpoint(
            args.out, model, optimizer, config=cfg, state=state, train_loader=train_loader
        )
    print(f"saved {args.out}")
    return 0


def _generate(args) -> int:
    import tiktoken
    import torch

    from shared import (
        generate,
        get_device,
        gpt2_checkpoint,
        load_checkpoint,
        load_gpt2,
        text_to_token_ids,
        token_ids_to_text,
    )

    device = get_device(args.device)
    if args.checkpoint is not None:
        model = load_checkpoint(args.checkpoint, restore_rng=False)["model"].to(device).eval()
    else:
        checkpoint = gpt2_checkpoint(args.gpt2)
        print(checkpoint.description, file=sys.stderr)
        model = load_gpt2(checkpoint.folder, size=checkpoint.size, device=device)
    tokenizer = tiktoken.get_encoding("gpt2")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    idx = text_to_token_ids(args.prompt, tokenizer).to(device)
    try:
        out = generate(
            model, idx, args.max_new_tokens, model.pos_emb.weight.shape[0],
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            eos_id=tokenizer.eot_token, generator=generator,
        )  # fmt: skip
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(token_ids_to_text(out, tokenizer))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _train(args) if args.command == "train" else _generate(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
