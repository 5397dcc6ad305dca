"""``[space.fairness]``: the group-aware training method a study searches, read and sampled without torch.

The penalties, group DRO and reweighting a trial trains with are :mod:`fairfront.spaces.fairness` and
:mod:`fairfront.spaces.fairness_losses`, imported when a trial starts (reading a study file, e.g.
``fairfront validate``, loads no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairfront._config import Table
from fairfront.spaces.family import CompressionFamily, FamilyTrial
from fairfront.spaces.sampling import suggest_choice, suggest_weight

if TYPE_CHECKING:
    from fairfront.spaces.family import TrialContext

__all__ = ["FairnessSpace", "FairnessConfig", "FairnessFamily", "METHODS", "PENALTY_METHODS"]

PENALTY_METHODS = ("equal_opportunity", "equalized_odds", "demographic_parity")
"""The methods that add a penalty term: the keys of :data:`fairfront.spaces.fairness.PENALTIES`, in its order."""
METHODS = PENALTY_METHODS + ("group_dro", "group_reweight")


@dataclass(frozen=True)
class FairnessConfig:
    """``weight`` is the penalty's weight, the DRO step size, or the reweighting strength; 0 = off."""

    method: str
    weight: float

    @property
    def is_penalty(self) -> bool:
        return self.method in PENALTY_METHODS


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


class FairnessFamily(CompressionFamily):
    """``[space.fairness]``: each method is its own hook into the loss (a penalty, a reduction or weights)."""

    name = "fairness"
    space_type = FairnessSpace
    config_type = FairnessConfig
    needs_groups = "a fairness loss"

    def start(self, config: FairnessConfig, ctx: TrialContext) -> FamilyTrial:
        from fairfront.spaces.fairness import start_trial  # torch: imported when a trial runs

        return start_trial(config, ctx)
