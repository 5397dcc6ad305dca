"""Is a measured difference real? Tests for the group gaps, paired comparisons, and one FDR correction.

A group gap is an absolute difference (``max - min`` over groups), so it is never negative: a
percentile bootstrap interval of a gap never contains 0 and is biased upward when the true gap is
near 0. An interval therefore cannot say whether a gap exists; these tests can.

* :func:`permutation_gap_test`: is the gap larger than group labels carry by chance? The group
  labels are permuted *within each true class* (so every group keeps its number of examples of
  each class, and TPR/FPR gaps are tested under the null of no group effect at fixed class
  make-up), and the p-value is ``(1 + #{perm >= observed}) / (1 + n_permutations)``, which is
  never 0 and keeps the test's size at most ``alpha`` (Good 2000, *Permutation Tests*; Phipson &
  Smyth 2010).
* :func:`paired_differences`: a signed difference ``measure(a) - measure(b)`` of two models
  scored on the same examples (and seeds): a compressed model against its dense teacher, or a
  method against its twin. The interval is a paired bootstrap (one resample of examples, and of
  seeds, serves both models); the p-value is an approximate-randomization test that swaps the
  two models' predictions per example (Noreen 1989; Riezler & Maxwell 2005).
* :func:`mcnemar_exact`: McNemar's (1947) exact test on discordant pairs.
* :func:`benjamini_hochberg` / :func:`adjust_p_values`: the one multiple-testing correction the
  package uses (Benjamini & Hochberg 1995; Bonferroni as the family-wise alternative).

Example:
    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.2]).round(3).tolist()
    [0.04, 0.053, 0.053, 0.2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as scipy_stats

from fairfront.jsonsafe import finite_or_none
from fairfront.objectives.measures.group_fairness import (
    BIAS_MEASURES,
    batched_counts,
    encode_groups,
    group_totals,
    one_vs_rest_stats,
    percentile_interval,
    resample_index,
)

__all__ = ["PERMUTATIONS", "permutation_gap_test", "paired_differences", "mcnemar_exact", "benjamini_hochberg",
           "adjust_p_values", "CORRECTIONS"]

PERMUTATIONS = 999
"""Default number of permutations (p-values in steps of 1/1000)."""

CORRECTIONS = ("bh", "bonferroni")

_CHUNK = 100
"""Permutations or resamples evaluated at once (bounds the memory to ``_CHUNK x n`` integers)."""

Kernel = Callable[..., np.ndarray]
"""A measure's kernel: ``(stats, classes, *, pos_label=None) -> values``."""


def benjamini_hochberg(p_values: Any) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values: ``min over j >= i of p_(j) * m / j``, capped at 1.

    A hypothesis is rejected at false-discovery rate ``q`` when its adjusted p-value is at most ``q``.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def adjust_p_values(p_values: Any, correction: Literal["bh", "bonferroni"] = "bh") -> np.ndarray:
    """p-values adjusted across a family: Benjamini-Hochberg (``"bh"``) or Bonferroni (``"bonferroni"``)."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be 'bh' or 'bonferroni', got {correction!r}")
    p = np.asarray(p_values, dtype=float)
    if correction == "bonferroni":
        return np.minimum(p * len(p), 1.0)
    return benjamini_hochberg(p)


def mcnemar_exact(b: int, c: int, alternative: Literal["two-sided", "greater", "less"] = "two-sided") -> float:
    """McNemar's (1947) exact test: under no change, ``b ~ Binomial(b + c, 1/2)``.

    Args:
        b: Discordant pairs of one kind (e.g. examples the first model got right and the second wrong).
        c: Discordant pairs of the other kind.
        alternative: ``"greater"``: more ``b`` than ``c``; ``"less"``: fewer; ``"two-sided"``:
            ``min(1, 2 * smaller tail)`` (the distribution is symmetric).

    Example:
        >>> round(mcnemar_exact(9, 1, "greater"), 4)
        0.0107
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    upper = float(scipy_stats.binom.sf(b - 1, n, 0.5))
    lower = float(scipy_stats.binom.cdf(b, n, 0.5))
    if alternative == "greater":
        return upper
    if alternative == "less":
        return lower
    if alternative != "two-sided":
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    return min(1.0, 2.0 * min(upper, lower))


