"""Sparsity schedules: how the pruned fraction grows over training.

Three schedules are compared in the literature and searched here:

- ``one_shot``: the final sparsity from the first step (prune, then fine-tune).
- ``iterative``: ``iterations`` equal steps of ``final / iterations``, evenly spaced between the
  start and the end of the pruning window.
- ``gradual``: Zhu & Gupta (2017), ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3``
  for ``t0 <= t <= t0 + n * dt``, updated every ``dt`` = ``frequency`` steps.

The window is given as fractions of the total number of training steps, so one setting means the
same thing for a 50-step and a 5,000-step run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SCHEDULES", "SparsitySchedule", "polynomial_sparsity"]

SCHEDULES = ("one_shot", "iterative", "gradual")


def polynomial_sparsity(step: int, *, final: float, initial: float = 0.0, start_step: int,
                        n_updates: int, frequency: int, power: int = 3) -> float:
    """Zhu & Gupta's gradual pruning curve, evaluated at the last update at or before ``step``.

    Example:
        >>> polynomial_sparsity(0, final=0.8, start_step=0, n_updates=4, frequency=10)
        0.0
        >>> polynomial_sparsity(40, final=0.8, start_step=0, n_updates=4, frequency=10)
        0.8
    """
    if step < start_step:
        return 0.0
    done = min((step - start_step) // frequency, n_updates)
    progress = done / n_updates if n_updates > 0 else 1.0
    return final + (initial - final) * (1.0 - progress) ** power


@dataclass(frozen=True)
class SparsitySchedule:
    """A sampled schedule; :meth:`at` gives the target sparsity at a training step."""

    kind: str
    final: float
    start: float = 0.0
    end: float = 0.75
    frequency: int = 10
    iterations: int = 4

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule {self.kind!r} is unknown; allowed: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.final < 1.0:
            raise ValueError(f"final sparsity {self.final} must be in [0, 1)")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"pruning window [{self.start}, {self.end}] must satisfy 0 <= start <= end <= 1")

    def window(self, total_steps: int) -> tuple[int, int]:
        t0 = int(math.floor(self.start * total_steps))
        t1 = max(t0, int(math.floor(self.end * total_steps)))
        return t0, t1

    def at(self, step: int, total_steps: int) -> float:
        """Target sparsity before optimizer step ``step`` (0-based) of ``total_steps``."""
        if self.kind == "one_shot" or total_steps <= 1:
            return self.final
        t0, t1 = self.window(total_steps)
        if self.kind == "iterative":
            if step < t0:
                return 0.0
            span = max(t1 - t0, 1)
            done = min(1 + (step - t0) * self.iterations // span, self.iterations)
            return self.final * done / self.iterations
        frequency = max(1, self.frequency)
        n_updates = max(1, (t1 - t0) // frequency)
        return polynomial_sparsity(step, final=self.final, start_step=t0, n_updates=n_updates,
                                   frequency=frequency)
