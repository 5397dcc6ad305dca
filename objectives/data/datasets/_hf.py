"""Data through 🤗 ``datasets``: a dataset name, or a local folder / file it can read offline.

A ``datasets`` dataset already knows its splits, and often its class names (a ``ClassLabel``
feature). Both are kept: the splits are mapped onto train / validation / test by name, and a
``ClassLabel`` column gives its names *in its own order*, so class ids match the dataset card.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from fairfront.errors import DataError
from fairfront.objectives.data.datasets._dataset import TextDataset
from fairfront.objectives.data.datasets._split import stratified_split
from fairfront.objectives.data.datasets._table import SPLIT_ALIASES, build_dataset

if TYPE_CHECKING:
    import datasets

__all__ = ["load_hf"]

_SPLIT_COLUMN = "__fairfront_split__"


def load_hf(name_or_path: str | os.PathLike[str], *, text_column: str, label_column: str,
            group_column: str | None = None, split: str | None = None, seed: int = 0) -> TextDataset:
    """Load a dataset with ``datasets.load_dataset`` and map it onto train / validation / test.

    Split handling:

    * ``split=None``: every split the dataset has is used, mapped by name (``train``;
      ``validation`` / ``valid`` / ``dev``; ``test``; see :data:`SPLIT_ALIASES`). A dataset
      with only a ``train`` split is divided 80/10/10 by :func:`stratified_split`; a missing
      validation or test split is carved from ``train`` (1/9 of it, stratified, so the shares
      stay near 80/10/10). Split names that map to none of the three (``unsupervised``, ...),
      or no train split at all, are an error: pass ``split``.
    * ``split="<name>"`` (any ``datasets`` split expression, e.g. ``"train"`` or
      ``"train[:2000]"``): only that data is loaded and it is divided 80/10/10.

    Args:
        name_or_path: A ``datasets`` name, a local folder of data files, a single data file
            (``.csv``, ``.tsv``, ``.jsonl``, ``.json``, ``.parquet``), or a folder written by
            ``save_to_disk``; local data works offline.
        text_column: Column holding the text.
        label_column: Column holding the class; a ``ClassLabel`` gives the class names.
        group_column: Column holding the protected attribute (``ClassLabel`` names are used too).
        split: One split to load and divide, or None for the dataset's own splits.
        seed: Seed of any stratified split made here.

    Raises:
        DataError: the dataset cannot be loaded, a column is missing, or a split name is unknown.

    Example:
        >>> data = load_hf("path/to/folder_with_train_and_test_csv", text_column="sentence",
        ...                label_column="label")  # doctest: +SKIP
    """
    target = os.fspath(name_or_path)
    loaded = _load(target, split)
    parts: Mapping[str, datasets.Dataset] = {"train": loaded} if split is not None else dict(loaded)
    if not parts:
        raise DataError(f"dataset {target!r} has no splits")
    features = next(iter(parts.values())).features
    for role, column in (("text_column", text_column), ("label_column", label_column),
                         ("group_column", group_column)):
        if column is not None and column not in features:
            raise DataError(f"{target}: no column {column!r} ({role}); columns are: {', '.join(features)}")
    mapped = _map_splits(parts, target, split)
    raw = _joined_frame(parts, mapped, [c for c in (text_column, label_column, group_column) if c])
    label_names = _class_names(features, label_column)
    group_names = _class_names(features, group_column) if group_column else None
    for column, names in ((label_column, label_names), (group_column, group_names)):
        if names is not None:
            raw[column] = raw[column].map(lambda i, names=names: names[i] if i is not None and i >= 0 else None)

    present = set(mapped.values())
    if "train" not in present:
        raise DataError(f"{target}: has no train split (its splits: {', '.join(parts)}); "
                        "pass split= to load one of them and divide it")
    data = build_dataset(os.path.basename(target.rstrip("/\\")) or target, raw, origin=target,
                         text_column=text_column, label_column=label_column, group_column=group_column,
                         split_column=_SPLIT_COLUMN if present != {"train"} else None, seed=seed,
                         label_names=label_names, group_names=group_names)
    if present != {"train"} and present != {"train", "validation", "test"}:
        data = _carve_missing_splits(data, present, seed)
    return data


def _load(target: str, split: str | None) -> datasets.Dataset | datasets.DatasetDict:
    """The data at ``target`` (one split of it where ``split`` is given); any failure is a :class:`DataError`."""
    import datasets  # imported here: it is slow to import and only this loader needs it

    args, kwargs = _load_arguments(target)
    try:
        if _saved_to_disk(target):
            loaded = datasets.load_from_disk(target)
            if split is not None:
                if not isinstance(loaded, datasets.DatasetDict) or split not in loaded:
                    raise DataError(f"{target}: no split {split!r} in this saved dataset")
                loaded = loaded[split]
            elif isinstance(loaded, datasets.Dataset):
                loaded = datasets.DatasetDict({"train": loaded})
        else:
            loaded = datasets.load_dataset(*args, split=split, **kwargs)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure means the data cannot be used
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"cannot load dataset {target!r} with datasets.load_dataset: {first}") from err
    return loaded


def _map_splits(parts: Mapping[str, datasets.Dataset], target: str, split: str | None) -> dict[str, str]:
    """Each of the dataset's split names -> train / validation / test (all ``train`` for one loaded ``split``)."""
    mapped: dict[str, str] = {}
    for part_name in parts:
        fair = SPLIT_ALIASES.get(part_name.strip().lower()) if split is None else "train"
        if fair is None or fair in mapped.values():
            raise DataError(f"{target}: cannot map its splits ({', '.join(parts)}) onto train/validation/test; "
                            "pass split= to load one of them and divide it")
        mapped[part_name] = fair
    return mapped


