"""What a model that knew only some attributes of a clip would score on the held-out split.

A caption names every attribute of its clip; a model that read only some of them (say the
object's appearance) ranks every clip that agrees on those attributes equally, so its expected
text-to-video R@1 for a query is 1 / (clips that agree). These numbers bound what the
benchmark can tell apart: appearance-only and motion-only must stay far below the full score.
"""

from __future__ import annotations

from collections import Counter

# Attributes a caption names, grouped by what a model must see to know them.
APPEARANCE = ("colour", "shape", "size", "count", "background", "distractor")
MOTION = ("motion", "speed")
ORACLES: dict[str, tuple[str, ...]] = {
    "pair_only": ("colour", "shape"),
    "appearance_only": APPEARANCE,
    "motion_only": MOTION,
    "pair_and_motion": ("colour", "shape", *MOTION),
    "all_attributes": (*APPEARANCE, *MOTION),
}


def expected_r1(scenes: list[dict], attributes: tuple[str, ...]) -> float:
    """Expected R@1 (percent) of a model that separates clips by ``attributes`` only."""
    if not scenes:
        return 0.0
    keys = [tuple(s[a] for a in attributes) for s in scenes]
    counts = Counter(keys)
    return round(100 * sum(1 / counts[k] for k in keys) / len(keys), 2)


def oracle_r1(scenes: list[dict]) -> dict[str, float]:
    """Expected R@1 of each oracle in ``ORACLES`` on ``scenes`` (rows of Scene.as_row())."""
    return {name: expected_r1(scenes, attrs) for name, attrs in ORACLES.items()}
