"""What the CLI prints about a study: progress lines, the Pareto front, the state summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

__all__ = ["format_value", "format_values", "front_table", "status_text"]


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


def front_table(study: optuna.Study, *, with_params: bool = True) -> str:
    """The non-dominated COMPLETE trials as an aligned text table, best accuracy first."""
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    best = sorted(study.best_trials, key=lambda t: -t.values[0])
    if not best:
        return "no COMPLETE trials yet"
    header = ["trial"] + list(names) + (["parameters"] if with_params else [])
    rows = [[str(t.number)] + [format_value(n, v) for n, v in zip(names, t.values)]
            + ([_params_text(t.params)] if with_params else []) for t in best]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


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
        lines.append(f"last failure: trial {last.number}: {last.user_attrs.get('fail_reason', 'no reason recorded')}")
    lines.append(f"best trade-offs so far ({len(study.best_trials)} on the Pareto front):")
    lines.append(front_table(study, with_params=False))
    return "\n".join(lines)
