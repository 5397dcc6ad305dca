"""Which knob: each parameter's importance for each objective, with Optuna's own evaluators.

Importance is computed per objective (accuracy, size, every bias objective), on the study's
COMPLETE trials, so a parameter that drives bias but not accuracy shows as such. Two evaluators:

- ``ped_anova`` (the default): Optuna's PED-ANOVA (Watanabe et al., IJCAI 2023) compares the
  distribution of each parameter among the best trials with its distribution over all trials. It
  is fast (no model is fitted), handles conditional parameters, and works on few trials; the
  "best" are the top ``max(10%, 5 / n)`` of trials for the objective (at most half), so that at
  least 5 trials are in the top as Optuna's documentation recommends.
- ``fanova``: Optuna's fANOVA (Hutter et al., ICML 2014) fits a random forest of the objective on
  the parameters and decomposes its variance. It needs more trials to be reliable, and only rates
  parameters present in every COMPLETE trial.

Optuna's PED-ANOVA takes lower as better when given a target, so a maximised objective is negated.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.trial import FrozenTrial

from fairfront.search.front_data import Objective

__all__ = ["EVALUATORS", "MIN_TRIALS", "objective_importances", "family_table"]

EVALUATORS = ("ped_anova", "fanova")
MIN_TRIALS = 10
"""COMPLETE trials needed: PED-ANOVA's top quantile then holds at least 5 of them (at most half the trials)."""


def _evaluator(name: str, n_trials: int, seed: int) -> optuna.importance.BaseImportanceEvaluator:
    if name == "fanova":
        return FanovaImportanceEvaluator(seed=seed)
    return PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 5.0 / n_trials)))


def _target(index: int, maximize: bool, evaluator: str) -> Any:
    sign = -1.0 if (maximize and evaluator == "ped_anova") else 1.0

    def target(trial: FrozenTrial) -> float:
        return sign * float(trial.values[index])
    return target


def objective_importances(study: optuna.Study, objs: list[Objective], *, evaluator: str = "ped_anova",
                          seed: int = 0) -> dict[str, dict[str, float]]:
    """``{objective name: {parameter: importance}}``, each objective's importances summing to 1 (or all 0
    where the objective did not vary)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    out: dict[str, dict[str, float]] = {}
    for index, objective in enumerate(objs):
        values = {t.values[index] for t in complete}
        params = sorted({p for t in complete for p in t.params})
        if len(values) < 2 or not params:
            out[objective.name] = dict.fromkeys(params, 0.0)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns that a target is minimised: it is, by design
            found = optuna.importance.get_param_importances(
                study, evaluator=_evaluator(evaluator, len(complete), seed),
                target=_target(index, objective.maximize, evaluator))
        out[objective.name] = {p: (0.0 if not math.isfinite(v) else float(v)) for p, v in found.items()}
    return out


def family_table(importances: dict[str, dict[str, float]], objs: list[Objective]) -> dict[str, list[dict[str, Any]]]:
    """Per compression family (a parameter's prefix), its parameters' importance for every objective side by
    side, the strongest for the first bias objective first."""
    bias = next((o.name for o in objs if o.kind == "bias"), objs[-1].name)
    params = sorted({p for table in importances.values() for p in table})
    families: dict[str, list[dict[str, Any]]] = {}
    for param in params:
        row = {"param": param, **{o.name: importances.get(o.name, {}).get(param) for o in objs}}
        families.setdefault(param.split(".")[0], []).append(row)
    for rows in families.values():
        rows.sort(key=lambda r: -(r[bias] or 0.0))
    return families
