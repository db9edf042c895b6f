"""The fine-tuning recipe (``vtp eval --mode finetune --recipe R``): a YAML file, typed here.

Two sections: ``finetune`` (:class:`FinetuneConfig`, the dual encoder's training run) and
``test`` (:class:`TestProtocol`, how retrieval is measured afterwards). Shipped:
``finetune-msrvtt.yaml`` (SimVTP's MSR-VTT protocol, scripts/finetune_msrvtt.sh @4b54321)
and ``finetune-tiny.yaml`` (the CPU demo's short run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from recipes.config import RECIPE_DIR, TIME_RE
from recipes.fields import RecipeError, apply_override, build

__all__ = ["FinetuneConfig", "TestProtocol", "FinetuneRecipe", "load_finetune_recipe"]


@dataclass
class FinetuneConfig:
    """Contrastive fine-tuning of the dual encoder before evaluation.

    Args:
        train_data: shard folder of the fine-tuning (training) split.
        max_duration: Composer time, e.g. ``100ep`` or ``200ba``.
        batch_size: clips per step (in-batch negatives).
        lr: peak learning rate (no batch scaling: write the scaled value).
        min_lr: final learning rate of the cosine.
        t_warmup: linear warm-up from 0, e.g. ``5ep`` or ``0.1dur`` (at least one step).
        betas: AdamW moments.
        weight_decay: AdamW weight decay (torch meaning; none on norms, biases, embeddings).
        temperature: VTC temperature.
        drop_path: stochastic depth of the last block of both encoders (``ModelConfig``).
        crop: ``multiscale`` or ``random_resized`` (see ``pipeline.DataConfig``).
        crop_scales: multi-scale crop scales.
        crop_area, crop_ratio: random resized crop area fraction and aspect-ratio ranges.
        flip: random horizontal flip.
        rand_augment: ``[n, m]``: DALI's RandAugment, n operations at magnitude m of 10 per
            clip; None for none (see ``pipeline.DataConfig``).
        random_erasing: per-frame probability of timm-style random erasing; 0 for none.
    """

    train_data: str = ""
    max_duration: str = "200ba"
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 0.0
    t_warmup: str = "0.1dur"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    temperature: float = 0.05
    drop_path: float = 0.0
    crop: Literal["multiscale", "random_resized"] = "multiscale"
    # Milder than pretraining's crops: the tiny clips are only 48 pixels on the short side.
    crop_scales: tuple[float, ...] = (1.0, 0.875, 0.75)
    crop_area: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    rand_augment: tuple[int, int] | None = None
    random_erasing: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_duration", "t_warmup"):
            if not TIME_RE.match(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} is not a Composer time "
                                 "such as '100ep', '200ba' or '0.1dur'")
        if self.batch_size < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError(f"batch_size, lr and temperature must be positive, got "
                             f"{self.batch_size}, {self.lr}, {self.temperature}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr={self.min_lr} must be in [0, lr={self.lr}]")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path={self.drop_path} must be in [0, 1)")

    @property
    def steps(self) -> int | None:
        """Optimizer steps when ``max_duration`` is in batches, else None."""
        return int(self.max_duration[:-2]) if self.max_duration.endswith("ba") else None


@dataclass
class TestProtocol:
    """How retrieval is measured after fine-tuning.

    Args:
        views: temporal clips per video.
        crops: spatial crops per clip.
        split_name: the test split's name in the reports (e.g. "MSR-VTT 1k-A").
    """

    views: int = 1
    crops: int = 1
    split_name: str | None = None

    def __post_init__(self) -> None:
        if self.views < 1 or self.crops < 1:
            raise ValueError(f"views and crops must be >= 1, got {self.views}, {self.crops}")


@dataclass
class FinetuneRecipe:
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    test: TestProtocol = field(default_factory=TestProtocol)


def load_finetune_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                         ) -> FinetuneRecipe:
    """Read a fine-tuning recipe (a path, or a shipped name such as ``finetune-msrvtt``).

    Raises:
        RecipeError: a missing file, bad YAML, an unknown key or a bad value, named.
    """
    path = Path(path)
    if not path.is_file():
        shipped = RECIPE_DIR / (path.name if path.suffix else f"{path.name}.yaml")
        if path.parent != Path(".") or not shipped.is_file():
            names = ", ".join(p.stem for p in sorted(RECIPE_DIR.glob("finetune-*.yaml")))
            raise RecipeError(f"fine-tuning recipe {path} does not exist; shipped: {names}")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections")
    for override in overrides:
        apply_override(raw, override)
    return build(FinetuneRecipe, raw, "")
