"""A user's own data file (CSV, TSV, JSONL, JSON, Parquet) as a :class:`TextDataset`.

The file keeps its own column names; the study file says which column is the text, the label,
and optionally the protected group and the split. Missing text or label values are refused
rather than dropped, so the number of examples a study reports is the number in the file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fairfront.errors import DataError
from fairfront.objectives.data.datasets._dataset import TextDataset, string_column
from fairfront.objectives.data.datasets._split import group_stratified_split, stratified_split
from fairfront.objectives.measures.group_fairness import intersection_labels

__all__ = ["FORMATS", "SPLIT_ALIASES", "load_table"]

FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
"""File endings :func:`load_table` reads, and the format each one means."""

SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "development": "validation",
    "test": "test", "testing": "test",
}
"""Split names found in the wild (case-insensitive) and the fairfront split each one maps to."""

_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


def load_table(path: str | os.PathLike[str], *, text_column: str, label_column: str,
               group_column: str | Sequence[str] | None = None,
               split_column: str | None = None, seed: int = 0, split_group_column: str | None = None) -> TextDataset:
    """Read a table of labelled texts, choosing the format by the file ending.

    Formats: ``.csv`` (comma-separated, quoted fields), ``.tsv`` (tab-separated **without**
    quoting, the convention of GLUE / GAP style corpora, where a quote character is text),
    ``.jsonl`` (one JSON object per line), ``.json`` (an array of objects, or any layout pandas'
    ``read_json`` reads), ``.parquet``; each may be compressed (``.csv.gz`` ...). Only an empty
    cell counts as missing in CSV / TSV, so a text or group reading ``NA`` stays a string.

    Label names are the distinct label values, in numeric order when all of them are integers
    (``0, 1, 2``) and in alphabetical order otherwise; group names are sorted likewise. Without a
    ``split_column`` the rows are split 80/10/10 by :func:`stratified_split` on label x group.

    Args:
        path: The file.
        text_column: Column holding the text.
        label_column: Column holding the class (any type; used as a string).
        group_column: Column holding the protected attribute; empty cells are ``<NA>``. Several
            columns (several attributes) give intersectional groups such as ``female&black``
            (:func:`~fairfront.objectives.measures.group_fairness.intersection_labels`); a row
            missing any of them has no group.
        split_column: Column holding the split; values such as ``train``, ``dev``, ``valid``,
            ``validation``, ``test`` (see :data:`SPLIT_ALIASES`).
        seed: Seed of the stratified split when there is no ``split_column``.
        split_group_column: Rows sharing its value land in the same split
            (:func:`group_stratified_split`, stratified by label as far as whole units allow).

    Raises:
        DataError: the file is missing or unreadable, a named column is missing (the message
            lists the columns that exist), a text or label is empty, or a split value is unknown.

    Example:
        >>> data = load_table("reviews.csv", text_column="review", label_column="stars",
        ...                   group_column="author_gender")  # doctest: +SKIP
        >>> data.frame.columns.tolist()[:4]  # doctest: +SKIP
        ['text', 'label', 'group', 'split']
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    raw = read_table(path)
    return build_dataset(path.stem, raw, origin=path.name, text_column=text_column, label_column=label_column,
                         group_column=group_column, split_column=split_column, seed=seed,
                         split_group_column=split_group_column)


def read_table(path: Path) -> pd.DataFrame:
    """The raw table of ``path`` in its own columns (strings as read, for CSV and TSV)."""
    name = path.name.lower()
    for ending in _COMPRESSION:
        if name.endswith(ending):
            name = name[: -len(ending)]
    fmt = FORMATS.get(Path(name).suffix)
    if fmt is None:
        raise DataError(f"{path.name}: unsupported file type; allowed endings: {', '.join(FORMATS)}")
    try:
        if fmt in ("csv", "tsv"):
            return pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                               na_values=[""], quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if fmt == "json":
            return pd.read_json(path, dtype=False)
        return pd.read_parquet(path)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any parser failure is a problem with the user's file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path.name}: cannot read it as {fmt.upper()}: {first}") from err


def build_dataset(name: str, raw: pd.DataFrame, *, origin: str, text_column: str, label_column: str,
                  group_column: str | Sequence[str] | None, split_column: str | None, seed: int,
                  label_names: Sequence[str] | None = None, group_names: Sequence[str] | None = None,
                  citation: str = "", fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  split_group_column: str | None = None) -> TextDataset:
    """Turn a raw table with named columns into a :class:`TextDataset` (shared by the loaders)."""
    group_columns = [group_column] if isinstance(group_column, str) or group_column is None else list(group_column)
    for role, column in (("text_column", text_column), ("label_column", label_column),
                         *(("group_column", c) for c in group_columns), ("split_column", split_column),
                         ("split_group_column", split_group_column)):
        if column is not None and column not in raw.columns:
            raise DataError(f"{origin}: no column {column!r} ({role}); columns are: "
                            f"{', '.join(map(str, raw.columns))}")
    text = string_column(raw[text_column])
    label = string_column(raw[label_column])
    for role, column, values in (("text", text_column, text), ("label", label_column, label)):
        empty = values.isna() | (values.str.strip() == "")
        if bool(empty.any()):
            first = int(empty.to_numpy().nonzero()[0][0]) + 1
            raise DataError(f"{origin}: {int(empty.sum())} row(s) have no {role} in column {column!r} "
                            f"(first: data row {first}); remove or fill them")
    if len(group_columns) > 1:
        group = pd.Series(intersection_labels([string_column(raw[c]) for c in group_columns]), index=raw.index,
                          dtype="string")
    else:
        group = (string_column(raw[group_column]) if group_column is not None
                 else pd.Series(pd.NA, index=range(len(raw)), dtype="string"))
    frame = pd.DataFrame({"text": text, "label": label, "group": group})
    if split_column is not None:
        frame["split"] = _map_splits(string_column(raw[split_column]), origin, split_column)
    elif split_group_column is not None:
        frame["unit"] = string_column(raw[split_group_column])
        frame = group_stratified_split(frame, "unit", fractions=fractions, seed=seed).drop(columns=["unit"])
    else:
        frame = stratified_split(frame, fractions=fractions, seed=seed)
    names = tuple(label_names) if label_names is not None else ordered_names(frame["label"])
    groups = tuple(group_names) if group_names is not None else ordered_names(frame["group"])
    return TextDataset(name=name, frame=frame, label_names=names, group_names=groups, citation=citation)


def ordered_names(values: pd.Series) -> tuple[str, ...]:
    """Distinct non-missing values, numerically ordered when all are integers, else sorted."""
    distinct = [str(v) for v in pd.unique(values.dropna())]
    try:
        return tuple(sorted(distinct, key=int))
    except ValueError:
        return tuple(sorted(distinct))


def _map_splits(values: pd.Series, origin: str, column: str) -> pd.Series:
    mapped = values.str.strip().str.lower().map(SPLIT_ALIASES)
    bad = values[mapped.isna()]
    if len(bad):
        shown = ", ".join(repr(v) for v in pd.unique(bad.astype(object))[:5])
        raise DataError(f"{origin}: split column {column!r} has value(s) {shown}; allowed: "
                        f"{', '.join(SPLIT_ALIASES)}")
    return mapped.astype("string")
