"""Difficulty presets of the synthetic benchmark: what a clip may show and how it is worded.

``hard`` is the first generator, unchanged (small objects among clutter and noise, varied
phrasings): a stress test on which the tiny CPU model stays a few times above chance. ``demo``
keeps the same compositional split and the same need for appearance and motion, but draws
objects large enough for a 32-64 px model to see their colour, on plain backgrounds, with
one wording per attribute. Every preset is written into the dataset (synth.json and
ground_truth.parquet's ``preset`` column), so a result names its data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ALL_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "pink")
ALL_SHAPES = ("circle", "square", "triangle", "diamond", "cross")
ALL_BACKGROUNDS = ("dark", "grey", "checkered", "striped", "textured")


@dataclass(frozen=True)
class Preset:
    """The scene vocabulary and its difficulty knobs.

    Args:
        name: how the dataset names its preset.
        colours, shapes: object attributes; one (colour, shape) pair per colour is held out.
        sizes: size word -> object side as a share of frame height.
        counts: how many identical objects a clip may show.
        backgrounds: background kinds a clip may show.
        speeds: speed word -> pixels per frame at 240 lines and 16 fps (scaled with the
            frame height and rate).
        two_leg_prob: share of clips whose motion turns at mid-clip ("left, then up").
        clutter: share of clips with a still grey distractor object.
        noise_prob, noise_std: share of clips with sensor noise, and its std in 8-bit levels.
        varied_captions: several phrasings and synonyms (True) or one template with one word
            per attribute value (False).
        durations: shortest and longest clip in whole seconds (drawn uniformly).
        wrap: objects leave one edge and come back at the other (True), or start where their
            whole path stays inside the frame (False), so the direction is never ambiguous.
    """

    name: str
    colours: tuple[str, ...] = ALL_COLOURS
    shapes: tuple[str, ...] = ALL_SHAPES
    sizes: dict[str, float] = field(
        default_factory=lambda: {"small": 0.10, "medium": 0.15, "large": 0.22})
    counts: tuple[int, ...] = (1, 2, 3)
    backgrounds: tuple[str, ...] = ALL_BACKGROUNDS
    speeds: dict[str, float] = field(default_factory=lambda: {"slowly": 1.2, "quickly": 3.5})
    two_leg_prob: float = 0.3
    clutter: float = 0.5
    noise_prob: float = 0.5
    noise_std: float = 5.0
    varied_captions: bool = True
    durations: tuple[int, int] = (4, 8)
    wrap: bool = True

    def __post_init__(self) -> None:
        unknown = (set(self.colours) - set(ALL_COLOURS)) | (set(self.shapes) - set(ALL_SHAPES)) \
            | (set(self.backgrounds) - set(ALL_BACKGROUNDS))
        if unknown:
            raise ValueError(f"preset {self.name!r}: unknown vocabulary {sorted(unknown)}")
        if len(self.shapes) < 2 or not self.colours:
            raise ValueError(f"preset {self.name!r}: needs >= 2 shapes and >= 1 colour "
                             "(one pair per colour is held out)")
        if not set(self.counts) <= {1, 2, 3}:
            raise ValueError(f"preset {self.name!r}: counts must be among 1, 2, 3")
        if not 1 <= self.durations[0] <= self.durations[1]:
            raise ValueError(f"preset {self.name!r}: durations must be 1 <= shortest <= longest, "
                             f"got {self.durations}")

    def to_json(self) -> dict:
        return asdict(self)


# What `demo` and `easy` share: one object, no clutter or noise, one wording, and motion a
# sampler spreading 8 frames over the clip can read: every clip lasts 4 s (displacement tells
# slow from quick), paths stay inside the frame and cover 25% / 55% of its height.
PLAIN_AND_LEGIBLE = dict(
    counts=(1,),
    speeds={"slowly": 0.25 * 240 / 64, "quickly": 0.55 * 240 / 64},
    clutter=0.0,
    noise_prob=0.0,
    varied_captions=False,
    durations=(4, 4),
    wrap=False,
)

PRESETS: dict[str, Preset] = {
    # The first generator: objects 1-4% of the frame, distractors, noise, counts up to three,
    # five backgrounds, varied wording. The tiny model reached held-out R@1 3-5% on it.
    "hard": Preset(name="hard"),
    # Objects 20-35% of the frame height on two plain backgrounds: colour, shape, size,
    # direction(s) and speed remain to be read off the clip.
    "demo": Preset(
        name="demo",
        colours=("red", "green", "blue", "yellow", "purple", "white"),
        shapes=("circle", "square", "triangle", "cross"),
        sizes={"small": 0.20, "large": 0.35},
        backgrounds=("dark", "grey"),
        two_leg_prob=0.3,
        **PLAIN_AND_LEGIBLE,
    ),
    # CI's learning check: four colours, three shapes, one size and background, straight
    # motion. A few minutes of CPU training must put held-out R@1 far above chance.
    "easy": Preset(
        name="easy",
        colours=("red", "green", "blue", "yellow"),
        shapes=("circle", "square", "cross"),
        sizes={"large": 0.40},
        backgrounds=("dark",),
        two_leg_prob=0.0,
        **PLAIN_AND_LEGIBLE,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown synth preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
