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


def first_leg(motion: str) -> str:
    """The direction a clip starts with ("left" of "left,up")."""
    return motion.split(",")[0]


def top1_agreement(scenes: list[dict], top1: list[int]) -> dict[str, dict[str, float]]:
    """What a retrieval model reads, attribute by attribute.

    Args:
        scenes: the test clips' rows (Scene.as_row()), in the order queries and clips share.
        top1: for query i (the caption of clip i), the index of the clip ranked first.

    Returns:
        For each attribute that varies among ``scenes`` (plus ``first_leg``, the starting
        direction): ``top1``, the share of queries whose first-ranked clip has the query's
        value, and ``random``, the share a clip drawn at random from the others would have.
        A model that reads an attribute is well above ``random`` on it.
    """
    rows = [{**s, "first_leg": first_leg(str(s["motion"]))} for s in scenes]
    out = {}
    for attr in (*APPEARANCE, *MOTION, "first_leg"):
        values = [r[attr] for r in rows]
        counts = Counter(values)
        if len(counts) < 2 or len(values) < 2:
            continue
        hits = sum(values[j] == values[i] for i, j in enumerate(top1))
        chance = sum((counts[v] - 1) / (len(values) - 1) for v in values)
        out[attr] = {"top1": round(hits / len(values), 3), "random": round(chance / len(values), 3)}
    return out
