"""The measures that become a trial's objective values: accuracy, size and bias.

Each objective names its measure in the study file (``[objectives]``); the registries below list
what is allowed. Bias measures (lower is fairer) are the group measures of
:mod:`fairfront.objectives.measures.group_fairness` and the measures against references the study prepares
(:data:`PREPARED_BIAS_MEASURES`: the dense population's CIEs, the counterfactual texts), which need
their ``[bias]`` settings. Whatever is not an objective is still computed and kept in the trial's
user attributes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.measures import group_fairness, size

__all__ = ["ObjectiveSpec", "ACCURACY_MEASURES", "MASKED_LM_ACCURACY_MEASURES", "SIZE_MEASURES", "BIAS_MEASURES",
           "PREPARED_BIAS_MEASURES", "INTRINSIC_BIAS_MEASURES", "OBJECTIVE_BIAS_MEASURES", "TASKS",
           "accuracy_scores", "size_scores"]

TASKS = ("classification", "masked_lm")
"""``[model] task``: fine-tune a classifier on ``[data]``, or compress the pretrained masked LM itself."""


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float((y == p).mean())


def _balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([(p[y == c] == c).mean() for c in np.unique(y)]))


def _macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    scores = []
    for c in np.union1d(np.unique(y), np.unique(p)):
        tp = np.sum((p == c) & (y == c))
        denom = np.sum(p == c) + np.sum(y == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


ACCURACY_MEASURES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "macro_f1": _macro_f1,
}

SIZE_MEASURES: dict[str, str] = {
    "nonzero_params": "parameters that are not exactly zero (embeddings and head included; int8 weights count)",
    "dense_bytes": "bytes of all parameters stored densely in fp32",
    "sparse_bytes": "bytes stored as int32 CSR (values plus indices; per tensor the smaller of CSR and dense)",
    "int8_bytes": "bytes with linear weights in int8 (measured for a quantized model, estimated otherwise)",
    "serialized_bytes": "bytes of the saved state dict (torch.save)",
    "latency_b1_ms": "median CPU forward latency at batch 1, length 64 (ms)",
    "latency_b32_ms": "median CPU forward latency at batch 32, length 64 (ms)",
}

BIAS_MEASURES = group_fairness.BIAS_MEASURES

PREPARED_BIAS_MEASURES: dict[str, str] = {
    "cie_fraction": "share of examples whose prediction differs from the dense population's modal prediction "
                    "(Compression Identified Exemplars, Hooker et al. 2019, 2020); needs [bias] dense_population",
    "counterfactual_flip_rate": "share of swapped texts whose predicted class changes (Garg et al. 2019); "
                                "needs [bias] counterfactual",
    "counterfactual_prob_change": "mean |q[c] - p[c]| over swapped texts, c the class predicted for the original "
                                  "(Garg et al. 2019); needs [bias] counterfactual",
}

INTRINSIC_BIAS_MEASURES: dict[str, str] = {
    "stereoset": "|SS - 50| on StereoSet intrasentence (Nadeem et al. 2021); needs [bias] intrinsic",
    "crows_pairs": "|metric score - 50| on CrowS-Pairs (Nangia et al. 2020); needs [bias] intrinsic",
    "winobias": "|pro - anti| masked-pronoun accuracy gap on WinoBias (Zhao et al. 2018); needs [bias] intrinsic",
    "seat": "mean |effect size| of SEAT/WEAT 6-8 (May et al. 2019); needs [bias] intrinsic",
}
"""The intrinsic benchmarks as bias objectives (validation half; see objectives/measures/intrinsic/halves.py)."""

MASKED_LM_ACCURACY_MEASURES: dict[str, str] = {
    "stereoset_lms": "StereoSet language-modeling score LMS (ideal 100), validation half; masked_lm studies",
    "stereoset_icat": "StereoSet ICAT = LMS * min(SS, 100 - SS) / 50 (ideal 100), validation half; masked_lm studies",
}

OBJECTIVE_BIAS_MEASURES: tuple[str, ...] = (*BIAS_MEASURES, *PREPARED_BIAS_MEASURES, *INTRINSIC_BIAS_MEASURES)
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
        accuracy = t.string("accuracy", accuracy_default, choices=(*ACCURACY_MEASURES, *MASKED_LM_ACCURACY_MEASURES))
        if masked and accuracy not in MASKED_LM_ACCURACY_MEASURES:
            raise ConfigError(t.key("accuracy"), accuracy, "one of: " + ", ".join(MASKED_LM_ACCURACY_MEASURES)
                              + " (a masked_lm study has no labelled data)")
        if not masked and accuracy in MASKED_LM_ACCURACY_MEASURES:
            raise ConfigError(t.key("accuracy"), accuracy, "one of: " + ", ".join(ACCURACY_MEASURES)
                              + " (the language-modeling scores are the accuracy of [model] task = \"masked_lm\")")
        size_measure = t.string("size", "nonzero_params", choices=tuple(SIZE_MEASURES))
        if isinstance(t.data.get("bias", bias_default), str):
            bias = (t.string("bias", bias_default, choices=OBJECTIVE_BIAS_MEASURES),)
        else:
            bias = t.strings("bias", choices=OBJECTIVE_BIAS_MEASURES)
        if masked:
            for b in bias:
                if b not in INTRINSIC_BIAS_MEASURES:
                    raise ConfigError(t.key("bias"), b, "an intrinsic benchmark (" + ", ".join(INTRINSIC_BIAS_MEASURES)
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
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (1 + len(self.bias))


def accuracy_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {name: fn(y_true, y_pred) for name, fn in ACCURACY_MEASURES.items()}


def size_scores(model: nn.Module) -> dict[str, float]:
    stored = size.storage_bytes(model)
    return {"nonzero_params": float(size.nonzero_parameters(model)), "params": float(size.parameter_count(model)),
            "dense_bytes": float(stored["dense_fp32"]), "sparse_bytes": float(stored["sparse"]),
            "int8_bytes": float(stored["int8"]), "serialized_bytes": float(stored["serialized"])}


def latency_scores(model: nn.Module, *, seq_len: int = 64, threads: int | None = None) -> dict[int, float]:
    """Measured CPU latency at batch 1 and 32 (a model on a GPU is measured on a CPU copy)."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()
    return size.measure_latency(model, batch_sizes=(1, 32), seq_len=seq_len, repeats=5, warmup=1, threads=threads)


def bias_score(name: str, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> float:
    measure = BIAS_MEASURES[name]
    fn = getattr(measure, "fn", measure)
    return float(fn(y_true, y_pred, sensitive_features=groups))
