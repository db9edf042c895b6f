"""The experiment grid: one-factor axes around one baseline, expanded into unique runs.

Every cell of the table is one setting trained with several seeds. Cells that land on the
same setting (each axis has the baseline among its values) share their runs, so the
baseline is trained once per seed, not once per axis. The data axis comes twice: at equal
compute (every share trains as many steps as the baseline) and at equal epochs (a share
trains that share of the steps); a last axis trains the baseline on a second synthetic
dataset, so the table shows data variance next to seed variance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# losses label -> (VTC on, VTM on); MVM and MLM always run.
LOSSES: dict[str, tuple[bool, bool]] = {
    "MVM+MLM": (False, False),
    "+VTC": (True, False),
    "+VTC+VTM": (True, True),
}

# axis name -> (the Setting field it varies, a title for tables and plots)
AXES: dict[str, tuple[str, str]] = {
    "data": ("fraction", "(a) training data, equal compute (share of the cleaned training set)"),
    "data_epochs": ("fraction", "(a') training data, equal epochs (share of the cleaned training "
                                "set; steps scaled with it)"),
    "video_mask": ("video_mask_ratio", "(b) video mask ratio"),
    "text_mask": ("text_mask_ratio", "(c) text mask probability"),
    "losses": ("losses", "(d) loss terms"),
    "data_seed": ("data_seed", "(e) synthetic dataset (generator seed) of the baseline"),
}


@dataclass(frozen=True)
class Setting:
    """What one training run varies; everything else comes from the recipe.

    Args:
        fraction: share of the training set (a nested `vtp subset` subset).
        video_mask_ratio: tube mask ratio (``model.video_mask_ratio``).
        text_mask_ratio: MLM masking probability (``model.text_mask_ratio``).
        losses: a key of :data:`LOSSES`.
        equal_epochs: train as many epochs as the baseline (its steps scaled by this
            subset's clips over all clips) instead of as many steps (the same compute).
        data_seed: the seed of the synthetic dataset trained and evaluated on.
    """

    fraction: float
    video_mask_ratio: float
    text_mask_ratio: float
    losses: str = "+VTC+VTM"
    equal_epochs: bool = False
    data_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if not 0.0 < self.video_mask_ratio < 1.0 or not 0.0 < self.text_mask_ratio < 1.0:
            raise ValueError(f"mask ratios must be in (0, 1), got {self.video_mask_ratio}, "
                             f"{self.text_mask_ratio}")
        if self.losses not in LOSSES:
            raise ValueError(f"losses must be one of {list(LOSSES)}, got {self.losses!r}")

    @property
    def slug(self) -> str:
        """A file-name-safe name, unique per setting."""
        losses = {"MVM+MLM": "mvm-mlm", "+VTC": "vtc", "+VTC+VTM": "vtc-vtm"}[self.losses]
        return (f"f{self.fraction:g}-vm{self.video_mask_ratio:g}-tm{self.text_mask_ratio:g}"
                f"-{losses}" + ("-ep" if self.equal_epochs else "")
                + (f"-d{self.data_seed}" if self.data_seed else ""))


@dataclass(frozen=True)
class Run:
    """One training run: a setting and a seed."""

    setting: Setting
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.setting.slug}-s{self.seed}"


@dataclass(frozen=True)
class Cell:
    """One row of the table: an axis, the value shown, and the setting trained for it."""

    axis: str
    label: str
    setting: Setting
    baseline: bool


@dataclass
class GridConfig:
    """The axes, the seeds and the baseline the axes vary one factor away from.

    Args:
        baseline: the setting every axis starts from (its value must be on each axis).
        fractions, video_mask_ratios, text_mask_ratios, losses, data_seeds: the values of
            each axis (both data axes take ``fractions``).
        seeds: training seeds; each cell reports mean and spread over them.
        axes: which axes to run (all by default).
    """

    baseline: Setting
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0)
    video_mask_ratios: tuple[float, ...] = (0.5, 0.75, 0.9, 0.95)
    text_mask_ratios: tuple[float, ...] = (0.15, 0.45, 0.75)
    losses: tuple[str, ...] = tuple(LOSSES)
    data_seeds: tuple[int, ...] = (0, 1)
    seeds: tuple[int, ...] = (0, 1, 2)
    axes: tuple[str, ...] = tuple(AXES)

    def __post_init__(self) -> None:
        if len(set(self.seeds)) < 1:
            raise ValueError("at least one seed is needed")
        unknown = set(self.axes) - set(AXES)
        if unknown:
            raise ValueError(f"unknown axes {sorted(unknown)}; known: {list(AXES)}")
        for axis in self.axes:
            name = AXES[axis][0]
            if getattr(self.baseline, name) not in self.values(axis):
                raise ValueError(f"the baseline {name}={getattr(self.baseline, name)} is not "
                                 f"among the {axis} axis values {self.values(axis)}")

    def values(self, axis: str) -> tuple:
        return {"data": self.fractions, "data_epochs": self.fractions,
                "video_mask": self.video_mask_ratios, "text_mask": self.text_mask_ratios,
                "losses": self.losses, "data_seed": self.data_seeds}[axis]


def grid_around_recipe(video_mask_ratio: float, text_mask_ratio: float, data_seed: int = 0,
                       **fields) -> GridConfig:
    """The grid whose baseline is the recipe's own setting: all data, all losses, the
    recipe's mask ratios, each added to its axis when it is not among the paper's values.

    Args:
        video_mask_ratio, text_mask_ratio: the recipe's ``model`` values.
        data_seed: the dataset of the baseline; the data-seed axis adds the next seed.
        fields: other `GridConfig` fields (seeds, axes, fractions).
    """
    baseline = Setting(fraction=1.0, video_mask_ratio=video_mask_ratio,
                       text_mask_ratio=text_mask_ratio, losses="+VTC+VTM", data_seed=data_seed)
    fields.setdefault("data_seeds", (data_seed, data_seed + 1))
    video = tuple(sorted({*fields.pop("video_mask_ratios", GridConfig.video_mask_ratios),
                          video_mask_ratio}))
    text = tuple(sorted({*fields.pop("text_mask_ratios", GridConfig.text_mask_ratios),
                         text_mask_ratio}))
    return GridConfig(baseline=baseline, video_mask_ratios=video, text_mask_ratios=text, **fields)


def label(axis: str, value) -> str:
    if axis in ("data", "data_epochs"):
        return f"{value:.0%}"
    if axis == "data_seed":
        return f"dataset seed {value}"
    return str(value) if axis == "losses" else f"{value:g}"


def cell_setting(grid: GridConfig, axis: str, value) -> Setting:
    """The baseline with ``axis`` set to ``value`` (on the equal-epochs axis a share below the
    baseline's also trains that share of the steps)."""
    setting = replace(grid.baseline, **{AXES[axis][0]: value})
    if axis == "data_epochs" and value != grid.baseline.fraction:
        setting = replace(setting, equal_epochs=True)
    return setting


def expand(grid: GridConfig) -> tuple[list[Cell], list[Run]]:
    """The table's cells, in axis order, and the unique runs they need (deduplicated).

    Returns:
        (cells, runs): each (setting, seed) once; all settings of the first seed, then the next.
    """
    cells: list[Cell] = []
    for axis in grid.axes:
        for value in grid.values(axis):
            setting = cell_setting(grid, axis, value)
            cells.append(Cell(axis, label(axis, value), setting, setting == grid.baseline))
    settings = list(dict.fromkeys(cell.setting for cell in cells))
    # seed-major: a grid cut short still has every cell with its first seeds
    runs = [Run(setting, seed) for seed in grid.seeds for setting in settings]
    return cells, runs


def runs_of(cell: Cell, seeds: tuple[int, ...]) -> list[Run]:
    """The runs whose results make up ``cell``."""
    return [Run(cell.setting, seed) for seed in seeds]

