"""One trial: compress a copy of the teacher as sampled, train it for real, and score it.

This runs inside a Ray task (or in-process in tests). It never touches the study storage: it
returns a :class:`TrialOutcome` (objective values plus every other measure) that the driver
writes.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fairfront.objectives import group_fairness
from fairfront.objectives.measures import ObjectiveSpec, accuracy_scores, bias_score, size_scores
from fairfront.objectives.prepare import Prepared
from fairfront.objectives.training import TrainSettings, predict_logits, train
from fairfront.spaces.distillation import distillation_loss
from fairfront.spaces.fairness import penalty_function
from fairfront.spaces.pruning import MagnitudePruner, prunable_weights
from fairfront.spaces.space import CompressionConfig

__all__ = ["TrialSpec", "TrialOutcome", "run_trial"]


@dataclass(frozen=True)
class TrialSpec:
    compression: CompressionConfig
    student: TrainSettings
    objectives: ObjectiveSpec
    seed: int = 0
    bootstrap_resamples: int = 200


@dataclass
class TrialOutcome:
    values: list[float]
    attrs: dict = field(default_factory=dict)


class _PruningHook:
    """Follows the sparsity schedule before each step and keeps pruned weights at zero after it."""

    def __init__(self, pruner: MagnitudePruner, schedule):
        self.pruner, self.schedule = pruner, schedule

    def before_step(self, step: int, total: int) -> None:
        target = self.schedule.at(step, total)
        if target != self.pruner.target:
            self.pruner.prune_to(target)

    def after_step(self, step: int, total: int) -> None:
        self.pruner.apply()


def run_trial(prepared: Prepared, spec: TrialSpec, *, device: torch.device | None = None,
              threads: int | None = None) -> TrialOutcome:
    """Compress, train and measure; raises on failure (the driver records the reason)."""
    started = time.perf_counter()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    c = spec.compression
    model = prepared.teacher().to(device)
    train_split = prepared.splits["train"]
    teacher_train = torch.tensor(prepared.teacher_logits["train"], device=device)

    hooks, pruner = [], None
    if c.pruning is not None:
        pruner = MagnitudePruner(prunable_weights(model, include_embeddings=c.pruning.include_embeddings,
                                                  include_classifier=c.pruning.include_classifier),
                                 scope=c.pruning.scope)
        hooks.append(_PruningHook(pruner, c.pruning.schedule))
    penalty = penalty_function(c.fairness.loss) if c.fairness and c.fairness.weight > 0 else None

    def loss_fn(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if c.distillation is not None:
            per_example = distillation_loss(logits, teacher_train[batch["index"]], batch["labels"],
                                            temperature=c.distillation.temperature, alpha=c.distillation.alpha)
        else:
            per_example = F.cross_entropy(logits, batch["labels"], reduction="none")
        loss = per_example.mean()
        if penalty is not None:
            loss = loss + c.fairness.weight * penalty(logits, batch["labels"], batch["groups"])
        return loss

    stats = train(model, train_split, spec.student, loss_fn=loss_fn, seed=spec.seed, pad_id=prepared.pad_id,
                  hooks=hooks, device=device)
    train_seconds = time.perf_counter() - started
    if pruner is not None:
        pruner.prune_to(c.pruning.sparsity)  # the schedule has reached it; make it exact for scoring

    attrs: dict = {"compression": _plain(asdict(c)), "train": {"steps": stats.steps, "final_loss": stats.final_loss,
                                                               "examples_per_second": stats.examples_per_second}}
    if pruner is not None:
        attrs["achieved_sparsity"] = pruner.sparsity()
    attrs["size"] = size_scores(model)
    eval_started = time.perf_counter()
    for split in ("validation", "test"):
        data = prepared.splits[split]
        logits = predict_logits(model, data, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                device=device)
        pred = logits.argmax(axis=1)
        attrs[split] = _scores(prepared, spec, data.labels, pred, data.groups, split)
    timings = {"train_s": train_seconds, "eval_s": time.perf_counter() - eval_started,
               "total_s": time.perf_counter() - started, "device": device.type,
               "torch_threads": torch.get_num_threads(), "pid": os.getpid()}
    attrs["timings"] = timings
    v = attrs["validation"]
    values = [v["accuracy"][spec.objectives.accuracy], attrs["size"][spec.objectives.size]]
    values += [v["bias"][b] for b in spec.objectives.bias]
    if any(x is None or not math.isfinite(x) for x in values):
        raise ValueError(f"a measure is undefined on the validation split: {dict(zip(spec.objectives.names, values))}"
                         " (is every group present with positive examples?)")
    return TrialOutcome(values=[float(x) for x in values], attrs=attrs)


def _scores(prepared: Prepared, spec: TrialSpec, y: np.ndarray, pred: np.ndarray, groups: np.ndarray,
            split: str) -> dict:
    has_group = groups >= 0
    out: dict = {"accuracy": accuracy_scores(y, pred), "n": int(len(y))}
    dense = prepared.dense_predictions(split)
    out["agreement_with_dense"] = float((dense == pred).mean())
    if has_group.any():
        g = np.asarray(prepared.group_names, dtype=object)[groups[has_group]]
        out["bias"] = {name: bias_score(name, y[has_group], pred[has_group], g) for name in group_fairness.BIAS_MEASURES}
        out["fairness"] = group_fairness.fairness_report(
            y[has_group], pred[has_group], sensitive_features=g, class_names=list(prepared.label_names),
            n_resamples=spec.bootstrap_resamples, seed=spec.seed)
    else:
        out["bias"] = {name: float("nan") for name in group_fairness.BIAS_MEASURES}
    return _plain(out)


def _plain(obj):
    """JSON-safe copy (Optuna user attributes are stored as JSON): nan/inf become None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
