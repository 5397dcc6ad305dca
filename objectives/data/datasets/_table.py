"""A user's own data file (CSV, TSV, JSONL, JSON, Parquet) as a :class:`TextDataset`.

The file keeps its own column names; the study file says which column is the text, the label,
and optionally the protected group and the split. Missing text or label values are refused
rather than dropped, so the number of examples a study reports is the number in the file.
"""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fairfront.errors import DataError
from fairfront.objectives.data.datasets._dataset import TextDataset, string_column
from fairfront.objectives.data.datasets._membership import membership_pattern, read_membership
from fairfront.objectives.data.datasets._split import group_stratified_split, stratified_split
from fairfront.objectives.measures.group_fairness import intersection_labels

__all__ = ["FORMATS", "SPLIT_ALIASES", "ReadOptions", "load_table", "read_table", "row_locator", "delimiter_hint",
           "file_format"]

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

_DELIMITERS = {"\t": '"\\t"', ";": '";"', "|": '"|"', ",": '","'}
"""Delimiters a one-column header may reveal, and how a study file writes each one."""


@dataclass(frozen=True)
class ReadOptions:
    """How a CSV / TSV file is read (``[data] sep``, ``encoding``, ``quote``); None = the format's default.

    Defaults: ``,`` for ``.csv`` and a tab for ``.tsv``; UTF-8; ``"`` quotes fields in a CSV, a
    TSV has no quoting. ``quote = ""`` turns quoting off.
    """

    sep: str | None = None
    encoding: str | None = None
    quote: str | None = None

    def problem(self) -> tuple[str, str] | None:
        """``(option, what is allowed)`` for the first option that cannot work, else None."""
        if self.sep is not None and len(self.sep) != 1:
            return "sep", "one character, e.g. \";\" or \"\\t\""
        if self.quote is not None and len(self.quote) > 1:
            return "quote", "one character, or \"\" for no quoting"
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                return "encoding", "a known encoding, e.g. \"utf-8\", \"latin-1\", \"cp1252\", \"utf-16\""
        return None

    def csv_kwargs(self, fmt: str) -> dict:
        """``pandas.read_csv`` keywords for a ``csv`` or ``tsv`` file."""
        quote = self.quote if self.quote is not None else ('"' if fmt == "csv" else "")
        return {"sep": self.sep or ("," if fmt == "csv" else "\t"), "encoding": self.encoding or "utf-8",
                "quoting": csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE, "quotechar": quote or '"'}


def file_format(path: Path) -> str | None:
    """The format of ``path`` from its ending (compression endings ignored), or None."""
    name = path.name.lower()
    for ending in _COMPRESSION:
        if name.endswith(ending):
            name = name[: -len(ending)]
    return FORMATS.get(Path(name).suffix)


def row_locator(path: Path) -> Callable[[int], str]:
    """How a 0-based data row is found in the file: its 1-based line for text formats (after a header)."""
    fmt = file_format(path)
    if fmt in ("csv", "tsv"):
        return lambda row: f"line {row + 2}"
    if fmt == "jsonl":
        return lambda row: f"line {row + 1}"
    return lambda row: f"row {row + 1}"


def delimiter_hint(columns: Sequence[object]) -> str:
    """A hint when a one-column header holds another delimiter (the file was split on the wrong one)."""
    if len(columns) != 1:
        return ""
    name = str(columns[0])
    for char, shown in _DELIMITERS.items():
        if char in name:
            return f" (the header is one column containing {shown}: set [data] sep = {shown})"
    return ""


def load_table(path: str | os.PathLike[str], *, text_column: str, label_column: str,
               group_column: str | Sequence[str] | None = None,
               split_column: str | None = None, seed: int = 0, read: ReadOptions = ReadOptions(),
               label_bins: Sequence[float] | None = None, split_group_column: str | None = None,
               group_membership: Sequence[str] | None = None,
               membership_names: Sequence[str] | None = None) -> TextDataset:
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
        read: Delimiter, encoding and quote character of a CSV / TSV file.
        label_bins: Thresholds that turn numeric labels into classes ``"0"``, ``"1"``, ...
            (a value equal to a threshold goes to the upper class); without it a label column
            holding fractions is refused.
        split_group_column: Rows sharing its value land in the same split
            (:func:`group_stratified_split`, stratified by label as far as whole units allow).
        group_membership: One 0/1 (or true/false) column per group, instead of ``group_column``:
            groups that overlap (a multi-hot :class:`TextDataset`); the split is stratified by
            label x each row's set of groups.
        membership_names: The group name of each ``group_membership`` column (default: its name).

    Raises:
        DataError: the file is missing or unreadable, a named column is missing (the message
            lists the columns that exist), a text or label is empty, a label is a fraction
            without ``label_bins``, or a split value is unknown. The message names the first
            offending row by its line in the file.

    Example:
        >>> data = load_table("reviews.csv", text_column="review", label_column="stars",
        ...                   group_column="author_gender")  # doctest: +SKIP
        >>> data.frame.columns.tolist()[:4]  # doctest: +SKIP
        ['text', 'label', 'group', 'split']
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    raw = read_table(path, read)
    where = row_locator(path)
    if label_column in raw.columns:
        raw = _numeric_labels(raw, path.name, label_column, label_bins, where)
    return build_dataset(path.stem, raw, origin=path.name, text_column=text_column, label_column=label_column,
                         group_column=group_column, split_column=split_column, seed=seed, where=where,
                         split_group_column=split_group_column, group_membership=group_membership,
                         membership_names=membership_names)


