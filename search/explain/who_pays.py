"""Which classes and groups pay: each level's change against the dense teacher, as the model shrinks.

Hooker et al. (2019, "What do compressed deep neural networks forget?") plot who loses as sparsity
grows. Every trial already stores what that needs (validation split): each class's recall and each
group's accuracy, the compressed model's and the dense teacher's (its disparate-impact report), and
each group's TPR (its fairness report). The teacher's group TPRs come from the study attribute
``fairfront.teacher`` (a trial report's attributes) where present, else from the teacher's logits in
the prepared cache. The change is compressed minus teacher, in points of the rate; per compression
family (every trial that used it) the mean change of the smallest third of trials by size is set
beside the largest third's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from fairfront.objectives.measures.report import SplitScores, TrialReport
from fairfront.search.attrs import TEACHER_ATTR
from fairfront.search.front_data import Objective, trial_report
from fairfront.search.report_html import per_group_rates

__all__ = ["TEACHER_ATTR", "who_pays", "teacher_group_rates_from_attr"]



def teacher_group_rates_from_attr(attr: Any) -> dict[str, dict[str, float | None]] | None:
    """The teacher's per-group rates from a ``fairfront.teacher`` attribute (a trial report's attributes)."""
    if not isinstance(attr, dict):
        return None
    try:
        scores = TrialReport.from_attrs(attr).splits.get("validation")
    except (TypeError, ValueError):
        return None
    return per_group_rates(scores.fairness) if scores is not None and scores.fairness else None


def _levels(forgetting: dict[str, Any], by: str) -> dict[str, float | None]:
    levels = ((forgetting.get("disparate_impact") or {}).get(by) or {}).get("levels") or {}
    return {name: _diff(row.get("compressed_accuracy"), row.get("dense_accuracy")) for name, row in levels.items()}


def _diff(after: Any, before: Any) -> float | None:
    return float(after) - float(before) if isinstance(after, (int, float)) and isinstance(before, (int, float)) \
        else None


def _row(trial: FrozenTrial, size: int, teacher: dict[str, dict[str, float | None]] | None) -> dict[str, Any] | None:
    report = trial_report(trial)
    scores: SplitScores | None = report.splits.get("validation")
    if scores is None or not scores.forgetting:
        return None
    rates = per_group_rates(scores.fairness) if scores.fairness else {}
    tpr = {g: _diff(r.get("tpr"), (teacher or {}).get(g, {}).get("tpr")) for g, r in rates.items()} if teacher else {}
    return {"trial": trial.number, "size": float(trial.values[size]),
            "families": [f for f, c in report.compression.items() if c is not None],
            "class": _levels(scores.forgetting, "class"), "group": _levels(scores.forgetting, "group"),
            "group_tpr": tpr}


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per family and kind of level: mean change among the smallest and the largest third of trials by size."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for family in sorted({f for r in rows for f in r["families"]}):
        used = sorted((r for r in rows if family in r["families"]), key=lambda r: r["size"])
        third = max(1, len(used) // 3)
        small, large = used[:third], used[-third:]
        out[family] = {}
        for kind in ("class", "group", "group_tpr"):
            levels = sorted({name for r in used for name in r[kind]})
            out[family][kind] = {name: {"smallest": _mean(small, kind, name), "largest": _mean(large, kind, name),
                                        "n": len(used)} for name in levels}
    return out


def _mean(rows: list[dict[str, Any]], kind: str, name: str) -> float | None:
    values = [r[kind][name] for r in rows if r[kind].get(name) is not None]
    return float(np.mean(values)) if values else None


def who_pays(trials: list[FrozenTrial], objs: list[Objective], teacher_attr: Any,
             teacher_from_cache: Callable[[], dict[str, dict[str, float | None]] | None]) -> dict[str, Any]:
    """``{"size_objective", "teacher_tpr_source", "trials": [...], "families": {...}}``."""
    size = next(i for i, o in enumerate(objs) if o.kind == "size")
    teacher = teacher_group_rates_from_attr(teacher_attr)
    source = TEACHER_ATTR if teacher is not None else None
    if teacher is None and any(trial_report(t).splits.get("validation") for t in trials):
        teacher = teacher_from_cache()
        source = "prepared cache" if teacher is not None else None
    rows = [r for r in (_row(t, size, teacher) for t in trials) if r is not None]
    return {"size_objective": objs[size].name, "teacher_tpr_source": source, "trials": rows,
            "families": _summary(rows)}
