"""``[space.distillation]``: the student depth and distillation loss a study searches, read without torch.

The loss and the student's surgery are :mod:`fairfront.spaces.distillation` and
:mod:`fairfront.spaces.students`, imported when a trial starts (reading a study file, e.g.
``fairfront validate``, loads no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.spaces.family import CompressionFamily, FamilyTrial
from fairfront.spaces.sampling import suggest_choice, suggest_float, suggest_int

if TYPE_CHECKING:
    from fairfront.spaces.family import TrialContext

__all__ = ["DistillationSpace", "DistillationConfig", "DistillationFamily", "LAYER_STRATEGIES"]

LAYER_STRATEGIES = ("every_other", "uniform", "top", "bottom")
"""How :func:`fairfront.spaces.students.layer_indices` picks the teacher layers a student keeps."""

_TRAINING_KEYS_ALLOWED_IN_MASKED_LM = ("student_layers", "layer_strategy")


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


class DistillationFamily(CompressionFamily):
    """``[space.distillation]``: a shallower student, trained towards the teacher's outputs and states."""

    name = "distillation"
    space_type = DistillationSpace
    config_type = DistillationConfig
    tasks = ("classification", "masked_lm")

    def check_task(self, space: DistillationSpace, table, task: str) -> None:
        if task != "masked_lm":
            return
        extra = [k for k in table if k not in _TRAINING_KEYS_ALLOWED_IN_MASKED_LM]
        if extra:
            raise ConfigError(f"space.distillation.{extra[0]}", message="a masked_lm study trains no student: only "
                              "student_layers and layer_strategy are allowed")
        if space.student_layers is None:
            raise ConfigError("space.distillation.student_layers", message="missing required key (a masked_lm "
                              "study's distillation family only drops layers)")

    def check_model(self, space: DistillationSpace, num_layers: int) -> None:
        space.check_model(num_layers)

    def start(self, config: DistillationConfig, ctx: TrialContext) -> FamilyTrial:
        from fairfront.spaces.distillation import start_trial  # torch: imported when a trial runs

        return start_trial(config, ctx)
