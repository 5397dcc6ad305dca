"""The front's numbers, read back from a stored study: each objective's measure on both splits and its interval.

The objective values of a trial are its validation-split measures; the trial's user attributes
(the typed :class:`~fairfront.objectives.measures.report.TrialReport`) also hold the same measures
on the test split and, for the group bias measures, their bootstrap intervals. Which measure each
objective is comes from the study file stored in the study, so ``fairfront front`` and
``fairfront report`` need nothing but the storage.

Example:
    >>> front_frame(study).columns.tolist()  # doctest: +SKIP
    ['trial', 'accuracy', 'size', 'bias', 'test_accuracy', 'test_bias', 'bias_ci_low', 'bias_ci_high',
     'test_bias_ci_low', 'test_bias_ci_high', 'distillation.alpha', ...]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.measures.objectives import ObjectiveSpec
from fairfront.objectives.measures.report import TrialReport
from fairfront.search.attrs import STUDY_FILE_ATTR
from fairfront.search.report import front_trials

__all__ = ["Objective", "objectives", "trial_report", "split_value", "interval", "front_frame"]


@dataclass(frozen=True)
class Objective:
    """One objective of a study: its metric name, its kind, the measure it reads and its direction.

    ``measure`` is None where the study holds no fairfront study file (then only the objective
    values themselves are known).
    """

    name: str
    kind: str
    measure: str | None
    maximize: bool


def _spec(study: optuna.Study) -> ObjectiveSpec | None:
    text = study.user_attrs.get(STUDY_FILE_ATTR)
    if not isinstance(text, str):
        return None
    try:
        data = tomllib.loads(text)
        task = data.get("model", {}).get("task", "classification")
        return ObjectiveSpec.from_table(Table(data.get("objectives", {}), "objectives"), task=task)
    except (tomllib.TOMLDecodeError, ConfigError, AttributeError):
        return None


def objectives(study: optuna.Study) -> list[Objective]:
    """The study's objectives in the order of its values."""
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    maximize = [d == StudyDirection.MAXIMIZE for d in study.directions]
    spec = _spec(study)
    if spec is None or len(spec.names) != len(names):
        kinds = ["accuracy", "size"] + ["bias"] * (len(names) - 2)
        return [Objective(n, k, None, m) for n, k, m in zip(names, kinds, maximize)]
    measures = [spec.accuracy, spec.size, *spec.bias]
    kinds = ["accuracy", "size"] + ["bias"] * len(spec.bias)
    return [Objective(n, k, s, m) for n, k, s, m in zip(names, kinds, measures, maximize)]


def trial_report(trial: FrozenTrial) -> TrialReport:
    """The trial's stored measures (its record, or the nested user attributes of an older study); an empty
    report where they do not follow the schema."""
    try:
        return TrialReport.from_attrs(trial.user_attrs, trial.system_attrs)
    except (TypeError, ValueError):
        return TrialReport()


def split_value(report: TrialReport, objective: Objective, split: str) -> float | None:
    """The objective's measure on ``split`` (the size measure is the same on every split)."""
    if objective.measure is None:
        return None
    if objective.kind == "size":
        return report.sizes.get(objective.measure)
    scores = report.splits.get(split)
    if scores is None:
        return None
    table = scores.accuracy if objective.kind == "accuracy" else scores.bias
    return (table or {}).get(objective.measure)


def interval(report: TrialReport, objective: Objective, split: str) -> tuple[float | None, float | None]:
    """The bootstrap interval of a bias objective's measure on ``split``; ``(None, None)`` where none was measured.

    The group bias measures carry one (``bootstrap_resamples`` > 0) in the split's fairness report.
    """
    scores = report.splits.get(split)
    if objective.kind != "bias" or objective.measure is None or scores is None or not scores.fairness:
        return None, None
    ci = (scores.fairness.get("ci") or {}).get(objective.measure)
    if not ci or len(ci) != 2:
        return None, None
    return ci[0], ci[1]


def _columns(objs: list[Objective]) -> list[str]:
    columns = ["trial", *(o.name for o in objs), *(f"test_{o.name}" for o in objs if o.kind != "size")]
    for o in objs:
        if o.kind == "bias":
            columns += [f"{o.name}_ci_low", f"{o.name}_ci_high", f"test_{o.name}_ci_low", f"test_{o.name}_ci_high"]
    return columns


def _row(trial: FrozenTrial, objs: list[Objective]) -> dict[str, Any]:
    report = trial_report(trial)
    row: dict[str, Any] = {"trial": trial.number, **{o.name: v for o, v in zip(objs, trial.values)}}
    row.update({f"test_{o.name}": split_value(report, o, "test") for o in objs if o.kind != "size"})
    for o in objs:
        if o.kind == "bias":
            row[f"{o.name}_ci_low"], row[f"{o.name}_ci_high"] = interval(report, o, "validation")
            row[f"test_{o.name}_ci_low"], row[f"test_{o.name}_ci_high"] = interval(report, o, "test")
    return row


def _param_column(trials: list[FrozenTrial], name: str) -> pd.Series:
    """One parameter over the trials: integers stay integers (nullable where a trial lacks the parameter),
    floats are floats (NaN where absent), a choice of mixed types becomes text (one type per column,
    as Parquet needs)."""
    values = [t.params.get(name) for t in trials]
    present = [v for v in values if v is not None]
    kinds = {type(t.distributions[name]) for t in trials if name in t.distributions}
    if kinds == {IntDistribution}:
        return pd.Series(pd.array(values, dtype="Int64"), name=name)
    if kinds == {FloatDistribution}:
        return pd.Series(values, name=name, dtype=float)
    if len({type(v) for v in present}) > 1:
        values = [None if v is None else str(v) for v in values]
    return pd.Series(values, name=name, dtype=object if None in values else None)


def front_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per front trial, in :func:`~fairfront.search.report.front_trials` order.

    Columns: the objective values (validation split), their test-split values, the bias
    objectives' intervals on both splits, then the parameters.
    """
    objs = objectives(study)
    trials = front_trials(study)
    columns = _columns(objs)
    params = sorted({name for t in trials for name in t.params})
    frame = pd.DataFrame.from_records([_row(t, objs) for t in trials], columns=columns)
    frame = frame.astype({c: float for c in columns if c != "trial"}).astype({"trial": int})
    return pd.concat([frame, *(_param_column(trials, p) for p in params)], axis=1)
