"""Shard settings that cut decode work (frame step, IVF key frames) and the pipeline's use of
them; the peer loaders of the pipeline benchmark produce what vtp produces."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import DataConfig
from pipeline.loader import BatchBuilder
from pipeline.samplers import dense_indices, frame_indices, shard_stride
from tools.shard import TranscodeOptions
from tools.shard.inputs import WorkItem


@pytest.fixture(scope="module")
def source_clip(tmp_path_factory) -> Path:
    """40 frames of a moving test pattern at 25 fps, H.264 as WebVid serves it."""
    path = tmp_path_factory.mktemp("fast") / "src.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=96x64:rate=25:duration=1.6", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _sharded(source: Path, tmp: Path, **options) -> tuple[bytes, dict]:
    from tools.shard.worker import process_batch

    (result,) = process_batch([WorkItem("k", "a caption", "src.mp4", str(source))],
                              TranscodeOptions(**options), str(tmp))
    assert result.status == "ok", result.reason
    return result.data, result.meta


def test_frame_step_keeps_every_nth_frame_and_is_recorded(source_clip, tmp_path):
    data, meta = _sharded(source_clip, tmp_path, codec="vp9", frame_step=4, gop=4)
    assert (meta["frames"], meta["fps"], meta["frame_step"]) == (10, 6.25, 4)
    assert "key_frames" not in meta  # WebM is not cut by the pipeline: no index needed


def test_ivf_shards_record_key_frames_that_ffprobe_agrees_with(source_clip, tmp_path):
    from pipeline.ivf import key_frames

    data, meta = _sharded(source_clip, tmp_path, codec="vp9-ivf", gop=8)
    assert (meta["codec"], meta["container"], meta["frames"]) == ("vp9", "ivf", 40)
    clip = tmp_path / "clip.ivf"
    clip.write_bytes(data)
    flags = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "packet=flags", "-of", "csv=p=0", str(clip)], capture_output=True,
                           text=True, check=True).stdout.split()
    assert meta["key_frames"] == [i for i, f in enumerate(flags) if "K" in f] == key_frames(data)
    assert meta["key_frames"][:3] == [0, 8, 16]


def test_webm_frames_and_key_flags_are_read_from_the_container(source_clip, tmp_path):
    from pipeline.webm import frames

    data, _ = _sharded(source_clip, tmp_path, codec="vp9", gop=8)
    clip = tmp_path / "clip.webm"
    clip.write_bytes(data)
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "packet=size,flags", "-of", "csv=p=0", str(clip)],
                           capture_output=True, text=True, check=True).stdout.split()
    (fourcc, width, height), found = frames(data)
    assert (fourcc, width, height) == (b"VP90", 96, 64)
    assert [(size, key) for _, size, key in found] == [
        (int(size), "K" in flags) for size, flags in (line.split(",") for line in probe)]
    assert found[8][2] and not found[9][2]
    with pytest.raises(ValueError, match="not a WebM"):
        frames(b"RIFF" + bytes(60))


@pytest.mark.parametrize("codec", ["vp9-ivf", "vp9"])
def test_a_cut_clip_decodes_to_the_same_frames_as_the_whole_clip(codec, source_clip, tmp_path):
    from pipeline.decode import VideoDecoder, cut_clips
    from pipeline.ivf import ivf_frames

    data, meta = _sharded(source_clip, tmp_path, codec=codec, gop=8)
    video, frames = np.frombuffer(data, np.uint8), np.arange(19, 35, 2, dtype=np.int32)
    cut = cut_clips({"video": [video], "frames": [frames]})
    assert len(ivf_frames(cut["video"][0])) == 18  # key frame 16 to frame 33, no more
    assert cut["frames"][0].tolist() == (frames - 16).tolist()
    decoder = VideoDecoder("cpu", 1, 1, 64, normalize=False)
    feeds = {"video": [video], "frames": [frames], "flip": [np.array(0, np.int32)],
             "roi_start": [np.array([0, 0], np.float32)],
             "roi_end": [np.array([64, 64], np.float32)]}
    whole = decoder._run(decoder._build(1, 0), feeds)  # the uncut clip, straight to DALI
    assert np.array_equal(decoder(feeds, ["k"]).numpy(), whole.numpy())


def test_a_stride_window_on_a_stride_shard_is_consecutive_frames():
    assert shard_stride(4, 4, "dense") == 1 and shard_stride(4, 2, "dense") == 2
    with pytest.raises(ValueError, match="not a multiple of the shards' frame_step 3"):
        shard_stride(4, 3, "dense")
    builder = BatchBuilder(DataConfig(num_frames=16, stride=4))
    meta = {"frames": 40, "height": 64, "width": 96, "codec": "vp9", "frame_step": 4}
    sample = {"key": "k", "video": b"", "meta": meta, "epoch": 0}
    frames = builder.sample_feed(sample)["frames"]
    assert np.array_equal(np.diff(frames), np.ones(15)) and frames[-1] < 40
    unstepped = {**sample, "meta": {**meta, "frame_step": 1, "frames": 100}}
    plain = builder.sample_feed(unstepped)["frames"]
    assert np.array_equal(np.diff(plain), np.full(15, 4))


def test_key_frame_windows_start_on_a_key_frame_that_leaves_room():
    rng = np.random.default_rng(0)
    starts = {int(dense_indices(64, 16, 1, rng, [0, 16, 32, 48, 60])[0]) for _ in range(200)}
    assert starts == {0, 16, 32, 48}  # 60 would run past the clip's end
    fallback = frame_indices("dense", 20, 16, 1, 1, rng, [8])  # no key frame leaves room
    assert len(fallback) == 16 and fallback[0] in range(5)
    builder = BatchBuilder(DataConfig(num_frames=16, stride=4, key_frame_windows=True))
    meta = {"frames": 64, "height": 64, "width": 96, "codec": "vp9", "frame_step": 4,
            "key_frames": [0, 16, 32, 48]}
    firsts = {int(builder.sample_feed({"key": str(k), "video": b"", "meta": meta})["frames"][0])
              for k in range(50)}
    assert firsts == {0, 16, 32, 48}


def test_for_recipe_picks_step_gop_and_short_side_and_flags_win():
    from recipes.shard_settings import recipe_settings
    from tools.shard.settings import chosen_settings

    videomae = recipe_settings("videomae-vitb")
    chosen = chosen_settings({"gop": None, "short_side": None}, videomae)
    assert chosen == {"frame_step": 4, "gop": 16, "short_side": 256}
    assert chosen_settings({"gop": 8}, videomae)["gop"] == 8
    assert chosen_settings({}, None) == {"gop": 32, "frame_step": 1, "short_side": None}
    with pytest.raises(ValueError, match="does not exist"):
        recipe_settings("no-such-recipe")


@pytest.mark.parametrize("peer", ["pyav", "torchcodec", "decord"])
def test_peer_loader_gives_vtp_shapes_on_the_same_plan(peer, pipeline_shards):
    peers = pytest.importorskip("benchmarks.peers")
    if peer not in peers.available_peers():
        pytest.skip(f"{peer} is not installed (the bench extra)")
    from benchmarks.measure import read_samples

    cfg = DataConfig(path=str(pipeline_shards["vp9"].root), batch_size=2, shuffle=False)
    samples = read_samples(cfg)[:2]
    plan = peers.plans(cfg, samples, 1)
    batch = next(iter(peers.peer_loader(peer, cfg, samples, plan, 0)))
    ours = BatchBuilder(cfg)(samples)
    assert batch["video"].shape == ours["video"].shape == (2, 3, 16, 224, 224)
    assert batch["video_mask"].shape == ours["video_mask"].shape
    # the same frames, crop and flip: pictures agree up to the two resize implementations
    assert (batch["video"] - ours["video"]).abs().mean() < 0.1


@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_torch_resize_backend_matches_dali_bilinear(source_clip, tmp_path, codec):
    from pipeline.decode import VideoDecoder

    data, _ = _sharded(source_clip, tmp_path, codec=codec, gop=8)
    video = np.frombuffer(data, np.uint8)
    # crop windows off the 8x8 JPEG blocks, and the whole frame; MJPEG frames are decoded
    # inside the window on the torch route, whole on DALI's
    feeds = {"video": [video, video], "frames": [np.arange(0, 16, dtype=np.int32)] * 2,
             "roi_start": [np.array([4, 10], np.float32), np.array([0, 0], np.float32)],
             "roi_end": [np.array([60, 66], np.float32), np.array([64, 96], np.float32)],
             "flip": [np.array(1, np.int32), np.array(0, np.int32)]}
    for normalize in (False, True):
        dali, torch_, auto = (VideoDecoder("cpu", 2, 1, 48, normalize=normalize,
                                           resize_backend=b)(feeds, ["a", "b"], [codec] * 2)
                              for b in ("dali", "torch", "auto"))
        assert dali.shape == torch_.shape == (2, 3, 16, 48, 48) and dali.dtype == torch_.dtype
        scale = 1.0 if normalize else 255.0
        assert (dali.float() - torch_.float()).abs().mean() < 0.01 * scale
        assert torch.equal(auto, torch_)  # the CPU default is the torch route


def test_the_decoder_writes_a_batch_into_a_dropped_one_and_never_into_a_held_one(
        source_clip, tmp_path):
    from pipeline.decode import VideoDecoder

    data, _ = _sharded(source_clip, tmp_path, codec="mjpeg", gop=8)
    video = np.frombuffer(data, np.uint8)
    feeds = {"video": [video], "frames": [np.arange(0, 16, dtype=np.int32)],
             "roi_start": [np.array([4, 10], np.float32)],
             "roi_end": [np.array([60, 66], np.float32)], "flip": [np.array(1, np.int32)]}
    decoder = VideoDecoder("cpu", 1, 1, 48)
    first = decoder(feeds, ["a"], ["mjpeg"])
    # the buffer behind the batch (malloc may hand out a freed address again, so compare that)
    expected, buffer = first.clone(), first._base
    held = decoder(feeds, ["a"], ["mjpeg"])
    assert held._base is not buffer and torch.equal(first, expected)  # `first` untouched
    del first
    again = decoder(feeds, ["a"], ["mjpeg"])
    assert again._base is buffer and torch.equal(again, expected)


def test_torch_resize_backend_refuses_what_only_dali_does():
    for other in ({"interpolation": "nearest"}, {"rand_augment": (2, 7)}):
        with pytest.raises(ValueError, match="resize_backend"):
            DataConfig(path="x", resize_backend="torch", **other)
        assert DataConfig(path="x", **other).resize_backend == "auto"  # auto falls back
