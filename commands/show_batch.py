"""vtp show-batch SHARD_DIR --out DIR: one training batch as the model sees it.

Writes DIR/batch.png (each sample's frames after crop/resize/flip, with the masked tubes dimmed
out, and its caption with the MLM-selected word pieces in [brackets]) and DIR/mask_stats.json
(per sample: the video and text mask ratios and whether the video mask is a tube).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shard_dir", type=Path, help="`vtp shard` output (mds/ or wds/)")
    parser.add_argument("--recipe", type=Path,
                        help="take the data section from this recipe (default: DataConfig's)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG and json")
    parser.add_argument("--format", choices=("mds", "wds"),
                        help="shard format (default: recipe's or mds)")
    parser.add_argument("--device", choices=("cpu", "gpu"), help="decode device (default cpu)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="samples in the batch (default: %(default)s)")
    parser.add_argument("--seed", type=int, help="data seed (default: the recipe's, else 0)")


def data_config(args: argparse.Namespace):
    """The DataConfig for this batch: the recipe's data section, or the defaults."""
    from dataclasses import replace

    from pipeline import DataConfig

    if args.recipe:
        from recipes.config import load_recipe

        cfg = load_recipe(args.recipe, [f"data.path={args.shard_dir}"]).data
    else:
        cfg = DataConfig(path=str(args.shard_dir))
    changes = {"batch_size": args.batch_size, "device": args.device or "cpu", "num_workers": 0,
               "format": args.format or cfg.format}
    if args.seed is not None:
        changes["seed"] = args.seed
    return replace(cfg, **changes)


def mask_stats(batch: dict, grid: tuple[int, int, int]) -> list[dict]:
    """Per-sample video/text mask ratios and the tube property."""
    mask = batch["video_mask"].cpu()
    slices = mask.view(len(batch["keys"]), grid[0], grid[1] * grid[2])
    selected = batch["mlm_labels"] != -100
    rows = []
    for i, key in enumerate(batch["keys"]):
        words = int(batch["text_mask"][i].sum()) - 2  # [CLS] and [SEP]
        rows.append({"key": key, "video_mask_ratio": round(float(mask[i].float().mean()), 4),
                     "text_mask_ratio": round(int(selected[i].sum()) / max(words, 1), 4),
                     "is_tube": bool((slices[i] == slices[i, :1]).all())})
    return rows


def caption_with_masks(tokenizer, ids, labels) -> str:
    """The caption's word pieces, MLM-selected ones in [brackets]."""
    special, text = set(tokenizer.all_special_ids), ""
    for token, label in zip(ids.tolist(), labels.tolist(), strict=True):
        if token in special:
            continue
        piece = tokenizer.convert_ids_to_tokens(token)
        glue = "" if piece.startswith("##") or not text else " "
        piece = piece.removeprefix("##")
        text += glue + (f"[{piece}]" if label != -100 else piece)
    return text


def frames_as_seen(batch: dict, cfg):
    """(B, T, H, W, 3) uint8: denormalised frames with masked patches dimmed."""
    import numpy as np

    from pipeline.config import MEAN_255, STD_255

    video = batch["video"].cpu().numpy().transpose(0, 2, 3, 4, 1)
    pixels = np.clip(video * np.array(STD_255) + np.array(MEAN_255), 0, 255)
    tt, ph, pw = cfg.tubelet
    steps, rows, cols = cfg.mask_grid
    mask = batch["video_mask"].cpu().numpy().reshape(-1, steps, rows, cols)
    cover = mask.repeat(tt, 1).repeat(ph, 2).repeat(pw, 3)[..., None]
    return np.where(cover, 0.3 * pixels + 30, pixels).astype(np.uint8)  # masked: dimmed


def draw(batch: dict, cfg, captions: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = frames_as_seen(batch, cfg)
    count, steps = frames.shape[:2]
    fig, axes = plt.subplots(count, steps, figsize=(steps * 1.1, count * 1.5), squeeze=False)
    for i in range(count):
        for t in range(steps):
            axes[i, t].imshow(frames[i, t])
            axes[i, t].axis("off")
        axes[i, 0].set_title(f"{batch['keys'][i]}: {captions[i]}", loc="left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _check_args(args: argparse.Namespace) -> None:
    from commands.cli import UsageError
    from recipes.config import RecipeError, load_recipe
    from recipes.preflight import shard_problem, shard_samples

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file, not a folder")
    fmt = args.format
    if args.recipe:
        try:
            fmt = fmt or load_recipe(args.recipe, [f"data.path={args.shard_dir}"]).data.format
        except RecipeError as err:
            raise UsageError(f"--recipe: {err}") from err
    fmt = fmt or "mds"
    problem = shard_problem(args.shard_dir, fmt)
    if problem:
        raise UsageError(problem)
    samples = shard_samples(args.shard_dir, fmt)
    if args.batch_size > samples:
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {samples} samples "
                         f"in {args.shard_dir}")


def run(args: argparse.Namespace) -> int:
    from commands.cli import UsageError

    _check_args(args)  # before torch, DALI and Streaming load
    from pipeline import CodecError, build_dataloader
    from pipeline.text import load_tokenizer

    try:
        cfg = data_config(args)
        batch = next(iter(build_dataloader(cfg)))
    except (CodecError, FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    captions = [caption_with_masks(tokenizer, ids, labels)
                for ids, labels in zip(batch["text_ids"], batch["mlm_labels"], strict=True)]
    args.out.mkdir(parents=True, exist_ok=True)
    draw(batch, cfg, captions, args.out / "batch.png")
    stats = {"config": {"mask_kind": cfg.mask_kind, "video_mask_ratio": cfg.video_mask_ratio,
                        "text_mask_ratio": cfg.text_mask_ratio, "grid": list(cfg.mask_grid)},
             "samples": mask_stats(batch, cfg.mask_grid)}
    (args.out / "mask_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(f"wrote {args.out / 'batch.png'} and {args.out / 'mask_stats.json'} "
          f"({len(batch['keys'])} samples)")
    return 0
