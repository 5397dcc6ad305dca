"""Which knob: importance per objective on a synthetic study whose objectives are known functions of its parameters.

The study is built with Optuna directly: ``distillation.alpha`` drives accuracy, ``pruning.sparsity``
drives the bias objective, ``quantization.bits`` drives size, and ``fairness.weight`` drives nothing.
Each evaluator must put each objective's driver first, and the partial dependence must show the bias
rising with sparsity in each schedule.
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from fairfront.search.explain.dependence import partial_dependence
from fairfront.search.explain.importance import family_table, objective_importances
from fairfront.search.front_data import objectives

DRIVERS = {"accuracy": "distillation.alpha", "size": "quantization.bits", "bias": "pruning.sparsity"}


@pytest.fixture(scope="module")
def synthetic_study() -> optuna.Study:
    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["accuracy", "size", "bias"])

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        alpha = trial.suggest_float("distillation.alpha", 0.0, 0.9)
        sparsity = trial.suggest_float("pruning.sparsity", 0.2, 0.9)
        schedule = trial.suggest_categorical("pruning.schedule", ["one_shot", "gradual"])
        bits = trial.suggest_int("quantization.bits", 2, 8)
        trial.suggest_float("fairness.weight", 0.1, 10.0)
        offset = 0.05 if schedule == "one_shot" else 0.0
        return (0.9 - 0.3 * (alpha - 0.6) ** 2 + 0.002 * rng.normal(), 1000.0 * bits + rng.normal(),
                0.4 * sparsity ** 2 + offset + 0.002 * rng.normal())

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=60)
    return study


@pytest.mark.parametrize("evaluator", ["ped_anova", "fanova"])
def test_each_objective_ranks_its_own_driver_first(synthetic_study, evaluator: str) -> None:
    objs = objectives(synthetic_study)
    found = objective_importances(synthetic_study, objs, evaluator=evaluator)
    for objective, driver in DRIVERS.items():
        ranked = sorted(found[objective], key=lambda p: -found[objective][p])
        assert ranked[0] == driver, (objective, found[objective])
        assert sum(found[objective].values()) == pytest.approx(1.0)
    assert found["bias"]["fairness.weight"] < found["bias"]["pruning.sparsity"] / 3


def test_families_side_by_side_and_the_bias_rises_with_sparsity_per_schedule(synthetic_study) -> None:
    objs = objectives(synthetic_study)
    found = objective_importances(synthetic_study, objs)
    families = family_table(found, objs)
    assert set(families) == {"distillation", "pruning", "quantization", "fairness"}
    assert families["pruning"][0]["param"] == "pruning.sparsity"  # strongest for the bias objective first
    assert families["pruning"][0]["bias"] > families["pruning"][0]["accuracy"]
    (dep,) = partial_dependence(synthetic_study.trials, objs, found)
    assert dep["objective"] == "bias" and dep["param"] == "pruning.sparsity"
    for level in ("one_shot", "gradual"):
        means = [r["mean"] for r in dep["rows"] if r["by"] == level]
        assert len(means) >= 3 and means[-1] > means[0] + 0.1
    assert sum(r["n"] for r in dep["rows"]) == len(synthetic_study.trials)
