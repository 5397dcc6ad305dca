"""Knowledge distillation from the dense teacher (Hinton et al. 2015; Sanh et al. 2019).

Loss per example: ``(1 - alpha) * CE(student, y) + alpha * T**2 * KL(softmax(t / T) || softmax(s / T))``.
The ``T**2`` factor keeps the soft term's gradient scale independent of the temperature, so
``alpha`` means the same thing at every T. At ``alpha = 0`` the loss is exactly cross-entropy.
The teacher's logits come from the per-study cache: no trial runs the teacher again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fairfront._config import Table
from fairfront.spaces.sampling import suggest_float

__all__ = ["DistillationSpace", "DistillationConfig", "distillation_loss"]


@dataclass(frozen=True)
class DistillationConfig:
    temperature: float
    alpha: float


@dataclass(frozen=True)
class DistillationSpace:
    """Ranges of ``[space.distillation]``."""

    temperature: tuple[float, float] = (1.0, 8.0)
    alpha: tuple[float, float] = (0.0, 0.9)

    @classmethod
    def from_table(cls, t: Table) -> DistillationSpace:
        space = cls(temperature=t.range("temperature", cls.temperature, positive=True, high=100.0),
                    alpha=t.range("alpha", cls.alpha, low=0.0, high=1.0))
        t.done()
        return space

    def sample(self, trial) -> DistillationConfig:
        return DistillationConfig(temperature=suggest_float(trial, "distillation.temperature", self.temperature),
                                  alpha=suggest_float(trial, "distillation.alpha", self.alpha))


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float, alpha: float) -> torch.Tensor:
    """Per-example distillation loss, shape ``[B]`` (reduce it yourself, e.g. with example weights)."""
    ce = F.cross_entropy(student_logits, labels, reduction="none")
    if alpha == 0.0:
        return ce
    t = temperature
    soft_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    soft_student = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = F.kl_div(soft_student, soft_teacher, log_target=True, reduction="none").sum(-1)
    return (1.0 - alpha) * ce + alpha * (t * t) * kl
