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
from fairfront.objectives.data.datasets._membership import group_display_names, membership_pattern
from fairfront.objectives.data.labels import with_positive
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
    positive_label: str | None = None
    label_bins: tuple[float, ...] | None = None
    sep: str | None = None
    encoding: str | None = None
    quote: str | None = None
    min_group_size: int = 1
    small_groups: str = "exclude"
    split_group_column: str | None = None
    group_objective: str = "intersection"
    group_membership: tuple[str, ...] | None = None
    group_membership_prefix: str | None = None

    @classmethod
    def from_table(cls, t: Table, *, base_dir: Path) -> DataSpec:
        builtin = tuple(ds.DATASETS)
        allowed = (SYNTHETIC, "file", "hf") + builtin
        source = t.string("source", choices=allowed)
        kw: dict = {"source": source, "seed": t.integer("seed", 0, low=0),
                    "max_train": t.integer("max_train", None, low=10),
                    "max_eval": t.integer("max_eval", None, low=10),
                    "positive_label": _label_value(t, "positive_label"),
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
                kw.update(_reader_keys(t))
                kw["split_group_column"] = t.string("split_group_column", None)
                kw.update(_membership_keys(t, kw["group_column"]))
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

    @property
    def origin(self) -> str:
        """How messages name the data: the file's name, the dataset's name, or the source."""
        if self.source == "file" and self.path:
            return Path(self.path).name
        return self.name or self.source

    @property
    def read_options(self) -> ds.ReadOptions:
        return ds.ReadOptions(sep=self.sep, encoding=self.encoding, quote=self.quote)

    def _check_columns(self, t: Table) -> None:
        """Refuse a study file whose columns are not in the data file (read the header only)."""
        try:
            header = _read_header(Path(self.path), self.read_options)
        except Exception as err:  # noqa: BLE001 - any parse failure is the user's file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            hint = "; set [data] encoding" if isinstance(err, UnicodeDecodeError) else ""
            raise ConfigError(t.key("path"), self.path,
                              f"a readable CSV/TSV/JSONL/Parquet file ({first}{hint})") from None
        for key in ("text_column", "label_column", "group_column", "split_column", "split_group_column",
                    "group_membership"):
            value = getattr(self, key)
            for column in value if isinstance(value, tuple) else (value,):
                if column is not None and column not in header:
                    raise ConfigError(t.key(key), column, "a column of " + Path(self.path).name + ": "
                                      + ", ".join(map(str, header)) + ds.delimiter_hint(header))

    @property
    def group_names(self) -> tuple[str, ...] | None:
        """The group name of each ``group_membership`` column (None without the key)."""
        if self.group_membership is None:
            return None
        return group_display_names(self.group_membership, self.group_membership_prefix)

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
        for key in ("split_group_column", "group_membership", "group_membership_prefix"):
            if out[key] is None:  # keeps the fingerprint of studies from before the key
                del out[key]
        if self.source == "file":
            out["content"] = ds.content_digest(self.path)
        elif self.source in ds.DATASETS:
            try:
                out["content"] = ds.content_digest(ds.dataset_folder(self.source, ds.DATASETS[self.source].folder,
                                                                     self.options.get("data_dir")))
            except DataError:
                out["content"] = None
        return out


def _label_value(t: Table, key: str) -> str | None:
    """A class name as the study file writes it: a string, or an integer / boolean label (``1``, ``true``)."""
    present, value = t._raw(key, None)
    if not present:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise ConfigError(t.key(key), value, "a class name (a string, or an integer label such as 1)")


def _reader_keys(t: Table) -> dict:
    """``sep``, ``encoding``, ``quote`` (CSV / TSV) and ``label_bins`` of a ``source = "file"`` table."""
    kw: dict = {"sep": t.string("sep", None), "encoding": t.string("encoding", None), "quote": t.string("quote", None)}
    problem = ds.ReadOptions(**kw).problem()
    if problem is not None:
        raise ConfigError(t.key(problem[0]), kw[problem[0]], problem[1])
    present, bins = t._raw("label_bins", None)
    if present:
        ok = isinstance(bins, list) and bins and all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                     and b == b for b in bins)
        if not ok or list(bins) != sorted(set(bins)):
            raise ConfigError(t.key("label_bins"), bins, "a non-empty list of increasing numbers (thresholds), "
                              "e.g. [0.5]")
        kw["label_bins"] = tuple(float(b) for b in bins)
    return kw


def _membership_keys(t: Table, group_column: str | tuple[str, ...] | None) -> dict:
    """``group_membership`` (one 0/1 column per group) and ``group_membership_prefix`` of a file's table."""
    columns = t.strings("group_membership", None)
    prefix = t.string("group_membership_prefix", None)
    if columns is None:
        if prefix is not None:
            raise ConfigError(t.key("group_membership_prefix"), message="names the groups of group_membership, "
                              "which is not set")
        return {}
    if group_column is not None:
        raise ConfigError(t.key("group_membership"), message="give group_column (one group per row) or "
                          "group_membership (one 0/1 column per group, groups may overlap), not both")
    names = group_display_names(columns, prefix)
    if len(set(columns)) != len(columns) or len(set(names)) != len(names):
        raise ConfigError(t.key("group_membership"), list(columns), "distinct columns giving distinct group names")
    return {"group_membership": columns, "group_membership_prefix": prefix}


