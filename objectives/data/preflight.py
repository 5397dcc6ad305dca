"""Read a study's data before anything runs: refuse what would fail later, and say what will be measured.

``fairfront validate`` and ``fairfront run`` call :func:`preflight` in-process (no Ray, seconds), so
an empty label, a single class, a fraction read as 43 classes or a bias objective that no group
can define is one ``error:`` line before a study or a cache exists, not a failed trial later. The
summary it returns tells a user what the study will see: rows, classes and groups per split,
group x class counts, rows without a group, and what each bias objective is computed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairfront.errors import DataError
from fairfront.objectives.data.datasets import SPLITS, TextDataset
from fairfront.objectives.data.datasets._membership import membership_matrix
from fairfront.objectives.data.task import DataSpec, load_task
from fairfront.objectives.measures import group_fairness

__all__ = ["DataReport", "preflight", "NO_GROUP"]

NO_GROUP = "(no group)"
"""How the summary names the rows without a group."""

_OVER = {
    "tpr_gap": "true-positive rate of {pos} across groups",
    "equalized_odds_gap": "worse of the TPR and FPR spreads of {pos} across groups",
    "demographic_parity_gap": "rate of predicting {pos} across groups",
    "worst_group_error": "error of the worst group (every class)",
    "accuracy_gap": "accuracy spread across groups (every class)",
    "tpr_gap_rms": "RMS over classes present in every group of the per-class TPR spread",
    "tpr_gap_max": "largest per-class TPR spread over classes present in every group",
}
_OVER_MULTI = {"tpr_gap": "RMS over classes present in every group of the per-class TPR spread",
               "equalized_odds_gap": "RMS over classes of the worse of the TPR and FPR spreads",
               "demographic_parity_gap": "RMS over classes of the prediction-rate spread"}


@dataclass(frozen=True)
class DataReport:
    """What :func:`preflight` found: the class names, the positive class and the summary lines."""

    data: TextDataset
    lines: tuple[str, ...]

    @property
    def classes(self) -> dict:
        """``{"names": [...], "positive": name or None}``: the study's ``fairfront.classes`` attribute."""
        return {"names": list(self.data.label_names), "positive": self.data.positive_label}

    @property
    def classes_line(self) -> str:
        """One line naming the classes and the positive class."""
        names = ", ".join(repr(n) for n in self.data.label_names)
        if self.data.positive_label is None:
            return f"classes: {names} (multi-class: bias measures take each class one-vs-rest)"
        return f"classes: {names}; positive class: {self.data.positive_label!r} (set [data] positive_label to change)"


def preflight(spec: DataSpec, bias_objectives: Sequence[str] = ()) -> DataReport:
    """Load the task named by ``spec``, refuse what a study could not use, and summarise it.

    Raises:
        DataError: one line naming the data, the column, the count and the first offending row.
    """
    data = load_task(spec)
    origin = spec.origin
    frame = data.frame
    for split in SPLITS:
        if not bool((frame["split"] == split).any()):
            raise DataError(f"{origin}: the {split} split is empty ({len(frame)} rows in all); give more rows"
                            + (f" or fix [data] split_column {spec.split_column!r}" if spec.split_column else ""))
    train = data.part("train")["label"]
    if train.nunique() < 2:
        raise DataError(f"{origin}: label column {spec.label_column!r} has one class ({train.iloc[0]!r}) in all "
                        f"{len(train)} training rows; a classifier needs two or more classes")
    _check_groups(data, spec, [b for b in bias_objectives if b in group_fairness.BIAS_MEASURES])
    lines = _summary(data, bias_objectives)
    if spec.max_train is not None or spec.max_eval is not None:
        lines[0] += f" (after max_train = {spec.max_train}, max_eval = {spec.max_eval})"
    return DataReport(data, tuple(lines))


def _check_groups(data: TextDataset, spec: DataSpec, group_objectives: Sequence[str]) -> None:
    """A group bias objective needs groups whose rates the validation split defines (it is read there)."""
    if not group_objectives:
        return
    origin, name = spec.origin, group_objectives[0]
    if not data.has_groups:
        column = spec.group_column
        if column:
            why = f"group column {column!r} is empty in all {len(data.frame)} rows"
        elif spec.source in ("file", "hf"):
            why = "the data has no group column (set [data] group_column)"
        else:
            why = "this dataset has no group column with these [data.options]"
        raise DataError(f"{origin}: bias objective {name!r} compares groups, but {why}")
    grouped = _memberships(data, data.part("validation"))
    y, g = _class_ids(data, grouped), grouped["group"].astype(str).to_numpy(dtype=object)
    positive = _positive_index(data)
    for objective in group_objectives:
        value = float("nan") if len(y) == 0 else group_fairness.BIAS_MEASURES[objective](
            y, y, sensitive_features=g, pos_label=positive)
        if value != value:
            counts = _counts_text(grouped, data)
            raise DataError(f"{origin}: bias objective {objective!r} is undefined on the validation split: it needs "
                            f"{_needs(objective, data)} in two or more groups, and {_group_source(spec)} "
                            f"gives {len(grouped)} validation {_entries(data)} ({counts}); change [data] "
                            "positive_label, the split or the objective")


