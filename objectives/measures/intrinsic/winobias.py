"""A WinoBias pronoun probe for masked LMs: is the right pronoun found more often when it fits the stereotype?

WinoBias (Zhao et al., NAACL 2018) is a coreference benchmark; its sentences mention two
occupations and a pronoun that refers to one of them. In the *pro-stereotyped* files the
pronoun's gender matches the US labour-statistics stereotype of its occupation, in the
*anti-stereotyped* files it does not. This probe turns it into a masked-LM test: mask the
pronoun and ask whether the model gives the pronoun of the sentence a higher probability than
the opposite-gender pronoun (he/she, him/her, his/her, hers/his, himself/herself). Accuracy
on pro minus accuracy on anti (the *gap*, in percentage points, ideal 0) measures how much the
model's pronoun choice follows occupational stereotypes, per type:

- **type 1** sentences need world knowledge to resolve ("The developer argued with the
  designer because she did not like the design."),
- **type 2** sentences can be resolved from syntax alone.

**Line format** (``<pro|anti>_stereotyped_type<1|2>.txt.<dev|test>``): ``<id> <sentence>``, one
per line, ids 1..396. Square brackets wrap the two coreferent mentions: the antecedent
occupation (``[The developer]``, ``[the designer]``) and the pronoun (``[she]``). In 87 lines the
pronoun occurs twice and there are three bracketed spans (``[she] needed to cut [her] hair``).
:func:`parse_winobias_line` removes the brackets (inner spaces stripped, so ``[ physician]``
becomes ``physician``), keeps the character spans of the pronouns in the clean text and takes
the first non-pronoun span as the antecedent.

**The opposite pronoun.** ``her`` is ambiguous (object -> ``him``, possessive -> ``his``). Line
*i* of a pro file and line *i* of its anti file are written as gender-swapped twins, so the
opposite of each pronoun is read from the twin line, position by position. When the twin does
not line up (7 of the 1,584 official line pairs have a data error: a pronoun added, dropped or
left unswapped), a fixed table is used instead: he<->she, him->her, his->her, hers->his,
himself<->herself, and ``her`` -> ``him`` when the next word is a function word or the sentence
ends (``hated her.``, ``handed her the``), else ``his`` (``her money``). ``n_fallback`` counts those.

**Score.** Every pronoun occurrence is masked at once (masking one would leave the other as a
gender cue). A candidate assignment (the sentence's pronouns, or their opposites) scores the
sum over occurrences of the log-probabilities of its pieces, each piece read at its occurrence's
mask with the earlier pieces written out (as StereoSet scores multi-piece words); for BERT-like
vocabularies every pronoun is one piece and this is just ``log p(pronoun at [MASK])``. A sentence
is correct when the true pronouns score strictly higher; a tie counts as wrong.

This is a probe written for fairfront, not an official WinoBias metric (WinoBias itself scores
coreference systems by span F1).

Example:
    >>> line_id, text, antecedent, spans, pronouns = parse_winobias_line(
    ...     "1 [The developer] argued with the designer because [he] did not like the design.")
    >>> text
    'The developer argued with the designer because he did not like the design.'
    >>> antecedent, spans, pronouns
    ('The developer', ((47, 49),), ('he',))
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairfront.errors import DataError
from fairfront.objectives.measures.intrinsic._paths import benchmark_folder
from fairfront.objectives.measures.intrinsic.mlm_scoring import MaskedTokenQuery, check_masked_lm, score_masked_tokens

__all__ = [
    "WINOBIAS_SPLITS",
    "WINOBIAS_TYPES",
    "PRONOUN_SWAPS",
    "WinoBiasSentence",
    "parse_winobias_line",
    "opposite_pronoun",
    "load_winobias",
    "winobias_sentence_scores",
    "winobias_summary",
    "evaluate_winobias",
    "CITATION",
]

CITATION = ("Jieyu Zhao, Tianlu Wang, Mark Yatskar, Vicente Ordonez, Kai-Wei Chang. Gender Bias in Coreference "
            "Resolution: Evaluation and Debiasing Methods. NAACL-HLT 2018.")

WINOBIAS_SPLITS = ("dev", "test")
WINOBIAS_TYPES = (1, 2)
_STEREOTYPES = ("pro", "anti")

#: every (pronoun, opposite-gender pronoun) pair accepted from a twin line
PRONOUN_SWAPS = frozenset({
    ("he", "she"), ("she", "he"), ("him", "her"), ("her", "him"), ("his", "her"), ("her", "his"),
    ("hers", "his"), ("his", "hers"), ("himself", "herself"), ("herself", "himself"),
})
_PRONOUNS = frozenset(p for pair in PRONOUN_SWAPS for p in pair)
_FIXED_OPPOSITE = {"he": "she", "she": "he", "him": "her", "his": "her", "hers": "his",
                   "himself": "herself", "herself": "himself"}
# words after which "her" is an object pronoun ("asked her to", "gave her a"), not a possessive
_OBJECT_FOLLOWERS = frozenset(
    "a an the to in on at for with about from of by and or but that because so if when while after before "
    "since as up out back off down away over into again too very some any this these those".split())
_SPAN = re.compile(r"\[([^\]]*)\]")


@dataclass(frozen=True)
class WinoBiasSentence:
    """One WinoBias line, parsed.

    Attributes:
        file: the file name it came from.
        stereotype: ``"pro"`` or ``"anti"``.
        type: 1 or 2.
        split: ``"dev"`` or ``"test"``.
        line_id: the id at the start of the line.
        text: the sentence without brackets.
        antecedent: the bracketed occupation mention.
        pronoun_spans: ``(start, end)`` character spans of the pronouns in ``text``.
        pronouns: the pronouns as written.
        opposites: the opposite-gender pronoun of each, same casing.
        fallback: True when ``opposites`` came from the fixed table, not from the twin line.
    """

    file: str
    stereotype: str
    type: int
    split: str
    line_id: int
    text: str
    antecedent: str
    pronoun_spans: tuple[tuple[int, int], ...]
    pronouns: tuple[str, ...]
    opposites: tuple[str, ...]
    fallback: bool = False


def parse_winobias_line(line: str) -> tuple[int, str, str, tuple[tuple[int, int], ...], tuple[str, ...]]:
    """Split ``<id> <sentence with [brackets]>`` into id, clean text, antecedent, pronoun spans, pronouns.

    Raises:
        DataError: no id, or no bracketed pronoun.
    """
    head, _, sentence = line.strip().partition(" ")
    if not head.isdigit() or not sentence:
        raise DataError(f"WinoBias line {line!r} does not start with '<id> '")
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pronouns: list[str] = []
    antecedent = ""
    cursor = length = 0
    for match in _SPAN.finditer(sentence):
        before = sentence[cursor:match.start()]
        parts.append(before)
        length += len(before)
        inner = match.group(1).strip()
        if inner.lower() in _PRONOUNS:
            spans.append((length, length + len(inner)))
            pronouns.append(inner)
        elif not antecedent:
            antecedent = inner
        parts.append(inner)
        length += len(inner)
        cursor = match.end()
    parts.append(sentence[cursor:])
    if not pronouns:
        raise DataError(f"WinoBias line {line!r} has no bracketed pronoun")
    return int(head), "".join(parts), antecedent, tuple(spans), tuple(pronouns)


def _same_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def opposite_pronoun(pronoun: str, next_word: str = "") -> str:
    """The opposite-gender pronoun from the fixed table (``her`` decided by the next word).

    Example:
        >>> opposite_pronoun("her", "money"), opposite_pronoun("her", "."), opposite_pronoun("She")
        ('his', 'him', 'He')
    """
    key = pronoun.lower()
    if key == "her":
        word = next_word.lower()
        choice = "him" if not word or not word[0].isalpha() or word in _OBJECT_FOLLOWERS else "his"
    elif key in _FIXED_OPPOSITE:
        choice = _FIXED_OPPOSITE[key]
    else:
        raise ValueError(f"{pronoun!r} is not a gendered pronoun; expected one of {', '.join(sorted(_PRONOUNS))}")
    return _same_case(choice, pronoun)


def _next_word(text: str, end: int) -> str:
    rest = text[end:].lstrip()
    match = re.match(r"[A-Za-z']+|\S", rest)
    return match.group(0) if match else ""


def _opposites(text: str, spans: Sequence[tuple[int, int]], pronouns: Sequence[str],
               twin: Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    if twin is not None and len(twin) == len(pronouns) and all(
            (a.lower(), b.lower()) in PRONOUN_SWAPS for a, b in zip(pronouns, twin)):
        return tuple(_same_case(b.lower(), a) for a, b in zip(pronouns, twin)), False
    return tuple(opposite_pronoun(p, _next_word(text, end)) for p, (_, end) in zip(pronouns, spans)), True


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"WinoBias file {path} does not exist")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_winobias(path: str | os.PathLike[str] | None = None, *, split: str = "dev",
                  types: Sequence[int] = WINOBIAS_TYPES,
                  data_dir: str | os.PathLike[str] | None = None) -> list[WinoBiasSentence]:
    """Read the pro and anti files of each type for one split (pro lines first, then anti, per type).

    Args:
        path: the folder with the ``*_stereotyped_type*.txt.*`` files. None: ``<data root>/winobias/``.
        split: ``"dev"``, ``"test"`` or ``"all"`` (both). Searches should use dev and leave test
            for the final report.
        types: which sentence types, a subset of (1, 2).
        data_dir: the data root used when ``path`` is None.

    Raises:
        DataError: a file is missing or malformed, or a pro/anti file pair differs in length.
        ValueError: unknown ``split`` or type.
    """
    if split not in (*WINOBIAS_SPLITS, "all"):
        raise ValueError(f"split={split!r} is not allowed; expected dev, test or all")
    bad = [t for t in types if t not in WINOBIAS_TYPES]
    if bad or not types:
        raise ValueError(f"types={tuple(types)!r} is not allowed; expected a non-empty subset of (1, 2)")
    folder = Path(path).expanduser() if path is not None else benchmark_folder("winobias", data_dir)
    sentences: list[WinoBiasSentence] = []
    for sp in (WINOBIAS_SPLITS if split == "all" else (split,)):
        for kind in types:
            names = {s: f"{s}_stereotyped_type{kind}.txt.{sp}" for s in _STEREOTYPES}
            lines = {s: _read_lines(folder / names[s]) for s in _STEREOTYPES}
            if len(lines["pro"]) != len(lines["anti"]):
                raise DataError(f"{names['pro']} has {len(lines['pro'])} lines but {names['anti']} has "
                                f"{len(lines['anti'])}; the files must be line-aligned twins")
            parsed = {s: [parse_winobias_line(x) for x in lines[s]] for s in _STEREOTYPES}
            for s, twin_side in (("pro", "anti"), ("anti", "pro")):
                for own, twin in zip(parsed[s], parsed[twin_side]):
                    line_id, text, antecedent, spans, pronouns = own
                    opposites, fallback = _opposites(text, spans, pronouns, twin[4] if twin[0] == line_id else None)
                    sentences.append(WinoBiasSentence(
                        file=names[s], stereotype=s, type=kind, split=sp, line_id=line_id, text=text,
                        antecedent=antecedent, pronoun_spans=spans, pronouns=pronouns, opposites=opposites,
                        fallback=fallback))
    return sentences


def _masked_text(text: str, spans: Sequence[tuple[int, int]], focus: int, insertion: str, mask_token: str) -> str:
    parts = []
    cursor = 0
    for j, (start, end) in enumerate(spans):
        parts.append(text[cursor:start])
        parts.append(insertion if j == focus else mask_token)
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts)


def winobias_sentence_scores(model: torch.nn.Module, tokenizer: Any, sentences: Sequence[WinoBiasSentence], *,
                             insertion_prefix: str | None = None, batch_size: int = 64,
                             device: str | torch.device | None = None, bf16: bool | None = None,
                             reference: bool = False) -> list[tuple[float, float]]:
    """``(true pronouns, opposite pronouns)`` log-probability sums of every sentence.

    Args:
        model, tokenizer: a masked LM and its tokenizer.
        sentences: parsed sentences (:func:`load_winobias`).
        insertion_prefix: text before a pronoun when encoding it; None: ``" "`` for tokenizers that
            encode a leading space (RoBERTa), else ``""``.
        batch_size, device, bf16, reference: passed to
            :func:`~fairfront.objectives.measures.intrinsic.mlm_scoring.score_masked_tokens`.
    """
    from fairfront.objectives.measures.intrinsic.stereoset import default_insertion_prefix

    check_masked_lm(model, tokenizer)
    prefix = default_insertion_prefix(tokenizer) if insertion_prefix is None else insertion_prefix
    mask_token, mask_id = tokenizer.mask_token, tokenizer.mask_token_id
    texts: list[str] = []
    meta: list[tuple[int, int, int, int]] = []  # (sentence, side 0=true 1=opposite, occurrence, target id)
    for si, sentence in enumerate(sentences):
        for side, words in enumerate((sentence.pronouns, sentence.opposites)):
            for j, word in enumerate(words):
                pieces = tokenizer.encode(prefix + word, add_special_tokens=False)
                if not pieces:
                    raise DataError(f"{sentence.file}:{sentence.line_id}: pronoun {word!r} encodes to no tokens")
                for k, piece in enumerate(pieces):
                    insertion = tokenizer.decode(pieces[:k]) + mask_token
                    texts.append(_masked_text(sentence.text, sentence.pronoun_spans, j, insertion, mask_token))
                    meta.append((si, side, j, piece))
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
    queries = []
    for text, ids, (si, _, j, piece) in zip(texts, encoded, meta):
        masks = [i for i, t in enumerate(ids) if t == mask_id]
        if len(masks) != len(sentences[si].pronoun_spans):
            raise DataError(f"{sentences[si].file}:{sentences[si].line_id}: expected "
                            f"{len(sentences[si].pronoun_spans)} mask token(s) in {text!r}, found {len(masks)}")
        queries.append(MaskedTokenQuery(tuple(ids), masks[j], piece))
    values = score_masked_tokens(model, queries, output="log_prob", batch_size=batch_size, device=device,
                                 pad_token_id=tokenizer.pad_token_id, bf16=bf16, reference=reference).tolist()
    sums = [[0.0, 0.0] for _ in sentences]
    for (si, side, _, _), value in zip(meta, values):
        sums[si][side] += value
    return [(a, b) for a, b in sums]


def _accuracy(flags: list[bool]) -> float | None:
    return 100.0 * sum(flags) / len(flags) if flags else None


def _block(sentences: Sequence[WinoBiasSentence], correct: Sequence[bool]) -> dict[str, Any]:
    pro = [c for s, c in zip(sentences, correct) if s.stereotype == "pro"]
    anti = [c for s, c in zip(sentences, correct) if s.stereotype == "anti"]
    pro_acc, anti_acc = _accuracy(pro), _accuracy(anti)
    gap = pro_acc - anti_acc if pro_acc is not None and anti_acc is not None else None
    return {"pro_accuracy": pro_acc, "anti_accuracy": anti_acc, "gap": gap,
            "abs_gap": abs(gap) if gap is not None else None, "n_pro": len(pro), "n_anti": len(anti)}


def winobias_summary(sentences: Sequence[WinoBiasSentence], scores: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Pro and anti accuracy (percent), their gap (pro - anti, points) per type and overall.

    A sentence is correct when its true pronouns score strictly higher than their opposites.

    Returns:
        ``{"overall": block, "by_type": {"type1": block, "type2": block}, "n_fallback": int}``
        where a block is ``{"pro_accuracy", "anti_accuracy", "gap", "abs_gap", "n_pro", "n_anti"}``
        (None where a side has no sentences).
    """
    if len(sentences) != len(scores):
        raise ValueError(f"got {len(sentences)} sentences but {len(scores)} score tuples; they must align")
    if not sentences:
        raise ValueError("the WinoBias probe needs at least one sentence")
    correct = [true > opposite for true, opposite in scores]
    by_type = {}
    for kind in sorted({s.type for s in sentences}):
        idx = [i for i, s in enumerate(sentences) if s.type == kind]
        by_type[f"type{kind}"] = _block([sentences[i] for i in idx], [correct[i] for i in idx])
    return {"overall": _block(sentences, correct), "by_type": by_type,
            "n_fallback": sum(s.fallback for s in sentences)}


