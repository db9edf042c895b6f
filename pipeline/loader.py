"""The Composer-facing data loader: shards in, batch dicts out, resumable from checkpoints.

Composer 0.32 checkpoints the data position only when the train dataloader inside the DataSpec is a
real ``torch.utils.data.DataLoader`` (``State._dataset_of``); a DALI iterator is not one and would
silently restart the stream on resume. So the loader is a DataLoader: its dataset yields encoded
samples (Streaming, or DALI's tar reader) and its ``collate_fn`` runs the whole pixel and token
stage (frame choice, DALI decode + augment, masks, tokenizer). With ``num_workers=0`` that stage
runs in the training process (no look-ahead); with workers each worker owns a DALI pipeline and the
DataLoader prefetches finished batches, which keeps prefetch without a resumption callback.
benchmarks/RESULTS.md compares both settings; tests/test_pipeline_loader.py proves exact resumption
through a Composer checkpoint (with dataloader spinning off, so only the saved state can do it).
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import torch

from pipeline.config import DataConfig
from pipeline.decode import (
    CodecError,
    CorruptSampleError,
    VideoDecoder,
    center_crop,
    check_codec,
    multiscale_crop,
    normalize_video,
    random_resized_crop,
)
from pipeline.erasing import random_erasing
from pipeline.masks import video_mask
from pipeline.samplers import eval_indices, frame_indices, sample_rng, shard_stride
from pipeline.shared_memory import clean_leaked_shared_memory
from pipeline.sources import (
    MdsSource,
    WdsSource,
    first_meta_mds,
    first_meta_wds,
    shard_folder,
)
from pipeline.text import TextEncoder


def _batch_seed(seed: int, epoch: int, keys: list[str]) -> int:
    return zlib.crc32("|".join(keys).encode(), zlib.crc32(f"{seed}:{epoch}".encode()))


# Rounds of replacing corrupt samples in one batch before giving up on it.
REPLACE_ROUNDS = 4


class BatchBuilder:
    """The DataLoader's ``collate_fn``: a list of encoded samples -> one batch dict.

    The DALI pipeline and the tokenizer are created lazily, so each worker process owns its own.

    In training, a corrupt sample (undecodable video, unreadable record) does not end the
    batch: it is replaced by another sample and reported in the batch's ``skipped`` list
    (key and reason), which recipes.callbacks.BadSamples logs and counts against
    ``max_bad_samples``. Replacements come from the source by a seeded draw when it allows
    random access (MDS), else from the batch's good samples. Evaluation raises instead.

    Args:
        cfg: the data configuration.
        source: the dataset the samples come from (for replacements).
    """

    def __init__(self, cfg: DataConfig, source=None):
        self.cfg = cfg
        self.source = source if isinstance(source, MdsSource) else None  # random access
        self._decoder: VideoDecoder | None = None
        self._text: TextEncoder | None = None
        self._bad: set[str] = set()

    def _parts(self):
        cfg = self.cfg
        if self._decoder is None:
            device_id = torch.cuda.current_device() if cfg.device == "gpu" else None
            augment = cfg.rand_augment if cfg.view is None else None  # training only
            self._decoder = VideoDecoder(cfg.device, cfg.batch_size, cfg.num_threads,
                                         cfg.image_size, device_id, not cfg.normalize_on_device,
                                         cfg.interpolation, augment, cfg.seed,
                                         cfg.resize_backend)
            self._text = TextEncoder(cfg.tokenizer_path, cfg.text_max_length,
                                     cfg.text_mask_ratio, cfg.mlm_mode, cfg.text_padding,
                                     cfg.mlm_selection)
        return self._decoder, self._text

    def sample_feed(self, sample: dict) -> dict:
        """Frame indices, crop window and flip of one sample: drawn from its own generator in
        training, fixed (evenly spaced view, spatial crop ``crop_view``, no flip) in
        evaluation."""
        cfg, meta = self.cfg, sample["meta"]
        check_codec(meta["codec"], cfg.device)
        count, height, width = int(meta["frames"]), int(meta["height"]), int(meta["width"])
        # A stride-4 window on a shard that kept every 4th frame is 4 consecutive frames.
        stride = shard_stride(cfg.stride, int(meta.get("frame_step", 1)), cfg.sampler)
        if cfg.view is not None:
            frames = eval_indices(cfg.sampler, count, cfg.num_frames, stride,
                                  cfg.sparse_clips, cfg.view, cfg.views)
            y0, x0, h, w = center_crop(height, width, cfg.crop_scales[0], cfg.crop_view,
                                       cfg.crops)
            flip = 0
        else:
            rng = sample_rng(cfg.seed, sample.get("epoch", 0), sample["key"])
            starts = meta.get("key_frames") if cfg.key_frame_windows else None
            frames = frame_indices(cfg.sampler, count, cfg.num_frames, stride,
                                   cfg.sparse_clips, rng, starts)
            if cfg.crop == "random_resized":
                y0, x0, h, w = random_resized_crop(height, width, cfg.crop_area, cfg.crop_ratio,
                                                   rng)
            else:
                y0, x0, h, w = multiscale_crop(height, width, cfg.crop_scales, rng)
            flip = int(cfg.flip and rng.random() < 0.5)
        return {"video": np.frombuffer(sample["video"], np.uint8), "frames": frames,
                "roi_start": np.array([y0, x0], np.float32),
                "roi_end": np.array([y0 + h, x0 + w], np.float32),
                "flip": np.array(flip, np.int32)}

    def __call__(self, samples: list[dict]) -> dict:
        if len(samples) > self.cfg.batch_size:
            # not a bad sample: the decoder was built for at most cfg.batch_size clips
            raise ValueError(f"a batch of {len(samples)} samples, but the DataConfig's batch_size "
                             f"is {self.cfg.batch_size} (the largest batch the decoder is built "
                             "for): give the DataLoader a batch_size <= DataConfig.batch_size")
        if self.cfg.view is not None:
            return self.build(samples)
        skipped: list[dict] = []
        for _ in range(REPLACE_ROUNDS):
            bad = {s["key"]: s["error"] for s in samples if "error" in s}
            if not bad:
                try:
                    return {**self.build(samples), "skipped": skipped}
                except CorruptSampleError as err:
                    bad = dict.fromkeys(err.keys, err.detail)
            skipped += [{"key": key, "reason": reason} for key, reason in bad.items()]
            self._bad.update(bad)
            samples = self._replace(samples, set(bad))
        raise CorruptSampleError(f"corrupt sample(s) {[s['key'] for s in skipped]}: replacements "
                                 f"kept failing ({skipped[-1]['reason']})",
                                 [s["key"] for s in skipped])

    def _replace(self, samples: list[dict], bad: set[str]) -> list[dict]:
        """``samples`` with each bad one swapped for another sample (seeded by its key)."""
        good = [s for s in samples if s["key"] not in bad]
        taken = {s["key"] for s in samples} | self._bad
        epoch = samples[0].get("epoch", 0)
        out = []
        for sample in samples:
            if sample["key"] not in bad:
                out.append(sample)
                continue
            substitute = self._draw(sample["key"], epoch, taken)
            if substitute is None and good:
                substitute = good[len(out) % len(good)]  # no random access: repeat a good one
            if substitute is None:
                raise CorruptSampleError(f"corrupt sample(s) {sorted(bad)}: nothing left in the "
                                         "batch to replace them with", sorted(bad))
            taken.add(substitute["key"])
            out.append(substitute)
        return out

    def _draw(self, key: str, epoch: int, taken: set[str]) -> dict | None:
        if self.source is None:
            return None
        size = int(getattr(self.source, "num_samples", 0) or len(self.source))
        for attempt in range(8):
            index = zlib.crc32(f"{self.cfg.seed}:{epoch}:{key}:{attempt}".encode()) % size
            try:
                candidate = self.source[index]
            except Exception:  # e.g. a copy in a worker that cannot reach the shards
                return None
            if "error" not in candidate and candidate["key"] not in taken:
                return {**candidate, "epoch": epoch}
        return None

    def build(self, samples: list[dict]) -> dict:
        """The batch dict of ``samples``; raises CorruptSampleError naming any bad one."""
        bad = {s["key"]: s["error"] for s in samples if "error" in s}
        if bad:
            raise CorruptSampleError(f"corrupt sample(s) {list(bad)}: {next(iter(bad.values()))}",
                                     list(bad), next(iter(bad.values())))
        decoder, text = self._parts()
        keys = [s["key"] for s in samples]
        per_sample = []
        for sample in samples:
            try:
                per_sample.append(self.sample_feed(sample))
            except (KeyError, TypeError, ValueError) as err:
                if isinstance(err, CodecError):
                    raise
                raise CorruptSampleError(f"corrupt sample(s) {[sample['key']]}: bad metadata "
                                         f"({err!r})", [sample["key"]],
                                         f"bad metadata: {err!r}") from err
        feeds = {name: [f[name] for f in per_sample] for name in per_sample[0]}
        video = decoder(feeds, keys, [s["meta"]["codec"] for s in samples])
        seed = _batch_seed(self.cfg.seed, samples[0].get("epoch", 0), keys)
        if self.cfg.random_erasing and self.cfg.view is None:
            video = random_erasing(video, self.cfg.random_erasing,
                                   torch.Generator().manual_seed(seed + 1))
        generator = torch.Generator(device=video.device).manual_seed(seed)
        mask = video_mask(self.cfg.mask_kind, len(keys), self.cfg.mask_grid,
                          self.cfg.video_mask_ratio, generator)
        tokens = text([s["caption"] for s in samples], torch.Generator().manual_seed(seed))
        return {"video": video, "video_mask": mask, **tokens, "keys": keys}


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def build_source(cfg: DataConfig, clean_shared_memory: bool = True):
    """The dataset of encoded samples, after checking that its codec suits ``cfg.device``.

    Args:
        cfg: the data configuration.
        clean_shared_memory: first remove the Streaming shared memory that crashed runs
            left (prefixes no process maps; pipeline/shared_memory.py).

    Raises:
        CodecError: before any batch, when the shards' codec cannot be decoded on the device.
    """
    folder = shard_folder(cfg.path, cfg.format)
    if cfg.format == "wds":
        check_codec(first_meta_wds(folder)["codec"], cfg.device)
        return WdsSource(folder, cfg.batch_size, cfg.shuffle, cfg.seed, *_rank_world())
    if clean_shared_memory:
        clean_leaked_shared_memory()
    local = cfg.path if cfg.remote else str(folder)
    source = MdsSource(local, cfg.remote, cfg.batch_size, cfg.shuffle, cfg.seed)
    check_codec(first_meta_mds(source)["codec"], cfg.device)
    return source


class EpochDataLoader(torch.utils.data.DataLoader):
    """A torch DataLoader (so Composer checkpoints its dataset's state) that tells an
    epoch-aware source (the WDS reader) which epoch starts, before the workers are forked."""

    def __iter__(self):
        begin = getattr(self.dataset, "begin_epoch", None)
        if begin is not None:
            begin()
        return super().__iter__()


def build_dataloader(cfg: DataConfig, clean_shared_memory: bool = True) -> EpochDataLoader:
    """A torch DataLoader yielding batch dicts (BatchBuilder.build) for this rank.

    With ``device="gpu"`` decoding happens in the main process (CUDA cannot be used in forked
    workers), so ``num_workers`` is ignored there.

    Args:
        cfg: the data configuration.
        clean_shared_memory: remove Streaming shared memory leaked by a crashed run first
            (see build_source).
    """
    if cfg.device == "gpu" and not torch.cuda.is_available():
        raise ValueError("data.device=gpu needs a CUDA GPU for DALI's mixed decoder and none is "
                         "visible; use data.device=cpu with VP9 or MJPEG shards")
    workers = 0 if cfg.device == "gpu" else cfg.num_workers
    source = build_source(cfg, clean_shared_memory)
    return EpochDataLoader(
        source, batch_size=cfg.batch_size,
        collate_fn=BatchBuilder(cfg, source), num_workers=workers, drop_last=cfg.drop_last,
        prefetch_factor=cfg.prefetch if workers else None,
        persistent_workers=workers > 0 and cfg.format == "mds",
        # spawn: a worker forked from a process whose DALI pipelines have live threads can
        # inherit a held lock and segfault; each worker builds its own pipeline anyway.
        multiprocessing_context="spawn" if workers else None)


def split_batch(batch: dict, microbatch_size: int | float) -> list[dict]:
    """Splits a batch dict into microbatches of ``microbatch_size`` samples (Composer hook).

    Args:
        batch: a batch dict.
        microbatch_size: samples per microbatch.
    """
    size, step = len(batch["keys"]), int(microbatch_size)
    # "skipped" (corrupt samples replaced) describes the whole batch: callbacks read it there
    return [{name: value[start:start + step] for name, value in batch.items()
             if name != "skipped"} for start in range(0, size, step)]


def num_samples_in_batch(batch: dict) -> int:
    """The number of samples in a batch dict (Composer hook)."""
    return len(batch["keys"])


def build_dataspec(cfg: DataConfig, clean_shared_memory: bool = True):
    """The Composer DataSpec to pass as ``Trainer(train_dataloader=...)``.

    Args:
        cfg: the data configuration.
        clean_shared_memory: remove Streaming shared memory leaked by a crashed run first.
    """
    from composer.core import DataSpec

    transform = normalize_video if cfg.normalize_on_device else None
    return DataSpec(build_dataloader(cfg, clean_shared_memory), split_batch=split_batch,
                    get_num_samples_in_batch=num_samples_in_batch,
                    microbatch_transforms=transform)
