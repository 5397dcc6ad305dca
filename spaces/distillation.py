"""Knowledge distillation from the dense teacher (Hinton et al. 2015; Sanh et al. 2019).

Loss per example: ``(1 - alpha) * CE(student, y) + alpha * T**2 * KL(softmax(t / T) || softmax(s / T))``.
The ``T**2`` factor keeps the soft term's gradient scale independent of the temperature, so
``alpha`` means the same thing at every T. At ``alpha = 0`` the loss is exactly cross-entropy.
The teacher's logits come from the per-study cache: no trial runs the teacher again, except when a
hidden-state or attention transfer weight is above zero (those terms need the teacher's internal
states for each batch, which are too large to cache).

A student may keep fewer layers than the teacher (``student_layers``, chosen by ``layer_strategy``,
e.g. every other layer as in DistilBERT), initialised from the teacher's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.spaces.sampling import suggest_choice, suggest_float, suggest_int
from fairfront.spaces.students import LAYER_STRATEGIES

__all__ = ["DistillationSpace", "DistillationConfig", "distillation_loss"]


@dataclass(frozen=True)
class DistillationConfig:
    temperature: float
    alpha: float
    student_layers: int | None = None
    layer_strategy: str = "every_other"
    hidden_weight: float = 0.0
    attention_weight: float = 0.0


@dataclass(frozen=True)
class DistillationSpace:
    """Ranges of ``[space.distillation]``."""

    temperature: tuple[float, float] = (1.0, 8.0)
    alpha: tuple[float, float] = (0.0, 0.9)
    student_layers: tuple[int, int] | None = None
    layer_strategy: tuple[str, ...] = ("every_other",)
    hidden_weight: tuple[float, float] = (0.0, 0.0)
    attention_weight: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_table(cls, t: Table) -> DistillationSpace:
        space = cls(temperature=t.range("temperature", cls.temperature, positive=True, high=100.0),
                    alpha=t.range("alpha", cls.alpha, low=0.0, high=1.0),
                    student_layers=t.range("student_layers", None, low=1, high=1000, integer=True),
                    layer_strategy=t.strings("layer_strategy", cls.layer_strategy, choices=LAYER_STRATEGIES),
                    hidden_weight=t.range("hidden_weight", cls.hidden_weight, low=0.0, high=1e4),
                    attention_weight=t.range("attention_weight", cls.attention_weight, low=0.0, high=1e4))
        t.done()
        return space

    def check_model(self, num_layers: int) -> None:
        """Refuse a student deeper than the teacher (known once the model is loaded)."""
        if self.student_layers is not None and self.student_layers[1] > num_layers:
            raise ConfigError("space.distillation.student_layers", list(self.student_layers),
                              f"at most the teacher's {num_layers} layers")

    def sample(self, trial) -> DistillationConfig:
        layers = None
        if self.student_layers is not None:
            layers = suggest_int(trial, "distillation.student_layers", self.student_layers)
        return DistillationConfig(temperature=suggest_float(trial, "distillation.temperature", self.temperature),
                                  alpha=suggest_float(trial, "distillation.alpha", self.alpha),
                                  student_layers=layers,
                                  layer_strategy=suggest_choice(trial, "distillation.layer_strategy",
                                                                self.layer_strategy),
                                  hidden_weight=suggest_float(trial, "distillation.hidden_weight", self.hidden_weight),
                                  attention_weight=suggest_float(trial, "distillation.attention_weight",
                                                                 self.attention_weight))


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float, alpha: float, task_loss: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example distillation loss, shape ``[B]`` (reduce it yourself, e.g. with example weights).

    ``task_loss`` replaces the per-example cross-entropy term (e.g. a focal or class-balanced loss).
    """
    ce = F.cross_entropy(student_logits, labels, reduction="none") if task_loss is None else task_loss
    if alpha == 0.0:
        return ce
    t = temperature
    soft_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    soft_student = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = F.kl_div(soft_student, soft_teacher, log_target=True, reduction="none").sum(-1)
    return (1.0 - alpha) * ce + alpha * (t * t) * kl
