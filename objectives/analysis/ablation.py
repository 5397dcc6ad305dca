"""Which heads and feed-forward blocks a model's group gap depends on: ablate each, measure the change.

Every attention head and every layer's feed-forward block is switched off in turn
(:mod:`~fairfront.objectives.analysis.components`), the validation split is predicted again, and the
change in accuracy and in every group measure is scored against the unablated model on the same
examples and the same resamples (:class:`~fairfront.objectives.analysis.paired.PairedBootstrap`).
Components are ranked by the absolute change of the measure of interest (the study's first bias
objective); p-values are Benjamini-Hochberg-adjusted across components, per measure.

Example:
    >>> result = ablate_components(model, split, pad_id=0, focus="tpr_gap")  # doctest: +SKIP
    >>> result["ranking"][0]["component"]  # doctest: +SKIP
    'layer 1 head 0'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from fairfront.objectives.analysis.components import ablated_predictions, component_sets
from fairfront.objectives.analysis.paired import PairedBootstrap
from fairfront.objectives.data.task import EncodedSplit

__all__ = ["ablate_components"]


def ablate_components(model: nn.Module, split: EncodedSplit, *, pad_id: int, focus: str, n_resamples: int = 200,
                      seed: int = 0, batch_size: int = 64, device: torch.device | None = None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Ablate every component of ``model`` on ``split``; one progress line per component set.

    Returns:
        ``{"focus", "n", "n_resamples", "base": {measure: value}, "components": [...], "ranking": [...]}``:
        per component its ``component`` name, ``kind``, ``layer``, ``head`` and per measure
        ``{base, value, delta, ci, p_value, p_adjusted}``; ``ranking`` lists the components by
        ``|delta|`` of ``focus``, largest first.
    """
    n_classes = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0) or None
    base_pred = ablated_predictions(model, split, [], pad_id=pad_id, batch_size=batch_size, device=device)[0]
    paired = PairedBootstrap(split.labels, split.groups, base_pred, n_resamples=n_resamples, seed=seed,
                             n_classes=n_classes)
    if focus not in paired.base:
        raise ValueError(f"{focus!r} is not a group measure of these examples (measured: {', '.join(paired.base)})")
    records: list[dict[str, Any]] = []
    for label, comps in component_sets(model):
        started = time.perf_counter()
        preds = ablated_predictions(model, split, comps, pad_id=pad_id, batch_size=batch_size, device=device)
        for comp, pred in zip(comps, preds):
            records.append({"component": comp.name, "kind": comp.kind, "layer": comp.layer, "head": comp.head,
                            "measures": paired.effect(pred)})
        log(f"ablated {label} ({len(comps)} components) in {time.perf_counter() - started:.1f}s")
    _adjust(records)
    ranking = sorted(records, key=lambda r: -abs(r["measures"][focus]["delta"] or 0.0))
    return {"focus": focus, "n": int(len(split)), "n_resamples": n_resamples,
            "base": {name: value for name, (value, _) in paired.base.items()}, "components": records,
            "ranking": [{"component": r["component"], **r["measures"][focus]} for r in ranking]}


def _adjust(records: list[dict[str, Any]]) -> None:
    """Benjamini-Hochberg across components, measure by measure."""
    if not records:
        return
    for name in records[0]["measures"]:
        cells = [r["measures"][name] for r in records]
        usable = [c for c in cells if c["p_value"] is not None]
        adjusted = stats.false_discovery_control(np.array([c["p_value"] for c in usable]), method="bh") \
            if usable else []
        for cell, p in zip(usable, adjusted):
            cell["p_adjusted"] = float(p)
        for cell in cells:
            cell.setdefault("p_adjusted", None)
