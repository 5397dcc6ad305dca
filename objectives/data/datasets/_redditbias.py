"""RedditBias: real Reddit comments about five target groups, annotated biased / not biased.

Citation: Soumya Barikeri, Anne Lauscher, Ivan Vulić, Goran Glavaš. *RedditBias: A Real-World
Resource for Bias Evaluation and Debiasing of Conversational Language Models.* ACL-IJCNLP 2021.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fairfront.errors import ConfigError, DataError
from fairfront.objectives.data.datasets._dataset import TextDataset
from fairfront.objectives.data.datasets._paths import require_file
from fairfront.objectives.data.datasets._split import stratified_split

__all__ = ["CITATION", "GROUP_FILES", "LABEL_NAMES", "load_redditbias"]

CITATION = ("Soumya Barikeri, Anne Lauscher, Ivan Vulić, Goran Glavaš. RedditBias: A Real-World Resource for "
            "Bias Evaluation and Debiasing of Conversational Language Models. ACL-IJCNLP 2021.")

GROUP_FILES: dict[str, str] = {
    "women": "gender/reddit_comments_gender_female_processed_phrase_annotated.csv",
    "LGBTQ": "orientation/reddit_comments_orientation_lgbtq_processed_phrase_annotated.csv",
    "Black": "race/reddit_comments_race_black_processed_phrase_annotated.csv",
    "Jews": "religion1/reddit_comments_religion1_jews_processed_phrase_annotated.csv",
    "Muslims": "religion2/reddit_comments_religion2_muslims_processed_phrase_annotated.csv",
}
"""Target group -> annotated file (relative to ``redditbias/``), in the order of ``group_names``."""

LABEL_NAMES = ("not biased", "biased")

_UNITS = {"comment": ("comment", "bias_sent"), "phrase": ("phrase", "bias_phrase")}
_ERRORS = "fairfront.mac_roman"


def _mac_roman_fallback(err: UnicodeError) -> tuple[str, int]:
    # RedditBias' Jews file has one Mac-Roman byte (0xD5, a right single quote) in UTF-8 text.
    if not isinstance(err, UnicodeDecodeError):
        raise err
    return err.object[err.start:err.end].decode("mac_roman"), err.end


codecs.register_error(_ERRORS, _mac_roman_fallback)


def load_redditbias(folder: Path, *, seed: int = 0, groups: Sequence[str] | str | None = None,
                    unit: str = "comment", fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> TextDataset:
    """Read the five ``*_processed_phrase_annotated.csv`` files as one binary task.

    Text is the ``comment`` column and the label its human annotation ``bias_sent`` (``1`` ->
    ``biased``, ``0`` -> ``not biased``); with ``unit="phrase"`` the extracted ``phrase`` and its
    ``bias_phrase`` annotation are used instead. The group is the target group of the file the
    row comes from (``women``, ``LGBTQ``, ``Black``, ``Jews``, ``Muslims``).

    Only rows annotated exactly ``0`` or ``1`` are kept, as the dataset's SOURCE.md defines the
    usable rows: empty (never annotated) cells, ``2`` (the women file's "unsure/other") and the
    free-text notes of the Jews file (``biased?``, ``re-state``, ``question``,
    ``1 - context needed``, ...) are dropped, because none of them is a yes/no judgement. That
    leaves 11,492 comments (6,592 biased). Quirks handled: the women file has no ``id`` column
    and an empty trailing column; the Jews file has one Mac-Roman byte, decoded as the
    apostrophe it is. No official split exists, so rows are split by :func:`stratified_split`
    (label x group; the same comment found in two files stays on one side of the split).

    Caveat from the source: group and topic are confounded (each file was retrieved with its
    group's terms), so a classifier can partly read the group from the text.

    Citation: Barikeri, Lauscher, Vulić, Glavaš. *RedditBias.* ACL-IJCNLP 2021.

    Args:
        folder: The ``redditbias/`` folder.
        seed: Seed of the stratified split.
        groups: Target groups to keep (names as above, case-insensitive); all five when None.
        unit: ``"comment"`` (default) or ``"phrase"``.
        fractions: Train / validation / test shares of the split.
    """
    if unit not in _UNITS:
        raise ConfigError("data.options.unit", unit, "one of: " + ", ".join(_UNITS))
    wanted = _select_groups(groups)
    text_col, label_col = _UNITS[unit]
    frames = []
    for group in wanted:
        raw = _read_csv(require_file("redditbias", folder / GROUP_FILES[group]))
        missing = [c for c in (text_col, label_col) if c not in raw.columns]
        if missing:
            raise DataError(f"redditbias: {GROUP_FILES[group]} has no column {missing[0]!r}; columns are: "
                            f"{', '.join(raw.columns)}")
        annotation = raw[label_col].str.strip()
        keep = annotation.isin(("0", "1"))
        frames.append(pd.DataFrame({
            "text": raw.loc[keep, text_col].to_numpy(),
            "label": annotation[keep].map({"0": LABEL_NAMES[0], "1": LABEL_NAMES[1]}).to_numpy(),
            "group": group,
        }))
    frame = pd.concat(frames, ignore_index=True).astype("string")
    frame = stratified_split(frame, fractions=fractions, seed=seed)
    return TextDataset(name="redditbias", frame=frame, label_names=LABEL_NAMES, group_names=wanted,
                       citation=CITATION)


def _select_groups(groups: Sequence[str] | str | None) -> tuple[str, ...]:
    if groups is None:
        return tuple(GROUP_FILES)
    requested = [groups] if isinstance(groups, str) else list(groups)
    by_lower = {g.lower(): g for g in GROUP_FILES}
    chosen = []
    for g in requested:
        name = by_lower.get(str(g).strip().lower())
        if name is None:
            raise ConfigError("data.options.groups", g, "names from: " + ", ".join(GROUP_FILES))
        chosen.append(name)
    if not chosen:
        raise ConfigError("data.options.groups", list(requested), "at least one of: " + ", ".join(GROUP_FILES))
    return tuple(g for g in GROUP_FILES if g in chosen)


def _read_csv(path: Path) -> pd.DataFrame:
    text = path.read_bytes().decode("utf-8", errors=_ERRORS)
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
