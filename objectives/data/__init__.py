"""The task a study compresses for: built-in and user datasets, the synthetic demo task, splits."""

from fairfront.objectives.data.task import SPLITS, DataSpec, EncodedSplit, encode_splits, load_task

__all__ = ["DataSpec", "EncodedSplit", "load_task", "encode_splits", "SPLITS"]
