"""The online data pipeline: shards -> decoded, augmented, masked batch dicts for Composer.

Training calls ``build_dataspec(DataConfig(...))`` and passes the result to
``composer.Trainer(train_dataloader=...)``; ``build_dataloader`` gives the bare torch DataLoader.
"""

from __future__ import annotations

import importlib

# Loaded on first use: `vtp shard`'s pool workers read MJPEG AVIs with pipeline.mjpeg and
# must not pay for importing torch and Streaming (seconds of CPU per worker).
_EXPORTS = {"DataConfig": "pipeline.config", "CodecError": "pipeline.decode",
            "CorruptSampleError": "pipeline.decode", "normalize_video": "pipeline.decode",
            "BatchBuilder": "pipeline.loader", "build_dataloader": "pipeline.loader",
            "build_dataspec": "pipeline.loader", "split_batch": "pipeline.loader"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
