"""Group-fairness measures of a classifier's predictions: TPR, FPR and selection-rate spreads.

Every disparity here is built from one shared table, :func:`group_frame`: for every
(group, class) pair the weighted confusion counts ``tp``, ``fp``, ``tn``, ``fn`` of that class
taken one-vs-rest within that group. Each rate is a ratio of sums from that table, so sample
weights, multi-class one-vs-rest rates and the bootstrap all use the same arithmetic.

Definitions follow fairlearn's (``fairlearn.metrics``, "between_groups"): a *spread* is
``max_g rate_g - min_g rate_g`` (``agg="difference"``, 0 = parity) or ``min_g rate_g /
max_g rate_g`` (``agg="ratio"``, 1 = parity). Equal opportunity is the TPR spread, equalized
odds the worse of the TPR and FPR spreads, demographic parity the selection-rate spread.

**Binary or multi-class.** Labels that are all in ``{0, 1}`` (or ``{-1, 1}``, as in fairlearn)
are a binary task whose positive class is ``1`` unless ``pos_label`` says otherwise (the
decision is made from the labels seen in ``y_true`` and ``y_pred``). With any other label set
and no ``pos_label``, each class is taken one-vs-rest, its spread computed across groups, and the
per-class spreads aggregated by ``class_agg``: ``"rms"`` (root mean square, the default, as in
Ravfogel et al. 2020), ``"mean"`` or ``"max"`` (the worst class). For ``agg="ratio"`` the
aggregation works on the distance from parity, ``1 - ratio``, and converts back, so ``"max"``
is again the worst class. Giving ``pos_label`` selects that one class in any task.

**Undefined rates (a decision that differs from fairlearn).** A group with no positive
examples of a class has no TPR for it, and a group with no negatives has no FPR. fairlearn
reports 0 there (scikit-learn maps 0/0 to 0), which can invent a spread of 1.0 out of a group
that was never tested. Here the rate is ``nan`` and that group is left out of that spread.
A spread over fewer than two groups with a defined rate is ``nan``; classes whose spread is
``nan`` are left out of the class aggregation, and an aggregation over no class is ``nan``.
A ratio whose largest rate is 0 is ``0/0`` and ``nan`` (as in fairlearn). On data where every
group has positives and negatives of every class, every value equals fairlearn's.

**TPR-gap RMS** (De-Arteaga et al. 2019; Ravfogel et al. 2020): ``Gap_y`` is the TPR spread of
class ``y`` across groups (for two groups ``|TPR_g1,y - TPR_g2,y|``) and ``GAP_RMS =
sqrt(mean_y Gap_y**2)``. The mean runs over the classes that have positive examples in
*every* group; a class missing from some group is skipped entirely (INLP's notebook would
raise ``ZeroDivisionError`` there). INLP's ``get_TPR`` additionally drops every class with no
correct prediction at all, which removes zero-gap classes and raises the RMS; that rule is
*not* applied here, so a class the model never gets right contributes its (zero) gap. The
same class rule holds for the registry's ``tpr_gap`` (multi-class) and ``tpr_gap_max``.
:func:`equal_opportunity_difference` with ``class_agg="rms"`` differs only in keeping a class
that some group lacks, spread over the groups that have it; the two agree whenever every class
occurs in every group.

Example:
    >>> y_true = [1, 1, 0, 0, 1, 1, 0, 0]
    >>> y_pred = [1, 1, 0, 1, 1, 0, 0, 0]
    >>> groups = ["a", "a", "a", "a", "b", "b", "b", "b"]
    >>> equal_opportunity_difference(y_true, y_pred, sensitive_features=groups)
    0.5
    >>> BIAS_MEASURES["worst_group_error"](y_true, y_pred, sensitive_features=groups)
    0.25
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fairfront.jsonsafe import finite_or_none

if TYPE_CHECKING:
    import pandas as pd  # imported where used: reading a study's measures needs no pandas

__all__ = [
    "BIAS_MEASURES",
    "BiasMeasure",
    "accuracy_difference",
    "bootstrap_ci",
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "equalized_odds_difference",
    "fairness_report",
    "group_frame",
    "group_rates",
    "merge_small_groups",
    "intersection_labels",
    "attribute_reports",
    "membership_report",
    "membership_rows",
    "merge_small_memberships",
    "objective_measures",
    "GROUP_OBJECTIVES",
    "OTHER_GROUP",
    "SMALL_GROUP_POLICIES",
    "tpr_gap_rms",
    "worst_group_accuracy",
    # the counting kernels the paired analyses and significance tests share
    "EncodedGroups",
    "batched_counts",
    "display_name",
    "encode_groups",
    "group_confusion",
    "group_totals",
    "one_vs_rest_stats",
    "percentile_interval",
    "resample_index",
]

Agg = Literal["difference", "ratio"]
ClassAgg = Literal["rms", "max", "mean"]

_AGGS = ("difference", "ratio")
_CLASS_AGGS = ("rms", "max", "mean")
_STAT_COLUMNS = ("tp", "fp", "fn", "tn")


# --------------------------------------------------------------------------------------------
# Input checking and the shared counts
# --------------------------------------------------------------------------------------------


def _as_1d(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _group_labels(sensitive_features: Any, n: int) -> np.ndarray:
    """One group label per example; several feature columns are combined into one label."""
    import pandas as pd

    if isinstance(sensitive_features, pd.DataFrame):
        columns = [sensitive_features[c].astype(str).to_numpy() for c in sensitive_features.columns]
        sf = np.array([" & ".join(row) for row in zip(*columns)], dtype=object) if columns else np.array([])
    else:
        arr = np.asarray(sensitive_features, dtype=object)
        if arr.ndim == 2:
            sf = np.array([" & ".join(str(v) for v in row) for row in arr], dtype=object)
        elif arr.ndim == 1:
            sf = arr
        else:
            raise ValueError(f"sensitive_features must be 1-D (one group per example) or 2-D (one column per "
                             f"feature), got shape {arr.shape}")
    if len(sf) != n:
        raise ValueError(f"sensitive_features has {len(sf)} entries but y_true has {n}; give one group per example")
    if pd.isna(sf).any():
        first = int(np.flatnonzero(pd.isna(sf))[0])
        raise ValueError(f"sensitive_features has a missing value at position {first}; every example needs a group")
    return sf


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # labels of mixed, unorderable types: keep first-seen order
        codes, uniques = pd.factorize(values, sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


@dataclass(frozen=True)
class EncodedGroups:
    """The examples as integer codes: what every count, rate and resample is computed from."""

    groups: np.ndarray  # (G,) group labels, sorted
    classes: np.ndarray  # (K,) class labels, sorted
    g: np.ndarray  # (n,) group code per example
    t: np.ndarray  # (n,) true-class code
    p: np.ndarray  # (n,) predicted-class code
    w: np.ndarray | None  # (n,) sample weights, or None for unit weights

    @property
    def cell(self) -> np.ndarray:
        """Flat index of each example's (group, true class, predicted class) cell."""
        k = len(self.classes)
        return (self.g * k + self.t) * k + self.p


