"""``fairfront report``: one self-contained HTML file that shows a study instead of listing it.

The page holds the front as 2-D projections and in 3-D (dominated trials grey, each bias value
with its bootstrap interval, the parameters on hover), the hypervolume history, the per-group
rates of the front's trials, bias against size per compression family, the front as a table, and the
"Origins of bias" plots where ``fairfront explain`` stored its results (:mod:`fairfront.search.explain`),
and the "Confirmed on fresh seeds" plot where ``fairfront confirm`` did (:mod:`fairfront.search.confirm`).
plotly.js is embedded, so the file opens offline. Everything is read from the storage (the trials'
user attributes, :mod:`fairfront.objectives.measures.report`); nothing is written to it.

**Hypervolume.** Optuna's own helper (``optuna.visualization.plot_hypervolume_history``)
computes it, with the reference point set from the COMPLETE trials: each objective's worst value,
moved a further 10% of that objective's range (10% of its magnitude, at least 0.1, where every
trial has the same value) in the worse direction. The history is shown as a share of the box
between each objective's best value and that reference point, so 1 would be a single trial best
at everything; the raw value depends on the objectives' units.

**The dense teacher.** A study stores the teacher scored as a trial is (study attribute
``fairfront.teacher``): it is drawn as a red star in every projection and in 3-D, at its
validation values. Studies made before that record keep only the teacher's plain accuracy (in
every trial's disparate-impact report); where the accuracy objective is ``accuracy`` it is drawn
as a dashed line, and the page says the teacher's size and bias are not stored.
"""

from __future__ import annotations

import html
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from fairfront.objectives.measures.report import TrialReport
from fairfront.search.attrs import REASON_ATTR, stored_record
from fairfront.search.explain.report_section import explain_figures
from fairfront.search.front_data import (
    Objective,
    confirmed,
    front_frame,
    interval,
    objectives,
    split_value,
    teacher_report,
    trial_report,
)
from fairfront.search.hypervolume import hypervolume_reference
from fairfront.search.report import format_value, front_trials

__all__ = ["render", "write_report", "hypervolume_reference", "per_group_rates", "MAX_BAR_TRIALS"]

FRONT_COLOR = "#1f77b4"
DOMINATED_COLOR = "#c8c8c8"
MAX_BAR_TRIALS = 20
"""The per-group bars show at most this many front trials (the best-accuracy ones)."""


@dataclass
class _Point:
    """One COMPLETE trial as the plots need it."""

    trial: FrozenTrial
    report: TrialReport
    on_front: bool
    hover: str


@dataclass
class _Section:
    title: str
    note: str = ""
    figure: go.Figure | None = None
    html: str = ""


def _hover(trial: FrozenTrial, objs: Sequence[Objective]) -> str:
    lines = [f"trial {trial.number}", " · ".join(f"{o.name} {format_value(o.kind, v)}"
                                                for o, v in zip(objs, trial.values))]
    for name, value in sorted(trial.params.items()):
        lines.append(f"{name} = {value:.4g}" if isinstance(value, float) else f"{name} = {value}")
    return "<br>".join(html.escape(line) for line in lines)


def _points(study: optuna.Study, objs: Sequence[Objective]) -> list[_Point]:
    front = {t.number for t in study.best_trials}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [_Point(t, trial_report(t), t.number in front, _hover(t, objs)) for t in complete]


def _axis_title(objective: Objective) -> str:
    better = "higher" if objective.maximize else "lower"
    measure = f"{objective.measure}, " if objective.measure and objective.measure != objective.name else ""
    return f"{objective.name} ({measure}{better} is better)"


def _errors(points: Sequence[_Point], index: int, objective: Objective) -> dict[str, Any] | None:
    """Asymmetric error bars from the validation split's bootstrap intervals; None where none was measured."""
    plus, minus, any_ci = [], [], False
    for p in points:
        low, high = interval(p.report, objective, "validation")
        value = p.trial.values[index]
        any_ci = any_ci or low is not None
        plus.append(max(high - value, 0.0) if high is not None else 0.0)
        minus.append(max(value - low, 0.0) if low is not None else 0.0)
    if not any_ci:
        return None
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1}


