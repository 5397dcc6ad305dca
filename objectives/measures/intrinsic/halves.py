"""Held-out halves of the intrinsic benchmarks, and scoring a model on both.

A search must not be tuned on the numbers it reports. Every benchmark's items are split once,
deterministically, into a ``validation`` half (the trial's objective values) and a ``test`` half
(kept in the trial's user attributes, like the classifier's test split):

- ``stereoset``: intrasentence clusters, stratified by domain (``bias_type``);
- ``crows_pairs``: pairs, stratified by ``bias_type``;
- ``winobias``: the official ``dev`` files are the validation half, the ``test`` files the test
  half (the dataset already ships the split);
- ``seat``: the *words* are split, once for all built-in tests (WEAT 6-8): a word is in the same
  half in every test that uses it (:func:`seat_word_halves`), so no bleached sentence appears in
  both halves.

The permutation uses :data:`SPLIT_SEED`, fixed and independent of the study seed, so every
trial and every study sees the same halves. A half keeps the permuted order, so
``intrinsic_limit = N`` (the first N items of each half) is a random, roughly stratified sample.

Example:
    >>> split_indices(["a", "a", "b", "b", "b"])["validation"]  # doctest: +SKIP
    [3, 0, 4]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fairfront.objectives.measures.intrinsic._registry import INTRINSIC_BENCHMARKS, evaluate_intrinsic
from fairfront.objectives.measures.intrinsic.crows_pairs import load_crows_pairs
from fairfront.objectives.measures.intrinsic.seat import WEAT_WORD_LISTS, SeatSet, SeatTest, bleach
from fairfront.objectives.measures.intrinsic.stereoset import load_stereoset
from fairfront.objectives.measures.intrinsic.winobias import load_winobias

__all__ = ["HALVES", "SPLIT_SEED", "split_indices", "seat_word_halves", "load_halves", "score_halves",
           "headline_biases"]

HALVES = ("validation", "test")
SPLIT_SEED = 20_200_513
"""The fixed seed of every benchmark's validation/test split (never the study seed)."""

_SEAT_KEYS = ("targ1", "targ2", "attr1", "attr2")


def split_indices(strata: Sequence[str], *, seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """Indices of a validation and a test half: each stratum split in two (validation gets the odd one).

    Both halves list their indices in one seeded permutation's order.
    """
    order = np.random.default_rng(seed).permutation(len(strata)).tolist()
    by_stratum: dict[str, list[int]] = {}
    for i in order:
        by_stratum.setdefault(strata[i], []).append(i)
    validation = {i for idx in by_stratum.values() for i in idx[:(len(idx) + 1) // 2]}
    return {"validation": [i for i in order if i in validation], "test": [i for i in order if i not in validation]}


def _split(items: Sequence[Any], strata: Sequence[str]) -> dict[str, list[Any]]:
    return {half: [items[i] for i in idx] for half, idx in split_indices(strata).items()}


def seat_word_halves(word_lists: dict[str, dict[str, tuple[str, Sequence[str]]]] = WEAT_WORD_LISTS) -> dict[str, str]:
    """The half of every SEAT word, one for all tests: a word shared by two tests is in the same half in both.

    Tests share words (WEAT-7 and WEAT-8 share eleven), so splitting each test on its own would
    put the same sentences in both halves. Concepts are visited in order; a word already placed
    keeps its half, and the concept's new words (in a :data:`SPLIT_SEED` permutation) go to the
    half that has fewer of the concept's words so far (validation on a tie).

    Raises:
        ValueError: a concept's words would all fall into one half.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    placed: dict[str, str] = {}
    for name, lists in word_lists.items():
        for key in _SEAT_KEYS:
            words = list(dict.fromkeys(lists[key][1]))
            counts = {half: sum(placed.get(w) == half for w in words) for half in HALVES}
            fresh = [w for w in words if w not in placed]
            for i in rng.permutation(len(fresh)):
                half = "validation" if counts["validation"] <= counts["test"] else "test"
                placed[fresh[i]] = half
                counts[half] += 1
            if min(counts.values()) == 0:
                raise ValueError(f"SEAT test {name!r}: every word of {key} is in one half; a concept needs words "
                                 "in both")
    return placed


def _seat_halves() -> dict[str, list[SeatTest]]:
    half_of = seat_word_halves()
    out: dict[str, list[SeatTest]] = {half: [] for half in HALVES}
    for name, lists in WEAT_WORD_LISTS.items():
        for half in HALVES:
            sets = {key: SeatSet(category=lists[key][0],
                                 examples=bleach([w for w in lists[key][1] if half_of[w] == half]))
                    for key in _SEAT_KEYS}
            out[half].append(SeatTest(name=name, **sets))
    return out


def load_halves(names: Sequence[str], *, data_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, list]]:
    """``{benchmark: {"validation": items, "test": items}}`` for each name (items as the evaluators take them).

    Raises:
        DataError: a benchmark's data folder is missing or malformed.
        KeyError: an unknown benchmark name.
    """
    halves: dict[str, dict[str, list]] = {}
    for name in names:
        if name not in INTRINSIC_BENCHMARKS:
            raise KeyError(name)
        if name == "stereoset":
            clusters = load_stereoset(task="intrasentence", data_dir=data_dir)
            halves[name] = _split(clusters, [c.bias_type for c in clusters])
        elif name == "crows_pairs":
            pairs = load_crows_pairs(data_dir=data_dir)
            halves[name] = _split(pairs, [p.bias_type for p in pairs])
        elif name == "winobias":
            halves[name] = {"validation": load_winobias(split="dev", data_dir=data_dir),
                            "test": load_winobias(split="test", data_dir=data_dir)}
        else:
            halves[name] = _seat_halves()
    return halves


def score_halves(model_for: Any, tokenizer: Any, halves: dict[str, dict[str, list]], *, limit: int | None = None,
                 batch_size: int = 64, device: str | torch.device | None = None,
                 bf16: bool = False) -> dict[str, dict[str, dict]]:
    """Score each benchmark on both halves: ``{name: {"validation": result, "test": result}}``.

    Args:
        model_for: a callable ``needs -> model`` (``"masked_lm"`` or ``"encoder"``, see
            :class:`~fairfront.objectives.measures.intrinsic.IntrinsicBenchmark`), so that a masked LM is
            built only when a benchmark needs one; or a model used for every benchmark.
        tokenizer: the model's tokenizer.
        halves: from :func:`load_halves`.
        limit: the first ``limit`` items of each half (see each evaluator's ``limit``).
        bf16: bf16 autocast where ``device`` is CUDA (``[bias] intrinsic_bf16``); float32 elsewhere
            and by default.
    """
    bf16 = bool(bf16) and device is not None and torch.device(device).type == "cuda"
    get = model_for if callable(model_for) and not isinstance(model_for, torch.nn.Module) else (lambda _: model_for)
    out: dict[str, dict[str, dict]] = {}
    for name, parts in halves.items():
        model = get(INTRINSIC_BENCHMARKS[name].needs)
        out[name] = {half: evaluate_intrinsic(name, model, tokenizer, items=parts[half], limit=limit,
                                              batch_size=batch_size, device=device, bf16=bf16) for half in HALVES}
    return out


def headline_biases(scores: dict[str, dict[str, dict]], half: str) -> dict[str, float | None]:
    """``{name: |headline - ideal|}`` on one half (the values a study minimises)."""
    return {name: parts[half]["headline"]["bias"] for name, parts in scores.items()}
