"""The fast estimate of what ablation measures: ``|d gap / d gate|`` of every head and feed-forward block.

Ablating every component costs one prediction pass per component; a first-order estimate costs one
backward pass over a few batches. The gap differentiated is the soft equal-opportunity gap that
fairness-aware structured pruning protects (:func:`~fairfront.spaces.fair_compression.equal_opportunity_gap`),
through the same per-head and per-neuron gates (:func:`fairfront.spaces.structured.gate_gradient_scores`).
A head's estimate is its gate's summed ``|gradient|``; a feed-forward block's is the sum over its
neurons' gates (an upper bound on the block gate's own gradient, which is the signed sum).
:func:`rank_agreement` says how far the estimate can stand in for ablation: the Spearman
correlation, over components, between the estimate and the ablation's ``|delta|`` of the gap.

Example:
    >>> estimate = gap_gradients(model, split, pad_id=0)  # doctest: +SKIP
    >>> estimate["layer 0 head 1"]  # doctest: +SKIP
    0.0123
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from fairfront.objectives.analysis.components import components
from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.training.loop import iterate_batches, make_batch
from fairfront.spaces.fair_compression import equal_opportunity_gap
from fairfront.spaces.structured import gate_gradient_scores

__all__ = ["gap_gradients", "rank_agreement"]


def gap_gradients(model: nn.Module, split: EncodedSplit, *, pad_id: int, batch_size: int = 64,
                  max_batches: int | None = None, device: torch.device | None = None) -> dict[str, float]:
    """``|d gap / d gate|`` per component name, summed over the split's batches (all of them by default)."""
    device = device or next(model.parameters()).device
    model.to(device)
    indices = list(iterate_batches(split, batch_size, rng=None))[:max_batches]
    batches = [make_batch(split, index, pad_id=pad_id, device=device) for index in indices]
    heads, ffns = gate_gradient_scores(model, batches, objective=equal_opportunity_gap)
    out = {}
    for comp in components(model):
        score = heads[comp.layer][comp.head] if comp.head is not None else ffns[comp.layer].sum()
        out[comp.name] = float(score)
    return out


def rank_agreement(estimate: dict[str, float], ablation: dict[str, Any], *, kind: str | None = None) -> dict[str, Any]:
    """Spearman's rho (and its p-value) between the estimate and the ablation's ``|delta|`` of its focus measure.

    ``kind`` (``"head"`` or ``"ffn"``) keeps one kind of component; None compares all of them.
    """
    focus = ablation["focus"]
    rows = [r for r in ablation["components"] if kind is None or r["kind"] == kind]
    x = np.array([estimate[r["component"]] for r in rows], dtype=float)
    y = np.array([abs(r["measures"][focus]["delta"] or 0.0) for r in rows], dtype=float)
    if len(rows) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": len(rows), "spearman": None, "p_value": None,
                "note": "undefined: fewer than 3 components, or one side is constant"}
    result = stats.spearmanr(x, y)
    return {"n": len(rows), "spearman": float(result.statistic), "p_value": float(result.pvalue)}