def _numeric_labels(raw: pd.DataFrame, origin: str, column: str, label_bins: Sequence[float] | None,
                    where: Callable[[int], str]) -> pd.DataFrame:
    """Numeric labels as classes: binned by ``label_bins``, whole numbers as ``"1"`` (not ``"1.0"``),
    fractions refused (empty labels are left for :func:`build_dataset` to refuse)."""
    from fairfront.objectives.data.labels import bin_labels, integral_labels

    labels = string_column(raw[column])
    mask = (labels.notna() & (labels.str.strip() != "")).fillna(False).to_numpy(dtype=bool)
    kept = labels[mask]

    def locate(i: int) -> str:
        return where(int(kept.index[i]))

    if label_bins is None:
        classes = integral_labels(kept, origin=origin, column=column, where=locate)
    else:
        classes = bin_labels(kept, label_bins, origin=origin, column=column, where=locate)
    if classes is None:
        return raw
    values = labels.astype(object).to_numpy(copy=True)
    values[mask] = classes.to_numpy(dtype=object)
    out = raw.reset_index(drop=True).copy()
    out[column] = pd.Series(values, dtype="string")
    return out


def read_table(path: Path, read: ReadOptions = ReadOptions()) -> pd.DataFrame:
    """The raw table of ``path`` in its own columns (strings as read, for CSV and TSV)."""
    fmt = file_format(path)
    if fmt is None:
        raise DataError(f"{path.name}: unsupported file type; allowed endings: {', '.join(FORMATS)}")
    try:
        if fmt in ("csv", "tsv"):
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], **read.csv_kwargs(fmt))
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if fmt == "json":
            return pd.read_json(path, dtype=False)
        return pd.read_parquet(path)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any parser failure is a problem with the user's file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "; set [data] encoding (e.g. \"latin-1\")" if isinstance(err, UnicodeDecodeError) else ""
        raise DataError(f"{path.name}: cannot read it as {fmt.upper()}: {first}{hint}") from err


def build_dataset(name: str, raw: pd.DataFrame, *, origin: str, text_column: str, label_column: str,
                  group_column: str | Sequence[str] | None, split_column: str | None, seed: int,
                  label_names: Sequence[str] | None = None, group_names: Sequence[str] | None = None,
                  citation: str = "", fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  where: Callable[[int], str] | None = None,
                  split_group_column: str | None = None, group_membership: Sequence[str] | None = None,
                  membership_names: Sequence[str] | None = None) -> TextDataset:
    """Turn a raw table with named columns into a :class:`TextDataset` (shared by the loaders).

    ``where`` names a 0-based row's place in the file for messages (default: ``data row N``).
    """
    where = where or (lambda row: f"data row {row + 1}")
    group_columns = [group_column] if isinstance(group_column, str) or group_column is None else list(group_column)
    members = list(group_membership or ())
    for role, column in (("text_column", text_column), ("label_column", label_column),
                         *(("group_column", c) for c in group_columns), ("split_column", split_column),
                         ("split_group_column", split_group_column), *(("group_membership", c) for c in members)):
        if column is not None and column not in raw.columns:
            raise DataError(f"{origin}: no column {column!r} ({role}); columns are: "
                            f"{', '.join(map(str, raw.columns))}{delimiter_hint(list(raw.columns))}")
    text = string_column(raw[text_column])
    label = string_column(raw[label_column])
    for role, column, values in (("text", text_column, text), ("label", label_column, label)):
        empty = values.isna() | (values.str.strip() == "")
        if bool(empty.any()):
            first = int(empty.to_numpy().nonzero()[0][0])
            raise DataError(f"{origin}: {int(empty.sum())} row(s) have an empty {role} in column {column!r} "
                            f"(first: {where(first)}); remove or fill them")
    if len(group_columns) > 1:
        group = pd.Series(intersection_labels([string_column(raw[c]) for c in group_columns]), index=raw.index,
                          dtype="string")
    else:
        group = (string_column(raw[group_column]) if group_column is not None
                 else pd.Series(pd.NA, index=range(len(raw)), dtype="string"))
    frame = pd.DataFrame({"text": text, "label": label, "group": group})
    if members:
        member_names = list(membership_names or members)
        flags = read_membership(raw.reset_index(drop=True), members, member_names, origin=origin, where=where)
        frame = pd.concat([frame, flags], axis=1)
        frame["pattern"] = membership_pattern(frame, member_names)
    if split_column is not None:
        frame["split"] = _map_splits(string_column(raw[split_column]), origin, split_column)
    elif split_group_column is not None:
        frame["unit"] = string_column(raw[split_group_column])
        frame = group_stratified_split(frame, "unit", fractions=fractions, seed=seed).drop(columns=["unit"])
    else:
        frame = stratified_split(frame, fractions=fractions, seed=seed,
                                 stratify=("label", "pattern") if members else ("label", "group"))
    frame = frame.drop(columns=["pattern"], errors="ignore")
    names = tuple(label_names) if label_names is not None else ordered_names(frame["label"])
    if members:
        return TextDataset(name=name, frame=frame, label_names=names, group_names=tuple(member_names),
                           citation=citation, multi_hot=True)
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
