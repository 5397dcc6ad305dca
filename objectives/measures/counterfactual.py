"""Counterfactual fairness by term swapping: does the prediction change when only the group does?

A text is rewritten with every group term swapped for its counterpart ("he" <-> "she",
"women are" <-> "men are"), and the classifier is run on both versions. A fair classifier
gives (nearly) the same prediction; the share of flipped predictions and the change in
probability measure how much the group terms alone move the model (Garg et al. 2019,
"Counterfactual fairness in text classification through robustness"; the swap lists are
those of WinoBias, Zhao et al. 2018, and RedditBias, Barikeri et al. 2021).

Swapping rules (:func:`swap_terms`):

* Both directions at once: a pair ``(a, b)`` turns ``a`` into ``b`` and ``b`` into ``a``.
* One left-to-right pass, so a swapped term is never swapped back ("he" -> "she" stays).
* Whole words and phrases only: a term must not touch a letter, digit or underscore on
  either side ("he" is not swapped inside "the", but is in "he's" and "he-man").
  Whitespace inside a phrase matches any run of whitespace.
* Longest phrase first: where several terms start at the same place the longest wins
  ("his daughter is" before "his").
* Matching ignores case and the replacement copies the case of what it replaces: ``HE`` ->
  ``SHE``, ``He`` -> ``She``, ``he`` -> ``she``, ``Black People`` -> ``White People``;
  anything else (mixed case) gets the replacement as written in the list.
* When a term has several counterparts, pairs written in the term's direction win over
  reversed ones, and earlier pairs over later ones. WinoBias lists ``(him, her)`` and
  ``(his, her)`` but no pair starting with "her", so "her" becomes "him" everywhere: word
  lists cannot tell the possessive from the object pronoun.

Example:
    >>> swap_terms("He told his sister that she was right.", [("he", "she"), ("his", "her"), ("sister", "brother")])
    'She told her brother that he was right.'
"""

from __future__ import annotations

import csv
import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fairfront.errors import DataError
from fairfront.jsonsafe import finite_or_none

__all__ = [
    "builtin_swap_lists",
    "counterfactual_report",
    "counterfactual_scores",
    "counterfactual_texts",
    "load_swap_pairs",
    "swap_terms",
]

SwapPairs = Iterable[tuple[str, str]] | Iterable[Sequence[str]]

_BUILTIN_LISTS = {
    "winobias_generalized": ("winobias", "generalized_swaps.txt"),
    "winobias_extra": ("winobias", "extra_gendered_words.txt"),
    "redditbias_gender": ("redditbias", "gender", "gender_opposites.txt"),
    "redditbias_orientation": ("redditbias", "orientation", "orientation_opposites.txt"),
    "redditbias_race": ("redditbias", "race", "race_opposites.txt"),
    "redditbias_religion1": ("redditbias", "religion1", "religion1_opposites.txt"),
    "redditbias_religion2": ("redditbias", "religion2", "religion2_opposites.txt"),
}


# --------------------------------------------------------------------------------------------
# Word-pair lists
# --------------------------------------------------------------------------------------------