def _read_header(path: Path, read: ds.ReadOptions) -> list[str]:
    fmt = ds.file_format(path)
    if fmt in ("csv", "tsv"):
        return list(pd.read_csv(path, nrows=5, dtype=str, **read.csv_kwargs(fmt)).columns)
    if fmt in ("jsonl", "json"):
        return list(pd.read_json(path, lines=fmt == "jsonl").columns)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    raise ValueError(f"unsupported file type {path.suffix!r}; allowed: .csv .tsv .jsonl .json .parquet")


def load_task(spec: DataSpec) -> ds.TextDataset:
    """Read the data named by ``spec`` with train / validation / test splits and its positive class."""
    if spec.source == SYNTHETIC:
        frame = make_occupation_bios(spec.n_examples, seed=spec.seed, ambiguous_fraction=spec.ambiguous_fraction)
        frame = ds.stratified_split(frame, seed=spec.seed)
        data = ds.TextDataset(name=SYNTHETIC, frame=frame, label_names=tuple(sorted(frame["label"].unique())),
                              group_names=tuple(sorted(frame["group"].unique())), citation=SYNTHETIC_CITATION)
    elif spec.source == "file":
        data = ds.load_table(spec.path, text_column=spec.text_column, label_column=spec.label_column,
                             group_column=spec.group_column, split_column=spec.split_column, seed=spec.seed,
                             read=spec.read_options, label_bins=spec.label_bins,
                             split_group_column=spec.split_group_column, group_membership=spec.group_membership,
                             membership_names=spec.group_names)
    elif spec.source == "hf":
        data = ds.load_hf(spec.name, text_column=spec.text_column, label_column=spec.label_column,
                          group_column=spec.group_column, seed=spec.seed)
    else:
        data = ds.load_builtin(spec.source, seed=spec.seed, **spec.options)
    data = with_positive(data, spec.positive_label, declared=spec.source in ds.DATASETS, origin=spec.origin)
    return _limit(data, spec)


def _limit(data: ds.TextDataset, spec: DataSpec) -> ds.TextDataset:
    """Deterministic, stratified subsample of exactly ``max_train`` / ``max_eval`` rows of each split.

    Strata are label x group, rows without a group forming their own stratum (they are kept in
    proportion: they train the model and count for accuracy, and are left out of group measures only).
    """
    if spec.max_train is None and spec.max_eval is None:
        return data
    parts = []
    for split, part in data.frame.groupby("split", sort=False):
        cap = spec.max_train if split == "train" else spec.max_eval
        if cap is not None and len(part) > cap:
            names = data.group_names if data.multi_hot else ()
            part = part.iloc[np.sort(stratified_pick(part, cap, seed=spec.seed, names=names))]
        parts.append(part)
    frame = pd.concat(parts).sort_index()
    return dataclasses.replace(data, frame=frame)


def stratified_pick(part: pd.DataFrame, k: int, *, seed: int, names: tuple[str, ...] = ()) -> np.ndarray:
    """Positions of exactly ``k`` rows of ``part``, spread over its label x group strata in proportion.

    Each row gets a key ``(rank within its stratum + u) / stratum size`` with ``u`` random and the
    rank a random order; the ``k`` smallest keys are taken, so every stratum gets its share up to one row.
    With overlapping groups (``names``: the multi-hot groups) a row's group is its set of groups.
    """
    groups = membership_pattern(part, names) if names else part["group"].astype("string")
    strata = part["label"].astype("string").fillna("") + "\x1f" + groups.fillna("\x00")
    codes, _ = pd.factorize(strata.to_numpy(dtype=object))
    rng = np.random.default_rng(seed)
    u = rng.random(len(part))
    order = np.lexsort((u, codes))
    ranks = np.empty(len(part))
    sizes = np.bincount(codes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    ranks[order] = np.arange(len(part)) - starts[codes[order]]
    keys = (ranks + rng.random(len(part))) / sizes[codes]
    return np.argsort(keys, kind="stable")[:k]


@dataclass
class EncodedSplit:
    """One tokenized split: unpadded token ids, class ids, group ids (-1 = no group).

    With overlapping groups (``[data] group_membership``) every group id is -1 and ``membership``
    holds ``[rows, groups]`` booleans, so a reader of ``groups`` sees no group rather than a wrong one.
    """

    input_ids: list[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    membership: np.ndarray | None = None

    def subset(self, index: np.ndarray, input_ids: list[np.ndarray]) -> EncodedSplit:
        """The rows ``index`` of this split, with their token ids ``input_ids`` (e.g. swapped texts)."""
        member = None if self.membership is None else self.membership[index]
        return EncodedSplit(input_ids, self.labels[index], self.groups[index], member)

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
                                  groups.to_numpy(dtype=np.int64), data.membership(split))
    return out
