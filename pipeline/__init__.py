"""The online data pipeline: shards -> decoded, augmented, masked batch dicts for Composer."""

from pipeline.config import DataConfig
from pipeline.decode import CodecError, CorruptSampleError
from pipeline.loader import BatchBuilder, build_dataloader, build_dataspec, split_batch

__all__ = ["BatchBuilder", "CodecError", "CorruptSampleError", "DataConfig", "build_dataloader",
           "build_dataspec", "split_batch"]
