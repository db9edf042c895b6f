"""Shard settings chosen for a training recipe, and the meta that tells the pipeline about them.

Decoding fewer frames is the lever that pays most on a CPU (benchmarks/RESULTS.md):
- ``frame_step``: a dense T x S window (VideoMAE's 16 x 4) reads every S-th frame, so a shard
  that keeps every S-th frame serves the same window as T consecutive frames, with S times
  fewer frames to decode and store. The step goes into every sample's meta (``frame_step``),
  and the sampler divides the recipe's stride by it (pipeline/loader.py).
- ``gop``: one key frame per T stored frames, so a window can start on a key frame and decode
  nothing it does not return (with ``data.key_frame_windows``); key frame indices go into the
  meta for the codecs the pipeline can cut (VP9 in IVF).
- ``short_side``: VideoMAE's 256 for 224 px training (the crop scales sit on the short side).
"""

from __future__ import annotations

from pathlib import Path

DEFAULTS = {"gop": 32, "frame_step": 1, "short_side": None}


def chosen_settings(flags: dict, from_recipe: dict | None = None) -> dict:
    """gop, frame_step and short_side: the defaults, then a recipe's, then explicit flags.

    Args:
        flags: the command line's values (None where a flag was not given).
        from_recipe: settings that suit a training recipe (``vtp shard --for-recipe``, which
            reads the recipe in commands/shard_cmd.py: recipes sit above the data tools).
    """
    chosen = dict(DEFAULTS)
    chosen.update(from_recipe or {})
    chosen.update({k: flags[k] for k in DEFAULTS if flags.get(k) is not None})
    return chosen


def shard_meta(path: Path, codec: str, frame_step: int) -> dict:
    """What the pipeline must know about a checked clip beyond frames/fps/size/codec.

    Args:
        path: the transcoded clip.
        codec: the `vtp shard --codec` name (``vp9-ivf`` is VP9 in an IVF container).
        frame_step: frames kept one in every ``frame_step``.
    """
    meta: dict = {"frame_step": frame_step} if frame_step > 1 else {}
    if codec == "vp9-ivf":
        from pipeline.ivf import key_frames

        meta.update(codec="vp9", container="ivf", key_frames=key_frames(path.read_bytes()))
    return meta