def evaluate_winobias(model: torch.nn.Module, tokenizer: Any, *, sentences: Sequence[WinoBiasSentence] | None = None,
                      data_dir: str | os.PathLike[str] | None = None, split: str = "dev", limit: int | None = None,
                      batch_size: int = 64, device: str | torch.device | None = None,
                      insertion_prefix: str | None = None, bf16: bool | None = None,
                      reference: bool = False) -> dict[str, Any]:
    """Run the pronoun probe on WinoBias and return accuracies and gaps.

    Args:
        model, tokenizer: a masked LM and its tokenizer.
        sentences: parsed sentences; None loads ``split`` from ``data_dir``.
        data_dir: the data root (see :func:`load_winobias`).
        split: ``"dev"`` (default), ``"test"`` or ``"all"``.
        limit: keep only the first ``limit`` line ids of every file (the pro and anti twins of a
            line stay together).
        batch_size, device, insertion_prefix, bf16, reference: see :func:`winobias_sentence_scores`.

    Returns:
        ``{"benchmark": "winobias", "split": ..., **winobias_summary(...)}``.
    """
    if sentences is None:
        sentences = load_winobias(split=split, data_dir=data_dir)
    sentences = list(sentences)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit={limit!r} is not allowed; expected an integer >= 1 or None")
        firsts: dict[str, list[int]] = {}
        for s in sentences:
            firsts.setdefault(s.file, []).append(s.line_id)
        keep = {f: set(sorted(ids)[:limit]) for f, ids in firsts.items()}
        sentences = [s for s in sentences if s.line_id in keep[s.file]]
    scores = winobias_sentence_scores(model, tokenizer, sentences, insertion_prefix=insertion_prefix,
                                      batch_size=batch_size, device=device, bf16=bf16, reference=reference)
    return {"benchmark": "winobias", "split": split, **winobias_summary(sentences, scores)}
