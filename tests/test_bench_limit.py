"""The bare-decoder limit of `vtp bench pipeline` (benchmarks/peers.py, ``bare_decode``): it
decodes exactly the frames a sample needs and hands over vtp's clip for the same plan, with
the pixel work in libswscale (uint8), not in a float torch resize; batches from DataLoader
workers are timed where they were made."""

from __future__ import annotations

import io

import pytest
import torch

from pipeline import DataConfig
from pipeline.loader import BatchBuilder

peers = pytest.importorskip("benchmarks.peers")
av = pytest.importorskip("av")  # the bench extra


def _key_frames(video: bytes) -> list[int]:
    """Indices of the key frames, read from the container independently of the limit."""
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
    return [i for i, p in enumerate(packets) if p.is_keyframe]


def _no_torch_resize(*args, **kwargs):
    raise AssertionError("the limit resized in torch: its pixel work belongs to libswscale")


@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_bare_limit_decodes_the_needed_frames_into_vtps_clip(codec, pipeline_shards,
                                                              monkeypatch):
    from benchmarks.measure import read_samples

    # 160 px from 320x240 clips: crops of 158-240 px, at most 1.5x down, where libswscale's
    # bilinear (it widens its support to the scale factor) and DALI's 2-tap one nearly agree
    cfg = DataConfig(path=str(pipeline_shards[codec].root), batch_size=2, image_size=160,
                     shuffle=False)
    samples = read_samples(cfg)[:2]
    (plan,) = peers.plans(cfg, samples, 1)
    ours = BatchBuilder(cfg)(samples)["video"]  # the same frames, crops and flips
    monkeypatch.setattr(torch.nn.functional, "interpolate", _no_torch_resize)
    for sample, feed, vtp_clip in zip(samples, plan, ours, strict=True):
        clip, decoded = peers.bare_decode(sample["video"], feed, cfg.image_size)
        assert clip.shape == vtp_clip.shape == (3, 16, 160, 160)
        assert clip.dtype == vtp_clip.dtype == torch.float32 and clip.is_contiguous()
        keys = _key_frames(sample["video"])
        assert decoded == len(peers.needed_frames(feed["frames"], keys))
        if codec == "mjpeg":  # intra-only: each sampled frame once, nothing else
            assert decoded == len(set(int(i) for i in feed["frames"]))
        else:
            assert decoded > len(set(int(i) for i in feed["frames"]))  # from the key frame
        # the same pictures up to the two bilinear resizes (DALI's, libswscale's)
        assert (clip - vtp_clip).abs().mean() < 0.02  # measured: about 0.005
        flipped, _ = peers.bare_decode(sample["video"], {**feed, "flip": 1 - int(feed["flip"])},
                                       cfg.image_size)
        assert torch.equal(flipped, clip.flip(-1))
        assert peers.bare_decode(sample["video"], feed, cfg.image_size, pixels=False) == (
            None, decoded)


def test_bare_limit_reports_cpu_per_sample_and_frames(pipeline_shards):
    from benchmarks.measure import read_samples

    cfg = DataConfig(path=str(pipeline_shards["mjpeg"].root), batch_size=2, image_size=64,
                     shuffle=False)
    samples = read_samples(cfg)[:2]
    result = peers.bare_limit(samples, peers.plans(cfg, samples, 2), cfg.image_size)
    assert result["frames_per_sample"] == 16.0  # intra-only, 16 distinct frames per window
    assert result["cpu_per_sample"] > 0 and result["decode_cpu_per_sample"] > 0


def test_worker_batches_are_timed_where_they_were_made():
    """Batches that two workers made one second apart per round but that reach the main
    process at once (it was stalled while they prefetched) time at the workers' pace."""
    from benchmarks.measure import timed

    batches = [{"video": [0] * 4, "made": (k % 2, float(k // 2), 0.5 * (k // 2))}
               for k in range(20)]
    rate = timed(iter(batches), warm_up=2, cores=2, rounds=2)
    assert rate.wall == pytest.approx(8.0)  # 2 batches of 4 a second
    assert rate.cpu == pytest.approx(16.0, rel=0.1)  # 1 CPU second (2 x 0.5) per 8, on 2 cores
