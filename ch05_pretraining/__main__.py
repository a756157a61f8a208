"""Command line for chapter 5: pretrain a GPT, generate text, pretrain on a corpus.

    python -m ch05_pretraining train --text story.txt --out checkpoints/story
    python -m ch05_pretraining generate --gpt2 124M --prompt "Every effort" --top-k 50
    python -m ch05_pretraining prepare-corpus books/ --out shards/
    torchrun --standalone --nproc_per_node=8 -m ch05_pretraining pretrain --data shards/ --out runs/books

Wires ``ch05.ipynb``, ``speed.ipynb`` and ``corpus.ipynb`` to the options of ``shared.cli``.
"""

import sys
from pathlib import Path

import shared.cli as cli

SIZES = "124M, 355M, 774M or 1558M"  # the chapter-4 presets


def build_parser():
    from ch05_pretraining.corpus import PretrainConfig

    parser, sub = cli.make_parser(
        "python -m ch05_pretraining",
        "Pretrain the course's GPT on a text file, or generate text from a checkpoint or GPT-2.",
    )
    # fmt: off
    train = cli.add_subcommand(sub, "train", "train on a UTF-8 text file and save a checkpoint after every epoch")
    train.add_argument("--text", type=Path, required=True, help="UTF-8 text file to train on")
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder to write (and to resume from)")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument("--size", default="124M", help=f"GPT-2 preset for the architecture: {SIZES}")
    train.add_argument("--context-length", type=cli.positive_int, default=256, help="training window (tokens)")
    train.add_argument("--emb-dim", type=cli.positive_int, help="override the preset's embedding size")
    train.add_argument("--n-layers", type=cli.positive_int, help="override the preset's number of blocks")
    train.add_argument("--n-heads", type=cli.positive_int, help="override the preset's number of heads")
    train.add_argument("--drop-rate", type=float, default=0.1, help="dropout rate")
    train.add_argument("--epochs", type=int, default=10, help="passes over the training text")
    train.add_argument("--batch-size", type=cli.positive_int, default=2, help="windows per batch")
    train.add_argument("--lr", type=float, help="AdamW learning rate (default 4e-4; with --resume: the saved one)")
    train.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.1; with --resume: the saved one)")
    train.add_argument("--val-ratio", type=cli.fraction, default=0.1, help="share of the text (at the end) held out")
    train.add_argument("--eval-freq", type=cli.positive_int, default=5, help="evaluate every N optimizer steps")
    train.add_argument("--eval-iter", type=cli.positive_int, default=5, help="batches per evaluation")
    train.add_argument("--prompt", type=cli.non_empty_text, default="Every effort moves you", help="sample printed after each epoch")
    cli.add_speed_options(train)
    gen = cli.add_subcommand(sub, "generate", "continue a prompt with a trained checkpoint or a GPT-2 size")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="folder written by 'train'")
    source.add_argument("--gpt2", metavar="SIZE|FOLDER", help=f"OpenAI GPT-2 weights: {SIZES}, or a folder with model.safetensors and config.json")
    gen.add_argument("--prompt", type=cli.non_empty_text, required=True, help="text to continue")
    cli.add_decoding_options(gen, max_new_tokens=50)
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole sequence for every token")
    for command in (train, gen):
        cli.add_device_option(command)
        cli.add_seed_option(command)
    prepare = cli.add_subcommand(sub, "prepare-corpus", "tokenize a folder of .txt files into uint16 token shards for 'pretrain'")
    prepare.add_argument("input", type=Path, help="folder of UTF-8 .txt files (searched recursively)")
    prepare.add_argument("--out", type=Path, required=True, help="folder for the shards and manifest")
    prepare.add_argument("--shard-tokens", type=cli.positive_int, default=10_000_000, help="tokens per training shard (about)")
    prepare.add_argument("--val-fraction", type=cli.fraction, default=0.05, help="share of every document held out")
    pretrain = cli.add_subcommand(sub, "pretrain", "pretrain on shards from 'prepare-corpus'; runs under torchrun too")
    pretrain.add_argument("--data", type=Path, required=True, help="folder from prepare-corpus")
    pretrain.add_argument("--out", type=Path, required=True, help="run folder: log and checkpoint")
    pretrain.add_argument("--resume", action="store_true", help="continue the run in --out")
    pretrain.add_argument("--stop-at-step", type=int, help="stop (with a checkpoint) after this many steps")
    cli.add_device_option(pretrain)
    PretrainConfig.add_arguments(pretrain)
    for command in (prepare, pretrain):
        command.add_argument("--no-progress", action="store_true", help="no progress bar")
    # fmt: on
    return parser


def _text_loaders(args, context_length: int):
    from ch02_data.text_data import create_dataloader

    text = cli.read_text_file(args.text)
    split = int((1 - args.val_ratio) * len(text))
    kwargs = dict(batch_size=args.batch_size, max_length=context_length, stride=context_length)
    return (
        create_dataloader(text[:split], shuffle=True, drop_last=True, seed=args.seed, **kwargs),
        create_dataloader(text[split:], shuffle=False, drop_last=False, **kwargs),
    )