def _split_line(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith('"') or ("," in stripped and "\t" not in stripped):
        fields = next(csv.reader([stripped], skipinitialspace=True))
    elif "\t" in stripped:
        fields = stripped.split("\t")
    else:
        fields = stripped.split()
    fields = [f.strip() for f in fields]
    while len(fields) > 2 and fields[-1] == "":  # a trailing separator
        fields.pop()
    return fields


def load_swap_pairs(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read a list of term pairs to swap, one pair per line.

    Accepted layouts, recognised line by line:

    * **Tab-separated** ``term<TAB>counterpart`` (WinoBias ``generalized_swaps.txt`` and
      ``extra_gendered_words.txt``); spaces around the tab are stripped.
    * **CSV**, quoted or not: ``"women are","men are"`` (RedditBias ``*_opposites.txt``) or
      ``women are,men are``.
    * **Whitespace-separated** single words: ``he she``.

    Blank lines and lines starting with ``#`` are skipped. A pair with an empty side is
    skipped: RedditBias writes ``"gay is",""`` for a term it gives no counterpart. Pairs are
    returned in file order, duplicates included; :func:`swap_terms` documents which pair wins
    when a term appears more than once.

    Raises:
        DataError: The file is missing, or a line does not hold exactly two terms (the message
            names the file and line).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.txt"
        >>> _ = p.write_text('actor \\t actress\\n"women are","men are"\\n"gay is",""\\nhe she\\n')
        >>> load_swap_pairs(p)
        [('actor', 'actress'), ('women are', 'men are'), ('he', 'she')]
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"swap list {path} does not exist")
    pairs: list[tuple[str, str]] = []
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _split_line(line)
        if len(fields) != 2:
            raise DataError(f"{path}:{lineno}: expected two terms separated by a tab, a comma or a space, "
                            f"got {line.strip()!r}")
        a, b = fields
        if a and b:
            pairs.append((a, b))
    return pairs


def _default_data_dir() -> Path | None:
    try:
        from fairfront.objectives.data.datasets import default_data_dir
    except ImportError:
        from fairfront.objectives.data.datasets._paths import default_data_dir
    return default_data_dir()


def builtin_swap_lists(data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The swap lists found in the data folder, by name.

    Names: ``winobias_generalized``, ``winobias_extra`` (gendered words of WinoBias) and
    ``redditbias_gender``, ``redditbias_orientation``, ``redditbias_race``,
    ``redditbias_religion1`` (Jews/Christians), ``redditbias_religion2`` (Muslims/Christians).
    Only lists whose file exists are returned.

    Args:
        data_dir: The folder holding ``winobias/`` and ``redditbias/``; default: the project's
            data folder (``FAIRFRONT_DATA_DIR`` or ``../shared/data``). No folder gives ``{}``.
    """
    root = Path(data_dir) if data_dir is not None else _default_data_dir()
    if root is None:
        return {}
    found = {}
    for name, parts in _BUILTIN_LISTS.items():
        path = root.joinpath(*parts)
        if path.is_file():
            found[name] = path
    return found


# --------------------------------------------------------------------------------------------
# Swapping
# --------------------------------------------------------------------------------------------


def _key(term: str) -> str:
    return " ".join(term.lower().split())


@functools.lru_cache(maxsize=32)
def _compile(pairs: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str] | None, dict[str, str]]:
    mapping: dict[str, str] = {}
    for a, b in pairs:  # each pair's own direction first ...
        if _key(a) != _key(b):
            mapping.setdefault(_key(a), " ".join(b.split()))
    for a, b in pairs:  # ... then the reverse direction, where the term has no counterpart yet
        if _key(a) != _key(b):
            mapping.setdefault(_key(b), " ".join(a.split()))
    if not mapping:
        return None, mapping
    terms = sorted(mapping, key=lambda t: (-len(t), t))
    alternatives = "|".join(r"\s+".join(re.escape(word) for word in term.split()) for term in terms)
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    return pattern, mapping


def _normalise_pairs(pairs: SwapPairs) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"each swap pair must be two non-empty strings (term, counterpart), got {pair!r}")
        a, b = pair
        if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
            raise ValueError(f"each swap pair must be two non-empty strings (term, counterpart), got {pair!r}")
        out.append((a, b))
    return tuple(out)


def _capitalised(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    return bool(letters) and letters[0].isupper() and all(c.islower() for c in letters[1:])


def _upper_first(word: str) -> str:
    return word[:1].upper() + word[1:]


def _match_case(source: str, target: str) -> str:
    """``target`` in the case pattern of ``source``: UPPER, lower, Title Words or Sentence."""
    letters = [c for c in source if c.isalpha()]
    if not letters:
        return target
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return target.upper()
    if all(c.islower() for c in letters):
        return target.lower()
    words = source.split()
    if len(words) > 1 and all(_capitalised(w) for w in words):
        return " ".join(_upper_first(w) for w in target.split())
    if _capitalised(words[0]) and all(c.islower() for c in "".join(words[1:]) if c.isalpha()):
        return _upper_first(target)
    return target


def swap_terms(text: str, pairs: SwapPairs) -> str:
    """``text`` with every listed term swapped for its counterpart, in both directions.

    See the module notes for the rules (whole words, longest phrase first, no double swapping,
    case copied from the replaced text).

    Args:
        text: The text to rewrite.
        pairs: ``(term, counterpart)`` pairs, e.g. from :func:`load_swap_pairs`.

    Example:
        >>> swap_terms("HE said: Women are... 'his' (mr. Smith)", [("he", "she"), ("women are", "men are"),
        ...                                                      ("his", "her"), ("mr.", "mrs.")])
        "SHE said: Men are... 'her' (mrs. Smith)"
    """
    return _swapper(_normalise_pairs(pairs))(text)


def _swapper(pairs: tuple[tuple[str, str], ...]) -> Callable[[str], str]:
    pattern, mapping = _compile(pairs)
    if pattern is None:
        return lambda text: text

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        target = mapping.get(_key(found))  # None only where case-insensitive matching and lower() disagree
        return found if target is None else _match_case(found, target)

    return functools.partial(pattern.sub, replace)


def counterfactual_texts(texts: Iterable[str], pairs: SwapPairs) -> tuple[list[int], list[str]]:
    """The counterfactual of every text that the swap changes.

    Returns:
        ``(indices, new_texts)``: positions of the changed texts in ``texts`` and their
        swapped versions, in the same order. Texts without a listed term are left out.

    Example:
        >>> counterfactual_texts(["a good actor", "a good film", "an actress"], [("actor", "actress")])
        ([0, 2], ['a good actress', 'an actor'])
    """
    swap = _swapper(_normalise_pairs(pairs))
    indices, new_texts = [], []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is {type(text).__name__}, expected str")
        swapped = swap(text)
        if swapped != text:
            indices.append(i)
            new_texts.append(swapped)
    return indices, new_texts


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _probabilities(predict_proba: Callable[[list[str]], Any], texts: list[str], batch_size: int) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        probs = np.asarray(predict_proba(batch), dtype=float)
        if probs.ndim == 1:  # probability of class 1 of a binary classifier
            probs = np.stack([1.0 - probs, probs], axis=1)
        if probs.ndim != 2 or probs.shape[0] != len(batch):
            raise ValueError(f"predict_proba must return an array [n_texts, n_classes] for {len(batch)} texts, "
                             f"got shape {probs.shape}")
        parts.append(probs)
    return np.concatenate(parts, axis=0)



def counterfactual_report(predict_proba: Callable[[list[str]], Any], texts: Sequence[str], pairs: SwapPairs, *,
                          batch_size: int = 64) -> dict[str, Any]:
    """How much swapping the group terms moves a classifier's predictions.

    Only the texts that the swap changes are scored (twice: original and counterfactual).
    With ``p`` and ``q`` the class probabilities of a text and of its counterfactual:

    * ``flip_rate``: share of changed texts whose predicted class (argmax, ties to the
      smaller class id) differs.
    * ``mean_abs_prob_change``: mean of ``|q[c] - p[c]|`` where ``c`` is the class predicted
      for the original text: how far the model's confidence in its own answer moved.
    * ``mean_tv_distance``: mean total-variation distance ``0.5 * sum_k |p[k] - q[k]|``, the
      change over all classes (equal to the previous one for two classes); ``max_tv_distance``
      is its largest value.

    Args:
        predict_proba: Maps a list of texts to class probabilities ``[n_texts, n_classes]``
            (a 1-D result is read as the probability of class 1 of a binary classifier).
        texts: The texts to test.
        pairs: ``(term, counterpart)`` pairs, e.g. from :func:`load_swap_pairs`.
        batch_size: Texts per ``predict_proba`` call.

    Returns:
        Plain JSON-ready dict: ``n_texts``, ``n_changed``, ``changed_share``, ``n_flipped``,
        ``flip_rate``, ``mean_abs_prob_change``, ``mean_tv_distance``, ``max_tv_distance``.
        The rates are ``None`` when no text was changed.

    Example:
        >>> def predict_proba(batch):  # "she" lowers the positive score
        ...     return np.array([[0.8, 0.2] if "she" in t.split() else [0.3, 0.7] for t in batch])
        >>> r = counterfactual_report(predict_proba, ["he left", "it rained", "she came"], [("he", "she")])
        >>> r["n_changed"], r["flip_rate"], round(r["mean_tv_distance"], 6)
        (2, 1.0, 0.5)
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    texts = list(texts)
    indices, new_texts = counterfactual_texts(texts, pairs)
    if not indices:
        return counterfactual_scores(np.zeros((0, 2)), np.zeros((0, 2)), n_texts=len(texts))
    original = _probabilities(predict_proba, [texts[i] for i in indices], batch_size)
    swapped = _probabilities(predict_proba, new_texts, batch_size)
    if original.shape != swapped.shape:
        raise ValueError(f"predict_proba returned {original.shape[1]} classes for the originals but "
                         f"{swapped.shape[1]} for the counterfactuals")
    return counterfactual_scores(original, swapped, n_texts=len(texts))


def counterfactual_scores(original: Any, counterfactual: Any, *, n_texts: int | None = None) -> dict[str, Any]:
    """The measures of :func:`counterfactual_report` from probabilities already computed.

    Use it when the model has scored the changed texts and their counterfactuals elsewhere (a
    study tokenizes the counterfactuals once and predicts on them in every trial); the
    definitions are those of :func:`counterfactual_report`.

    Args:
        original: Class probabilities of the changed texts, ``[n_changed, n_classes]``.
        counterfactual: Class probabilities of their counterfactuals, same shape and order.
        n_texts: How many texts were tested in all (changed or not); default ``n_changed``.

    Returns:
        The dict of :func:`counterfactual_report`.

    Example:
        >>> r = counterfactual_scores([[0.3, 0.7], [0.9, 0.1]], [[0.6, 0.4], [0.8, 0.2]], n_texts=4)
        >>> r["n_flipped"], r["flip_rate"], round(r["mean_abs_prob_change"], 6), r["changed_share"]
        (1, 0.5, 0.2, 0.5)
    """
    p = np.asarray(original, dtype=float)
    q = np.asarray(counterfactual, dtype=float)
    if p.ndim != 2 or p.shape != q.shape:
        raise ValueError(f"original and counterfactual must be probability arrays of the same shape "
                         f"[n_changed, n_classes], got {p.shape} and {q.shape}")
    n_changed = p.shape[0]
    if n_texts is None:
        n_texts = n_changed
    if n_texts < n_changed:
        raise ValueError(f"n_texts ({n_texts}) must be at least the number of changed texts ({n_changed})")
    report: dict[str, Any] = {"n_texts": int(n_texts), "n_changed": n_changed,
                              "changed_share": finite_or_none(n_changed / n_texts) if n_texts else None,
                              "n_flipped": 0, "flip_rate": None, "mean_abs_prob_change": None,
                              "mean_tv_distance": None, "max_tv_distance": None}
    if n_changed == 0:
        return report
    predicted = p.argmax(axis=1)
    flipped = q.argmax(axis=1) != predicted
    rows = np.arange(n_changed)
    tv = 0.5 * np.abs(p - q).sum(axis=1)
    report.update(
        n_flipped=int(flipped.sum()),
        flip_rate=float(flipped.mean()),
        mean_abs_prob_change=float(np.abs(q[rows, predicted] - p[rows, predicted]).mean()),
        mean_tv_distance=float(tv.mean()),
        max_tv_distance=float(tv.max()),
    )
    return report
