"""``[space.imbalance]`` and the task losses it names, read and sampled without torch.

A study file names a loss (``[space.imbalance] loss``, ``[teacher] loss``) from
:data:`IMBALANCE_LOSSES`; the losses themselves are :mod:`fairfront.spaces.imbalance`, imported when
one is built (reading a study file, e.g. ``fairfront validate``, loads no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from fairfront._config import Table
from fairfront.spaces.family import CompressionFamily, FamilyTrial
from fairfront.spaces.sampling import suggest_choice, suggest_float

if TYPE_CHECKING:
    from fairfront.spaces.family import TrialContext
    from fairfront.spaces.imbalance import PerExampleLoss

__all__ = ["ImbalanceLoss", "IMBALANCE_LOSSES", "ImbalanceConfig", "ImbalanceSpace", "ImbalanceFamily"]


def _losses() -> ModuleType:
    """The loss functions (torch), imported when a loss is built."""
    from fairfront.spaces import imbalance

    return imbalance


@dataclass(frozen=True)
class ImbalanceLoss:
    """One searchable task loss: what it is, where it comes from, and the parameter a trial samples.

    ``build(value, class_counts)`` returns the per-example loss; ``value`` is the sampled parameter
    (ignored where ``parameter`` is ``None``) and ``class_counts`` the training examples per class.
    ``[low, high]`` is the sensible range. ``scale`` says how to sample it: ``"linear"`` uniformly,
    ``"log1m"`` so that ``1 - value`` is log-uniform (for ``beta``, whose useful values 0.9, 0.99,
    0.999, 0.9999 are evenly spaced only on that scale).
    """

    name: str
    description: str
    citation: str
    parameter: str | None
    low: float | None
    high: float | None
    scale: str
    build: Callable[[float | None, Sequence[int]], PerExampleLoss] = field(repr=False)


IMBALANCE_LOSSES: dict[str, ImbalanceLoss] = {spec.name: spec for spec in (
    ImbalanceLoss("cross_entropy", "plain cross-entropy (the baseline)", "-",
                  None, None, None, "linear", lambda value, counts: _losses().cross_entropy),
    ImbalanceLoss("class_balanced", "cross-entropy weighted by the inverse effective number of samples",
                  "Cui et al. 2019, Class-Balanced Loss Based on Effective Number of Samples (CVPR)",
                  "beta", 0.9, 0.9999, "log1m", lambda value, counts: _losses().class_balanced_loss(counts, value)),
    ImbalanceLoss("focal", "cross-entropy scaled by (1 - p_t)**gamma, focusing on hard examples",
                  "Lin et al. 2017, Focal Loss for Dense Object Detection (ICCV)",
                  "gamma", 0.0, 5.0, "linear", lambda value, counts: _losses().focal_loss(value)),
    ImbalanceLoss("logit_adjusted", "cross-entropy on logits + tau * log(class prior)",
                  "Menon et al. 2021, Long-Tail Learning via Logit Adjustment (ICLR)",
                  "tau", 0.0, 2.0, "linear", lambda value, counts: _losses().logit_adjusted_loss(counts, value)),
)}


@dataclass(frozen=True)
class ImbalanceConfig:
    loss: str
    value: float | None = None

    def build(self, class_counts: Sequence[int]) -> PerExampleLoss:
        return IMBALANCE_LOSSES[self.loss].build(self.value, class_counts)


@dataclass(frozen=True)
class ImbalanceSpace:
    """``[space.imbalance]``: which task loss a trial uses, with its parameter searched in its range."""

    losses: tuple[str, ...] = ("cross_entropy", "class_balanced", "focal", "logit_adjusted")

    @classmethod
    def from_table(cls, t: Table) -> ImbalanceSpace:
        space = cls(t.strings("loss", cls.losses, choices=tuple(IMBALANCE_LOSSES)))
        t.done()
        return space

    def sample(self, trial) -> ImbalanceConfig:
        name = suggest_choice(trial, "imbalance.loss", self.losses)
        spec = IMBALANCE_LOSSES[name]
        if spec.parameter is None:
            return ImbalanceConfig(name)
        key = f"imbalance.{spec.parameter}"
        if spec.scale == "log1m":  # sample 1 - value log-uniformly
            value = 1.0 - suggest_float(trial, f"imbalance.one_minus_{spec.parameter}",
                                        (1.0 - spec.high, 1.0 - spec.low), log=True)
        else:
            value = suggest_float(trial, key, (spec.low, spec.high))
        return ImbalanceConfig(name, float(value))


class ImbalanceFamily(CompressionFamily):
    """``[space.imbalance]``: the per-example task loss a student trains with."""

    name = "imbalance"
    space_type = ImbalanceSpace
    config_type = ImbalanceConfig

    def start(self, config: ImbalanceConfig, ctx: TrialContext) -> FamilyTrial:
        class_counts = np.bincount(ctx.labels, minlength=ctx.num_classes).tolist()
        return _TaskLoss(config.build(class_counts))


class _TaskLoss(FamilyTrial):
    def __init__(self, loss: PerExampleLoss):
        self.loss = loss

    def task_loss(self) -> PerExampleLoss:
        return self.loss
