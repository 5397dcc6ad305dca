"""Group-fairness measures: agreement with fairlearn, hand-computed cases, bootstrap, report."""

from __future__ import annotations

import functools
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as fm

from fairfront.objectives.measures import group_fairness as gf
from fairfront.objectives.measures.group_fairness import (
    BIAS_MEASURES,
    accuracy_difference,
    bootstrap_ci,
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
    fairness_report,
    group_frame,
    group_rates,
    tpr_gap_rms,
    worst_group_accuracy,
)

OURS_VS_FAIRLEARN = [
    (equal_opportunity_difference, "difference", fm.equal_opportunity_difference),
    (equal_opportunity_difference, "ratio", fm.equal_opportunity_ratio),
    (equalized_odds_difference, "difference", fm.equalized_odds_difference),
    (equalized_odds_difference, "ratio", fm.equalized_odds_ratio),
    (demographic_parity_difference, "difference", fm.demographic_parity_difference),
    (demographic_parity_difference, "ratio", fm.demographic_parity_ratio),
]


def _binary_data(seed: int, n: int = 600, n_groups: int = 4):
    """Random binary predictions where every group has positives and negatives, with a real TPR gap."""
    rng = np.random.default_rng(seed)
    groups = rng.choice([f"g{i}" for i in range(n_groups)], size=n)
    y = rng.integers(0, 2, size=n)
    skill = np.array([0.9, 0.7, 0.8, 0.6, 0.75][:n_groups])[np.searchsorted(np.unique(groups), groups)]
    pred = np.where(rng.random(n) < skill, y, 1 - y)
    weights = rng.uniform(0.2, 3.0, size=n)
    return y, pred, groups, weights


def _multiclass_data(seed: int, n: int = 900, k: int = 4):
    rng = np.random.default_rng(seed)
    groups = rng.choice(["a", "b", "c"], size=n)
    y = rng.integers(0, k, size=n)
    pred = np.where(rng.random(n) < 0.6 + 0.1 * (groups == "a"), y, rng.integers(0, k, size=n))
    return y, pred, groups


# ------------------------------------------------------------------------------------ fairlearn


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("ours", "agg", "theirs"), OURS_VS_FAIRLEARN)
def test_binary_disparities_match_fairlearn(ours, agg, theirs, seed, weighted):
    y, pred, groups, weights = _binary_data(seed)
    sw = weights if weighted else None
    expected = theirs(y, pred, sensitive_features=groups, sample_weight=sw)
    got = ours(y, pred, sensitive_features=groups, sample_weight=sw, agg=agg)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
def test_group_rates_match_metric_frame(weighted):
    y, pred, groups, weights = _binary_data(3, n_groups=5)
    sw = weights if weighted else None
    params = {} if sw is None else {"sample_weight": sw}
    frame = fm.MetricFrame(
        metrics={"tpr": fm.true_positive_rate, "fpr": fm.false_positive_rate, "selection_rate": fm.selection_rate,
                 "accuracy": lambda t, p, **kw: float(np.average(t == p, weights=kw.get("sample_weight")))},
        y_true=y, y_pred=pred, sensitive_features=groups,
        sample_params={name: params for name in ("tpr", "fpr", "selection_rate", "accuracy")})
    rates = group_rates(y, pred, sensitive_features=groups, sample_weight=sw)
    for column in ("tpr", "fpr", "selection_rate", "accuracy"):
        np.testing.assert_allclose(rates[column].to_numpy(), frame.by_group[column].to_numpy(), atol=1e-9)
    assert worst_group_accuracy(y, pred, sensitive_features=groups, sample_weight=sw) == pytest.approx(
        frame.group_min()["accuracy"], abs=1e-9)
    assert accuracy_difference(y, pred, sensitive_features=groups, sample_weight=sw) == pytest.approx(
        frame.difference()["accuracy"], abs=1e-9)
    assert rates["n"].sum() == len(y)


def test_pos_label_other_than_one_matches_fairlearn():
    y, pred, groups, _ = _binary_data(4)
    y2, pred2 = np.where(y == 1, 7, 3), np.where(pred == 1, 7, 3)
    for label in (3, 7):
        frame = fm.MetricFrame(
            metrics={"tpr": functools.partial(fm.true_positive_rate, pos_label=label),
                     "fpr": functools.partial(fm.false_positive_rate, pos_label=label)},
            y_true=y2, y_pred=pred2, sensitive_features=groups)
        spreads = frame.difference()
        assert equal_opportunity_difference(y2, pred2, sensitive_features=groups, pos_label=label) == pytest.approx(
            spreads["tpr"], abs=1e-9)
        assert equalized_odds_difference(y2, pred2, sensitive_features=groups, pos_label=label) == pytest.approx(
            max(spreads["tpr"], spreads["fpr"]), abs=1e-9)


