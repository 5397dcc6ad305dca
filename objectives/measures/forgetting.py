"""What compression forgets: compression-identified exemplars and per-class disparate impact.

Top-line accuracy hides where a compressed model changed its mind. Hooker et al. (2019, "What
do compressed deep neural networks forget?") find that compression costs a small subset of
examples and classes far more than the average, and Hooker et al. (2020, "Characterising bias
in compressed models") show that this subset over-indexes on under-represented classes and
groups. This module measures both on a classifier's predictions.

* :func:`compression_identified_exemplars` (CIEs, the papers' PIEs for pruning): examples
  where the modal prediction of the compressed model(s) differs from the modal prediction of
  the dense population. :func:`cie_report` says how many there are, how accurate the models
  are on them and which classes and groups they come from.
* :func:`disparate_impact`: per class (recall) or per group (accuracy), how much the
  compressed model lost relative to the dense one, normalised by the overall change, and
  whether a level lost significantly more than the rest (a paired, exact test on the examples).
* :func:`population_disparate_impact`: with several compressed and several dense models
  (seeds), Hooker et al.'s Welch t-test of each level's normalized recall across the two
  populations.

Predictions are integer class ids; a *population* is a 2-D array ``[n_models, n_examples]``
(several dense or compressed models, e.g. different seeds), and a 1-D array is one model.

Example:
    >>> dense = [[0, 1, 1, 2], [0, 1, 1, 2], [0, 1, 2, 2]]
    >>> compressed = [0, 1, 2, 0]
    >>> compression_identified_exemplars(dense, compressed).tolist()
    [False, False, True, True]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats

from fairfront.jsonsafe import finite_or_none
from fairfront.objectives.measures.group_fairness import display_name
from fairfront.objectives.measures.significance import CORRECTIONS, adjust_p_values, mcnemar_exact

__all__ = [
    "cie_report",
    "compression_identified_exemplars",
    "disparate_impact",
    "modal_predictions",
    "population_disparate_impact",
]


def _population(name: str, predictions: Any) -> np.ndarray:
    """A population as a 2-D int array ``[n_models, n_examples]`` (a 1-D array is one model)."""
    arr = np.asarray(predictions)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty array [n_examples] or [n_models, n_examples], "
                         f"got shape {np.asarray(predictions).shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError(f"{name} must hold non-negative class ids, got {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def modal_predictions(predictions: Any) -> np.ndarray:
    """The most frequent prediction per example across a population of models.

    Ties are broken by the smallest class id, so the result does not depend on the order of
    the models. A 1-D array is a population of one model and is returned unchanged.

    Args:
        predictions: Class ids, ``[n_models, n_examples]`` or ``[n_examples]``.

    Returns:
        ``[n_examples]`` int array of modal class ids.

    Example:
        >>> modal_predictions([[0, 1, 2], [1, 1, 0], [1, 2, 0]]).tolist()
        [1, 1, 0]
        >>> modal_predictions([[3, 1], [1, 3]]).tolist()  # ties go to the smaller id
        [1, 1]
    """
    pop = _population("predictions", predictions)
    n_models, n_examples = pop.shape
    if n_models == 1:
        return pop[0].copy()
    k = int(pop.max()) + 1
    counts = np.bincount((np.arange(n_examples)[None, :] * k + pop).ravel(), minlength=n_examples * k)
    return counts.reshape(n_examples, k).argmax(axis=1)  # argmax returns the first (smallest) maximum


def compression_identified_exemplars(dense_population: Any, compressed: Any) -> np.ndarray:
    """Boolean mask of the examples whose modal prediction changed under compression.

    Args:
        dense_population: Predictions of the dense model(s), ``[n_models, n_examples]`` or
            ``[n_examples]``.
        compressed: Predictions of the compressed model(s), same layout.

    Returns:
        ``[n_examples]`` bool array, True where the modal compressed prediction differs from
        the modal dense prediction.
    """
    dense = _population("dense_population", dense_population)
    comp = _population("compressed", compressed)
    if dense.shape[1] != comp.shape[1]:
        raise ValueError(f"dense_population has {dense.shape[1]} examples but compressed has {comp.shape[1]}; "
                         "both must score the same examples")
    return modal_predictions(dense) != modal_predictions(comp)


def _labels(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must be one-dimensional with one entry per example ({n}), got shape {arr.shape}")
    return arr


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _makeup(levels: np.ndarray, cie: np.ndarray, names: Sequence[str] | Mapping[Any, str] | None) -> dict:
    n, n_cie = len(levels), int(cie.sum())
    out = {}
    for level in np.unique(levels):
        member = levels == level
        count, cie_count = int(member.sum()), int((member & cie).sum())
        out[display_name(level, names)] = {
            "count": count,
            "share": count / n,
            "cie_count": cie_count,
            "cie_share": finite_or_none(cie_count / n_cie) if n_cie else None,
            "cie_rate": cie_count / count,
        }
    return out


def cie_report(y_true: Any, dense_population: Any, compressed: Any, *, sensitive_features: Any = None,
               class_names: Sequence[str] | Mapping[Any, str] | None = None,
               group_names: Sequence[str] | Mapping[Any, str] | None = None) -> dict[str, Any]:
    """How many examples compression changed, how hard they are, and where they come from.

    Accuracies are those of the population members averaged over members (for one model, that
    model's accuracy) on all examples, on the CIEs and on the other examples. A CIE subset
    that is harder for the dense models too, and over-represents some class or group, is the
    pattern Hooker et al. (2019, 2020) report.

    Args:
        y_true: True class ids, ``[n_examples]``.
        dense_population: Dense predictions, ``[n_models, n_examples]`` or ``[n_examples]``.
        compressed: Compressed predictions, same layout.
        sensitive_features: Optional group label per example, for the group make-up.
        class_names: Names of the classes, by class id (a sequence) or label (a mapping).
        group_names: Names of the groups, likewise.

    Returns:
        JSON-ready dict (undefined values are ``None``): ``n``, ``n_cie``, ``cie_fraction``,
        ``dense_accuracy`` and ``compressed_accuracy`` (each ``{"all", "cie", "non_cie"}``),
        ``class_makeup`` and, with groups, ``group_makeup``: per level ``count`` and ``share``
        of all examples, ``cie_count`` and ``cie_share`` of the CIEs, and ``cie_rate`` (the
        level's examples that are CIEs; above ``cie_fraction`` means over-represented).
        ``examples`` names the CIEs: their ``index`` and the compressed models' modal ``prediction``
        there (elsewhere it is the dense modal prediction, so one compressed model's predictions can
        be rebuilt from it).
    """
    dense = _population("dense_population", dense_population)
    comp = _population("compressed", compressed)
    cie = compression_identified_exemplars(dense, comp)
    n = len(cie)
    y = _labels("y_true", y_true, n)

    def accuracy(pop: np.ndarray) -> dict[str, float | None]:
        correct = pop == y[None, :]
        return {"all": finite_or_none(_mean(correct)), "cie": finite_or_none(_mean(correct[:, cie])),
                "non_cie": finite_or_none(_mean(correct[:, ~cie]))}

    report: dict[str, Any] = {
        "n": n,
        "n_cie": int(cie.sum()),
        "cie_fraction": float(cie.mean()),
        "n_dense_models": int(dense.shape[0]),
        "n_compressed_models": int(comp.shape[0]),
        "dense_accuracy": accuracy(dense),
        "compressed_accuracy": accuracy(comp),
        "class_makeup": _makeup(y, cie, class_names),
        "examples": {"index": np.flatnonzero(cie).tolist(),
                     "prediction": modal_predictions(comp)[cie].tolist()},
    }
    if sensitive_features is not None:
        groups = _labels("sensitive_features", np.asarray(sensitive_features, dtype=object), n)
        report["group_makeup"] = _makeup(groups, cie, group_names)
    return report


def _relative(before: float, after: float) -> float:
    return (after - before) / before if before > 0 else math.nan


def _check_test_options(alpha: float, correction: str) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), got {alpha!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be 'bh' or 'bonferroni', got {correction!r}")


def _correction_name(correction: str) -> str:
    return "benjamini_hochberg" if correction == "bh" else "bonferroni"


def disparate_impact(y_true: Any, dense_pred: Any, compressed_pred: Any, *, by: Any, alpha: float = 0.05,
                     correction: Literal["bh", "bonferroni"] = "bh",
                     level_names: Sequence[str] | Mapping[Any, str] | None = None) -> dict[str, Any]:
    """Which classes or groups the compressed model lost disproportionately, by a paired test.

    For every level of ``by`` (pass ``y_true`` for per-class recall, or the group labels for
    per-group accuracy) the accuracy of the dense and the compressed model on that level's
    examples is compared. Following Hooker et al. (2019), the level's relative change
    ``(acc_c - acc_d) / acc_d`` is normalised by the overall relative change in accuracy:

    ``normalized_change = level relative change - overall relative change``

    so 0 means "lost exactly as much as the model did on average" and a negative value means
    the level lost more (a difference rather than a quotient, which would blow up when the
    overall accuracy barely changes).

    **Significance (paired).** Both models score the same examples, so the test conditions on
    the discordant pairs, as McNemar's (1947) test does. A *loss* is an example the dense model
    got right and the compressed model got wrong. With ``D`` dense-correct examples overall
    (``D_l`` in the level) and ``L`` losses overall (``L_l`` in the level), the null hypothesis
    "a dense-correct example is as likely to be lost in this level as in the pooled other
    levels" makes ``L_l`` hypergeometric: ``L`` losses drawn without replacement from ``D``
    examples of which ``D_l`` are in the level. The one-sided p-value is
    ``P(X >= L_l), X ~ Hypergeometric(D, D_l, L)``: small when the level loses a larger share of
    the dense model's correct examples than the rest does (the exact conditional test of the
    2x2 table ``[[L_l, D_l - L_l], [L - L_l, (D - D_l) - (L - L_l)]]`` of dense-correct examples).
    Each level also reports ``mcnemar_p``, the exact McNemar test of its own losses against its
    gains (did the level lose accuracy at all). p-values are adjusted across levels with
    Benjamini-Hochberg (``correction="bh"``, false-discovery rate ``alpha``, the default) or
    Bonferroni (``"bonferroni"``, family-wise error ``alpha``); a level is ``significant`` when
    its adjusted p-value is at most ``alpha``.

    Args:
        y_true: True class ids.
        dense_pred: Predictions of the dense model, ``[n_examples]``.
        compressed_pred: Predictions of the compressed model, ``[n_examples]``.
        by: The level of each example: class ids (e.g. ``y_true``) or group labels.
        alpha: Significance level after correction.
        correction: ``"bh"`` or ``"bonferroni"``.
        level_names: Names of the levels, by id (a sequence) or by label (a mapping).

    Returns:
        JSON-ready dict (undefined values are ``None``): ``overall`` (``n``,
        ``dense_accuracy``, ``compressed_accuracy``, ``relative_change``, ``losses``,
        ``gains``), ``test``, ``correction``, ``alpha``, and ``levels``: per level ``n``,
        ``dense_accuracy``, ``compressed_accuracy``, ``relative_change``,
        ``normalized_change``, ``losses``, ``gains``, ``loss_rate`` (losses per dense-correct
        example), ``p_value``, ``p_adjusted``, ``significant`` and ``mcnemar_p``.
    """
    _check_test_options(alpha, correction)
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    n = len(y)
    dense_ok = _labels("dense_pred", dense_pred, n) == y
    comp_ok = _labels("compressed_pred", compressed_pred, n) == y
    levels = _labels("by", np.asarray(by), n)
    overall_change = _relative(float(dense_ok.mean()), float(comp_ok.mean()))
    rows = {display_name(level, level_names): _paired_level(levels == level, dense_ok, comp_ok, overall_change)
            for level in np.unique(levels)}
    adjusted = adjust_p_values(np.asarray([row["p_value"] for row in rows.values()]), correction)
    out_levels = {key: {**row, "p_adjusted": float(p_adj), "significant": bool(p_adj <= alpha)}
                  for (key, row), p_adj in zip(rows.items(), adjusted)}
    return {
        "overall": {"n": n, "dense_accuracy": float(dense_ok.mean()), "compressed_accuracy": float(comp_ok.mean()),
                    "relative_change": finite_or_none(overall_change), "losses": int((dense_ok & ~comp_ok).sum()),
                    "gains": int((~dense_ok & comp_ok).sum())},
        "test": "paired_exact_loss_share",
        "correction": _correction_name(correction),
        "alpha": float(alpha),
        "levels": out_levels,
    }


def _paired_level(member: np.ndarray, dense_ok: np.ndarray, comp_ok: np.ndarray, overall_change: float) -> dict:
    """One level's changes and its paired tests (see :func:`disparate_impact`)."""
    lost, gained = dense_ok & ~comp_ok, ~dense_ok & comp_ok
    d_in, l_in, g_in = int(dense_ok[member].sum()), int(lost[member].sum()), int(gained[member].sum())
    acc_d, acc_c = float(dense_ok[member].mean()), float(comp_ok[member].mean())
    change = _relative(acc_d, acc_c)
    return {"n": int(member.sum()), "dense_accuracy": acc_d, "compressed_accuracy": acc_c,
            "relative_change": finite_or_none(change), "normalized_change": finite_or_none(change - overall_change),
            "losses": l_in, "gains": g_in, "loss_rate": finite_or_none(l_in / d_in) if d_in else None,
            "p_value": float(stats.hypergeom.sf(l_in - 1, int(dense_ok.sum()), d_in, int(lost.sum()))),
            "mcnemar_p": mcnemar_exact(l_in, g_in, "greater")}


def population_disparate_impact(y_true: Any, dense_population: Any, compressed_population: Any, *, by: Any,
                                alpha: float = 0.05, correction: Literal["bh", "bonferroni"] = "bh",
                                level_names: Sequence[str] | Mapping[Any, str] | None = None) -> dict[str, Any]:
    """Hooker et al.'s (2019) population test: which levels do compressed models lose, across seeds.

    Each model ``m`` of either population gets, per level ``l``, its normalized recall
    ``r_ml = acc_m(level l) / acc_m(all examples)``. Welch's two-sided t-test (unequal
    variances) compares the compressed population's ``r_ml`` with the dense population's; a
    level whose normalized recall fell (``difference < 0``) with a small adjusted p-value is one
    compression forgets more than the model as a whole. Needs at least two models in each
    population (seeds, scored on the same examples).

    Returns:
        JSON-ready dict: ``test`` (``"welch_t"``), ``correction``, ``alpha``, ``n_dense_models``,
        ``n_compressed_models`` and ``levels``: per level ``n``, ``dense_normalized_recall`` and
        ``compressed_normalized_recall`` (population means), ``difference``, ``t``, ``p_value``,
        ``p_adjusted`` and ``significant`` (undefined values ``None``, never significant).
    """
    _check_test_options(alpha, correction)
    dense = _population("dense_population", dense_population)
    comp = _population("compressed_population", compressed_population)
    if dense.shape[0] < 2 or comp.shape[0] < 2:
        raise ValueError(f"Welch's test needs at least two models per population, got {dense.shape[0]} dense and "
                         f"{comp.shape[0]} compressed")
    if dense.shape[1] != comp.shape[1]:
        raise ValueError(f"dense_population has {dense.shape[1]} examples but compressed_population has "
                         f"{comp.shape[1]}; both must score the same examples")
    y = _labels("y_true", y_true, dense.shape[1])
    levels = _labels("by", np.asarray(by), len(y))

    def normalized(pop: np.ndarray, member: np.ndarray) -> np.ndarray:
        correct = pop == y[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            return correct[:, member].mean(axis=1) / correct.mean(axis=1)

    rows = []
    for level in np.unique(levels):
        member = levels == level
        r_dense, r_comp = normalized(dense, member), normalized(comp, member)
        with np.errstate(invalid="ignore", divide="ignore"):
            result = stats.ttest_ind(r_comp, r_dense, equal_var=False)
        rows.append((level, int(member.sum()), r_dense, r_comp, float(result.statistic), float(result.pvalue)))
    p_values = np.asarray([row[5] for row in rows])
    adjusted = np.full(len(rows), np.nan)
    defined = np.isfinite(p_values)
    adjusted[defined] = adjust_p_values(p_values[defined], correction)
    out_levels = {}
    for (level, count, r_dense, r_comp, t, p), p_adj in zip(rows, adjusted):
        out_levels[display_name(level, level_names)] = {
            "n": count, "dense_normalized_recall": finite_or_none(float(np.mean(r_dense))),
            "compressed_normalized_recall": finite_or_none(float(np.mean(r_comp))),
            "difference": finite_or_none(float(np.mean(r_comp) - np.mean(r_dense))),
            "t": finite_or_none(t), "p_value": finite_or_none(p), "p_adjusted": finite_or_none(float(p_adj)),
            "significant": bool(np.isfinite(p_adj) and p_adj <= alpha)}
    return {"test": "welch_t", "correction": _correction_name(correction), "alpha": float(alpha),
            "n_dense_models": int(dense.shape[0]), "n_compressed_models": int(comp.shape[0]), "levels": out_levels}