def _kernels(measures: Sequence[str] | None) -> dict[str, Kernel]:
    chosen = list(BIAS_MEASURES) if measures is None else list(measures)
    out: dict[str, Kernel] = {}
    for name in chosen:
        if name == "accuracy":
            out[name] = _accuracy_kernel
        elif name in BIAS_MEASURES and BIAS_MEASURES[name].kernel is not None:
            out[name] = BIAS_MEASURES[name].kernel  # type: ignore[assignment]
        else:
            raise ValueError(f"unknown measure {name!r}; expected accuracy or one of {', '.join(BIAS_MEASURES)}")
    return out


def _accuracy_kernel(stats: np.ndarray, classes: np.ndarray, *, pos_label: Any = None,
                     min_count: int = 1) -> np.ndarray:
    """Accuracy over all groups, from (..., G, K, 4) statistics."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return stats[..., 0].sum(axis=(-2, -1)) / group_totals(stats).sum(axis=-1)


def _evaluate(kernels: dict[str, Kernel], g: np.ndarray, t: np.ndarray, p: np.ndarray, n_groups: int,
              classes: np.ndarray, pos_label: Any = None, min_count: int = 1) -> dict[str, np.ndarray]:
    """Every kernel on each row of the (B, n) codes: ``{name: (B,) values}``."""
    k = len(classes)
    cells = (g * k + t) * k + p
    confusion = batched_counts(cells, n_groups * k * k).reshape(cells.shape[0], n_groups, k, k)
    batch_stats = one_vs_rest_stats(confusion)
    return {name: np.asarray(kernel(batch_stats, classes, pos_label=pos_label, min_count=min_count), dtype=float)
            for name, kernel in kernels.items()}


def _at_least(values: np.ndarray, observed: float) -> int:
    """How many values reach ``observed`` (a 1e-12 relative tolerance, so summation order cannot decide a tie)."""
    return int((values >= observed - 1e-12 * max(1.0, abs(observed))).sum())


def _chunks(total: int) -> list[int]:
    return [min(_CHUNK, total - start) for start in range(0, total, _CHUNK)]


def permutation_gap_test(y_true: Any, y_pred: Any, *, sensitive_features: Any, measures: Sequence[str] | None = None,
                         n_permutations: int = PERMUTATIONS, seed: int = 0, pos_label: Any = None,
                         min_count: int = 1, rows: Any = None) -> dict[str, Any]:
    """One-sided permutation test of "the gap is larger than chance" for group bias measures.

    Within each true class the group labels are shuffled; the measure of each shuffle is a draw
    from its distribution under "the group does not matter". The p-value counts the shuffles at
    least as large as the observed measure: ``(1 + #{perm >= observed}) / (1 + n_permutations)``.

    Overlapping groups (``rows``): the entries are memberships, ``rows`` naming each one's example
    (:func:`~fairfront.objectives.measures.group_fairness.membership_rows`). Shuffling membership
    entries would split an example's groups apart, so whole examples are permuted instead: within
    each true class, each example takes the prediction of another example of the class (among the
    examples in a group), which is the same as permuting whole membership vectors. Under "the
    groups an example belongs to do not matter, given its class" every such permutation is
    equally likely, so the test stays exact; the report's ``test`` is then
    ``"permutation_within_class_rows"``.

    Args:
        y_true: True class ids.
        y_pred: Predicted class ids.
        sensitive_features: One group label per example.
        measures: Names in :data:`~fairfront.objectives.measures.group_fairness.BIAS_MEASURES`
            (default: all of them).
        n_permutations: Shuffles (at least 1).
        seed: Seed of the shuffles; the same seed gives the same p-values.
        pos_label: The positive class of a binary task (default: class ``1``), as for the measures.
        min_count: ``[data] min_group_size``: a group's rate on fewer examples is left out, as in the measures.
        rows: The example of each entry where groups overlap (entries of one example share it); None:
            one entry per example.

    Returns:
        ``{"test": "permutation_within_class", "n_permutations", "seed", "p_value": {name: p}}``;
        a measure undefined on the data has ``None``.
    """
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ValueError(f"n_permutations must be an integer >= 1, got {n_permutations!r}")
    kernels = _kernels(measures)
    enc = encode_groups(y_true, y_pred, sensitive_features, labels=None if pos_label is None else [pos_label])
    n_groups = len(enc.groups)
    observed = {name: float(v[0]) for name, v in
                _evaluate(kernels, enc.g[None], enc.t[None], enc.p[None], n_groups, enc.classes, pos_label,
                          min_count).items()}
    shuffled = _row_shuffles(enc, rows) if rows is not None else _label_shuffles(enc)
    rng = np.random.default_rng(seed)
    exceed = dict.fromkeys(kernels, 0)
    for size in _chunks(int(n_permutations)):
        g, p = shuffled(rng, size)
        values = _evaluate(kernels, g, np.broadcast_to(enc.t, g.shape), p, n_groups, enc.classes, pos_label, min_count)
        for name in kernels:
            exceed[name] += _at_least(values[name], observed[name])
    p_value = {name: (1 + exceed[name]) / (1 + int(n_permutations)) if np.isfinite(observed[name]) else None
               for name in kernels}
    return {"test": "permutation_within_class" + ("_rows" if rows is not None else ""),
            "n_permutations": int(n_permutations), "seed": int(seed), "p_value": p_value}


def _label_shuffles(enc: Any) -> Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]:
    """``size`` shuffles of the group labels within each true class: ``(groups, predictions)``, each (size, n)."""
    strata = [np.flatnonzero(enc.t == c) for c in np.unique(enc.t)]

    def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        g = np.tile(enc.g, (size, 1))
        for members in strata:
            g[:, members] = rng.permuted(g[:, members], axis=1)
        return g, np.broadcast_to(enc.p, g.shape)

    return draw


def _row_shuffles(enc: Any, rows: Any) -> Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]:
    """``size`` permutations of whole examples within each true class, for membership entries (see the caller)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape != enc.t.shape:
        raise ValueError(f"rows must name one example per entry ({len(enc.t)}), got shape {rows.shape}")
    examples, entry_example = np.unique(rows, return_inverse=True)
    t = np.zeros(len(examples), dtype=np.int64)
    p = np.zeros(len(examples), dtype=np.int64)
    t[entry_example], p[entry_example] = enc.t, enc.p
    if bool((t[entry_example] != enc.t).any()):
        raise ValueError("the entries of one example must share its true class")
    strata = [np.flatnonzero(t == c) for c in np.unique(t)]

    def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        sigma = np.tile(np.arange(len(examples)), (size, 1))
        for members in strata:
            sigma[:, members] = rng.permuted(sigma[:, members], axis=1)
        return np.broadcast_to(enc.g, (size, len(enc.g))), p[sigma[:, entry_example]]

    return draw


def _paired_codes(y_true: Any, pred_a: Any, pred_b: Any, sensitive_features: Any, pos_label: Any = None):
    """Shared encoding of two models' predictions: (enc, a codes (S, n), b codes (S, n))."""
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    a = a[None] if a.ndim == 1 else a
    b = b[None] if b.ndim == 1 else b
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"pred_a and pred_b must have the same shape [n_examples] or [n_seeds, n_examples], "
                         f"got {np.asarray(pred_a).shape} and {np.asarray(pred_b).shape}")
    y = np.asarray(y_true)
    groups = np.zeros(len(y), dtype=np.int64) if sensitive_features is None else sensitive_features
    labels = np.union1d(np.unique(a), np.unique(b))
    enc = encode_groups(y, y, groups, labels=labels if pos_label is None else np.union1d(labels, [pos_label]))
    if a.shape[1] != len(y):
        raise ValueError(f"the predictions cover {a.shape[1]} examples but y_true has {len(y)}")
    code = lambda pred: np.searchsorted(enc.classes, pred).astype(np.int64)  # noqa: E731
    return enc, code(a), code(b)


