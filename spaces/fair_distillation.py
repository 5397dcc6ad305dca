"""The fair-distillation family: up-weight, in the student's loss, the examples it is forgetting.

A compressed student forgets a small set of examples first, disproportionately from rare classes
and under-represented groups (Hooker et al. 2019, 2020). ``[space.fair_distillation]`` searches
how strongly (``strength``) and by which signal (``mode``) those examples are up-weighted; the
weights themselves are :func:`~fairfront.spaces.fair_compression.forgetting_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fairfront._config import Table
from fairfront.spaces.fair_compression import FORGETTING_MODES, forgetting_weights, recall_deficit
from fairfront.spaces.family import CompressionFamily, FamilyTrial, TrialContext
from fairfront.spaces.sampling import suggest_choice, suggest_weight

__all__ = ["FairDistillationConfig", "FairDistillationSpace", "FairDistillationFamily"]

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
        return _ForgettingWeights(config, ctx) if config.strength > 0 else FamilyTrial()


class _ForgettingWeights(FamilyTrial):
    """Weights from the student's disagreement with the teacher and/or a running group-recall deficit."""

    def __init__(self, config: FairDistillationConfig, ctx: TrialContext):
        self.config = config
        self.teacher_logits = ctx.teacher_logits
        self.num_groups, self.num_classes, self.device = ctx.num_groups, ctx.num_classes, ctx.device
        self.deficit = torch.zeros(ctx.num_groups, ctx.num_classes, device=ctx.device)

    def example_weights(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        labels, groups = batch["labels"], batch["groups"]
        teacher_logits = self.teacher_logits[batch["index"]]
        if self.config.mode != "disagreement":
            step = recall_deficit(logits.argmax(-1), teacher_logits.argmax(-1), labels, groups,
                                  num_groups=self.num_groups, num_classes=self.num_classes)
            # a running mean over batches: one batch holds too few examples per (group, class) cell
            self.deficit = 0.9 * self.deficit + 0.1 * torch.nan_to_num(step.to(self.device))
        return forgetting_weights(logits, teacher_logits, labels, groups, strength=self.config.strength,
                                  mode=self.config.mode, group_recall_deficit=self.deficit)