def encode_groups(y_true: Any, y_pred: Any, sensitive_features: Any, sample_weight: Any = None,
                  labels: Sequence[Any] | None = None) -> EncodedGroups:
    """The examples as integer group and class codes (``labels`` adds classes absent from the data)."""
    yt = _as_1d("y_true", y_true)
    yp = _as_1d("y_pred", y_pred)
    if len(yt) == 0:
        raise ValueError("y_true is empty; fairness measures need at least one example")
    if len(yp) != len(yt):
        raise ValueError(f"y_pred has {len(yp)} entries but y_true has {len(yt)}; give one prediction per example")
    sf = _group_labels(sensitive_features, len(yt))
    w = None
    if sample_weight is not None:
        w = _as_1d("sample_weight", sample_weight).astype(float)
        if len(w) != len(yt):
            raise ValueError(f"sample_weight has {len(w)} entries but y_true has {len(yt)}; "
                             "give one weight per example")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("sample_weight must be finite and non-negative")
    present = np.union1d(np.unique(yt), np.unique(yp))
    if labels is not None:
        present = np.union1d(present, np.asarray(list(labels)))
    seen = set(present.tolist())
    for binary in ({0, 1}, {-1, 1}):
        if seen <= binary:
            present = np.array(sorted(binary))  # a binary task always has both classes, even when one is absent
            break
    classes = np.asarray(present)
    t = np.searchsorted(classes, yt)
    p = np.searchsorted(classes, yp)
    g, groups = _factorize(sf)
    return EncodedGroups(groups=groups, classes=classes, g=g, t=t.astype(np.int64), p=p.astype(np.int64), w=w)


def group_confusion(enc: EncodedGroups, index: np.ndarray | None = None) -> np.ndarray:
    """Weighted confusion counts per group: shape (G, K, K), or (B, G, K, K) for index (B, n)."""
    n_groups, k = len(enc.groups), len(enc.classes)
    size = n_groups * k * k
    cell = enc.cell
    if index is None:
        counts = np.bincount(cell, weights=enc.w, minlength=size)
        return counts.astype(float).reshape(n_groups, k, k)
    weights = None if enc.w is None else enc.w[index]
    return batched_counts(cell[index], size, weights).reshape(index.shape[0], n_groups, k, k)


