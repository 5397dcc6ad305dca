"""What the CLI prints about a study: progress lines, the Pareto front, the state summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from fairfront.search.attrs import REASON_ATTR, stored_record

if TYPE_CHECKING:
    import pandas as pd

    from fairfront.search.front_data import RobustFront

__all__ = ["FRONT_FORMATS", "format_value", "format_values", "front_trials", "sort_front", "front_table",
           "front_text", "frame_text", "robust_table", "infeasible_note", "status_text",
           "trial_warnings", "is_degenerate", "DEGENERATE_MARK", "confirmed_cells", "aligned"]

DEGENERATE_MARK = "!"
"""Suffix of a trial number in ``front`` / ``status`` when the trial's model is degenerate on validation."""

FRONT_FORMATS = ("table", "csv", "json", "parquet")
"""``fairfront front --format``: the text table, or every column (values on both splits, intervals,
parameters) as CSV, JSON records or a Parquet file."""


def format_value(name: str, value: float) -> str:
    if name == "size":
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.3f}{unit}"
        return f"{value:.0f}"
    return f"{value:.4f}"


def format_values(names: Sequence[str], values: Sequence[float]) -> str:
    return "  ".join(f"{n} {format_value(n, v)}" for n, v in zip(names, values))


def is_degenerate(attrs: dict) -> bool:
    """Whether a trial's model predicts one class or is near chance on the validation split."""
    flags = (attrs.get("validation") or {}).get("degenerate") or {}
    return bool(flags.get("flagged"))


def trial_warnings(attrs: dict) -> list[str]:
    """What a user must know about a trial's measures: groups or classes left out, a degenerate model."""
    lines = []
    for split in ("validation", "test"):
        scores = attrs.get(split) or {}
        lines += [f"{split}: {line}" for line in (scores.get("fairness") or {}).get("warnings", [])]
        flags = scores.get("degenerate") or {}
        if flags.get("flagged"):
            what = "predicts one class" if flags.get("one_class") else "is near chance"
            lines.append(f"{split}: a trial's model {what} (balanced accuracy {flags.get('balanced_accuracy', 0):.3f}, "
                         f"chance {flags.get('chance', 0):.3f}); its bias values say nothing; marked "
                         f"{DEGENERATE_MARK!r} in front and status")
    return lines


def front_trials(study: optuna.Study, *, feasible_only: bool = True) -> list[FrozenTrial]:
    """The non-dominated COMPLETE trials, best first objective first (ties: lower trial number first).

    In a study with ``[constraints]`` only feasible trials compete (``study.best_trials``);
    ``feasible_only=False`` gives the plain front of every COMPLETE trial. Every output of
    ``fairfront front`` lists its rows in this order.
    """
    return sort_front(study, study.best_trials if feasible_only else _plain_front(study))


def sort_front(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """``trials`` in front order: best first objective first, ties by trial number."""
    signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    return sorted(trials, key=lambda t: (signs[0] * t.values[0], t.number))


def _plain_front(study: optuna.Study) -> list[FrozenTrial]:
    from fairfront.search.robust_front import non_dominated

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    mask = non_dominated([t.values for t in complete], [d == StudyDirection.MAXIMIZE for d in study.directions])
    return [t for t, keep in zip(complete, mask) if keep]


def infeasible_note(trials: Sequence[FrozenTrial]) -> str:
    """A line naming the trials that miss a ``[constraints]`` limit; empty where none does."""
    return _infeasible_line([t.number for t in trials
                             if t.constraints and any(v > 0 for v in t.constraints.values())])


def _infeasible_line(numbers: Sequence[int]) -> str:
    return f"infeasible (outside [constraints]): trial {', '.join(map(str, numbers))}" if numbers else ""


def front_table(study: optuna.Study, *, with_params: bool = True, with_test: bool = True,
                feasible_only: bool = True) -> str:
    """The front as an aligned text table (:func:`fairfront.search.front_table.front_table`)."""
    from fairfront.search.front_table import front_table as table  # it reads front_data, which reads this module

    return table(study, with_params=with_params, with_test=with_test, feasible_only=feasible_only)


def aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    """The header and rows as lines of left-aligned columns two spaces apart."""
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]