def _memberships(data: TextDataset, part: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``part`` with a group; where groups overlap, one row per membership (``group`` filled in)."""
    if not data.multi_hot:
        return part[part["group"].notna()]
    rows, groups = group_fairness.membership_rows(membership_matrix(part, data.group_names))
    out = part.iloc[rows].copy()
    out["group"] = np.asarray(data.group_names, dtype=object)[groups]
    return out


def _group_source(spec: DataSpec) -> str:
    if spec.group_membership is not None:
        return "group_membership " + ", ".join(repr(c) for c in spec.group_membership)
    return f"group column {spec.group_column!r}"


def _entries(data: TextDataset) -> str:
    return "membership(s)" if data.multi_hot else "row(s) with a group"


def _needs(objective: str, data: TextDataset) -> str:
    pos = data.positive_label
    if objective in ("tpr_gap", "equalized_odds_gap") and pos is not None:
        return f"rows of the positive class {pos!r}" + (" and of the other class" if "odds" in objective else "")
    if objective.startswith("tpr_gap"):
        return "rows of one same class"
    return "rows"


def _positive_index(data: TextDataset) -> int | None:
    return None if data.positive_label is None else data.label_names.index(data.positive_label)


def _class_ids(data: TextDataset, rows: pd.DataFrame) -> np.ndarray:
    index = {name: i for i, name in enumerate(data.label_names)}
    return rows["label"].map(index).to_numpy(dtype=np.int64)


def _counts_text(rows: pd.DataFrame, data: TextDataset) -> str:
    """``group: class n, class n; ...`` for the rows given (empty: ``none``)."""
    if len(rows) == 0:
        return "none"
    table = pd.crosstab(rows["group"].astype(str), rows["label"].astype(str))
    return "; ".join(f"{g}: " + ", ".join(f"{c} {int(table.loc[g, c])}" for c in table.columns)
                     for g in table.index)


def _summary(data: TextDataset, bias_objectives: Sequence[str]) -> list[str]:
    if data.multi_hot:
        return _membership_summary(data) + _measure_lines(data, bias_objectives)
    frame = data.frame
    lines = [f"data {data.name}: {len(frame)} rows, {len(data.label_names)} classes, {len(data.group_names)} groups"]
    for split in SPLITS:
        part = data.part(split)
        lines.append(f"  {split}: {len(part)} rows, {part['label'].nunique()} classes, "
                     f"{part['group'].dropna().nunique()} groups, {int(part['group'].isna().sum())} without a group")
        lines += ["    " + row for row in _crosstab(part, data).splitlines()]
        missing = [c for c in data.label_names if c not in set(part["label"])]
        missing_groups = [g for g in data.group_names if g not in set(part["group"].dropna())]
        if missing:
            lines.append(f"    missing class(es): {', '.join(missing)}")
        if missing_groups:
            lines.append(f"    missing group(s): {', '.join(missing_groups)}")
    ungrouped = int(frame["group"].isna().sum())
    if data.has_groups and ungrouped:
        lines.append(f"rows without a group: {ungrouped} (kept for training and accuracy; left out of group measures)")
    lines += _measure_lines(data, bias_objectives)
    return lines


def _membership_summary(data: TextDataset) -> list[str]:
    """Per split: each group's members, group x class counts over members, rows in no group and in several."""
    frame = data.frame
    lines = [f"data {data.name}: {len(frame)} rows, {len(data.label_names)} classes, {len(data.group_names)} "
             "overlapping groups (a row counts in every group it belongs to)"]
    for split in SPLITS:
        part = data.part(split)
        member = data.membership(split)
        per_row = member.sum(axis=1)
        counts = ", ".join(f"{g} {int(n)}" for g, n in zip(data.group_names, member.sum(axis=0)))
        lines.append(f"  {split}: {len(part)} rows, {part['label'].nunique()} classes; members: {counts}; "
                     f"{int((per_row == 0).sum())} in no group, {int((per_row > 1).sum())} in several groups")
        entries = _memberships(data, part)
        if len(entries):
            table = pd.crosstab(entries["group"], entries["label"].astype(str)).reindex(
                index=[g for g in data.group_names if g in set(entries["group"])],
                columns=list(data.label_names), fill_value=0)
            lines += ["    " + row for row in table.rename_axis(index=None, columns=None).to_string().splitlines()]
        missing = [c for c in data.label_names if c not in set(part["label"])]
        absent = [g for g, n in zip(data.group_names, member.sum(axis=0)) if n == 0]
        if missing:
            lines.append(f"    missing class(es): {', '.join(missing)}")
        if absent:
            lines.append(f"    missing group(s): {', '.join(absent)}")
    none = int((data.membership(None).sum(axis=1) == 0).sum())
    if none:
        lines.append(f"rows in no group: {none} (kept for training and accuracy; left out of group measures)")
    return lines


def _crosstab(part: pd.DataFrame, data: TextDataset) -> str:
    """Group x class counts of one split (rows without a group last)."""
    groups = part["group"].astype("string").fillna(NO_GROUP)
    table = pd.crosstab(groups, part["label"].astype(str)).reindex(columns=list(data.label_names), fill_value=0)
    order = [g for g in data.group_names if g in table.index] + ([NO_GROUP] if NO_GROUP in table.index else [])
    return table.reindex(order).rename_axis(index=None, columns=None).to_string()


def _measure_lines(data: TextDataset, bias_objectives: Sequence[str]) -> list[str]:
    lines = []
    pos = repr(data.positive_label) if data.positive_label is not None else "each class"
    for name in bias_objectives:
        if name not in group_fairness.BIAS_MEASURES:
            lines.append(f"bias objective {name}: computed from its [bias] reference, not from groups")
            continue
        text = (_OVER_MULTI.get(name) if data.positive_label is None else None) or _OVER[name]
        groups = ", ".join(data.group_names) or "none"
        rows = ("each group's members among the validation and test rows (a row in several groups counts in each)"
                if data.multi_hot else "validation and test rows with a group")
        lines.append(f"bias objective {name}: {text.format(pos=pos)}; groups {groups}; {rows}")
    return lines
