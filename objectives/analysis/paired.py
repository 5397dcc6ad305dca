"""Paired bootstrap of how a change to a model moves its accuracy and every group measure.

An ablated model and the unablated one score the *same* examples, so the question is the
paired difference, not two marginal intervals: each resample draws one set of examples
(within each group, as the trials' own intervals do) and both models are scored on it. The
interval is the percentile interval of the resampled differences; the two-sided bootstrap
p-value is twice the smaller tail share of differences on either side of zero (at least
``1 / (resamples + 1)``), Benjamini-Hochberg-adjusted by the caller across components.

Example:
    >>> base = PairedBootstrap(y, groups, base_pred, n_resamples=200, seed=0)  # doctest: +SKIP
    >>> base.effect(ablated_pred)["tpr_gap"]["delta"]  # doctest: +SKIP
    0.031
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fairfront.jsonsafe import finite_or_none
from fairfront.objectives.measures.group_fairness import (
    BIAS_MEASURES,
    encode_groups,
    group_confusion,
    one_vs_rest_stats,
    percentile_interval,
    resample_index,
)

__all__ = ["PairedBootstrap"]


class PairedBootstrap:
    """The unablated model's scores and the resamples every comparison with it shares."""

    def __init__(self, y_true: np.ndarray, groups: np.ndarray, base_pred: np.ndarray, *, n_resamples: int = 200,
                 seed: int = 0, confidence: float = 0.95, n_classes: int | None = None):
        self.y = np.asarray(y_true)
        self.grouped = np.asarray(groups) >= 0
        self.groups = np.asarray(groups)[self.grouped]
        self.confidence = confidence
        self.labels = range(n_classes) if n_classes else None
        rng = np.random.default_rng(seed)
        self.index_all = rng.integers(0, len(self.y), size=(n_resamples, len(self.y)))
        self.has_groups = bool(self.grouped.any())
        self.index_grouped = (resample_index(self._encoded(base_pred), n_resamples, rng, True)
                              if self.has_groups else None)
        self.base = self._scores(base_pred)

    def _encoded(self, pred: np.ndarray) -> Any:
        return encode_groups(self.y[self.grouped], np.asarray(pred)[self.grouped], self.groups, labels=self.labels)

    def _scores(self, pred: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
        """Each measure's value on all examples and on every resample."""
        correct = (np.asarray(pred) == self.y).astype(float)
        out = {"accuracy": (float(correct.mean()), correct[self.index_all].mean(axis=1))}
        if self.has_groups:
            enc = self._encoded(pred)
            point = one_vs_rest_stats(group_confusion(enc))
            boot = one_vs_rest_stats(group_confusion(enc, self.index_grouped))
            for name, m in BIAS_MEASURES.items():
                out[name] = (float(m.kernel(point, enc.classes)), np.asarray(m.kernel(boot, enc.classes), dtype=float))
        return out

    def effect(self, pred: np.ndarray) -> dict[str, dict[str, Any]]:
        """Per measure: the base value, the changed model's, their paired difference, its interval and p-value."""
        out = {}
        for name, (value, boot) in self._scores(pred).items():
            base_value, base_boot = self.base[name]
            diffs = boot - base_boot
            diffs = diffs[np.isfinite(diffs)]
            low, high = percentile_interval(diffs, self.confidence) if diffs.size else (np.nan, np.nan)
            out[name] = {"base": finite_or_none(base_value), "value": finite_or_none(value),
                         "delta": finite_or_none(value - base_value), "ci": [finite_or_none(low), finite_or_none(high)],
                         "p_value": _two_sided_p(diffs)}
        return out


def _two_sided_p(diffs: np.ndarray) -> float | None:
    if diffs.size == 0:
        return None
    if not np.any(diffs):
        return 1.0
    tail = min(float((diffs <= 0).mean()), float((diffs >= 0).mean()))
    return min(1.0, max(2.0 * tail, 1.0 / (diffs.size + 1)))
