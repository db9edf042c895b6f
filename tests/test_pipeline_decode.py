"""DALI decoding against ffmpeg, the codec/device check and the corrupt-sample report."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from pipeline import CodecError, CorruptSampleError, DataConfig, build_dataloader
from pipeline.config import MEAN_255, STD_255
from pipeline.decode import VideoDecoder
from pipeline.loader import BatchBuilder
from pipeline.mjpeg import avi_chunks, is_whole_jpeg, jpeg_frames


def ffmpeg_frames(path, width: int, height: int) -> np.ndarray:
    """Every frame of ``path`` as RGB uint8 (F, H, W, 3), decoded by ffmpeg's command line."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def _to_pixels(video) -> np.ndarray:
    """(3, T, H, W) normalised float -> (T, H, W, 3) on the 0-255 scale."""
    mean, std = np.array(MEAN_255), np.array(STD_255)
    return video.numpy().transpose(1, 2, 3, 0) * std + mean


@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_decoded_frames_equal_ffmpeg_frames_at_the_sampled_indices(pipeline_shards, codec):
    shards = pipeline_shards[codec]
    # Scale 1 on 320x240 crops 240x240; image_size 240 makes the resize an identity, so the
    # only differences left are YUV->RGB rounding between DALI's and ffmpeg's converters.
    cfg = DataConfig(path=str(shards.root), batch_size=2, image_size=240, crop_scales=(1.0,),
                     tubelet=(2, 16, 16), shuffle=False, seed=5)
    loader = build_dataloader(cfg)
    builder = BatchBuilder(cfg)
    checked, flips, near, far = 0, set(), 0.0, 0.0
    for batch, samples in zip(loader, _pairs(loader.dataset), strict=False):
        for video, sample in zip(batch["video"], samples, strict=True):
            feed = builder.sample_feed(sample)
            meta = sample["meta"]
            every = ffmpeg_frames(shards.files[sample["key"]], meta["width"], meta["height"])
            assert len(every) == meta["frames"]
            got = _to_pixels(video)
            flips.add(int(feed["flip"]))
            error = {shift: _mad(got, every, feed, shift) for shift in (-8, -1, 0, 1, 8)}
            assert error[0] < 3.0, (sample["key"], error)
            assert error[0] == min(error.values()), (sample["key"], error)
            near += error[0]
            far += error[8]
            checked += 1
    assert far > 2 * near, "a frame index off by 8 must differ by more than rounding"
    assert checked == len(shards.files)
    if checked >= 8:  # flips are codec-independent; the 10-clip VP9 set draws both
        assert flips == {0, 1}


def _mad(got: np.ndarray, every: np.ndarray, feed: dict, shift: int) -> float:
    """Mean abs difference between DALI's frames and ffmpeg's frames at indices + shift."""
    y0, x0 = (int(v) for v in feed["roi_start"])
    indices = np.clip(feed["frames"] + shift, 0, len(every) - 1)
    expect = every[indices, y0:y0 + got.shape[1], x0:x0 + got.shape[2]].astype(np.float64)
    if feed["flip"]:
        expect = expect[:, :, ::-1]
    assert got.shape == expect.shape
    return float(np.abs(got - expect).mean())


def _pairs(source):
    """The encoded samples of each batch, in loader order (no shuffle, no workers)."""
    samples = [{**source[i], "epoch": 0} for i in range(len(source))]
    return [samples[i:i + 2] for i in range(0, len(samples), 2)]


def test_h264_on_cpu_fails_before_the_first_batch_naming_codec_device_and_fix(pipeline_shards):
    for fmt in ("mds", "wds"):
        cfg = DataConfig(path=str(pipeline_shards["h264"].root), format=fmt, device="cpu")
        with pytest.raises(CodecError) as err:
            build_dataloader(cfg)
        message = str(err.value)
        assert "h264" in message and "device=cpu" in message
        assert "vtp shard --codec vp9" in message and "GPU" in message


