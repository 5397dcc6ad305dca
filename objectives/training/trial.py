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

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from fairfront.jsonsafe import json_safe
from fairfront.objectives.measures.objectives import ObjectiveSpec
from fairfront.objectives.measures.report import Timings, TrialReport
from fairfront.objectives.measures.scoring import add_intrinsic, measure_size, objective_values, score_split
from fairfront.objectives.training.loop import TrainSettings, iterate_batches, make_batch, predict_logits, train
from fairfront.objectives.training.prepare import Prepared
from fairfront.spaces.family import FamilyTrial, TrialContext
from fairfront.spaces.imbalance import cross_entropy
from fairfront.spaces.space import CompressionConfig

__all__ = ["TrialSpec", "TrialOutcome", "Compressed", "compress", "run_trial"]


@dataclass(frozen=True)
class TrialSpec:
    compression: CompressionConfig
    student: TrainSettings
    objectives: ObjectiveSpec
    seed: int = 0
    bootstrap_resamples: int = 200
    latency: bool = True
    min_group_size: int = 1
    small_groups: str = "exclude"
    group_attributes: tuple[str, ...] = ()
    group_objective: str = "intersection"
    cuda_graphs: str = "auto"

    def scoring_options(self) -> dict:
        """The study's scoring settings, as :func:`~fairfront.objectives.measures.scoring.score_split` takes them.

        The trials and the dense teacher's reference record are scored with these same settings.
        """
        return {"bias_objectives": self.objectives.bias, "bootstrap_resamples": self.bootstrap_resamples,
                "seed": self.seed, "min_group_size": self.min_group_size, "small_groups": self.small_groups,
                "group_attributes": self.group_attributes, "group_objective": self.group_objective}


@dataclass
class TrialOutcome:
    """What a trial returns: its objective values and the record the driver stores.

    Attributes:
        values: The objective values, in the order of the study's objectives.
        attrs: The trial's nested record (``report.to_record()`` for a real trial; the executor adds
            ``worker`` and ``student_batch_size``). The driver stores it whole and as flat user
            attributes (:mod:`fairfront.objectives.measures.report`).
        report: The typed record of what the trial measured; None for an outcome built by hand
            (:meth:`TrialReport.from_record` reads one from ``attrs``).
    """

    values: list[float]
    attrs: dict = field(default_factory=dict)
    report: TrialReport | None = None


def run_trial(prepared: Prepared, spec: TrialSpec, *, device: torch.device | None = None,
              threads: int | None = None) -> TrialOutcome:
    """Compress, train and measure; raises on failure (the driver records the reason)."""
    started = time.perf_counter()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compressed = compress(prepared, spec, device=device, threads=threads)
    compress_seconds = time.perf_counter() - started
    model, eval_device = compressed.convert()
    attrs = compressed.attrs
    if prepared.task == "masked_lm":
        return _measure_masked_lm(prepared, spec, model, attrs, device=device, eval_device=eval_device,
                                  threads=threads, started=started, compress_seconds=compress_seconds)

    report = TrialReport.from_compression(attrs)
    report.size, report.latency_ms = measure_size(model, prepared, latency=spec.latency, threads=threads)
    eval_started = time.perf_counter()
    for split in ("validation", "test"):
        data = prepared.splits[split]
        logits = predict_logits(model, data, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                device=eval_device)
        swapped = [predict_logits(model, s.encoded, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                  device=eval_device) for s in prepared.counterfactuals.get(split, [])]
        report.splits[split] = score_split(prepared, split, data.labels, logits.argmax(axis=1), data.groups,
                                           logits=logits, swapped_logits=swapped, membership=data.membership,
                                           **spec.scoring_options())
    if prepared.intrinsic:
        add_intrinsic(report, prepared, model, device=eval_device)
    report.timings = Timings(train_s=compress_seconds, eval_s=time.perf_counter() - eval_started,
                             total_s=time.perf_counter() - started, device=device.type,
                             torch_threads=torch.get_num_threads(), pid=os.getpid())
    return _outcome(report, spec, hint=" (is every group present with positive examples?)")


@dataclass
class Compressed:
    """A trial's model after surgery and training, before any family converts it (int8).

    What :func:`run_trial` measures once :meth:`convert` has run, and what an export writes as is.
    """

    context: TrialContext
    runs: list[FamilyTrial]

    @property
    def model(self) -> torch.nn.Module:
        return self.context.model

    @property
    def attrs(self) -> dict:
        """What the families recorded so far (the trial's ``compression`` and its notes)."""
        return self.context.attrs

    def convert(self) -> tuple[torch.nn.Module, torch.device]:
        """Let every family convert the model; the model that is measured and the device it runs on."""
        for run in self.runs:
            run.convert(self.context)
        return self.context.model, self.context.eval_device


