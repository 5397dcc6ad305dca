"""How a bias objective moves with its strongest parameters: binned means over the COMPLETE trials.

For each bias objective, its most important numeric parameter is cut into (up to) four quantile
bins and the objective's mean and standard deviation are given per bin, separately for each value
of its most important categorical parameter where it has one (the gap against sparsity per pruning
schedule, say). Marginal means over the trials the sampler chose, not a causal effect: a sampler
that favoured high sparsity with one schedule makes the bins unequal, which the counts show.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from fairfront.search.front_data import Objective

__all__ = ["partial_dependence", "N_BINS"]

N_BINS = 4


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strongest(importance: dict[str, float], trials: list[FrozenTrial], numeric: bool) -> str | None:
    for param in sorted(importance, key=lambda p: -importance[p]):
        values = [t.params[param] for t in trials if param in t.params]
        if values and all(_numeric(v) for v in values) == numeric and len(set(values)) > 1:
            return param
    return None


def _bins(values: np.ndarray) -> np.ndarray:
    edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)))
    return edges if len(edges) > 1 else np.array([values.min(), values.max()])


def _rows(trials: list[FrozenTrial], index: int, param: str, edges: np.ndarray, by: str | None) -> list[dict]:
    rows = []
    levels = sorted({str(t.params.get(by)) for t in trials}) if by else [None]
    for level in levels:
        chosen = [t for t in trials if param in t.params and (by is None or str(t.params.get(by)) == level)]
        x = np.array([float(t.params[param]) for t in chosen])
        y = np.array([float(t.values[index]) for t in chosen])
        where = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            member = where == b
            if member.any():
                rows.append({"by": level, "low": float(edges[b]), "high": float(edges[b + 1]), "n": int(member.sum()),
                             "mean": float(y[member].mean()), "sd": float(y[member].std(ddof=1)) if member.sum() > 1
                             else None})
    return rows


def partial_dependence(trials: list[FrozenTrial], objs: list[Objective],
                       importances: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per bias objective: ``{objective, param, by, rows}`` with one row per (level of ``by``, bin of ``param``)."""
    out = []
    for index, objective in enumerate(objs):
        if objective.kind != "bias":
            continue
        importance = importances.get(objective.name, {})
        param = _strongest(importance, trials, numeric=True)
        if param is None:
            continue
        by = _strongest(importance, trials, numeric=False)
        edges = _bins(np.array([float(t.params[param]) for t in trials if param in t.params]))
        out.append({"objective": objective.name, "param": param, "by": by,
                    "rows": _rows(trials, index, param, edges, by)})
    return out
