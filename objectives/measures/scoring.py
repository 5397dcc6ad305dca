"""A trial's measurement half: score the compressed model and read its objective values.

Every measure comes from the registry (:mod:`fairfront.objectives.measures.registry`): the size of
the model, each split's accuracy and bias measures (with the group-fairness, forgetting and
counterfactual reports they are read from), and the intrinsic benchmarks on both halves. The
results go into the trial's :class:`~fairfront.objectives.measures.report.TrialReport`, from which
:func:`objective_values` reads what the study optimises.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from fairfront.jsonsafe import finite_or_none, json_safe
from fairfront.objectives.measures import group_fairness, size
from fairfront.objectives.measures.counterfactual_sets import counterfactual_measures
from fairfront.objectives.measures.registry import MEASURES, MeasureInputs, measures, names
from fairfront.objectives.measures.report import SplitScores, TrialReport
from fairfront.objectives.measures.significance import PERMUTATIONS, paired_differences, permutation_gap_test
from fairfront.objectives.training.population import forgetting_measures

if TYPE_CHECKING:
    from fairfront.objectives.measures.objectives import ObjectiveSpec
    from fairfront.objectives.training.prepare import Prepared

__all__ = ["measure_size", "score_split", "add_intrinsic", "record_intrinsic", "objective_values", "degeneracy",
           "CHANCE_MARGIN"]

CHANCE_MARGIN = 0.05
"""A model whose balanced accuracy is below ``1/k + CHANCE_MARGIN`` (k classes in the split) is near chance."""

LATENCY_BATCH_SIZES = (1, 32)
"""The batch sizes whose CPU latency a trial measures (the ``latency_b<k>_ms`` size measures)."""


def measure_size(model: torch.nn.Module, prepared: Prepared, *, latency: bool = True,
                 threads: int | None = None) -> tuple[dict[str, float], dict[int, float] | None]:
    """Every size measure of ``model``, and its CPU latency unless ``latency`` is off.

    Returns:
        ``(size, latency_ms)``: the size measures by name (``params`` included), and the median
        milliseconds per batch size (None when not measured).
    """
    inputs = MeasureInputs(model=model)
    sizes = {m.name: m.compute(inputs) for m in measures(kind="size", needs="")}
    if not latency:
        return sizes, None
    seq_len = min(64, prepared.model_config.get("max_position_embeddings", 64))
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()  # latency is a CPU figure: a model on a GPU is measured on a copy
    return sizes, size.measure_latency(model, batch_sizes=LATENCY_BATCH_SIZES, seq_len=seq_len, repeats=5, warmup=1,
                                       threads=threads)


def degeneracy(y: np.ndarray, pred: np.ndarray, *, margin: float = CHANCE_MARGIN) -> dict[str, float | bool | int]:
    """Whether a classifier is useless on a split, whatever its group measures say.

    A model that predicts one class has no TPR gap and agrees perfectly with a teacher that does
    the same, so it looks perfectly fair. ``one_class``: every prediction is the same class.
    ``balanced_accuracy``: the mean recall over the classes present in ``y`` (chance is ``1/k``
    for ``k`` such classes, whatever the class balance). ``near_chance``: it is below
    ``1/k + margin``. ``flagged``: either.

    Example:
        >>> degeneracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))["flagged"]
        True
    """
    y, pred = np.asarray(y), np.asarray(pred)
    classes = np.unique(y)
    recalls = [float((pred[y == c] == c).mean()) for c in classes]
    balanced = float(np.mean(recalls)) if recalls else float("nan")
    one_class = len(np.unique(pred)) <= 1
    near_chance = bool(len(classes) > 1 and balanced < 1.0 / len(classes) + margin)
    return {"one_class": bool(one_class), "balanced_accuracy": balanced, "near_chance": near_chance,
            "chance": 1.0 / max(1, len(classes)), "predicted_classes": int(len(np.unique(pred))),
            "flagged": bool(one_class or near_chance)}


def score_split(prepared: Prepared, split: str, y: np.ndarray, pred: np.ndarray, groups: np.ndarray, *,
                bias_objectives: Sequence[str] = (), bootstrap_resamples: int = 200, seed: int = 0,
                logits: np.ndarray | None = None, swapped_logits: list[np.ndarray] | None = None,
                min_group_size: int = 1, small_groups: str = "exclude", group_attributes: Sequence[str] = (),
                group_objective: str = "intersection", membership: np.ndarray | None = None,
                compare_with_dense: bool = True) -> SplitScores:
    """Every measure of one split of a classification task.

    Args:
        prepared: The prepared study (dense predictions, population, counterfactual sets).
        split: ``"validation"`` or ``"test"``.
        y: True class ids.
        pred: The compressed model's predicted class ids.
        groups: Group id per example, ``-1`` for none.
        bias_objectives: The study's bias objectives (a counterfactual one must be defined on
            the validation split).
        bootstrap_resamples: Resamples for the group measures' confidence intervals and for the
            paired comparison with the dense teacher (``vs_dense``); 0 leaves out the intervals,
            ``vs_dense`` and the permutation tests of the gaps (``gap_test``).
        seed: Seed of the resamples and permutations.
        logits: The model's logits on the split; needed only when the study has counterfactual sets.
        swapped_logits: Its logits on each prepared counterfactual set of the split, likewise.
        min_group_size: ``[data] min_group_size`` for the group measures.
        small_groups: ``[data] small_groups`` (``"exclude"`` or ``"merge"``).
        group_attributes: The group columns when there are several (the group names are then
            their intersections); each attribute's report goes under ``fairness["attributes"]``.
        group_objective: ``"intersection"`` or ``"max"`` (the bias values are the largest over
            the attributes).
        membership: ``[examples, groups]`` booleans where groups overlap (``groups`` is then all
            -1): every group measure counts an example in each of its groups (and in none without
            one), the fairness record is :func:`~fairfront.objectives.measures.group_fairness.membership_report`
            and the permutation test shuffles whole examples' memberships within each class.
        compare_with_dense: Whether to add ``vs_dense`` (False for the dense teacher itself,
            whose difference with itself is 0 by construction).

    Raises:
        ValueError: A counterfactual bias objective is undefined on the validation split (no
            text contains a term of the swap lists).
    """
    inputs = MeasureInputs(y_true=y, y_pred=pred, group_ids=groups, group_names=prepared.group_names,
                           positive=prepared.positive_index, min_group_size=min_group_size,
                           small_groups=small_groups, membership=membership)
    dense = prepared.dense_predictions(split)
    out: dict = {"accuracy": {m.name: m.compute(inputs) for m in measures(kind="accuracy", needs="")},
                 "n": int(len(y)), "agreement_with_dense": float((dense == pred).mean()),
                 "degenerate": degeneracy(y, pred)}
    if inputs.has_groups:
        out["bias"] = {m.name: m.compute(inputs) for m in measures(kind="bias", needs="groups")}
        out.update(_group_reports(prepared, y, pred, groups, membership, bootstrap_resamples=bootstrap_resamples,
                                  seed=seed, min_group_size=min_group_size, small_groups=small_groups,
                                  group_attributes=group_attributes))
        if "attributes" in out["fairness"]:
            chosen = group_fairness.objective_measures(out["fairness"], out["fairness"]["attributes"],
                                                       group_objective)
            out["bias"].update({k: float("nan") if v is None else v for k, v in chosen.items()})
    else:
        out["bias"] = {m.name: float("nan") for m in measures(kind="bias", needs="groups")}
    if bootstrap_resamples > 0 and compare_with_dense:
        out["vs_dense"] = _versus_dense(inputs, dense, n_resamples=bootstrap_resamples, seed=seed)
    population = prepared.population_predictions(split)
    out["forgetting"] = inputs.forgetting = forgetting_measures(
        y, pred, dense=dense, population=population, groups=None if membership is not None else groups,
        class_names=list(prepared.label_names),
        group_names=list(prepared.group_names))
    sets = prepared.counterfactuals.get(split, [])
    if sets:
        if logits is None or swapped_logits is None:
            raise ValueError("the study has counterfactual sets: pass the model's logits on the split and on each set")
        out["counterfactual"] = inputs.counterfactual = counterfactual_measures(
            sets, logits, swapped_logits, dense_logits=prepared.teacher_logits[split])
    prepared_settings = {"dense_population": population is not None, "counterfactual": bool(sets)}
    for m in measures(kind="bias"):
        if prepared_settings.get(m.bias_setting):
            out["bias"][m.name] = m.compute(inputs)
    if sets and split == "validation":
        wanted = [b for b in bias_objectives if MEASURES[b].bias_setting == "counterfactual"]
        if wanted and inputs.counterfactual["all"]["n_changed"] == 0:
            raise ValueError(f"{wanted[0]} is undefined: no validation text contains a term of the swap lists "
                             f"{', '.join(s.list_name for s in sets)}")
    return SplitScores(**json_safe(out))


def _group_reports(prepared: Prepared, y: np.ndarray, pred: np.ndarray, groups: np.ndarray,
                   membership: np.ndarray | None, *, bootstrap_resamples: int, seed: int, min_group_size: int,
                   small_groups: str, group_attributes: Sequence[str]) -> dict:
    """A split's ``fairness`` record (per attribute too, with several) and its ``gap_test``.

    Where groups overlap the record is :func:`~.group_fairness.membership_report` and the
    permutation test moves whole examples (their memberships stay together).
    """
    rows, ids = (group_fairness.membership_rows(membership) if membership is not None
                 else (np.flatnonzero(groups >= 0), groups[groups >= 0]))
    labels = np.asarray(prepared.group_names, dtype=object)[ids]  # unmerged: the reports merge themselves
    options = {"class_names": list(prepared.label_names), "n_resamples": bootstrap_resamples, "seed": seed,
               "min_group_size": min_group_size, "small_groups": small_groups, "pos_label": prepared.positive_index}
    out: dict = {}
    if membership is not None:
        out["fairness"] = group_fairness.membership_report(
            y, pred, membership=dict(zip(prepared.group_names, np.asarray(membership).T)),
            all_groups=list(prepared.group_names), **options)
    else:
        out["fairness"] = group_fairness.fairness_report(y[rows], pred[rows], sensitive_features=labels,
                                                         all_groups=list(prepared.group_names), **options)
    if len(group_attributes) > 1:
        out["fairness"]["attributes"] = group_fairness.attribute_reports(
            y[rows], pred[rows], groups=labels, attributes=list(group_attributes), **options)
    if bootstrap_resamples > 0:
        out["gap_test"] = permutation_gap_test(y[rows], pred[rows], sensitive_features=labels,
                                               measures=names(kind="bias", needs="groups"),
                                               n_permutations=PERMUTATIONS, seed=seed,
                                               pos_label=prepared.positive_index, min_count=min_group_size,
                                               rows=rows if membership is not None else None)
    return out


def _versus_dense(inputs: MeasureInputs, dense: np.ndarray, *, n_resamples: int, seed: int) -> dict:
    """Compressed minus dense teacher on the same examples: accuracy on all, the group measures on the grouped."""
    y, pred = inputs.need("y_true"), inputs.need("y_pred")
    result = paired_differences(y, pred, dense, n_resamples=n_resamples, seed=seed)
    if inputs.has_groups:
        keep, group_names = inputs.grouped_rows
        gaps = paired_differences(y[keep], pred[keep], dense[keep], sensitive_features=group_names,
                                  measures=names(kind="bias", needs="groups"), n_resamples=n_resamples, seed=seed,
                                  pos_label=inputs.positive)
        result["measures"].update(gaps["measures"])
        result["n_grouped"] = gaps["n"]
    return result


def add_intrinsic(report: TrialReport, prepared: Prepared, model: torch.nn.Module, *, device: torch.device) -> None:
    """Score ``model`` on both halves of every ``[bias] intrinsic`` benchmark, into ``report``.

    ``report.intrinsic[name]`` holds ``{"validation", "test", "dense"}`` results; each half's
    split scores get the benchmark's headline bias (and, for StereoSet, its language-modeling
    scores as accuracy measures), which is what the objectives read from the validation half.
    """
    from fairfront.objectives.measures.intrinsic.halves import score_halves

    started = time.perf_counter()
    cache: dict = {}

    def model_for(needs: str) -> torch.nn.Module:
        if needs != "masked_lm":
            return model
        if "mlm" not in cache:
            cache["mlm"] = prepared.masked_lm(model)
        return cache["mlm"]

    settings = prepared.intrinsic
    scores = score_halves(model_for, prepared.tokenizer, prepared.intrinsic_halves, limit=settings.get("limit"),
                          batch_size=settings.get("batch_size", 64), device=device, bf16=settings.get("bf16", False))
    record_intrinsic(report, scores, dense=prepared.intrinsic_dense)
    report.intrinsic_s = time.perf_counter() - started


def record_intrinsic(report: TrialReport, scores: dict[str, dict[str, dict]], *, dense: dict[str, dict]) -> None:
    """Put the benchmarks' ``scores`` (``{name: {half: result}}``) into ``report``, beside the dense model's.

    Each half's split scores get the benchmark's headline bias (and StereoSet's language-modeling
    scores as accuracy measures), read by the same measures for a trial and for the dense teacher.
    """
    from fairfront.objectives.measures.intrinsic.halves import HALVES

    report.intrinsic = {name: json_safe({**parts, "dense": dense.get(name)}) for name, parts in scores.items()}
    for half in HALVES:
        inputs = MeasureInputs(intrinsic=scores, half=half)
        scored = report.split(half)
        scored.bias = {**(scored.bias or {}), **{name: _number(MEASURES[name].compute(inputs)) for name in scores}}
        accuracy = {m.name: _number(m.compute(inputs)) for m in measures(kind="accuracy", needs="intrinsic")
                    if m.benchmark in scores}
        if accuracy:
            scored.accuracy = {**(scored.accuracy or {}), **accuracy}


def _number(value: float | None) -> float | None:
    return None if value is None else finite_or_none(value)


def objective_values(report: TrialReport, objectives: ObjectiveSpec, *, hint: str = "") -> list[float]:
    """The objective values: the validation split's accuracy and bias measures, and the size measure.

    Raises:
        ValueError: A value is undefined; the message lists every value and ends with ``hint``.
    """
    v = report.validation
    values = [(v.accuracy or {}).get(objectives.accuracy), report.sizes.get(objectives.size)]
    values += [(v.bias or {}).get(b) for b in objectives.bias]
    if any(x is None or not math.isfinite(x) for x in values):
        raise ValueError(f"a measure is undefined on the validation split: {dict(zip(objectives.names, values))}"
                         + hint)
    return [float(x) for x in values]