def compress(prepared: Prepared, spec: TrialSpec, *, device: torch.device | None = None,
             threads: int | None = None) -> Compressed:
    """A copy of the teacher compressed and trained as ``spec`` says, with the trial's seed; nothing measured.

    :func:`run_trial` starts with this, so a trial's model can be made again from its stored
    parameters and seed (``fairfront export``) with the same numbers.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    masked = prepared.task == "masked_lm"
    attrs: dict = {"compression": json_safe(spec.compression.as_dict())}
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
    return Compressed(ctx, runs)


def _context(prepared: Prepared, spec: TrialSpec, attrs: dict, device: torch.device) -> TrialContext:
    """What the families' hooks see: a fresh copy of the dense model on ``device`` and the training data."""
    model = prepared.teacher().to(device)
    common = {"model": model, "device": device, "task": prepared.task, "seed": spec.seed, "attrs": attrs,
              "families": spec.compression.names, "json_safe": json_safe}
    if prepared.task == "masked_lm":
        return TrialContext(**common)
    train_split = prepared.splits["train"]
    return TrialContext(**common, labels=train_split.labels, groups=train_split.groups,
                        membership=train_split.membership,
                        num_classes=len(prepared.label_names), num_groups=max(1, len(prepared.group_names)),
                        teacher_logits=torch.tensor(prepared.teacher_logits["train"], device=device),
                        teacher=prepared.teacher, make_calibration=partial(_calibration, prepared, spec, device))


def _calibration(prepared: Prepared, spec: TrialSpec, device: torch.device, n_batches: int = 8) -> list[dict]:
    """A few training batches, drawn with the trial's seed, for scores computed before training.

    Where groups overlap each batch's ``groups`` are its ``[B, G]`` memberships, which the
    fairness-aware pruning scores' equal-opportunity gap reads as such.
    """
    split = prepared.splits["train"]
    rng = np.random.default_rng(spec.seed)
    batches = [make_batch(split, idx, pad_id=prepared.pad_id, device=device)
               for _, idx in zip(range(n_batches), iterate_batches(split, spec.student.batch_size, rng=rng))]
    if split.membership is not None:
        for batch in batches:
            index = batch["index"].cpu().numpy()
            batch["groups"] = torch.as_tensor(split.membership[index], dtype=torch.float32, device=device)
    return batches


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
    stats = train(ctx.model, prepared.splits["train"], spec.student, loss_fn=_objective(runs, _memberships(ctx)),
                  seed=spec.seed, pad_id=prepared.pad_id, hooks=hooks, device=ctx.device,
                  forward_kwargs=ctx.forward_kwargs, cuda_graphs=spec.cuda_graphs)
    ctx.attrs["train"] = {"steps": stats.steps, "final_loss": stats.final_loss,
                          "examples_per_second": stats.examples_per_second, "step_mode": stats.step_mode}
    for run in runs:
        run.after_training(ctx)


def _memberships(ctx: TrialContext) -> torch.Tensor | None:
    """The training split's ``[examples, groups]`` memberships on the trial's device (None: one group id per row)."""
    if ctx.membership is None:
        return None
    return torch.from_numpy(np.asarray(ctx.membership, dtype=np.float32).copy()).to(ctx.device)  # cached: read-only


def _objective(runs: list[FamilyTrial], membership: torch.Tensor | None = None
               ) -> Callable[[torch.Tensor, dict], torch.Tensor]:
    """The training loss the families compose, always in this order (floating point depends on it).

    The per-example task loss (cross-entropy unless a family gives another), each family's
    transform of it, times the product of the families' example weights, reduced by the first
    family that reduces (else the mean), plus the penalties on the predictions, then the penalties
    on internal states. Where groups overlap (``membership``) the hooks see each batch's ``[B, G]``
    memberships as ``batch["groups"]`` (looked up by ``batch["index"]``), which the group penalties
    and group DRO read as memberships.
    """
    given = [loss for loss in (run.task_loss() for run in runs) if loss is not None]
    if len(given) > 1:
        raise ValueError(f"{len(given)} families give the task loss; at most one may")
    task_loss = given[0] if given else cross_entropy

    def loss_fn(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if membership is not None:
            batch = {**batch, "groups": membership[batch["index"]]}
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


def _measure_masked_lm(prepared: Prepared, spec: TrialSpec, model: torch.nn.Module, attrs: dict, *,
                       device: torch.device, eval_device: torch.device, threads: int | None, started: float,
                       compress_seconds: float) -> TrialOutcome:
    """A ``masked_lm`` trial's measures: size, and the benchmarks' scores of the compressed masked LM."""
    model.eval()
    report = TrialReport.from_compression(attrs)
    report.size, report.latency_ms = measure_size(model, prepared, latency=spec.latency, threads=threads)
    eval_started = time.perf_counter()
    add_intrinsic(report, prepared, model, device=eval_device)
    report.timings = Timings(compress_s=compress_seconds, eval_s=time.perf_counter() - eval_started,
                             total_s=time.perf_counter() - started, device=device.type,
                             torch_threads=torch.get_num_threads(), pid=os.getpid())
    return _outcome(report, spec, hint=" (on the benchmarks' validation half)")


def _outcome(report: TrialReport, spec: TrialSpec, *, hint: str) -> TrialOutcome:
    """The trial's outcome: the objective values read from ``report``, and its record."""
    return TrialOutcome(values=objective_values(report, spec.objectives, hint=hint), attrs=report.to_record(),
                        report=report)
