"""What the classes of a task are: numeric labels binned or refused, and the positive class of a binary task.

Sorting label names decides class ids, but it must not decide which class the TPR / FPR gaps are
about: with ``hateful`` / ``non-hateful`` the second in sorted order is the harmless one. So a
binary task names its positive class (``[data] positive_label``), and the default is chosen from
the names (``1``, ``true``, ``yes``, ``positive``) or else is the rarer class of the training
split, the one a bias study is usually about (hate, toxicity, a condition).

A label column of fractions (an annotator-agreement score, a toxicity probability) read as
classes gives one class per distinct value; that is refused unless ``[data] label_bins`` gives
the thresholds that turn it into classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from fairfront.errors import DataError
from fairfront.objectives.data.datasets import TextDataset

__all__ = ["POSITIVE_NAMES", "bin_labels", "integral_labels", "with_positive", "bin_names"]

POSITIVE_NAMES: tuple[str, ...] = ("1", "true", "yes", "positive")
"""Label names taken as the positive class of a binary task by default (case-insensitive), in this order."""


def bin_names(thresholds: Sequence[float]) -> tuple[str, ...]:
    """Class names of the bins: ``"0"`` below the first threshold, ``"1"`` from it up to the next, ..."""
    return tuple(str(i) for i in range(len(thresholds) + 1))


def _as_numbers(labels: pd.Series) -> pd.Series | None:
    """The labels as floats when every one reads as a number, else None."""
    numbers = pd.to_numeric(labels.astype("string").str.strip(), errors="coerce")
    return None if bool(numbers.isna().any()) else numbers.astype(float)


def integral_labels(labels: pd.Series, *, origin: str, column: str,
                    where: Callable[[int], str]) -> pd.Series | None:
    """Numeric labels as whole-number class names (``"1.0"`` -> ``"1"``); None when not all are numbers.

    Raises:
        DataError: some label is a fraction (a score, not a class): one line naming the first such
            row (``where`` gives a 0-based row's place in the file, e.g. ``"line 7"``).
    """
    numbers = _as_numbers(labels)
    if numbers is None or len(numbers) == 0:
        return None
    fractional = (numbers != numbers.round()).to_numpy()
    if not fractional.any():
        return pd.Series(numbers.round().astype(np.int64).astype(str).to_numpy(), index=labels.index, dtype="string")
    first = int(np.flatnonzero(fractional)[0])
    distinct = numbers.nunique()
    raise DataError(f"{origin}: label column {column!r} holds fractions ({int(fractional.sum())} row(s), first: "
                    f"{where(first)}, value {labels.iloc[first]!s}), which would be read as {distinct} classes; "
                    "give [data] label_bins = [thresholds] (e.g. [0.5]) to turn them into classes")


def bin_labels(labels: pd.Series, thresholds: Sequence[float], *, origin: str, column: str,
               where: Callable[[int], str]) -> pd.Series:
    """Numeric labels as bin names: class ``k`` holds the values in ``[thresholds[k-1], thresholds[k])``."""
    numbers = _as_numbers(labels)
    if numbers is None:
        bad = pd.to_numeric(labels.astype("string").str.strip(), errors="coerce").isna().to_numpy()
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{origin}: [data] label_bins needs numeric labels, but column {column!r} has "
                        f"{labels.iloc[first]!r} ({where(first)})")
    ids = np.searchsorted(np.asarray(thresholds, dtype=float), numbers.to_numpy(), side="right")
    return pd.Series(np.asarray(bin_names(thresholds), dtype=object)[ids], index=labels.index, dtype="string")


def default_positive(data: TextDataset, *, declared: bool) -> str:
    """The default positive class of a binary ``data``.

    ``declared``: the loader fixed the class order with the harmful / positive class last (the
    built-in datasets), which is kept; otherwise a name of :data:`POSITIVE_NAMES`, else the rarer
    class of the training split (ties: the later name).
    """
    names = data.label_names
    if declared:
        return names[-1]
    lowered = {n.strip().lower(): n for n in names}
    for candidate in POSITIVE_NAMES:
        if candidate in lowered:
            return lowered[candidate]
    counts = data.part("train")["label"].value_counts()
    return min(reversed(names), key=lambda n: int(counts.get(n, 0)))


def with_positive(data: TextDataset, requested: str | None, *, declared: bool, origin: str) -> TextDataset:
    """``data`` with its positive class set (binary tasks; a multi-class task keeps None)."""
    if len(data.label_names) != 2:
        if requested is not None:
            raise DataError(f"{origin}: [data] positive_label = {requested!r} needs a binary task, but the labels are "
                            f"{len(data.label_names)} classes: {', '.join(data.label_names[:10])}")
        return data
    if requested is None:
        positive = default_positive(data, declared=declared)
    elif requested in data.label_names:
        positive = requested
    else:
        raise DataError(f"{origin}: [data] positive_label = {requested!r} is not a class; the classes are: "
                        + ", ".join(repr(n) for n in data.label_names))
    return dataclasses.replace(data, positive_label=positive)
