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

import math
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.measures.objectives import ObjectiveSpec
from fairfront.objectives.measures.report import TrialReport
from fairfront.search.attrs import CONFIRM_PREFIX, STUDY_FILE_ATTR, TEACHER_ATTR, stored_record
from fairfront.search.report import front_trials, sort_front

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Objective", "objectives", "trial_report", "split_value", "interval", "front_frame", "standard_error",
           "teacher_report", "unit",
           "RobustFront", "robust_front_frame", "confirmed", "confirmed_cell"]


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


def teacher_report(study: optuna.Study) -> TrialReport | None:
    """The dense teacher's measures (study attribute ``fairfront.teacher``); None where the study has none
    (studies made before it was stored) or it does not follow the schema."""
    attrs = study.user_attrs.get(TEACHER_ATTR)
    if not isinstance(attrs, dict):
        return None
    try:
        return TrialReport.from_attrs(attrs)
    except (TypeError, ValueError, AttributeError):
        return None


def unit(objective: Objective) -> str:
    """The unit of an objective's measure: ``parameters``, ``bytes``, ``ms``, or ``""`` for a share or score."""
    measure = objective.measure or ""
    if objective.kind != "size":
        return ""
    if measure.endswith("_bytes"):
        return "bytes"
    if measure.endswith("_ms"):
        return "ms"
    return "parameters"


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
    return [*columns, "degenerate"]


def _row(trial: FrozenTrial, objs: list[Objective]) -> dict[str, Any]:
    report = trial_report(trial)
    row: dict[str, Any] = {"trial": trial.number, **{o.name: v for o, v in zip(objs, trial.values)}}
    row.update({f"test_{o.name}": split_value(report, o, "test") for o in objs if o.kind != "size"})
    row["degenerate"] = bool((report.validation.degenerate or {}).get("flagged")) if "validation" in report.splits \
        else False
    for o in objs:
        if o.kind == "bias":
            row[f"{o.name}_ci_low"], row[f"{o.name}_ci_high"] = interval(report, o, "validation")
            row[f"test_{o.name}_ci_low"], row[f"test_{o.name}_ci_high"] = interval(report, o, "test")
    return row


def confirmed(study: optuna.Study) -> dict[int, dict[str, dict[str, Any]]]:
    """``fairfront confirm``'s test-split results by trial number: per objective its seeds' mean, t-based 95% CI, n."""
    records = {}
    for key, value in study.user_attrs.items():
        number = key[len(CONFIRM_PREFIX):]
        if key.startswith(CONFIRM_PREFIX) and number.isdigit() and isinstance(value, dict):
            records[int(number)] = value.get("test") or {}
    return records


def confirmed_cell(record: dict[str, dict[str, Any]], format_value: Any) -> str:
    """One trial's confirmation as text: ``name mean±half-width`` per objective, then ``(n=K)``."""
    parts, n = [], 0
    for name, stats in record.items():
        mean, low, high, n = stats.get("mean"), stats.get("ci_low"), stats.get("ci_high"), stats.get("n", 0)
        if mean is None:
            continue
        half = "" if low is None or high is None else "±" + format_value(name, (high - low) / 2)
        parts.append(f"{name} {format_value(name, mean)}{half}")
    return " ".join(parts) + (f" (n={n})" if parts else "")


def _confirmed_columns(trials: list[FrozenTrial], objs: list[Objective],
                       records: dict[int, dict[str, dict[str, Any]]]) -> pd.DataFrame:
    """``confirmed_<objective>_<mean|ci_low|ci_high|n>``: the test-split confirmation, NaN where none."""
    import pandas as pd

    columns = {f"confirmed_{o.name}_{key}": [(records.get(t.number, {}).get(o.name) or {}).get(key) for t in trials]
               for o in objs for key in ("mean", "ci_low", "ci_high", "n")}
    return pd.DataFrame(columns, dtype=float)


def _param_column(trials: list[FrozenTrial], name: str) -> pd.Series:
    """One parameter over the trials: integers stay integers (nullable where a trial lacks the parameter),
    floats are floats (NaN where absent), a choice of mixed types becomes text (one type per column,
    as Parquet needs)."""
    import pandas as pd

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


def front_frame(study: optuna.Study, *, feasible_only: bool = True,
                trials: list[FrozenTrial] | None = None) -> pd.DataFrame:
    """One row per front trial, in :func:`~fairfront.search.report.front_trials` order (or per one of ``trials``).

    Columns: the objective values (validation split), their test-split values, the bias
    objectives' intervals on both splits, ``degenerate`` (the model predicts one class or is near
    chance on validation), ``feasible`` in a study with ``[constraints]``, the ``fairfront confirm``
    results where the study has any (``confirmed_<objective>_mean``, ``_ci_low``, ``_ci_high``,
    ``_n``), then the parameters. ``feasible_only=False`` is the plain front of every COMPLETE trial.
    """
    import pandas as pd

    objs = objectives(study)
    trials = front_trials(study, feasible_only=feasible_only) if trials is None else trials
    columns = _columns(objs)
    params = sorted({name for t in trials for name in t.params})
    frame = pd.DataFrame.from_records([_row(t, objs) for t in trials], columns=columns)
    frame = frame.astype({c: float for c in columns if c not in ("trial", "degenerate")})
    frame = frame.astype({"trial": int, "degenerate": bool})
    if any(t.constraints for t in trials):
        frame["feasible"] = [all(v <= 0 for v in t.constraints.values()) for t in trials]
    records = confirmed(study)
    extra = [_confirmed_columns(trials, objs, records)] if records else []
    return pd.concat([frame, *extra, *(_param_column(trials, p) for p in params)], axis=1)


