"""The Pareto front's size as trials complete, for the driver's progress line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import optuna

__all__ = ["ParetoFront"]


class ParetoFront:
    """The Pareto front's values, kept up to date in O(front size) per trial.

    ``study.best_trials`` re-reads and copies every trial, which would make the driver's cost per
    trial grow with the study; the progress line only needs the front's size.
    """

    def __init__(self, directions: Sequence[optuna.study.StudyDirection], values: Iterable[Sequence[float]]):
        self.signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in directions]
        self.points: list[tuple[float, ...]] = []
        for v in values:
            self.add(v)

    @staticmethod
    def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    def add(self, values: Sequence[float]) -> None:
        p = tuple(s * v for s, v in zip(self.signs, values))
        if any(self._dominates(q, p) for q in self.points):
            return
        self.points = [q for q in self.points if not self._dominates(p, q)] + [p]

    def __len__(self) -> int:
        return len(self.points)
