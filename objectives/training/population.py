"""The dense population, and what a compressed model forgot relative to it.

Hooker et al. (2019, "What do compressed deep neural networks forget?"; 2020, "Characterising
bias in compressed models") compare a compressed model with a *population* of dense models
trained with different seeds: an example is a Compression Identified Exemplar (CIE) when the
compressed model's prediction differs from the population's modal prediction. One dense model
would not do, because retraining with another seed already changes some predictions; the mode
over several seeds keeps only the changes compression caused.

A study with ``[bias] dense_population = N`` fine-tunes N dense models besides the teacher
(seeds ``seed + 1 ... seed + N``, the teacher's settings otherwise) when it is prepared; the
teacher is the population's first member, so it has ``N + 1`` models. Only their validation
and test predictions are kept. Each trial then reports (:func:`forgetting_measures`):

* ``cie``: :func:`~fairfront.objectives.measures.forgetting.cie_report` of the trial's model against the
  population (CIE fraction, accuracy on CIEs and on the rest, class and group make-up);
* ``disparate_impact``: :func:`~fairfront.objectives.measures.forgetting.disparate_impact` per class and
  per group against the dense teacher (which levels lost significantly more than the rest), and,
  given several compressed models (seeds) and a population,
  :func:`~fairfront.objectives.measures.forgetting.population_disparate_impact` per class
  (``population``: Hooker et al.'s Welch test across the two populations).

Example:
    >>> import numpy as np
    >>> y = np.array([0, 1, 1, 0])
    >>> population = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0]])
    >>> out = forgetting_measures(y, np.array([0, 1, 0, 1]), dense=population[0], population=population)
    >>> out["cie"]["cie_fraction"], out["cie"]["n_dense_models"]
    (0.5, 3)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fairfront.objectives.measures.forgetting import (
    cie_report,
    compression_identified_exemplars,
    disparate_impact,
    modal_predictions,
    population_disparate_impact,
)

__all__ = ["DensePopulation", "member_seeds", "train_population", "forgetting_measures", "POPULATION_SPLITS"]

POPULATION_SPLITS = ("validation", "test")
"""The splits whose population predictions are kept (training predictions are never scored)."""


@dataclass
class DensePopulation:
    """The dense models' predictions, the teacher first; plain arrays, so it pickles and caches.

    Attributes:
        seeds: Seed of each member, the teacher's first.
        predictions: Per split (``validation``, ``test``), class ids ``[n_members, n_examples]``.
        accuracies: Per split, each member's accuracy.
        seconds: Training time of the extra members (the teacher's is not included).
    """

    seeds: tuple[int, ...]
    predictions: dict[str, np.ndarray]
    accuracies: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.seeds)


def member_seeds(seed: int, n_extra: int) -> tuple[int, ...]:
    """Seeds of a population: the teacher's ``seed`` first, then ``seed + 1 ... seed + n_extra``.

    Example:
        >>> member_seeds(7, 3)
        (7, 8, 9, 10)
    """
    if n_extra < 0:
        raise ValueError(f"n_extra must be >= 0, got {n_extra}")
    return tuple(seed + k for k in range(n_extra + 1))


def train_population(n_extra: int, *, seed: int, teacher_logits: Mapping[str, np.ndarray],
                     labels: Mapping[str, np.ndarray], fit: Callable[[int], Mapping[str, np.ndarray]],
                     log: Callable[[str], None] = print) -> DensePopulation:
    """Fine-tune ``n_extra`` dense models and collect the population's predictions.

    Args:
        n_extra: Models to train besides the teacher (at least 1).
        seed: The teacher's seed; member ``k`` uses ``seed + k``.
        teacher_logits: The teacher's logits per split (the population's first member).
        labels: True class ids per split, for the accuracies in the log.
        fit: Trains one dense model with the given seed and returns its logits per split
            (the same training as the teacher's; the preparation supplies it).
        log: Progress, one line per member.
    """
    if n_extra < 1:
        raise ValueError(f"n_extra must be at least 1 (the teacher alone is not a population), got {n_extra}")
    seeds = member_seeds(seed, n_extra)
    preds = {s: [np.asarray(teacher_logits[s]).argmax(axis=1)] for s in POPULATION_SPLITS}
    started = time.perf_counter()
    for k, member_seed in enumerate(seeds[1:], start=1):
        t0 = time.perf_counter()
        logits = fit(member_seed)
        for s in POPULATION_SPLITS:
            preds[s].append(np.asarray(logits[s]).argmax(axis=1))
        accuracy = float((preds["validation"][-1] == labels["validation"]).mean())
        log(f"dense population member {k}/{n_extra} (seed {member_seed}) trained in "
            f"{time.perf_counter() - t0:.0f}s; validation accuracy {accuracy:.4f}")
    predictions = {s: np.stack(p).astype(np.int64) for s, p in preds.items()}
    accuracies = {s: [float(x) for x in (predictions[s] == np.asarray(labels[s])[None, :]).mean(axis=1)]
                  for s in POPULATION_SPLITS}
    return DensePopulation(seeds, predictions, accuracies, time.perf_counter() - started)


def forgetting_measures(y_true: np.ndarray, compressed: np.ndarray, *, dense: np.ndarray,
                        population: np.ndarray | None = None, groups: np.ndarray | None = None,
                        class_names: Sequence[str] | None = None, group_names: Sequence[str] | None = None,
                        alpha: float = 0.05) -> dict:
    """What the compressed model forgot: CIEs against the population, disparate impact against ``dense``.

    Args:
        y_true: True class ids.
        compressed: The compressed model's predictions, or ``[n_models, n_examples]`` for several
            compressed models (seeds): then disparate impact against ``dense`` uses their modal
            prediction, and with a population of two or more the Welch test is added.
        dense: The dense teacher's predictions (the disparate-impact reference).
        population: Dense predictions ``[n_members, n_examples]``; without it no ``cie`` entry.
        groups: Group id per example, ``-1`` for none; disparate impact by group uses the
            examples with a group, the CIE group make-up labels the others ``"(none)"``.
        class_names, group_names: Names by id, for the reports.
        alpha: Significance level of the disparate-impact tests (Benjamini-Hochberg).

    Returns:
        ``{"cie": ..., "disparate_impact": {"class": ..., "group": ..., "population": ...}}`` (``cie``
        only with a population, ``group`` only when some example has a group, ``population`` only
        with several compressed models and a population of two or more). ``cie["examples"]`` names the
        exemplars: their ``index`` in the split and the compressed model's ``prediction`` there (elsewhere
        it predicts the population's modal class, so the model's predictions can be rebuilt from it).
    """
    y = np.asarray(y_true)
    compressed_population = np.asarray(compressed)
    pred = modal_predictions(compressed_population) if compressed_population.ndim == 2 else compressed_population
    out: dict = {}
    names = None
    if groups is not None:
        groups = np.asarray(groups)
        names = dict(enumerate(group_names or ()))
        names[-1] = "(none)"
    if population is not None:
        out["cie"] = cie_report(y, population, compressed_population, sensitive_features=groups,
                                class_names=class_names, group_names=names)
        changed = np.flatnonzero(compression_identified_exemplars(population, pred))
        out["cie"]["examples"] = {"index": changed.tolist(), "prediction": pred[changed].tolist()}
    impact = {"class": disparate_impact(y, dense, pred, by=y, alpha=alpha, level_names=class_names)}
    if groups is not None and (groups >= 0).any():
        keep = groups >= 0
        impact["group"] = disparate_impact(y[keep], np.asarray(dense)[keep], pred[keep], by=groups[keep],
                                           alpha=alpha, level_names=list(group_names or ()))
    if population is not None and len(population) > 1 and compressed_population.ndim == 2 \
            and len(compressed_population) > 1:
        impact["population"] = population_disparate_impact(y, population, compressed_population, by=y, alpha=alpha,
                                                           level_names=class_names)
    out["disparate_impact"] = impact
    return out
