"""Samplers a study file can name (``[study] sampler``).

Optuna's CMA-ES refuses multi-objective studies and its pruners do not apply to them, so the
choice is between TPE (multi-objective TPE, Ozaki et al. 2020), NSGA-II (Deb et al. 2002),
Gaussian-process BO (GPSampler, fast with ``greenlet``), and random search (the baseline every
sampler should beat).

On resume the seed is offset by the number of trials already in the study, so a seeded random
sampler does not replay the suggestions it already made.
"""

from __future__ import annotations

import optuna

__all__ = ["SAMPLERS", "build_sampler"]

SAMPLERS = ("tpe", "nsga2", "gp", "random")


def build_sampler(name: str, *, seed: int, population_size: int | None = None,
                  n_trials: int = 50) -> optuna.samplers.BaseSampler:
    """The sampler for ``name``; NSGA-II's population defaults to a quarter of the trials (4 to 50)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=min(10, max(3, n_trials // 4)))
    if name == "nsga2":
        size = population_size or max(4, min(50, n_trials // 4))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=size)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler {name!r} is unknown; allowed: {', '.join(SAMPLERS)}")
