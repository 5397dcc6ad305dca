"""The one shape every loader returns: a frame of text, label, group and split.

Keeping all datasets in one shape is what lets the rest of fairfront stay dataset-agnostic: the
training loop only needs ``text`` and ``label``, the bias measures only need ``group``, and the
study only needs ``split``. Class and group *ids* are positions in :attr:`TextDataset.label_names`
and :attr:`TextDataset.group_names`, so the order of those tuples is part of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairfront.errors import DataError
from fairfront.objectives.data.datasets._membership import member_column, membership_matrix

__all__ = ["SPLITS", "TextDataset"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""The split names every dataset uses, in this order."""

_COLUMNS = ("text", "label", "group", "split")


@dataclass(frozen=True, eq=False)
class TextDataset:
    """A labelled text classification dataset with an optional protected attribute.

    Attributes:
        name: Short name used in reports and cache fingerprints (``"redditbias"``, a file stem, ...).
        frame: One row per example with the columns ``text`` (str), ``label`` (a class name from
            ``label_names``), ``group`` (a name from ``group_names``, or ``<NA>`` where the example
            has no protected attribute) and ``split`` (``"train"``, ``"validation"`` or ``"test"``).
            Other columns may follow and are ignored by fairfront.
        label_names: Class names in a fixed order; the class id of a name is its index. For the
            binary built-ins the harmful / positive class (``biased``, ``toxic``, ``positive``)
            comes last, so it is class 1.
        group_names: Group names in a fixed order (group id = index); ``()`` when the dataset has
            no protected attribute.
        citation: The paper to cite for the data (empty for a user's own file).
        group_is_proxy: True when ``group`` was derived from the text (for example an
            identity-term mention flag) rather than annotated, so reports must call it a proxy.
        positive_label: The positive class of a binary task (a name of ``label_names``), the class
            the TPR / FPR gaps are about; None until the task sets it (then class 1 is used).
        multi_hot: True when groups overlap (``[data] group_membership``): ``group`` is empty in
            every row and each group of ``group_names`` has a boolean column ``member:<group>``
            (:mod:`._membership`); a row may be in several groups or none.

    The dataclass compares by identity (``eq=False``): two frames are not meaningfully ``==``.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"text": ["good", "bad"], "label": ["pos", "neg"],
        ...                       "group": [pd.NA, pd.NA], "split": ["train", "test"]})
        >>> data = TextDataset("toy", frame, ("neg", "pos"), (), "")
        >>> data.label_ids("train").tolist()
        [1]
    """

    name: str
    frame: pd.DataFrame
    label_names: tuple[str, ...]
    group_names: tuple[str, ...]
    citation: str
    group_is_proxy: bool = False
    positive_label: str | None = None
    multi_hot: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_names", tuple(str(x) for x in self.label_names))
        object.__setattr__(self, "group_names", tuple(str(x) for x in self.group_names))
        missing = [c for c in _COLUMNS if c not in self.frame.columns]
        if missing:
            raise DataError(f"{self.name}: the frame lacks column(s) {', '.join(missing)}; "
                            f"it needs {', '.join(_COLUMNS)}")
        if not self.label_names:
            raise DataError(f"{self.name}: label_names is empty")
        _check_values(self.name, "label", self.frame["label"], self.label_names, allow_na=False)
        _check_values(self.name, "group", self.frame["group"], self.group_names, allow_na=True)
        _check_values(self.name, "split", self.frame["split"], SPLITS, allow_na=False)
        if self.multi_hot:
            _check_membership(self)
        if self.positive_label is not None and self.positive_label not in self.label_names:
            raise DataError(f"{self.name}: positive label {self.positive_label!r} is not one of the classes "
                            f"{', '.join(self.label_names)}")

    @property
    def has_groups(self) -> bool:
        """Whether the dataset has a protected attribute at all."""
        return bool(self.group_names)

    def part(self, split: str) -> pd.DataFrame:
        """The rows of one split (``"train"``, ``"validation"`` or ``"test"``), in frame order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return self.frame[self.frame["split"] == split]

    def label_ids(self, split: str | None = None) -> np.ndarray:
        """Class ids (positions in ``label_names``) of one split, or of every row when None."""
        rows = self.frame if split is None else self.part(split)
        index = {name: i for i, name in enumerate(self.label_names)}
        return rows["label"].map(index).to_numpy(dtype=np.int64)

    def membership(self, split: str | None = None) -> np.ndarray | None:
        """``[rows, groups]`` booleans of a multi-hot dataset (one split, or every row); None otherwise."""
        if not self.multi_hot:
            return None
        return membership_matrix(self.frame if split is None else self.part(split), self.group_names)

    def group_ids(self, split: str | None = None) -> np.ndarray:
        """Group ids (positions in ``group_names``) of one split, or of every row; -1 = no group."""
        rows = self.frame if split is None else self.part(split)
        index = {name: i for i, name in enumerate(self.group_names)}
        return rows["group"].map(index).fillna(-1).to_numpy(dtype=np.int64)


def _check_membership(data: TextDataset) -> None:
    """A multi-hot dataset: one boolean column per group, and no single-group column."""
    missing = [member_column(g) for g in data.group_names if member_column(g) not in data.frame.columns]
    if missing or not data.group_names:
        raise DataError(f"{data.name}: a multi-hot dataset needs one column per group; missing: "
                        f"{', '.join(missing) or 'every group'}")
    if bool(data.frame["group"].notna().any()):
        raise DataError(f"{data.name}: a multi-hot dataset keeps its groups in member columns; 'group' must be empty")


def _check_values(name: str, column: str, values: pd.Series, allowed: tuple[str, ...], *, allow_na: bool) -> None:
    present = values.dropna()
    if not allow_na and len(present) != len(values):
        raise DataError(f"{name}: column {column!r} has {len(values) - len(present)} missing value(s)")
    bad = pd.unique(present[~present.astype(str).isin(allowed)])
    if len(bad):
        shown = ", ".join(repr(str(v)) for v in bad[:5])
        raise DataError(f"{name}: column {column!r} has value(s) {shown} that are not in "
                        f"({', '.join(allowed) or 'nothing: the dataset declares no ' + column + 's'})")


def string_column(values: pd.Series | list | np.ndarray) -> pd.Series:
    """Values as pandas ``string`` dtype (missing = ``<NA>``); integral floats lose their ``.0``."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if pd.api.types.is_float_dtype(series.dtype):
        finite = series.dropna()
        if len(finite) and bool((finite == finite.round()).all()):
            series = series.astype("Int64")
    elif pd.api.types.is_bool_dtype(series.dtype):
        series = series.map({True: "true", False: "false"})
    return series.astype("string").reset_index(drop=True)