@pytest.mark.parametrize("fmt", ["mds", "wds"])
def test_corrupt_sample_is_skipped_in_training_and_reported_with_its_key(pipeline_shards, fmt):
    shards = pipeline_shards["corrupt"]
    bad_key = list(shards.files)[2]
    cfg = DataConfig(path=str(shards.root), format=fmt, batch_size=4, image_size=64,
                     shuffle=False)
    batch = next(iter(build_dataloader(cfg)))
    assert [s["key"] for s in batch["skipped"]] == [bad_key]
    assert batch["video"].shape[0] == 4 and bad_key not in batch["keys"]


@pytest.mark.parametrize("fmt", ["mds", "wds"])
def test_corrupt_sample_in_evaluation_is_an_error_naming_its_key(pipeline_shards, fmt):
    shards = pipeline_shards["corrupt"]
    bad_key = list(shards.files)[2]
    cfg = DataConfig(path=str(shards.root), format=fmt, batch_size=4, image_size=64,
                     shuffle=False, view=0, views=1)
    with pytest.raises(CorruptSampleError) as err:
        next(iter(build_dataloader(cfg)))
    assert err.value.keys == [bad_key]
    assert bad_key in str(err.value)


def test_a_batch_larger_than_the_configured_one_is_a_clear_error_not_corrupt_samples(
        pipeline_shards):
    shards = pipeline_shards["vp9"]
    cfg = DataConfig(path=str(shards.root), batch_size=2, image_size=64, shuffle=False)
    source = build_dataloader(cfg).dataset
    samples = [{**source[i], "epoch": 0} for i in range(3)]
    with pytest.raises(ValueError, match="a batch of 3 samples, but the DataConfig's batch_size "
                                         "is 2") as err:
        BatchBuilder(cfg, source)(samples)
    assert not isinstance(err.value, CorruptSampleError)


def test_corrupt_sample_in_a_worker_process_is_reported_not_hung(pipeline_shards):
    shards = pipeline_shards["corrupt"]
    cfg = DataConfig(path=str(shards.root), batch_size=2, image_size=64, shuffle=False,
                     num_workers=2)
    skipped = [s["key"] for batch in build_dataloader(cfg) for s in batch["skipped"]]
    assert skipped == [list(shards.files)[2]]


def test_mjpeg_jpeg_frame_route_matches_the_video_decoder(pipeline_shards):
    shards = pipeline_shards["mjpeg"]
    cfg = DataConfig(path=str(shards.root), batch_size=4, image_size=64, shuffle=False)
    source = build_dataloader(cfg).dataset
    samples = [{**source[i], "epoch": 0} for i in range(len(source))]
    for sample in samples:
        assert len(avi_chunks(sample["video"])) == sample["meta"]["frames"]
    builder = BatchBuilder(cfg)
    per = [builder.sample_feed(s) for s in samples]
    feeds = {name: [f[name] for f in per] for name in per[0]}
    assert VideoDecoder.route(feeds, ["mjpeg"] * 4)[1] == cfg.num_frames
    assert VideoDecoder.route(feeds, ["vp9"] * 4)[1] == 0
    decoder = VideoDecoder("cpu", 4, 2, 64)
    keys = [s["key"] for s in samples]
    by_jpeg, by_video = decoder(feeds, keys, ["mjpeg"] * 4), decoder(feeds, keys, None)
    assert (by_jpeg - by_video).abs().mean() < 0.02  # normalised units: < 1 grey level
    assert jpeg_frames(np.frombuffer(b"RIFF....WAVE", np.uint8), np.array([0])) is None


