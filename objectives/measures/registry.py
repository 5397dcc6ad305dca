"""Every measure a trial records, in one registry: its name, kind, paper, needs and how it is computed.

A measure is an accuracy (higher is better), a size (lower is smaller) or a bias (lower is
fairer). The study file's ``[objectives]`` choices, the ``[bias]`` checks, a trial's scoring of a
split and its size measurement all read :data:`MEASURES`, so adding a measure here is all it
takes to record it in every trial and to offer it as an objective.

A measure's ``compute`` reads a :class:`MeasureInputs` and returns a number, or ``None`` where the
measure is undefined on that input (a class missing from a group, no text a swap list changes).
It reads only what its ``needs`` promise; the trial records a measure only where they are met:

* ``"groups"``: a group column; without any grouped example the measure is recorded as undefined.
* ``"dense_population"``, ``"counterfactual"``, ``"intrinsic"``: the ``[bias]`` setting that
  prepares its reference; a study whose ``[bias]`` table does not set it neither records the
  measure nor accepts it as an objective (:func:`~fairfront.objectives.measures.bias_settings.check_objectives`).
  An ``"intrinsic"`` measure also names the ``benchmark`` that ``[bias] intrinsic`` must list.
* ``"latency"``: the trial's CPU latency measurement (on unless the trial's spec turns it off).

Example:
    >>> MEASURES["cie_fraction"].needs, MEASURES["cie_fraction"].task
    (('dense_population',), 'classification')
    >>> names(kind="accuracy", task="masked_lm")
    ('stereoset_lms', 'stereoset_icat')
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fairfront.objectives.measures import accuracy, group_fairness

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Measure", "MeasureInputs", "MEASURES", "KINDS", "NEEDS", "BIAS_SETTINGS", "names", "measures"]

Kind = Literal["accuracy", "size", "bias"]

KINDS: tuple[str, ...] = ("accuracy", "size", "bias")
"""Accuracy is maximised; size and bias are minimised."""

NEEDS: dict[str, str] = {
    "groups": "a group column (each example's group)",
    "dense_population": "[bias] dense_population > 0",
    "counterfactual": "[bias] counterfactual swap lists",
    "intrinsic": "[bias] intrinsic listing the benchmark",
    "latency": "the trial's CPU latency measurement",
}
"""What a measure may need, and what that means for a study."""

BIAS_SETTINGS: tuple[str, ...] = ("dense_population", "counterfactual", "intrinsic")
"""The needs that a ``[bias]`` key provides (checked when the study file is read)."""


@dataclass
class MeasureInputs:
    """What a measure is computed from; each measure reads only the parts its needs promise.

    Attributes:
        y_true: True class ids of a split's examples.
        y_pred: The compressed model's predicted class ids.
        group_ids: Each example's group id, ``-1`` for an example without a group.
        group_names: Names of the groups, by id.
        positive: The positive class id of a binary task (what TPR / FPR / selection rates are
            about); None means class 1 for binary labels, one-vs-rest classes otherwise.
        forgetting: The split's forgetting report (with ``cie`` when the study has a dense
            population; see :func:`~fairfront.objectives.training.population.forgetting_measures`).
        counterfactual: The split's counterfactual report (pooled over lists under ``all``).
        intrinsic: Intrinsic benchmark results, ``{name: {half: result}}``.
        half: The split (benchmark half) an intrinsic measure reads.
        model: The compressed model, for the size measures.
        latency_ms: Measured CPU latency, ``{batch size: median ms}``.
        min_group_size: ``[data] min_group_size``: the group measures leave out a rate resting on
            fewer examples (see :func:`~fairfront.objectives.measures.group_fairness.fairness_report`).
        small_groups: ``[data] small_groups``: ``"exclude"`` or ``"merge"`` (into one ``other`` group).
        membership: ``[examples, groups]`` booleans where groups overlap (``[data] group_membership``);
            the group measures then count an example once in every group it belongs to.
    """

    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    group_ids: np.ndarray | None = None
    group_names: Sequence[str] = ()
    positive: int | None = None
    forgetting: dict[str, Any] | None = None
    counterfactual: dict[str, Any] | None = None
    intrinsic: dict[str, Any] | None = None
    half: str = "validation"
    model: nn.Module | None = None
    latency_ms: dict[int, float] | None = None
    min_group_size: int = 1
    small_groups: str = "exclude"
    membership: np.ndarray | None = None

    def need(self, part: str) -> Any:
        """The part ``part`` of the inputs, which a measure's ``needs`` promised is there."""
        value = getattr(self, part)
        if value is None:
            raise ValueError(f"a measure reads {part!r}, which these inputs do not have")
        return value

    @property
    def has_groups(self) -> bool:
        """Whether any example has a group (else the group measures are undefined)."""
        if self.membership is not None:
            return bool(np.asarray(self.membership).any())
        return self.group_ids is not None and bool((self.group_ids >= 0).any())

    @functools.cached_property
    def grouped_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(example index, group name)`` of every membership, small groups merged if asked: each grouped
        example once, or, where groups overlap, once per group it belongs to (an example in two groups
        merged into ``other`` once)."""
        if self.membership is not None:
            names, matrix = list(self.group_names), self.membership
            if self.small_groups == "merge":
                names, matrix, _ = group_fairness.merge_small_memberships(names, matrix, self.min_group_size)
            rows, ids = group_fairness.membership_rows(matrix)
            return rows, np.asarray(names, dtype=object)[ids]
        rows = np.flatnonzero(self.need("group_ids") >= 0)
        labels = np.asarray(self.group_names, dtype=object)[self.need("group_ids")[rows]]
        if self.small_groups == "merge":
            labels, _ = group_fairness.merge_small_groups(labels, self.min_group_size)
        return rows, labels

    @functools.cached_property
    def grouped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(y_true, y_pred, group name)`` of each membership (:attr:`grouped_rows`)."""
        rows, names = self.grouped_rows
        return self.need("y_true")[rows], self.need("y_pred")[rows], names

    @functools.cached_property
    def stored_bytes(self) -> dict[str, int]:
        """:func:`~fairfront.objectives.measures.size.storage_bytes` of the model, computed once for all four."""
        from fairfront.objectives.measures import size  # torch: only where a model is measured

        return size.storage_bytes(self.need("model"))