def _scatter_traces(points: Sequence[_Point], objs: Sequence[Objective], axes: Sequence[int],
                    three_d: bool = False) -> list[go.BaseTraceType]:
    """The front in colour and the dominated trials in grey, on the objectives ``axes`` (x, y[, z])."""
    traces: list[go.BaseTraceType] = []
    for on_front, name, color in ((False, "dominated", DOMINATED_COLOR), (True, "Pareto front", FRONT_COLOR)):
        group = [p for p in points if p.on_front == on_front]
        if not group:
            continue
        coords: dict[str, Any] = {}
        for letter, i in zip("xyz", axes):
            coords[letter] = [p.trial.values[i] for p in group]
            errors = _errors(group, i, objs[i])
            if errors is not None:
                coords[f"error_{letter}"] = {**errors, "color": color}
        common = {"name": name, "text": [p.hover for p in group], "hovertemplate": "%{text}<extra></extra>"}
        if three_d:
            traces.append(go.Scatter3d(mode="markers", marker={"size": 4, "color": color}, **coords, **common))
        else:
            traces.append(go.Scatter(mode="markers", marker={"size": 9, "color": color,
                                                             "line": {"width": 1, "color": "white"}},
                                     **coords, **common))
    return traces


TEACHER_COLOR = "#d62728"


def _teacher_trace(teacher: list[float | None] | None, axes: Sequence[int],
                   three_d: bool = False) -> list[go.BaseTraceType]:
    """The dense teacher as a red star at its validation values on ``axes``; none where one is not stored."""
    if teacher is None or any(teacher[i] is None for i in axes):
        return []
    coords = {letter: [teacher[i]] for letter, i in zip("xyz", axes)}
    common = {"name": "dense teacher (reference)", "mode": "markers", "hovertemplate": "dense teacher<extra></extra>"}
    if three_d:
        return [go.Scatter3d(marker={"size": 6, "color": TEACHER_COLOR, "symbol": "diamond"}, **coords, **common)]
    return [go.Scatter(marker={"size": 16, "color": TEACHER_COLOR, "symbol": "star"}, **coords, **common)]


def _teacher_values(study: optuna.Study, objs: Sequence[Objective]) -> list[float | None] | None:
    """The dense teacher's validation value of each objective (study attribute ``fairfront.teacher``)."""
    report = teacher_report(study)
    return None if report is None else [split_value(report, o, "validation") for o in objs]


def _projection(points: Sequence[_Point], objs: Sequence[Objective], x: int, y: int,
                teacher_accuracy: float | None, teacher: list[float | None] | None = None) -> go.Figure:
    fig = go.Figure(_scatter_traces(points, objs, (x, y)) + _teacher_trace(teacher, (x, y)))
    fig.update_layout(title=f"{objs[y].name} against {objs[x].name}", xaxis_title=_axis_title(objs[x]),
                      yaxis_title=_axis_title(objs[y]), template="plotly_white", height=480)
    if teacher is None and teacher_accuracy is not None and objs[y].kind == "accuracy":
        fig.add_hline(y=teacher_accuracy, line_dash="dash", line_color="#d62728",
                      annotation_text=f"dense teacher {teacher_accuracy:.4f}", annotation_position="top left")
    return fig


def _projections(objs: Sequence[Objective]) -> list[tuple[int, int]]:
    """(x, y) pairs: accuracy against size and against each bias objective, then each bias against size."""
    size = [i for i, o in enumerate(objs) if o.kind == "size"]
    accuracy = [i for i, o in enumerate(objs) if o.kind == "accuracy"]
    bias = [i for i, o in enumerate(objs) if o.kind == "bias"]
    pairs = [(s, a) for a in accuracy for s in size] + [(b, a) for a in accuracy for b in bias]
    return pairs + [(s, b) for s in size for b in bias]


def _front_3d(points: Sequence[_Point], objs: Sequence[Objective],
              teacher: list[float | None] | None = None) -> list[_Section]:
    if len(objs) < 3:
        return []
    sections = []
    for b in range(2, len(objs)):
        fig = go.Figure(_scatter_traces(points, objs, (1, b, 0), three_d=True)
                        + _teacher_trace(teacher, (1, b, 0), three_d=True))
        fig.update_layout(scene={"xaxis_title": objs[1].name, "yaxis_title": objs[b].name,
                                 "zaxis_title": objs[0].name}, template="plotly_white", height=620,
                          title=f"{objs[0].name}, {objs[1].name} and {objs[b].name}")
        sections.append(_Section(f"The front in 3-D: {objs[0].name}, {objs[1].name}, {objs[b].name}",
                                 "Drag to rotate. Grey: dominated trials.", fig))
    return sections


