"""Pareto dominance under uncertainty: which trials a noisy measurement cannot tell apart from the best.

Every objective value of a trial is an estimate: accuracy on a finite validation split, a bias
gap from a few hundred examples per group. The plain Pareto front drops a trial that is worse by
0.001 on one objective and equal on the others, though no replicate would ever confirm that
difference. Here, with objectives oriented so that larger is better (minimised ones negated),
values ``x`` and standard errors ``se``:

    A robustly dominates B  iff  x_A,k >= x_B,k on every objective k, and
                                 x_A,k - x_B,k > z * sqrt(se_A,k^2 + se_B,k^2) on at least one k.

The robust front is the trials no other trial robustly dominates; it contains the plain front
(with every ``se = 0`` the two coincide). Each front trial's probability of being non-dominated
is estimated by a parametric bootstrap: every trial's objectives are drawn from
``normal(x, se)`` independently, and the share of draws in which no drawn trial dominates it (plain
dominance) is its probability.

Pure functions over arrays: ``values`` and ``se`` are ``[n_trials, n_objectives]``, ``maximize``
one flag per objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["oriented", "robust_dominance", "robust_front", "non_dominated", "p_nondominated"]

DEFAULT_Z = 1.96
DEFAULT_DRAWS = 2000
_BLOCK = 4_000_000
"""Booleans per block of the bootstrap's dominance tensor (draws x candidates x trials x objectives)."""


def oriented(values: npt.ArrayLike, maximize: Sequence[bool]) -> np.ndarray:
    """``values`` with minimised objectives negated, so that larger is better everywhere."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(maximize):
        raise ValueError(f"values must be [n_trials, {len(maximize)}], got shape {values.shape}")
    return np.where(np.asarray(maximize, dtype=bool), values, -values)


def _check(values: np.ndarray, se: np.ndarray, z: float) -> None:
    if se.shape != values.shape:
        raise ValueError(f"se must have the shape of values {values.shape}, got {se.shape}")
    if not (np.isfinite(values).all() and np.isfinite(se).all()) or (se < 0).any():
        raise ValueError("values must be finite and standard errors finite and >= 0")
    if not z >= 0:
        raise ValueError(f"z must be >= 0, got {z}")


def robust_dominance(values: npt.ArrayLike, se: npt.ArrayLike, maximize: Sequence[bool], *,
                     z: float = DEFAULT_Z) -> np.ndarray:
    """``D[i, j]``: trial ``i`` robustly dominates trial ``j`` (the rule in the module docstring)."""
    x = oriented(values, maximize)
    err = np.asarray(se, dtype=float)
    _check(x, err, z)
    diff = x[:, None, :] - x[None, :, :]
    margin = z * np.sqrt(err[:, None, :] ** 2 + err[None, :, :] ** 2)
    return np.asarray((diff >= 0).all(axis=2) & (diff > margin).any(axis=2))


def robust_front(values: npt.ArrayLike, se: npt.ArrayLike, maximize: Sequence[bool], *,
                 z: float = DEFAULT_Z) -> np.ndarray:
    """A mask of the trials that no trial robustly dominates."""
    return np.asarray(~robust_dominance(values, se, maximize, z=z).any(axis=0))


def non_dominated(values: npt.ArrayLike, maximize: Sequence[bool]) -> np.ndarray:
    """The plain Pareto front's mask (equal trials are both on it)."""
    array = np.asarray(values, dtype=float)
    return robust_front(array, np.zeros_like(array), maximize, z=0.0)


def p_nondominated(values: npt.ArrayLike, se: npt.ArrayLike, maximize: Sequence[bool], *,
                   candidates: npt.ArrayLike | None = None, draws: int = DEFAULT_DRAWS,
                   seed: int = 0) -> np.ndarray:
    """For each candidate trial, the share of ``draws`` in which no other trial dominates it.

    Each draw takes every trial's objectives from ``normal(values, se)`` (independent across trials
    and objectives; ``se = 0`` keeps a value exact), seeded by ``seed``.

    Args:
        candidates: Indices of the trials to score (default: every trial); every trial can dominate.
    """
    x = oriented(values, maximize)
    err = np.asarray(se, dtype=float)
    _check(x, err, 0.0)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    idx = np.arange(len(x)) if candidates is None else np.asarray(candidates, dtype=int)
    rng = np.random.default_rng(seed)
    n, m = x.shape
    block = max(1, _BLOCK // max(1, len(idx) * n * m))
    free = np.zeros(len(idx))
    for start in range(0, draws, block):
        k = min(block, draws - start)
        sample = x[None] + err[None] * rng.standard_normal((k, n, m))
        them = sample[:, None, :, :]  # [k, 1, n, m]: every trial as a possible dominator
        mine = sample[:, idx, None, :]  # [k, c, 1, m]: the candidates
        beats = np.logical_and(np.all(them >= mine, axis=3), np.any(them > mine, axis=3))
        dominated = np.any(beats, axis=2)
        free += np.logical_not(dominated).sum(axis=0)
    return free / draws