def test_minus_one_one_labels_are_binary_like_in_fairlearn():
    y, pred, groups, _ = _binary_data(17)
    y2, pred2 = 2 * y - 1, 2 * pred - 1
    assert equalized_odds_difference(y2, pred2, sensitive_features=groups) == pytest.approx(
        fm.equalized_odds_difference(y2, pred2, sensitive_features=groups), abs=1e-9)
    assert equalized_odds_difference(y2, pred2, sensitive_features=groups) == equalized_odds_difference(
        y, pred, sensitive_features=groups)


def _fairlearn_per_class(fn, y, pred, groups, classes):
    return np.array([fn((y == c).astype(int), (pred == c).astype(int), sensitive_features=groups) for c in classes])


@pytest.mark.parametrize(("ours", "theirs"), [
    (equal_opportunity_difference, fm.equal_opportunity_difference),
    (equalized_odds_difference, fm.equalized_odds_difference),
    (demographic_parity_difference, fm.demographic_parity_difference),
])
def test_multiclass_is_one_vs_rest_fairlearn_aggregated(ours, theirs):
    y, pred, groups = _multiclass_data(5)
    per_class = _fairlearn_per_class(theirs, y, pred, groups, range(4))
    assert ours(y, pred, sensitive_features=groups) == pytest.approx(np.sqrt(np.mean(per_class**2)), abs=1e-9)
    assert ours(y, pred, sensitive_features=groups, class_agg="max") == pytest.approx(per_class.max(), abs=1e-9)
    assert ours(y, pred, sensitive_features=groups, class_agg="mean") == pytest.approx(per_class.mean(), abs=1e-9)
    assert ours(y, pred, sensitive_features=groups, pos_label=2) == pytest.approx(per_class[2], abs=1e-9)


def test_multiclass_tpr_gap_rms_equals_rms_of_fairlearn_tpr_spreads():
    y, pred, groups = _multiclass_data(6, k=5)
    per_class = _fairlearn_per_class(fm.equal_opportunity_difference, y, pred, groups, range(5))
    expected = float(np.sqrt(np.mean(per_class**2)))
    assert tpr_gap_rms(y, pred, sensitive_features=groups) == pytest.approx(expected, abs=1e-9)
    assert BIAS_MEASURES["tpr_gap"](y, pred, sensitive_features=groups) == pytest.approx(expected, abs=1e-9)
    assert BIAS_MEASURES["tpr_gap_max"](y, pred, sensitive_features=groups) == pytest.approx(per_class.max(), abs=1e-9)


# ------------------------------------------------------------------------------- hand-computed


def test_hand_computed_multiclass_rms():
    # group a: recall of classes 0, 1, 2 = 1/2, 1, 1; group b: 1, 1/2, 0.
    y = [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 2, 2, 0, 0, 1, 0, 0, 1]
    g = ["a"] * 6 + ["b"] * 6
    gaps = np.array([0.5, 0.5, 1.0])
    assert tpr_gap_rms(y, p, sensitive_features=g) == pytest.approx(math.sqrt(np.mean(gaps**2)))
    assert BIAS_MEASURES["tpr_gap_max"](y, p, sensitive_features=g) == pytest.approx(1.0)
    assert equal_opportunity_difference(y, p, sensitive_features=g, class_agg="mean") == pytest.approx(2 / 3)
    # accuracy: a 5/6, b 3/6
    assert worst_group_accuracy(y, p, sensitive_features=g) == pytest.approx(0.5)
    assert BIAS_MEASURES["accuracy_gap"](y, p, sensitive_features=g) == pytest.approx(1 / 3)
    # ratio: per-class min/max = 0.5, 0.5, 0 -> distance from parity 0.5, 0.5, 1 -> RMS, then back
    assert tpr_gap_rms(y, p, sensitive_features=g, agg="ratio") == pytest.approx(1 - math.sqrt(np.mean(gaps**2)))