def _hypervolume(study: optuna.Study, points: Sequence[_Point], objs: Sequence[Objective]) -> _Section:
    values = np.array([p.trial.values for p in points], dtype=float)
    reference, ideal = hypervolume_reference(values, [o.maximize for o in objs])
    box = float(np.prod(np.abs(reference - ideal)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna.visualization.plot_hypervolume_history(study, reference.tolist()).data[0]
    fig = go.Figure(go.Scatter(x=list(history.x), y=[v / box for v in history.y], mode="lines+markers",
                               name="hypervolume", line={"color": FRONT_COLOR}))
    fig.update_layout(title="Hypervolume history", xaxis_title="trial", template="plotly_white", height=420,
                      yaxis_title="hypervolume (share of the ideal-to-reference box)")
    ref_text = ", ".join(f"{o.name} {format_value(o.kind, r)}" for o, r in zip(objs, reference))
    note = (f"Hypervolume of the front after each COMPLETE trial (by trial number), computed by Optuna with the "
            f"reference point {ref_text} (each objective's worst value moved 10% of its range further) and "
            f"divided by the volume of the box between that point and the best value of each objective "
            f"({box:.4g} in the objectives' own units).")
    return _Section("Hypervolume history", note, fig)


def _teacher_accuracy(points: Sequence[_Point], objs: Sequence[Objective]) -> float | None:
    """The dense teacher's plain accuracy on the validation split, where the study stored it."""
    if not objs or objs[0].measure != "accuracy":
        return None
    for p in points:
        scores = p.report.splits.get("validation")
        forgetting = (scores.forgetting if scores is not None else None) or {}
        overall = forgetting.get("disparate_impact", {}).get("class", {}).get("overall", {})
        value = overall.get("dense_accuracy")
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _teacher_note(teacher_accuracy: float | None, stored: bool = False) -> str:
    if stored:
        return "Red star: the dense teacher every trial compresses, at its validation values (a reference)."
    if teacher_accuracy is None:
        return ("The study does not store the dense teacher's objective values, so no teacher reference is "
                "drawn.")
    return (f"The dense teacher's accuracy on the validation split, {teacher_accuracy:.4f} (stored in every trial's "
            "disparate-impact report), is the dashed line. Its size and bias are not stored in the study, so it "
            "is not drawn as a point.")


def per_group_rates(fairness: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per group: accuracy, TPR and FPR (the positive class's in a binary task, else the mean over classes)."""
    out: dict[str, dict[str, float | None]] = {}
    per_class = fairness.get("class_group_rates") or {}
    for group, rates in (fairness.get("group_rates") or {}).items():
        row: dict[str, float | None] = {"accuracy": rates.get("accuracy")}
        for rate in ("tpr", "fpr"):
            if rate in rates:
                row[rate] = rates[rate]
            else:
                found = [c[group][rate] for c in per_class.values() if c.get(group, {}).get(rate) is not None]
                row[rate] = float(np.mean(found)) if found else None
        out[group] = row
    return out


def _group_bars(study: optuna.Study) -> _Section:
    title = "Per-group accuracy, TPR and FPR of the front's trials"
    rows = [(t, (trial_report(t).splits.get("validation") or None)) for t in front_trials(study)[:MAX_BAR_TRIALS]]
    rates = {t.number: per_group_rates(s.fairness) for t, s in rows if s is not None and s.fairness}
    if not rates:
        return _Section(title, "No per-group rates were stored: the data has no group column (or no trial "
                               "measured one).")
    groups = sorted({g for r in rates.values() for g in r})
    labels = [f"trial {n}" for n in rates]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("accuracy", "TPR", "FPR"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for gi, group in enumerate(groups):
        for row, rate in enumerate(("accuracy", "tpr", "fpr"), start=1):
            fig.add_trace(go.Bar(x=labels, y=[r.get(group, {}).get(rate) for r in rates.values()], name=group,
                                 legendgroup=group, showlegend=row == 1, marker_color=palette[gi % len(palette)]),
                          row=row, col=1)
    fig.update_layout(barmode="group", template="plotly_white", height=720, title=title)
    fig.update_yaxes(range=[0, 1])
    shown = f"the first {MAX_BAR_TRIALS} of " if len(front_trials(study)) > MAX_BAR_TRIALS else ""
    note = (f"Validation split, {shown}the front's trials (best accuracy first). In a task with more than two "
            "classes, TPR and FPR are each group's mean over the classes it has examples of (one-vs-rest).")
    return _Section(title, note, fig)


def _families(points: Sequence[_Point]) -> list[str]:
    """The compression families some trial used, in the order the study stores them."""
    seen: dict[str, None] = {}
    for p in points:
        seen.update({name: None for name, config in p.report.compression.items() if config is not None})
    return list(seen)


def _colour_param(points: Sequence[_Point], family: str) -> str | None:
    """The family's first searched numeric parameter, which colours its points."""
    names = sorted({n for p in points for n, v in p.trial.params.items()
                    if n.startswith(f"{family}.") and isinstance(v, (int, float)) and not isinstance(v, bool)})
    return names[0] if names else None


def _family_section(points: Sequence[_Point], objs: Sequence[Objective]) -> _Section:
    title = "Bias against size, per compression family"
    families = _families(points)
    size = next((i for i, o in enumerate(objs) if o.kind == "size"), None)
    bias = [i for i, o in enumerate(objs) if o.kind == "bias"]
    if not families or size is None or not bias:
        return _Section(title, "The trials record no compression family (or the study has no size and bias "
                               "objectives).")
    colour = {f: _colour_param(points, f) for f in families}
    fig = make_subplots(rows=len(bias), cols=len(families), shared_yaxes=True,
                        subplot_titles=[f"{f}" + (f" (colour: {colour[f]})" if colour[f] else "")
                                        for _ in bias for f in families])
    for row, b in enumerate(bias, start=1):
        for col, family in enumerate(families, start=1):
            used = [p for p in points if p.report.compression.get(family) is not None]
            marker: dict[str, Any] = {"size": 8, "colorscale": "Viridis", "line": {"width": 1, "color": "white"}}
            param = colour[family]
            if param is not None:
                marker["color"] = [p.trial.params.get(param, math.nan) for p in used]
            fig.add_trace(go.Scatter(x=[p.trial.values[size] for p in used], y=[p.trial.values[b] for p in used],
                                     mode="markers", marker=marker, name=family, showlegend=False,
                                     text=[p.hover for p in used], hovertemplate="%{text}<extra></extra>"),
                          row=row, col=col)
            fig.update_xaxes(title_text=objs[size].name, row=row, col=col)
        fig.update_yaxes(title_text=objs[b].name, row=row, col=1)
    fig.update_layout(template="plotly_white", height=380 * len(bias), title=title)
    note = ("Every COMPLETE trial that used the family, coloured by the family's first searched numeric parameter "
            "(darker is lower). A trial that combined several families appears in each of their panels.")
    return _Section(title, note, fig)


def _confirmed_trace(numbers: Sequence[int], stats: Sequence[dict[str, Any]], kind: str, first: bool) -> go.Scatter:
    """The confirmed test means, with the Student-t 95% interval across each trial's seeds as error bars."""
    means = [s.get("mean") for s in stats]
    plus = [s["ci_high"] - m if m is not None and s.get("ci_high") is not None else 0.0 for s, m in zip(stats, means)]
    minus = [m - s["ci_low"] if m is not None and s.get("ci_low") is not None else 0.0 for s, m in zip(stats, means)]
    hover = [f"trial {n}: test mean {format_value(kind, m)} over {s.get('n', 0)} seed(s)"
             + (f", 95% CI [{format_value(kind, s['ci_low'])}, {format_value(kind, s['ci_high'])}]"
                if s.get("ci_low") is not None and s.get("ci_high") is not None else "")
             if m is not None else f"trial {n}: not confirmed" for n, s, m in zip(numbers, stats, means)]
    return go.Scatter(x=[str(n) for n in numbers], y=means, mode="markers", name="confirmed: test mean, 95% CI",
                      legendgroup="confirmed", showlegend=first, marker={"color": "#d62728", "size": 9},
                      error_y={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
                      text=hover, hovertemplate="%{text}<extra></extra>")


def _confirmed_section(study: optuna.Study, objs: Sequence[Objective]) -> list[_Section]:
    """``fairfront confirm``'s results next to the search's values; nothing where no trial was confirmed."""
    records = confirmed(study)
    if not records:
        return []
    title = "Confirmed on fresh seeds"
    numbers = sorted(records)
    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    fig = make_subplots(rows=len(objs), cols=1, subplot_titles=[_axis_title(o) for o in objs],
                        vertical_spacing=0.3 / max(1, len(objs)))
    for row, (index, o) in enumerate(enumerate(objs), start=1):
        search = [trials[n].values[index] if n in trials else None for n in numbers]
        fig.add_trace(go.Scatter(x=[str(n) for n in numbers], y=search, mode="markers", name="search (validation)",
                                 legendgroup="search", showlegend=row == 1,
                                 marker={"color": FRONT_COLOR, "size": 9, "symbol": "diamond"}), row=row, col=1)
        fig.add_trace(_confirmed_trace(numbers, [records[n].get(o.name) or {} for n in numbers], o.kind, row == 1),
                      row=row, col=1)
        fig.update_xaxes(type="category", title_text="trial", row=row, col=1)
        fig.update_yaxes(title_text=o.name, row=row, col=1)
    fig.update_layout(template="plotly_white", height=300 * len(objs) + 100, title=title)
    note = ("Each confirmed trial's value in the search (validation split, the search's seed) next to the mean of its "
            "runs on fresh seeds, scored on the test split (fairfront confirm). The bars are a Student-t 95% "
            "confidence interval across the seeds of that one trial (none with a single seed): they show how much "
            "the trial varies with its seed, not whether one trial differs from another.")
    return [_Section(title, note, fig)]


def _status_lines(study: optuna.Study) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL, TrialState.PRUNED)
    lines = [", ".join(f"{counts.get(s.name, 0)} {s.name}" for s in states)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        last = failed[-1]
        lines.append(f"{len(failed)} trial(s) failed; the last, trial {last.number}: "
                     f"{stored_record(last).get(REASON_ATTR, 'no reason recorded')}")
    return lines


def _interval_note(points: Sequence[_Point]) -> str:
    for p in points:
        scores = p.report.splits.get("validation")
        fairness = (scores.fairness if scores is not None else None) or {}
        if fairness.get("ci"):
            return (f"Bars: {fairness.get('confidence', 0.95):.0%} bootstrap intervals of the group bias measures "
                    f"({fairness.get('n_resamples')} resamples, validation split).")
    return "No bootstrap intervals were stored (bootstrap_resamples = 0, or bias measures without one)."


def _sections(study: optuna.Study, objs: Sequence[Objective], points: Sequence[_Point]) -> list[_Section]:
    teacher = _teacher_accuracy(points, objs)
    reference = _teacher_values(study, objs)
    sections = []
    for x, y in _projections(objs):
        note = "Grey: dominated trials. " + _interval_note(points)
        sections.append(_Section(f"{objs[y].name} against {objs[x].name}", note,
                                 _projection(points, objs, x, y, teacher, reference)))
    if sections:
        sections[0].note += " " + _teacher_note(teacher, stored=reference is not None)
    sections += _front_3d(points, objs, reference)
    if len(objs) > 1:  # Optuna's hypervolume is for multi-objective studies (every fairfront study is one)
        sections.append(_hypervolume(study, points, objs))
    sections.append(_group_bars(study))
    sections.append(_family_section(points, objs))
    sections += _confirmed_section(study, objs)
    sections += [_Section(title, note, figure) for title, note, figure in explain_figures(study)]
    table = front_frame(study).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.6g}", border=0)
    sections.append(_Section("The front", "Objective values on the validation split, the test split's values, "
                             "the bias measures' bootstrap intervals, and the parameters "
                             "(as fairfront front --format csv writes them).", html=table))
    return sections


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}p.note{color:#555}p.message{background:#fff3cd;padding:.8em;border-radius:4px}
table{border-collapse:collapse;font-size:12px;display:block;overflow-x:auto}
td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"""


def _page(title: str, header: list[str], messages: list[str], sections: Sequence[_Section]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in header]
    parts += [f"<p class='message'>{html.escape(m)}</p>" for m in messages]
    plotly_js_included = False
    for number, section in enumerate(sections):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
        if section.figure is not None:
            parts.append(section.figure.to_html(full_html=False, include_plotlyjs=not plotly_js_included,
                                                div_id=f"figure-{number}", config={"responsive": True}))
            plotly_js_included = True
        parts.append(section.html)
    parts.append("</body></html>")
    return "\n".join(parts)


def render(study: optuna.Study, *, storage: str = "") -> str:
    """The study's report as one HTML page (plotly.js embedded); a study without COMPLETE trials gets a message."""
    objs = objectives(study)
    points = _points(study, objs)
    directions = ", ".join(f"{o.name} ({o.measure or 'value'}, {'max' if o.maximize else 'min'}imised)" for o in objs)
    header = [*_status_lines(study), f"objectives: {directions}"] + ([f"storage: {storage}"] if storage else [])
    messages: list[str] = []
    if not points:
        messages.append("No COMPLETE trial yet: there is no front to plot. Run or resume the study, then make the "
                        "report again.")
        return _page(f"fairfront study {study.study_name}", header, messages, [])
    if len(points) == 1:
        messages.append("Only one COMPLETE trial: the front is that one trial, and the hypervolume history one point.")
    return _page(f"fairfront study {study.study_name}", header, messages, _sections(study, objs, points))


def write_report(study: optuna.Study, out: Path, *, storage: str = "") -> Path:
    """Write :func:`render`'s page to ``out`` (its folder created) through a temporary file, so a reader
    never sees half a report."""
    text = render(study, storage=storage)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    return out
