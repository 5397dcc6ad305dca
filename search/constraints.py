"""``[constraints]``: limits a shippable model must meet, marked on every trial and honoured by the samplers.

A compressed model that lost five accuracy points, or is no smaller than the dense one, is no
answer however fair it is. Each constraint becomes one value per COMPLETE trial, feasible when
it is <= 0 (Optuna's convention)::

    max_accuracy_drop    (teacher accuracy - trial accuracy) - max_accuracy_drop
    max_size_ratio       trial size / teacher size - max_size_ratio
    max_bias.<measure>   |trial bias| - max_bias            (one per bias objective it names)

Accuracy and size are the study's accuracy and size objectives; the teacher's values come from
the dense teacher's reference record (study attribute ``fairfront.teacher``), read by the same
measures. The driver stores the values with ``Trial.set_constraint`` (system attributes
``constraints:<name>``) in the transaction that tells the trial, so TPE, NSGA-II and GPSampler
read them when they next sample (Optuna 5 reads constraints from the trials; its
``constraints_func`` argument is deprecated), and ``study.best_trials`` is the feasible front.
Random search ignores them. Infeasible trials are kept, with user attribute ``feasible = false``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.measures.objectives import ObjectiveSpec
from fairfront.objectives.measures.report import TrialReport

if TYPE_CHECKING:
    from fairfront.search.studyfile import StudyFile

__all__ = ["Constraints", "ConstraintFunction", "check_reference", "constraint_function", "teacher_reference"]

ConstraintFunction = Callable[[Sequence[float]], dict[str, float]]
"""``values -> {constraint name: value}`` for a COMPLETE trial's objective values (feasible: every value <= 0)."""


@dataclass(frozen=True)
class Constraints:
    """``[constraints]``; every limit is optional (an empty table constrains nothing)."""

    max_accuracy_drop: float | None = None
    max_size_ratio: float | None = None
    max_bias: tuple[tuple[str, float], ...] = ()
    """``(bias measure, limit)`` for each bias objective constrained."""

    @classmethod
    def from_table(cls, t: Table, objectives: ObjectiveSpec) -> Constraints:
        drop = _finite(t, "max_accuracy_drop", t.number("max_accuracy_drop", None, low=0.0))
        ratio = _finite(t, "max_size_ratio", t.number("max_size_ratio", None, low=0.0, low_open=True))
        if isinstance(t.data.get("max_bias"), dict):
            sub = t.table("max_bias")
            for name in sub.data:
                if name not in objectives.bias:
                    raise ConfigError(sub.key(name), message=f"{name!r} is not a bias objective of this study "
                                      f"([objectives] bias: {', '.join(objectives.bias)})")
            bias = tuple((name, _limit(sub, name)) for name in objectives.bias if name in sub.data)
            sub.done()
        else:
            limit = _finite(t, "max_bias", t.number("max_bias", None, low=0.0))
            bias = () if limit is None else tuple((name, limit) for name in objectives.bias)
        t.done()
        return cls(drop, ratio, bias)

    @property
    def names(self) -> list[str]:
        """The constraint names, in the order their values are stored."""
        names = ["max_accuracy_drop"] if self.max_accuracy_drop is not None else []
        names += ["max_size_ratio"] if self.max_size_ratio is not None else []
        return names + [f"max_bias.{measure}" for measure, _ in self.max_bias]

    @property
    def relative(self) -> bool:
        """Whether a limit is relative to the dense teacher (so the study needs its reference record)."""
        return self.max_accuracy_drop is not None or self.max_size_ratio is not None

    def values(self, values: Sequence[float], objectives: ObjectiveSpec, *, teacher_accuracy: float | None = None,
               teacher_size: float | None = None) -> dict[str, float]:
        """The constraint values of a trial with objective ``values`` (the relative ones need the teacher's)."""
        out: dict[str, float] = {}
        if self.max_accuracy_drop is not None:
            if teacher_accuracy is None:
                raise ValueError("max_accuracy_drop needs the dense teacher's accuracy")
            out["max_accuracy_drop"] = (teacher_accuracy - values[0]) - self.max_accuracy_drop
        if self.max_size_ratio is not None:
            if not teacher_size:
                raise ValueError("max_size_ratio needs the dense teacher's (positive) size")
            out["max_size_ratio"] = values[1] / teacher_size - self.max_size_ratio
        for measure, limit in self.max_bias:
            out[f"max_bias.{measure}"] = abs(values[2 + objectives.bias.index(measure)]) - limit
        return out


def _limit(t: Table, key: str) -> float:
    value = t.number(key, low=0.0)
    if not math.isfinite(value):
        raise ConfigError(t.key(key), value, "a finite number")
    return value


def _finite(t: Table, key: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ConfigError(t.key(key), value, "a finite number")
    return value


def teacher_reference(objectives: ObjectiveSpec, teacher: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """The dense teacher's accuracy objective (validation split) and size objective from its reference record."""
    if not teacher:
        return None, None
    report = TrialReport.from_attrs(teacher)
    scores = report.splits.get("validation")
    accuracy = (scores.accuracy or {}).get(objectives.accuracy) if scores is not None else None
    return accuracy, report.sizes.get(objectives.size)


def check_reference(sf: StudyFile, teacher: dict[str, Any] | None) -> None:
    """Refuse relative constraints when the dense teacher's value they compare with is unknown."""
    c = sf.constraints
    accuracy, size = teacher_reference(sf.objectives, teacher)
    if c.max_accuracy_drop is not None and accuracy is None:
        raise ConfigError("constraints.max_accuracy_drop", message="needs the dense teacher's validation "
                          f"{sf.objectives.accuracy}, which this study has no record of")
    if c.max_size_ratio is not None and not size:
        raise ConfigError("constraints.max_size_ratio", message=f"needs the dense teacher's {sf.objectives.size} "
                          "(positive), which this study has no record of")


def constraint_function(sf: StudyFile, teacher: dict[str, Any] | None) -> ConstraintFunction | None:
    """The study's constraints as a function of a trial's objective values; None without ``[constraints]``."""
    c = sf.constraints
    if not c.names:
        return None
    check_reference(sf, teacher)
    accuracy, size = teacher_reference(sf.objectives, teacher)

    def values(objective_values: Sequence[float]) -> dict[str, float]:
        return c.values(objective_values, sf.objectives, teacher_accuracy=accuracy, teacher_size=size)

    return values
