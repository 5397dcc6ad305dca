"""One trial: compress a copy of the teacher as sampled, train it for real, and score it.

The families a trial sampled act through their hooks (:class:`~fairfront.spaces.family.FamilyTrial`),
each hook run for every family in the registry's order (:mod:`fairfront.spaces.registry`): model
surgery (a student cut from the teacher, heads and neurons removed), then training with the
training-loop hooks they give (pruning schedules, movement scores) and the objective they compose
(task loss, distillation, example weights, group DRO, penalties), then what they finish after
training (pruning made exact) and what they convert the model to (int8).

A ``masked_lm`` study (:attr:`Prepared.task`) goes through the same loop: nothing is trained, so
each family applies what it does without training (pruning is one-shot) to the pretrained masked
LM, and the objective values are the intrinsic benchmarks' validation-half numbers. With
``[bias] intrinsic`` a classification trial also scores the compressed model on the benchmarks,
with the checkpoint's masked-LM head on its encoder (:mod:`fairfront.objectives.training.masked_lm`).

This runs inside a Ray task (or in-process in tests). It never touches the study storage: it
returns a :class:`TrialOutcome` (objective values plus every other measure) that the driver writes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from fairfront.objectives.measures import group_fairness
from fairfront.objectives.measures.bias_settings import COUNTERFACTUAL_MEASURES
from fairfront.objectives.measures.counterfactual_sets import counterfactual_measures
from fairfront.objectives.measures.objectives import ObjectiveSpec, accuracy_scores, bias_score, latency_scores, size_scores
from fairfront.objectives.training.population import forgetting_measures
from fairfront.objectives.training.prepare import Prepared
from fairfront.objectives.training.loop import TrainSettings, iterate_batches, make_batch, predict_logits, train
from fairfront.spaces.family import FamilyTrial, TrialContext
from fairfront.spaces.imbalance import cross_entropy
from fairfront.spaces.space import CompressionConfig

__all__ = ["TrialSpec", "TrialOutcome", "run_trial"]


@dataclass(frozen=True)
class TrialSpec:
    compression: CompressionConfig
    student: TrainSettings
    objectives: ObjectiveSpec
    seed: int = 0
    bootstrap_resamples: int = 200
    latency: bool = True


@dataclass
class TrialOutcome:
    values: list[float]
    attrs: dict = field(default_factory=dict)


def run_trial(prepared: Prepared, spec: TrialSpec, *, device: torch.device | None = None,
              threads: int | None = None) -> TrialOutcome:
    """Compress, train and measure; raises on failure (the driver records the reason)."""
    started = time.perf_counter()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    masked = prepared.task == "masked_lm"
    attrs: dict = {"compression": _plain(spec.compression.as_dict())}
    if masked:
        attrs["task"] = "masked_lm"
    ctx = _context(prepared, spec, attrs, device)
    runs = _start(spec.compression, ctx)
    for run in runs:
        run.prepare(ctx)
    if masked:
        for run in runs:
            run.without_training(ctx)
    else:
        _train(prepared, spec, ctx, runs)
    compress_seconds = time.perf_counter() - started
    for run in runs:
        run.convert(ctx)
    model, eval_device = ctx.model, ctx.eval_device
    if masked:
        return _measure_masked_lm(prepared, spec, model, attrs, device=device, eval_device=eval_device,
                                  threads=threads, started=started, compress_seconds=compress_seconds)

    _measure_size(attrs, model, prepared, spec, threads)
    eval_started = time.perf_counter()
    for split in ("validation", "test"):
        data = prepared.splits[split]
        logits = predict_logits(model, data, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                device=eval_device)
        swapped = [predict_logits(model, s.encoded, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                  device=eval_device) for s in prepared.counterfactuals.get(split, [])]
        attrs[split] = _scores(prepared, spec, data.labels, logits.argmax(axis=1), data.groups, split,
                               logits=logits, swapped_logits=swapped)
    if prepared.intrinsic:
        _add_intrinsic(attrs, prepared, model, device=eval_device)
    attrs["timings"] = {"train_s": compress_seconds, "eval_s": time.perf_counter() - eval_started,
                        "total_s": time.perf_counter() - started, "device": device.type,
                        "torch_threads": torch.get_num_threads(), "pid": os.getpid()}
    return _outcome(attrs, spec, hint=" (is every group present with positive examples?)")


def _context(prepared: Prepared, spec: TrialSpec, attrs: dict, device: torch.device) -> TrialContext:
    """What the families' hooks see: a fresh copy of the dense model on ``device`` and the training data."""
    model = prepared.teacher().to(device)
    common = {"model": model, "device": device, "task": prepared.task, "seed": spec.seed, "attrs": attrs,
              "families": spec.compression.names, "json_safe": _plain}
    if prepared.task == "masked_lm":
        return TrialContext(**common)
    train_split = prepared.splits["train"]
    return TrialContext(**common, labels=train_split.labels, groups=train_split.groups,
                        num_classes=len(prepared.label_names), num_groups=max(1, len(prepared.group_names)),
                        teacher_logits=torch.tensor(prepared.teacher_logits["train"], device=device),
                        teacher=prepared.teacher, make_calibration=partial(_calibration, prepared, spec, device))