def test_group_without_positives_is_left_out_not_counted_as_zero():
    # Group c has no positives: its TPR is undefined. fairlearn counts it as 0 (spread 1.0).
    y = [1, 1, 0, 1, 1, 0, 0, 0]
    p = [1, 1, 0, 1, 0, 0, 1, 0]
    g = ["a", "a", "a", "b", "b", "b", "c", "c"]
    assert fm.equal_opportunity_difference(y, p, sensitive_features=g) == pytest.approx(1.0)
    assert equal_opportunity_difference(y, p, sensitive_features=g) == pytest.approx(0.5)  # a: 1, b: 1/2
    rates = group_rates(y, p, sensitive_features=g)
    assert math.isnan(rates.loc["c", "tpr"])
    assert rates.loc["c", "fpr"] == pytest.approx(0.5)
    # equalized odds: TPR spread 0.5 over a, b; FPR spread over a (0), b (0), c (1/2) = 0.5
    assert equalized_odds_difference(y, p, sensitive_features=g) == pytest.approx(0.5)


def test_spread_over_fewer_than_two_defined_groups_is_nan():
    y = [1, 1, 0, 0]
    p = [1, 0, 0, 1]
    g = ["a", "a", "b", "b"]  # only group a has positives
    assert math.isnan(equal_opportunity_difference(y, p, sensitive_features=g))
    assert demographic_parity_difference(y, p, sensitive_features=g) == pytest.approx(0.0)  # both select 1/2


def test_class_missing_from_a_group_is_skipped_by_tpr_gap_rms():
    # Class 2 only occurs in group a, so only classes 0 and 1 enter the RMS.
    y = [0, 1, 2, 0, 1]
    p = [0, 1, 0, 0, 0]
    g = ["a", "a", "a", "b", "b"]
    assert tpr_gap_rms(y, p, sensitive_features=g) == pytest.approx(math.sqrt((0**2 + 1**2) / 2))


def test_ratio_with_all_zero_rates_is_nan_like_fairlearn():
    y = [1, 1, 1, 1]
    p = [0, 0, 0, 0]
    g = ["a", "a", "b", "b"]
    assert math.isnan(equal_opportunity_difference(y, p, sensitive_features=g, agg="ratio"))
    assert math.isnan(fm.equal_opportunity_ratio(y, p, sensitive_features=g))
    assert equal_opportunity_difference(y, p, sensitive_features=g) == 0.0


def test_perfect_predictions_are_fair_under_every_error_based_measure():
    y, _, groups, _ = _binary_data(7)
    for name, measure in BIAS_MEASURES.items():
        if name != "demographic_parity_gap":
            assert measure(y, y, sensitive_features=groups) == pytest.approx(0.0), name
    # demographic parity ignores the labels: perfect predictions inherit the groups' base rates
    base_rates = pd.Series(y).groupby(groups).mean()
    assert BIAS_MEASURES["demographic_parity_gap"](y, y, sensitive_features=groups) == pytest.approx(
        base_rates.max() - base_rates.min())


# --------------------------------------------------------------------------------- the frame


def test_group_frame_counts_add_up_with_weights():
    y, pred, groups = _multiclass_data(8)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    frame = group_frame(y, pred, sensitive_features=groups, sample_weight=w)
    assert list(frame.columns[:2]) == ["group", "class"]
    assert len(frame) == 3 * 4
    total = frame[["tp", "fp", "fn", "tn"]].sum(axis=1)
    np.testing.assert_allclose(total, frame["count"])
    for (group, cls), row in frame.set_index(["group", "class"]).iterrows():
        member = groups == group
        assert row["n"] == member.sum()
        assert row["tp"] == pytest.approx(w[member & (y == cls) & (pred == cls)].sum())
        assert row["fp"] == pytest.approx(w[member & (y != cls) & (pred == cls)].sum())
        assert row["positives"] == pytest.approx(w[member & (y == cls)].sum())


def test_binary_labels_always_have_both_classes():
    frame = group_frame([0, 0], [0, 0], sensitive_features=["a", "b"])
    assert sorted(frame["class"].unique().tolist()) == [0, 1]
    assert math.isnan(equal_opportunity_difference([0, 0], [0, 0], sensitive_features=["a", "b"]))


