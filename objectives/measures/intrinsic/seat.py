"""SEAT / WEAT effect sizes: association between target and attribute concepts in sentence embeddings.

WEAT (Caliskan, Bryson & Narayanan, Science 2017) measures how much more strongly one set of
target words ``X`` associates with attribute words ``A`` than with ``B``, compared with a second
target set ``Y``. SEAT (May, Wang, Bordia, Bowman & Rudinger, NAACL 2019) applies it to sentence
encoders by putting each word into semantically "bleached" template sentences. With
``s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)`` the effect size is

    d = (mean_{x in X} s(x, A, B) - mean_{y in Y} s(y, A, B)) / std_{w in X u Y} s(w, A, B)

with the **sample** standard deviation (``ddof=1``): the SEAT code (W4ngatang/sent-bias
``weat.py``, copied unchanged into McGill-NLP/bias-bench) uses ``np.std(..., ddof=1)``. ``d`` is
positive when ``X`` is closer to ``A`` (and ``Y`` to ``B``); 0 means no association.

The p-value is SEAT's one-sided permutation test: the share of equal-size re-partitions
``(X_i, Y_i)`` of ``X u Y`` whose statistic ``sum_{x in X_i} s(x, A, B)`` is at least the observed
one. All partitions are enumerated when there are at most ``n_samples`` of them; otherwise
``n_samples - 1`` random ones (seeded, reproducible) are drawn and the observed partition is
counted once, as SEAT does. Equal statistics count as "at least" (SEAT's conservative rule),
with a 1e-12 relative tolerance so that summation order cannot decide a tie.

Embeddings are the last hidden layer of the encoder, **mean-pooled** over all tokens
(special tokens included, padding excluded; bias-bench's SEAT runner does this) or the
``[CLS]`` vector (``pooling="cls"``). Cosine similarity makes the SEAT normalisation step moot.
As in SEAT, repeated sentences within one set are used once.

Built-in tests (word lists of Caliskan et al. 2017, Science 356(6334), supplementary
materials, as distributed with SEAT), each word put into the two bleached templates
``"This is <word>."`` and ``"<word> is here."`` (two of SEAT's templates; SEAT's full files use
eight to fourteen templates per word and can be loaded as JSON):

- ``weat6``: male vs female names x career vs family,
- ``weat7``: math vs arts x male vs female terms,
- ``weat8``: science vs arts x male vs female terms.

User tests use SEAT's JSON layout: ``{"targ1": {"category": ..., "examples": [...]}, "targ2": ...,
"attr1": ..., "attr2": ...}``.

Example:
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.1], [0.9, 0.0]]); y = np.array([[0.1, 1.0], [0.0, 0.8]])
    >>> a = np.array([[1.0, 0.0]]); b = np.array([[0.0, 1.0]])
    >>> round(seat_effect_size(x=x, y=y, a=a, b=b), 3)
    1.729
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairfront.objectives.measures.intrinsic.mlm_scoring import inference_context, resolve_device

__all__ = [
    "SEAT_TEMPLATES",
    "WEAT_WORD_LISTS",
    "BUILTIN_SEAT_TESTS",
    "POOLINGS",
    "SeatSet",
    "SeatTest",
    "bleach",
    "load_seat_test",
    "encode_sentences",
    "seat_association",
    "seat_effect_size",
    "seat_p_value",
    "evaluate_seat",
    "CITATION",
]

CITATION = ("Chandler May, Alex Wang, Shikha Bordia, Samuel R. Bowman, Rachel Rudinger. On Measuring Social "
            "Biases in Sentence Encoders. NAACL 2019; Aylin Caliskan, Joanna J. Bryson, Arvind Narayanan. "
            "Semantics derived automatically from language corpora contain human-like biases. Science 2017.")

SEAT_TEMPLATES = ("This is {}.", "{} is here.")
POOLINGS = ("mean", "cls")
_KEYS = ("targ1", "targ2", "attr1", "attr2")

#: WEAT word lists of Caliskan et al. (2017), as distributed with SEAT (W4ngatang/sent-bias tests/weat{6,7,8}.txt)
WEAT_WORD_LISTS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "weat6": {
        "targ1": ("MaleNames", ("John", "Paul", "Mike", "Kevin", "Steve", "Greg", "Jeff", "Bill")),
        "targ2": ("FemaleNames", ("Amy", "Joan", "Lisa", "Sarah", "Diana", "Kate", "Ann", "Donna")),
        "attr1": ("Career", ("executive", "management", "professional", "corporation", "salary", "office",
                             "business", "career")),
        "attr2": ("Family", ("home", "parents", "children", "family", "cousins", "marriage", "wedding",
                             "relatives")),
    },
    "weat7": {
        "targ1": ("Math", ("math", "algebra", "geometry", "calculus", "equations", "computation", "numbers",
                           "addition")),
        "targ2": ("Arts", ("poetry", "art", "dance", "literature", "novel", "symphony", "drama", "sculpture")),
        "attr1": ("MaleTerms", ("male", "man", "boy", "brother", "he", "him", "his", "son")),
        "attr2": ("FemaleTerms", ("female", "woman", "girl", "sister", "she", "her", "hers", "daughter")),
    },
    "weat8": {
        "targ1": ("Science", ("science", "technology", "physics", "chemistry", "Einstein", "NASA", "experiment",
                              "astronomy")),
        "targ2": ("Arts", ("poetry", "art", "Shakespeare", "dance", "literature", "novel", "symphony", "drama")),
        "attr1": ("MaleTerms", ("brother", "father", "uncle", "grandfather", "son", "he", "his", "him")),
        "attr2": ("FemaleTerms", ("sister", "mother", "aunt", "grandmother", "daughter", "she", "hers", "her")),
    },
}


@dataclass(frozen=True)
class SeatSet:
    """One concept of a SEAT test: a category name and its example sentences."""

    category: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class SeatTest:
    """A SEAT test: targets ``targ1`` (X), ``targ2`` (Y) and attributes ``attr1`` (A), ``attr2`` (B)."""

    name: str
    targ1: SeatSet
    targ2: SeatSet
    attr1: SeatSet
    attr2: SeatSet

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, name: str = "custom") -> SeatTest:
        """Build a test from SEAT's JSON layout.

        Raises:
            ValueError: a key is missing, or a set has no examples.
        """
        sets = {}
        for key in _KEYS:
            entry = data.get(key) if isinstance(data, Mapping) else None
            if not isinstance(entry, Mapping) or not isinstance(entry.get("examples"), Sequence) \
                    or isinstance(entry.get("examples"), str):
                raise ValueError(f"SEAT test {name!r}: {key} must be {{'category': str, 'examples': [str, ...]}}")
            examples = tuple(dict.fromkeys(str(e) for e in entry["examples"]))  # SEAT keys sets by sentence
            if not examples:
                raise ValueError(f"SEAT test {name!r}: {key} has no examples")
            sets[key] = SeatSet(category=str(entry.get("category", key)), examples=examples)
        return cls(name=name, **sets)


def bleach(words: Sequence[str], templates: Sequence[str] = SEAT_TEMPLATES) -> tuple[str, ...]:
    """Every word in every template, word by word (``"This is John."``, ``"John is here."``, ...)."""
    return tuple(template.format(word) for word in words for template in templates)


def _builtin(name: str) -> SeatTest:
    lists = WEAT_WORD_LISTS[name]
    return SeatTest(name=name, **{k: SeatSet(category=lists[k][0], examples=bleach(lists[k][1])) for k in _KEYS})


BUILTIN_SEAT_TESTS: dict[str, SeatTest] = {name: _builtin(name) for name in WEAT_WORD_LISTS}


def load_seat_test(path: str | os.PathLike[str]) -> SeatTest:
    """Read a SEAT test file (``.jsonl``/``.json`` holding one JSON object); its name is the file stem."""
    file = Path(path).expanduser()
    with file.open(encoding="utf-8") as handle:
        data = json.load(handle)
    return SeatTest.from_json(data, name=file.stem)


def encode_sentences(model: torch.nn.Module, tokenizer: Any, sentences: Sequence[str], *, pooling: str = "mean",
                     batch_size: int = 64, device: str | torch.device | None = None,
                     bf16: bool | None = None) -> np.ndarray:
    """Sentence embeddings ``(n, hidden)`` from the last hidden layer, mean-pooled or ``[CLS]``.

    Works with a bare encoder (``AutoModel``) or any model with a ``base_model`` (a masked LM or
    a classifier: its encoder is used).

    Raises:
        ValueError: unknown ``pooling`` or ``batch_size`` below 1.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not allowed; expected one of {', '.join(POOLINGS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed; expected an integer >= 1")
    encoder = getattr(model, "base_model", model)
    dev = resolve_device(model, device)
    out = []
    was_training = model.training
    model.eval()
    try:
        with inference_context(dev, bf16):
            for start in range(0, len(sentences), batch_size):
                batch = tokenizer(list(sentences[start:start + batch_size]), padding=True, return_tensors="pt")
                mask = batch["attention_mask"].to(dev)
                hidden = encoder(input_ids=batch["input_ids"].to(dev), attention_mask=mask).last_hidden_state.float()
                if pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    weights = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
                out.append(pooled.double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.empty((0, 0))


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or len(v) == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array (n, dim), got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an embedding is all zeros; cosine similarity is undefined for it")
    return v / norms


def seat_association(*, w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)`` for every row of ``w``."""
    wu, au, bu = _unit(w), _unit(a), _unit(b)
    return (wu @ au.T).mean(axis=1) - (wu @ bu.T).mean(axis=1)


def _check_targets(x: np.ndarray, y: np.ndarray) -> None:
    if len(x) + len(y) < 3:
        raise ValueError(f"the effect size needs at least 3 target embeddings in X and Y together, "
                         f"got {len(x) + len(y)}")


def seat_effect_size(*, x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """WEAT/SEAT effect size ``d`` (sample std, ``ddof=1``, over ``X u Y``).

    Raises:
        ValueError: malformed embeddings, or fewer than 3 targets in total.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check_targets(x, y)
    sx = seat_association(w=x, a=a, b=b)
    sy = seat_association(w=y, a=a, b=b)
    return float((sx.mean() - sy.mean()) / np.concatenate([sx, sy]).std(ddof=1))


def seat_p_value(*, x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, n_samples: int = 10_000,
                 seed: int = 0) -> float:
    """One-sided permutation p-value of the SEAT test statistic (exact when affordable).

    Args:
        x, y, a, b: embeddings of the target sets X, Y and attribute sets A, B.
        n_samples: enumerate every partition when there are at most this many, else sample.
        seed: seed of the sampled permutations.

    Raises:
        ValueError: malformed embeddings or ``n_samples`` below 2.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples={n_samples!r} is not allowed; expected an integer >= 2")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check_targets(x, y)
    s = np.concatenate([seat_association(w=x, a=a, b=b), seat_association(w=y, a=a, b=b)])
    size, total_n = len(x), len(x) + len(y)
    observed = s[:size].sum()
    tol = 1e-12 * max(1.0, float(np.abs(s).sum()))
    if math.comb(total_n, size) <= n_samples:
        stats = np.fromiter((s[list(c)].sum() for c in itertools.combinations(range(total_n), size)), dtype=np.float64)
        return float(np.count_nonzero(stats >= observed - tol) / len(stats))
    rng = np.random.default_rng(seed)
    hits = 1  # the observed partition, counted once (SEAT's bias for a sampled test)
    remaining = n_samples - 1
    while remaining:
        chunk = min(remaining, 4096)
        order = rng.permuted(np.tile(np.arange(total_n), (chunk, 1)), axis=1)[:, :size]
        hits += int(np.count_nonzero(s[order].sum(axis=1) >= observed - tol))
        remaining -= chunk
    return hits / n_samples


def _resolve_tests(tests: Sequence[str | SeatTest | Mapping[str, Any]] | None) -> list[SeatTest]:
    if tests is None:
        return list(BUILTIN_SEAT_TESTS.values())
    resolved = []
    for i, test in enumerate(tests):
        if isinstance(test, SeatTest):
            resolved.append(test)
        elif isinstance(test, str):
            if test in BUILTIN_SEAT_TESTS:
                resolved.append(BUILTIN_SEAT_TESTS[test])
            elif Path(test).expanduser().is_file():
                resolved.append(load_seat_test(test))
            else:
                raise ValueError(f"SEAT test {test!r} is neither a built-in test "
                                 f"({', '.join(BUILTIN_SEAT_TESTS)}) nor an existing file")
        elif isinstance(test, Mapping):
            resolved.append(SeatTest.from_json(test, name=str(test.get("name", f"custom{i}"))))
        else:
            raise ValueError(f"SEAT test #{i} has type {type(test).__name__}; expected a name, a path, "
                             "a SeatTest or a SEAT JSON dict")
    return resolved


def evaluate_seat(model: torch.nn.Module, tokenizer: Any, *,
                  tests: Sequence[str | SeatTest | Mapping[str, Any]] | None = None, pooling: str = "mean",
                  n_samples: int = 10_000, seed: int = 0, limit: int | None = None, batch_size: int = 64,
                  device: str | torch.device | None = None, bf16: bool | None = None) -> dict[str, Any]:
    """Run SEAT tests on an encoder: effect size and p-value per test.

    Args:
        model, tokenizer: any ``transformers`` encoder (``AutoModel``; a masked LM or classifier
            is used through its ``base_model``) and its tokenizer.
        tests: built-in names (``weat6``, ``weat7``, ``weat8``), SEAT JSON file paths,
            :class:`SeatTest` objects or SEAT JSON dicts; None runs the built-in tests.
        pooling: ``"mean"`` or ``"cls"``.
        n_samples, seed: the permutation test (:func:`seat_p_value`).
        limit: use only the first ``limit`` sentences of every set (quick checks).
        batch_size, device, bf16: embedding computation (:func:`encode_sentences`).

    Returns:
        ``{"benchmark": "seat", "pooling": ..., "tests": {name: {"effect_size", "p_value",
        "categories", "n"}}, "mean_abs_effect_size": ...}``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} is not allowed; expected an integer >= 1 or None")
    results = {}
    for test in _resolve_tests(tests):
        sets = {k: getattr(test, k).examples[:limit] for k in _KEYS}
        emb = {k: encode_sentences(model, tokenizer, v, pooling=pooling, batch_size=batch_size, device=device,
                                   bf16=bf16) for k, v in sets.items()}
        results[test.name] = {
            "effect_size": seat_effect_size(x=emb["targ1"], y=emb["targ2"], a=emb["attr1"], b=emb["attr2"]),
            "p_value": seat_p_value(x=emb["targ1"], y=emb["targ2"], a=emb["attr1"], b=emb["attr2"],
                                    n_samples=n_samples, seed=seed),
            "categories": {k: getattr(test, k).category for k in _KEYS},
            "n": {k: len(v) for k, v in sets.items()},
        }
    mean_abs = float(np.mean([abs(r["effect_size"]) for r in results.values()])) if results else None
    return {"benchmark": "seat", "pooling": pooling, "tests": results, "mean_abs_effect_size": mean_abs}
