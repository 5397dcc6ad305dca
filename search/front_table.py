"""The Pareto front as the text table ``fairfront front`` and ``status`` print.

Each objective's column names its measure and unit (``size (nonzero_params, parameters)``); a bias
value carries its bootstrap interval where one was measured; ``test <objective>`` columns hold the
test split's values (size is the same on both splits); integer parameters print as integers.
Rows come in :func:`~fairfront.search.report.front_trials` order, as in every other format of
``fairfront front``. Where the study stores the dense teacher's measures (``fairfront.teacher``),
they come first as a reference row, marked, which is not part of the front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from fairfront.objectives.measures.report import TrialReport
from fairfront.search.attrs import stored_record
from fairfront.search.front_data import Objective, interval, objectives, split_value, teacher_report, trial_report, unit
from fairfront.search.report import (
    DEGENERATE_MARK,
    aligned,
    confirmed_cells,
    format_value,
    front_trials,
    infeasible_note,
    is_degenerate,
)

__all__ = ["TEACHER_LABEL", "front_table"]

TEACHER_LABEL = "dense teacher*"
TEACHER_NOTE = "* the dense teacher every trial compresses: a reference, not part of the front"


def _number(objective: Objective, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit(objective) == "ms":
        return f"{value:.2f}"
    return format_value("size" if objective.kind == "size" else objective.name, value)


def _cell(objective: Objective, value: float | None, report: TrialReport, split: str) -> str:
    """The value, and a bias measure's bootstrap interval ``[low, high]`` where one was measured."""
    text = _number(objective, value)
    low, high = interval(report, objective, split)
    if low is None or high is None or value is None:
        return text
    return f"{text} [{low:.4f}, {high:.4f}]"


def _header(objs: Sequence[Objective], with_test: bool) -> list[str]:
    columns = ["trial"]
    for o in objs:
        detail = [m for m in ((o.measure if o.measure != o.name else None), unit(o)) if m]
        columns.append(o.name + (f" ({', '.join(detail)})" if detail else ""))
    if with_test:
        columns += [f"test {o.name}" for o in objs if o.kind != "size"]
    return columns


def _cells(objs: Sequence[Objective], values: Sequence[float | None], report: TrialReport,
           with_test: bool) -> list[str]:
    cells = [_cell(o, v, report, "validation") for o, v in zip(objs, values)]
    if with_test:
        cells += [_cell(o, split_value(report, o, "test"), report, "test") for o in objs if o.kind != "size"]
    return cells


def _param(trial: FrozenTrial, name: str) -> str:
    value: Any = trial.params[name]
    if isinstance(trial.distributions.get(name), IntDistribution) or isinstance(value, int):
        return f"{name}={int(value)}"
    return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"


DEGENERATE_NOTE = (f"{DEGENERATE_MARK} degenerate: the model predicts one class or is within 0.05 of chance "
                   "balanced accuracy on validation; its bias values say nothing")


def front_table(study: optuna.Study, *, with_params: bool = True, with_test: bool = True,
                feasible_only: bool = True) -> str:
    """The front (and the dense teacher, where stored) as an aligned text table.

    Trials whose model is degenerate are marked :data:`~fairfront.search.report.DEGENERATE_MARK`;
    with ``feasible_only=False`` in a study with ``[constraints]`` the infeasible trials are named.
    """
    best = front_trials(study, feasible_only=feasible_only)
    if not best:
        return "no COMPLETE trials yet" if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) \
            else "no feasible COMPLETE trials yet"
    objs = objectives(study)
    confirmed = confirmed_cells(study, best)
    rows = []
    teacher = teacher_report(study)
    if teacher is not None:
        values = [split_value(teacher, o, "validation") for o in objs]
        rows.append([TEACHER_LABEL, *_cells(objs, values, teacher, with_test)] + ([""] if confirmed else [])
                    + ([""] if with_params else []))
    for t in best:
        params = [" ".join(_param(t, k) for k in sorted(t.params))] if with_params else []
        mark = DEGENERATE_MARK if is_degenerate(stored_record(t)) else ""
        rows.append([f"{t.number}{mark}", *_cells(objs, t.values, trial_report(t), with_test),
                     *([confirmed.get(t.number, "-")] if confirmed else []), *params])
    notes = [TEACHER_NOTE] if teacher is not None else []
    notes += [DEGENERATE_NOTE] if any(is_degenerate(stored_record(t)) for t in best) else []
    notes += [] if feasible_only or not infeasible_note(best) else [infeasible_note(best)]
    header = (_header(objs, with_test) + (["confirmed test mean±95% CI"] if confirmed else [])
              + (["parameters"] if with_params else []))
    return "\n".join([line.rstrip() for line in aligned(header, rows)] + notes)
