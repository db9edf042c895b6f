"""The training recipe: one typed, validated configuration, filled from YAML plus overrides.

Sections follow llm-foundry: ``model`` (a size preset plus :class:`model.ModelConfig`
fields), ``data`` (:class:`pipeline.DataConfig` fields), ``optimizer``, ``scheduler``,
``trainer``, ``callbacks``, ``loggers``, ``init`` (released weights to start from); top
level ``seed``, ``run_name`` and ``variables`` (``${variables.NAME}`` anywhere in a value is
replaced by that variable).

Shapes are typed once: the data section's frames, size, tubelet and mask ratios come from
the model section, its batch size from ``trainer.global_batch_size`` and its seed from the
top-level ``seed``; setting them under ``data`` is an error that says where they belong.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from model.config import MODEL_SIZES, RENAMED_KEYS, ModelConfig
from pipeline.config import DataConfig
from recipes.fields import RecipeError, apply_override, build

__all__ = ["InitConfig", "RecipeConfig", "RecipeError", "load_recipe", "recipe_from_dict",
           "shipped_recipes", "resolve_recipe"]

# data field -> the model field (or other key) it is derived from.
DERIVED_DATA_KEYS = {
    "num_frames": "model.num_frames",
    "image_size": "model.image_size",
    "tubelet": "model.tubelet",
    "video_mask_ratio": "model.video_mask_ratio",
    "text_mask_ratio": "model.text_mask_ratio",
    "batch_size": "trainer.global_batch_size (divided by the number of processes)",
    "seed": "the top-level seed",
}
RECIPE_DIR = Path(__file__).parent
TIME_RE = re.compile(r"^\d+(\.\d+)?(ep|ba|sp|tok|dur)$")


def _check_time(name: str, value: str) -> None:
    if not TIME_RE.match(value):
        raise ValueError(f"{name}={value!r} is not a Composer time such as '200ep', '20ba' "
                         "or '0.1dur'")


@dataclass
class OptimizerConfig:
    """AdamW as in SimVTP/VideoMAE pretraining.

    Args:
        name: ``decoupled_adamw`` (Composer's DecoupledAdamW, one parameter at a time) or
            ``adamw`` (torch's AdamW with its fused kernel: the same update, 5x faster on
            the tiny model's CPU step).
        lr: peak learning rate; with ``scale_lr`` it is the rate per 256 samples.
        scale_lr: use ``lr * global_batch_size / 256`` (and the same for ``scheduler.min_lr``).
        betas, eps: Adam moments.
        weight_decay: decay per step at lr 1, as in torch's AdamW (SimVTP's 0.05); it is
            converted to Composer's lr-independent form as ``weight_decay * peak_lr`` for
            ``decoupled_adamw``.
            Norms, biases, embeddings, position tables and mask tokens get none.
    """

    name: Literal["decoupled_adamw", "adamw"] = "decoupled_adamw"
    lr: float = 1.5e-4
    scale_lr: bool = False
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr must be positive, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optimizer.betas must be in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class SchedulerConfig:
    """Learning-rate schedule (Composer schedulers, stepped every batch).

    Args:
        name: ``cosine_with_warmup`` (SimVTP) or ``constant_with_warmup``.
        t_warmup: linear warm-up from 0, e.g. ``40ep`` or ``0.1dur``.
        min_lr: final learning rate of the cosine (scaled like ``optimizer.lr``).
    """

    name: Literal["cosine_with_warmup", "constant_with_warmup"] = "cosine_with_warmup"
    t_warmup: str = "0.1dur"
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _check_time("scheduler.t_warmup", self.t_warmup)
        if self.min_lr < 0:
            raise ValueError(f"scheduler.min_lr must be >= 0, got {self.min_lr}")


@dataclass
class TrainerConfig:
    """The Composer Trainer's loop, precision and checkpoints.

    Args:
        max_duration: e.g. ``200ep`` or ``20ba``.
        global_batch_size: samples per optimizer step over all processes.
        device_train_microbatch_size: samples per forward/backward on one device; ``auto``
            (GPU only) lets Composer find the largest that fits.
        device: ``auto`` (GPU when present), ``cpu`` or ``gpu``.
        precision: ``auto`` is amp_bf16 on GPU and fp32 on CPU (Composer's only CPU choice).
        save_folder: checkpoint folder (``{run_name}`` is filled in); None saves nothing.
        save_interval: e.g. ``1ep`` or ``100ba``.
        save_num_checkpoints_to_keep: -1 keeps all.
        autoresume: resume from the latest checkpoint in ``save_folder`` (needs ``run_name``).
        load_path: a checkpoint to start from (ignored when autoresume finds one).
        clip_grad_norm: gradient clipping threshold; None (SimVTP) clips nothing.
        torch_threads: intra-op CPU threads of torch in each process; None keeps torch's
            default (all cores). On small CPUs 1 leaves the other cores to DALI's decoders:
            on 2 busy cores the tiny recipe ran 8x faster with 1 than with 2.
    """

    max_duration: str = "1ep"
    global_batch_size: int = 8
    device_train_microbatch_size: int | Literal["auto"] | None = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["auto", "fp32", "amp_bf16", "amp_fp16"] = "auto"
    save_folder: str | None = None
    save_interval: str = "1ep"
    save_num_checkpoints_to_keep: int = -1
    autoresume: bool = False
    load_path: str | None = None
    clip_grad_norm: float | None = None
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        _check_time("trainer.max_duration", self.max_duration)
        if float(self.max_duration[: TIME_RE.match(self.max_duration).start(2)]) <= 0:
            raise ValueError(f"trainer.max_duration={self.max_duration} trains nothing; give a "
                             "positive duration such as '20ba' or '1ep'")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"trainer.torch_threads must be >= 1, got {self.torch_threads}")
        _check_time("trainer.save_interval", self.save_interval)
        if self.global_batch_size < 1:
            raise ValueError("trainer.global_batch_size must be >= 1, "
                             f"got {self.global_batch_size}")
        micro = self.device_train_microbatch_size
        if isinstance(micro, int) and micro < 1:
            raise ValueError(f"trainer.device_train_microbatch_size must be >= 1, got {micro}")
        if self.device == "cpu" and self.precision not in ("auto", "fp32"):
            raise ValueError(f"trainer.precision={self.precision} is not supported on CPU; "
                             "use fp32")
        if self.device == "cpu" and micro == "auto":
            raise ValueError("trainer.device_train_microbatch_size=auto needs a GPU; give an int")
        if self.autoresume and not self.save_folder:
            raise ValueError("trainer.autoresume needs trainer.save_folder")


@dataclass
class CallbacksConfig:
    """Composer callbacks.

    Args:
        speed_monitor: log throughput, and MFU on GPUs Composer knows (or with
            ``gpu_flops_available``).
        speed_window: batches averaged by the speed monitor.
        gpu_flops_available: peak device FLOP/s for MFU on GPUs missing from Composer's table.
        lr_monitor: log the learning rate of every parameter group.
        memory_monitor: log GPU memory (ignored on CPU).
        runtime_estimator: log the estimated time to finish.
        batch_log: a jsonl path (``{rank}``, ``{run_name}`` filled in) recording each batch's
            sample keys and losses per rank; None for none.
        divergence_guard: stop at the first non-finite loss term or gradient, before the
            optimizer step, and log the global gradient norm every step (recipes/guard.py).
        run_card: write ``run_card.json`` / ``run_card.md`` beside the checkpoints.
        curves: draw ``curves.png`` (loss terms and lr) beside the checkpoints at each
            checkpoint and at the end.
    """

    speed_monitor: bool = True
    speed_window: int = 10
    gpu_flops_available: float | None = None
    lr_monitor: bool = True
    memory_monitor: bool = True
    runtime_estimator: bool = False
    batch_log: str | None = None
    divergence_guard: bool = True
    run_card: bool = True
    curves: bool = True

    def __post_init__(self) -> None:
        if self.speed_window < 1:
            raise ValueError(f"callbacks.speed_window must be >= 1, got {self.speed_window}")


@dataclass
class MlflowConfig:
    """Composer's MLflow logger (``pip install 'vtp[trackers]'``).

    Args:
        tracking_uri: where runs go: a local folder (``file:/abs/path`` or a path) or a
            tracking server's URL.
        experiment_name: the MLflow experiment the run is filed under.
    """

    tracking_uri: str = "mlruns"
    experiment_name: str = "vtp"


@dataclass
class WandbConfig:
    """Composer's Weights & Biases logger (``pip install 'vtp[trackers]'``).

    Args:
        project: the W&B project.
        mode: ``offline`` (the default: written under ./wandb, nothing leaves the machine;
            ``wandb sync`` uploads later), ``online`` or ``disabled``.
    """

    project: str = "vtp"
    mode: Literal["online", "offline", "disabled"] = "offline"


@dataclass
class LoggersConfig:
    """Where metrics go.

    Args:
        console: print metrics every ``console_interval``.
        console_interval: e.g. ``1ba`` or ``1ep``.
        progress_bar: Composer's tqdm progress bar.
        file: a text log path (``{run_name}`` and ``{rank}`` are filled in); None for none.
        tensorboard: a TensorBoard log directory; None for none.
        mlflow: log metrics, the recipe and the run card to MLflow; None for none.
        wandb: log metrics, the recipe and the run card to Weights & Biases; None for none.
    """

    console: bool = True
    console_interval: str = "1ba"
    progress_bar: bool = False
    file: str | None = None
    tensorboard: str | None = None
    mlflow: MlflowConfig | None = None
    wandb: WandbConfig | None = None

    def __post_init__(self) -> None:
        if not re.match(r"^\d+(ep|ba)$", self.console_interval):
            raise ValueError(
                f"loggers.console_interval={self.console_interval!r} must be epochs or batches, "
                "e.g. '1ba' or '1ep'"
            )


@dataclass
class InitConfig:
    """Released weights to start from (SimVTP starts from VideoMAE and BERT: its
    run_simvtp_pretraining.py @4b54321).

    Args:
        video: a VideoMAE pretraining checkpoint: the original ``.pth`` (``model``/``module``
            dict, ``encoder.``-prefixed keys) or a transformers ``VideoMAEModel`` /
            ``VideoMAEForPreTraining`` folder. Fills the video encoder, and the decoder,
            ``encoder_to_decoder`` and mask token when the file has them.
        text: a transformers BERT folder; its word, position and token-type embeddings and
            their LayerNorm fill the text embeddings.

    Any tensor that does not fit stops the run before training (see model/interop.py).
    """

    video: str | None = None
    text: str | None = None


@dataclass
class RecipeConfig:
    """A whole training recipe. Build it with :func:`load_recipe` or :func:`recipe_from_dict`."""

    model: ModelConfig
    data: DataConfig
    seed: int = 17
    run_name: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    loggers: LoggersConfig = field(default_factory=LoggersConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def __post_init__(self) -> None:
        if self.init.text and not self.model.use_text:
            raise ValueError("init.text is set but model.use_text is false (no text embeddings)")
        if self.trainer.autoresume and not self.run_name:
            raise ValueError("trainer.autoresume needs a run_name (the checkpoint folder is "
                             "keyed by it)")
        if self.data.device == "gpu" and self.trainer.device == "cpu":
            raise ValueError("data.device=gpu (DALI mixed decoding) needs trainer.device gpu "
                             "or auto")
        if self.data.text_max_length > self.model.max_text_len:
            raise ValueError(
                f"data.text_max_length={self.data.text_max_length} exceeds the model's position "
                f"table model.max_text_len={self.model.max_text_len}"
            )
        if self.scheduler.min_lr > self.optimizer.lr:
            raise ValueError(
                f"scheduler.min_lr={self.scheduler.min_lr} is above "
                f"optimizer.lr={self.optimizer.lr}"
            )
        self._check_warmup()

    def _check_warmup(self) -> None:
        warm, total = self.scheduler.t_warmup, self.trainer.max_duration
        w_unit, t_unit = TIME_RE.match(warm).group(2), TIME_RE.match(total).group(2)
        if w_unit == "dur" and float(warm[:-3]) >= 1.0:
            raise ValueError(f"scheduler.t_warmup={warm} must be a fraction below 1dur")
        if w_unit == t_unit and float(warm[: -len(w_unit)]) >= float(total[: -len(t_unit)]):
            raise ValueError(
                f"scheduler.t_warmup={warm} is not shorter than trainer.max_duration={total}"
            )

    @property
    def lr_scale(self) -> float:
        """Factor applied to lr and min_lr: global_batch/256 with ``optimizer.scale_lr``."""
        return self.trainer.global_batch_size / 256 if self.optimizer.scale_lr else 1.0

    @property
    def peak_lr(self) -> float:
        return self.optimizer.lr * self.lr_scale

    @property
    def min_lr(self) -> float:
        return self.scheduler.min_lr * self.lr_scale

    def flat(self) -> dict[str, Any]:
        """The resolved recipe as ``{"section.key": value}`` (what the loggers record)."""
        out: dict[str, Any] = {}
        for section, value in dataclasses.asdict(self).items():
            if isinstance(value, dict) and section != "variables":
                out.update({f"{section}.{k}": v for k, v in value.items()})
            else:
                out[section] = value
        return out

    def data_for_world(self, world_size: int) -> DataConfig:
        """The data section with the per-process batch size for ``world_size`` processes."""
        if self.trainer.global_batch_size % world_size:
            raise RecipeError(
                f"trainer.global_batch_size={self.trainer.global_batch_size} is not divisible by "
                f"the {world_size} processes"
            )
        raw = {**vars(self.data), "batch_size": self.trainer.global_batch_size // world_size}
        return DataConfig(**raw)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RecipeConfig:
    """Read a YAML recipe, apply ``section.key=value`` overrides and validate everything.

    Args:
        path: the recipe file, or the bare name of a shipped one (``tiny-synthetic``).
        overrides: dotted overrides, values parsed as YAML (``seed=3``, ``data.path=/x``).

    Raises:
        RecipeError: a missing file, bad YAML, an unknown key or a bad value, named.
    """
    path = resolve_recipe(Path(path))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"recipe {path} cannot be read as text: {err}") from err
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections")
    for override in overrides:
        apply_override(raw, override)
    return recipe_from_dict(raw)


def shipped_recipes() -> list[str]:
    """Names of the training recipes that ship inside this package (``vtp train NAME`` finds
    them); ``finetune-*.yaml`` are fine-tuning recipes (recipes/finetune_config.py)."""
    return sorted(p.name for p in RECIPE_DIR.glob("*.yaml") if not p.name.startswith("finetune-"))


def resolve_recipe(path: Path) -> Path:
    """The recipe file ``path`` names: the file itself, or a shipped recipe by bare name."""
    if path.is_file():
        return path
    shipped = RECIPE_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise RecipeError(f"recipe {path} does not exist; "
                      f"shipped recipes: {', '.join(shipped_recipes())}")


def recipe_from_dict(raw: dict[str, Any]) -> RecipeConfig:
    """Validate raw recipe data (as read from YAML, overrides applied) into a RecipeConfig."""
    raw = _substitute(copy.deepcopy(raw), raw.get("variables") or {})
    raw["model"] = _model_section(raw.get("model"))
    raw["data"] = _data_section(raw)
    # data last: its derived values are reported under their own section if they are bad
    return build(RecipeConfig, {k: raw[k] for k in sorted(raw, key=lambda k: k == "data")}, "")


def _model_section(section: Any) -> dict[str, Any]:
    section = dict(section or {})
    renamed = sorted(RENAMED_KEYS.keys() & section.keys())
    if renamed:
        raise RecipeError(f"model.{renamed[0]} was renamed to model.{RENAMED_KEYS[renamed[0]]}; "
                          "use the new name")
    size = section.pop("size", "base")
    if size not in MODEL_SIZES:
        raise RecipeError(f"model.size: {size!r} is not one of {sorted(MODEL_SIZES)}")
    return {**MODEL_SIZES[size], **section}


def _data_section(raw: dict[str, Any]) -> dict[str, Any]:
    data = raw.get("data") or {}
    if not isinstance(data, dict):
        raise RecipeError("section 'data' must be a mapping")
    for key, source in DERIVED_DATA_KEYS.items():
        if key in data:
            raise RecipeError(f"data.{key} is derived from {source}; set it there instead")
    model = raw["model"]
    defaults = ModelConfig()
    trainer = raw.get("trainer") or {}
    derived = {
        "num_frames": model.get("num_frames", defaults.num_frames),
        "image_size": model.get("image_size", defaults.image_size),
        "tubelet": model.get("tubelet", defaults.tubelet),
        "video_mask_ratio": model.get("video_mask_ratio", defaults.video_mask_ratio),
        "text_mask_ratio": model.get("text_mask_ratio", defaults.text_mask_ratio),
        "batch_size": trainer.get("global_batch_size", TrainerConfig.global_batch_size),
        "seed": raw.get("seed", RecipeConfig.seed),
    }
    return {**data, **derived}


def _substitute(node: Any, variables: dict[str, Any]) -> Any:
    """Replace ``${variables.NAME}`` in values (a whole-value reference keeps its YAML type)."""
    if isinstance(node, dict):
        return {k: (v if k == "variables" else _substitute(v, variables)) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, variables) for v in node]
    if not isinstance(node, str) or "${" not in node:
        return node
    whole = re.fullmatch(r"\$\{variables\.(\w+)\}", node)
    if whole:
        return _variable(variables, whole.group(1))
    return re.sub(r"\$\{variables\.(\w+)\}", lambda m: str(_variable(variables, m.group(1))), node)


def _variable(variables: dict[str, Any], name: str) -> Any:
    if name not in variables:
        raise RecipeError(f"${{variables.{name}}} is used but 'variables' has no key '{name}'")
    return variables[name]
