"""Text-video retrieval evaluation of a training checkpoint (``vtp eval``).

The held-out split comes as MSR-VTT-style json (a list of ``{"video": path, "caption": text}``)
or as shards. Json clips are sharded first with ``vtp shard`` (VP9 on the CPU, H.264 for the
GPU decoder) into ``OUT/test-shards``, so evaluation reads clips through the same DALI
pipeline as training: the same decoder, frame sampler and tokenizer, in evaluation mode
(evenly spaced views, centre crop, no flip, no masks). Features are the model's mean-pooled
video-only and text-only encoder outputs (zero-shot), or those of the dual encoder after
contrastive fine-tuning (``mode="finetune"``, evaluation/finetune.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from evaluation.eval_inputs import check_usable, test_items
from evaluation.retrieval import galleries, text_video_metrics
from model import UnifiedMAE
from pipeline import BatchBuilder, DataConfig
from pipeline.config import short_side_for
from pipeline.device import resolve_device
from pipeline.loader import build_source
from recipes.checkpoint import load_data_settings, load_trained_model, read_checkpoint
from recipes.data_settings import DataSettings
from recipes.finetune_config import FinetuneConfig
from recipes.run_card import write_eval_card

# evaluation/retrieval.py ranks ties against the query; SimVTP's metric.py (Frozen's) ranks them
# in its favour. Stated beside every number.
TIE_RULE = "pessimistic (a tie with the true match counts against it; SimVTP: optimistic)"

__all__ = ["EvalConfig", "FinetuneConfig", "evaluate_checkpoint", "prepare_test_shards",
           "test_items", "clip_features", "metrics_table"]


@dataclass
class EvalConfig:
    """One evaluation run.

    Args:
        data: a test json (MSR-VTT style) or a shard folder (holding ``mds/`` or ``wds/``).
        out: folder for ``metrics.json``, ``retrieval.md`` and the sharded json clips.
        mode: ``zero-shot`` (pretrained encoder) or ``finetune`` (dual encoder fine-tuned first).
        views: temporal clips per video whose features are averaged (multi-view testing).
        crops: spatial crops per clip (along the long side), averaged too; SimVTP tests
            3 clips x 3 crops.
        split_name: the name of the test split for the reports (e.g. "MSR-VTT 1k-A");
            None names it after ``data``.
        batch_size: clips per forward pass.
        gallery_size: rank each query among about this many clips of its own disjoint
            gallery (evaluation.retrieval.galleries) instead of among every test clip; the
            metrics then count every query of a larger split at a 200-clip gallery's
            difficulty (None: one gallery of all clips, the usual protocol).
        device: ``auto`` (GPU when there is one), ``cpu`` or ``gpu``.
        codec: codec for sharding json clips; None picks vp9 on the CPU, h264 on the GPU.
        short_side: short side of sharded json clips; None uses 8/7 of the model's input.
        workers: processes sharding json clips.
        video_root: folder the json's relative video paths start from (default: the json's).
        settings: overrides of the checkpoint's data settings (the fields of
            recipes.data_settings.DataSettings).
        finetune: the fine-tuning run of ``mode="finetune"``.
        seed: seeds fine-tuning (evaluation itself draws nothing at random).
    """

    data: str
    out: str
    mode: Literal["zero-shot", "finetune"] = "zero-shot"
    views: int = 1
    crops: int = 1
    split_name: str | None = None
    batch_size: int = 16
    gallery_size: int | None = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    codec: str | None = None
    short_side: int | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    video_root: str | None = None
    settings: dict = field(default_factory=dict)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("zero-shot", "finetune"):
            raise ValueError(f"mode must be zero-shot or finetune, got {self.mode!r}")
        if min(self.views, self.crops, self.batch_size) < 1:
            raise ValueError(f"views, crops and batch_size must be >= 1, got {self.views}, "
                             f"{self.crops}, {self.batch_size}")
        if self.gallery_size is not None and self.gallery_size < 2:
            raise ValueError(f"gallery_size must be >= 2 clips, got {self.gallery_size}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {self.device!r}")

    def resolved_device(self) -> str:
        return resolve_device(self.device)


def prepare_test_shards(json_path: Path, out: Path, codec: str, short_side: int | None,
                        workers: int, video_root: Path | None = None) -> tuple[Path, dict]:
    """Shards the json's clips into ``out`` (resumable: a finished run is reused).

    Returns:
        (shard folder, the shard summary with its ok/failed counts).
    """
    from tools.shard import TranscodeOptions, shard_items

    items = test_items(json_path, video_root)
    check_usable(items, json_path, video_root)
    options = TranscodeOptions(codec=codec, short_side=short_side)
    return out, shard_items(items, out, options, workers)


@torch.no_grad()
def clip_features(model: UnifiedMAE, data: DataConfig, device: str = "cpu",
                  progress: bool = True) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Every sample's key, video features (mean over ``data.views`` temporal clips x
    ``data.crops`` spatial crops, each L2-normalised) and text features.

    Args:
        model: the trained model (or anything with ``encode_video``/``encode_text``).
        data: the data configuration; views, shuffle, masks and drop_last are set here.
        device: ``cpu`` or ``gpu``.
        progress: show a tqdm bar.
    """
    torch_device = torch.device("cuda" if device == "gpu" else "cpu")
    cfg = replace(data, shuffle=False, drop_last=False, video_mask_ratio=0.0,
                  text_mask_ratio=0.0, device=device, view=0, crop_view=0)
    source = build_source(cfg)
    keys: list[str] = []
    video_sum: torch.Tensor | None = None
    text: list[torch.Tensor] = []
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device == "gpu")
    views = [(t, s) for t in range(cfg.views) for s in range(cfg.crops)]
    bar = tqdm(total=len(views) * len(source), desc="eval features", unit="clip",
               disable=not progress)
    for index, (view, crop) in enumerate(views):
        builder = BatchBuilder(replace(cfg, view=view, crop_view=crop))
        loader = torch.utils.data.DataLoader(source, batch_size=cfg.batch_size, collate_fn=builder)
        view_keys: list[str] = []
        view_video: list[torch.Tensor] = []
        for batch in loader:
            with autocast:
                video = model.encode_video(batch["video"].to(torch_device)).float()
                if index == 0:
                    ids = batch["text_ids"].to(torch_device)
                    mask = batch["text_mask"].to(torch_device)
                    text.append(model.encode_text(ids, mask).float().cpu())
            view_video.append(torch.nn.functional.normalize(video, dim=-1).cpu())
            view_keys.extend(batch["keys"])
            bar.update(len(video))
        if index == 0:
            keys, video_sum = view_keys, torch.cat(view_video)
        elif view_keys != keys:
            raise RuntimeError("the shard order changed between views")
        else:
            video_sum += torch.cat(view_video)
    bar.close()
    return keys, video_sum / len(views), torch.cat(text)


