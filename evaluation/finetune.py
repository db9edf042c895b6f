"""Contrastive fine-tuning of SimVTP's dual encoder before retrieval (``vtp eval --mode finetune``).

The downstream protocol of SimVTP (@4b54321: scripts/finetune_msrvtt.sh, run_simvtp_finetuning.py,
modeling_finetune.py): two copies of the pretrained encoder (``model.dual.DualEncoder``), a
symmetric NormSoftmax/InfoNCE loss at a fixed temperature on in-batch negatives, AdamW with
decoupled weight decay, linear warm-up then cosine decay, drop path on both encoders. Every setting
comes from a fine-tuning recipe (recipes/finetune_config.py; ``finetune-msrvtt.yaml`` holds the
released ones). Clips come from the training shards through the training pipeline (random frames,
the recipe's crop and flip, nothing masked). Composer runs the loop; nothing is checkpointed. The
loss curve is written to ``OUT/finetune_log.json`` and ``OUT/finetune_loss.png``.
"""

from __future__ import annotations

import gc
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from composer import Logger, State, Trainer
from composer.models import ComposerModel

from model import UnifiedMAE
from model.dual import DualEncoder
from model.losses import vtc_loss
from pipeline import DataConfig, build_dataspec
from recipes.callbacks import StepLr
from recipes.finetune_config import FinetuneConfig
from recipes.optim import cosine_with_warmup, decoupled_adamw

__all__ = ["finetune_dual_encoder", "finetune_data_config", "DualComposerModel", "LossHistory"]



class DualComposerModel(ComposerModel):
    """Composer adapter: the batch dict in, the symmetric contrastive loss out.

    Args:
        net: the dual encoder; trained in place.
        temperature: fixed softmax temperature (SimVTP: 0.05).
    """

    def __init__(self, net: DualEncoder, temperature: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.net = net
        self.register_buffer("logit_scale", torch.tensor(1.0 / temperature))

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(batch["video"], batch["text_ids"], batch["text_mask"])

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor],
             batch: dict[str, Any]) -> torch.Tensor:
        video, text = outputs
        return vtc_loss(video, text, self.logit_scale)