def test_intersectional_groups_from_a_dataframe():
    y, pred, _, _ = _binary_data(9, n=400)
    rng = np.random.default_rng(1)
    sf = pd.DataFrame({"sex": rng.choice(["f", "m"], 400), "age": rng.choice(["young", "old"], 400)})
    combined = sf["sex"] + " & " + sf["age"]
    assert equalized_odds_difference(y, pred, sensitive_features=sf) == pytest.approx(
        fm.equalized_odds_difference(y, pred, sensitive_features=combined.to_numpy()), abs=1e-9)
    assert len(group_rates(y, pred, sensitive_features=sf)) == 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"agg": "worst"}, "agg must be 'difference' or 'ratio'"),
    ({"class_agg": "median"}, "class_agg must be one of"),
    ({"sample_weight": [1, -1, 1, 1]}, "sample_weight must be finite and non-negative"),
    ({"sensitive_features": ["a", "b"]}, "sensitive_features has 2 entries but y_true has 4"),
    ({"sensitive_features": ["a", None, "b", "b"]}, "missing value at position 1"),
])
def test_bad_input_is_one_clear_value_error(kwargs, message):
    args = {"sensitive_features": ["a", "a", "b", "b"], **kwargs}
    with pytest.raises(ValueError, match=message):
        equal_opportunity_difference([1, 0, 1, 0], [1, 0, 0, 0], **args)


def test_length_mismatch_between_labels_and_predictions():
    with pytest.raises(ValueError, match="y_pred has 3 entries but y_true has 4"):
        demographic_parity_difference([1, 0, 1, 0], [1, 0, 0], sensitive_features=["a"] * 4)


# ------------------------------------------------------------------------------------ registry


def test_registry_names_and_metadata():
    assert set(BIAS_MEASURES) == {"tpr_gap", "tpr_gap_rms", "tpr_gap_max", "equalized_odds_gap",
                                  "demographic_parity_gap", "worst_group_error", "accuracy_gap"}
    for name, measure in BIAS_MEASURES.items():
        assert measure.name == name
        assert measure.description and "\n" not in measure.description
        assert measure.citation


def test_registry_values_agree_with_the_public_functions():
    y, pred, groups, _ = _binary_data(10)
    kw = {"sensitive_features": groups}
    assert BIAS_MEASURES["tpr_gap"](y, pred, **kw) == equal_opportunity_difference(y, pred, **kw)
    assert BIAS_MEASURES["tpr_gap_rms"](y, pred, **kw) == tpr_gap_rms(y, pred, **kw)
    assert BIAS_MEASURES["equalized_odds_gap"](y, pred, **kw) == equalized_odds_difference(y, pred, **kw)
    assert BIAS_MEASURES["demographic_parity_gap"](y, pred, **kw) == demographic_parity_difference(y, pred, **kw)
    assert BIAS_MEASURES["worst_group_error"](y, pred, **kw) == pytest.approx(1 - worst_group_accuracy(y, pred, **kw))
    assert BIAS_MEASURES["accuracy_gap"](y, pred, **kw) == accuracy_difference(y, pred, **kw)



def test_registry_scores_a_fairer_model_lower():
    # Same overall error rate, but spread evenly over the groups instead of 10% ... 40% by group.
    y, pred, groups, _ = _binary_data(10, n=4000)
    rng = np.random.default_rng(0)
    even = np.where(rng.random(len(y)) < 0.75, y, 1 - y)
    for name, measure in BIAS_MEASURES.items():
        if name != "demographic_parity_gap":
            assert measure(y, even, sensitive_features=groups) < measure(y, pred, sensitive_features=groups), name


# ----------------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_point_and_is_reproducible():
    y, pred, groups, _ = _binary_data(11, n=1000)
    point = equal_opportunity_difference(y, pred, sensitive_features=groups)
    lo, hi = bootstrap_ci(equal_opportunity_difference, y, pred, sensitive_features=groups, seed=3)
    assert lo < point < hi
    assert (lo, hi) == bootstrap_ci(equal_opportunity_difference, y, pred, sensitive_features=groups, seed=3)
    assert (lo, hi) != bootstrap_ci(equal_opportunity_difference, y, pred, sensitive_features=groups, seed=4)
    assert bootstrap_ci("tpr_gap", y, pred, sensitive_features=groups, seed=3) == (lo, hi)


def test_bootstrap_ci_narrows_with_more_data():
    small = _binary_data(12, n=400)
    large = _binary_data(12, n=6000)
    lo_s, hi_s = bootstrap_ci("equalized_odds_gap", *small[:2], sensitive_features=small[2], n_resamples=400)
    lo_l, hi_l = bootstrap_ci("equalized_odds_gap", *large[:2], sensitive_features=large[2], n_resamples=400)
    assert hi_l - lo_l < 0.6 * (hi_s - lo_s)