@dataclass(frozen=True)
class Measure:
    """One measure of the registry.

    Attributes:
        name: The name a study file and a trial's attributes use.
        kind: ``"accuracy"``, ``"size"`` or ``"bias"``.
        description: One line saying what is measured.
        paper: Where the measure comes from (empty for plain counts).
        compute: ``(MeasureInputs) -> float | None``.
        needs: Keys of :data:`NEEDS` the measure requires.
        benchmark: For an ``"intrinsic"`` measure, the benchmark ``[bias] intrinsic`` must list.
        task: The only ``[model] task`` whose study may name it as an objective (None: any).
        objective: Whether ``[objectives]`` accepts it at all (False: only recorded).
    """

    name: str
    kind: Kind
    description: str
    paper: str
    compute: Callable[[MeasureInputs], float | None] = field(repr=False, compare=False)
    needs: tuple[str, ...] = ()
    benchmark: str | None = None
    task: str | None = None
    objective: bool = True

    @property
    def bias_setting(self) -> str | None:
        """The ``[bias]`` key this measure needs, if any."""
        return next((n for n in self.needs if n in BIAS_SETTINGS), None)

    @property
    def summary(self) -> str:
        """``description (paper); needs ...``: one line for listings."""
        text = self.description + (f" ({self.paper})" if self.paper else "")
        needs = [NEEDS[n] for n in self.needs if n != "latency"]
        return text + (f"; needs {', '.join(needs)}" if needs else "")


def _predictions(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[MeasureInputs], float]:
    return lambda inputs: fn(inputs.need("y_true"), inputs.need("y_pred"))


def _group_measure(m: group_fairness.BiasMeasure) -> Measure:
    def compute(inputs: MeasureInputs) -> float:
        y, p, g = inputs.grouped
        return float(m.fn(y, p, sensitive_features=g, pos_label=inputs.positive,
                          min_group_size=inputs.min_group_size))

    return Measure(m.name, "bias", m.description, m.citation, compute, needs=("groups",), task="classification")


def _stereoset_overall(key: str) -> Callable[[MeasureInputs], float | None]:
    return lambda inputs: inputs.need("intrinsic")["stereoset"][inputs.half]["overall"].get(key)


def _headline_bias(name: str) -> Callable[[MeasureInputs], float | None]:
    return lambda inputs: inputs.need("intrinsic")[name][inputs.half]["headline"]["bias"]


def _stored(key: str) -> Callable[[MeasureInputs], float]:
    return lambda inputs: float(inputs.stored_bytes[key])


def _model_count(function: str) -> Callable[[MeasureInputs], float]:
    """A count from :mod:`~fairfront.objectives.measures.size` (imported when a model is measured: it needs torch)."""

    def compute(inputs: MeasureInputs) -> float:
        from fairfront.objectives.measures import size

        return float(getattr(size, function)(inputs.need("model")))

    return compute


def _latency(batch: int) -> Callable[[MeasureInputs], float | None]:
    return lambda inputs: (inputs.latency_ms or {}).get(batch)


