"""Where the real data lives: ``FAIRFRONT_DATA_DIR``, else ``../shared/data`` beside the project.

The data files are never copied into the repository; a loader reads each dataset by path, in
its original layout, from one data root holding one folder per dataset (``redditbias/``,
``sst2/``, ...).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fairfront.errors import DataError

__all__ = ["ENV_VAR", "default_data_dir", "dataset_folder", "content_digest"]

ENV_VAR = "FAIRFRONT_DATA_DIR"

# objectives/data/datasets/_paths.py -> parents[3] is the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[3]


def _candidates() -> list[Path]:
    return [Path.cwd() / ".." / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data"]


def default_data_dir() -> Path | None:
    """The data root to read built-in datasets from, or None when there is none.

    ``FAIRFRONT_DATA_DIR`` wins when it is set (and must then exist: a typo should not silently
    fall back to another copy). Otherwise the first existing folder of ``<cwd>/../shared/data``
    and ``<repository root>/../shared/data``.

    Raises:
        DataError: ``FAIRFRONT_DATA_DIR`` is set but is not a folder.

    Example:
        >>> root = default_data_dir()
        >>> root is None or root.is_dir()
        True
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"{ENV_VAR}={env} is not a folder; point it at the folder that holds the "
                            "dataset folders (redditbias/, sst2/, ...) or unset it")
        return path.resolve()
    for path in _candidates():
        if path.is_dir():
            return path.resolve()
    return None


def dataset_folder(name: str, folder: str, data_dir: str | os.PathLike[str] | None) -> Path:
    """The folder of one built-in dataset under ``data_dir`` (or the default data root).

    Raises:
        DataError: no data root was found, or it has no ``folder``; the message says where it
            looked and that ``FAIRFRONT_DATA_DIR`` can point at the data.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        looked = f"data_dir={root}"
    else:
        root = default_data_dir()
        looked = " and ".join(str(p.resolve()) for p in _candidates())
        if root is None:
            raise DataError(f"{name}: no data folder found (looked in {looked}); set {ENV_VAR} to the folder "
                            f"that holds {folder}/")
    path = root / folder
    if not path.is_dir():
        raise DataError(f"{name}: {path} does not exist (looked in {looked if data_dir is not None else root}); "
                        f"set {ENV_VAR} to the folder that holds {folder}/")
    return path


def require_file(name: str, path: Path) -> Path:
    """``path`` itself, or a DataError naming the missing file of dataset ``name``."""
    if not path.is_file():
        raise DataError(f"{name}: missing file {path} (the dataset's original layout is described in "
                        f"{path.parent / 'SOURCE.md'})")
    return path


def content_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (relative names and bytes, in name order).

    What the prepared-study cache keys on for data read from disk: an edited file, or another copy
    of a dataset that differs, is prepared again instead of being served from a stale cache. The
    datasets are a few megabytes each, so hashing them costs milliseconds.
    """
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    for f in files:
        digest.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:16]
