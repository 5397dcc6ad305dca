"""Jigsaw / Conversation AI sentence templates: toxic and non-toxic sentences per identity term.

Citation: Lucas Dixon, John Li, Jeffrey Sorensen, Nithum Thain, Lucy Vasserman. *Measuring and
Mitigating Unintended Bias in Text Classification.* AIES 2018 (metrics: Borkan et al., WWW 2019).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fairfront.errors import ConfigError, DataError
from fairfront.objectives.data.datasets._dataset import TextDataset
from fairfront.objectives.data.datasets._paths import require_file
from fairfront.objectives.data.datasets._split import stratified_split

__all__ = ["CITATION", "LABEL_NAMES", "first_identity_term", "identity_pattern", "identity_terms",
           "load_jigsaw_templates"]

CITATION = ("Lucas Dixon, John Li, Jeffrey Sorensen, Nithum Thain, Lucy Vasserman. Measuring and Mitigating "
            "Unintended Bias in Text Classification. AIES 2018. Metrics: Daniel Borkan, Lucas Dixon, Jeffrey "
            "Sorensen, Nithum Thain, Lucy Vasserman. Nuanced Metrics for Measuring Unintended Bias with Real "
            "Data for Text Classification. WWW 2019 Companion.")

LABEL_NAMES = ("nontoxic", "toxic")
_GROUP_BY = ("term", "category")


def identity_terms(words_csv: Path, *, connotations: Sequence[str] | None = None) -> dict[str, str]:
    """Identity term -> category (``subtype``) from the templates' ``words.csv``, in file order.

    Args:
        words_csv: The ``words.csv`` of the Jigsaw sentence templates.
        connotations: Keep only identity rows with these connotations (``"neutral"`` leaves out
            the six slurs); all identity rows when None.
    """
    words = pd.read_csv(require_file("jigsaw_templates", words_csv), dtype=str, keep_default_na=False)
    missing = [c for c in ("type", "subtype", "connotation", "word") if c not in words.columns]
    if missing:
        raise DataError(f"{words_csv}: no column {missing[0]!r}; columns are: {', '.join(words.columns)}")
    rows = words[words["type"].str.strip() == "identity"]
    if connotations is not None:
        rows = rows[rows["connotation"].str.strip().isin(tuple(connotations))]
    return {w.strip().lower(): s.strip() for w, s in zip(rows["word"], rows["subtype"], strict=True)}


def identity_pattern(terms: Sequence[str]) -> re.Pattern[str]:
    """A whole-word pattern for the lower-case ``terms``, longest first; apply it to lower-cased text.

    Longest first makes a multi-word term win over a term it contains ("african american" over
    "american"); word boundaries keep "old" from matching inside "older" or "bold". The text is
    lower-cased instead of using ``re.IGNORECASE``, which is several times slower.

    Example:
        >>> identity_pattern(["american", "african american"]).search("an african american poet").group(1)
        'african american'
    """
    ordered = sorted({t.lower() for t in terms}, key=lambda t: (-len(t), t))
    return re.compile(r"\b(" + "|".join(re.escape(t) for t in ordered) + r")\b")


def first_identity_term(texts: Sequence[str], terms: Sequence[str]) -> list[str | None]:
    """The first identity term (lower case) found in each text as a whole word, or None."""
    pattern = identity_pattern(terms)
    found: list[str | None] = []
    for text in texts:
        match = pattern.search(text.lower())
        found.append(match.group(1) if match else None)
    return found


def load_jigsaw_templates(folder: Path, *, seed: int = 0, group_by: str = "term",
                          fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> TextDataset:
    """Read ``en_sentence_templates.csv``: 76,564 template sentences, label toxic / nontoxic.

    The file has no identity column, so (as its SOURCE.md prescribes) the identity term of each
    ``phrase`` is recovered by matching the ``identity`` rows of ``words.csv``, longest term first,
    as whole words, ignoring case. Every row gets exactly one term, except the 864
    ``you_occupation`` rows, which name an occupation instead; their group is ``<NA>`` (they stay
    in the data as identity-free examples). ``group_by="category"`` uses the term's ``subtype``
    (ethnicity, sexuality, religion, age, gender, disability) instead of the term. Group names
    follow the order of ``words.csv`` and list only terms / categories that occur (``cis`` does
    not). The set is an evaluation set without official splits; it is split by
    :func:`stratified_split` (label x group) so it can also be trained on.

    Citation: Dixon, Li, Sorensen, Thain, Vasserman. *Measuring and Mitigating Unintended Bias in
    Text Classification.* AIES 2018.

    Args:
        folder: The ``jigsaw_sentence_templates/`` folder.
        seed: Seed of the stratified split.
        group_by: ``"term"`` (50 groups) or ``"category"`` (6 groups).
        fractions: Train / validation / test shares of the split.
    """
    if group_by not in _GROUP_BY:
        raise ConfigError("data.options.group_by", group_by, "one of: " + ", ".join(_GROUP_BY))
    terms = identity_terms(folder / "words.csv")
    path = require_file("jigsaw_templates", folder / "en_sentence_templates.csv")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("toxicity", "phrase") if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; columns are: {', '.join(raw.columns)}")
    bad = raw.loc[~raw["toxicity"].isin(LABEL_NAMES), "toxicity"]
    if len(bad):
        raise DataError(f"{path}: toxicity value {bad.iloc[0]!r} is not one of {', '.join(LABEL_NAMES)}")

    term = pd.Series(first_identity_term(raw["phrase"].tolist(), list(terms)), dtype="string")
    if group_by == "term":
        present = set(term.dropna())
        group, names = term, [t for t in terms if t in present]
    else:
        group = term.map(terms)
        present = set(group.dropna())
        names = list(dict.fromkeys(c for c in terms.values() if c in present))
    frame = pd.DataFrame({"text": raw["phrase"], "label": raw["toxicity"], "group": group}).astype("string")
    frame = stratified_split(frame, fractions=fractions, seed=seed)
    return TextDataset(name="jigsaw_templates", frame=frame, label_names=LABEL_NAMES, group_names=tuple(names),
                       citation=CITATION)