_ALL: list[Measure] = [
    Measure("accuracy", "accuracy", "share of examples predicted correctly", "",
            _predictions(accuracy.accuracy), task="classification"),
    Measure("balanced_accuracy", "accuracy", "mean recall over classes", "",
            _predictions(accuracy.balanced_accuracy), task="classification"),
    Measure("macro_f1", "accuracy", "mean F1 over classes", "",
            _predictions(accuracy.macro_f1), task="classification"),
    Measure("stereoset_lms", "accuracy", "StereoSet language-modeling score LMS (ideal 100), per benchmark half",
            "Nadeem et al. 2021", _stereoset_overall("lms"), needs=("intrinsic",), benchmark="stereoset",
            task="masked_lm"),
    Measure("stereoset_icat", "accuracy", "StereoSet ICAT = LMS * min(SS, 100 - SS) / 50 (ideal 100), per benchmark "
            "half", "Nadeem et al. 2021", _stereoset_overall("icat"), needs=("intrinsic",), benchmark="stereoset",
            task="masked_lm"),

    Measure("nonzero_params", "size", "parameters that are not exactly zero (embeddings and head included; int8 "
            "weights count)", "", _model_count("nonzero_parameters")),
    Measure("params", "size", "every parameter the model uses (int8 weights included)", "",
            _model_count("parameter_count"), objective=False),
    Measure("dense_bytes", "size", "bytes of all parameters stored densely in fp32", "", _stored("dense_fp32")),
    Measure("sparse_bytes", "size", "bytes stored as int32 CSR (values plus indices; per tensor the smaller of CSR "
            "and dense)", "", _stored("sparse")),
    Measure("int8_bytes", "size", "bytes with linear weights in int8 (measured for a quantized model, estimated "
            "otherwise)", "", _stored("int8")),
    Measure("serialized_bytes", "size", "bytes of the saved state dict (torch.save)", "", _stored("serialized")),
    Measure("latency_b1_ms", "size", "median CPU forward latency at batch 1, length 64 (ms)", "", _latency(1),
            needs=("latency",)),
    Measure("latency_b32_ms", "size", "median CPU forward latency at batch 32, length 64 (ms)", "", _latency(32),
            needs=("latency",)),

    *(_group_measure(m) for m in group_fairness.BIAS_MEASURES.values()),

    Measure("cie_fraction", "bias", "share of examples whose prediction differs from the dense population's modal "
            "prediction (Compression Identified Exemplars)", "Hooker et al. 2019, 2020",
            lambda inputs: inputs.need("forgetting")["cie"]["cie_fraction"], needs=("dense_population",),
            task="classification"),
    Measure("counterfactual_flip_rate", "bias", "share of swapped texts whose predicted class changes",
            "Garg et al. 2019", lambda inputs: inputs.need("counterfactual")["all"]["flip_rate"],
            needs=("counterfactual",), task="classification"),
    Measure("counterfactual_prob_change", "bias", "mean |q[c] - p[c]| over swapped texts, c the class predicted for "
            "the original", "Garg et al. 2019",
            lambda inputs: inputs.need("counterfactual")["all"]["mean_abs_prob_change"],
            needs=("counterfactual",), task="classification"),

    Measure("stereoset", "bias", "|SS - 50| on StereoSet intrasentence", "Nadeem et al. 2021",
            _headline_bias("stereoset"), needs=("intrinsic",), benchmark="stereoset"),
    Measure("crows_pairs", "bias", "|metric score - 50| on CrowS-Pairs", "Nangia et al. 2020",
            _headline_bias("crows_pairs"), needs=("intrinsic",), benchmark="crows_pairs"),
    Measure("winobias", "bias", "|pro - anti| masked-pronoun accuracy gap on WinoBias", "Zhao et al. 2018",
            _headline_bias("winobias"), needs=("intrinsic",), benchmark="winobias"),
    Measure("seat", "bias", "mean |effect size| of SEAT/WEAT 6-8", "May et al. 2019",
            _headline_bias("seat"), needs=("intrinsic",), benchmark="seat"),
]

MEASURES: dict[str, Measure] = {m.name: m for m in _ALL}
"""Every measure by name, in the order a trial records them."""


def measures(*, kind: str | None = None, needs: str | None = None, task: str | None = None,
             objective: bool | None = None) -> tuple[Measure, ...]:
    """The registered measures that match every filter given.

    Args:
        kind: Only this kind.
        needs: Only measures with this need (``""``: only measures with no need at all).
        task: Only measures a study of this ``[model] task`` may name as objectives.
        objective: Only measures that are (True) or are not (False) objective choices.
    """
    out = []
    for m in MEASURES.values():
        if kind is not None and m.kind != kind:
            continue
        if needs is not None and (needs not in m.needs if needs else bool(m.needs)):
            continue
        if task is not None and m.task not in (None, task):
            continue
        if objective is not None and m.objective != objective:
            continue
        out.append(m)
    return tuple(out)


def names(**filters: Any) -> tuple[str, ...]:
    """The names of :func:`measures` ``(**filters)``."""
    return tuple(m.name for m in measures(**filters))
