"""The training settings a study file chooses, read without torch.

``[teacher]`` and ``[student]`` are :class:`TrainSettings`; ``[execution] cuda_graphs`` is one of
:data:`CUDA_GRAPH_MODES`. The loop that uses them is :mod:`fairfront.objectives.training.loop`
(reading a study file, e.g. ``fairfront validate``, loads no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fairfront._config import Table

__all__ = ["TrainSettings", "CUDA_GRAPH_MODES"]

CUDA_GRAPH_MODES = ("auto", "off")
"""``[execution] cuda_graphs``: ``auto`` captures the step where it qualifies, ``off`` never does."""


@dataclass(frozen=True)
class TrainSettings:
    """``[teacher]`` or ``[student]``: how long and how fast to train."""

    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64

    @classmethod
    def from_table(cls, t: Table, *, defaults: TrainSettings | None = None) -> TrainSettings:
        d = defaults or cls()
        settings = cls(
            epochs=t.number("epochs", d.epochs, low=0.0, low_open=True, high=1000.0),
            max_steps=t.integer("max_steps", d.max_steps, low=1),
            batch_size=t.integer("batch_size", d.batch_size, low=1, high=4096),
            learning_rate=t.number("learning_rate", d.learning_rate, low=0.0, low_open=True, high=1.0),
            weight_decay=t.number("weight_decay", d.weight_decay, low=0.0, high=1.0),
            warmup_fraction=t.number("warmup_fraction", d.warmup_fraction, low=0.0, high=1.0),
            max_grad_norm=t.number("max_grad_norm", d.max_grad_norm, low=0.0),
            eval_batch_size=t.integer("eval_batch_size", d.eval_batch_size, low=1, high=4096),
        )
        t.done()
        return settings

    def total_steps(self, n_examples: int) -> int:
        per_epoch = math.ceil(n_examples / self.batch_size)
        steps = max(1, math.ceil(self.epochs * per_epoch))
        return min(steps, self.max_steps) if self.max_steps else steps
