"""Davidson et al. (2017): tweets coded as hate speech, offensive language or neither.

Citation: Thomas Davidson, Dana Warmsley, Michael Macy, Ingmar Weber. *Automated Hate Speech
Detection and the Problem of Offensive Language.* ICWSM 2017. Bias analysis: Davidson,
Bhattacharya, Weber. *Racial Bias in Hate Speech and Abusive Language Detection Datasets.* ALW 2019.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fairfront.errors import ConfigError, DataError
from fairfront.objectives.data.datasets._dataset import TextDataset
from fairfront.objectives.data.datasets._jigsaw import first_identity_term, identity_terms
from fairfront.objectives.data.datasets._paths import require_file
from fairfront.objectives.data.datasets._split import stratified_split

__all__ = ["CITATION", "LABEL_NAMES", "PROXY_GROUPS", "load_davidson"]

CITATION = ("Thomas Davidson, Dana Warmsley, Michael Macy, Ingmar Weber. Automated Hate Speech Detection and the "
            "Problem of Offensive Language. ICWSM 2017. Bias analysis: Thomas Davidson, Debasmita Bhattacharya, "
            "Ingmar Weber. Racial Bias in Hate Speech and Abusive Language Detection Datasets. ALW 2019.")

LABEL_NAMES = ("hate speech", "offensive language", "neither")
"""Class names in the order of the file's ``class`` codes 0, 1, 2."""

PROXY_GROUPS = ("mentions identity term", "no identity term")


def load_davidson(folder: Path, *, seed: int = 0, identity_proxy: bool = False, unescape_html: bool = True,
                  fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> TextDataset:
    """Read ``labeled_data.csv``: 24,783 tweets in 3 strongly imbalanced classes (hate speech 5.8%).

    The label is the majority code in ``class`` (0 hate speech, 1 offensive language, 2 neither).
    The file is read with a real CSV parser (tweets contain quoted newlines). HTML entities in the
    tweets (``&amp;``, ``&#128514;``) are decoded unless ``unescape_html=False``, since a
    tokenizer would otherwise see markup instead of the characters the author wrote; ``RT @user:``
    prefixes and URLs are kept as they are.

    The data has **no protected attribute**: ``group`` is ``<NA>`` unless ``identity_proxy=True``,
    which derives a proxy the SOURCE.md suggests: ``"mentions identity term"`` when the tweet
    contains (as a whole word, any case) one of the 51 *neutral* identity terms of the Jigsaw
    templates' ``words.csv`` (read from ``../jigsaw_sentence_templates/``), else ``"no identity
    term"``. The six slurs listed there are left out on purpose: in this corpus they would make
    the "group" almost a copy of the hate label. The flag is a noisy proxy ("white", "old",
    "straight" have other senses), so the dataset is marked ``group_is_proxy=True`` and reports
    must say so. The dialect (AAE) proxy of the bias papers needs the TwitterAAE model, which is
    not available. No official split exists; rows are split by :func:`stratified_split`.

    Citation: Davidson, Warmsley, Macy, Weber. *Automated Hate Speech Detection and the Problem of
    Offensive Language.* ICWSM 2017.

    Args:
        folder: The ``davidson_hate_offensive/`` folder.
        seed: Seed of the stratified split.
        identity_proxy: Derive the identity-mention proxy group described above.
        unescape_html: Decode HTML entities in the tweets.
        fractions: Train / validation / test shares of the split.
    """
    for key, value in (("identity_proxy", identity_proxy), ("unescape_html", unescape_html)):
        if not isinstance(value, bool):
            raise ConfigError(f"data.options.{key}", value, "true or false")
    path = require_file("davidson", folder / "labeled_data.csv")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("class", "tweet") if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; columns are: {', '.join(raw.columns)}")
    codes = raw["class"].str.strip()
    bad = codes[~codes.isin(("0", "1", "2"))]
    if len(bad):
        raise DataError(f"{path}: class value {bad.iloc[0]!r} (data row {bad.index[0] + 1}) is not 0, 1 or 2")
    text = raw["tweet"].map(html.unescape) if unescape_html else raw["tweet"]
    label = codes.map({str(i): name for i, name in enumerate(LABEL_NAMES)})
    if identity_proxy:
        terms = identity_terms(folder.parent / "jigsaw_sentence_templates" / "words.csv", connotations=("neutral",))
        found = first_identity_term(text.tolist(), list(terms))
        group = pd.Series([PROXY_GROUPS[1] if t is None else PROXY_GROUPS[0] for t in found], index=raw.index)
        group_names: tuple[str, ...] = PROXY_GROUPS
    else:
        group = pd.Series(pd.NA, index=raw.index)
        group_names = ()
    frame = pd.DataFrame({"text": text, "label": label, "group": group}).astype("string")
    frame = stratified_split(frame, fractions=fractions, seed=seed)
    return TextDataset(name="davidson", frame=frame, label_names=LABEL_NAMES, group_names=group_names,
                       citation=CITATION, group_is_proxy=identity_proxy)