def paired_differences(y_true: Any, pred_a: Any, pred_b: Any, *, sensitive_features: Any = None,
                       measures: Sequence[str] = ("accuracy",), n_resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0, pos_label: Any = None) -> dict[str, Any]:
    """Signed, paired ``measure(a) - measure(b)`` of two models scored on the same examples (and seeds).

    For a compressed model against its dense teacher, or a method against its twin run with the
    same seeds on the same examples. With ``[n_seeds, n_examples]`` predictions, row ``s`` of
    both arrays must come from the same seed; the difference is the mean over seeds of the
    per-seed differences.

    * Interval: paired percentile bootstrap; each resample draws the examples (within each
      group, as the fairness intervals do) and, with several seeds, the seeds, and scores both
      models on the same draw. A signed difference has no floor at 0, so its interval can
      contain 0.
    * p-value (two-sided): approximate randomization; each permutation swaps the two models'
      predictions on each example (and seed) with probability 1/2, and
      ``p = (1 + #{|perm| >= |observed|}) / (1 + n_resamples)``.

    Args:
        y_true: True class ids, ``[n_examples]``.
        pred_a, pred_b: Predicted class ids, ``[n_examples]`` or ``[n_seeds, n_examples]``.
        sensitive_features: One group label per example; needed by the group measures.
        measures: ``"accuracy"`` and/or names of group bias measures.
        n_resamples: Bootstrap resamples, and randomization permutations.
        confidence: Coverage of the interval.
        seed: Seed of the resamples and permutations.
        pos_label: The positive class of a binary task (default: class ``1``), as for the measures.

    Returns:
        ``{"n", "n_seeds", "n_resamples", "confidence", "seed", "test": "approximate_randomization",
        "measures": {name: {"a", "b", "difference", "ci": [low, high], "p_value"}}}``.

    Example:
        >>> y = [0, 1] * 50
        >>> out = paired_differences(y, y, [0, 0] * 50, n_resamples=200)["measures"]["accuracy"]
        >>> out["difference"], out["ci"][0] > 0, out["p_value"] < 0.01
        (0.5, True, True)
    """
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    if sensitive_features is None and any(m != "accuracy" for m in measures):
        raise ValueError("group bias measures need sensitive_features (one group label per example)")
    kernels = _kernels(measures)
    enc, a, b = _paired_codes(y_true, pred_a, pred_b, sensitive_features, pos_label)
    n_seeds, n = a.shape
    observed = _scored_pairs(kernels, enc, np.arange(n)[None], a[None], b[None], pos_label)
    observed_gap = {name: abs(float((va - vb).mean())) for name, (va, vb) in observed.items()}
    rng = np.random.default_rng(seed)
    boot: dict[str, list[np.ndarray]] = {name: [] for name in kernels}
    exceed = dict.fromkeys(kernels, 0)
    everything = np.arange(n)[None]
    for size in _chunks(int(n_resamples)):
        index = resample_index(enc, size, rng, True)
        seeds = rng.integers(0, n_seeds, size=(size, n_seeds))
        scored = _scored_pairs(kernels, enc, index, a[:, index].swapaxes(0, 1), b[:, index].swapaxes(0, 1), pos_label)
        for name, (va, vb) in scored.items():
            boot[name].append(np.take_along_axis(va - vb, seeds, axis=1).mean(axis=1))
        swap = rng.random((size, n_seeds, n)) < 0.5
        scored = _scored_pairs(kernels, enc, np.broadcast_to(everything, (size, n)), np.where(swap, b[None], a[None]),
                               np.where(swap, a[None], b[None]), pos_label)
        for name, (va, vb) in scored.items():
            exceed[name] += _at_least(np.abs((va - vb).mean(axis=1)), observed_gap[name])
    out_measures: dict[str, dict[str, Any]] = {}
    for name, (va, vb) in observed.items():
        difference = float((va - vb).mean())
        lo, hi = percentile_interval(np.concatenate(boot[name]), confidence)
        out_measures[name] = {"a": finite_or_none(float(va.mean())), "b": finite_or_none(float(vb.mean())),
                              "difference": finite_or_none(difference),
                              "ci": [finite_or_none(lo), finite_or_none(hi)],
                              "p_value": (1 + exceed[name]) / (1 + int(n_resamples)) if np.isfinite(difference)
                              else None}
    return {"n": int(n), "n_seeds": int(n_seeds), "n_resamples": int(n_resamples), "confidence": float(confidence),
            "seed": int(seed), "test": "approximate_randomization", "measures": out_measures}


def _scored_pairs(kernels: dict[str, Kernel], enc: Any, rows: np.ndarray, a: np.ndarray,
                  b: np.ndarray, pos_label: Any = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each measure of both models, ``{name: (a values (B, S), b values (B, S))}``.

    ``rows`` (B, n) are the examples of each batch entry (for the groups and true classes);
    ``a`` and ``b`` (B, S, n) are the two models' predicted codes on those examples, per seed.
    """
    g, t = enc.g[rows], enc.t[rows]
    n_groups = len(enc.groups)
    out: dict[str, tuple[list, list]] = {name: ([], []) for name in kernels}
    for s in range(a.shape[1]):
        va = _evaluate(kernels, g, t, a[:, s], n_groups, enc.classes, pos_label)
        vb = _evaluate(kernels, g, t, b[:, s], n_groups, enc.classes, pos_label)
        for name in kernels:
            out[name][0].append(va[name])
            out[name][1].append(vb[name])
    return {name: (np.stack(x, axis=1), np.stack(y, axis=1)) for name, (x, y) in out.items()}