def _calibration(prepared: Prepared, spec: TrialSpec, device: torch.device, n_batches: int = 8) -> list[dict]:
    """A few training batches, drawn with the trial's seed, for scores computed before training."""
    split = prepared.splits["train"]
    rng = np.random.default_rng(spec.seed)
    return [make_batch(split, idx, pad_id=prepared.pad_id, device=device)
            for _, idx in zip(range(n_batches), iterate_batches(split, spec.student.batch_size, rng=rng))]


def _start(compression: CompressionConfig, ctx: TrialContext) -> list[FamilyTrial]:
    """Each sampled family's hooks into this trial, in application order."""
    runs = []
    for family, config in compression.items():
        if ctx.task not in family.tasks:
            raise ValueError(f"[space.{family.name}] does not apply to a {ctx.task} study (it supports: "
                             f"{', '.join(family.tasks)})")
        runs.append(family.start(config, ctx))
    return runs


def _train(prepared: Prepared, spec: TrialSpec, ctx: TrialContext, runs: list[FamilyTrial]) -> None:
    """Fine-tune ``ctx.model`` with the families' objective and loop hooks, then let them finish."""
    hooks = [hook for run in runs for hook in run.step_hooks()]
    stats = train(ctx.model, prepared.splits["train"], spec.student, loss_fn=_objective(runs), seed=spec.seed,
                  pad_id=prepared.pad_id, hooks=hooks, device=ctx.device, forward_kwargs=ctx.forward_kwargs)
    ctx.attrs["train"] = {"steps": stats.steps, "final_loss": stats.final_loss,
                          "examples_per_second": stats.examples_per_second}
    for run in runs:
        run.after_training(ctx)


