"""Where the intrinsic benchmarks find their data files.

The data are never copied into the repository: each benchmark reads its folder (``stereoset/``,
``crows_pairs/``, ``winobias/``) under one data root. The root is, in order: the ``data_dir``
argument, :func:`fairfront.objectives.datasets.default_data_dir` when that package provides it,
else ``FAIRFRONT_DATA_DIR``, else ``<repository>/../shared/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fairfront.errors import DataError

__all__ = ["ENV_VAR", "data_root", "benchmark_folder"]

ENV_VAR = "FAIRFRONT_DATA_DIR"

# objectives/intrinsic/_paths.py -> parents[2] is the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[2]


def _fallback_root() -> Path | None:
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"{ENV_VAR}={env} is not a folder; point it at the folder that holds "
                            "stereoset/, crows_pairs/ and winobias/, or unset it")
        return path.resolve()
    path = _REPO_ROOT / ".." / "shared" / "data"
    return path.resolve() if path.is_dir() else None


def data_root() -> Path | None:
    """The default data root, or None when no data folder can be found.

    Uses ``fairfront.objectives.datasets.default_data_dir`` when it exists, so that every part
    of fairfront agrees on one location; otherwise the same rule applied here.
    """
    try:
        from fairfront.objectives import datasets as _datasets
    except ImportError:  # the datasets package is optional for the intrinsic benchmarks
        _datasets = None
    finder = getattr(_datasets, "default_data_dir", None)
    if callable(finder):
        root = finder()
        return None if root is None else Path(root)
    return _fallback_root()


def benchmark_folder(folder: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder ``folder`` under ``data_dir`` (or the default data root).

    Raises:
        DataError: no data root was found, or it has no ``folder``.
    """
    if data_dir is not None:
        root: Path | None = Path(data_dir).expanduser()
    else:
        root = data_root()
    if root is None:
        raise DataError(f"no data folder for {folder}/ was found; pass data_dir= or set {ENV_VAR} to the "
                        f"folder that holds {folder}/")
    path = root / folder
    if not path.is_dir():
        raise DataError(f"{path} does not exist; pass data_dir= or set {ENV_VAR} to the folder that "
                        f"holds {folder}/")
    return path
