"""See what a checkpoint does: vtp visualize CHECKPOINT --data SHARD_DIR|VIDEO --out DIR.

On the first clips of held-out shards (or one video file, sharded first into DIR/shards):
- ``reconstruction-mask{R}.png`` and ``.gif``: masked input | reconstruction | target, at the
  recipe's video mask ratio and at ``--mask-ratio`` (the GIF plays every frame);
- ``mlm.md``: each caption with the recipe's share of words masked and the MLM head's fills;
- ``vtc.md``: each clip's VTC similarity with its own caption against the best other caption;
- ``visualize.json``: all of the above as data.
Runs on the CPU for the tiny model; ``--device gpu`` for ViT-B.
"""

from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import replace
from pathlib import Path

VIDEO_SUFFIXES = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a `vtp train` checkpoint (e.g. .../latest-rank0.pt)")
    parser.add_argument("--data", required=True,
                        help="held-out shards (a `vtp shard` folder) or one video file")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--mask-ratio", type=float, default=None,
                        help="a second video mask ratio to reconstruct at (0 < R < 1)")
    parser.add_argument("--num", type=int, default=4, help="clips to show (first in shard order)")
    parser.add_argument("--caption", default="",
                        help="caption of a VIDEO file (for the MLM fills and VTC score)")
    parser.add_argument("--format", choices=("mds", "wds"), default="mds", help="shard format")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seeds the masks")


# -- inputs ------------------------------------------------------------------------------
def _shards(args: argparse.Namespace, out: Path, device: str) -> Path:
    """The shard folder to read: --data itself, or a one-clip shard of the video file."""
    from commands.cli import UsageError
    from pipeline.sources import shard_folder

    data = Path(args.data)
    if data.is_file():
        if data.suffix.lower() not in VIDEO_SUFFIXES:
            raise UsageError(f"--data {data} is neither a shard folder nor a video "
                             f"({', '.join(sorted(VIDEO_SUFFIXES))})")
        return _shard_video(data, args.caption, out / "shards", device)
    folder = shard_folder(data, args.format)
    found = (folder / "index.json").is_file() if args.format == "mds" else any(folder.glob("*.tar"))
    if not found:
        raise UsageError(f"--data {data} holds no {args.format} shards (expected a `vtp shard` "
                         f"output folder with {args.format}/ inside, or a video file)")
    return data


def _shard_video(video: Path, caption: str, out: Path, device: str) -> Path:
    from commands.cli import UsageError
    from evaluation.evaluate import prepare_test_shards

    out.mkdir(parents=True, exist_ok=True)
    listing = out.parent / "video.json"
    video = video.resolve()  # test json paths stay inside their video root: name it relative
    listing.write_text(json.dumps([{"video_id": "clip0", "video": video.name,
                                    "caption": caption}]))
    codec = "h264" if device == "gpu" else "vp9"
    shards, summary = prepare_test_shards(listing, out, codec, None, 1, video_root=video.parent)
    if summary["ok"] != 1:
        reasons = ", ".join(summary.get("failure_reasons", {})) or "unknown"
        raise UsageError(f"--data {video} could not be read as a video ({reasons})")
    return shards


def _batch(model, shards: Path, settings: dict, num: int, ratio: float, seed: int, device: str):
    import torch

    from evaluation.evaluate import EvalConfig, eval_data_config
    from pipeline import BatchBuilder
    from pipeline.loader import build_source

    cfg = EvalConfig(data=str(shards), out="", batch_size=num, seed=seed)
    data = eval_data_config(model, shards, cfg, settings)
    data = replace(data, shuffle=False, drop_last=False, view=0, device=device,
                   video_mask_ratio=ratio, text_mask_ratio=model.config.text_mask_ratio)
    loader = torch.utils.data.DataLoader(build_source(data), batch_size=num,
                                         collate_fn=BatchBuilder(data))
    batch = next(iter(loader))
    target = torch.device("cuda" if device == "gpu" else "cpu")
    return {k: v.to(target) if torch.is_tensor(v) else v for k, v in batch.items()}