def _joined_frame(parts: Mapping[str, datasets.Dataset], mapped: Mapping[str, str], columns: list[str]
                  ) -> pd.DataFrame:
    """The ``columns`` of every split in one frame, each row's mapped split in :data:`_SPLIT_COLUMN`."""
    frames = []
    for part_name, part in parts.items():
        frame = part.select_columns(columns).to_pandas()
        frame[_SPLIT_COLUMN] = mapped[part_name]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _carve_missing_splits(data: TextDataset, present: set[str], seed: int) -> TextDataset:
    """Carve the missing validation or test split out of train (1/9 of it, stratified)."""
    fractions = (8 / 9, 0.0 if "validation" in present else 1 / 9, 0.0 if "test" in present else 1 / 9)
    fractions = (1.0 - sum(fractions[1:]), fractions[1], fractions[2])
    frame = data.frame.copy()
    train = frame["split"] == "train"
    frame.loc[train, "split"] = stratified_split(frame[train], fractions=fractions, seed=seed)["split"]
    return TextDataset(name=data.name, frame=frame, label_names=data.label_names,
                       group_names=data.group_names, citation="")


def _saved_to_disk(target: str) -> bool:
    """Whether ``target`` is a folder written by ``Dataset(Dict).save_to_disk``."""
    return os.path.isdir(target) and any(os.path.isfile(os.path.join(target, f))
                                         for f in ("dataset_dict.json", "state.json"))


def _load_arguments(target: str) -> tuple[tuple[str, ...], dict]:
    """``load_dataset`` arguments: a single local data file goes through its packaged builder."""
    if not os.path.isfile(target):
        return (target,), {}
    name = target.lower()
    for ending, builder, extra in ((".csv", "csv", {}), (".tsv", "csv", {"delimiter": "\t"}),
                                   (".jsonl", "json", {}), (".json", "json", {}), (".parquet", "parquet", {}),
                                   (".txt", "text", {})):
        if name.endswith(ending) or name.endswith(ending + ".gz"):
            return (builder,), {"data_files": target, **extra}
    raise DataError(f"{target}: a single file must end in .csv, .tsv, .jsonl, .json, .parquet or .txt")


def _class_names(features, column: str) -> tuple[str, ...] | None:
    from datasets import ClassLabel

    feature = features[column]
    return tuple(feature.names) if isinstance(feature, ClassLabel) else None