def confirmed_cells(study: optuna.Study, trials: list[FrozenTrial]) -> dict[int, str]:
    """The ``fairfront confirm`` column's text by trial number; empty for a study never confirmed."""
    from fairfront.search.attrs import CONFIRM_PREFIX

    if not any(key.startswith(CONFIRM_PREFIX) for key in study.user_attrs):
        return {}  # without importing the front's frame (pandas): status stays fast
    from fairfront.search.front_data import confirmed, confirmed_cell

    records = confirmed(study)
    return {t.number: confirmed_cell(records[t.number], format_value) for t in trials if t.number in records}


def front_text(study: optuna.Study, fmt: str, *, feasible_only: bool = True) -> str:
    """The front as ``fmt`` (``table``, ``csv`` or ``json``); CSV and JSON hold every column of
    :func:`~fairfront.search.front_data.front_frame`, JSON as one record per trial (null where absent)."""
    if fmt == "table":
        from fairfront.search.attrs import CLASSES_ATTR, classes_line

        header = classes_line(study.user_attrs.get(CLASSES_ATTR))
        return (header + "\n" if header else "") + front_table(study, feasible_only=feasible_only) + "\n"
    from fairfront.search.front_data import front_frame

    return frame_text(front_frame(study, feasible_only=feasible_only), fmt)


def frame_text(frame: pd.DataFrame, fmt: str) -> str:
    """A front's frame as CSV, or JSON records (null where absent)."""
    if fmt == "csv":
        text: str = frame.to_csv(index=False)
        return text
    if fmt == "json":
        import json

        records = [{k: _plain(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")]
        return json.dumps(records, indent=1) + "\n"
    raise ValueError(f"frame_text does not write {fmt!r}: expected csv or json")


def robust_table(robust: RobustFront, names: Sequence[str]) -> str:
    """The robust front as an aligned text table: each objective as ``value ± se``, whether the trial is
    also on the plain front, and its probability of being non-dominated; then how it was computed."""
    frame = robust.frame
    if frame.empty:
        return "no COMPLETE trials yet"
    header = ["trial", *names, "pareto", "p_nondominated"]
    rows = []
    for row in frame.to_dict("records"):
        cells = [str(row["trial"])]
        for n in names:
            se = row[f"{n}_se"]
            cells.append(format_value(n, row[n]) + ("" if se != se else f" ± {format_value(n, se)}"))
        rows.append(cells + ["yes" if row["pareto"] else "no", f"{row['p_nondominated']:.3f}"])
    lines = aligned(header, rows)
    lines.append(f"robust front: no other trial is at least as good on every objective and better on one by more "
                 f"than {robust.z:g} * sqrt(se_a^2 + se_b^2); p_nondominated from {robust.draws} draws of "
                 "normal(value, se)")
    if "feasible" in frame and not frame["feasible"].all():
        lines.append(_infeasible_line(frame.loc[~frame["feasible"], "trial"].tolist()))
    for name, numbers in robust.unknown_se.items():
        lines.append(f"no standard error stored for {name} of trial {', '.join(map(str, numbers))}: taken as exact")
    return "\n".join(lines)


def _plain(value: object) -> object:
    """A JSON value: NaN and pandas' NA become null, numpy scalars plain Python numbers."""
    import math

    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def status_text(study: optuna.Study, target: int | None) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    states = ", ".join(f"{counts.get(s.name, 0)} {s.name}" for s in
                       (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL))
    directions = ", ".join(f"{n} ({d.name.lower()})" for n, d in
                           zip(study.metric_names or [], study.directions))
    lines = [f"study {study.study_name}: {states}" + (f"; target {target} COMPLETE" if target else ""),
             f"objectives: {directions}"]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        last = failed[-1]
        reason = stored_record(last).get(REASON_ATTR, "no reason recorded")
        lines.append(f"last failure: trial {last.number}: {reason}")
    lines.append(f"best trade-offs so far ({len(study.best_trials)} on the Pareto front):")
    lines.append(front_table(study, with_params=False, with_test=False))
    return "\n".join(lines)
