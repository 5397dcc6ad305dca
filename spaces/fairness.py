"""The fairness-loss family: which group-aware method a student trains with, and how strongly.

Methods (``[space.fairness] method``):

- a penalty (``equal_opportunity``, ``equalized_odds``, ``demographic_parity``): the objective
  becomes ``task_loss + weight * penalty(logits, labels, groups)`` (Hardt et al. 2016; Zafar et
  al. 2017);
- ``group_dro``: online group DRO (Sagawa et al. 2020), the loss of the worst groups up-weighted
  with step size ``dro_step_size``;
- ``group_reweight``: example weights ``1 + s * (w_g - 1)`` moving from plain training (s = 0)
  to Kamiran & Calders (2012) reweighting ``w = P(g)P(y)/P(g,y)`` (s = 1), ``s`` = ``reweight_strength``.

Each method's strength is searched on a log scale, and an exact zero is kept in the space
(``allow_zero``), so "no fairness method" is always sampled as the baseline. The losses
themselves are in :mod:`fairfront.spaces.fairness_losses`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from fairfront._config import Table
from fairfront.spaces import fairness_losses
from fairfront.spaces.family import CompressionFamily, FamilyTrial, TrialContext
from fairfront.spaces.sampling import suggest_choice, suggest_weight

__all__ = ["FairnessSpace", "FairnessConfig", "FairnessFamily", "PENALTIES", "penalty_function"]

PENALTIES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "equal_opportunity": fairness_losses.equal_opportunity_penalty,
}
for _name in ("equalized_odds", "demographic_parity"):
    if hasattr(fairness_losses, f"{_name}_penalty"):
        PENALTIES[_name] = getattr(fairness_losses, f"{_name}_penalty")


METHODS = tuple(PENALTIES) + ("group_dro", "group_reweight")


@dataclass(frozen=True)
class FairnessConfig:
    """``weight`` is the penalty's weight, the DRO step size, or the reweighting strength; 0 = off."""

    method: str
    weight: float

    @property
    def is_penalty(self) -> bool:
        return self.method in PENALTIES


@dataclass(frozen=True)
class FairnessSpace:
    """Ranges of ``[space.fairness]``."""

    methods: tuple[str, ...] = ("equal_opportunity",)
    weight: tuple[float, float] = (0.01, 10.0)
    dro_step_size: tuple[float, float] = (0.001, 0.1)
    reweight_strength: tuple[float, float] = (0.1, 1.0)
    allow_zero: bool = True

    @classmethod
    def from_table(cls, t: Table) -> FairnessSpace:
        space = cls(methods=t.strings("method", cls.methods, choices=METHODS),
                    weight=t.range("weight", cls.weight, positive=True, high=1e4),
                    dro_step_size=t.range("dro_step_size", cls.dro_step_size, positive=True, high=10.0),
                    reweight_strength=t.range("reweight_strength", cls.reweight_strength, positive=True, high=1.0),
                    allow_zero=t.boolean("allow_zero", True))
        t.done()
        return space

    def sample(self, trial) -> FairnessConfig:
        method = suggest_choice(trial, "fairness.method", self.methods)
        bounds, name = {"group_dro": (self.dro_step_size, "fairness.dro_step_size"),
                        "group_reweight": (self.reweight_strength, "fairness.reweight_strength")}.get(
                            method, (self.weight, "fairness.weight"))
        return FairnessConfig(method, suggest_weight(trial, name, bounds, allow_zero=self.allow_zero))


def penalty_function(name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    return PENALTIES[name]


class FairnessFamily(CompressionFamily):
    """``[space.fairness]``: each method is its own hook into the loss (a penalty, a reduction or weights).

    Where groups overlap (``[data] group_membership``) ``batch["groups"]`` holds each example's
    memberships, which the penalties and group DRO take as they are (each group over its members).
    """

    name = "fairness"
    space_type = FairnessSpace
    config_type = FairnessConfig
    needs_groups = "a fairness loss"

    def start(self, config: FairnessConfig, ctx: TrialContext) -> FamilyTrial:
        if config.weight <= 0:
            return FamilyTrial()
        if config.is_penalty:
            # the group count fixes the penalty's shapes, so a CUDA graph can capture it
            return _Penalty(partial(penalty_function(config.method), num_groups=ctx.num_groups), config.weight)
        if config.method == "group_dro":
            return _GroupDRO(fairness_losses.GroupDRO(ctx.num_groups, config.weight))
        if ctx.membership is not None:
            raise ValueError("group_reweight needs one group per example; [data] group_membership gives overlapping "
                             "groups")
        return _GroupReweight(config.weight, ctx)


class _Penalty(FamilyTrial):
    """``loss + weight * penalty(logits, labels, groups)``."""

    def __init__(self, penalty: Callable[[Tensor, Tensor, Tensor], Tensor], weight: float):
        self.penalty, self.weight = penalty, weight

    def penalties(self, logits: Tensor, batch: dict) -> list[Tensor]:
        return [self.weight * self.penalty(logits, batch["labels"], batch["groups"])]


class _GroupDRO(FamilyTrial):
    """The worst groups' loss up-weighted online; the final group weights are recorded."""

    def __init__(self, dro: fairness_losses.GroupDRO):
        self.dro = dro

    def reduce(self, per_example: Tensor, groups: Tensor) -> Tensor:
        return self.dro(per_example, groups)

    def after_training(self, ctx: TrialContext) -> None:
        ctx.record("group_dro_weights", [float(x) for x in self.dro.q])


class _GroupReweight(FamilyTrial):
    """Weights ``1 + s * (w - 1)`` from plain training (s = 0) to group-balanced weights ``w`` (s = 1)."""

    def __init__(self, strength: float, ctx: TrialContext):
        balanced = fairness_losses.group_balanced_weights(torch.tensor(ctx.groups), ctx.num_groups,
                                                          labels=torch.tensor(ctx.labels))
        self.weights = (1.0 + strength * (balanced - 1.0)).to(ctx.device)

    def example_weights(self, logits: Tensor, batch: dict) -> Tensor:
        return self.weights[batch["index"]]
