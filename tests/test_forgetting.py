"""What compression forgets: modal predictions, CIEs and per-class disparate impact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fairfront.objectives.measures.forgetting import (
    cie_report,
    compression_identified_exemplars,
    disparate_impact,
    modal_predictions,
)

# A hand-built study: 10 examples, 3 dense models, 2 compressed models.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
DENSE = np.array([
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2],
    [0, 0, 0, 1, 1, 1, 1, 1, 2, 2],
    [0, 0, 0, 0, 1, 1, 1, 0, 2, 1],
])  # modal: equal to Y
COMPRESSED = np.array([
    [0, 0, 1, 0, 1, 1, 1, 1, 0, 0],
    [0, 0, 1, 0, 1, 1, 1, 1, 0, 1],
])  # modal: differs at 2 (1), 8 (0) and 9 (tie 0/1 -> 0)
GROUPS = np.array(["a", "a", "b", "b", "a", "a", "b", "b", "b", "b"])


def test_modal_predictions_break_ties_by_smallest_class():
    assert modal_predictions(DENSE).tolist() == Y.tolist()
    assert modal_predictions(COMPRESSED).tolist() == [0, 0, 1, 0, 1, 1, 1, 1, 0, 0]
    assert modal_predictions([[5, 2, 9], [2, 5, 1]]).tolist() == [2, 2, 1]  # every column a tie
    assert modal_predictions([[5, 2, 9], [2, 5, 9], [7, 7, 1], [2, 5, 1]]).tolist() == [2, 5, 1]
    # the order of the models does not matter
    assert modal_predictions(COMPRESSED[::-1]).tolist() == modal_predictions(COMPRESSED).tolist()


def test_single_model_is_its_own_mode():
    assert modal_predictions([2, 0, 1]).tolist() == [2, 0, 1]
    assert modal_predictions(np.array([[1.0, 0.0]])).tolist() == [1, 0]


@pytest.mark.parametrize(("bad", "message"), [
    ([[0, -1]], "non-negative class ids"),
    ([[0.5, 1.0]], "integer class ids"),
    (np.zeros((2, 2, 2), dtype=int), "must be a non-empty array"),
    ([], "must be a non-empty array"),
])
def test_modal_predictions_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        modal_predictions(bad)


def test_cies_of_a_population_and_of_a_single_model():
    expected = [False, False, True, False, False, False, False, False, True, True]
    assert compression_identified_exemplars(DENSE, COMPRESSED).tolist() == expected
    assert compression_identified_exemplars(DENSE, COMPRESSED[1]).tolist() == expected
    assert not compression_identified_exemplars(DENSE, DENSE).any()
    with pytest.raises(ValueError, match="dense_population has 10 examples but compressed has 3"):
        compression_identified_exemplars(DENSE, [0, 1, 2])


def test_cie_report_fraction_accuracy_and_makeup():
    report = cie_report(Y, DENSE, COMPRESSED, sensitive_features=GROUPS, class_names=["neg", "neu", "pos"])
    json.dumps(report, allow_nan=False)
    assert report["n"] == 10 and report["n_cie"] == 3
    assert report["cie_fraction"] == pytest.approx(0.3)
    assert report["n_dense_models"] == 3 and report["n_compressed_models"] == 2
    # compressed models: 7 of 10 right each; wrong on every CIE, right on every other example
    assert report["compressed_accuracy"] == pytest.approx({"all": 0.7, "cie": 0.0, "non_cie": 1.0})
    # dense models: 27 of 30 right; 8 of the 9 CIE predictions, 19 of the 21 others
    assert report["dense_accuracy"] == pytest.approx({"all": 0.9, "cie": 8 / 9, "non_cie": 19 / 21})
    classes = report["class_makeup"]
    assert list(classes) == ["neg", "neu", "pos"]
    assert classes["pos"] == pytest.approx({"count": 2, "share": 0.2, "cie_count": 2, "cie_share": 2 / 3,
                                            "cie_rate": 1.0})
    assert classes["neg"] == pytest.approx({"count": 4, "share": 0.4, "cie_count": 1, "cie_share": 1 / 3,
                                            "cie_rate": 0.25})
    assert classes["neu"]["cie_count"] == 0
    groups = report["group_makeup"]
    assert groups["b"]["cie_share"] == 1.0 and groups["a"]["cie_count"] == 0
    assert groups["b"]["share"] == pytest.approx(0.6)


def test_cie_report_without_cies_has_undefined_cie_values():
    report = cie_report(Y, DENSE, DENSE[0])
    json.dumps(report, allow_nan=False)
    assert report["n_cie"] == 0
    assert report["compressed_accuracy"]["cie"] is None
    assert report["class_makeup"]["2"]["cie_share"] is None
    assert "group_makeup" not in report


def _study(n_per_class: int = 200):
    """Three classes; the dense model gets 90% of each right. Compression destroys class 2's
    recall (90% -> 10%), costs class 1 two examples, and leaves class 0 untouched."""
    y = np.repeat([0, 1, 2], n_per_class)
    dense = y.copy()
    compressed = y.copy()
    wrong = int(0.1 * n_per_class)
    for c in range(3):
        idx = np.flatnonzero(y == c)
        dense[idx[:wrong]] = (c + 1) % 3
        compressed[idx[:wrong]] = (c + 1) % 3
    idx2 = np.flatnonzero(y == 2)
    compressed[idx2[: int(0.9 * n_per_class)]] = 0
    idx1 = np.flatnonzero(y == 1)
    compressed[idx1[wrong:wrong + 2]] = 2
    return y, dense, compressed


def test_destroyed_class_is_flagged_and_untouched_classes_are_not():
    y, dense, compressed = _study()
    report = disparate_impact(y, dense, compressed, by=y, level_names=["neg", "neu", "pos"])
    json.dumps(report, allow_nan=False)
    levels = report["levels"]
    assert levels["pos"]["significant"] is True
    assert levels["neu"]["significant"] is False
    assert levels["neg"]["significant"] is False
    assert levels["pos"]["dense_accuracy"] == pytest.approx(0.9)  # = recall of the class
    assert levels["pos"]["compressed_accuracy"] == pytest.approx(0.1)
    overall = report["overall"]
    assert overall["dense_accuracy"] == pytest.approx(0.9)
    assert overall["compressed_accuracy"] == pytest.approx((180 + 178 + 20) / 600)
    overall_change = (378 / 600 - 0.9) / 0.9
    assert overall["relative_change"] == pytest.approx(overall_change)
    assert levels["pos"]["relative_change"] == pytest.approx((0.1 - 0.9) / 0.9)
    assert levels["pos"]["normalized_change"] == pytest.approx((0.1 - 0.9) / 0.9 - overall_change)
    assert levels["neg"]["normalized_change"] == pytest.approx(-overall_change)  # lost nothing: better than average
    assert levels["pos"]["p_value"] < 1e-10 < levels["neu"]["p_value"]
    assert report["correction"] == "benjamini_hochberg"


def test_bonferroni_multiplies_by_the_number_of_levels():
    y, dense, compressed = _study(60)
    report = disparate_impact(y, dense, compressed, by=y, correction="bonferroni", alpha=0.01)
    for level in report["levels"].values():
        assert level["p_adjusted"] == pytest.approx(min(1.0, 3 * level["p_value"]))
    assert report["levels"]["2"]["significant"] and report["correction"] == "bonferroni"


def test_per_group_accuracy_and_no_change_means_no_flag():
    y, dense, compressed = _study()
    groups = np.where(y == 2, "minority", "majority")
    report = disparate_impact(y, dense, compressed, by=groups)
    assert report["levels"]["minority"]["significant"] and not report["levels"]["majority"]["significant"]
    same = disparate_impact(y, dense, dense, by=y)
    assert not any(level["significant"] for level in same["levels"].values())
    assert all(level["normalized_change"] == 0.0 for level in same["levels"].values())


def test_level_the_dense_model_never_gets_right_has_undefined_change():
    y = np.array([0, 0, 1, 1])
    report = disparate_impact(y, [0, 0, 0, 0], [0, 1, 0, 0], by=y)
    assert report["levels"]["1"]["relative_change"] is None
    assert report["levels"]["0"]["relative_change"] == pytest.approx(-0.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alpha": 0.0}, "alpha must be between 0 and 1"),
    ({"correction": "holm"}, "correction must be 'bh' or 'bonferroni'"),
    ({"by": [0, 1]}, "by must be one-dimensional with one entry per example"),
])
def test_disparate_impact_rejects_bad_input(kwargs, message):
    y, dense, compressed = _study(10)
    with pytest.raises(ValueError, match=message):
        disparate_impact(y, dense, compressed, **{"by": y, **kwargs})