def _objective(runs: list[FamilyTrial]) -> Callable[[torch.Tensor, dict], torch.Tensor]:
    """The training loss the families compose, always in this order (floating point depends on it).

    The per-example task loss (cross-entropy unless a family gives another), each family's
    transform of it, times the product of the families' example weights, reduced by the first
    family that reduces (else the mean), plus the penalties on the predictions, then the penalties
    on internal states.
    """
    given = [loss for loss in (run.task_loss() for run in runs) if loss is not None]
    if len(given) > 1:
        raise ValueError(f"{len(given)} families give the task loss; at most one may")
    task_loss = given[0] if given else cross_entropy

    def loss_fn(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        per_example = task_loss(logits, batch["labels"])
        for run in runs:
            per_example = run.transform_loss(per_example, logits, batch)
        weights = None
        for run in runs:
            w = run.example_weights(logits, batch)
            if w is not None:
                weights = w if weights is None else weights * w
        if weights is not None:
            per_example = per_example * weights
        loss = None
        for run in runs:
            loss = run.reduce(per_example, batch["groups"])
            if loss is not None:
                break
        if loss is None:
            loss = per_example.mean()
        for run in runs:
            for term in run.penalties(logits, batch):
                loss = loss + term
        for run in runs:
            for term in run.representation_penalties(batch):
                loss = loss + term
        return loss

    return loss_fn


def _add_intrinsic(attrs: dict, prepared: Prepared, model: torch.nn.Module, *, device: torch.device) -> None:
    """Score ``model`` on both halves of every ``[bias] intrinsic`` benchmark.

    ``attrs["intrinsic"][name]`` holds ``{"validation", "test", "dense"}`` results;
    ``attrs[half]["bias"][name]`` the headline bias (what the objective reads from the validation half).
    """
    from fairfront.objectives.measures.intrinsic.halves import HALVES, headline_biases, score_halves

    started = time.perf_counter()
    cache: dict = {}

    def model_for(needs: str) -> torch.nn.Module:
        if needs != "masked_lm":
            return model
        if "mlm" not in cache:
            cache["mlm"] = prepared.masked_lm(model)
        return cache["mlm"]

    settings = prepared.intrinsic
    scores = score_halves(model_for, prepared.tokenizer, prepared.intrinsic_halves, limit=settings.get("limit"),
                          batch_size=settings.get("batch_size", 64), device=device)
    attrs["intrinsic"] = {name: _plain({**parts, "dense": prepared.intrinsic_dense.get(name)})
                          for name, parts in scores.items()}
    for half in HALVES:
        attrs.setdefault(half, {}).setdefault("bias", {}).update(
            {name: _nan_if_none(v) for name, v in headline_biases(scores, half).items()})
        if "stereoset" in scores:
            overall = scores["stereoset"][half]["overall"]
            attrs[half].setdefault("accuracy", {}).update(
                {"stereoset_lms": _nan_if_none(overall.get("lms")), "stereoset_icat": _nan_if_none(overall.get("icat"))})
    attrs["intrinsic_s"] = time.perf_counter() - started


def _measure_masked_lm(prepared: Prepared, spec: TrialSpec, model: torch.nn.Module, attrs: dict, *,
                       device: torch.device, eval_device: torch.device, threads: int | None, started: float,
                       compress_seconds: float) -> TrialOutcome:
    """A ``masked_lm`` trial's measures: size, and the benchmarks' scores of the compressed masked LM."""
    model.eval()
    _measure_size(attrs, model, prepared, spec, threads)
    eval_started = time.perf_counter()
    _add_intrinsic(attrs, prepared, model, device=eval_device)
    attrs["timings"] = {"compress_s": compress_seconds, "eval_s": time.perf_counter() - eval_started,
                        "total_s": time.perf_counter() - started, "device": device.type,
                        "torch_threads": torch.get_num_threads(), "pid": os.getpid()}
    return _outcome(attrs, spec, hint=" (on the benchmarks' validation half)")


def _measure_size(attrs: dict, model: torch.nn.Module, prepared: Prepared, spec: TrialSpec,
                  threads: int | None) -> None:
    """Every size measure, and CPU latency unless the spec turns it off."""
    attrs["size"] = size_scores(model)
    if spec.latency:
        attrs["latency_ms"] = latency_scores(model, seq_len=min(64, prepared.model_config.get(
            "max_position_embeddings", 64)), threads=threads)


def _outcome(attrs: dict, spec: TrialSpec, *, hint: str) -> TrialOutcome:
    """The objective values, read from the validation measures and the size measures in ``attrs``."""
    v = attrs["validation"]
    sizes = {**attrs["size"], **{f"latency_b{k}_ms": ms for k, ms in attrs.get("latency_ms", {}).items()}}
    values = [v["accuracy"][spec.objectives.accuracy], sizes.get(spec.objectives.size)]
    values += [v["bias"][b] for b in spec.objectives.bias]
    if any(x is None or not math.isfinite(x) for x in values):
        raise ValueError(f"a measure is undefined on the validation split: {dict(zip(spec.objectives.names, values))}"
                         + hint)
    return TrialOutcome(values=[float(x) for x in values], attrs=attrs)


def _scores(prepared: Prepared, spec: TrialSpec, y: np.ndarray, pred: np.ndarray, groups: np.ndarray,
            split: str, *, logits: np.ndarray | None = None, swapped_logits: list[np.ndarray] | None = None) -> dict:
    """Every measure of one split; ``logits`` and ``swapped_logits`` (the model's logits on the split and on
    each prepared counterfactual set) are needed only when the study has counterfactual sets."""
    has_group = groups >= 0
    out: dict = {"accuracy": accuracy_scores(y, pred), "n": int(len(y))}
    out["agreement_with_dense"] = float((prepared.dense_predictions(split) == pred).mean())
    if has_group.any():
        g = np.asarray(prepared.group_names, dtype=object)[groups[has_group]]
        out["bias"] = {name: bias_score(name, y[has_group], pred[has_group], g)
                       for name in group_fairness.BIAS_MEASURES}
        out["fairness"] = group_fairness.fairness_report(
            y[has_group], pred[has_group], sensitive_features=g, class_names=list(prepared.label_names),
            n_resamples=spec.bootstrap_resamples, seed=spec.seed)
    else:
        out["bias"] = {name: float("nan") for name in group_fairness.BIAS_MEASURES}
    population = prepared.population_predictions(split)
    out["forgetting"] = forgetting_measures(y, pred, dense=prepared.dense_predictions(split), population=population,
                                            groups=groups, class_names=list(prepared.label_names),
                                            group_names=list(prepared.group_names))
    if population is not None:
        out["bias"]["cie_fraction"] = out["forgetting"]["cie"]["cie_fraction"]
    sets = prepared.counterfactuals.get(split, [])
    if sets:
        if logits is None or swapped_logits is None:
            raise ValueError("the study has counterfactual sets: pass the model's logits on the split and on each set")
        cf = counterfactual_measures(sets, logits, swapped_logits, dense_logits=prepared.teacher_logits[split])
        out["counterfactual"] = cf
        pooled = cf["all"]
        out["bias"]["counterfactual_flip_rate"] = _nan_if_none(pooled["flip_rate"])
        out["bias"]["counterfactual_prob_change"] = _nan_if_none(pooled["mean_abs_prob_change"])
        wanted = [b for b in spec.objectives.bias if b in COUNTERFACTUAL_MEASURES]
        if split == "validation" and wanted and pooled["n_changed"] == 0:
            raise ValueError(f"{wanted[0]} is undefined: no validation text contains a term of the swap lists "
                             f"{', '.join(s.list_name for s in sets)}")
    return _plain(out)


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


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
    if isinstance(obj, torch.Tensor):
        return _plain(obj.tolist())
    return obj
