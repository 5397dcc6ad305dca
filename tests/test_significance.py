"""Is a bias difference real? The tests keep their error rates, find planted effects, and reach the stored trial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from fairfront.objectives.measures import group_fairness
from fairfront.objectives.measures.forgetting import disparate_impact, population_disparate_impact
from fairfront.objectives.measures.registry import names
from fairfront.objectives.measures.report import SplitScores, TrialReport
from fairfront.objectives.measures.significance import (
    adjust_p_values,
    benjamini_hochberg,
    mcnemar_exact,
    paired_differences,
    permutation_gap_test,
)
from fairfront.objectives.training.population import forgetting_measures
from fairfront.objectives.training.prepare import compute
from fairfront.objectives.training.trial import run_trial
from fairfront.search.studyfile import parse_study_text
from fairfront.spaces.pruning import PruningConfig
from fairfront.spaces.schedules import SparsitySchedule
from fairfront.spaces.space import CompressionConfig

from conftest import tiny_study_text

GAP_MEASURES = ("tpr_gap", "equalized_odds_gap", "demographic_parity_gap")


def _no_gap_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups with different base rates, predictions that depend on the true class only."""
    groups = rng.choice(np.array(["a", "b"], dtype=object), size=n)
    y = (rng.random(n) < np.where(groups == "a", 0.3, 0.6)).astype(int)
    right = rng.random(n) < np.where(y == 1, 0.8, 0.7)
    return y, np.where(right, y, 1 - y), groups


def test_the_permutation_test_rejects_no_gap_at_its_nominal_rate() -> None:
    rng = np.random.default_rng(11)
    n_datasets, alpha = 400, 0.05
    p_values = {name: [] for name in GAP_MEASURES}
    for k in range(n_datasets):
        y, pred, groups = _no_gap_data(rng, 400)
        result = permutation_gap_test(y, pred, sensitive_features=groups, measures=GAP_MEASURES, n_permutations=199,
                                      seed=k)
        for name in GAP_MEASURES:
            p_values[name].append(result["p_value"][name])
    se = np.sqrt(alpha * (1 - alpha) / n_datasets)
    for name, ps in p_values.items():
        rate = float(np.mean(np.asarray(ps) <= alpha))
        assert abs(rate - alpha) <= 3 * se, f"{name}: false-positive rate {rate:.3f}, expected {alpha} +- {3 * se:.3f}"


def test_a_bootstrap_interval_excludes_zero_where_the_test_finds_no_gap() -> None:
    y, pred, groups = _no_gap_data(np.random.default_rng(3), 600)
    low, _ = group_fairness.bootstrap_ci("tpr_gap", y, pred, sensitive_features=groups, n_resamples=300)
    p = permutation_gap_test(y, pred, sensitive_features=groups, measures=["tpr_gap"])["p_value"]["tpr_gap"]
    assert low > 0 and p > 0.05  # the interval of |difference| cannot say "no gap"; the test can


def test_a_planted_tpr_gap_is_found_and_the_p_value_is_seeded() -> None:
    rng = np.random.default_rng(5)
    y, pred, groups = _no_gap_data(rng, 800)
    missed = (groups == "a") & (y == 1) & (rng.random(len(y)) < 0.3)
    pred = np.where(missed, 0, pred)
    first = permutation_gap_test(y, pred, sensitive_features=groups, n_permutations=499, seed=1)
    assert first["p_value"]["tpr_gap"] == pytest.approx(1 / 500)  # the +1 correction: never 0
    assert set(first["p_value"]) == set(group_fairness.BIAS_MEASURES)
    again = permutation_gap_test(y, pred, sensitive_features=groups, n_permutations=499, seed=1)
    assert again == first



def test_the_gap_tests_are_about_the_positive_class_they_are_given() -> None:
    rng = np.random.default_rng(7)
    y, pred, groups = _no_gap_data(rng, 600)
    missed = (groups == "a") & (y == 0) & (rng.random(len(y)) < 0.3)  # a gap in class 0's recall only
    pred = np.where(missed, 1, pred)

    def p_value(**kw):
        test = permutation_gap_test(y, pred, sensitive_features=groups, measures=["tpr_gap"], **kw)
        return test["p_value"]["tpr_gap"]

    assert p_value(pos_label=0) < 0.01 < 0.05 < p_value()  # class 1's recall has no gap
    paired = paired_differences(y, pred, y, sensitive_features=groups, measures=["tpr_gap"], pos_label=0,
                                n_resamples=50)["measures"]["tpr_gap"]
    assert paired["a"] == pytest.approx(group_fairness.equal_opportunity_difference(
        y, pred, sensitive_features=groups, pos_label=0))

