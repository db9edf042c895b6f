"""The data settings a checkpoint carries: how its training clips were sampled and resized and
its captions tokenized, so that evaluation feeds the model the way it was trained.

Saved in the checkpoint as a plain dict (``dataclasses.asdict``); a setting an older
checkpoint did not record takes the pipeline's default (:class:`pipeline.DataConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pipeline import DataConfig

__all__ = ["DataSettings"]


def _pipeline_default(name: str) -> Any:
    # The default lives in DataConfig only: a checkpoint without the setting was trained with it.
    return field(default=DataConfig.__dataclass_fields__[name].default)


@dataclass(frozen=True)
class DataSettings:
    """The :class:`pipeline.DataConfig` fields a model is trained with and evaluated with
    (see DataConfig for each one's meaning)."""

    sampler: Literal["dense", "segments", "sparse"] = _pipeline_default("sampler")
    stride: int = _pipeline_default("stride")
    sparse_clips: int = _pipeline_default("sparse_clips")
    text_max_length: int = _pipeline_default("text_max_length")
    tokenizer_path: str | None = _pipeline_default("tokenizer_path")
    interpolation: Literal["nearest", "linear", "cubic"] = _pipeline_default("interpolation")
    text_padding: Literal["max_length", "longest"] = _pipeline_default("text_padding")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, data: DataConfig) -> DataSettings:
        """The settings of a training run's data."""
        return cls(**{name: getattr(data, name) for name in cls.names()})

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DataSettings:
        """Settings from a checkpoint's dict or user overrides; missing ones take the default.

        Raises:
            ValueError: a key that is not a data setting, naming the known ones.
        """
        unknown = set(raw) - set(cls.names())
        if unknown:
            raise ValueError(f"unknown data setting(s) {sorted(unknown)}; "
                             f"known: {sorted(cls.names())}")
        return cls(**raw)