def test_vectorised_bootstrap_equals_calling_the_metric_on_each_resample():
    y, pred, groups, w = _binary_data(13, n=300)
    metric = functools.partial(equalized_odds_difference, agg="ratio")

    def opaque(yt, yp, *, sensitive_features, sample_weight=None):  # not recognised, so called per resample
        return metric(yt, yp, sensitive_features=sensitive_features, sample_weight=sample_weight)

    for sw in (None, w):
        fast = bootstrap_ci(metric, y, pred, sensitive_features=groups, sample_weight=sw, n_resamples=60, seed=5)
        slow = bootstrap_ci(opaque, y, pred, sensitive_features=groups, sample_weight=sw, n_resamples=60, seed=5)
        assert fast == pytest.approx(slow, abs=1e-12)


def test_stratified_bootstrap_keeps_every_group_size():
    y, pred, groups, _ = _binary_data(14, n=200)
    expected = pd.Series(groups).value_counts().to_dict()
    seen = []

    def record(yt, yp, *, sensitive_features):
        seen.append(pd.Series(sensitive_features).value_counts().to_dict())
        return 0.0

    bootstrap_ci(record, y, pred, sensitive_features=groups, n_resamples=20)
    assert len(seen) == 20 and all(s == expected for s in seen)
    seen.clear()
    bootstrap_ci(record, y, pred, sensitive_features=groups, n_resamples=20, stratify_by_group=False)
    assert any(s != expected for s in seen)


def test_bootstrap_is_fast_enough_for_every_trial():
    y, pred, groups, _ = _binary_data(15, n=2000)
    bootstrap_ci("tpr_gap", y, pred, sensitive_features=groups, n_resamples=10)  # warm up
    started = time.perf_counter()
    bootstrap_ci("tpr_gap", y, pred, sensitive_features=groups, n_resamples=1000)
    assert time.perf_counter() - started < 1.0


def test_bootstrap_rejects_bad_settings():
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        bootstrap_ci("tpr_gap", [1, 0], [1, 0], sensitive_features=["a", "b"], confidence=95)
    with pytest.raises(ValueError, match="unknown bias measure 'tpr-gap'"):
        bootstrap_ci("tpr-gap", [1, 0], [1, 0], sensitive_features=["a", "b"])


# -------------------------------------------------------------------------------------- report


def test_fairness_report_binary_is_json_and_complete():
    y, pred, groups, _ = _binary_data(16, n=800)
    report = fairness_report(y, pred, sensitive_features=groups, class_names=["ok", "toxic"], n_resamples=100)
    json.dumps(report, allow_nan=False)
    assert report["positive_class"] == "toxic"
    assert report["classes"] == ["ok", "toxic"]
    assert set(report["measures"]) == set(BIAS_MEASURES) == set(report["ci"])
    for name, measure in BIAS_MEASURES.items():
        assert report["measures"][name] == pytest.approx(measure(y, pred, sensitive_features=groups))
        lo, hi = report["ci"][name]
        assert lo <= hi
    assert report["group_counts"] == {g: int((groups == g).sum()) for g in np.unique(groups)}
    rates = group_rates(y, pred, sensitive_features=groups)
    assert report["group_rates"]["g1"]["tpr"] == pytest.approx(rates.loc["g1", "tpr"])
    assert "class_group_rates" not in report


def test_fairness_report_multiclass_names_and_undefined_rates():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 0, 1])
    p = np.array([0, 1, 2, 0, 0, 2, 0, 1, 1, 1])
    g = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])  # group 1 has no class-2 examples
    report = fairness_report(y, p, sensitive_features=g, class_names=["neg", "neu", "pos"],
                             group_names=["women", "men"], n_resamples=0)
    json.dumps(report, allow_nan=False)
    assert report["groups"] == ["women", "men"] and report["positive_class"] is None
    assert report["ci"] == {}
    cell = report["class_group_rates"]["pos"]["men"]
    assert cell["n"] == 0 and cell["tpr"] is None
    assert report["class_group_rates"]["neu"]["women"]["tpr"] == pytest.approx(0.5)
    assert report["measures"]["tpr_gap"] == pytest.approx(report["measures"]["tpr_gap_rms"])


def test_module_exports():
    for name in gf.__all__:
        assert hasattr(gf, name)
