"""The measures that become a trial's objective values: accuracy, size and bias.

Each objective names its measure in the study file (``[objectives]``); what is allowed, and for
which ``[model] task``, is read from the measure registry
(:mod:`fairfront.objectives.measures.registry`). Bias measures (lower is fairer) are the group
measures of :mod:`fairfront.objectives.measures.group_fairness`, the measures against references
the study prepares (:data:`PREPARED_BIAS_MEASURES`: the dense population's CIEs, the
counterfactual texts) and the intrinsic benchmarks, which need their ``[bias]`` settings.
Whatever is not an objective is still computed and kept in the trial's user attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.measures.registry import Measure, measures, names

__all__ = ["ObjectiveSpec", "PREPARED_BIAS_MEASURES", "OBJECTIVE_BIAS_MEASURES", "TASKS"]

TASKS = ("classification", "masked_lm")
"""``[model] task``: fine-tune a classifier on ``[data]``, or compress the pretrained masked LM itself."""

PREPARED_BIAS_MEASURES: dict[str, Measure] = {m.name: m for m in measures(kind="bias")
                                              if m.bias_setting in ("dense_population", "counterfactual")}
"""Bias measures against a reference the study prepares: ``[bias] dense_population`` or ``counterfactual``."""

OBJECTIVE_BIAS_MEASURES: tuple[str, ...] = names(kind="bias", objective=True)
"""Every name ``[objectives] bias`` accepts."""


@dataclass(frozen=True)
class ObjectiveSpec:
    """``[objectives]``: accuracy is maximised, size and bias are minimised."""

    accuracy: str = "accuracy"
    size: str = "nonzero_params"
    bias: tuple[str, ...] = ("tpr_gap",)

    @classmethod
    def from_table(cls, t: Table, *, task: str = "classification") -> ObjectiveSpec:
        """Read ``[objectives]``; a ``masked_lm`` study defaults to ``stereoset_lms`` and ``stereoset``."""
        masked = task == "masked_lm"
        accuracy_default, bias_default = ("stereoset_lms", "stereoset") if masked else ("accuracy", "tpr_gap")
        accuracy = t.string("accuracy", accuracy_default, choices=names(kind="accuracy", objective=True))
        allowed = names(kind="accuracy", task=task, objective=True)
        if accuracy not in allowed:
            why = ("a masked_lm study has no labelled data" if masked else
                   "the language-modeling scores are the accuracy of [model] task = \"masked_lm\"")
            raise ConfigError(t.key("accuracy"), accuracy, "one of: " + ", ".join(allowed) + f" ({why})")
        size_measure = t.string("size", "nonzero_params", choices=names(kind="size", objective=True))
        if isinstance(t.data.get("bias", bias_default), str):
            bias = (t.string("bias", bias_default, choices=OBJECTIVE_BIAS_MEASURES),)
        else:
            bias = t.strings("bias", choices=OBJECTIVE_BIAS_MEASURES)
        allowed = names(kind="bias", task=task, objective=True)
        for b in bias:
            if b not in allowed:
                raise ConfigError(t.key("bias"), b, "an intrinsic benchmark (" + ", ".join(allowed)
                                  + "); group and prepared measures need [model] task = \"classification\"")
        if len(set(bias)) != len(bias):
            raise ConfigError(t.key("bias"), list(bias), "distinct bias measures")
        t.done()
        return cls(accuracy, size_measure, bias)

    @property
    def names(self) -> list[str]:
        """Metric names for ``study.set_metric_names``."""
        if len(self.bias) == 1:
            return ["accuracy", "size", "bias"]
        return ["accuracy", "size"] + [f"bias_{b}" for b in self.bias]

    @property
    def directions(self) -> list[Literal["maximize", "minimize"]]:
        return ["maximize"] + ["minimize"] * (1 + len(self.bias))