def test_a_cut_mjpeg_frame_is_reported_with_its_key_before_dali_sees_it(pipeline_shards):
    shards = pipeline_shards["mjpeg"]
    cfg = DataConfig(path=str(shards.root), batch_size=2, image_size=64, shuffle=False)
    source = build_dataloader(cfg).dataset
    samples = [{**source[i], "epoch": 0} for i in range(2)]
    builder = BatchBuilder(cfg)
    per = [builder.sample_feed(s) for s in samples]
    video = per[1]["video"].copy()
    offset, size = avi_chunks(video)[int(per[1]["frames"][3])]
    frame = video[offset:offset + size].copy()
    assert is_whole_jpeg(frame) and is_whole_jpeg(np.concatenate([frame, np.zeros(3, np.uint8)]))
    assert not is_whole_jpeg(frame[: size // 2]) and not is_whole_jpeg(frame[:40])
    video[offset + 2:offset + size // 2] = 0  # markers gone, start and end intact
    assert not is_whole_jpeg(video[offset:offset + size])
    per[1]["video"] = video
    feeds = {name: [f[name] for f in per] for name in per[0]}
    with pytest.raises(CorruptSampleError, match="not a whole JPEG") as err:
        VideoDecoder("cpu", 2, 2, 64)(feeds, [s["key"] for s in samples], ["mjpeg"] * 2)
    assert err.value.keys == [samples[1]["key"]]

def _colours(video: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 -> the set of its RGB colours as sorted int codes."""
    rgb = video.reshape(3, -1).to(torch.int64)
    return np.unique((rgb[0] << 16 | rgb[1] << 8 | rgb[2]).numpy())


def test_nearest_resize_picks_source_pixels_and_linear_blends_them(pipeline_shards):
    shards = pipeline_shards["mjpeg"]
    # Scale 1 on 320x240 crops 240x240: at 240 px the resize is an identity (the source frame).
    cfg = DataConfig(path=str(shards.root), batch_size=2, image_size=240, crop_scales=(1.0,),
                     flip=False, shuffle=False)
    source = build_dataloader(cfg).dataset
    samples = [{**source[i], "epoch": 0} for i in range(2)]
    builder = BatchBuilder(cfg)
    per = [builder.sample_feed(s) for s in samples]
    feeds = {name: [f[name] for f in per] for name in per[0]}
    keys = [s["key"] for s in samples]

    def decode(size: int, interpolation: str) -> torch.Tensor:
        decoder = VideoDecoder("cpu", 2, 2, size, normalize=False, interpolation=interpolation)
        return decoder(feeds, keys, ["mjpeg"] * 2)

    full = decode(240, "linear")
    for interpolation in ("nearest", "linear"):
        small = decode(64, interpolation)
        assert small.shape == (2, 3, cfg.num_frames, 64, 64) and small.dtype == torch.uint8
        new = sum(np.setdiff1d(_colours(small[b, :, t]), _colours(full[b, :, t])).size
                  for b in range(2) for t in range(cfg.num_frames))
        assert (new == 0) == (interpolation == "nearest"), (interpolation, new)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU for DALI's mixed decoder; the same pipeline "
                           "definition is checked against ffmpeg on the CPU above")
@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_gpu_decoding_matches_cpu_decoding(pipeline_shards, codec):
    shards = pipeline_shards[codec]
    base = dict(path=str(shards.root), batch_size=2, image_size=64, shuffle=False)
    cpu = next(iter(build_dataloader(DataConfig(**base))))
    gpu = next(iter(build_dataloader(DataConfig(**base, device="gpu"))))
    assert gpu["video"].is_cuda and gpu["keys"] == cpu["keys"]
    assert (gpu["video"].cpu() - cpu["video"]).abs().mean() < 0.05
    h264 = next(iter(build_dataloader(DataConfig(path=str(pipeline_shards["h264"].root),
                                                 batch_size=2, image_size=64, device="gpu"))))
    assert h264["video"].shape == (2, 3, 16, 64, 64)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_gpu_device_without_a_gpu_says_so(pipeline_shards):
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        build_dataloader(DataConfig(path=str(pipeline_shards["vp9"].root), device="gpu"))
