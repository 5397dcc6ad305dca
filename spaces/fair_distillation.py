"""The fair-distillation family: up-weight, in the student's loss, the examples it is forgetting.

A compressed student forgets a small set of examples first, disproportionately from rare classes
and under-represented groups (Hooker et al. 2019, 2020). ``[space.fair_distillation]`` searches
how strongly (``strength``) and by which signal (``mode``) those examples are up-weighted; the
weights themselves are :func:`~fairfront.spaces.fair_compression.forgetting_weights`.

Its ``[space.fair_distillation]`` table, config and family are :mod:`fairfront.spaces.fair_distillation_family`
(read without torch); the family's ``start`` imports this module when a trial runs.
"""

from __future__ import annotations

import torch

from fairfront.spaces.fair_compression import forgetting_weights, recall_deficit
from fairfront.spaces.fair_distillation_family import (
    FairDistillationConfig,
    FairDistillationFamily,
    FairDistillationSpace,
)
from fairfront.spaces.family import FamilyTrial, TrialContext

__all__ = ["FairDistillationConfig", "FairDistillationSpace", "FairDistillationFamily"]


def start_trial(config: FairDistillationConfig, ctx: TrialContext) -> FamilyTrial:
    """The fair-distillation family's hooks into one trial (:meth:`FairDistillationFamily.start`)."""
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