def test_benjamini_hochberg_matches_a_hand_computed_case() -> None:
    # sorted p: 0.01, 0.03, 0.04, 0.2 -> p*m/rank: 0.04, 0.06, 0.0533, 0.2 -> running min from the top
    adjusted = benjamini_hochberg([0.04, 0.01, 0.2, 0.03])
    assert adjusted == pytest.approx([0.16 / 3, 0.04, 0.2, 0.16 / 3])
    assert adjust_p_values([0.04, 0.5], "bonferroni") == pytest.approx([0.08, 1.0])
    with pytest.raises(ValueError, match="'bh' or 'bonferroni'"):
        adjust_p_values([0.1], "holm")


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_exact_mcnemar_is_the_binomial_test_on_discordant_pairs(alternative: str) -> None:
    for b, c in [(0, 0), (9, 1), (1, 9), (3, 3), (40, 25), (0, 12), (117, 80)]:
        expected = stats.binomtest(b, b + c, 0.5, alternative=alternative).pvalue if b + c else 1.0
        assert mcnemar_exact(b, c, alternative) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def _planted_loss(rng: np.random.Generator, loss: tuple[float, ...], n: int = 1500) -> tuple[np.ndarray, ...]:
    """Three classes; the compressed model loses ``loss[k]`` of class k's dense-correct examples, gains 5% back."""
    k = len(loss)
    y = np.repeat(np.arange(k), n // k)
    dense_right = rng.random(n) < 0.9
    dense = np.where(dense_right, y, (y + 1) % k)
    lost = dense_right & (rng.random(n) < np.asarray(loss)[y])
    gained = ~dense_right & (rng.random(n) < 0.05)
    compressed = np.where(lost, (y + 1) % k, np.where(gained, y, dense))
    return y, dense, compressed


def _unpaired_fisher_flags(y: np.ndarray, dense: np.ndarray, compressed: np.ndarray) -> bool:
    """The former test: one-sided Fisher on correct counts, as if the two models scored different examples."""
    d_ok, c_ok = dense == y, compressed == y
    p = [stats.fisher_exact([[c_ok[y == k].sum(), d_ok[y == k].sum()],
                             [c_ok[y != k].sum(), d_ok[y != k].sum()]], alternative="less").pvalue for k in range(3)]
    return bool(benjamini_hochberg(p)[0] <= 0.05)


def test_the_paired_disparate_impact_test_finds_a_class_losing_three_times_as_much() -> None:
    rng = np.random.default_rng(2019)
    flagged = others = unpaired = 0
    for _ in range(100):
        y, dense, compressed = _planted_loss(rng, (0.15, 0.05, 0.05))
        levels = disparate_impact(y, dense, compressed, by=y)["levels"]
        flagged += levels["0"]["significant"]
        others += levels["1"]["significant"] or levels["2"]["significant"]
        unpaired += _unpaired_fisher_flags(y, dense, compressed)
    assert flagged / 100 > 0.8, f"power {flagged / 100} on a 15% vs 5% loss (n = 1,500)"
    assert others / 100 <= 0.1
    assert unpaired < flagged


def test_the_paired_disparate_impact_test_keeps_its_level_without_a_difference() -> None:
    rng = np.random.default_rng(7)
    runs = 200
    any_flag = sum(any(level["significant"] for level in
                       disparate_impact(*_planted_loss(rng, (0.08, 0.08, 0.08))[:3],
                                        by=np.repeat(np.arange(3), 500))["levels"].values()) for _ in range(runs))
    se = np.sqrt(0.05 * 0.95 / runs)
    assert any_flag / runs <= 0.05 + 3 * se


def test_disparate_impact_reports_the_discordant_pairs_and_mcnemar() -> None:
    y = np.array([0] * 10 + [1] * 10)
    dense = y.copy()
    compressed = y.copy()
    compressed[:6] = 1  # class 0 loses 6 of its 10 dense-correct examples, class 1 none
    report = disparate_impact(y, dense, compressed, by=y)
    zero = report["levels"]["0"]
    assert (zero["losses"], zero["gains"], zero["loss_rate"]) == (6, 0, 0.6)
    assert zero["mcnemar_p"] == pytest.approx(stats.binomtest(6, 6, 0.5, alternative="greater").pvalue)
    # all 6 losses fell in class 0, which holds half the dense-correct examples
    assert zero["p_value"] == pytest.approx(stats.hypergeom.sf(5, 20, 10, 6))
    assert report["test"] == "paired_exact_loss_share" and report["overall"]["losses"] == 6


def test_welch_across_seed_populations_flags_the_forgotten_class() -> None:
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 300)

    def population(n_models: int, loss: tuple[float, ...]) -> np.ndarray:
        right = rng.random((n_models, len(y))) < 0.9 - np.asarray(loss)[y][None, :]
        return np.where(right, y[None, :], (y[None, :] + 1) % 3)

    dense, compressed = population(5, (0, 0, 0)), population(5, (0.2, 0.02, 0.02))
    report = population_disparate_impact(y, dense, compressed, by=y)
    seeds = forgetting_measures(y, compressed, dense=dense[0], population=dense)["disparate_impact"]
    assert seeds["population"] == report  # what a trial's forgetting report holds with several compressed seeds
    one = forgetting_measures(y, compressed[0], dense=dense[0], population=dense)["disparate_impact"]
    assert "population" not in one
    levels = report["levels"]
    assert levels["0"]["significant"] and levels["0"]["difference"] < 0
    # normalized by overall accuracy, the classes that kept their recall rise relative to the model
    assert all(levels[k]["difference"] > 0 for k in ("1", "2")) and report["test"] == "welch_t"
    with pytest.raises(ValueError, match="at least two models per population"):
        population_disparate_impact(y, population(1, (0, 0, 0)), population(3, (0, 0, 0)), by=y)


