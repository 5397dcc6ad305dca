"""The fairness-loss family: which group penalty a student trains with, and how strongly.

The trial's training objective becomes ``task_loss + weight * penalty(logits, labels, groups)``.
The weight is searched on a log scale with an exact zero kept in the space (``allow_zero``), so
"no fairness loss" is always sampled as the baseline the other settings are compared with.
The penalties themselves are defined in :mod:`fairfront.spaces.fairness_losses`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from fairfront._config import Table
from fairfront.spaces import fairness_losses
from fairfront.spaces.sampling import suggest_choice, suggest_weight

__all__ = ["FairnessSpace", "FairnessConfig", "PENALTIES", "penalty_function"]

PENALTIES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "equal_opportunity": fairness_losses.equal_opportunity_penalty,
}
for _name in ("equalized_odds", "demographic_parity"):
    if hasattr(fairness_losses, f"{_name}_penalty"):
        PENALTIES[_name] = getattr(fairness_losses, f"{_name}_penalty")


@dataclass(frozen=True)
class FairnessConfig:
    loss: str
    weight: float


@dataclass(frozen=True)
class FairnessSpace:
    """Ranges of ``[space.fairness]``."""

    losses: tuple[str, ...] = ("equal_opportunity",)
    weight: tuple[float, float] = (0.01, 10.0)
    allow_zero: bool = True

    @classmethod
    def from_table(cls, t: Table) -> FairnessSpace:
        space = cls(losses=t.strings("loss", cls.losses, choices=tuple(PENALTIES)),
                    weight=t.range("weight", cls.weight, positive=True, high=1e4),
                    allow_zero=t.boolean("allow_zero", True))
        t.done()
        return space

    def sample(self, trial) -> FairnessConfig:
        loss = suggest_choice(trial, "fairness.loss", self.losses)
        return FairnessConfig(loss, suggest_weight(trial, "fairness.weight", self.weight, allow_zero=self.allow_zero))


def penalty_function(name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    return PENALTIES[name]
