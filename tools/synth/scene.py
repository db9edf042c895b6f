"""What a synthetic clip shows: the scene vocabulary and how scenes are drawn at random.

A scene is a group of identical objects (count, size, colour, shape) moving in one or two
directions at a speed, over a background, optionally next to a still distractor object and
under sensor-like noise. Captions (``captions.py``) describe exactly these fields, so a model
that reads the caption can tell scenes apart only by watching the motion over time.

The held-out test split uses (colour, shape) pairs that never appear together in training,
so retrieval on it measures composition, not memorisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tools.synth.presets import PRESETS, Preset

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "pink": (245, 120, 185),
}
# The hard preset's vocabulary (presets.py holds every preset's).
SHAPES = PRESETS["hard"].shapes
SIZES = PRESETS["hard"].sizes  # object side as a share of frame height
SPEEDS = PRESETS["hard"].speeds  # pixels per frame at 240 lines
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS = PRESETS["hard"].backgrounds
COUNTS = PRESETS["hard"].counts
DISTRACTOR_COLOUR = "grey"


@dataclass(frozen=True)
class Scene:
    """Everything a clip shows; ``motion`` holds one direction, or two for "X, then Y"."""

    shape: str
    colour: str
    size: str
    count: int
    motion: tuple[str, ...]
    speed: str
    background: str
    distractor: str | None  # shape of a still grey object, or None
    noise: bool
    duration_s: int

    def as_row(self) -> dict:
        row = asdict(self)
        row["motion"] = ",".join(self.motion)
        return row


def held_out_pairs(seed: int, preset: Preset = PRESETS["hard"]) -> frozenset[tuple[str, str]]:
    """One (colour, shape) pair per colour, never seen together in training.

    Shapes are held out in turn, so each shape is held out at most ceil(colours / shapes)
    times and every colour keeps the other shapes in training: every single attribute is
    still learnable from the training split.
    """
    rng = np.random.default_rng([seed, 7])
    shapes = preset.shapes
    offset = int(rng.integers(len(shapes)))
    colours = list(preset.colours)
    order = rng.permutation(len(colours))
    return frozenset(
        (colours[c], shapes[(rank + offset) % len(shapes)]) for rank, c in enumerate(order)
    )


def draw_scene(rng: np.random.Generator, split: str, held_out: frozenset,
               preset: Preset = PRESETS["hard"]) -> Scene:
    """Draws one scene; training scenes avoid ``held_out`` pairs, test scenes use only them.

    Every preset makes the same draws in the same order, so ``hard`` gives the first
    generator's scenes exactly.
    """
    if split == "test":
        colour, shape = sorted(held_out)[int(rng.integers(len(held_out)))]
    else:
        allowed = [(c, s) for c in preset.colours for s in preset.shapes if (c, s) not in held_out]
        colour, shape = allowed[int(rng.integers(len(allowed)))]
    first = str(rng.choice(list(DIRECTIONS)))
    motion: tuple[str, ...] = (first,)
    if rng.random() < preset.two_leg_prob:
        second = str(rng.choice([d for d in DIRECTIONS if d != first]))
        motion = (first, second)
    distractor = None
    if rng.random() < preset.clutter:
        distractor = str(rng.choice([s for s in preset.shapes if s != shape]))
    return Scene(
        shape=shape,
        colour=colour,
        size=str(rng.choice(list(preset.sizes))),
        count=int(rng.choice(preset.counts)),
        motion=motion,
        speed=str(rng.choice(list(preset.speeds))),
        background=str(rng.choice(preset.backgrounds)),
        distractor=distractor,
        noise=bool(rng.random() < preset.noise_prob),
        duration_s=int(rng.integers(preset.durations[0], preset.durations[1] + 1)),
    )
