"""``[space.fair_distillation]``: how strongly a student up-weights what it forgets, read without torch.

The weights are :func:`~fairfront.spaces.fair_compression.forgetting_weights`, applied by
:mod:`fairfront.spaces.fair_distillation`, imported when a trial starts (reading a study file, e.g.
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

__all__ = ["FairDistillationConfig", "FairDistillationSpace", "FairDistillationFamily", "FORGETTING_MODES"]

FORGETTING_MODES = ("disagreement", "group_recall", "both")
"""The signals :func:`~fairfront.spaces.fair_compression.forgetting_weights` up-weights examples by."""


@dataclass(frozen=True)
class FairDistillationConfig:
    strength: float
    mode: str = "disagreement"


@dataclass(frozen=True)
class FairDistillationSpace:
    """``[space.fair_distillation]``: up-weight what the student forgets (see :func:`forgetting_weights`).

    ``strength`` is searched on a log scale with an exact zero (plain, unweighted training) kept in
    the space as the baseline.
    """

    strength: tuple[float, float] = (0.1, 10.0)
    modes: tuple[str, ...] = FORGETTING_MODES
    allow_zero: bool = True

    @classmethod
    def from_table(cls, t: Table) -> FairDistillationSpace:
        space = cls(strength=t.range("strength", cls.strength, positive=True, high=1e4),
                    modes=t.strings("mode", cls.modes, choices=FORGETTING_MODES),
                    allow_zero=t.boolean("allow_zero", True))
        t.done()
        return space

    def sample(self, trial) -> FairDistillationConfig:
        strength = suggest_weight(trial, "fair_distillation.strength", self.strength, allow_zero=self.allow_zero)
        mode = suggest_choice(trial, "fair_distillation.mode", self.modes) if strength > 0 else self.modes[0]
        return FairDistillationConfig(strength, mode)


class FairDistillationFamily(CompressionFamily):
    name = "fair_distillation"
    space_type = FairDistillationSpace
    config_type = FairDistillationConfig

    def start(self, config: FairDistillationConfig, ctx: TrialContext) -> FamilyTrial:
        from fairfront.spaces.fair_distillation import start_trial  # torch: imported when a trial runs

        return start_trial(config, ctx)
