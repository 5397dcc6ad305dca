"""The front's hypervolume as a share of the box between the ideal point and the reference point.

One definition for every place that shows it (the run's progress line, ``fairfront report``): the
reference point is each objective's worst value among the COMPLETE trials moved 10% of its range
further (so the worst trials still add volume), the ideal point each objective's best value, and
the hypervolume is divided by the volume of the box between them, which makes it a number in
[0, 1] that does not depend on the objectives' units. The volume itself is Optuna's (WFG).

Example:
    >>> round(hypervolume_share([[0.9, 100.0], [0.5, 10.0]], [True, False]), 4)  # 7.56 of a 0.44 x 99 box
    0.1736
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hypervolume_reference", "reference_from_bounds", "hypervolume_share"]


def reference_from_bounds(best: np.ndarray, worst: np.ndarray) -> np.ndarray:
    """The reference point in minimisation form, from each objective's best and worst value (minimisation form)."""
    span = worst - best
    margin = np.where(span > 0, 0.1 * span, np.maximum(0.1 * np.abs(worst), 0.1))
    reference: np.ndarray = worst + margin
    return reference


def _signs(maximize: Sequence[bool]) -> np.ndarray:
    return np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # minimisation form: lower is better everywhere


def hypervolume_reference(values: np.ndarray, maximize: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The reference point (each objective's worst value moved 10% of its range further) and the ideal point.

    Args:
        values: Objective values of the COMPLETE trials, ``[n_trials, n_objectives]``.
        maximize: Whether each objective is maximised.
    """
    signs = _signs(maximize)
    lowered = np.asarray(values, dtype=float) * signs
    best, worst = lowered.min(axis=0), lowered.max(axis=0)
    return reference_from_bounds(best, worst) * signs, best * signs


def hypervolume_share(values: Sequence[Sequence[float]] | np.ndarray, maximize: Sequence[bool],
                      worst: Sequence[float] | None = None) -> float | None:
    """Hypervolume of ``values``' front over the ideal-to-reference box; None without two objectives or a value.

    Args:
        values: Objective values (any trials: dominated ones add nothing), ``[n, n_objectives]``.
        maximize: Whether each objective is maximised.
        worst: Each objective's worst value among all the trials the reference is taken from, where
            ``values`` holds only the front (the run's progress keeps only the front); default: the
            worst of ``values``.
    """
    from optuna._hypervolume import compute_hypervolume  # Optuna's WFG, as its hypervolume history uses

    points = np.asarray(values, dtype=float)
    if points.ndim != 2 or len(points) == 0 or points.shape[1] < 2:
        return None
    signs = _signs(maximize)
    lowered = points * signs
    best = lowered.min(axis=0)
    bound = lowered.max(axis=0) if worst is None else np.maximum(lowered.max(axis=0), np.asarray(worst) * signs)
    reference = reference_from_bounds(best, bound)
    box = float(np.prod(reference - best))
    return float(compute_hypervolume(lowered, reference)) / box if box > 0 else None
