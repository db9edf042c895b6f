"""The online data pipeline: shards -> decoded, augmented, masked batch dicts for Composer.

Training calls ``build_dataspec(DataConfig(...))`` and passes the result to
``composer.Trainer(train_dataloader=...)``; ``build_dataloader`` gives the bare torch DataLoader.
"""

from pipeline.config import DataConfig
from pipeline.decode import CodecError, CorruptSampleError, normalize_video
from pipeline.loader import BatchBuilder, build_dataloader, build_dataspec, split_batch

__all__ = ["BatchBuilder", "CodecError", "CorruptSampleError", "DataConfig", "build_dataloader",
           "build_dataspec", "normalize_video", "split_batch"]