def protocol_line(metrics: dict) -> str:
    """How the numbers were measured, so that none is read without its protocol."""
    galleries_text = ""
    if metrics.get("galleries", 1) > 1:
        galleries_text = (f" in {metrics['galleries']} disjoint galleries of up to "
                          f"{metrics['gallery_size']} (each query ranked within its own)")
    return (f"{metrics['split']}: {metrics['n']} clips{galleries_text}, {metrics['mode']}, "
            f"{metrics['views']} temporal clip(s) x {metrics['crops']} spatial crop(s) per "
            f"video (normalised features averaged), ties: {metrics['tie_rule']}")


def metrics_table(metrics: dict) -> str:
    """The retrieval table in markdown, chance level next to the numbers."""
    lines = ["| direction | R@1 | R@5 | R@10 | median rank | mean rank | chance R@1 | n |",
             "|---|---|---|---|---|---|---|---|"]
    for name, prefix in (("text -> video", "t2v"), ("video -> text", "v2t")):
        lines.append(f"| {name} | {metrics[f'{prefix}_r1']:.1f} | {metrics[f'{prefix}_r5']:.1f} | "
                     f"{metrics[f'{prefix}_r10']:.1f} | {metrics[f'{prefix}_medr']:.0f} | "
                     f"{metrics[f'{prefix}_meanr']:.1f} | {metrics['chance_r1']:.2f} | "
                     f"{metrics['n']} |")
    return "\n".join(lines)


def eval_data_config(model: UnifiedMAE, shards: Path, cfg: EvalConfig,
                     settings: Mapping[str, Any]) -> DataConfig:
    """The pipeline configuration that feeds ``model`` the test clips as it was trained
    (``settings``: the checkpoint's data settings, overridden by ``cfg.settings``)."""
    mc = model.config
    chosen = DataSettings.from_dict({**settings, **cfg.settings})  # unknown keys refused
    return DataConfig(path=str(shards), batch_size=cfg.batch_size, num_frames=mc.num_frames,
                      image_size=mc.image_size, tubelet=tuple(mc.tubelet), flip=False,
                      crop_scales=(1.0,), views=cfg.views, crops=cfg.crops, seed=cfg.seed,
                      **asdict(chosen))


def evaluate_checkpoint(checkpoint: str | Path, cfg: EvalConfig, progress: bool = True) -> dict:
    """Retrieval metrics of a `vtp train` checkpoint on ``cfg.data``; writes ``out/metrics.json``.

    Returns:
        t2v_r1, t2v_r5, t2v_r10, t2v_medr, t2v_meanr, the same for v2t, chance_r1 and n (the
        clips evaluated), plus the protocol (mode, views, crops, tie_rule, split), checkpoint
        and, for json input, the clips that could not be sharded (``failed``, with reasons
        in ``test-shards/manifest.parquet``).
    """
    out, device = Path(cfg.out), cfg.resolved_device()
    out.mkdir(parents=True, exist_ok=True)
    stored = read_checkpoint(checkpoint)
    model = load_trained_model(checkpoint, checkpoint=stored)
    settings = load_data_settings(checkpoint, checkpoint=stored)
    del stored  # optimizer state and all: only the model is kept
    shards, failed = Path(cfg.data), 0
    if shards.suffix == ".json":
        codec = cfg.codec or ("h264" if device == "gpu" else "vp9")
        side = cfg.short_side or short_side_for(model.config.image_size)
        shards, summary = prepare_test_shards(shards, out / "test-shards", codec, side,
                                              cfg.workers, cfg.video_root and Path(cfg.video_root))
        failed = summary["failed"]
    data = eval_data_config(model, shards, cfg, settings)
    if cfg.mode == "finetune":
        from evaluation.finetune import finetune_dual_encoder

        model = finetune_dual_encoder(model, data, cfg.finetune, device, cfg.seed, out, progress)
    model = model.to("cuda" if device == "gpu" else "cpu").eval()
    keys, video, text = clip_features(model, data, device, progress)
    groups = galleries(keys, cfg.gallery_size)
    metrics = {**text_video_metrics(text, video, groups), "mode": cfg.mode, "views": cfg.views,
               "crops": cfg.crops, "tie_rule": TIE_RULE,
               "split": cfg.split_name or Path(cfg.data).name, "checkpoint": str(checkpoint),
               "data": cfg.data, "failed": failed}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "retrieval.md").write_text(protocol_line(metrics) + "\n\n" + metrics_table(metrics)
                                      + "\n")
    write_eval_card(out, checkpoint, metrics, cfg.data)  # run_card.json/.md: what made the numbers
    return metrics