# -- what the model does -----------------------------------------------------------------
def joint_pass(model, batch: dict):
    """The training step's first pass: (encoder output of [visible tubes ; masked text] or of
    the visible tubes alone, the decoder's prediction of the masked tubes or None)."""
    import torch

    from model.video import visible_and_masked_index

    c, enc = model.config, model.encoder
    vis_idx, mask_idx = visible_and_masked_index(batch["video_mask"])
    tokens = enc.embed_video(batch["video"])
    vis = torch.gather(tokens, 1, vis_idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    if c.use_text:
        keep = torch.cat([torch.ones_like(vis_idx), batch["text_mask"].to(vis_idx.dtype)], 1)
        joint = enc(torch.cat([vis, enc.embed_text(batch["mlm_ids"])], 1), keep)
    else:
        joint = enc(vis)
    nv = vis.shape[1]
    pred = model.decode(joint[:, :nv], vis_idx, mask_idx) if "mvm" in c.active_terms else None
    return joint, nv, pred


def mlm_fills(model, batch: dict, tokenizer) -> list[dict]:
    """Per sample: the caption, the masked caption and the MLM head's fills of its masks."""
    joint, nv, _ = joint_pass(model, batch)
    predicted = model.mlm_head(joint[:, nv:]).argmax(-1)
    special = set(tokenizer.all_special_ids)
    rows = []
    for ids, labels, guess in zip(batch["text_ids"].tolist(), batch["mlm_labels"].tolist(),
                                  predicted.tolist(), strict=True):
        masked, filled, hits, total = [], [], 0, 0
        for token, label, pred in zip(ids, labels, guess, strict=True):
            if token in special:
                continue
            word = tokenizer.convert_ids_to_tokens(token)
            if label == -100:
                masked.append(word)
                filled.append(word)
                continue
            fill = tokenizer.convert_ids_to_tokens(pred)
            total, hits = total + 1, hits + int(pred == label)
            masked.append("[MASK]")
            filled.append(f"[{fill}]" if pred == label else f"[{fill}≠{word}]")
        rows.append({"caption": _join(tokenizer, ids), "masked": _glue(masked),
                     "filled": _glue(filled), "masked_words": total, "correct": hits})
    return rows


def _join(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def _glue(pieces: list[str]) -> str:
    text = ""
    for piece in pieces:
        text += piece.removeprefix("##") if piece.startswith("##") and text else f" {piece}"
    return text.strip()


def vtc_scores(model, batch: dict) -> list[dict]:
    """Per clip: cosine similarity with its caption and with the best other caption."""
    import torch.nn.functional as F

    video = F.normalize(model.encode_video(batch["video"]).float(), dim=-1)
    text = F.normalize(model.encode_text(batch["text_ids"], batch["text_mask"]).float(), dim=-1)
    sims = video @ text.T
    rows = []
    for i, key in enumerate(batch["keys"]):
        others = [(float(sims[i, j]), j) for j in range(len(batch["keys"])) if j != i]
        best, j = max(others) if others else (None, None)
        rows.append({"key": key, "own": round(float(sims[i, i]), 4),
                     "best_other": None if best is None else round(best, 4),
                     "best_other_key": None if j is None else batch["keys"][j],
                     "own_wins": best is None or float(sims[i, i]) > best})
    return rows


# -- pictures ----------------------------------------------------------------------------
def write_gif(masked, recon, target, out: Path, scale: int = 4, ms_per_frame: int = 250) -> Path:
    """Animated GIF: one row per clip, columns masked | reconstruction | target, every frame."""
    import numpy as np
    from PIL import Image

    b, _, t, h, w = target.shape
    gap = 2
    frames = []
    for step in range(t):
        canvas = np.full((b * (h * scale + gap), 3 * (w * scale + gap), 3), 255, np.uint8)
        for row in range(b):
            for col, video in enumerate((masked, recon, target)):
                img = (video[row, :, step].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                img = img.repeat(scale, 0).repeat(scale, 1)
                y, x = row * (h * scale + gap), col * (w * scale + gap)
                canvas[y:y + h * scale, x:x + w * scale] = img
        frames.append(Image.fromarray(canvas))
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)
    return out


def _markdown(result: dict) -> tuple[str, str]:
    mlm = ["# MLM fills", "", "Masked words in [brackets]: `[fill]` when the head got it right, "
           "`[fill≠truth]` when not.", ""]
    for key, row in zip(result["keys"], result["mlm"], strict=True):
        mlm += [f"- **{key}** ({row['correct']}/{row['masked_words']} right): {row['caption']}",
                f"  - masked: {row['masked']}", f"  - filled: {row['filled']}"]
    vtc = ["# VTC: each clip against its caption and the best other caption", "",
           "| clip | own caption | best other | other clip | own wins |", "|---|---|---|---|---|"]
    vtc += [f"| {r['key']} | {r['own']:.3f} | "
            f"{r['best_other'] if r['best_other'] is not None else '-'} "
            f"| {r['best_other_key'] or '-'} | {'yes' if r['own_wins'] else 'no'} |"
            for r in result["vtc"]]
    return "\n".join(mlm) + "\n", "\n".join(vtc) + "\n"


def visualize(args: argparse.Namespace) -> dict:
    import torch

    from commands.figures import plot_reconstructions, reconstruct
    from pipeline.device import resolve_device
    from pipeline.text import load_tokenizer
    from recipes.checkpoint import load_data_settings, load_trained_model

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shards = _shards(args, out, device)
    try:
        model = load_trained_model(args.checkpoint)
        settings = load_data_settings(args.checkpoint)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, AttributeError) as err:
        raise ValueError(f"{args.checkpoint} is not a `vtp train` checkpoint ({err})") from err
    model = model.to("cuda" if device == "gpu" else "cpu").eval()
    c = model.config
    ratios = [c.video_mask_ratio] + ([args.mask_ratio] if args.mask_ratio not in
                                     (None, c.video_mask_ratio) else [])
    result: dict = {"checkpoint": str(args.checkpoint), "data": str(args.data),
                    "recipe_mask_ratio": c.video_mask_ratio, "reconstructions": [], "notes": []}
    with torch.no_grad():
        for ratio in ratios:
            batch = _batch(model, shards, settings, args.num, ratio, args.seed, device)
            result["keys"] = list(batch["keys"])
            if "mvm" not in c.active_terms:
                result["notes"].append("this model has no MVM decoder: no reconstructions")
                break
            pred = joint_pass(model, batch)[2]
            masked, recon, target = (v.cpu() for v in reconstruct(model, batch, pred))
            captions = [_join(load_tokenizer(settings.get("tokenizer_path")), ids)
                        for ids in batch["text_ids"].tolist()] if c.use_text else None
            png = plot_reconstructions(masked, recon, target,
                                       out / f"reconstruction-mask{ratio:g}.png", captions)
            gif = write_gif(masked, recon, target, out / f"reconstruction-mask{ratio:g}.gif")
            result["reconstructions"].append({"mask_ratio": ratio, "png": png.name,
                                              "gif": gif.name})
        batch = _batch(model, shards, settings, args.num, c.video_mask_ratio, args.seed, device)
        if c.use_text and "mlm" in c.active_terms:
            result["mlm"] = mlm_fills(model, batch, load_tokenizer(settings.get("tokenizer_path")))
        if c.use_text:
            result["vtc"] = vtc_scores(model, batch)
    mlm_md, vtc_md = _markdown({"keys": result["keys"], "mlm": result.get("mlm", []),
                                "vtc": result.get("vtc", [])})
    (out / "mlm.md").write_text(mlm_md)
    (out / "vtc.md").write_text(vtc_md)
    (out / "visualize.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def run(args: argparse.Namespace) -> int:
    from commands.cli import UsageError

    if not Path(args.checkpoint).is_file():
        raise UsageError(f"checkpoint {args.checkpoint} does not exist")
    if not Path(args.data).exists():
        raise UsageError(f"--data {args.data} does not exist")
    if args.mask_ratio is not None and not 0.0 < args.mask_ratio < 1.0:
        raise UsageError(f"--mask-ratio must be between 0 and 1 (exclusive), got {args.mask_ratio}")
    if args.num < 1:
        raise UsageError(f"--num must be >= 1, got {args.num}")
    try:
        result = visualize(args)
    except ValueError as err:  # a file that is not a checkpoint, a codec the device cannot decode
        raise UsageError(str(err)) from err
    wins = sum(r["own_wins"] for r in result.get("vtc", []))
    fills = result.get("mlm", [])
    print(f"visualize: {len(result['keys'])} clip(s) -> {args.out}: reconstructions at mask "
          f"ratio(s) {', '.join(str(r['mask_ratio']) for r in result['reconstructions']) or '-'}; "
          f"MLM {sum(r['correct'] for r in fills)}/{sum(r['masked_words'] for r in fills)} "
          f"masked words right; VTC: own caption beats every other for {wins}/"
          f"{len(result.get('vtc', []))} clips")
    return 0