BINOMIAL_MEASURES = ("accuracy", "balanced_accuracy", "macro_f1")
"""Accuracy measures whose standard error is taken as a proportion's, ``sqrt(p (1 - p) / n)`` (exact for
accuracy, an approximation for the other two)."""


def standard_error(trial: FrozenTrial, objective: Objective, value: float, report: TrialReport) -> float | None:
    """The standard error of one objective value of ``trial``; None where nothing stored gives one.

    In order: the replicates' standard error (``replicates.se``, trials trained with several seeds);
    0 for size (measured exactly); for accuracy, the binomial ``sqrt(p (1 - p) / n)`` over the
    validation split's ``n``; for a bias measure, its bootstrap 95% interval's half-width / 1.96.
    """
    replicates = stored_record(trial).get("replicates")
    if isinstance(replicates, dict):
        se = (replicates.get("se") or {}).get(objective.name)
        if isinstance(se, (int, float)) and math.isfinite(se) and se >= 0:
            return float(se)
    if objective.kind == "size":
        return 0.0
    if objective.kind == "accuracy" and objective.measure in BINOMIAL_MEASURES:
        scores = report.splits.get("validation")
        n = scores.n if scores is not None else None
        return math.sqrt(value * (1.0 - value) / n) if n and 0.0 <= value <= 1.0 else None
    if objective.kind == "bias":
        low, high = interval(report, objective, "validation")
        if low is not None and high is not None:
            return (high - low) / (2 * 1.96)
    return None


def _standard_errors(pool: list[FrozenTrial], objs: list[Objective],
                     values: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
    """Each value's standard error (0 where unknown), whether it was known, and the unknown ones by objective."""
    se = np.zeros_like(values)
    known = np.ones_like(values, dtype=bool)
    unknown: dict[str, list[int]] = {}
    for i, trial in enumerate(pool):
        report = trial_report(trial)
        for k, o in enumerate(objs):
            found = standard_error(trial, o, float(values[i, k]), report)
            if found is None:
                unknown.setdefault(o.name, []).append(trial.number)
                known[i, k] = False
            se[i, k] = found or 0.0
    return se, known, unknown


@dataclass
class RobustFront:
    """The robust front as a frame, and which standard errors were unknown (taken as 0, i.e. exact).

    ``frame``: :func:`front_frame`'s columns for the robust-front trials, plus ``<objective>_se``
    (NaN where unknown), ``pareto`` (also on the plain front) and ``p_nondominated``.
    """

    frame: pd.DataFrame
    z: float
    draws: int
    unknown_se: dict[str, list[int]] = field(default_factory=dict)


def robust_front_frame(study: optuna.Study, *, z: float = 1.96, draws: int = 2000, seed: int = 0,
                       feasible_only: bool = True) -> RobustFront:
    """The trials no other trial robustly dominates (:mod:`fairfront.search.robust_front`), in front order."""
    import pandas as pd

    from fairfront.search.robust_front import non_dominated, p_nondominated, robust_front

    objs = objectives(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pool = [t for t in complete if not feasible_only or all(v <= 0 for v in t.constraints.values())]
    values = np.array([t.values for t in pool], dtype=float).reshape(len(pool), len(objs))
    se, known, unknown = _standard_errors(pool, objs, values)
    maximize = [o.maximize for o in objs]
    keep = np.flatnonzero(robust_front(values, se, maximize, z=z)) if len(pool) else np.array([], dtype=int)
    on_pareto = non_dominated(values, maximize) if len(pool) else np.array([], dtype=bool)
    p: Any = p_nondominated(values, se, maximize, candidates=keep, draws=draws, seed=seed) if len(keep) else []
    by_number = {pool[i].number: (i, float(pi)) for i, pi in zip(keep, p)}
    trials = sort_front(study, [pool[i] for i in keep])
    frame = front_frame(study, trials=trials)
    rows = [by_number[t.number][0] for t in trials]
    at = 1 + len(objs)
    for k, o in enumerate(objs):
        column = [se[i, k] if known[i, k] else float("nan") for i in rows]
        frame.insert(at + k, f"{o.name}_se", pd.Series(column, dtype=float))
    frame.insert(at + len(objs), "pareto", pd.Series([bool(on_pareto[i]) for i in rows], dtype=bool))
    frame.insert(at + len(objs) + 1, "p_nondominated", pd.Series([by_number[t.number][1] for t in trials],
                                                                 dtype=float))
    return RobustFront(frame, z, draws, unknown)
