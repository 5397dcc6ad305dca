"""The built-in real datasets, by the name a study file gives as ``[data] source``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from fairfront.errors import ConfigError
from fairfront.objectives.data.datasets import _davidson, _gap, _jigsaw, _redditbias, _sst2
from fairfront.objectives.data.datasets._dataset import TextDataset
from fairfront.objectives.data.datasets._paths import dataset_folder
from fairfront.objectives.data.datasets._split import check_fractions

__all__ = ["DATASETS", "DatasetInfo", "load_builtin"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a built-in dataset is and how it is read.

    Attributes:
        name: The ``[data] source`` name.
        description: One line: what the data is and what it is for.
        folder: Its folder under the data root (its ``SOURCE.md`` documents the layout).
        citation: The paper to cite.
        official_splits: Whether train / validation / test come from the dataset itself (else
            they are made by :func:`stratified_split` with the study's seed).
        has_groups: Whether it has a protected attribute with its default options.
        group_option: The boolean option that adds a (proxy) group where there is none by
            default (``identity_proxy`` for Davidson), else None.
        options: Keyword options the loader accepts (``[data.options]`` in a study file).
    """

    name: str
    description: str
    folder: str
    citation: str
    official_splits: bool
    has_groups: bool
    loader: Callable[..., TextDataset] = field(repr=False)
    group_option: str | None = None
    options: tuple[str, ...] = field(init=False)

    def provides_groups(self, **options: object) -> bool:
        """Whether loading with ``options`` gives a group column (to check a study before it runs).

        Example:
            >>> DATASETS["davidson"].provides_groups(), DATASETS["davidson"].provides_groups(identity_proxy=True)
            (False, True)
        """
        return self.has_groups or (self.group_option is not None and options.get(self.group_option) is True)

    def __post_init__(self) -> None:
        params = inspect.signature(self.loader).parameters
        object.__setattr__(self, "options", tuple(p for p in params if p not in ("folder", "seed")))


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="redditbias", folder="redditbias", citation=_redditbias.CITATION,
            description="11,492 Reddit comments, biased / not biased, group = one of 5 target groups "
                        "(women, LGBTQ, Black, Jews, Muslims)",
            official_splits=False, has_groups=True, loader=_redditbias.load_redditbias),
        DatasetInfo(
            name="jigsaw_templates", folder="jigsaw_sentence_templates", citation=_jigsaw.CITATION,
            description="76,564 template sentences, toxic / nontoxic, group = one of 50 identity terms "
                        "(or 6 categories); a balanced identity-bias evaluation set",
            official_splits=False, has_groups=True, loader=_jigsaw.load_jigsaw_templates),
        DatasetInfo(
            name="sst2", folder="sst2", citation=_sst2.CITATION,
            description="9,613 movie-review sentences, negative / positive, official train/dev/test, no group",
            official_splits=True, has_groups=False, loader=_sst2.load_sst2),
        DatasetInfo(
            name="davidson", folder="davidson_hate_offensive", citation=_davidson.CITATION,
            description="24,783 tweets, hate speech / offensive language / neither (imbalanced), no group "
                        "unless identity_proxy = true",
            official_splits=False, has_groups=False, loader=_davidson.load_davidson, group_option="identity_proxy"),
        DatasetInfo(
            name="gap", folder="gap_coreference", citation=_gap.CITATION,
            description="4,454 Wikipedia snippets, pronoun refers to A / B / NEITHER (spans marked in the text), "
                        "group = pronoun gender, official splits",
            official_splits=True, has_groups=True, loader=_gap.load_gap),
    )
}
"""Built-in datasets by name."""


def load_builtin(name: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                 **options: object) -> TextDataset:
    """Load a built-in real dataset from its original files.

    Args:
        name: A key of :data:`DATASETS`.
        data_dir: The data root holding the dataset folders; :func:`default_data_dir` when None.
        seed: Seed of the stratified split (datasets without official splits).
        **options: The dataset's options (see ``DATASETS[name].options`` and its loader's docs),
            e.g. ``groups=["women", "Muslims"]`` for RedditBias or ``group_by="category"`` for the
            Jigsaw templates.

    Raises:
        ConfigError: unknown ``name`` (the message lists the built-ins) or an unknown / bad option.
        DataError: the dataset folder or one of its files is missing; the message says where it
            looked and that ``FAIRFRONT_DATA_DIR`` can point at the data.

    Example:
        >>> data = load_builtin("redditbias", groups=["women", "Muslims"])  # doctest: +SKIP
        >>> data.group_names  # doctest: +SKIP
        ('women', 'Muslims')
    """
    info = DATASETS.get(name)
    if info is None:
        raise ConfigError("data.source", name, "one of: " + ", ".join(DATASETS))
    for key in options:
        if key not in info.options:
            raise ConfigError(f"data.options.{key}", message=f"unknown option for {name}; allowed: "
                              + (", ".join(info.options) or "none"))
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError("data.seed", seed, "an integer")
    if "fractions" in options:
        try:
            options["fractions"] = check_fractions(options["fractions"])  # type: ignore[arg-type]
        except ValueError:
            raise ConfigError("data.options.fractions", options["fractions"],
                              "three non-negative numbers (train, validation, test) summing to 1, "
                              "train > 0") from None
    folder = dataset_folder(name, info.folder, data_dir)
    return info.loader(folder, seed=seed, **options)
