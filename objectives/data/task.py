"""The task a study compresses for: which data, its splits, and its tokenized form.

``[data]`` in a study file names one source:

- ``source = "synthetic-occupations"``: the built-in SYNTHETIC demo task (:mod:`.synthetic`).
- ``source = "<built-in name>"``: a real dataset read in its original layout (see
  :mod:`fairfront.objectives.data.datasets`), for example ``redditbias``.
- ``source = "file"``: a CSV / TSV / JSONL / JSON / Parquet file with the named columns.
- ``source = "hf"``: a ``datasets`` name or a local dataset folder.

Everything is checked when the study file is loaded (a missing file or column is refused
before a study exists); splits are deterministic and stratified where a dataset has none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairfront._config import Table
from fairfront.errors import ConfigError, DataError
from fairfront.objectives.data import datasets as ds
from fairfront.objectives.data.synthetic import CITATION as SYNTHETIC_CITATION
from fairfront.objectives.data.synthetic import make_occupation_bios
from fairfront.objectives.measures.group_fairness import GROUP_OBJECTIVES, SMALL_GROUP_POLICIES

__all__ = ["DataSpec", "EncodedSplit", "load_task", "encode_splits", "SPLITS"]

SPLITS = ("train", "validation", "test")
SYNTHETIC = "synthetic-occupations"


@dataclass(frozen=True)
class DataSpec:
    """The ``[data]`` table, validated."""

    source: str
    path: str | None = None
    name: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    group_column: str | tuple[str, ...] | None = None
    split_column: str | None = None
    n_examples: int = 3000
    ambiguous_fraction: float = 0.25
    options: dict = field(default_factory=dict)
    max_train: int | None = None
    max_eval: int | None = None
    seed: int = 0
    min_group_size: int = 1
    small_groups: str = "exclude"
    split_group_column: str | None = None
    group_objective: str = "intersection"

    @classmethod
    def from_table(cls, t: Table, *, base_dir: Path) -> DataSpec:
        builtin = tuple(ds.DATASETS)
        allowed = (SYNTHETIC, "file", "hf") + builtin
        source = t.string("source", choices=allowed)
        kw: dict = {"source": source, "seed": t.integer("seed", 0, low=0),
                    "max_train": t.integer("max_train", None, low=10),
                    "max_eval": t.integer("max_eval", None, low=10),
                    "min_group_size": t.integer("min_group_size", 1, low=1, high=1_000_000),
                    "small_groups": t.string("small_groups", "exclude", choices=SMALL_GROUP_POLICIES),
                    "group_objective": t.string("group_objective", "intersection", choices=GROUP_OBJECTIVES)}
        if source == SYNTHETIC:
            kw["n_examples"] = t.integer("n_examples", 3000, low=50, high=1_000_000)
            kw["ambiguous_fraction"] = t.number("ambiguous_fraction", 0.25, low=0.0, high=1.0)
        elif source in ("file", "hf"):
            if source == "file":
                raw = t.string("path")
                path = Path(raw).expanduser()
                path = path if path.is_absolute() else base_dir / path
                if not path.is_file():
                    raise ConfigError(t.key("path"), raw, "an existing data file (not found: " + str(path) + ")")
                kw["path"] = str(path)
            else:
                kw["name"] = t.string("name")
            kw["text_column"] = t.string("text_column")
            kw["label_column"] = t.string("label_column")
            if source == "file" and isinstance(t.data.get("group_column"), list):
                columns = t.strings("group_column")
                kw["group_column"] = columns[0] if len(columns) == 1 else columns
            else:
                kw["group_column"] = t.string("group_column", None)
            kw["split_column"] = t.string("split_column", None)
            if source == "file":
                kw["split_group_column"] = t.string("split_group_column", None)
            if kw.get("split_group_column") is not None and kw["split_column"] is not None:
                raise ConfigError(t.key("split_group_column"), message="split_group_column makes the splits; the "
                                  "data already has them (split_column): give one of the two")
        else:
            options = t.table("options")
            allowed = ds.DATASETS[source].options
            for key in options.data:
                if key not in allowed:
                    raise ConfigError(options.key(key), message=f"unknown option of {source}; allowed: "
                                      + (", ".join(allowed) or "(none)"))
            kw["options"] = dict(options.data)
        t.done()
        spec = cls(**kw)
        if source == "file":
            spec._check_columns(t)
        return spec

    def _check_columns(self, t: Table) -> None:
        """Refuse a study file whose columns are not in the data file (read the header only)."""
        try:
            header = _read_header(Path(self.path))
        except Exception as err:  # noqa: BLE001 - any parse failure is the user's file
            raise ConfigError(t.key("path"), self.path, f"a readable CSV/TSV/JSONL/Parquet file ({err})") from None
        for key in ("text_column", "label_column", "group_column", "split_column", "split_group_column"):
            value = getattr(self, key)
            for column in value if isinstance(value, tuple) else (value,):
                if column is not None and column not in header:
                    raise ConfigError(t.key(key), column, "a column of " + Path(self.path).name + ": "
                                      + ", ".join(map(str, header)))

    @property
    def citation(self) -> str:
        return SYNTHETIC_CITATION if self.source == SYNTHETIC else ""

    def identity(self) -> dict:
        """What the prepared study's fingerprint includes: these settings and the bytes of the data on disk.

        A user's file is hashed, a built-in dataset's folder too, so editing the data (or pointing
        ``FAIRFRONT_DATA_DIR`` at a copy that differs) prepares the study again. A built-in dataset
        that cannot be found gets no digest; preparing it then fails with the loader's message.
        """
        out = dataclasses.asdict(self)
        for key in ("min_group_size", "small_groups", "group_objective"):  # measuring, not what the teacher sees
            del out[key]
        if self.split_group_column is None:  # keeps the fingerprint of studies from before the key
            del out["split_group_column"]
        if self.source == "file":
            out["content"] = ds.content_digest(self.path)
        elif self.source in ds.DATASETS:
            try:
                out["content"] = ds.content_digest(ds.dataset_folder(self.source, ds.DATASETS[self.source].folder,
                                                                     self.options.get("data_dir")))
            except DataError:
                out["content"] = None
        return out


def _read_header(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return list(pd.read_csv(path, nrows=5).columns)
    if suffix == ".tsv":
        return list(pd.read_csv(path, sep="\t", nrows=5).columns)
    if suffix in (".jsonl", ".json"):
        return list(pd.read_json(path, lines=suffix == ".jsonl").columns)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    raise ValueError(f"unsupported file type {suffix!r}; allowed: .csv .tsv .jsonl .json .parquet")


def load_task(spec: DataSpec) -> ds.TextDataset:
    """Read the data named by ``spec`` with train / validation / test splits."""
    if spec.source == SYNTHETIC:
        frame = make_occupation_bios(spec.n_examples, seed=spec.seed, ambiguous_fraction=spec.ambiguous_fraction)
        frame = ds.stratified_split(frame, seed=spec.seed)
        data = ds.TextDataset(name=SYNTHETIC, frame=frame, label_names=tuple(sorted(frame["label"].unique())),
                              group_names=tuple(sorted(frame["group"].unique())), citation=SYNTHETIC_CITATION)
    elif spec.source == "file":
        data = ds.load_table(spec.path, text_column=spec.text_column, label_column=spec.label_column,
                             group_column=spec.group_column, split_column=spec.split_column, seed=spec.seed,
                             split_group_column=spec.split_group_column)
    elif spec.source == "hf":
        data = ds.load_hf(spec.name, text_column=spec.text_column, label_column=spec.label_column,
                          group_column=spec.group_column, seed=spec.seed)
    else:
        data = ds.load_builtin(spec.source, seed=spec.seed, **spec.options)
    return _limit(data, spec)


def _limit(data: ds.TextDataset, spec: DataSpec) -> ds.TextDataset:
    """Deterministic, stratified subsample of each split (for CPU-sized studies)."""
    if spec.max_train is None and spec.max_eval is None:
        return data
    parts = []
    for split, part in data.frame.groupby("split", sort=False):
        cap = spec.max_train if split == "train" else spec.max_eval
        if cap is not None and len(part) > cap:
            strata = part["label"].astype(str) + "|" + part["group"].astype(str)
            part = part.groupby(strata, group_keys=False).sample(frac=cap / len(part), random_state=spec.seed)
        parts.append(part)
    frame = pd.concat(parts).sort_index()
    return ds.TextDataset(name=data.name, frame=frame, label_names=data.label_names, group_names=data.group_names,
                          citation=data.citation, group_is_proxy=data.group_is_proxy)


@dataclass
class EncodedSplit:
    """One tokenized split: unpadded token ids, class ids, group ids (-1 = no group)."""

    input_ids: list[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def encode_splits(data: ds.TextDataset, tokenizer, *, max_length: int) -> dict[str, EncodedSplit]:
    """Tokenize every split once (padding happens per batch, to the batch's longest text)."""
    label_index = {name: i for i, name in enumerate(data.label_names)}
    group_index = {name: i for i, name in enumerate(data.group_names)}
    out = {}
    for split in SPLITS:
        part = data.frame[data.frame["split"] == split]
        if len(part) == 0:
            raise DataError(f"data split {split!r} of {data.name} is empty")
        ids = tokenizer(part["text"].astype(str).tolist(), truncation=True, max_length=max_length)["input_ids"]
        labels = part["label"].map(label_index).to_numpy(dtype=np.int64)
        groups = part["group"].map(lambda g: group_index.get(g, -1) if pd.notna(g) else -1)
        out[split] = EncodedSplit([np.asarray(x, dtype=np.int64) for x in ids], labels,
                                  groups.to_numpy(dtype=np.int64))
    return out
