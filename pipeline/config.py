"""The typed configuration of the online data pipeline (one recipe section: `data`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# ImageNet statistics, the pixel normalisation of every clip (the model's config carries them
# to undo it); on the 0-255 scale for DALI, which normalises uint8 frames directly.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN_255 = tuple(m * 255 for m in IMAGENET_MEAN)
STD_255 = tuple(s * 255 for s in IMAGENET_STD)


def short_side_for(image_size: int) -> int:
    """The short side to shard clips at for ``image_size`` px crops: 8/7 of the input, even.

    ImageNet's (and VideoMAE's) 256 for 224 px crops: the crop scales sit on the short side,
    and a centre crop keeps a margin. Even because H.264 and VP9 in 4:2:0 need even sizes.
    """
    return 2 * round(image_size * 4 / 7)


@dataclass
class DataConfig:
    """Everything the pipeline needs to turn shards into batch dicts.

    Args:
        path: shard directory (holding ``mds/`` or ``wds/``), or the MDS/WDS folder itself.
        remote: optional remote MDS location; ``path`` is then the local cache.
        format: ``mds`` (Streaming, exact resume) or ``wds`` (DALI webdataset reader).
        device: ``cpu`` (VP8/VP9/MJPEG) or ``gpu`` (DALI mixed decoder, adds H.264/HEVC/AV1).
        batch_size: samples per batch on this rank.
        num_frames: frames per sample (T).
        stride: frame stride of the dense sampler.
        sampler: ``dense`` (VideoMAE), ``segments`` (TSN) or ``sparse`` (ClipBERT).
        sparse_clips: number of short clips of the sparse sampler.
        key_frame_windows: dense windows start on a key frame, on shards whose meta lists
            them (`vtp shard --codec vp9-ivf`): nothing is decoded and thrown away, at the
            cost of fewer distinct start positions (one per GOP instead of one per frame).
        image_size: output height and width.
        crop: training crop, ``multiscale`` (VideoMAE/SimVTP pretraining's
            GroupMultiScaleCrop over ``crop_scales``) or ``random_resized`` (SimVTP
            fine-tuning's RandomResizedCrop over ``crop_area`` and ``crop_ratio``).
        crop_scales: multi-scale crop scales relative to the short side (the first one is
            also the evaluation crop's side).
        crop_area: random resized crop: fraction of the frame's area, (min, max).
        crop_ratio: random resized crop: aspect ratio w/h, (min, max).
        flip: random horizontal flip.
        rand_augment: training only: ``[n, m]`` for DALI's RandAugment (n operations at
            magnitude m of 10 per clip, every frame alike; SimVTP fine-tunes with n=4, m=7);
            None for none. Its draws come from DALI's generator seeded by ``seed``, so unlike
            crops and flips they do not follow the sample keys across a resume.
        random_erasing: training only: per-frame probability of timm's random erasing
            (pipeline/erasing.py; SimVTP fine-tunes with 0.25); 0 for none.
        interpolation: resize filter, ``linear`` (VideoMAE's bilinear), ``cubic`` or
            ``nearest``. On the CPU, linear goes through torch by default (``resize_backend``);
            ``nearest`` and ``cubic`` resize in DALI, whose linear resize costs about 0.7 ms
            per 224x224 frame and nearest about 0.1 ms (benchmarks/RESULTS.md). On a GPU the
            choice costs nothing measurable.
        resize_backend: where the CPU path resizes. ``torch`` (and ``auto``, on the CPU with
            linear resizing and no RandAugment) has DALI decode only (JPEG frames inside the
            crop window) and resizes (bilinear, uint8 channels-last), flips and normalises in
            torch: the same picture for about a ninth of the resize's CPU, a third more
            samples per CPU second in all (benchmarks/RESULTS.md). ``dali`` keeps all pixel
            work in DALI; the GPU path and RandAugment always do (``torch`` with either, or
            with another interpolation, is refused).
        tubelet: (tt, ph, pw) of the model; the mask grid is derived from it.
        mask_kind: ``tube``, ``random`` or ``frame``.
        video_mask_ratio: fraction of video tokens hidden from the encoder.
        text_mask_ratio: fraction of caption word pieces selected for MLM.
        text_max_length: tokens per caption including [CLS] and [SEP]; longer ones are cut.
        text_padding: ``max_length`` (every batch is ``text_max_length`` wide) or ``longest``
            (as wide as the batch's longest caption, as SimVTP pads).
        mlm_mode: ``simvtp`` (every selected token -> [MASK]) or ``bert`` (80/10/10).
        mlm_selection: ``exact`` (``max(1, round(ratio*n))`` word pieces of each caption) or
            ``bernoulli`` (each word piece with probability ``text_mask_ratio``, as SimVTP).
        tokenizer_path: local BERT uncased tokenizer; None uses the shipped one.
        shuffle: shuffle the sample order (seeded).
        seed: seeds order, frame sampling, crops, flips and masks; no global RNG is used.
        num_workers: torch DataLoader worker processes (each runs its own DALI pipeline).
        num_threads: DALI CPU threads per pipeline.
        prefetch: batches prepared ahead per worker.
        drop_last: drop the last incomplete batch (keeps every batch the same shape).
        normalize_on_device: the loader hands over uint8 video (4x less to copy between
            processes and to the GPU) and the DataSpec normalises each microbatch on the
            training device; the model still receives float32.
        view: None for training (random frames, crop and flip); an int selects evaluation:
            the ``view``-th of ``views`` evenly spaced clips, centre crop, no flip.
        views: evaluation clips per video (multi-view testing averages their features).
        crop_view: evaluation: which of ``crops`` spatial crops (along the long side).
        crops: evaluation: spatial crops per clip (3 in SimVTP's test; 1 = centre).
        max_bad_samples: corrupt samples a training run skips (each replaced by another
            sample, so batches stay full) before it stops: a count of distinct keys, or a
            fraction in (0, 1) of this process's samples (rounded up). 0 stops at the first.
    """

    path: str = ""
    remote: str | None = None
    format: Literal["mds", "wds"] = "mds"
    device: Literal["cpu", "gpu"] = "cpu"
    batch_size: int = 8
    num_frames: int = 16
    stride: int = 4
    sampler: Literal["dense", "segments", "sparse"] = "dense"
    sparse_clips: int = 4
    key_frame_windows: bool = False
    image_size: int = 224
    crop: Literal["multiscale", "random_resized"] = "multiscale"
    crop_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    crop_area: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    rand_augment: tuple[int, int] | None = None
    random_erasing: float = 0.0
    interpolation: Literal["nearest", "linear", "cubic"] = "linear"
    resize_backend: Literal["auto", "dali", "torch"] = "auto"
    tubelet: tuple[int, int, int] = (2, 16, 16)
    mask_kind: Literal["tube", "random", "frame"] = "tube"
    video_mask_ratio: float = 0.9
    text_mask_ratio: float = 0.75
    text_max_length: int = 32
    text_padding: Literal["max_length", "longest"] = "max_length"
    mlm_mode: Literal["simvtp", "bert"] = "simvtp"
    mlm_selection: Literal["exact", "bernoulli"] = "exact"
    tokenizer_path: str | None = None
    shuffle: bool = True
    seed: int = 0
    num_workers: int = 0
    num_threads: int = 2
    prefetch: int = 2
    drop_last: bool = True
    normalize_on_device: bool = False
    view: int | None = None
    views: int = 1
    crop_view: int = 0
    crops: int = 1
    max_bad_samples: int | float = 0.001

    def __post_init__(self) -> None:
        self.crop_scales = tuple(float(s) for s in self.crop_scales)
        self.crop_area = tuple(float(s) for s in self.crop_area)
        if self.rand_augment is not None:
            self.rand_augment = tuple(int(v) for v in self.rand_augment)
        self.crop_ratio = tuple(float(s) for s in self.crop_ratio)
        self.tubelet = tuple(int(t) for t in self.tubelet)
        checks = {
            "format": self.format in ("mds", "wds"),
            "device": self.device in ("cpu", "gpu"),
            "sampler": self.sampler in ("dense", "segments", "sparse"),
            "mask_kind": self.mask_kind in ("tube", "random", "frame"),
            "mlm_mode": self.mlm_mode in ("simvtp", "bert"),
            "text_padding": self.text_padding in ("max_length", "longest"),
            "mlm_selection": self.mlm_selection in ("exact", "bernoulli"),
            "interpolation": self.interpolation in ("nearest", "linear", "cubic"),
            # torch's route resizes bilinear only, before any RandAugment could run
            "resize_backend": self.resize_backend in ("auto", "dali") or (
                self.resize_backend == "torch" and self.interpolation == "linear"
                and self.rand_augment is None),
            "batch_size": self.batch_size >= 1,
            "view": self.view is None or 0 <= self.view < self.views,
            "crop_view": 0 <= self.crop_view < self.crops,
            "crop": self.crop in ("multiscale", "random_resized"),
            "random_erasing": 0.0 <= self.random_erasing <= 1.0
            and not (self.random_erasing and self.normalize_on_device),
            "rand_augment": self.rand_augment is None or (
                len(self.rand_augment) == 2 and self.rand_augment[0] >= 1
                and 0 <= self.rand_augment[1] <= 10),
            "crop_area": len(self.crop_area) == 2
            and 0 < self.crop_area[0] <= self.crop_area[1] <= 1,
            "crop_ratio": len(self.crop_ratio) == 2
            and 0 < self.crop_ratio[0] <= self.crop_ratio[1],
            "max_bad_samples": self.max_bad_samples >= 0 and (
                isinstance(self.max_bad_samples, int) or self.max_bad_samples < 1),
            "video_mask_ratio": 0.0 <= self.video_mask_ratio < 1.0,
            "text_mask_ratio": 0.0 <= self.text_mask_ratio <= 1.0,
            "num_frames": self.num_frames % self.tubelet[0] == 0,
            "image_size": self.image_size % self.tubelet[1] == 0
            and self.image_size % self.tubelet[2] == 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid DataConfig field(s) {bad}: {self}")

    def bad_sample_budget(self, samples: int) -> int:
        """How many distinct corrupt samples a run over ``samples`` samples may skip."""
        if isinstance(self.max_bad_samples, int):
            return self.max_bad_samples
        return math.ceil(self.max_bad_samples * samples)

    @property
    def mask_grid(self) -> tuple[int, int, int]:
        """(T', H', W'): the token grid of one sample, from the model's tubelet size."""
        tt, ph, pw = self.tubelet
        return self.num_frames // tt, self.image_size // ph, self.image_size // pw
