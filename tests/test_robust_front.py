"""Dominance under uncertainty (:mod:`fairfront.search.robust_front`) on constructed trials.

Objectives as a study has them: accuracy (maximised), size (minimised, exact), bias (minimised).
"""

from __future__ import annotations

import numpy as np
import pytest

from fairfront.search.robust_front import non_dominated, p_nondominated, robust_dominance, robust_front

MAXIMIZE = [True, False, False]


def _se(n: int, accuracy: float = 0.01, bias: float = 0.01) -> np.ndarray:
    return np.tile([accuracy, 0.0, bias], (n, 1))


def test_better_by_more_than_the_uncertainty_dominates():
    # accuracy 0.90 vs 0.85 with se 0.01 each: margin 1.96 * sqrt(2) * 0.01 = 0.0277 < 0.05
    values = np.array([[0.90, 1000.0, 0.10], [0.85, 1000.0, 0.10]])
    d = robust_dominance(values, _se(2), MAXIMIZE)
    assert d[0, 1] and not d[1, 0]
    assert robust_front(values, _se(2), MAXIMIZE).tolist() == [True, False]


def test_better_by_less_than_the_uncertainty_does_not_dominate():
    # 0.02 better in accuracy, equal elsewhere: plainly dominated, robustly not (0.02 < 0.0277)
    values = np.array([[0.90, 1000.0, 0.10], [0.88, 1000.0, 0.10]])
    assert not robust_dominance(values, _se(2), MAXIMIZE).any()
    assert robust_front(values, _se(2), MAXIMIZE).tolist() == [True, True]
    assert non_dominated(values, MAXIMIZE).tolist() == [True, False]


def test_worse_on_one_objective_never_dominates_however_much_better_elsewhere():
    values = np.array([[0.99, 1000.0, 0.10], [0.50, 999.0, 0.10]])
    assert not robust_dominance(values, _se(2), MAXIMIZE).any()


def test_equal_size_ties_need_a_clear_difference_elsewhere():
    values = np.array([[0.90, 500.0, 0.05], [0.90, 500.0, 0.20], [0.90, 500.0, 0.06]])
    d = robust_dominance(values, _se(3), MAXIMIZE)
    assert d[0, 1] and d[2, 1]  # bias 0.15 lower > 0.0277: a clear difference, size tied
    assert not d[0, 2] and not d[2, 0]  # 0.01 apart: indistinguishable
    assert robust_front(values, _se(3), MAXIMIZE).tolist() == [True, False, True]


def test_an_exact_size_difference_counts_however_small():
    values = np.array([[0.90, 499.0, 0.10], [0.90, 500.0, 0.10]])
    d = robust_dominance(values, _se(2), MAXIMIZE)
    assert d[0, 1] and not d[1, 0]


def test_zero_uncertainty_is_the_plain_front():
    rng = np.random.default_rng(3)
    values = rng.random((60, 3))
    zero = np.zeros_like(values)
    assert (robust_front(values, zero, MAXIMIZE, z=1.96) == non_dominated(values, MAXIMIZE)).all()
    assert (robust_front(values, rng.random((60, 3)) * 0.05, MAXIMIZE) >= non_dominated(values, MAXIMIZE)).all()


def test_a_clearly_dominant_trial_is_non_dominated_almost_surely():
    values = np.array([[0.95, 100.0, 0.02], [0.70, 900.0, 0.30], [0.72, 800.0, 0.28]])
    p = p_nondominated(values, _se(3), MAXIMIZE, draws=2000, seed=1)
    assert p[0] > 0.99
    assert p[1] < 0.01 and p[2] < 0.01


def test_two_indistinguishable_trials_are_each_non_dominated_half_the_time():
    # the same values; only accuracy is uncertain, so whichever draws the higher accuracy dominates
    values = np.array([[0.90, 100.0, 0.10], [0.90, 100.0, 0.10]])
    se = np.array([[0.01, 0.0, 0.0], [0.01, 0.0, 0.0]])
    p = p_nondominated(values, se, MAXIMIZE, draws=2000, seed=2)
    assert p == pytest.approx([0.5, 0.5], abs=0.05)
    assert p_nondominated(values, se, MAXIMIZE, draws=2000, seed=2).tolist() == p.tolist()  # seeded


def test_candidates_are_scored_against_every_trial():
    values = np.array([[0.90, 100.0, 0.10], [0.95, 50.0, 0.01]])
    assert p_nondominated(values, _se(2), MAXIMIZE, candidates=[0], draws=500).tolist() == [0.0]


@pytest.mark.parametrize("se", [np.full((2, 3), -0.1), np.full((2, 3), np.nan), np.zeros((3, 3))])
def test_bad_standard_errors_are_refused(se):
    with pytest.raises(ValueError):
        robust_front(np.zeros((2, 3)), se, MAXIMIZE)
