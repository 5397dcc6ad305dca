"""Deterministic, stratified train / validation / test splits for data that has none.

Why not ``sklearn.model_selection.train_test_split``? Three properties matter here that it does
not give together:

* **Order independence.** Each row's place is decided by a keyed hash of its text (and the
  seed), not by its position, so shuffling or re-reading the file gives the same split, and a
  study's cache fingerprint stays valid.
* **No leakage through duplicates.** Real corpora repeat texts (RedditBias has the same comment
  in several files). All copies of one text land in the same split, so a test score is never
  inflated by a memorised training example.
* **Exact stratification.** Within each stratum (label x group by default) the rows are ordered
  by their hash and cut at the requested fractions, so every stratum is split in the requested
  proportions up to one row (plus the few rows moved to keep duplicates together).

Strata too small to split (fewer than ``ceil(1 / f)`` rows, where ``f`` is the smallest
non-zero validation/test fraction; 10 rows for 0.8/0.1/0.1) go entirely to ``train``: a split
that got zero or one such row could not measure anything for that stratum anyway.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fairfront.objectives.data.datasets._dataset import SPLITS

__all__ = ["stratified_split", "group_stratified_split", "check_fractions"]

_ORDER = {name: i for i, name in enumerate(SPLITS)}


def stratified_split(frame: pd.DataFrame, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                     stratify: Sequence[str] = ("label", "group")) -> pd.DataFrame:
    """Return a copy of ``frame`` with a ``split`` column (``train`` / ``validation`` / ``test``).

    Args:
        frame: Rows to split. The hash key is the ``text`` column when there is one, otherwise
            all columns of the row.
        fractions: Shares of (train, validation, test); non-negative, summing to 1, train > 0.
        seed: Different seeds give different (equally stratified) splits; the same seed always
            gives the same split for the same rows, whatever their order.
        stratify: Columns whose combinations are split separately; missing values (``<NA>``
            groups) form their own stratum. ``()`` splits the frame as one stratum.

    Returns:
        A copy of ``frame``, same index and row order, with ``split`` added (or replaced).

    Raises:
        ValueError: bad ``fractions`` or a ``stratify`` column that is not in ``frame``.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": ["a", "b"] * 50})
        >>> out = stratified_split(frame, seed=1, stratify=("label",))
        >>> out["split"].value_counts().sort_index().to_dict()
        {'test': 10, 'train': 80, 'validation': 10}
    """
    fracs = check_fractions(fractions)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    stratify = [stratify] if isinstance(stratify, str) else list(stratify)
    missing = [c for c in stratify if c not in frame.columns]
    if missing:
        raise ValueError(f"stratify column(s) {', '.join(map(repr, missing))} are not in the frame; "
                         f"columns are: {', '.join(map(str, frame.columns))}")
    out = frame.copy()
    n = len(out)
    if n == 0:
        out["split"] = pd.Series([], dtype="string", index=out.index)
        return out

    # Each distinct text is one unit, hashed once; equal texts share a code and so a split.
    codes, uniques = pd.factorize(np.asarray(_row_keys(out.drop(columns=["split"], errors="ignore")), dtype=object))
    unit_hash = np.fromiter((_hash(seed, k) for k in uniques), dtype=np.uint64, count=len(uniques))
    if stratify:
        strata, _ = pd.factorize(_joined(out[stratify], na="\x00<NA>"))
    else:
        strata = np.zeros(n, dtype=np.int64)

    positive = [f for f in fracs[1:] if f > 0]
    min_rows = math.ceil(1.0 / min(positive) - 1e-9) if positive else 1
    bounds = np.cumsum(fracs)[:2]
    assign = np.zeros(n, dtype=np.int8)
    for rows in pd.Series(strata).groupby(strata, sort=False).indices.values():
        if len(rows) < min_rows:
            continue  # too small to split: all train
        units, inverse, sizes = np.unique(codes[rows], return_inverse=True, return_counts=True)
        # Units in hash order; two different texts with one 64-bit hash (~never) are ordered by text.
        hashes = unit_hash[units]
        if len(np.unique(hashes)) < len(units):
            order = np.lexsort((uniques[units].astype(str), hashes))
        else:
            order = np.argsort(hashes, kind="stable")
        # A unit goes where the middle of its block of rows falls on the cumulative scale.
        ordered_sizes = sizes[order]
        mid = (np.cumsum(ordered_sizes) - ordered_sizes / 2.0) / len(rows)
        per_unit = np.empty(len(units), dtype=np.int8)
        per_unit[order] = np.searchsorted(bounds, mid, side="right")
        assign[rows] = per_unit[inverse]

    # A text found in several strata (e.g. the same comment under two labels or groups) goes to
    # the earliest split any of its copies got, so it never sits on both sides of a split.
    earliest = np.full(len(uniques), len(SPLITS) - 1, dtype=np.int8)
    np.minimum.at(earliest, codes, assign)
    out["split"] = pd.Series(np.asarray(SPLITS, dtype=object)[earliest[codes]], index=out.index, dtype="string")
    return out


def group_stratified_split(frame: pd.DataFrame, unit_column: str, *, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                           seed: int = 0, stratify: str = "label") -> pd.DataFrame:
    """Split so that rows sharing ``unit_column`` (a template, an author, a thread) share a split.

    Rows of one unit in two splits leak: a model tested on an author it was trained on scores
    too well. Units are assigned whole, greedily, like scikit-learn's ``StratifiedGroupKFold``:
    largest unit first (ties in a seeded hash order), each to the split where adding its label
    counts brings the per-split label counts closest to ``fractions`` of the totals (squared
    error, each label weighted by ``1 / its count`` so a rare label is kept as stratified as a
    common one). A row with no value in ``unit_column`` is a unit of its own text.

    Args:
        frame: Rows to split; must hold ``unit_column`` and ``stratify``.
        unit_column: The column whose equal values must share a split.
        fractions: Shares of (train, validation, test), as in :func:`stratified_split`.
        seed: Orders units of equal size; the same seed gives the same split whatever the row order.
        stratify: The column whose distribution each split should keep.

    Returns:
        A copy of ``frame`` with a ``split`` column.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"text": [f"t{i}" for i in range(60)], "label": ["a", "b"] * 30,
        ...                       "author": [i // 3 for i in range(60)]})
        >>> out = group_stratified_split(frame, "author")
        >>> bool(out.groupby("author")["split"].nunique().eq(1).all())
        True
    """
    fracs = np.asarray(check_fractions(fractions))
    for column in (unit_column, stratify):
        if column not in frame.columns:
            raise ValueError(f"column {column!r} is not in the frame; columns are: "
                             f"{', '.join(map(str, frame.columns))}")
    out = frame.copy()
    if len(out) == 0:
        out["split"] = pd.Series([], dtype="string", index=out.index)
        return out
    units = out[unit_column].astype("string")
    texts = pd.Series(_row_keys(out), index=out.index, dtype="string")
    keys = np.where(units.isna(), "\x00text\x1f" + texts, "\x01" + units.fillna(""))
    unit_codes, unit_keys = pd.factorize(np.asarray(keys, dtype=object))
    label_codes, _ = pd.factorize(out[stratify].astype("string").fillna("\x00<NA>"))
    counts = np.zeros((len(unit_keys), label_codes.max() + 1))
    np.add.at(counts, (unit_codes, label_codes), 1.0)
    totals = counts.sum(axis=0)
    target = fracs[:, None] * totals[None, :]
    current = np.zeros_like(target)
    hashes = np.fromiter((_hash(seed, str(k)) for k in unit_keys), dtype=np.uint64, count=len(unit_keys))
    order = np.lexsort((hashes, -counts.sum(axis=1)))
    allowed = fracs > 0
    assign = np.zeros(len(unit_keys), dtype=np.int8)
    for u in order:
        add = counts[u]
        delta = (add * (2.0 * (current - target) + add) / totals).sum(axis=1)
        best = int(np.argmin(np.where(allowed, delta, np.inf)))
        assign[u] = best
        current[best] += add
    out["split"] = pd.Series(np.asarray(SPLITS, dtype=object)[assign[unit_codes]], index=out.index, dtype="string")
    return out


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        fracs = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be three numbers (train, validation, test), got {fractions!r}") from None
    if len(fracs) != 3 or any(not math.isfinite(f) or f < 0 for f in fracs):
        raise ValueError(f"fractions must be three non-negative numbers (train, validation, test), got {fractions!r}")
    if abs(sum(fracs) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fracs):g})")
    if fracs[0] <= 0:
        raise ValueError(f"the train fraction must be positive, got {fractions!r}")
    return fracs  # type: ignore[return-value]


def _row_keys(frame: pd.DataFrame) -> list[str]:
    if "text" in frame.columns:
        return frame["text"].astype("string").fillna("").tolist()
    return _joined(frame, na="").tolist()


def _joined(frame: pd.DataFrame, *, na: str) -> np.ndarray:
    """Each row's values as one string (vectorised; row-wise ``agg`` is slow on big frames)."""
    columns = [frame[c].astype("string").fillna(na) for c in frame.columns]
    joined = columns[0]
    for column in columns[1:]:
        joined = joined + "\x1f" + column
    return joined.to_numpy(dtype=object)


def _hash(seed: int, key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8,
                             key=str(int(seed)).encode()).digest()
    return int.from_bytes(digest, "little")
