"""Where the intrinsic benchmarks find their data files.

The data are never copied into the repository: each benchmark reads its folder (``stereoset/``,
``crows_pairs/``, ``winobias/``) under the one data root every part of fairfront uses
(:func:`fairfront.objectives.data.datasets.default_data_dir`: ``FAIRFRONT_DATA_DIR``, else
``../shared/data``), unless a ``data_dir`` is given.
"""

from __future__ import annotations

import os
from pathlib import Path

from fairfront.objectives.data.datasets._paths import dataset_folder

__all__ = ["benchmark_folder"]


def benchmark_folder(folder: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder ``folder`` under ``data_dir`` (or the default data root).

    Raises:
        DataError: no data root was found, or it has no ``folder``.
    """
    return dataset_folder(folder, folder, data_dir)
