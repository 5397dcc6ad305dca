"""GAP: gender-balanced ambiguous pronouns in Wikipedia snippets, as 3-way classification.

Citation: Kellie Webster, Marta Recasens, Vera Axelrod, Jason Baldridge. *Mind the GAP: A
Balanced Corpus of Gendered Ambiguous Pronouns.* TACL 6, 2018.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

from fairfront.errors import ConfigError, DataError
from fairfront.objectives.data.datasets._dataset import TextDataset
from fairfront.objectives.data.datasets._paths import require_file

__all__ = ["CITATION", "FEMININE", "FILES", "GROUP_NAMES", "LABEL_NAMES", "MARKERS", "load_gap", "mark_spans"]

CITATION = ("Kellie Webster, Marta Recasens, Vera Axelrod, Jason Baldridge. Mind the GAP: A Balanced Corpus of "
            "Gendered Ambiguous Pronouns. TACL 6, 2018.")

FILES = {"train": "gap-development.tsv", "validation": "gap-validation.tsv", "test": "gap-test.tsv"}
"""fairfront split -> GAP file (development is GAP's training split, as in the ``gap`` dataset card)."""

LABEL_NAMES = ("A", "B", "NEITHER")
GROUP_NAMES = ("feminine", "masculine")
FEMININE = frozenset({"she", "her", "hers", "herself"})
MARKERS = {"A": ("<A>", "</A>"), "B": ("<B>", "</B>"), "P": ("<P>", "</P>")}
"""Span -> (opening, closing) marker written around it in the text."""

_CONTEXTS = ("text", "sentences")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")
_COLUMNS = ("ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref", "B", "B-offset", "B-coref")


def load_gap(folder: Path, *, seed: int = 0, context: str = "text") -> TextDataset:
    """Read the three GAP TSV files as a 3-way task: does the pronoun refer to A, B or neither?

    Files are read exactly as the SOURCE.md says (tab-separated, ``csv.QUOTE_NONE``: texts contain
    quote characters). Official splits are kept: ``gap-development`` -> train, ``gap-validation``
    -> validation, ``gap-test`` -> test. Label: ``A`` if ``A-coref`` is TRUE, ``B`` if ``B-coref``
    is TRUE, else ``NEITHER`` (a row with both TRUE is refused). Group: ``feminine`` when the
    pronoun is she / her / hers / herself (any case), else ``masculine``; every split is 50/50.

    A sentence classifier cannot see offsets, so the three spans are **marked in the text**:
    candidate A as ``<A>name</A>``, candidate B as ``<B>name</B>`` and the pronoun as
    ``<P>pronoun</P>``, inserted at the stated character offsets (each offset is checked
    against its string first). Example: ``... Phoebe Thomas played <A>Cheryl Cassidy</A>,
    <B>Pauline</B>'s friend ... Dumped <P>her</P> boyfriend ...``. Snippets average ~430
    characters (~100 word pieces); with a short ``max_length`` use ``context="sentences"``,
    which keeps only the sentences from the first to the last marked span (sentence ends:
    ``.``, ``!`` or ``?`` followed by white space), so truncation cannot cut the spans off.
    ``seed`` is unused: the split is the official one.

    Citation: Webster, Recasens, Axelrod, Baldridge. *Mind the GAP: A Balanced Corpus of Gendered
    Ambiguous Pronouns.* TACL 6, 2018.

    Args:
        folder: The ``gap_coreference/`` folder.
        seed: Unused (official splits).
        context: ``"text"`` (the whole snippet) or ``"sentences"`` (the sentences spanning the marks).
    """
    del seed
    if context not in _CONTEXTS:
        raise ConfigError("data.options.context", context, "one of: " + ", ".join(_CONTEXTS))
    frames = []
    for split, name in FILES.items():
        path = require_file("gap", folder / name)
        raw = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
        missing = [c for c in _COLUMNS if c not in raw.columns]
        if missing:
            raise DataError(f"gap: {name} has no column {missing[0]!r}; columns are: {', '.join(raw.columns)}")
        texts, labels, groups = [], [], []
        for row in raw[list(_COLUMNS)].itertuples(index=False, name=None):
            ident, text, pronoun, p_off, a, a_off, a_coref, b, b_off, b_coref = row
            spans = {"P": (pronoun, p_off), "A": (a, a_off), "B": (b, b_off)}
            try:
                offsets = {key: int(off) for key, (_, off) in spans.items()}
            except ValueError:
                raise DataError(f"gap: {name} row {ident}: an offset is not an integer") from None
            for key, (string, _) in spans.items():
                if text[offsets[key]:offsets[key] + len(string)] != string:
                    raise DataError(f"gap: {name} row {ident}: {string!r} is not at offset {offsets[key]}")
            a_true, b_true = _flag(a_coref, name, ident), _flag(b_coref, name, ident)
            if a_true and b_true:
                raise DataError(f"gap: {name} row {ident}: both A and B are marked coreferent")
            located = {key: (offsets[key], spans[key][0]) for key in spans}
            if context == "sentences":
                text, located = _sentence_window(text, located)
            texts.append(mark_spans(text, located))
            labels.append("A" if a_true else "B" if b_true else "NEITHER")
            groups.append(GROUP_NAMES[0] if pronoun.strip().lower() in FEMININE else GROUP_NAMES[1])
        frames.append(pd.DataFrame({"text": texts, "label": labels, "group": groups, "split": split}))
    frame = pd.concat(frames, ignore_index=True).astype("string")
    return TextDataset(name="gap", frame=frame, label_names=LABEL_NAMES, group_names=GROUP_NAMES, citation=CITATION)


def mark_spans(text: str, spans: dict[str, tuple[int, str]]) -> str:
    """Wrap each span ``key -> (offset, string)`` of ``text`` in its :data:`MARKERS`.

    Spans are inserted from the last to the first, so earlier offsets stay valid; overlapping
    spans are refused (GAP has none).

    Example:
        >>> mark_spans("Ann met Bo; she left.", {"A": (0, "Ann"), "B": (8, "Bo"), "P": (12, "she")})
        '<A>Ann</A> met <B>Bo</B>; <P>she</P> left.'
    """
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    for (_, (start, string)), (_, (next_start, _)) in zip(ordered, ordered[1:]):
        if start + len(string) > next_start:
            raise DataError(f"gap: spans overlap in {text[:60]!r}")
    for key, (start, string) in reversed(ordered):
        opening, closing = MARKERS[key]
        end = start + len(string)
        text = text[:start] + opening + text[start:end] + closing + text[end:]
    return text


def _sentence_window(text: str, spans: dict[str, tuple[int, str]]) -> tuple[str, dict[str, tuple[int, str]]]:
    first = min(start for start, _ in spans.values())
    last = max(start + len(string) for start, string in spans.values())
    begin, end = 0, len(text)
    for match in _SENTENCE_END.finditer(text):
        if match.end() <= first:
            begin = match.end()
        elif match.start() >= last:
            end = match.start() + len(match.group(0).rstrip())  # keep the full stop
            break
    return text[begin:end], {key: (start - begin, string) for key, (start, string) in spans.items()}


def _flag(value: str, name: str, ident: str) -> bool:
    value = value.strip().upper()
    if value not in ("TRUE", "FALSE"):
        raise DataError(f"gap: {name} row {ident}: coref flag {value!r} is not TRUE or FALSE")
    return value == "TRUE"