class LossHistory(StepLr):
    """Keeps every step's loss and learning rate in memory (``records``)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict] = []

    def batch_end(self, state: State, logger: Logger) -> None:
        loss = state.total_loss_dict.get("loss/train/total")
        self.records.append({"step": int(state.timestamp.batch), "loss": float(loss),
                             "lr": self.step_lr})


def finetune_data_config(data: DataConfig, cfg: FinetuneConfig, device: str,
                         seed: int) -> DataConfig:
    """The training pipeline over ``cfg.train_data``, with the checkpoint's frame and text settings.

    Args:
        data: the evaluation data configuration (frames, size, tubelet, sampler, tokenizer).
        cfg: the fine-tuning run.
        device: ``cpu`` or ``gpu``.
        seed: seeds the order, frames, crops and flips.
    """
    path = Path(cfg.train_data)
    fmt = "wds" if (path / "wds").is_dir() and not (path / "mds").is_dir() else "mds"
    return replace(data, path=str(path), format=fmt, view=None, views=1, crop_view=0, crops=1,
                   batch_size=cfg.batch_size, shuffle=True, drop_last=True, flip=cfg.flip,
                   crop=cfg.crop, crop_scales=cfg.crop_scales, crop_area=cfg.crop_area,
                   crop_ratio=cfg.crop_ratio, rand_augment=cfg.rand_augment,
                   random_erasing=cfg.random_erasing, normalize_on_device=False,
                   video_mask_ratio=0.0, text_mask_ratio=0.0, device=device, seed=seed)


def _checked_dataspec(train: DataConfig):
    """The training DataSpec; fails before training when not even one full batch exists."""
    spec = build_dataspec(train)
    dataset = spec.dataloader.dataset
    count = len(dataset) if hasattr(dataset, "__len__") else None  # the WDS reader has none
    if count is not None and count < train.batch_size:
        raise ValueError(f"the fine-tuning data {train.path} holds {count} clips, fewer than "
                         f"the batch size {train.batch_size}; lower --finetune-batch-size")
    return spec


def _warmup(cfg: FinetuneConfig) -> str:
    # A fraction of a short run can round to 0 steps, which Composer rejects: at least one.
    if cfg.t_warmup.endswith("dur") and cfg.steps is not None:
        return f"{max(1, round(float(cfg.t_warmup[:-3]) * cfg.steps))}ba"
    return cfg.t_warmup


def finetune_dual_encoder(model: UnifiedMAE, data: DataConfig, cfg: FinetuneConfig, device: str,
                          seed: int, out: Path, progress: bool = True) -> DualEncoder:
    """Fine-tunes a dual encoder initialised from ``model`` and returns it (eval mode, CPU).

    Args:
        model: the pretrained model (left untouched: the dual encoder holds copies).
        data: the evaluation data configuration, carrying the checkpoint's frame and text
            settings; the training pipeline is derived from it (see finetune_data_config).
        cfg: the fine-tuning recipe section (duration, batch, lr schedule, drop path,
            augmentation, temperature) and the training shards.
        device: ``cpu`` (fp32, one torch thread so DALI keeps the other cores) or ``gpu``
            (bf16 autocast).
        seed: seeds the data order and augmentation, and Composer's RNGs.
        out: folder for ``finetune_log.json`` and ``finetune_loss.png``.
        progress: show Composer's progress bar.

    Raises:
        ValueError: no training data given, or fewer clips than one batch.
    """
    if not cfg.train_data:
        raise ValueError("fine-tuning needs training shards (FinetuneConfig.train_data)")
    if cfg.steps is not None and cfg.steps < 1:
        raise ValueError(f"fine-tuning steps must be >= 1, got {cfg.steps}")
    train = finetune_data_config(data, cfg, device, seed)
    dataspec = _checked_dataspec(train)
    net = DualEncoder.from_unified(model, cfg.drop_path).train()
    composer_model = DualComposerModel(net, cfg.temperature)
    history = LossHistory()
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)  # as the tiny recipe: DALI decodes on the other core
    try:
        trainer = Trainer(
            model=composer_model, train_dataloader=dataspec,
            max_duration=cfg.max_duration,
            optimizers=decoupled_adamw(net, cfg.lr, cfg.weight_decay, cfg.betas),
            schedulers=cosine_with_warmup(_warmup(cfg), cfg.lr, cfg.min_lr),
            step_schedulers_every_batch=True, callbacks=[history], loggers=[],
            progress_bar=progress, log_to_console=False, device=device,
            precision="amp_bf16" if device == "gpu" else "fp32", seed=seed,
            run_name="finetune",
        )
        trainer.fit()
        seconds = trainer.state.timestamp.total_wct.total_seconds()
        trainer.close()
        del trainer  # release the Streaming dataset before evaluation opens its own
        gc.collect()
    finally:
        torch.set_num_threads(threads)
    write_loss_curve(history.records, cfg, Path(out), seconds)
    return net.cpu().eval()


def loss_summary(records: list[dict], batch_size: int, seconds: float) -> dict:
    """Steps, seconds, the mean loss of the first and last tenth of the run, and chance."""
    losses = [r["loss"] for r in records]
    tenth = max(1, len(losses) // 10)
    return {"steps": len(losses), "seconds": round(seconds, 1),
            "first_loss": sum(losses[:tenth]) / tenth, "last_loss": sum(losses[-tenth:]) / tenth,
            "chance_loss": 2 * math.log(batch_size)}


def write_loss_curve(records: list[dict], cfg: FinetuneConfig, out: Path,
                     seconds: float = 0.0) -> None:
    """``out/finetune_log.json`` (config, summary, per-step loss and lr) and
    ``out/finetune_loss.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    log = {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
           "summary": loss_summary(records, cfg.batch_size, seconds), "steps": records}
    (out / "finetune_log.json").write_text(json.dumps(log, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1, label="loss")
    # features that tell nothing apart score 2 ln B (a uniform softmax in both directions)
    ax.axhline(2 * math.log(cfg.batch_size), color="grey", ls="--", lw=1, label="chance (2 ln B)")
    ax.legend(loc="lower left")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss (t2v + v2t)")
    ax.set_title(f"dual-encoder fine-tuning, batch {cfg.batch_size}, lr {cfg.lr:g}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "finetune_loss.png", dpi=100)
    plt.close(fig)
