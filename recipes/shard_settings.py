"""The shard settings a training recipe's sampler wants (`vtp shard --for-recipe`).

A dense T x S window reads every S-th frame, so shards that keep every S-th frame (with a key
frame every T stored frames) serve it with S times fewer frames to decode; the short side is
8/7 of the crop (tools/shard/settings.py holds what the pipeline reads back from the meta).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import short_side_for
from recipes.config import RecipeError, load_recipe


def recipe_settings(recipe: str | Path) -> dict:
    """TranscodeOptions fields (frame_step, gop, short_side) that suit ``recipe``'s sampler.

    Args:
        recipe: a recipe file or the name of a shipped one.

    Raises:
        ValueError: the recipe cannot be read (message says why).
    """
    try:
        data = load_recipe(recipe).data
    except RecipeError as err:
        raise ValueError(str(err)) from err
    settings = {"short_side": short_side_for(data.image_size)}
    if data.sampler == "dense" and data.stride > 1:
        settings.update(frame_step=data.stride, gop=data.num_frames)
    return settings
