"""Accuracy of a classifier's predictions: plain, balanced across classes, and macro-F1.

A compressed model often keeps its plain accuracy by dropping a rare class; balanced accuracy
and macro-F1 weigh every class equally, so a study on imbalanced data can optimise those
instead (``[objectives] accuracy``).

Example:
    >>> import numpy as np
    >>> y, p = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])
    >>> accuracy(y, p), balanced_accuracy(y, p), round(macro_f1(y, p), 4)
    (0.75, 0.5, 0.4286)
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "balanced_accuracy", "macro_f1"]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of examples predicted correctly."""
    return float((y_true == y_pred).mean())


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in np.unique(y_true)]))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over every class that is true or predicted (a class never seen nor predicted scores 0)."""
    scores = []
    for c in np.union1d(np.unique(y_true), np.unique(y_pred)):
        tp = np.sum((y_pred == c) & (y_true == c))
        denom = np.sum(y_pred == c) + np.sum(y_true == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))
