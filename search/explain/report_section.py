"""The study report's "Origins of bias" plots, drawn from what ``fairfront explain`` stored with the study.

Nothing is computed here: a study that was never explained gets no such section.
"""

from __future__ import annotations

from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fairfront.search.explain.store import EXPLAIN_ATTR

__all__ = ["explain_figures"]


def _importance_figure(stored: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    params = sorted({p for table in stored["importance"].values() for p in table})
    for objective, table in stored["importance"].items():
        fig.add_trace(go.Bar(x=params, y=[table.get(p) for p in params], name=objective))
    fig.update_layout(barmode="group", template="plotly_white", height=420, yaxis_title="importance",
                      title=f"Parameter importance per objective ({stored.get('evaluator')})")
    return fig


def _who_pays_figure(pays: dict[str, Any]) -> go.Figure:
    families = list(pays["families"])
    fig = make_subplots(rows=1, cols=len(families), shared_yaxes=True, subplot_titles=families)
    for col, family in enumerate(families, start=1):
        rows = sorted((r for r in pays["trials"] if family in r["families"]), key=lambda r: r["size"])
        for kind, label in (("class", "recall"), ("group", "accuracy"), ("group_tpr", "TPR")):
            for level in sorted({name for r in rows for name in r[kind]}):
                fig.add_trace(go.Scatter(x=[r["size"] for r in rows], y=[r[kind].get(level) for r in rows],
                                         mode="lines+markers", name=f"{label} {level}", legendgroup=f"{kind}{level}",
                                         showlegend=col == 1, text=[f"trial {r['trial']}" for r in rows]),
                              row=1, col=col)
        fig.update_xaxes(title_text=pays["size_objective"], row=1, col=col)
    fig.update_yaxes(title_text="change against the teacher", row=1, col=1)
    fig.update_layout(template="plotly_white", height=460, title="Who pays as the model shrinks")
    return fig


def _ablation_figure(key: str, model: dict[str, Any]) -> go.Figure:
    top = model["top"]
    low = [r["delta"] - r["ci"][0] if r["ci"][0] is not None else None for r in top]
    high = [r["ci"][1] - r["delta"] if r["ci"][1] is not None else None for r in top]
    fig = go.Figure(go.Bar(x=[r["component"] for r in top], y=[r["delta"] for r in top],
                           error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low}))
    fig.update_layout(template="plotly_white", height=380, yaxis_title=f"change of {model['focus']}",
                      title=f"{key}: components ranked by the change of {model['focus']} when switched off")
    return fig


def explain_figures(study: optuna.Study) -> list[tuple[str, str, go.Figure]]:
    """``(title, note, figure)`` for each stored analysis; empty where ``explain`` never ran."""
    stored = study.user_attrs.get(EXPLAIN_ATTR)
    if not isinstance(stored, dict) or "importance" not in stored:
        return []
    out = [("Origins of bias: which knob", "Importance of each parameter for each objective, from fairfront explain "
            "(COMPLETE trials; each objective's bars sum to 1).", _importance_figure(stored))]
    pays = stored.get("who_pays") or {}
    if pays.get("trials") and pays.get("families"):
        out.append(("Origins of bias: who pays", "Each class's recall, group's accuracy and group's TPR minus the "
                    "dense teacher's (validation split), against size, per compression family.",
                    _who_pays_figure(pays)))
    for key, model in (stored.get("models") or {}).items():
        out.append((f"Origins of bias: which heads and layers ({key})", "The largest changes when one component "
                    "is switched off, with paired bootstrap 95% intervals.", _ablation_figure(key, model)))
    return out
