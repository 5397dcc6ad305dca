"""Overlapping groups: one 0/1 column per group, a row in several groups or in none (multi-hot).

Corpora such as the Measuring Hate Speech corpus mark each comment's targets with one flag per
group (``target_race_black``, ``target_gender_women``, ...): a comment may target several groups
or none, so the groups cannot be one label per row. A :class:`TextDataset` then keeps its
``group`` column empty and carries one boolean column per group (:func:`member_column`); the
group measures count a row once in every group it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from fairfront.errors import DataError

__all__ = ["MEMBER_PREFIX", "member_column", "read_membership", "membership_matrix", "membership_pattern",
           "group_display_names"]

MEMBER_PREFIX = "member:"
"""Frame columns holding one group's membership flags are named ``member:<group>``."""

_TRUE = frozenset({"1", "true", "1.0"})
_FALSE = frozenset({"0", "false", "0.0"})


def member_column(group: str) -> str:
    """The frame column holding the membership flags of ``group``."""
    return MEMBER_PREFIX + group


def group_display_names(columns: Sequence[str], prefix: str | None) -> tuple[str, ...]:
    """Each membership column's group name: the column name, less ``prefix`` where it starts with it."""
    if not prefix:
        return tuple(columns)
    return tuple(c[len(prefix):] if c.startswith(prefix) and len(c) > len(prefix) else c for c in columns)


def read_membership(raw: pd.DataFrame, columns: Sequence[str], names: Sequence[str], *, origin: str,
                    where: Callable[[int], str]) -> pd.DataFrame:
    """The flags of ``columns`` as booleans, one frame column per group (:func:`member_column` of ``names``).

    Accepts 0 / 1 and true / false (any case, as numbers, booleans or text).

    Raises:
        DataError: one line naming the file, the column, how many values are neither, and the first.
    """
    out = {}
    for column, name in zip(columns, names):
        values = raw[column]
        if pd.api.types.is_bool_dtype(values.dtype):
            text = values.map({True: "true", False: "false"})
        else:
            text = values.astype("string").str.strip().str.lower()
        flags = text.isin(_TRUE).to_numpy(dtype=bool)
        bad = ~(flags | text.isin(_FALSE).to_numpy(dtype=bool))
        if bad.any():
            first = int(bad.nonzero()[0][0])
            shown = "empty" if pd.isna(values.iloc[first]) else repr(values.iloc[first])
            raise DataError(f"{origin}: group membership column {column!r} has {int(bad.sum())} value(s) that are "
                            f"not 0/1 or true/false (first: {where(first)}, {shown}); allowed: 0, 1, true, false")
        out[member_column(name)] = flags
    return pd.DataFrame(out, index=raw.index)


def membership_matrix(frame: pd.DataFrame, groups: Sequence[str]) -> np.ndarray:
    """``[rows, groups]`` booleans: whether each row of ``frame`` belongs to each group."""
    if not groups:
        return np.zeros((len(frame), 0), dtype=bool)
    return np.column_stack([frame[member_column(g)].to_numpy(dtype=bool) for g in groups])


def membership_pattern(frame: pd.DataFrame, groups: Sequence[str]) -> pd.Series:
    """Each row's set of groups as one string (``<NA>`` for none): the stratum splits and subsamples keep."""
    matrix = membership_matrix(frame, groups)
    names = np.asarray(groups, dtype=object)
    pattern = ["\x1f".join(names[row]) if row.any() else None for row in matrix]
    return pd.Series(pattern, index=frame.index, dtype="string")
