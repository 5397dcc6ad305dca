"""``[teacher]``: the dense teacher's training settings, with the task loss it is fine-tuned with.

On a skewed dataset plain cross-entropy can give a teacher that predicts the majority class
only; every trial then distils that teacher and looks perfectly fair. ``loss`` picks one of the
class-imbalance losses of :data:`~fairfront.spaces.imbalance.IMBALANCE_LOSSES` (the ones
``[space.imbalance]`` searches for the student), with ``loss_parameter`` its setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.training.settings import TrainSettings
from fairfront.spaces.imbalance_family import IMBALANCE_LOSSES

if TYPE_CHECKING:
    from fairfront.spaces.imbalance import PerExampleLoss

__all__ = ["TeacherSettings", "teacher_loss", "DEFAULT_LOSS_PARAMETERS"]

DEFAULT_LOSS_PARAMETERS: dict[str, float] = {
    "class_balanced": 0.999,  # beta; Cui et al. 2019 use 0.99-0.9999
    "focal": 2.0,  # gamma; Lin et al. 2017's best setting
    "logit_adjusted": 1.0,  # tau; Menon et al. 2021's default
}
"""The ``loss_parameter`` of each loss when the study file gives none: the papers' usual settings."""


@dataclass(frozen=True)
class TeacherSettings(TrainSettings):
    """:class:`TrainSettings` plus the teacher's task loss (a name of ``IMBALANCE_LOSSES``)."""

    loss: str = "cross_entropy"
    loss_parameter: float | None = None

    @classmethod
    def from_table(cls, t: Table, *, defaults: TrainSettings | None = None) -> TeacherSettings:
        loss = t.string("loss", "cross_entropy", choices=tuple(IMBALANCE_LOSSES))
        spec = IMBALANCE_LOSSES[loss]
        parameter = None
        if spec.parameter is not None:
            parameter = t.number("loss_parameter", DEFAULT_LOSS_PARAMETERS[loss], low=spec.low, high=spec.high)
        elif "loss_parameter" in t:
            raise ConfigError(t.key("loss_parameter"), message=f"loss {loss!r} has no parameter; remove the key "
                              "or choose a loss that has one: " + ", ".join(DEFAULT_LOSS_PARAMETERS))
        base = TrainSettings.from_table(t, defaults=defaults)
        return cls(**dataclasses.asdict(base), loss=loss, loss_parameter=parameter)


def teacher_loss(settings: TrainSettings, class_counts: Sequence[int]) -> PerExampleLoss:
    """The per-example loss the teacher trains with (cross-entropy for plain :class:`TrainSettings`)."""
    name = getattr(settings, "loss", "cross_entropy")
    return IMBALANCE_LOSSES[name].build(getattr(settings, "loss_parameter", None), [int(c) for c in class_counts])
