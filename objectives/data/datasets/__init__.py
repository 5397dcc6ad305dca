"""Loaders for the real bias datasets, each read in its original layout, in one common shape.

Every loader returns a :class:`TextDataset`: a frame with ``text``, ``label``, ``group`` and
``split`` columns plus the class and group names in a fixed order. Three ways to name data:

* a built-in real dataset (:data:`DATASETS`, :func:`load_builtin`): ``redditbias``,
  ``jigsaw_templates``, ``sst2``, ``davidson``, ``gap``, read from the data root
  (:func:`default_data_dir`: ``FAIRFRONT_DATA_DIR``, else ``../shared/data``);
* a user's file (:func:`load_table`): CSV, TSV, JSONL, JSON or Parquet with named columns;
* a 🤗 ``datasets`` name or local folder (:func:`load_hf`).

Datasets without official splits are divided by :func:`stratified_split`: deterministic for a
seed, independent of row order, stratified by label x group, duplicates kept together.

Example:
    >>> from fairfront.objectives.data.datasets import DATASETS, load_builtin
    >>> sorted(DATASETS)
    ['davidson', 'gap', 'jigsaw_templates', 'redditbias', 'sst2']
    >>> data = load_builtin("gap")  # doctest: +SKIP
    >>> data.label_names, data.group_names  # doctest: +SKIP
    (('A', 'B', 'NEITHER'), ('feminine', 'masculine'))
"""

from __future__ import annotations

from fairfront.objectives.data.datasets._dataset import SPLITS, TextDataset
from fairfront.objectives.data.datasets._hf import load_hf
from fairfront.objectives.data.datasets._paths import ENV_VAR, content_digest, dataset_folder, default_data_dir
from fairfront.objectives.data.datasets._registry import DATASETS, DatasetInfo, load_builtin
from fairfront.objectives.data.datasets._split import stratified_split
from fairfront.objectives.data.datasets._table import (
    FORMATS,
    SPLIT_ALIASES,
    ReadOptions,
    delimiter_hint,
    file_format,
    load_table,
    row_locator,
)

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "FORMATS",
    "SPLITS",
    "SPLIT_ALIASES",
    "DatasetInfo",
    "ReadOptions",
    "TextDataset",
    "content_digest",
    "dataset_folder",
    "default_data_dir",
    "delimiter_hint",
    "file_format",
    "load_builtin",
    "load_hf",
    "load_table",
    "row_locator",
    "stratified_split",
]
