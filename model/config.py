"""Model configuration: the one source of truth for shapes, sizes, loss weights and switches.

Sizes follow VideoMAE (``modeling_pretrain.py``): small 12/384/6 with a 4x192 decoder, base
(ViT-B/16, as in SimVTP) 12/768/12 with a 4x384 decoder, large 24/1024/16 with a 12x512
decoder; ``tiny`` is ours, sized to train in minutes on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ModelConfig", "model_config", "MODEL_SIZES", "RENAMED_KEYS"]

# old ModelConfig key -> its new name. Checkpoints keep the config they were written with, so
# ModelConfig.from_dict still reads the old names; recipes must use the new ones.
RENAMED_KEYS = {"text_mask_prob": "text_mask_ratio"}  # one name per mask ratio, like DataConfig


@dataclass(kw_only=True)
class ModelConfig:
    """Every architectural and loss setting of :class:`model.UnifiedMAE`.

    Args:
        image_size: square input side in pixels.
        num_frames: frames per clip.
        tubelet: (tt, ph, pw) tube size of the Conv3d embedding and of the mask grid.
        in_chans: input channels.
        width, depth, num_heads, mlp_ratio: the shared pre-LN ViT encoder.
        ln_eps: LayerNorm eps of the encoder and decoder (1e-6 as in VideoMAE).
        decoder_width, decoder_depth, decoder_heads: the video decoder.
        use_text: False gives video-only MAE (VideoMAE): no text embeddings, MLM, VTC or VTM.
        vocab_size, max_text_len, type_vocab_size, pad_token_id: BERT-style text embeddings.
        text_ln_eps, text_dropout: BERT's embedding LayerNorm eps and dropout.
        pool_text_padding: mean pooling of text and joint passes includes padding positions
            (True as released by SimVTP).
        norm_pix_target: normalise each channel inside each tube (VideoMAE's default).
        mean, std: the normalisation the input video carries (undone to build the target).
        video_mask_ratio: tube-mask ratio the data pipeline applies (the model reads the mask
            from the batch; this value sizes FLOP estimates and benchmarks).
        text_mask_ratio: MLM selection probability the data pipeline applies.
        mvm_weight, mlm_weight, vtc_weight, vtm_weight: loss weights; 0 switches a term off
            (its passes are then skipped).
        vtc_temperature: initial (or fixed) VTC temperature, 0.05 as released.
        vtc_learnable_temperature: learn log(1/temperature), clamped at 100 like CLIP.
        vtc_gather: compute VTC against features all-gathered from every rank.
        vtc_gather_with_grad: send gradients through the all-gather (else local only).
        vtm_negatives: "random" in-batch negatives as released, or "hard" ones sampled from
            the VTC similarity.
        vtc_queue: ALBEF's contrastive queue; 0 as released. VTC then scores each query
            against a momentum encoder's features of the batch and of the last ``vtc_queue``
            samples (first in, first out) instead of the batch's own. A small batch rarely
            holds two clips that differ only in what is hard to see; a queue of a few hundred
            does.
        vtc_inputs: what the VTC passes encode: the ``masked`` tubes and caption, as released,
            or the ``full`` clip and caption (costs a pass over every tube; the masks then
            shape MVM and MLM only). The CPU demo uses ``full`` with a queue: masked inputs
            hide what tells look-alike clips apart (recipes/README.md, "Tiny demo").
        vtc_momentum: the momentum encoder follows the encoder as an exponential moving
            average with this coefficient per training forward (ALBEF: 0.995 per step; with
            N microbatches a step moves it by 1 - m^N).
        activation_checkpointing: recompute encoder blocks in backward (less memory, ~1/3
            more compute).
        drop_path: stochastic-depth rate of the last encoder block, rising linearly from 0 at
            the first (VideoMAE's schedule); 0 in pretraining, 0.1 in SimVTP's fine-tuning.
    """

    image_size: int = 224
    num_frames: int = 16
    tubelet: tuple[int, int, int] = (2, 16, 16)
    in_chans: int = 3
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6
    decoder_width: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    use_text: bool = True
    vocab_size: int = 30522
    max_text_len: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    text_ln_eps: float = 1e-12
    text_dropout: float = 0.1
    pool_text_padding: bool = True
    norm_pix_target: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    video_mask_ratio: float = 0.9
    text_mask_ratio: float = 0.75
    mvm_weight: float = 1.0
    mlm_weight: float = 1.0
    vtc_weight: float = 1.0
    vtm_weight: float = 1.0
    vtc_temperature: float = 0.05
    vtc_learnable_temperature: bool = False
    vtc_gather: bool = False
    vtc_gather_with_grad: bool = False
    vtm_negatives: Literal["random", "hard"] = "random"
    vtc_queue: int = 0
    vtc_momentum: float = 0.995
    vtc_inputs: Literal["masked", "full"] = "masked"
    activation_checkpointing: bool = False
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        self.tubelet = tuple(int(v) for v in self.tubelet)
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def _problems(self):
        tt, ph, pw = self.tubelet
        if len(self.tubelet) != 3 or min(self.tubelet) < 1:
            yield f"tubelet must be three positive ints, got {self.tubelet}"
        if self.num_frames % tt:
            yield f"num_frames={self.num_frames} is not a multiple of tubelet[0]={tt}"
        if self.image_size % ph or self.image_size % pw:
            yield f"image_size={self.image_size} is not a multiple of the patch {ph}x{pw}"
        if self.width % self.num_heads:
            yield f"width={self.width} is not divisible by num_heads={self.num_heads}"
        if self.decoder_width % self.decoder_heads:
            yield (f"decoder_width={self.decoder_width} is not divisible by "
                   f"decoder_heads={self.decoder_heads}")
        if not 0.0 <= self.video_mask_ratio < 1.0:
            yield f"video_mask_ratio={self.video_mask_ratio} must be in [0, 1)"
        if self.vtm_negatives not in ("random", "hard"):
            yield f"vtm_negatives must be 'random' or 'hard', got {self.vtm_negatives!r}"
        if not 0.0 <= self.drop_path < 1.0:
            yield f"drop_path={self.drop_path} must be in [0, 1)"
        if self.vtc_queue < 0:
            yield f"vtc_queue={self.vtc_queue} must be >= 0"
        if self.vtc_inputs not in ("masked", "full"):
            yield f"vtc_inputs must be 'masked' or 'full', got {self.vtc_inputs!r}"
        if not 0.0 <= self.vtc_momentum < 1.0:
            yield f"vtc_momentum={self.vtc_momentum} must be in [0, 1)"
        if self.vtc_queue and self.vtc_gather:
            yield ("vtc_queue and vtc_gather cannot be combined (the queue is not gathered "
                   "across ranks)")
        if self.vtc_temperature <= 0:
            yield f"vtc_temperature={self.vtc_temperature} must be positive"
        weights = (self.mvm_weight, self.mlm_weight, self.vtc_weight, self.vtm_weight)
        if min(weights) < 0:
            yield f"loss weights must be >= 0, got {weights}"
        elif not self.active_terms:
            yield "no loss term is active (every weight is 0, or only text terms without text)"

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W') = frames and pixels divided by the tubelet."""
        tt, ph, pw = self.tubelet
        return self.num_frames // tt, self.image_size // ph, self.image_size // pw

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def tube_dim(self) -> int:
        """Values per tube: what the decoder predicts per masked token (3*tt*ph*pw)."""
        return self.in_chans * math.prod(self.tubelet)

    @property
    def num_masked(self) -> int:
        """Masked tokens per sample under tube masking at ``video_mask_ratio``."""
        _, h, w = self.grid
        return round(self.video_mask_ratio * h * w) * self.grid[0]

    @property
    def active_terms(self) -> tuple[str, ...]:
        """Loss terms that run: those with a positive weight (text terms need ``use_text``)."""
        terms = [("mvm", self.mvm_weight, False), ("mlm", self.mlm_weight, True),
                 ("vtc", self.vtc_weight, True), ("vtm", self.vtm_weight, True)]
        return tuple(n for n, w, text in terms if w > 0 and (self.use_text or not text))

    @property
    def joint_pass(self) -> bool:
        """Whether pass 1 encodes video and text tokens together (MVM, MLM and VTM read it)."""
        return bool({"mvm", "mlm", "vtm"} & set(self.active_terms))

    @property
    def single_passes(self) -> bool:
        """Whether passes 2 and 3 encode video and text alone (VTC, and VTM's hard negatives,
        which are mined from their similarities)."""
        terms = self.active_terms
        return "vtc" in terms or ("vtm" in terms and self.vtm_negatives == "hard")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tubelet"], out["mean"], out["std"] = (list(out[k]) for k in ("tubelet", "mean", "std"))
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (json, YAML); unknown keys are an error that names them.
        Keys in :data:`RENAMED_KEYS` are read under their new name (older checkpoints)."""
        values = {RENAMED_KEYS.get(k, k): v for k, v in values.items()}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}")
        return cls(**values)


MODEL_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(image_size=32, num_frames=8, tubelet=(2, 8, 8), width=128, depth=4,
                 num_heads=4, decoder_width=96, decoder_depth=2, decoder_heads=3,
                 max_text_len=32),
    "small": dict(width=384, depth=12, num_heads=6, decoder_width=192, decoder_depth=4,
                  decoder_heads=3),
    "base": dict(width=768, depth=12, num_heads=12, decoder_width=384, decoder_depth=4,
                 decoder_heads=6),
    "large": dict(width=1024, depth=24, num_heads=16, decoder_width=512, decoder_depth=12,
                  decoder_heads=8),
}


def model_config(size: str = "base", **overrides: Any) -> ModelConfig:
    """A size preset with overrides, e.g. ``model_config("tiny", vtm_weight=0.0)``.

    Args:
        size: one of ``MODEL_SIZES`` (tiny, small, base, large).
        **overrides: any :class:`ModelConfig` field.
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose from {sorted(MODEL_SIZES)}")
    return ModelConfig.from_dict({**MODEL_SIZES[size], **overrides})
