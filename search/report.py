"""What the CLI prints about a study: progress lines, the Pareto front, the state summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from fairfront.search.attrs import REASON_ATTR, stored_record

__all__ = ["FRONT_FORMATS", "format_value", "format_values", "front_trials", "front_table", "front_text", "status_text"]

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


def _params_text(params: dict) -> str:
    parts = []
    for k, v in sorted(params.items()):
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated COMPLETE trials, best first objective first (ties: lower trial number first).

    Every output of ``fairfront front`` lists its rows in this order.
    """
    signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    return sorted(study.best_trials, key=lambda t: (signs[0] * t.values[0], t.number))


def front_table(study: optuna.Study, *, with_params: bool = True) -> str:
    """The non-dominated COMPLETE trials as an aligned text table, best accuracy first."""
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    best = front_trials(study)
    if not best:
        return "no COMPLETE trials yet"
    header = ["trial"] + list(names) + (["parameters"] if with_params else [])
    rows = [[str(t.number)] + [format_value(n, v) for n, v in zip(names, t.values)]
            + ([_params_text(t.params)] if with_params else []) for t in best]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def front_text(study: optuna.Study, fmt: str) -> str:
    """The front as ``fmt`` (``table``, ``csv`` or ``json``); CSV and JSON hold every column of
    :func:`~fairfront.search.front_data.front_frame`, JSON as one record per trial (null where absent)."""
    if fmt == "table":
        return front_table(study) + "\n"
    from fairfront.search.front_data import front_frame

    frame = front_frame(study)
    if fmt == "csv":
        text: str = frame.to_csv(index=False)
        return text
    if fmt == "json":
        import json

        records = [{k: _plain(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")]
        return json.dumps(records, indent=1) + "\n"
    raise ValueError(f"front_text does not write {fmt!r}: expected table, csv or json")


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
    lines.append(front_table(study, with_params=False))
    return "\n".join(lines)