def test_a_method_and_its_twin_are_compared_on_shared_seeds_and_examples() -> None:
    rng = np.random.default_rng(9)
    y, base, groups = _no_gap_data(rng, 600)
    twin = np.stack([np.where(rng.random(len(y)) < 0.1, 1 - base, base) for _ in range(3)])
    better = np.where((rng.random(twin.shape) < 0.5) & (twin != y[None]), y[None], twin)
    out = paired_differences(y, better, twin, sensitive_features=groups, measures=["accuracy", "tpr_gap"],
                             n_resamples=300, seed=0)
    acc = out["measures"]["accuracy"]
    assert out["n_seeds"] == 3 and acc["difference"] == pytest.approx(float((better == y).mean() - (twin == y).mean()))
    assert acc["ci"][0] > 0 and acc["p_value"] < 0.01
    same = paired_differences(y, twin, twin, n_resamples=100)["measures"]["accuracy"]
    assert same["difference"] == 0 and same["ci"] == [0, 0] and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        paired_differences(y, twin, twin[:2])


@pytest.fixture(scope="module")
def trial_attrs() -> dict:
    torch.set_num_threads(1)
    study = parse_study_text(tiny_study_text("significance"), base_dir=Path("."))
    prepared = compute(study.prepare_spec, log=lambda m: None, device=torch.device("cpu"))
    compression = CompressionConfig(pruning=PruningConfig(0.5, SparsitySchedule("one_shot", 0.5)))
    outcome = run_trial(prepared, study.trial_spec(compression, 0), device=torch.device("cpu"), threads=1)
    dense_accuracy = float((prepared.dense_predictions("validation") == prepared.splits["validation"].labels).mean())
    return {"attrs": json.loads(json.dumps(outcome.attrs, allow_nan=False)), "dense_accuracy": dense_accuracy}


def test_a_trial_stores_the_gap_tests_and_the_paired_comparison_with_its_teacher(trial_attrs) -> None:
    validation = trial_attrs["attrs"]["validation"]
    group_measures = set(names(kind="bias", needs="groups"))
    assert set(validation["gap_test"]["p_value"]) == group_measures
    assert all(0 < p <= 1 for p in validation["gap_test"]["p_value"].values() if p is not None)
    assert set(validation["fairness"]["ci"]) == group_measures  # the intervals and the tests side by side
    vs_dense = validation["vs_dense"]["measures"]
    assert set(vs_dense) == {"accuracy"} | group_measures
    assert vs_dense["accuracy"]["b"] == pytest.approx(trial_attrs["dense_accuracy"])
    assert vs_dense["accuracy"]["difference"] == pytest.approx(
        validation["accuracy"]["accuracy"] - trial_attrs["dense_accuracy"])
    assert vs_dense["tpr_gap"]["a"] == pytest.approx(validation["bias"]["tpr_gap"])
    report = TrialReport.from_attrs(trial_attrs["attrs"])
    assert report.validation.gap_test == validation["gap_test"]
    assert json.loads(json.dumps(report.to_record())) == trial_attrs["attrs"]


def test_a_trial_stored_before_the_tests_still_reads(trial_attrs) -> None:
    old = {**trial_attrs["attrs"]}
    old["validation"] = {k: v for k, v in old["validation"].items() if k not in ("gap_test", "vs_dense")}
    report = TrialReport.from_attrs(old)
    assert report.validation.gap_test is None and report.validation.vs_dense is None
    assert json.loads(json.dumps(report.to_record())) == old
    assert SplitScores.from_record({"accuracy": {"accuracy": 0.5}}).gap_test is None
