"""Commands the tool prints for a person to copy: they carry the person's own options.

A hint such as "continue it with: fairfront resume NAME" that drops ``--storage`` sends the user
to the default database, where the study does not exist (and, before ``resume`` refused a missing
database, created an empty one). Every printed command is built here, with the storage always
named and the artifact and cache folders named where they are not the defaults.

Example:
    >>> from pathlib import Path
    >>> command("resume", "demo", storage="sqlite:///runs/x.db", cache_dir=Path("studies/cache"))
    'fairfront resume demo --storage sqlite:///runs/x.db'
    >>> command("dashboard", storage="sqlite:///x.db", artifact_dir=Path("my artifacts"))
    "fairfront dashboard --storage sqlite:///x.db --artifact-dir 'my artifacts'"
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fairfront.search.options import RunOptions

__all__ = ["DEFAULT_ARTIFACT_DIR", "DEFAULT_CACHE_DIR", "command", "resume_command"]

DEFAULT_ARTIFACT_DIR = Path("studies/artifacts")
DEFAULT_CACHE_DIR = Path("studies/cache")


def command(*words: str, storage: str | None = None, artifact_dir: Path | None = None,
            cache_dir: Path | None = None) -> str:
    """``fairfront WORDS...`` with the options a copy of it needs, quoted for a POSIX shell."""
    parts = ["fairfront", *words]
    if storage is not None:
        parts += ["--storage", storage]
    if artifact_dir is not None and Path(artifact_dir) != DEFAULT_ARTIFACT_DIR:
        parts += ["--artifact-dir", str(artifact_dir)]
    if cache_dir is not None and Path(cache_dir) != DEFAULT_CACHE_DIR:
        parts += ["--cache-dir", str(cache_dir)]
    return shlex.join(parts)


def resume_command(study_name: str, options: RunOptions) -> str:
    """The ``fairfront resume`` that continues ``study_name`` where this run's options put it."""
    return command("resume", study_name, storage=options.storage, artifact_dir=options.artifact_dir,
                   cache_dir=options.cache_dir)