def _train(args) -> int:
    from ch04_gpt_model.gpt_model import gpt2_config
    from ch05_pretraining import checkpoints, pretraining, speed, training_setup
    from shared.io import resume_folder
    from shared.resources import gpt2_tokenizer
    from shared.runtime import get_device, set_seed

    resume_folder(args.out, args.resume)  # refuses a folder we may not write, or a mismatch
    device, tokenizer = get_device(args.device), gpt2_tokenizer()  # fmt: skip (fails fast offline)
    set_seed(args.seed)
    sizes = {k: getattr(args, k) for k in ("emb_dim", "n_layers", "n_heads") if getattr(args, k)}
    cfg = gpt2_config(args.size, context_length=args.context_length, drop_rate=args.drop_rate, **sizes)  # fmt: skip
    train_loader, val_loader = _text_loaders(args, cfg["context_length"])
    model, optimizer, autocast_dtype = training_setup.make_training_setup(
        cfg, device, lr=4e-4 if args.lr is None else args.lr, weight_decay=0.1 if args.weight_decay is None else args.weight_decay,
        **cli.speed_settings(args))  # fmt: skip
    raw_model = getattr(model, "_orig_mod", model)  # what torch.compile wrapped
    speed.use_sdpa_attention(raw_model, args.sdpa)
    saved_cfg = {**cfg, "vocab_size": raw_model.out_head.out_features}  # padded, if so
    state = None
    if args.resume:
        loaded = checkpoints.load_checkpoint(args.out, raw_model, optimizer, train_loader=train_loader)  # fmt: skip
        if loaded["config"] != saved_cfg:
            raise ValueError(f"{args.out} was trained with config {loaded['config']}, not {saved_cfg}")  # fmt: skip
        cli.override_optimizer(optimizer, lr=args.lr, weight_decay=args.weight_decay)
        state = loaded["state"]
        print(f"resuming {args.out} after epoch {state.epoch} (step {state.global_step})")
    done = state.epoch if state else 0
    if done >= args.epochs:
        print(f"{args.out} has trained for {done} epochs already (asked for {args.epochs})")
        return 0
    print(f"training {sum(p.numel() for p in raw_model.parameters()):,} parameters on {device} for {args.epochs - done} epochs")  # fmt: skip
    for _ in range(done, args.epochs):
        state = pretraining.train_model(
            model, train_loader, val_loader, optimizer, device,
            num_epochs=1, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
            start_context=args.prompt, tokenizer=tokenizer, state=state,
            autocast_dtype=autocast_dtype,
        )  # fmt: skip
        checkpoints.save_checkpoint(
            args.out, raw_model, optimizer, config=saved_cfg, state=state,
            train_loader=train_loader, extra={"real_vocab_size": cfg["vocab_size"]},
        )  # fmt: skip
    print(f"saved {args.out}")
    return 0


def _generate(args) -> int:
    import torch

    from ch05_pretraining import checkpoints, pretraining, speed, training_setup
    from ch05_pretraining.gpt2_weights import load_gpt2
    from shared.resources import gpt2_tokenizer
    from shared.runtime import get_device
    from shared.weights import gpt2_checkpoint

    device = get_device(args.device)
    if args.checkpoint is not None:
        loaded = checkpoints.load_checkpoint(args.checkpoint, restore_rng=False)
        model = loaded["model"].to(device).eval()
        real_vocab = (loaded["extra"] or {}).get("real_vocab_size")
        if real_vocab and real_vocab < model.out_head.out_features:
            training_setup.hide_padded_vocab(model, real_vocab)  # trained with a padded vocabulary
    else:
        checkpoint = gpt2_checkpoint(args.gpt2)
        print(checkpoint.description, file=sys.stderr)
        model = load_gpt2(checkpoint.folder, size=checkpoint.size, device=device)
    idx = pretraining.text_to_token_ids(args.prompt, tokenizer := gpt2_tokenizer()).to(device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    decode = pretraining.generate if args.no_cache else speed.generate_cached
    out = decode(
        model, idx, args.max_new_tokens, model.pos_emb.weight.shape[0],
        eos_id=tokenizer.eot_token, generator=generator, **cli.decoding_settings(args),
    )  # fmt: skip
    print(pretraining.token_ids_to_text(out, tokenizer))
    return 0


def _prepare_corpus(args) -> int:
    from ch05_pretraining.corpus import prepare_corpus

    manifest = prepare_corpus(
        args.input, args.out, shard_tokens=args.shard_tokens, val_fraction=args.val_fraction,
        progress=not args.no_progress,
    )  # fmt: skip
    shards, train = manifest["shards"], sum(r["tokens"] for r in manifest["shards"])
    print(f"{len(manifest['inputs'])} documents -> {len(shards)} training shards ({train:,} tokens)"
          f" and val.bin ({manifest['val']['tokens']:,} tokens) in {args.out}")  # fmt: skip
    return 0


def _pretrain(args) -> int:
    from ch05_pretraining.corpus import PretrainConfig
    from ch05_pretraining.pretrain_loop import pretrain
    from shared.runtime import get_device

    pretrain(
        PretrainConfig.from_arguments(args), args.data, args.out, device=get_device(args.device),
        resume=args.resume, stop_at_step=args.stop_at_step, progress=not args.no_progress,
    )  # fmt: skip
    return 0


COMMANDS = {"train": _train, "generate": _generate, "prepare-corpus": _prepare_corpus, "pretrain": _pretrain}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from ch05_pretraining.corpus import ShardError

    return cli.run_command(build_parser(), COMMANDS, argv, extra_errors=(ShardError,))


if __name__ == "__main__":
    sys.exit(main())