def batched_counts(cells: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Counts of each of ``size`` cells in every row of ``cells`` (B, n): shape (B, size), as floats."""
    b = cells.shape[0]
    flat = (cells + (np.arange(b, dtype=np.int64) * size)[:, None]).ravel()
    counts = np.bincount(flat, weights=None if weights is None else weights.ravel(), minlength=b * size)
    return counts.astype(float).reshape(b, size)


def one_vs_rest_stats(confusion: np.ndarray) -> np.ndarray:
    """One-vs-rest (tp, fp, fn, tn) per (group, class) from confusion counts: shape (..., G, K, 4)."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    positives = confusion.sum(axis=-1)
    predicted = confusion.sum(axis=-2)
    total = confusion.sum(axis=(-2, -1))[..., None]
    fn = positives - tp
    fp = predicted - tp
    tn = total - tp - fn - fp
    return np.stack([tp, fp, fn, tn], axis=-1)


# --------------------------------------------------------------------------------------------
# Rates and spreads on the (..., G, K, 4) statistics
# --------------------------------------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray, min_count: float = 1) -> np.ndarray:
    """num / den, undefined (nan) where the denominator is 0, or below ``min_count`` when that is above 1.

    The denominators are (weighted) example counts; ``min_count`` 1 asks only for a non-zero one,
    so weights below 1 keep today's rates.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.true_divide(num, den)
    defined = (den > 0) & (den >= min_count) if min_count > 1 else den > 0
    return np.where(defined, out, np.nan)


def _tpr(stats: np.ndarray, min_count: float = 1) -> np.ndarray:
    return _ratio(stats[..., 0], stats[..., 0] + stats[..., 2], min_count)


def _fpr(stats: np.ndarray, min_count: float = 1) -> np.ndarray:
    return _ratio(stats[..., 1], stats[..., 1] + stats[..., 3], min_count)


def group_totals(stats: np.ndarray) -> np.ndarray:
    """Examples per group from :func:`one_vs_rest_stats`: shape (..., G)."""
    return stats[..., 0, :].sum(axis=-1)  # tp + fp + fn + tn of any one class


def _selection(stats: np.ndarray, min_count: float = 1) -> np.ndarray:
    return _ratio(stats[..., 0] + stats[..., 1], group_totals(stats)[..., None], min_count)


def _group_accuracy(stats: np.ndarray, min_count: float = 1) -> np.ndarray:
    return _ratio(stats[..., 0].sum(axis=-1), group_totals(stats), min_count)


def _spread(rates: np.ndarray, agg: str, axis: int = -1) -> np.ndarray:
    """max - min (or min / max) over groups, ignoring undefined rates; nan below two defined rates."""
    defined = (~np.isnan(rates)).sum(axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hi = np.fmax.reduce(rates, axis=axis)
        lo = np.fmin.reduce(rates, axis=axis)
    out = hi - lo if agg == "difference" else _ratio(lo, hi)
    return np.where(defined >= 2, out, np.nan)


def _aggregate_classes(spreads: np.ndarray, agg: str, class_agg: str) -> np.ndarray:
    """Combine per-class spreads (..., K) into one value per batch entry, ignoring nan classes."""
    dev = spreads if agg == "difference" else 1.0 - spreads
    valid = ~np.isnan(dev)
    n_valid = valid.sum(axis=-1)
    filled = np.where(valid, dev, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if class_agg == "rms":
            out = np.sqrt((filled**2).sum(axis=-1) / n_valid)
        elif class_agg == "mean":
            out = filled.sum(axis=-1) / n_valid
        else:
            out = np.where(valid, dev, -np.inf).max(axis=-1)
    out = np.where(n_valid > 0, out, np.nan)
    return out if agg == "difference" else 1.0 - out


def _worse(a: np.ndarray, b: np.ndarray, agg: str) -> np.ndarray:
    return np.fmax(a, b) if agg == "difference" else np.fmin(a, b)


def _positive_index(classes: np.ndarray, pos_label: Any) -> int | None:
    """Index of the single class a disparity is about, or None for a multi-class aggregate."""
    if pos_label is None:
        if set(classes.tolist()) in ({0, 1}, {-1, 1}):
            return int(np.flatnonzero(classes == 1)[0])
        return None
    hits = np.flatnonzero(classes == pos_label)
    if len(hits) == 0:  # pragma: no cover - encode_groups always adds pos_label to the classes
        raise ValueError(f"pos_label={pos_label!r} is not among the classes {classes.tolist()}")
    return int(hits[0])


def _per_class_or_aggregate(spreads: np.ndarray, classes: np.ndarray, pos_label: Any, agg: str,
                            class_agg: str) -> np.ndarray:
    index = _positive_index(classes, pos_label)
    if index is not None:
        return spreads[..., index]
    return _aggregate_classes(spreads, agg, class_agg)


# Kernels: (stats (..., G, K, 4), classes, options) -> values (...). Every public disparity is a
# kernel applied to the shared frame; the bootstrap applies the same kernel to resampled counts.


# ``min_count`` (a study's ``[data] min_group_size``): a rate resting on fewer examples than this
# (a TPR on fewer positives, an FPR on fewer negatives, a selection rate or accuracy on a smaller
# group) is undefined, so that group is left out of that spread.


def _k_equal_opportunity(stats, classes, *, pos_label=None, agg="difference", class_agg="rms", min_count=1):
    return _per_class_or_aggregate(_spread(_tpr(stats, min_count), agg, axis=-2), classes, pos_label, agg, class_agg)


def _k_equalized_odds(stats, classes, *, pos_label=None, agg="difference", class_agg="rms", min_count=1):
    per_class = _worse(_spread(_tpr(stats, min_count), agg, axis=-2), _spread(_fpr(stats, min_count), agg, axis=-2),
                       agg)
    return _per_class_or_aggregate(per_class, classes, pos_label, agg, class_agg)


def _k_demographic_parity(stats, classes, *, pos_label=None, agg="difference", class_agg="rms", min_count=1):
    spreads = _spread(_selection(stats, min_count), agg, axis=-2)
    return _per_class_or_aggregate(spreads, classes, pos_label, agg, class_agg)


def _k_tpr_gap_classes(stats, classes, *, agg="difference", class_agg="rms", min_count=1):
    positives = stats[..., 0] + stats[..., 2]
    present_everywhere = ((positives > 0) & (positives >= (min_count if min_count > 1 else 0))).all(axis=-2)
    spreads = np.where(present_everywhere, _spread(_tpr(stats, min_count), agg, axis=-2), np.nan)
    return _aggregate_classes(spreads, agg, class_agg)


def _k_worst_group_accuracy(stats, classes, *, min_count=1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.fmin.reduce(_group_accuracy(stats, min_count), axis=-1)


def _k_accuracy_difference(stats, classes, *, agg="difference", min_count=1):
    return _spread(_group_accuracy(stats, min_count), agg, axis=-1)


def _check_options(agg: str | None = None, class_agg: str | None = None) -> None:
    if agg is not None and agg not in _AGGS:
        raise ValueError(f"agg must be 'difference' or 'ratio', got {agg!r}")
    if class_agg is not None and class_agg not in _CLASS_AGGS:
        raise ValueError(f"class_agg must be one of 'rms', 'max', 'mean', got {class_agg!r}")


# --------------------------------------------------------------------------------------------
# The shared frame and per-group rates
# --------------------------------------------------------------------------------------------


def _frame_from(enc: EncodedGroups) -> pd.DataFrame:
    import pandas as pd

    confusion = group_confusion(enc)
    stats = one_vs_rest_stats(confusion)  # (G, K, 4)
    n_groups, k = len(enc.groups), len(enc.classes)
    n = np.bincount(enc.g, minlength=n_groups)
    unweighted_pos = np.bincount(enc.g * k + enc.t, minlength=n_groups * k).reshape(n_groups, k)
    frame = pd.DataFrame({
        "group": np.repeat(enc.groups, k),
        "class": np.tile(enc.classes, n_groups),
        "n": np.repeat(n, k),
        "count": np.repeat(group_totals(stats), k),
        "n_positives": unweighted_pos.ravel(),
        "positives": (stats[..., 0] + stats[..., 2]).ravel(),
    })
    for i, name in enumerate(_STAT_COLUMNS):
        frame[name] = stats[..., i].ravel()
    return frame


def _stats_from_frame(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(groups, classes, stats (G, K, 4)) back from a :func:`group_frame` table."""
    import pandas as pd

    groups = pd.unique(frame["group"])
    classes = np.asarray(pd.unique(frame["class"]))
    stats = frame[list(_STAT_COLUMNS)].to_numpy(dtype=float).reshape(len(groups), len(classes), 4)
    return np.asarray(groups, dtype=object), classes, stats


def group_frame(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                labels: Sequence[Any] | None = None) -> pd.DataFrame:
    """The one table every disparity is computed from: confusion counts per (group, class).

    Each class is taken one-vs-rest within each group, so a multi-class task and a binary one
    share the same arithmetic. With sample weights every count is a sum of weights, and every
    rate a ratio of those sums.

    Args:
        y_true: True class ids.
        y_pred: Predicted class ids.
        sensitive_features: One group label per example, or a 2-D array / DataFrame with one
            column per feature (the columns are combined into one label such as ``"f & 30s"``).
        sample_weight: Optional non-negative weight per example.
        labels: Classes to include even if neither ``y_true`` nor ``y_pred`` has them. Labels
            within ``{0, 1}`` always give both classes 0 and 1 (likewise ``{-1, 1}``).

    Returns:
        One row per (group, class), groups and classes sorted, with columns ``group``,
        ``class``, ``n`` (examples in the group), ``count`` (their total weight),
        ``n_positives`` (examples of the class), ``positives`` (their weight) and the weighted
        ``tp``, ``fp``, ``fn``, ``tn`` of the class one-vs-rest.

    Example:
        >>> f = group_frame([0, 1, 1], [0, 1, 0], sensitive_features=["a", "a", "b"])
        >>> print(f[["group", "class", "n", "tp", "fp", "fn", "tn"]].to_string(index=False))
        group  class  n  tp  fp  fn  tn
            a      0  2 1.0 0.0 0.0 1.0
            a      1  2 1.0 0.0 0.0 1.0
            b      0  1 0.0 1.0 0.0 0.0
            b      1  1 0.0 0.0 1.0 0.0
    """
    return _frame_from(encode_groups(y_true, y_pred, sensitive_features, sample_weight, labels))


def group_rates(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                pos_label: Any = None) -> pd.DataFrame:
    """Per-group accuracy, TPR, FPR and selection rate, read off :func:`group_frame`.

    For a binary task (or when ``pos_label`` names a class) there is one row per group, the
    rates being those of the positive class. For a multi-class task there is one row per
    (group, class), each class one-vs-rest; ``accuracy`` is then the group's multi-class
    accuracy, the same on every class row of that group. Undefined rates are ``nan``.

    Returns:
        Columns ``n``, ``count``, ``positives``, ``accuracy``, ``tpr``, ``fpr``,
        ``selection_rate``; index ``group`` (binary) or (``group``, ``class``) (multi-class).
    """
    labels = None if pos_label is None else [pos_label]
    enc = encode_groups(y_true, y_pred, sensitive_features, sample_weight, labels)
    frame = _frame_from(enc)
    _, classes, stats = _stats_from_frame(frame)
    out = frame[["group", "class", "n", "count", "positives"]].copy()
    out["accuracy"] = np.repeat(_group_accuracy(stats), len(classes))
    out["tpr"] = _tpr(stats).ravel()
    out["fpr"] = _fpr(stats).ravel()
    out["selection_rate"] = _selection(stats).ravel()
    index = _positive_index(classes, pos_label)
    if index is not None:
        out = out[out["class"] == classes[index]].drop(columns="class").set_index("group")
        return out
    return out.set_index(["group", "class"])


# --------------------------------------------------------------------------------------------
# Public disparities
# --------------------------------------------------------------------------------------------


def _point(kernel: Callable[..., np.ndarray], y_true: Any, y_pred: Any, sensitive_features: Any,
           sample_weight: Any, pos_label: Any = None, **options: Any) -> float:
    labels = None if pos_label is None else [pos_label]
    frame = group_frame(y_true, y_pred, sensitive_features=sensitive_features, sample_weight=sample_weight,
                        labels=labels)
    _, classes, stats = _stats_from_frame(frame)
    if pos_label is not None:
        options["pos_label"] = pos_label
    return float(kernel(stats, classes, **options))


def equal_opportunity_difference(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                                 pos_label: Any = None, agg: Agg = "difference",
                                 class_agg: ClassAgg = "rms") -> float:
    """Spread of the true-positive rate across groups (Hardt, Price & Srebro 2016).

    A model satisfies equal opportunity when every group's positives are recognised equally
    often. Groups without positives are left out (see the module notes on undefined rates).

    Args:
        y_true: True class ids.
        y_pred: Predicted class ids.
        sensitive_features: One group label per example.
        sample_weight: Optional weight per example.
        pos_label: The class whose TPR is compared; default 1 for 0/1 labels, and for other
            labels every class one-vs-rest, aggregated by ``class_agg``.
        agg: ``"difference"`` (max - min, 0 = parity) or ``"ratio"`` (min / max, 1 = parity).
        class_agg: How per-class spreads of a multi-class task are combined: ``"rms"``,
            ``"max"`` (worst class) or ``"mean"``.

    Example:
        >>> equal_opportunity_difference([1, 1, 1, 1], [1, 1, 1, 0], sensitive_features=["a", "a", "b", "b"])
        0.5
    """
    _check_options(agg, class_agg)
    return _point(_k_equal_opportunity, y_true, y_pred, sensitive_features, sample_weight, pos_label,
                  agg=agg, class_agg=class_agg)


def equalized_odds_difference(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                              pos_label: Any = None, agg: Agg = "difference",
                              class_agg: ClassAgg = "rms") -> float:
    """The worse of the TPR spread and the FPR spread across groups (Hardt et al. 2016).

    This is fairlearn's ``equalized_odds_difference`` with ``agg="worst_case"`` (or its
    ``equalized_odds_ratio``: the smaller of the two ratios). When only one of the two spreads
    is defined, that one is returned. Arguments as in :func:`equal_opportunity_difference`.
    """
    _check_options(agg, class_agg)
    return _point(_k_equalized_odds, y_true, y_pred, sensitive_features, sample_weight, pos_label,
                  agg=agg, class_agg=class_agg)


def demographic_parity_difference(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                                  pos_label: Any = None, agg: Agg = "difference",
                                  class_agg: ClassAgg = "rms") -> float:
    """Spread of the selection rate ``P(y_pred = pos | group)`` across groups.

    Demographic (statistical) parity ignores the true labels: it asks whether every group is
    given the positive outcome equally often. Arguments as in
    :func:`equal_opportunity_difference`.
    """
    _check_options(agg, class_agg)
    return _point(_k_demographic_parity, y_true, y_pred, sensitive_features, sample_weight, pos_label,
                  agg=agg, class_agg=class_agg)


def tpr_gap_rms(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                agg: Agg = "difference") -> float:
    """Root mean square over classes of the per-class TPR spread across groups.

    The measure of De-Arteaga et al. (2019) with the RMS aggregation of Ravfogel et al. (2020,
    INLP). Every class counts, binary ones included (class 0's TPR is the true-negative rate).
    Only classes with positive examples in every group enter the mean; unlike INLP's notebook,
    classes without any correct prediction are kept (see the module notes).

    Example:
        >>> y_true = [0, 1, 2, 0, 1, 2]
        >>> y_pred = [0, 1, 2, 0, 0, 2]
        >>> round(tpr_gap_rms(y_true, y_pred, sensitive_features=list("aaabbb")), 6)  # sqrt((0 + 1 + 0) / 3)
        0.57735
    """
    _check_options(agg)
    return _point(_k_tpr_gap_classes, y_true, y_pred, sensitive_features, sample_weight, agg=agg,
                  class_agg="rms")


def worst_group_accuracy(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None) -> float:
    """The lowest accuracy of any group (the quantity group DRO maximises; Sagawa et al. 2020)."""
    return _point(_k_worst_group_accuracy, y_true, y_pred, sensitive_features, sample_weight)


def accuracy_difference(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                        agg: Agg = "difference") -> float:
    """Spread of accuracy across groups: highest minus lowest (or lowest / highest)."""
    _check_options(agg)
    return _point(_k_accuracy_difference, y_true, y_pred, sensitive_features, sample_weight, agg=agg)


# --------------------------------------------------------------------------------------------
# The registry a study file's bias objective names
# --------------------------------------------------------------------------------------------


def _tpr_gap_kernel(stats, classes, *, pos_label=None, min_count=1):
    if _positive_index(classes, pos_label) is not None:
        return _k_equal_opportunity(stats, classes, pos_label=pos_label, min_count=min_count)
    return _k_tpr_gap_classes(stats, classes, class_agg="rms", min_count=min_count)


def _tpr_gap_max_kernel(stats, classes, *, pos_label=None, min_count=1):
    return _k_tpr_gap_classes(stats, classes, class_agg="max", min_count=min_count)


def _worst_group_error_kernel(stats, classes, *, pos_label=None, min_count=1):
    return 1.0 - _k_worst_group_accuracy(stats, classes, min_count=min_count)


_tpr_gap_rms_kernel = functools.partial(_k_tpr_gap_classes, class_agg="rms")


def _ignoring_positive(kernel: Callable) -> Callable:
    """A kernel that does not depend on which class is positive, callable with ``pos_label`` like the others."""
    def wrapped(stats, classes, *, pos_label=None, min_count=1):
        return kernel(stats, classes, min_count=min_count)

    return wrapped


@dataclass(frozen=True)
class BiasMeasure:
    """One entry of :data:`BIAS_MEASURES`: a bias measure where lower is fairer.

    Calling it computes the measure: ``measure(y_true, y_pred, sensitive_features=g)``; for a
    binary task ``pos_label`` names the positive class (default: class ``1``), which the TPR /
    FPR / selection-rate measures are about. Every ``kernel`` takes
    ``(stats, classes, *, pos_label=None, min_count=1)``.

    Attributes:
        name: The name a study file uses.
        fn: ``(y_true, y_pred, *, sensitive_features, sample_weight=None, pos_label=None, min_group_size=1)
            -> float``.
        description: One line saying what is measured.
        citation: Where the measure comes from.
    """

    name: str
    fn: Callable[..., float]
    description: str
    citation: str
    kernel: Callable[..., np.ndarray] | None = field(repr=False, compare=False, default=None)

    def __call__(self, y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                 pos_label: Any = None, min_group_size: int = 1) -> float:
        return self.fn(y_true, y_pred, sensitive_features=sensitive_features, sample_weight=sample_weight,
                       pos_label=pos_label, min_group_size=min_group_size)


def _measure(name: str, kernel: Callable, description: str, citation: str) -> BiasMeasure:
    def fn(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
           pos_label: Any = None, min_group_size: int = 1) -> float:
        return _point(kernel, y_true, y_pred, sensitive_features, sample_weight, pos_label, min_count=min_group_size)

    fn.__name__ = name
    fn.__doc__ = f"{description} ({citation}). Lower is fairer."
    return BiasMeasure(name=name, fn=fn, description=description, citation=citation, kernel=kernel)


BIAS_MEASURES: dict[str, BiasMeasure] = {m.name: m for m in [
    _measure("tpr_gap", _tpr_gap_kernel,
             "TPR spread across groups: of the positive class for binary labels, RMS over classes (= tpr_gap_rms) "
             "otherwise",
             "Hardt, Price & Srebro 2016; De-Arteaga et al. 2019"),
    _measure("tpr_gap_rms", _ignoring_positive(_tpr_gap_rms_kernel),
             "root mean square over classes of the per-class TPR spread across groups",
             "De-Arteaga et al. 2019; Ravfogel et al. 2020"),
    _measure("tpr_gap_max", _tpr_gap_max_kernel,
             "largest per-class TPR spread across groups",
             "De-Arteaga et al. 2019"),
    _measure("equalized_odds_gap", _k_equalized_odds,
             "worse of the TPR and FPR spreads across groups (RMS over classes for multi-class)",
             "Hardt, Price & Srebro 2016"),
    _measure("demographic_parity_gap", _k_demographic_parity,
             "selection-rate spread across groups (RMS over classes for multi-class)",
             "Dwork et al. 2012; Calders & Verwer 2010"),
    _measure("worst_group_error", _worst_group_error_kernel,
             "1 - the lowest accuracy of any group",
             "Sagawa et al. 2020"),
    _measure("accuracy_gap", _ignoring_positive(_k_accuracy_difference),
             "highest minus lowest group accuracy",
             "Hooker et al. 2020"),
]}

_PUBLIC_KERNELS: dict[Callable, tuple[Callable, tuple[str, ...]]] = {
    equal_opportunity_difference: (_k_equal_opportunity, ("pos_label", "agg", "class_agg")),
    equalized_odds_difference: (_k_equalized_odds, ("pos_label", "agg", "class_agg")),
    demographic_parity_difference: (_k_demographic_parity, ("pos_label", "agg", "class_agg")),
    tpr_gap_rms: (functools.partial(_k_tpr_gap_classes, class_agg="rms"), ("agg",)),
    worst_group_accuracy: (_k_worst_group_accuracy, ()),
    accuracy_difference: (_k_accuracy_difference, ("agg",)),
}


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def resample_index(enc: EncodedGroups, n_resamples: int, rng: np.random.Generator,
                   stratify_by_group: bool) -> np.ndarray:
    """(n_resamples, n) indices drawn with replacement, within each group when stratified."""
    n = len(enc.g)
    if not stratify_by_group:
        return rng.integers(0, n, size=(n_resamples, n))
    parts = []
    for code in range(len(enc.groups)):
        members = np.flatnonzero(enc.g == code)
        parts.append(members[rng.integers(0, len(members), size=(n_resamples, len(members)))])
    return np.concatenate(parts, axis=1)


def _kernel_for(metric: Any) -> tuple[Callable, dict[str, Any]] | None:
    """The vectorised kernel behind a known metric (and its fixed options), or None."""
    if isinstance(metric, str):
        if metric not in BIAS_MEASURES:
            raise ValueError(f"unknown bias measure {metric!r}; expected one of {', '.join(BIAS_MEASURES)}")
        metric = BIAS_MEASURES[metric]
    if isinstance(metric, BiasMeasure):
        return (metric.kernel, {}) if metric.kernel is not None else None
    options: dict[str, Any] = {}
    if isinstance(metric, functools.partial) and not metric.args:
        options = dict(metric.keywords)
        metric = metric.func
    try:
        entry = _PUBLIC_KERNELS.get(metric)
    except TypeError:  # an unhashable callable object
        entry = None
    if entry is not None:
        kernel, allowed = entry
        if set(options) - set(allowed):
            return None
        _check_options(options.get("agg"), options.get("class_agg"))
        return kernel, options
    return None


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap values (NaN, NaN when none is finite)."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _check_bootstrap(n_resamples: int, confidence: float, minimum: int = 1) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < minimum:
        raise ValueError(f"n_resamples must be an integer >= {minimum}, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")


def bootstrap_ci(metric: Callable[..., float] | str, y_true: Any, y_pred: Any, *, sensitive_features: Any,
                 sample_weight: Any = None, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 stratify_by_group: bool = True) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a fairness measure.

    A gap measured on a few hundred examples moves by several points from one sample to the
    next, so a Pareto front of gaps needs error bars. Examples are drawn with replacement
    within each group (``stratify_by_group=True``), so every resample keeps each group's size
    and no group can vanish from a resample.

    The measures of this module (the public disparities, ``functools.partial`` of them with
    keyword options, :data:`BIAS_MEASURES` entries or their names) are evaluated for all
    resamples at once from resampled confusion counts; 1,000 resamples of 2,000 examples take a
    few tens of milliseconds. Any other callable ``metric(y_true, y_pred, *,
    sensitive_features)`` is called once per resample. Resamples where the measure is
    undefined (``nan``) are left out of the percentiles.

    Args:
        metric: The measure, or the name of a :data:`BIAS_MEASURES` entry.
        y_true: True class ids.
        y_pred: Predicted class ids.
        sensitive_features: One group label per example.
        sample_weight: Optional weight per example; weights travel with their examples.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval, e.g. 0.95 for the 2.5th-97.5th percentiles.
        seed: Seed of the ``numpy.random.Generator``; the same seed gives the same interval.
        stratify_by_group: Resample within each group (True) or from all examples (False).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when the measure is undefined on every resample.

    Example:
        >>> lo, hi = bootstrap_ci("tpr_gap", [1, 1, 0, 1, 1, 0] * 20, [1, 0, 0, 1, 1, 0] * 20,
        ...                       sensitive_features=list("aaabbb") * 20, n_resamples=200)
        >>> lo <= 0.5 <= hi
        True
    """
    _check_bootstrap(n_resamples, confidence)
    rng = np.random.default_rng(seed)
    known = _kernel_for(metric)
    if known is not None:
        kernel, options = known
        labels = [options["pos_label"]] if options.get("pos_label") is not None else None
        enc = encode_groups(y_true, y_pred, sensitive_features, sample_weight, labels)
        index = resample_index(enc, n_resamples, rng, stratify_by_group)
        stats = one_vs_rest_stats(group_confusion(enc, index))
        values = np.asarray(kernel(stats, enc.classes, **options), dtype=float)
        return percentile_interval(values, confidence)
    if not callable(metric):
        raise ValueError(f"metric must be callable or the name of a bias measure, got {metric!r}")
    yt, yp = _as_1d("y_true", y_true), _as_1d("y_pred", y_pred)
    enc = encode_groups(yt, yp, sensitive_features, sample_weight)
    sf = _group_labels(sensitive_features, len(yt))
    index = resample_index(enc, n_resamples, rng, stratify_by_group)
    values = np.empty(n_resamples)
    for b, idx in enumerate(index):
        kwargs: dict[str, Any] = {"sensitive_features": sf[idx]}
        if enc.w is not None:
            kwargs["sample_weight"] = enc.w[idx]
        values[b] = float(metric(yt[idx], yp[idx], **kwargs))
    return percentile_interval(values, confidence)


# --------------------------------------------------------------------------------------------
# The report kept in a trial's user attributes
# --------------------------------------------------------------------------------------------


def display_name(value: Any, names: Sequence[str] | Mapping[Any, str] | None) -> str:
    """Display name of a class or group: from ``names`` (by key, or by position for int ids)."""
    if names is not None:
        if isinstance(names, Mapping):
            if value in names:
                return str(names[value])
        elif isinstance(value, (int, np.integer)) and 0 <= int(value) < len(names):
            return str(names[int(value)])
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


SMALL_GROUP_POLICIES = ("exclude", "merge")
"""What ``[data] small_groups`` does with a group of fewer than ``min_group_size`` examples."""

OTHER_GROUP = "other"
"""The name of the group small groups are merged into (``small_groups = "merge"``)."""


def _check_group_options(min_group_size: Any, small_groups: str) -> None:
    if not isinstance(min_group_size, (int, np.integer)) or isinstance(min_group_size, bool) or min_group_size < 1:
        raise ValueError(f"min_group_size must be an integer >= 1, got {min_group_size!r}")
    if small_groups not in SMALL_GROUP_POLICIES:
        raise ValueError(f"small_groups must be one of {', '.join(SMALL_GROUP_POLICIES)}, got {small_groups!r}")


def merge_small_groups(groups: Any, min_group_size: int) -> tuple[np.ndarray, dict[str, int]]:
    """Relabel every group of fewer than ``min_group_size`` examples as :data:`OTHER_GROUP`.

    Returns:
        ``(labels, merged)``: one label per example, and the merged groups with their sizes.

    Example:
        >>> labels, merged = merge_small_groups(["a"] * 3 + ["b", "c"], 2)
        >>> labels.tolist(), merged
        (['a', 'a', 'a', 'other', 'other'], {'b': 1, 'c': 1})
    """
    labels = np.asarray(groups, dtype=object).copy()
    names, counts = np.unique(labels.astype(str), return_counts=True)
    small = {str(n): int(c) for n, c in zip(names, counts) if c < min_group_size}
    if small:
        labels[np.isin(labels.astype(str), list(small))] = OTHER_GROUP
    return labels, small


def _merged_line(merged: Mapping[str, int], min_count: int) -> str:
    return (f"groups below min_group_size {min_count} merged into {OTHER_GROUP!r}: "
            + ", ".join(f"{g!r} ({n})" for g, n in merged.items()))


def _coverage_warnings(stats: np.ndarray, group_keys: list[str], class_keys: list[str], pos: int | None,
                       min_count: int, all_groups: Sequence[str],
                       merged: Mapping[str, int]) -> tuple[dict[str, int], list[str]]:
    """The groups left out for size, and one line for each group or class that drops out of a measure."""
    lines = [_merged_line(merged, min_count)] if merged else []
    lines += [f"group {g!r} has no example in this split: it is in no group measure"
              for g in all_groups if g not in group_keys]
    totals = group_totals(stats)
    excluded = {g: int(totals[i]) for i, g in enumerate(group_keys) if totals[i] < min_count}
    if excluded:
        listed = ", ".join(f"{g!r} ({n})" for g, n in excluded.items())
        lines.append(f"groups below min_group_size {min_count} left out of the group measures: {listed}")
    positives = stats[..., 0] + stats[..., 2]
    negatives = stats[..., 1] + stats[..., 3]
    present = positives.sum(axis=0) > 0
    lines += [f"class {class_keys[c]!r} has no example in this split" for c in range(len(class_keys))
              if not present[c] and (pos is None or c == pos)]
    classes = [pos] if pos is not None else [c for c in range(len(class_keys)) if present[c]]
    for c in classes:
        for what, counts, rate in (("positive", positives, "TPR"), ("negative", negatives, "FPR")):
            short = [(g, int(counts[i, c])) for i, g in enumerate(group_keys)
                     if g not in excluded and counts[i, c] < min_count]
            if short:
                listed = ", ".join(f"{g!r} ({n})" for g, n in short)
                lines.append(f"class {class_keys[c]!r}: groups with fewer than {min_count} {what} examples are "
                             f"left out of its {rate}: {listed}")
    return excluded, lines


@dataclass(frozen=True)
class _Rates:
    """Per-group accuracy (G,) and per-(group, class) TPR, FPR and selection rate (G, K)."""

    accuracy: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    selection: np.ndarray

    def of(self, group: int, cls: int) -> dict[str, float | None]:
        return {"tpr": finite_or_none(self.tpr[group, cls]), "fpr": finite_or_none(self.fpr[group, cls]),
                "selection_rate": finite_or_none(self.selection[group, cls])}

    def of_group(self, group: int, pos: int | None) -> dict[str, float | None]:
        """A group's accuracy, and the positive class's rates in a binary task."""
        return {"accuracy": finite_or_none(self.accuracy[group]), **({} if pos is None else self.of(group, pos))}


def _intervals(enc: EncodedGroups, classes: np.ndarray, *, n_resamples: int, seed: int, confidence: float,
               min_count: int, pos_label: Any = None) -> dict[str, list[float | None]]:
    """Every registered measure's bootstrap interval, from one set of group-stratified resamples."""
    ci: dict[str, list[float | None]] = {}
    if n_resamples == 0:
        return ci
    boot = one_vs_rest_stats(group_confusion(enc, resample_index(enc, n_resamples, np.random.default_rng(seed), True)))
    for name, measure in BIAS_MEASURES.items():
        values = np.asarray(measure.kernel(boot, classes, pos_label=pos_label, min_count=min_count), dtype=float)
        lo, hi = percentile_interval(values, confidence)
        ci[name] = [finite_or_none(lo), finite_or_none(hi)]
    return ci


def fairness_report(y_true: Any, y_pred: Any, *, sensitive_features: Any,
                    class_names: Sequence[str] | Mapping[Any, str] | None = None,
                    group_names: Sequence[str] | Mapping[Any, str] | None = None,
                    n_resamples: int = 200, seed: int = 0, confidence: float = 0.95,
                    pos_label: Any = None, min_group_size: int = 1, small_groups: str = "exclude",
                    all_groups: Sequence[str] = ()) -> dict[str, Any]:
    """Every registered bias measure with its bootstrap interval, and the per-group rates.

    The result goes into an Optuna trial's user attributes, so it is plain JSON (``nan``
    becomes ``None``) and holds no per-example data. One set of resampled counts serves every
    measure's interval.

    Args:
        y_true: True class ids.
        y_pred: Predicted class ids.
        sensitive_features: One group label per example.
        class_names: Names of the classes, by class id (a sequence) or by label (a mapping).
        group_names: Names of the groups, likewise; unnamed groups are shown with ``str``.
        n_resamples: Bootstrap resamples for the intervals; 0 leaves the intervals out.
        seed: Bootstrap seed.
        confidence: Coverage of the intervals.
        pos_label: The positive class of a binary task (a value of ``y_true``; default ``1``).
        min_group_size: A rate on fewer examples (a TPR on fewer positives, an FPR on fewer
            negatives, a selection rate or accuracy on a smaller group) is undefined: that group is
            left out of that measure. 1 keeps every rate with a non-zero denominator.
        small_groups: ``"exclude"``, or ``"merge"``: groups below ``min_group_size`` examples are
            first pooled into one group :data:`OTHER_GROUP`.
        all_groups: Every group of the dataset, so that one absent from this split is reported.

    Returns:
        A dict with ``n``, ``classes``, ``groups``, ``positive_class`` (binary tasks, else
        ``None``), ``measures`` (name -> value), ``ci`` (name -> ``[low, high]``),
        ``confidence``, ``n_resamples``, ``group_counts`` (group -> examples), ``group_rates``
        (group -> accuracy, and for binary tasks the positive class's ``tpr``, ``fpr``,
        ``selection_rate``), for multi-class tasks ``class_group_rates`` (class -> group
        -> ``n``, ``tpr``, ``fpr``, ``selection_rate``), ``min_group_size``, ``small_groups``,
        ``excluded_groups`` and ``merged_groups`` (group -> examples) and ``warnings`` (one
        line per group or class that drops out of a measure).
    """
    _check_bootstrap(n_resamples, confidence, minimum=0)
    _check_group_options(min_group_size, small_groups)
    merged: dict[str, int] = {}
    if small_groups == "merge":
        sensitive_features, merged = _merged_by_name(sensitive_features, group_names, len(np.ravel(y_true)),
                                                     min_group_size)
        group_names = None
    enc = encode_groups(y_true, y_pred, sensitive_features, labels=None if pos_label is None else [pos_label])
    frame = _frame_from(enc)
    groups, classes, stats = _stats_from_frame(frame)
    group_keys = [display_name(g, group_names) for g in groups]
    class_keys = [display_name(c, class_names) for c in classes]
    pos, m = _positive_index(classes, pos_label), int(min_group_size)
    measures = {name: finite_or_none(mea.kernel(stats, classes, pos_label=pos_label, min_count=m))
                for name, mea in BIAS_MEASURES.items()}
    ci = _intervals(enc, classes, n_resamples=n_resamples, seed=seed, confidence=confidence, min_count=m,
                    pos_label=pos_label)
    n_per_group = np.bincount(enc.g, minlength=len(groups))
    rates = _Rates(_group_accuracy(stats, m), _tpr(stats, m), _fpr(stats, m), _selection(stats, m))
    known = [str(g) for g in all_groups if str(g) not in merged]
    excluded, lines = _coverage_warnings(stats, group_keys, class_keys, pos, m, known, merged)
    report: dict[str, Any] = {
        "n": int(len(enc.g)),
        "classes": class_keys,
        "groups": group_keys,
        "positive_class": None if pos is None else class_keys[pos],
        "measures": measures,
        "ci": ci,
        "confidence": float(confidence),
        "n_resamples": int(n_resamples),
        "group_counts": {key: int(n_per_group[gi]) for gi, key in enumerate(group_keys)},
        "group_rates": {key: rates.of_group(gi, pos) for gi, key in enumerate(group_keys)},
        "min_group_size": m,
        "small_groups": small_groups,
        "excluded_groups": excluded,
        "merged_groups": merged,
        "warnings": lines,
    }
    if pos is None:
        report["class_group_rates"] = _class_group_rates(frame, rates, group_keys, class_keys)
    return report


def _merged_by_name(sensitive_features: Any, group_names: Sequence[str] | Mapping[Any, str] | None, n: int,
                    min_group_size: int) -> tuple[np.ndarray, dict[str, int]]:
    """Groups below ``min_group_size`` pooled into :data:`OTHER_GROUP`, by name so named groups stay named."""
    named = [display_name(g, group_names) for g in _group_labels(sensitive_features, n)]
    return merge_small_groups(named, min_group_size)


def _class_group_rates(frame: Any, rates: _Rates, group_keys: list[str],
                       class_keys: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Multi-class tasks: class -> group -> ``n`` (positives), ``tpr``, ``fpr``, ``selection_rate``."""
    positives = frame["n_positives"].to_numpy().reshape(len(group_keys), len(class_keys))
    return {ckey: {gkey: {"n": int(positives[gi, c]), **rates.of(gi, c)} for gi, gkey in enumerate(group_keys)}
            for c, ckey in enumerate(class_keys)}


# --------------------------------------------------------------------------------------------
# Several sensitive attributes, and groups that overlap
# --------------------------------------------------------------------------------------------

INTERSECTION_SEPARATOR = "&"
"""Joins one row's attribute values into its intersectional group name, e.g. ``female&black``."""

GROUP_OBJECTIVES = ("intersection", "max")
"""``[data] group_objective``: with several attributes, the bias objective is the measure over the
intersectional groups, or the largest of the per-attribute measures."""


def intersection_labels(columns: Sequence[Sequence[Any]]) -> np.ndarray:
    """One intersectional group name per row (``female&black``); None where any attribute is missing.

    Example:
        >>> intersection_labels([["f", "m", None], ["x", "y", "y"]]).tolist()
        ['f&x', 'm&y', None]
    """
    import pandas as pd

    frame = pd.DataFrame({i: pd.Series(list(c), dtype="string") for i, c in enumerate(columns)})
    missing = frame.isna().any(axis=1).to_numpy()
    joined = frame.fillna("").agg(INTERSECTION_SEPARATOR.join, axis=1).to_numpy(dtype=object)
    joined[missing] = None
    return joined


def attribute_reports(y_true: Any, y_pred: Any, *, groups: Any, attributes: Sequence[str],
                      **options: Any) -> dict[str, dict[str, Any]]:
    """:func:`fairness_report` per attribute, read off intersectional group names.

    ``groups`` holds names made by :func:`intersection_labels` (attribute values in the order of
    ``attributes``); the report of attribute ``i`` groups the rows by the ``i``-th value, like
    fairlearn's ``MetricFrame`` with one sensitive feature at a time.
    """
    parts = np.array([str(g).split(INTERSECTION_SEPARATOR) for g in np.asarray(groups, dtype=object)], dtype=object)
    if parts.ndim != 2 or parts.shape[1] != len(attributes):
        raise ValueError(f"group names must hold one value per attribute ({', '.join(attributes)}) joined by "
                         f"{INTERSECTION_SEPARATOR!r}")
    return {name: fairness_report(y_true, y_pred, sensitive_features=parts[:, i], **options)
            for i, name in enumerate(attributes)}


def membership_rows(membership: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, groups)``: one entry per membership of a ``[rows, groups]`` 0/1 matrix, row by row.

    Measuring groups over these entries counts a row once in every group it belongs to and leaves
    a row in no group out; the shared ``rows`` tie a row's memberships together (for a test that
    permutes whole rows, :func:`~fairfront.objectives.measures.significance.permutation_gap_test`).

    Example:
        >>> rows, groups = membership_rows([[1, 1], [0, 0], [0, 1]])
        >>> rows.tolist(), groups.tolist()
        ([0, 0, 2], [0, 1, 1])
    """
    matrix = np.asarray(membership)
    if matrix.ndim != 2:
        raise ValueError(f"membership must be a [rows, groups] matrix, got shape {matrix.shape}")
    rows, groups = np.nonzero(matrix.astype(float) > 0)
    return rows.astype(np.int64), groups.astype(np.int64)


def merge_small_memberships(names: Sequence[str], membership: Any, min_group_size: int
                            ) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Pool the groups of fewer than ``min_group_size`` members into one group :data:`OTHER_GROUP`.

    A row is a member of ``other`` when it belongs to any small group, once (a row in two small
    groups is not counted twice). Returns ``(names, [rows, groups] matrix, merged groups -> members)``.

    Example:
        >>> names, matrix, merged = merge_small_memberships(["a", "b", "c"], [[1, 1, 1], [1, 0, 0], [1, 0, 1]], 3)
        >>> names, matrix.astype(int).tolist(), merged
        (['a', 'other'], [[1, 1], [1, 0], [1, 1]], {'b': 1, 'c': 2})
    """
    matrix = np.asarray(membership).astype(float) > 0
    sizes = matrix.sum(axis=0)
    small = sizes < min_group_size
    merged = {str(n): int(c) for n, c, s in zip(names, sizes, small) if s}
    if not merged:
        return [str(n) for n in names], matrix, merged
    kept = [str(n) for n, s in zip(names, small) if not s]
    return kept + [OTHER_GROUP], np.column_stack([matrix[:, ~small], matrix[:, small].any(axis=1)]), merged


def membership_report(y_true: Any, y_pred: Any, *, membership: Mapping[str, Any], **options: Any) -> dict[str, Any]:
    """:func:`fairness_report` for groups that overlap (multi-hot: one 0/1 column per group).

    Each group is measured over its members, so a row in two groups counts in both; a row in no
    group is in no group measure. The rows are repeated once per membership
    (:func:`membership_rows`), which gives exactly the per-member counts; the bootstrap then
    resamples memberships (within each group) rather than rows, which treats a row's two
    memberships as independent. ``n`` counts the rows in a group, ``n_memberships`` the entries.
    With ``small_groups="merge"`` small groups are pooled by :func:`merge_small_memberships`.
    """
    n = len(np.ravel(y_true))
    y, p = np.asarray(y_true), np.asarray(y_pred)
    for name, column in membership.items():
        if len(np.ravel(column)) != n:
            raise ValueError(f"membership column {name!r} has {len(np.ravel(column))} entries for {n} examples")
    names = [str(name) for name in membership]
    matrix = np.column_stack([np.ravel(c) for c in membership.values()]) if membership else np.zeros((n, 0))
    merged: dict[str, int] = {}
    if options.get("small_groups") == "merge":
        _check_group_options(options.get("min_group_size", 1), "merge")
        names, matrix, merged = merge_small_memberships(names, matrix, options["min_group_size"])
        options = {**options, "small_groups": "exclude",
                   "all_groups": [g for g in options.get("all_groups", ()) if str(g) not in merged]}
    rows, groups = membership_rows(matrix)
    labels = np.asarray(names, dtype=object)[groups]
    report = fairness_report(y[rows], p[rows], sensitive_features=labels, **options)
    report["n"] = int(len(np.unique(rows)))
    report["n_memberships"] = int(len(rows))
    if merged:
        report.update(small_groups="merge", merged_groups=merged,
                      warnings=[_merged_line(merged, report["min_group_size"]), *report["warnings"]])
    return report


def objective_measures(intersection: Mapping[str, Any], per_attribute: Mapping[str, Mapping[str, Any]],
                       how: str) -> dict[str, float | None]:
    """The group measures a bias objective reads: the intersection's, or the worst attribute's (``"max"``)."""
    if how not in GROUP_OBJECTIVES:
        raise ValueError(f"group_objective must be one of {', '.join(GROUP_OBJECTIVES)}, got {how!r}")
    if how == "intersection" or not per_attribute:
        return dict(intersection["measures"])
    out: dict[str, float | None] = {}
    for name in BIAS_MEASURES:
        values = [r["measures"].get(name) for r in per_attribute.values()]
        defined = [v for v in values if v is not None]
        out[name] = max(defined) if defined else None
    return out
