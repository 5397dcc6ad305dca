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

Its ``[space.fairness]`` table, config and family are :mod:`fairfront.spaces.fairness_family`
(read without torch); the family's ``start`` imports this module when a trial runs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from fairfront.spaces import fairness_losses
from fairfront.spaces.fairness_family import FairnessConfig, FairnessFamily, FairnessSpace
from fairfront.spaces.family import FamilyTrial, TrialContext

__all__ = ["FairnessSpace", "FairnessConfig", "FairnessFamily", "PENALTIES", "penalty_function"]

PENALTIES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "equal_opportunity": fairness_losses.equal_opportunity_penalty,
}
for _name in ("equalized_odds", "demographic_parity"):
    if hasattr(fairness_losses, f"{_name}_penalty"):
        PENALTIES[_name] = getattr(fairness_losses, f"{_name}_penalty")


def penalty_function(name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    return PENALTIES[name]


def start_trial(config: FairnessConfig, ctx: TrialContext) -> FamilyTrial:
    """The fairness family's hooks into one trial (:meth:`FairnessFamily.start`).

    Where groups overlap (``[data] group_membership``) ``batch["groups"]`` holds each example's
    memberships, which the penalties and group DRO take as they are (each group over its members).
    """
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
