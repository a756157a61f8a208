"""Command line for chapter 5: pretrain a GPT, and generate text.

    python -m ch05_pretraining train --text story.txt --out checkpoints/story
    python -m ch05_pretraining generate --checkpoint checkpoints/story --prompt "Every effort"
    python -m ch05_pretraining generate --gpt2 124M --prompt "Every effort" --temperature 0.8 --top-k 50

On a corpus (a folder of .txt files), in one process or several (torchrun):

    python -m ch05_pretraining prepare-corpus books/ --out shards/
    python -m ch05_pretraining pretrain --data shards/ --out runs/books
    torchrun --standalone --nproc_per_node=8 -m ch05_pretraining pretrain --data shards/ --out runs/books

The code is the chapter's own (``pretraining.py`` from ``ch05.ipynb``, ``speed.py`` from
``speed.ipynb``, ``corpus.py`` from ``corpus.ipynb``); this file only wires it to arguments.
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
    _add_speed_options(train)
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
    gen.add_argument(
        "--no-cache", action="store_true", help="recompute the whole sequence for every token"
    )
    _add_common(gen)

    prepare = sub.add_parser(
        "prepare-corpus",
        help="tokenize a folder of .txt files into uint16 token shards for 'pretrain'",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prepare.add_argument(
        "input", type=Path, help="folder of UTF-8 .txt files (searched recursively)"
    )
    prepare.add_argument(
        "--out", type=Path, required=True, help="folder for the shards and manifest"
    )
    prepare.add_argument(
        "--shard-tokens", type=int, default=10_000_000, help="tokens per training shard (about)"
    )
    prepare.add_argument(
        "--val-fraction", type=float, default=0.05, help="share of every document held out"
    )
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")

    from ch05_pretraining.corpus import PretrainConfig

    pretrain = sub.add_parser(
        "pretrain",
        help="pretrain on shards from 'prepare-corpus'; runs under torchrun too",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pretrain.add_argument("--data", type=Path, required=True, help="folder from prepare-corpus")
    pretrain.add_argument("--out", type=Path, required=True, help="run folder: log and checkpoint")
    pretrain.add_argument("--resume", action="store_true", help="continue the run in --out")
    pretrain.add_argument(
        "--stop-at-step", type=int, help="stop (with a checkpoint) after this many steps"
    )
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bar")
    pretrain.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    PretrainConfig.add_arguments(pretrain)
    return parser


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    # the options of chapter 5's speed notebook (make_training_setup); GPU-only ones are
    # ignored on other devices
    on_off = argparse.BooleanOptionalAction
    parser.add_argument("--sdpa", action=on_off, default=False, help="fused attention kernel")
    parser.add_argument("--compile", action=on_off, default=False, help="torch.compile the model")
    parser.add_argument("--bf16", action=on_off, default=True, help="bf16 autocast (CUDA)")
    parser.add_argument("--tf32", action=on_off, default=True, help="TF32 matmuls (CUDA)")
    parser.add_argument(
        "--fused-adamw", action=on_off, default=True, help="fused AdamW (CUDA or CPU)"
    )
    parser.add_argument(
        "--decay-2d-only", action=on_off, default=False, help="no weight decay on biases, norms"
    )
    parser.add_argument(
        "--tie-weights", action=on_off, default=False, help="tie head and embedding"
    )
    parser.add_argument("--pad-vocab", action=on_off, default=False, help="vocabulary to x64")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--seed", type=int, default=123)


def _train(args) -> int:
    import tiktoken
    from tqdm.auto import tqdm

    from shared import (
        create_dataloader,
        get_device,
        gpt2_config,
        load_checkpoint,
        make_training_setup,
        save_checkpoint,
        set_seed,
        train_model,
        use_sdpa_attention,
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

    model, optimizer, autocast_dtype = make_training_setup(
        cfg, device, lr=args.lr, weight_decay=args.weight_decay,
        decay_2d_only=args.decay_2d_only, tie_weights=args.tie_weights,
        pad_vocab=args.pad_vocab, tf32=args.tf32, bf16=args.bf16,
        fused_adamw=args.fused_adamw, compile_model=args.compile,
    )  # fmt: skip
    raw_model = getattr(model, "_orig_mod", model)  # what torch.compile wrapped
    use_sdpa_attention(raw_model, args.sdpa)
    saved_cfg = {**cfg, "vocab_size": raw_model.out_head.out_features}  # padded, if so
    state = None
    if args.resume:
        if not (args.out / "checkpoint.json").is_file():
            raise SystemExit(f"error: --resume given but {args.out} holds no checkpoint")
        loaded = load_checkpoint(args.out, raw_model, optimizer, train_loader=train_loader)
        if loaded["config"] != saved_cfg:
            raise SystemExit(
                f"error: {args.out} was trained with config {loaded['config']}, not {saved_cfg}"
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
        f"training {sum(p.numel() for p in raw_model.parameters()):,} parameters on {device} for {args.epochs - done} epochs"
    )
    for _ in tqdm(range(done, args.epochs), desc="epochs", initial=0):
        state = train_model(
            model, train_loader, val_loader, optimizer, device,
            num_epochs=1, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
            start_context=args.prompt, tokenizer=tokenizer, state=state,
            autocast_dtype=autocast_dtype,
        )  # fmt: skip
        save_checkpoint(
            args.out, raw_model, optimizer, config=saved_cfg, state=state,
            train_loader=train_loader, extra={"real_vocab_size": cfg["vocab_size"]},
        )  # fmt: skip
    print(f"saved {args.out}")
    return 0


def _generate(args) -> int:
    import tiktoken
    import torch

    from shared import (
        generate,
        generate_cached,
        get_device,
        gpt2_checkpoint,
        hide_padded_vocab,
        load_checkpoint,
        load_gpt2,
        text_to_token_ids,
        token_ids_to_text,
    )

    device = get_device(args.device)
    if args.checkpoint is not None:
        loaded = load_checkpoint(args.checkpoint, restore_rng=False)
        model = loaded["model"].to(device).eval()
        real_vocab = (loaded["extra"] or {}).get("real_vocab_size")
        if real_vocab and real_vocab < model.out_head.out_features:
            hide_padded_vocab(model, real_vocab)  # trained with a padded vocabulary
    else:
        checkpoint = gpt2_checkpoint(args.gpt2)
        print(checkpoint.description, file=sys.stderr)
        model = load_gpt2(checkpoint.folder, size=checkpoint.size, device=device)
    tokenizer = tiktoken.get_encoding("gpt2")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    idx = text_to_token_ids(args.prompt, tokenizer).to(device)
    settings = dict(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        eos_id=tokenizer.eot_token, generator=generator,
    )  # fmt: skip
    try:
        if args.no_cache:
            out = generate(
                model, idx, args.max_new_tokens, model.pos_emb.weight.shape[0], **settings
            )
        else:
            out = generate_cached(model, idx, args.max_new_tokens, **settings)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(token_ids_to_text(out, tokenizer))
    return 0


def _prepare_corpus(args) -> int:
    from ch05_pretraining.corpus import prepare_corpus

    manifest = prepare_corpus(
        args.input, args.out, shard_tokens=args.shard_tokens, val_fraction=args.val_fraction,
        progress=not args.no_progress,
    )  # fmt: skip
    train = sum(r["tokens"] for r in manifest["shards"])
    print(
        f"{len(manifest['inputs'])} documents -> {len(manifest['shards'])} training shards "
        f"({train:,} tokens) and val.bin ({manifest['val']['tokens']:,} tokens) in {args.out}"
    )
    return 0


def _pretrain(args) -> int:
    from ch05_pretraining.corpus import PretrainConfig, pretrain
    from shared import get_device

    cfg = PretrainConfig.from_arguments(args)
    pretrain(
        cfg, args.data, args.out, device=get_device(args.device), resume=args.resume,
        stop_at_step=args.stop_at_step, progress=not args.no_progress,
    )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    from ch05_pretraining.corpus import ShardError

    args = build_parser().parse_args(argv)
    commands = {
        "train": _train,
        "generate": _generate,
        "prepare-corpus": _prepare_corpus,
        "pretrain": _pretrain,
    }
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, ShardError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
